"""generative-explorer-extras: an example third-party plugin package for Generative Explorer.

The package's entry point (``[project.entry-points.generative_explorer] extras = ...`` in its
pyproject.toml) names this module; Generative Explorer imports it and calls the four hooks below.
Each hook hands over component classes through ``register``.
"""

from __future__ import annotations

from explorer import hookimpl

from generative_explorer_extras.checkerboard import Checkerboard
from generative_explorer_extras.metrics import CheckerboardCoverage, NearestNeighbourAccuracy
from generative_explorer_extras.objectives import Hinge, LeastSquares
from generative_explorer_extras.resmlp import ResMLP

__version__ = "0.1.0"


@hookimpl
def register_samplers(register):
    register(Checkerboard)


@hookimpl
def register_architectures(register):
    register(ResMLP)


@hookimpl
def register_objectives(register):
    register(LeastSquares)
    register(Hinge)


@hookimpl
def register_metrics(register):
    register(NearestNeighbourAccuracy)
    register(CheckerboardCoverage)
