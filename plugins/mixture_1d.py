"""``mixture-1d``: a one-dimensional Gaussian mixture, p(x) = sum_k w_k N(x; mu_k, sigma_k^2).

Multimodal 1-D data is where a GAN's mode dropping is easiest to see; the exact density and cdf
give the true D* and distances to compare against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from explorer import Param, Sampler, SpecError, hookimpl
from plugins._dist1d import as_column


class Mixture1D(Sampler):
    """Draws a component k ~ Categorical(w) then x ~ N(mu_k, sigma_k^2), all on the device."""

    name = "mixture-1d"
    summary = "1-D Gaussian mixture: sum_k w_k N(mu_k, sigma_k^2)"
    params = (
        Param("means", "floats", [-2.0, 2.0], "component means mu_k"),
        Param("stds", "floats", [0.5, 0.5], "component standard deviations sigma_k (> 0)", low=1e-6, high=1e6),
        Param("weights", "floats", [0.5, 0.5], "component weights w_k (> 0; normalised to sum to 1)", low=0.0),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        means, stds, weights = self.config["means"], self.config["stds"], self.config["weights"]
        if not (len(means) == len(stds) == len(weights)):
            raise SpecError(f"{self.name}.stds", f"means, stds and weights need one value per component; "
                                                 f"got {len(means)}, {len(stds)} and {len(weights)} values")
        if any(w <= 0 for w in weights):
            raise SpecError(f"{self.name}.weights", "every weight must be positive (drop a component instead of giving it weight 0)")
        total = sum(weights)
        self.means = [float(m) for m in means]
        self.stds = [float(s) for s in stds]
        self.weights = [w / total for w in weights]
        self.shape = (1,)
        self.bounds = ((min(m - 4 * s for m, s in zip(self.means, self.stds)),
                        max(m + 4 * s for m, s in zip(self.means, self.stds))),)
        self._cache: dict[tuple[str, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}

    def _tensors(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """(means, stds, log weights) on ``device``, made once per device."""
        key = (str(torch.device(device)), dtype)
        if key not in self._cache:
            mk = lambda v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
            self._cache[key] = (mk(self.means), mk(self.stds), mk([math.log(w) for w in self.weights]))
        return self._cache[key]

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        mu, sd, logw = self._tensors(device)
        k = torch.multinomial(logw.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
        return (mu[k] + sd[k] * z).unsqueeze(1)

    def log_prob(self, x: Tensor) -> Tensor:
        """log sum_k w_k N(x; mu_k, sigma_k^2), by logsumexp."""
        mu, sd, logw = self._tensors(x.device, x.dtype)
        z = (as_column(x).unsqueeze(-1) - mu) / sd
        comp = -0.5 * z * z - torch.log(sd) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(comp + logw, dim=-1)

    def cdf(self, x: Tensor) -> Tensor:
        """F(x) = sum_k w_k Phi((x - mu_k) / sigma_k), elementwise."""
        mu, sd, logw = self._tensors(x.device, x.dtype)
        return (torch.special.ndtr((x.unsqueeze(-1) - mu) / sd) * logw.exp()).sum(-1)

    def icdf(self, u: Tensor, iterations: int = 60) -> Tensor:
        """F^-1(u), elementwise, by bisection on the cdf (no closed form exists for a mixture)."""
        lo = torch.full_like(u, min(m - 12 * s for m, s in zip(self.means, self.stds)))
        hi = torch.full_like(u, max(m + 12 * s for m, s in zip(self.means, self.stds)))
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < u
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def mixture_modes(self) -> tuple[Tensor, float]:
        """The component means as ``[K, 1]`` and the largest component std (mode-coverage metrics)."""
        return torch.tensor(self.means, dtype=torch.float32).unsqueeze(1), max(self.stds)


@hookimpl
def register_samplers(register) -> None:
    register(Mixture1D)
