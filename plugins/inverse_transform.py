"""``inverse-transform``: sampling by the inverse transform method, X = F^-1(U) with U ~ Uniform(0, 1).

If F is the cdf of X then F^-1(U) has cdf F (Devroye 1986, "Non-Uniform Random Variate
Generation", Sec. II.2): the simplest "learned transform" is the exact one. Any scipy.stats
continuous distribution works; the quantile function runs in torch on the device (closed form for
common families, an interpolated quantile table otherwise; see :class:`plugins._dist1d.ScipyDist1D`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from explorer import Sampler, hookimpl
from plugins._dist1d import as_column, from_params, target_params


class InverseTransform(Sampler):
    """Draws x = F^-1(u) for u uniform on (0, 1) from the generator, on the device."""

    name = "inverse-transform"
    summary = "Inverse transform sampling: x = F^-1(U), U ~ Uniform(0, 1), for any scipy.stats distribution"
    params = target_params("norm", "")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.dist = from_params(self.config, self.name)
        if self.dist.icdf_method == "table":
            self.dist.quantile_table("cpu", torch.float64)  # built now, so that a failure is a spec error
        self.shape = (1,)
        self.bounds = (self.dist.support_bounds(),)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        u = torch.rand(n, 1, generator=generator, device=device, dtype=torch.float32)
        return self.dist.icdf(u)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist.log_prob(as_column(x))

    def cdf(self, x: Tensor) -> Tensor:
        """F(x), elementwise."""
        return self.dist.cdf(x)

    def icdf(self, u: Tensor) -> Tensor:
        """F^-1(u), elementwise: the transform that ``sample`` applies to uniform noise."""
        return self.dist.icdf(u)


@hookimpl
def register_samplers(register) -> None:
    register(InverseTransform)
