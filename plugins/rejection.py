"""``rejection``: rejection sampling (von Neumann 1951, "Various techniques used in connection with
random digits").

Draw x from a proposal q and u ~ Uniform(0, 1); accept x when u M q(x) <= p(x). Accepted points
are exact draws from the target p as long as M q(x) >= p(x) everywhere, and a fraction 1/M of
proposals is accepted (both densities normalised). The app shows the envelope M q, the accepted and
the rejected points.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from explorer import ExplorerError, Param, Sampler, SpecError, hookimpl
from plugins._dist1d import as_column, from_params, target_params

#: tails beyond these target quantiles are cut when the target's support is infinite (uniform proposal)
UNIFORM_TAIL = 1e-6
#: automatic M = AUTO_MARGIN * max p/q on the grid (the grid can miss the true maximum slightly)
AUTO_MARGIN = 1.05
MAX_M = 1e4


class Rejection(Sampler):
    """Vectorised rejection sampling on the device: propose a batch, keep the accepted, repeat."""

    name = "rejection"
    summary = "Rejection sampling: accept x ~ q when u * M q(x) <= p(x) (von Neumann)"
    params = target_params("beta", "a=2.0, b=5.0") + (
        Param("proposal", "str", "uniform", "proposal q: uniform over the target's support, or a Gaussian",
              choices=("uniform", "gaussian")),
        Param("proposal_loc", "float", 0.0, "mean of the Gaussian proposal"),
        Param("proposal_scale", "float", 1.0, "standard deviation of the Gaussian proposal", low=1e-9, high=1e9),
        Param("M", "float", 0.0, "envelope constant, M q(x) >= p(x); 0 = automatic (1.05 max p/q)", low=0.0, high=MAX_M,
              label="M (0 = automatic)"),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.target = from_params(self.config, self.name)
        self.proposal: str = self.config["proposal"]
        a, b = self.target.support()
        if self.proposal == "uniform":
            lo_q, hi_q = self.target.support_bounds(UNIFORM_TAIL)
            self.low = a if math.isfinite(a) else lo_q
            self.high = b if math.isfinite(b) else hi_q
            self.bounds = ((self.low, self.high),)
        else:
            self.loc: float = self.config["proposal_loc"]
            self.scale: float = self.config["proposal_scale"]
            self.bounds = (self.target.support_bounds(),)
        self.required_M = self._max_ratio()
        if not math.isfinite(self.required_M) or self.required_M > MAX_M:
            raise SpecError(f"{self.name}.proposal",
                            f"max p(x)/q(x) is {'unbounded' if math.isinf(self.required_M) else f'about {self.required_M:.3g}'} "
                            f"for {self.target!r} and this proposal: "
                            "no envelope M q(x) >= p(x) gives a usable acceptance rate; choose a proposal with heavier "
                            "tails or a wider scale, or a target with a bounded density")
        given = self.config["M"]
        if given == 0:
            self.M = AUTO_MARGIN * self.required_M
        elif given < self.required_M:
            raise SpecError(f"{self.name}.M", f"M = {given:g} is below max p(x)/q(x) = {self.required_M:.4g}, so "
                                              f"M q(x) would not cover p(x); set M to at least {self.required_M:.4g} "
                                              "(or 0 to compute it automatically)")
        else:
            self.M = float(given)
        self.shape = (1,)
        self._proposed = 0
        self._accepted = 0

    # -- the proposal --------------------------------------------------------------------------------
    def _proposal_logpdf_numpy(self, x: np.ndarray) -> np.ndarray:
        if self.proposal == "uniform":
            inside = (x >= self.low) & (x <= self.high)
            return np.where(inside, -math.log(self.high - self.low), -np.inf)
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - 0.5 * math.log(2 * math.pi)

    def proposal_log_prob(self, x: Tensor) -> Tensor:
        """log q(x), elementwise."""
        if self.proposal == "uniform":
            inside = (x >= self.low) & (x <= self.high)
            return torch.where(inside, torch.full_like(x, -math.log(self.high - self.low)), torch.full_like(x, -math.inf))
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - 0.5 * math.log(2 * math.pi)

    def _draw_proposal(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        if self.proposal == "uniform":
            u = torch.rand(n, generator=generator, device=device, dtype=torch.float32)
            return self.low + (self.high - self.low) * u
        return self.loc + self.scale * torch.randn(n, generator=generator, device=device, dtype=torch.float32)

    def _max_ratio(self) -> float:
        """max p(x)/q(x) over a grid: 20,001 even points plus 2,001 target quantiles (logit-spaced in u,
        between 1e-7 and 1 - 1e-7), restricted to where q > 0."""
        if self.proposal == "uniform":
            lo, hi = self.low, self.high
        else:
            lo, hi = self.target.support_bounds(1e-7)
        t = np.linspace(math.log(1e-7 / (1 - 1e-7)), math.log((1 - 1e-7) / 1e-7), 2001)
        with np.errstate(all="ignore"):
            quantiles = self.target.frozen.ppf(1.0 / (1.0 + np.exp(-t)))
        x = np.concatenate([np.linspace(lo, hi, 20001), quantiles])
        x = x[np.isfinite(x)]
        with np.errstate(all="ignore"):
            log_ratio = self.target.frozen.logpdf(x) - self._proposal_logpdf_numpy(x)
        log_ratio = log_ratio[np.isfinite(self._proposal_logpdf_numpy(x)) & ~np.isnan(log_ratio)]
        top = float(log_ratio.max()) if log_ratio.size else math.inf
        return math.exp(top) if top < 700 else math.inf

    # -- sampling ------------------------------------------------------------------------------------
    def envelope(self, x: Tensor) -> Tensor:
        """M q(x), elementwise: the curve that must lie above p(x)."""
        return self.M * self.proposal_log_prob(x).exp()

    def propose(self, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One batch of ``n`` proposals, for the accepted-and-rejected view.

        Returns ``(x, y, p, accepted)``, each ``[n]``: the proposals x ~ q, their heights
        y = u M q(x) under the envelope, the target density p(x), and the mask y <= p(x).
        Does not count towards :meth:`stats`.
        """
        x = self._draw_proposal(n, generator, device)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float32)
        y = u * self.envelope(x)
        p = self.target.log_prob(x).exp()
        return x, y, p, y <= p

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        chunks: list[Tensor] = []
        got, proposed = 0, 0
        while got < n:
            # about (n - got) M proposals give the rest; 20% more avoids most extra rounds
            batch = min(max(256, math.ceil((n - got) * self.M * 1.2)), 1 << 22)
            x, _, _, accepted = self.propose(batch, generator, device)
            chunks.append(x[accepted])
            k = int(accepted.sum())  # the one host sync per round: rejection needs the count
            got += k
            proposed += batch
            self._proposed += batch
            self._accepted += k
            if got == 0 and proposed > 1000 * self.M * max(n, 256):
                raise ExplorerError(f"rejection: no proposal accepted out of {proposed}; is the target density zero everywhere?")
        return torch.cat(chunks)[:n].unsqueeze(1)

    def stats(self) -> dict[str, float]:
        """Observed acceptance rate over all ``sample`` calls, and the expected 1/M."""
        out = {"expected_acceptance_rate": 1.0 / self.M}
        if self._proposed:
            out["acceptance_rate"] = self._accepted / self._proposed
        return out

    def log_prob(self, x: Tensor) -> Tensor:
        return self.target.log_prob(as_column(x))

    def cdf(self, x: Tensor) -> Tensor:
        """The target's F(x), elementwise."""
        return self.target.cdf(x)


@hookimpl
def register_samplers(register) -> None:
    register(Rejection)
