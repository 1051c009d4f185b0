"""``metropolis-hastings``: random-walk Metropolis-Hastings (Metropolis et al. 1953; Hastings 1970).

From the current state x propose x' = x + step * N(0, 1) and accept it with probability
min(1, p(x') / p(x)) (the Gaussian proposal is symmetric, so the Hastings ratio q(x | x') / q(x' | x)
is 1). The chain's stationary distribution is p; successive states are correlated, hence the
burn-in, thinning and many parallel chains. Many chains run together on the device.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from explorer import Param, Sampler, hookimpl
from explorer.errors import SpecError
from plugins._dist1d import ShiftedMixture1D, as_column, from_params, target_params

#: random numbers are drawn for at most this many steps at a time (bounds memory for many chains)
BLOCK_STEPS = 64


class MetropolisHastings(Sampler):
    """``chains`` random-walk chains live on the device between calls.

    The first ``sample`` call starts every chain at the target's median and runs ``burn_in`` steps.
    Each call then advances all chains ``thin`` steps per round and reads one row per chain per
    round, continuing from where the previous call stopped in the cycle of chains, so ``n`` may
    exceed ``chains`` and successive rows of one chain are at least ``thin`` steps apart.
    """

    name = "metropolis-hastings"
    summary = "Random-walk Metropolis-Hastings: parallel chains with a Gaussian proposal, burn-in and thinning"
    params = target_params("gamma", "a=2.0") + (
        Param("step", "float", 1.0, "standard deviation of the Gaussian random-walk proposal", low=1e-6, high=1e6, log=True),
        Param("burn_in", "int", 500, "steps discarded before the first sample", low=0, high=1_000_000),
        Param("thin", "int", 5, "steps between rows read from the same chain", low=1, high=10_000),
        Param("chains", "int", 256, "parallel chains on the device", low=1, high=1_000_000),
        Param("modes", "floats", [], "more modes: the target becomes an equal mixture of the distribution at loc and "
              "at each of these locations, e.g. [8.0]. Chains start in the mode at loc; with a small step they "
              "never find the others", low=-1e6, high=1e6, label="more modes at"),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        if len(self.config["modes"]) > 16:
            raise SpecError(f"{self.name}.modes", f"at most 16 more modes, got {len(self.config['modes'])}")
        self.target = ShiftedMixture1D(from_params(self.config, self.name), self.config["modes"])
        self.step: float = self.config["step"]
        self.burn_in: int = self.config["burn_in"]
        self.thin: int = self.config["thin"]
        self.chains: int = self.config["chains"]
        self.start = self.target.start
        self.shape = (1,)
        self.bounds = (self.target.support_bounds(),)
        self._x: Tensor | None = None       # current states [chains]
        self._logp: Tensor | None = None    # log p at the current states
        self._accepted: Tensor | None = None  # accepted moves since burn-in (a device scalar: no sync per step)
        self._moves = 0                     # proposed moves since burn-in
        self._cursor = 0                    # next chain to read

    def _advance(self, x: Tensor, logp: Tensor, steps: int, generator: torch.Generator,
                 record: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Run ``steps`` MH steps on every chain; returns (x, log p(x), accepted count, trace or None)."""
        accepted = torch.zeros((), device=x.device, dtype=torch.float32)
        trace = [] if record else None
        done = 0
        while done < steps:
            block = min(BLOCK_STEPS, steps - done)
            noise = torch.randn(block, x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            log_u = torch.log(torch.rand(block, x.shape[0], generator=generator, device=x.device, dtype=x.dtype))
            for i in range(block):
                proposal = x + self.step * noise[i]
                logp_new = self.target.log_prob(proposal)
                # accept with probability min(1, p(x')/p(x)); a nan ratio (both outside the support) rejects
                ok = log_u[i] < logp_new - logp
                x = torch.where(ok, proposal, x)
                logp = torch.where(ok, logp_new, logp)
                accepted = accepted + ok.sum()
                if trace is not None:
                    trace.append(x)
            done += block
        return x, logp, accepted, (torch.stack(trace) if trace is not None else None)

    def _initial(self, chains: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
        x = torch.full((chains,), self.start, dtype=torch.float32, device=device)
        return x, self.target.log_prob(x)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        device = torch.device(device)
        if self._x is None or self._x.device != _resolved(device, self._x):
            x, logp = self._initial(self.chains, device)
            self._x, self._logp, _, _ = self._advance(x, logp, self.burn_in, generator)
            self._accepted = torch.zeros((), device=self._x.device)
            self._moves = 0
            self._cursor = 0
        rounds = math.ceil((self._cursor + n) / self.chains)
        rows = []
        for _ in range(rounds):
            self._x, self._logp, acc, _ = self._advance(self._x, self._logp, self.thin, generator)
            self._accepted = self._accepted + acc
            self._moves += self.thin * self.chains
            rows.append(self._x)
        out = torch.cat(rows)[self._cursor:self._cursor + n]
        self._cursor = (self._cursor + n) % self.chains
        return out.unsqueeze(1)

    def trace(self, n_steps: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """The first ``n_steps`` states ``[n_steps]`` of one fresh chain from the start point (no burn-in,
        no thinning): for the trace plot and the autocorrelation. Leaves the sampling chains alone."""
        x, logp = self._initial(1, device)
        if n_steps <= 1:
            return x[:n_steps]
        _, _, _, trace = self._advance(x, logp, n_steps - 1, generator, record=True)
        return torch.cat([x, trace[:, 0]])

    def state_dict(self) -> dict[str, Any]:
        """The chains' positions, acceptance counters and read cursor (empty before the first draw)."""
        if self._x is None:
            return {}
        return {"x": self._x, "logp": self._logp, "accepted": self._accepted, "moves": self._moves, "cursor": self._cursor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved chains (on their device: ``sample`` restarts them if it changes)."""
        if not state:
            return
        x = state["x"]
        if tuple(x.shape) != (self.chains,):
            raise ValueError(f"the saved state has {x.shape[0]} chains, this sampler runs {self.chains}")
        self._x, self._logp, self._accepted = x, state["logp"], state["accepted"]
        self._moves, self._cursor = int(state["moves"]), int(state["cursor"]) % self.chains

    def stats(self) -> dict[str, float]:
        """The fraction of proposed moves accepted since burn-in (the one host sync, off the hot path)."""
        if not self._moves or self._accepted is None:
            return {}
        return {"acceptance_rate": float(self._accepted) / self._moves}

    def log_prob(self, x: Tensor) -> Tensor:
        return self.target.log_prob(as_column(x))

    def cdf(self, x: Tensor) -> Tensor:
        """The target's F(x), elementwise."""
        return self.target.cdf(x)


def _resolved(device: torch.device, like: Tensor) -> torch.device:
    """``cuda`` and ``cuda:0`` name the same device: compare with an index filled in from ``like``."""
    if device.index is None and device.type == like.device.type:
        return like.device
    return device


@hookimpl
def register_samplers(register) -> None:
    register(MetropolisHastings)
