"""Two-dimensional toy data: the mode-collapse benchmarks and two curved manifolds.

``ring8`` and ``grid25`` are the 2-D mixtures of the mode-collapse literature (Metz et al. 2017,
Unrolled GANs; Srivastava et al. 2017, VEEGAN; Lin et al. 2018, PacGAN): equal-weight isotropic
Gaussians, with exact densities and their modes exposed for the modes-captured / high-quality
metrics. ``moons`` and ``spiral`` are thin curved manifolds with Gaussian noise; their densities
have no closed form, so they do not define ``log_prob``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from explorer import Param, Sampler, hookimpl


LOG_PROB_CHUNK = 1 << 22  # rows x centres evaluated at once by log_prob


class GaussianMixture2D(Sampler):
    """Equal-weight mixture of K isotropic Gaussians N(c_k, std^2 I):
    log p(x) = logsumexp_k(-|x - c_k|^2 / (2 std^2)) - log K - log(2 pi std^2)."""

    std: float

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._centre_cache: dict[tuple[str, torch.dtype], Tensor] = {}

    def centres(self) -> Tensor:
        """The K mixture centres ``[K, 2]`` (float64 on the CPU)."""
        raise NotImplementedError

    def _centres_on(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
        key = (str(torch.device(device)), dtype)
        if key not in self._centre_cache:
            self._centre_cache[key] = self.centres().to(device=device, dtype=dtype)
        return self._centre_cache[key]

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        c = self._centres_on(device)
        k = torch.randint(0, c.shape[0], (n,), generator=generator, device=device)
        return c[k] + self.std * torch.randn(n, 2, generator=generator, device=device, dtype=torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        c = self._centres_on(x.device, x.dtype)
        norm = math.log(c.shape[0]) + math.log(2 * math.pi * self.std ** 2)
        rows = max(1, LOG_PROB_CHUNK // c.shape[0])  # bounded memory for many centres (a drawing) and big grids
        out = [torch.logsumexp(-((chunk.unsqueeze(1) - c) ** 2).sum(-1) / (2 * self.std ** 2), dim=1) - norm
               for chunk in x.split(rows)]
        return torch.cat(out) if out else x.new_zeros(0)

    def mixture_modes(self) -> tuple[Tensor, float]:
        """(centres ``[K, 2]`` float32 on the CPU, std)."""
        return self.centres().float(), self.std


class Ring8(GaussianMixture2D):
    """8 Gaussians with means evenly spaced on a circle. Defaults: radius 1.0 and std 0.02 (PacGAN
    uses the unit circle with std 0.01; 0.02 keeps the modes visible in a scatter plot)."""

    name = "ring8"
    summary = "8 Gaussians on a circle (the ring of the mode-collapse benchmarks)"
    params = (
        Param("radius", "float", 1.0, "circle radius", low=0.01, high=100.0),
        Param("std", "float", 0.02, "standard deviation of each Gaussian (PacGAN: 0.01)", low=1e-4, high=10.0),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.radius: float = self.config["radius"]
        self.std = self.config["std"]
        self.shape = (2,)
        r = self.radius * 1.25 + 4 * self.std
        self.bounds = ((-r, r), (-r, r))

    def centres(self) -> Tensor:
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


class Grid25(GaussianMixture2D):
    """25 Gaussians with means on the grid {-4, -2, 0, 2, 4}^2 and std 0.05 (PacGAN's grid)."""

    name = "grid25"
    summary = "25 Gaussians on a 5 x 5 grid (the grid of the mode-collapse benchmarks)"
    params = (
        Param("std", "float", 0.05, "standard deviation of each Gaussian (PacGAN: 0.05)", low=1e-4, high=10.0),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.std = self.config["std"]
        self.shape = (2,)
        r = 5.0 + 4 * self.std
        self.bounds = ((-r, r), (-r, r))

    def centres(self) -> Tensor:
        v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        gx, gy = torch.meshgrid(v, v, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


class Moons(Sampler):
    """Two interleaving half circles (the layout of scikit-learn's ``make_moons``), shifted to be
    centred at the origin, plus N(0, noise^2 I). Upper moon: (cos t, sin t); lower moon:
    (1 - cos t, 1/2 - sin t); t ~ Uniform(0, pi), each moon with probability 1/2."""

    name = "moons"
    summary = "Two interleaving half circles with Gaussian noise"
    params = (Param("noise", "float", 0.1, "standard deviation of the Gaussian noise", low=0.0, high=10.0),)

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.noise: float = self.config["noise"]
        self.shape = (2,)
        m = 3 * self.noise
        self.bounds = ((-1.5 - m, 1.5 + m), (-1.0 - m, 1.0 + m))

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        t = math.pi * torch.rand(n, generator=generator, device=device, dtype=torch.float32)
        lower = torch.rand(n, generator=generator, device=device, dtype=torch.float32) < 0.5
        x = torch.where(lower, 1.0 - torch.cos(t), torch.cos(t)) - 0.5
        y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t)) - 0.25
        eps = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float32)
        return torch.stack([x, y], dim=1) + self.noise * eps


class Spiral(Sampler):
    """An Archimedean spiral r = 2 s, angle = 2 pi * turns * s, plus N(0, noise^2 I). s = sqrt(v)
    with v ~ Uniform(0, 1), which spreads points roughly evenly along the arc (arc length grows like s^2)."""

    name = "spiral"
    summary = "A spiral arm with Gaussian noise"
    params = (
        Param("turns", "float", 2.0, "number of turns of the spiral", low=0.1, high=20.0),
        Param("noise", "float", 0.05, "standard deviation of the Gaussian noise", low=0.0, high=10.0),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.turns: float = self.config["turns"]
        self.noise: float = self.config["noise"]
        self.shape = (2,)
        r = 2.2 + 3 * self.noise
        self.bounds = ((-r, r), (-r, r))

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        s = torch.rand(n, generator=generator, device=device, dtype=torch.float32).sqrt()
        angle = 2 * math.pi * self.turns * s
        r = 2.0 * s
        eps = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float32)
        return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1) + self.noise * eps


@hookimpl
def register_samplers(register) -> None:
    for cls in (Ring8, Grid25, Moons, Spiral):
        register(cls)
