"""Device choice (cuda > mps > cpu), seeding and precision."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from typing import Any, Iterator

import torch

from explorer.errors import SpecError

_seed_lock = threading.Lock()


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` = cuda, then mps, then cpu; an explicit device that is not there is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError("device", "cuda was asked for but no CUDA GPU is available here; use device = \"auto\" or \"cpu\"")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise SpecError("device", "mps was asked for but Apple's Metal backend is not available; use device = \"auto\" or \"cpu\"")
    return torch.device(name)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``: one per random stream (data, noise)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % (2**63))
    return gen


def stream_seed(seed: int, stream: str) -> int:
    """Independent, reproducible seeds for named streams (``data``, ``noise``, ``weights``, ...)."""
    import numpy as np

    tag = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1, dtype=np.uint64)[0] % (2**62))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block (weight initialisation) without disturbing other threads'
    results: the block holds a lock and restores the previous RNG state afterwards."""
    with _seed_lock, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class TorchStream:
    """A run's own copy of torch's global random stream, the one that layers such as dropout draw
    from (they take no ``generator``). Seeded from the run's seed and swapped in only while the run
    steps (:meth:`active`), so a run reproduces from its seed whatever else the process draws, and
    its state goes into checkpoints (:meth:`get_state`)."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if self._cuda else []):
            torch.manual_seed(int(seed) % (2**63))
            self.cpu = torch.get_rng_state()
            self.accel = torch.cuda.get_rng_state(device) if self._cuda else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer_cpu = torch.get_rng_state()
        outer_accel = torch.cuda.get_rng_state(self.device) if self._cuda else None
        torch.set_rng_state(self.cpu)
        if self._cuda:
            torch.cuda.set_rng_state(self.accel, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if self._cuda:
                self.accel = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_accel, self.device)

    def get_state(self) -> dict[str, torch.Tensor]:
        return {"cpu": self.cpu.clone(), **({"accel": self.accel.clone()} if self.accel is not None else {})}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        self.cpu = state["cpu"].cpu().to(torch.uint8)
        if self._cuda and "accel" in state:
            self.accel = state["accel"].cpu().to(torch.uint8)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for; a no-op elsewhere."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def configure_threads(share: int = 2) -> int:
    """Give each of ``share`` concurrently training runs its part of the CPU cores, once per process.

    The small networks here gain little from many intra-op threads, and OpenMP's spinning threads
    slow everything down by an order of magnitude when several runs (or other programs) share the
    cores. ``GENEX_TORCH_THREADS`` overrides the count.
    """
    n = env_threads() or max(1, (os.cpu_count() or 2) // max(1, share))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def env_threads() -> int | None:
    """The thread count ``GENEX_TORCH_THREADS`` fixes (a positive integer), or None."""
    env = os.environ.get("GENEX_TORCH_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def spare_threads(share: int = 1) -> int:
    """The intra-op threads a job may try when it has ``1/share`` of the cores to itself (a batched
    ensemble is big enough to gain from them); ``GENEX_TORCH_THREADS`` fixes the count instead (1 returned)."""
    if env_threads():
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, share))


class ThreadTuner:
    """Trains each step on the faster of the process's thread count and ``most`` threads, measured as it goes.

    Batched steps gain from a second core on an idle machine (1.4x for eight ring8 seeds on two cores)
    but OpenMP's spinning threads make them 2-3x slower once another program wants the cores. So the
    loop times a few steps on each count every ``period`` steps (the median of ``probe`` steps, the
    first after a switch left out) and keeps the faster until the next check. Thread counts do not
    change the numbers here: MKL's products and torch's reductions give the same bits on 1 or 2 threads.
    """

    def __init__(self, most: int, period: int = 250, probe: int = 5) -> None:
        self.base = torch.get_num_threads()
        self.options = sorted({self.base, max(1, most)})
        self.period, self.probe = period, probe
        self.best = self.options[-1]
        self.steps = 0
        self.used: dict[int, int] = {}  # thread count -> steps trained on it
        self._plan: list[int] = []
        self._times: dict[int, list[float]] = {}
        self._t0 = 0.0
        self._switched = False

    @property
    def active(self) -> bool:
        return len(self.options) > 1

    def __enter__(self) -> "ThreadTuner":
        """Before a step: the thread count it runs on."""
        if self.active and not self._plan and self.steps % self.period == 0:
            self._plan = [n for n in self.options for _ in range(self.probe + 1)]
            self._times = {n: [] for n in self.options}
        n = self._plan[0] if self._plan else self.best
        self._switched = torch.get_num_threads() != n
        if self._switched:
            torch.set_num_threads(n)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._t0
        n = torch.get_num_threads()
        self.steps += 1
        self.used[n] = self.used.get(n, 0) + 1
        if self._plan:
            self._plan.pop(0)
            if not self._switched:
                self._times[n].append(elapsed)
            if not self._plan:
                self.best = min(self.options, key=lambda k: statistics.median(self._times[k] or [float("inf")]))

    def restore(self) -> None:
        """Back to the thread count the process had before."""
        if torch.get_num_threads() != self.base:
            torch.set_num_threads(self.base)

    def summary(self) -> str:
        """Which thread counts the steps ran on, e.g. ``2 threads for 97% of steps``."""
        if not self.steps:
            return ""
        return ", ".join(f"{n} thread{'s' if n > 1 else ''} for {100 * c / self.steps:.0f}% of steps"
                         for n, c in sorted(self.used.items(), key=lambda kv: -kv[1]))


def tree_to_device(state: Any, device: torch.device | str) -> Any:
    """``state`` (nested dicts, lists and tuples) with every tensor moved to ``device``; checkpoints
    load onto the CPU."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: tree_to_device(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(tree_to_device(v, device) for v in state)
    return state
