"""Generative Explorer: generative models as learned transform functions."""

from explorer.hookspecs import hookimpl
from explorer.errors import ExplorerError, SpecError
from explorer.params import Param
from explorer.components import Architecture, Metric, MetricContext, Objective, Sampler

__version__ = "0.1.0"

__all__ = [
    "hookimpl", "Param", "Sampler", "Architecture", "Objective", "Metric", "MetricContext",
    "ExplorerError", "SpecError", "__version__",
]
