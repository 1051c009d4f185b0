"""check_metric, and the reference data sets it tries a metric on."""

from __future__ import annotations

import math
import tempfile
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from explorer.components import DIRECTIONS, Metric, MetricContext, Sampler
from explorer.testing._base import RESERVED_KEYS, _build, _Fail, _gen, _merged, _own_rng


class _Normal1D(Sampler):
    name, summary = "test-normal-1d", "N(0, 1) in one dimension"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.shape, self.bounds = (1,), ((-4.0, 4.0),)

    def sample(self, n: int, generator: torch.Generator, device: Any) -> Tensor:
        return torch.randn(n, 1, generator=generator, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * x.reshape(-1) ** 2 - 0.5 * math.log(2 * math.pi)

    def cdf(self, x: Tensor) -> Tensor:
        return torch.special.ndtr(x)

    def icdf(self, u: Tensor) -> Tensor:
        return torch.special.ndtri(u)


class _Ring2D(Sampler):
    name, summary = "test-ring-2d", "8 Gaussians (std 0.05) on the unit circle"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        a = torch.arange(8) * (2 * math.pi / 8)
        self.centres = torch.stack([a.cos(), a.sin()], 1)
        self.shape, self.bounds = (2,), ((-1.5, 1.5), (-1.5, 1.5))

    def sample(self, n: int, generator: torch.Generator, device: Any) -> Tensor:
        k = torch.randint(0, 8, (n,), generator=generator, device=device)
        return self.centres.to(device)[k] + 0.05 * torch.randn(n, 2, generator=generator, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        d2 = ((x.unsqueeze(1) - self.centres.to(x)) ** 2).sum(-1)
        return torch.logsumexp(-d2 / (2 * 0.05 ** 2), 1) - math.log(8 * 2 * math.pi * 0.05 ** 2)

    def mixture_modes(self) -> tuple[Tensor, float]:
        return self.centres, 0.05


class _Vector(Sampler):
    name, summary = "test-vector", "N(0, I) in 5 dimensions"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.shape = (5,)

    def sample(self, n: int, generator: torch.Generator, device: Any) -> Tensor:
        return torch.randn(n, 5, generator=generator, device=device)


class _Images(Sampler):
    """300 1x8x8 images in [-1, 1]: three noisy stripe patterns, with labels."""

    name, summary = "test-images", "noisy stripes, 1x8x8"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.shape = (1, 8, 8)
        g = torch.Generator().manual_seed(0)
        self._labels = torch.arange(300) % 3
        base = torch.stack([torch.arange(8).remainder(k + 2).eq(0).float().expand(8, 8) for k in range(3)]) * 1.6 - 0.8
        self._images = (base[self._labels] + 0.1 * torch.randn(300, 8, 8, generator=g)).clamp(-1, 1).unsqueeze(1)

    def sample(self, n: int, generator: torch.Generator, device: Any) -> Tensor:
        idx = torch.randint(0, 300, (n,), generator=generator, device=device)
        return self._images.to(device)[idx]

    def dataset(self) -> Tensor:
        return self._images

    def labels(self) -> Tensor:
        return self._labels


def reference_data() -> list[Sampler]:
    """The data sets :func:`check_metric` tries: 1-D normal, 2-D ring of 8 modes, 5-D normal, 1x8x8 images."""
    return [_Normal1D(), _Ring2D(), _Vector(), _Images()]


_CACHE = tempfile.TemporaryDirectory(prefix="genex-testing-")


@_own_rng
def check_metric(cls: type[Metric], device: str | torch.device = "cpu", data: Sampler | Iterable[Sampler] | None = None,
                 params: Mapping[str, Any] | None = None, **kw: Any) -> None:
    """On each data set it ``applies`` to (``data``, or the reference data sets): ``compute`` returns
    ``{str: finite float}`` when real and fake come from the data, the same keys (NaN allowed) for
    shifted fakes, the same values twice under a seed, and leaves its inputs untouched; ``directions``
    says for every returned key whether higher or lower is better (or None)."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    metric = _build(cls, params, fail)
    datasets = reference_data() if data is None else ([data] if isinstance(data, Sampler) else list(data))
    used = [d for d in datasets if metric.applies(d)]
    fail.check(used, f"applies() is False for every test data set ({', '.join(d.summary for d in datasets)})",
               "pass data=YourSampler(...) that it applies to")
    n = min(metric.sample_size, 512)
    for d in used:
        real = d.sample(n, _gen(0, device), device)
        fake = d.sample(n, _gen(1, device), device)
        shifted = (fake + 0.75) if d.data_kind != "image" else fake.flip(-1).neg()
        results = []
        for f in (fake, shifted, fake):
            r0, f0 = real.clone(), f.clone()
            ctx = MetricContext(data=d, device=device, generator=_gen(5, device), cache_dir=_CACHE.name)
            out = metric.compute(real, f, ctx)  # as the trainer calls it: grad mode left on
            fail.check(torch.equal(real, r0) and torch.equal(f, f0), "compute() modified its input tensors", "work on copies")
            results.append(_well_formed(out, d, fail))
        same, far, again = results
        bad = {k: v for k, v in same.items() if not math.isfinite(v)}
        fail.check(not bad, f"on {d.summary}: non-finite values {bad} for samples of the data itself")
        fail.check(far.keys() == same.keys(), f"on {d.summary}: keys change between calls ({sorted(same)} vs {sorted(far)})",
                   "always return the same keys (use float('nan') when a value is undefined)")
        fail.check(all(again[k] == same[k] or (math.isnan(again[k]) and math.isnan(same[k])) for k in same),
                   f"on {d.summary}: two calls with the same inputs and seed gave {same} and {again}",
                   "take randomness from context.generator or a seeded generator of your own")
        undeclared = sorted(set(same) - set(cls.directions))
        fail.check(not undeclared, f"directions does not say which way is better for {undeclared}",
                   'declare directions = {"key": "higher" | "lower" | None} for every key compute() returns '
                   "(None: a diagnostic with no better direction)")
    fail.check(isinstance(cls.directions, Mapping) and all(v in DIRECTIONS for v in cls.directions.values()),
               f"directions is {cls.directions!r}", 'map each key to "higher", "lower" or None')
    log_keys = getattr(cls, "log_keys", frozenset())
    fail.check(isinstance(log_keys, (set, frozenset)) and set(log_keys) <= set(cls.directions),
               f"log_keys {sorted(log_keys) if isinstance(log_keys, (set, frozenset)) else log_keys!r} names keys "
               "that directions does not declare", "list in log_keys only keys compute() returns (a frozenset of names)")


def _well_formed(out: Any, data: Sampler, fail: _Fail) -> dict[str, float]:
    fail.check(isinstance(out, Mapping) and out, f"compute() on {data.summary} returned {out!r}", "return a non-empty {name: float} dict")
    clean = {}
    for k, v in out.items():
        fail.check(isinstance(k, str) and k and k not in RESERVED_KEYS, f"compute() key {k!r} is not allowed",
                   f"use non-empty names other than {RESERVED_KEYS}")
        if isinstance(v, Tensor):
            fail.check(v.numel() == 1, f"compute()[{k!r}] is a tensor of shape {tuple(v.shape)}", "return one number per key")
            v = v.item()
        fail.check(isinstance(v, (int, float)) and not isinstance(v, bool), f"compute()[{k!r}] is {v!r}", "return floats")
        fail.check(float(v) != math.inf and float(v) != -math.inf, f"compute()[{k!r}] is infinite")
        clean[k] = float(v)
    return clean
