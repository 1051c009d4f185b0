"""Simple noise distributions: ``uniform`` on a box and an isotropic ``gaussian``.

They serve as latent priors (GMMN uses uniform[-1, 1] noise; DCGAN a standard normal) and as
the simplest data distributions. Both have exact densities; in one dimension also cdf and icdf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from explorer import Param, Sampler, SpecError, hookimpl


def _rows(x: Tensor, dim: int) -> Tensor:
    """``[n, dim]`` (or ``[n]`` when dim == 1) -> ``[n, dim]``."""
    return x.reshape(-1, dim) if x.dim() == 1 and dim == 1 else x


class Uniform(Sampler):
    """Uniform on the box [low, high]^dim: p(x) = (high - low)^-dim inside, 0 outside."""

    name = "uniform"
    summary = "Uniform noise on [low, high]^dim (a latent prior, or the simplest data)"
    params = (
        Param("dim", "int", 1, "number of dimensions", low=1, high=4096),
        Param("low", "float", -1.0, "lower end of each coordinate"),
        Param("high", "float", 1.0, "upper end of each coordinate"),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.dim: int = self.config["dim"]
        self.low: float = self.config["low"]
        self.high: float = self.config["high"]
        if not self.high > self.low:
            raise SpecError(f"{self.name}.high", f"high ({self.high:g}) must be greater than low ({self.low:g})")
        self.shape = (self.dim,)
        self.bounds = ((self.low, self.high),) * self.dim
        self.latent_box = (self.low, self.high)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        u = torch.rand(n, self.dim, generator=generator, device=device, dtype=torch.float32)
        return self.low + (self.high - self.low) * u

    def log_prob(self, x: Tensor) -> Tensor:
        x = _rows(x, self.dim)
        inside = ((x >= self.low) & (x <= self.high)).all(dim=-1)
        value = -self.dim * math.log(self.high - self.low)
        return torch.where(inside, torch.full(inside.shape, value, dtype=x.dtype, device=x.device),
                           torch.full(inside.shape, -math.inf, dtype=x.dtype, device=x.device))

    def _check_1d(self, what: str) -> None:
        if self.dim != 1:
            raise NotImplementedError(f"{self.name}.{what} is defined in one dimension only (dim = {self.dim})")

    def cdf(self, x: Tensor) -> Tensor:
        """F(x) = (x - low) / (high - low), clamped to [0, 1]; elementwise (dim = 1 only)."""
        self._check_1d("cdf")
        return ((x - self.low) / (self.high - self.low)).clamp(0.0, 1.0)

    def icdf(self, u: Tensor) -> Tensor:
        """F^-1(u) = low + u (high - low); elementwise (dim = 1 only)."""
        self._check_1d("icdf")
        return self.low + (self.high - self.low) * u


class Gaussian(Sampler):
    """Isotropic normal N(mean, std^2 I) in ``dim`` dimensions."""

    name = "gaussian"
    summary = "Isotropic Gaussian noise N(mean, std^2 I) (a latent prior, or simple data)"
    params = (
        Param("dim", "int", 2, "number of dimensions", low=1, high=4096),
        Param("mean", "float", 0.0, "mean of every coordinate"),
        Param("std", "float", 1.0, "standard deviation of every coordinate", low=1e-6, high=1e6),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.dim: int = self.config["dim"]
        self.mean: float = self.config["mean"]
        self.std: float = self.config["std"]
        self.shape = (self.dim,)
        self.bounds = ((self.mean - 4 * self.std, self.mean + 4 * self.std),) * self.dim
        self.latent_box = (self.mean - 2 * self.std, self.mean + 2 * self.std)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * z

    def log_prob(self, x: Tensor) -> Tensor:
        """log N(x; mean, std^2 I) = -|x - mean|^2 / (2 std^2) - dim (log std + log(2 pi) / 2)."""
        x = _rows(x, self.dim)
        z = (x - self.mean) / self.std
        return -0.5 * (z * z).sum(-1) - self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))

    def _check_1d(self, what: str) -> None:
        if self.dim != 1:
            raise NotImplementedError(f"{self.name}.{what} is defined in one dimension only (dim = {self.dim})")

    def cdf(self, x: Tensor) -> Tensor:
        """Phi((x - mean) / std), elementwise (dim = 1 only)."""
        self._check_1d("cdf")
        return torch.special.ndtr((x - self.mean) / self.std)

    def icdf(self, u: Tensor) -> Tensor:
        """mean + std Phi^-1(u), elementwise (dim = 1 only); u is kept inside (0, 1) so the result is finite."""
        self._check_1d("icdf")
        half_eps = torch.finfo(u.dtype).eps / 2
        return self.mean + self.std * torch.special.ndtri(u.clamp(half_eps, 1.0 - half_eps))


@hookimpl
def register_samplers(register) -> None:
    register(Uniform)
    register(Gaussian)
