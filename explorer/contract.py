"""Contract checks made when a component is registered (cheap, class-level: nothing is built).

The deeper, behavioural checks a plugin author runs in their own tests live in ``explorer.testing``.
"""

from __future__ import annotations

from explorer.components import BASES, Component

REQUIRED = {
    "sampler": ("sample",),
    "architecture": ("build",),
    "objective": ("generator_loss",),
    "metric": ("compute",),
}


def check_class(kind: str, cls: type[Component]) -> None:
    """Raise with a reason when ``cls`` cannot work as a ``kind`` component."""
    base = BASES[kind]
    if cls.kind != kind:
        raise TypeError(f"its kind attribute is {cls.kind!r}, expected {kind!r}")
    if not isinstance(cls.summary, str):
        raise TypeError("summary must be a string")
    needed = list(REQUIRED[kind])
    if kind == "objective" and getattr(cls, "needs_discriminator", True):
        needed.append("discriminator_loss")
    missing = [m for m in needed if getattr(cls, m, None) is getattr(base, m)]
    if missing:
        raise TypeError(f"it does not implement {', '.join(missing)}()")
    if kind == "metric":
        kinds = getattr(cls, "applies_to", ())
        bad = [k for k in kinds if k not in ("any", "1d", "2d", "image", "vector")]
        if bad or not kinds:
            raise ValueError(f"applies_to must name data kinds among any, 1d, 2d, image, vector; got {kinds!r}")
