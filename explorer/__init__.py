"""Generative Explorer: generative models as learned transform functions.

The component base classes import torch; they load on first use (PEP 562), so that commands such as
``genex new-plugin --help`` start at once.
"""

from typing import Any

from explorer.hookspecs import hookimpl
from explorer.errors import ExplorerError, SpecError
from explorer.params import Param

__version__ = "0.1.0"

_LAZY = {"Sampler", "Architecture", "Objective", "Metric", "MetricContext"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from explorer import components

        return getattr(components, name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")


__all__ = [
    "hookimpl", "Param", "Sampler", "Architecture", "Objective", "Metric", "MetricContext",
    "ExplorerError", "SpecError", "__version__",
]
