"""Contract checks made when a component is registered (cheap, class-level: nothing is built).

The registry calls :func:`check_class` for every registration; a class that fails is reported with
the reason (``genex plugins``) and left out. The deeper, behavioural checks a plugin author runs in
their own tests (shapes, devices, seeds, gradients) live in :mod:`explorer.testing`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from explorer.components import BASES, Component

DATA_KINDS = ("any", "1d", "2d", "image", "vector")

#: method -> the positional arguments the host passes (after self)
SIGNATURES: dict[str, dict[str, tuple[str, ...]]] = {
    "sampler": {"sample": ("n", "generator", "device")},
    "architecture": {"build": ("role", "in_shape", "out_shape"), "supports": ("role", "in_shape", "out_shape")},
    "objective": {"generator_loss": ("D", "real", "fake"), "discriminator_loss": ("D", "real", "fake"),
                  "critic": ("D", "x", "real", "fake")},
    "metric": {"compute": ("real", "fake", "context"), "applies": ("data",)},
}
REQUIRED = {
    "sampler": ("sample",),
    "architecture": ("build",),
    "objective": ("generator_loss",),
    "metric": ("compute",),
}


def check_class(kind: str, cls: type[Component]) -> None:
    """Raise TypeError or ValueError with a reason when ``cls`` cannot work as a ``kind`` component."""
    base = BASES[kind]
    if cls.kind != kind:
        raise TypeError(f"its kind attribute is {cls.kind!r}, expected {kind!r}")
    if not isinstance(cls.summary, str) or not cls.summary.strip():
        raise TypeError("set summary = '...': one line shown beside the name in `genex plugins` and the app")
    if not isinstance(cls.params, (tuple, list)):
        raise TypeError(f"params must be a tuple of explorer.Param, got {type(cls.params).__name__}")
    needed = list(REQUIRED[kind])
    if kind == "objective" and getattr(cls, "needs_discriminator", True):
        needed.append("discriminator_loss")
    missing = [m for m in needed if getattr(cls, m, None) is getattr(base, m)]
    if missing:
        raise TypeError(f"it does not implement {', '.join(m + '()' for m in missing)}")
    for method, args in SIGNATURES[kind].items():
        fn = getattr(cls, method, None)
        if fn is getattr(base, method, None):
            continue
        if not callable(fn):
            raise TypeError(f"{method} must be a method, got {fn!r}")
        _check_call(fn, (None, *args), {}, f"{method}() must accept ({', '.join(args)}) as the host calls it")
    defaults = {p.name: p.default for p in cls.params}
    _check_call(cls.__init__, (None,), defaults,
                "__init__ must accept the declared parameters as keywords; write def __init__(self, **kw) "
                "and call super().__init__(**kw)")
    if kind == "objective":
        if not isinstance(getattr(cls, "needs_discriminator", None), bool):
            raise TypeError("needs_discriminator must be True or False")
        if not isinstance(getattr(cls, "formula", ""), str):
            raise TypeError("formula must be a string (LaTeX shown beside the curves)")
    if kind == "metric":
        kinds = getattr(cls, "applies_to", ())
        if isinstance(kinds, str) or not kinds or any(k not in DATA_KINDS for k in kinds):
            raise ValueError(f"applies_to must be a tuple of data kinds among {', '.join(DATA_KINDS)}; got {kinds!r}")
        size = getattr(cls, "sample_size", None)
        if not isinstance(size, int) or isinstance(size, bool) or size < 2:
            raise ValueError(f"sample_size must be an integer >= 2 (generated samples the metric wants), got {size!r}")


def _check_call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], message: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{message} ({exc})") from None
