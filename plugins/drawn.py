"""``drawn``: a 2-D data set a person draws (clicks and strokes on the Train page's canvas).

The drawn points are the sampler's ``points`` parameter, a flat list ``x1, y1, x2, y2, ...``, so they
live in the spec: a link, a comparison, an archive and ``genex run spec.toml`` reproduce the data set
exactly (same seed, same numbers). The distribution is the equal-weight mixture of isotropic Gaussians
N(p_k, noise^2 I) at the K points: a sample picks a point uniformly and adds noise * N(0, I), and
log p(x) = logsumexp_k(-|x - p_k|^2 / (2 noise^2)) - log K - log(2 pi noise^2) is exact, so D* and the
divergences work as for ring8.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from explorer import Param, SpecError, hookimpl
from plugins.toys2d import GaussianMixture2D

MAX_POINTS = 2000  # 4,000 numbers: well inside a spec's 10,000 items per list
COORD_LIMIT = 100.0  # |x|, |y| at most this (the canvas spans [-2, 2]; a spec may hold more)


def _smiley() -> list[float]:
    """The default drawing: a face (20 points on a circle of radius 1.5), two eyes and a smile."""
    pts: list[tuple[float, float]] = []
    for k in range(20):
        a = 2 * math.pi * k / 20
        pts.append((1.5 * math.cos(a), 1.5 * math.sin(a)))
    pts += [(-0.55, 0.5), (0.55, 0.5)]
    for k in range(7):
        a = math.radians(210 + 20 * k)
        pts.append((0.85 * math.cos(a), 0.15 + 0.85 * math.sin(a)))
    return [round(v, 2) + 0.0 for p in pts for v in p]  # + 0.0: no -0.0 in the spec


DEFAULT_POINTS = _smiley()


class PointsParam(Param):
    """A ``floats`` parameter holding 2-D points as a flat list x1, y1, x2, y2, ...: besides each number's
    bounds, the count must be even and the number of points between 1 and :data:`MAX_POINTS`. The
    checks run wherever the declaration is read (spec files, links, the sidebar), so a bad drawing is one
    SpecError naming the field (``data.points``)."""

    def validate(self, value: Any, where: str) -> Any:
        if isinstance(value, (list, tuple)):
            if not value:
                raise SpecError(where, "no points: draw at least one point (a list x1, y1, x2, y2, ...)")
            if len(value) % 2:
                raise SpecError(where, f"{len(value):,} numbers cannot be x, y pairs: give an even count "
                                       "(x1, y1, x2, y2, ...)")
            if len(value) // 2 > MAX_POINTS:
                raise SpecError(where, f"{len(value) // 2:,} points; at most {MAX_POINTS:,} are allowed")
        return super().validate(value, where)


class Drawn(GaussianMixture2D):
    """An equal mixture of isotropic Gaussians at drawn points (see the module's docstring)."""

    name = "drawn"
    max_points = MAX_POINTS
    summary = "Your own 2-D data: points drawn on a canvas, each blurred by Gaussian noise"
    params = (
        PointsParam("points", "floats", DEFAULT_POINTS,
                    "the drawn points as x1, y1, x2, y2, ... (the Train page's canvas writes them)",
                    low=-COORD_LIMIT, high=COORD_LIMIT),
        Param("noise", "float", 0.05, "standard deviation of the Gaussian jitter added to each drawn point",
              low=0.001, high=2.0),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        flat = self.config["points"]
        self.noise: float = self.config["noise"]
        self.points = torch.tensor(flat, dtype=torch.float64).reshape(-1, 2)  # [K, 2] on the CPU
        self.shape = (2,)
        lo, hi = self.points.min(0).values, self.points.max(0).values
        centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 + 4 * self.noise + 0.25
        self.bounds = tuple((float(c) - half, float(c) + half) for c in centre)  # a square around the drawing

    def centres(self) -> Tensor:
        """The drawn points ``[K, 2]``: the mode-coverage metrics count how many the generator reaches."""
        return self.points

    @property
    def std(self) -> float:  # the mixture's std is the declared jitter
        return self.noise


@hookimpl
def register_samplers(register) -> None:
    register(Drawn)
