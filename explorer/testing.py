"""Contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call these from your package's own tests::

    from explorer.testing import check_component, check_plugin
    import generative_explorer_mything as plugin

    def test_every_component_honours_the_contract():
        check_plugin(plugin)                         # registers it, then checks every component

    def test_my_sampler_with_other_parameters():
        check_component(MySampler, squares=8)        # parameters go in as keywords

Each check builds the component (``cls(**params)``), exercises it the way the trainer does (on
``device``, with a seeded ``torch.Generator``) and raises ``AssertionError`` with a message that
says what to fix. They take a second or two each on a CPU. When a component parameter is called
``device`` (or another name a check uses), pass it in ``params={...}`` instead.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from explorer.components import (KINDS, Architecture, Component, Metric, MetricContext, Objective, Sampler,
                                 normalise_loss)
from explorer.errors import ExplorerError
from explorer.params import Param

N = 256  # samples per check
RESERVED_KEYS = ("step", "time", "d_loss", "g_loss", "steps_per_s")
#: (role, in_shape, out_shape) an architecture is tried on; ``supports()`` may refuse some
SHAPES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("generator", (2,), (2,)), ("generator", (1,), (1,)), ("generator", (16,), (1, 8, 8)),
    ("generator", (8,), (3, 16, 16)), ("discriminator", (2,), (1,)), ("discriminator", (1,), (1,)),
    ("discriminator", (1, 8, 8), (1,)), ("discriminator", (3, 16, 16), (1,)),
)


class _Fail:
    """Builds AssertionErrors that name the component: '<kind> <name> (<module.Class>): what. Fix: how.'"""

    def __init__(self, cls: type) -> None:
        self.label = f"{getattr(cls, 'kind', '?')} {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})"

    def __call__(self, what: str, fix: str = "") -> AssertionError:
        return AssertionError(f"{self.label}: {what}" + (f". Fix: {fix}" if fix else ""))

    def check(self, ok: Any, what: str, fix: str = "") -> None:
        if not ok:
            raise self(what, fix)


def _gen(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _merged(params: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(params or {}), **kw}


def _build(cls: type[Component], params: Mapping[str, Any], fail: _Fail) -> Any:
    check_params(cls)
    try:
        obj = cls(**params)
    except ExplorerError as exc:
        raise fail(f"cls(**{params!r}) was refused: {exc}", "pass valid parameters to the check (its keyword arguments)") from exc
    except Exception as exc:
        raise fail(f"cls(**{params!r}) raised {type(exc).__name__}: {exc}", "the constructor must work with the declared defaults") from exc
    fail.check(isinstance(getattr(obj, "config", None), dict),
               "self.config is missing", "call super().__init__(**kw) first thing in __init__")
    fail.check(set(obj.config) == {p.name for p in cls.params},
               f"self.config holds {sorted(obj.config)}, not the declared parameters", "do not replace self.config")
    return obj


def _finite(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _same_device(x: Tensor, device: torch.device) -> bool:
    return x.device.type == device.type


def _own_rng(check: Callable[..., Any]) -> Callable[..., Any]:
    """Run a check on a copy of torch's global RNG state, so calling it never changes the caller's stream."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------------
def check_params(cls: type[Component]) -> None:
    """Parameter declarations: Param objects, unique names, help text, defaults that pass their own
    bounds and choices, and a JSON-serialisable description (``genex plugins --json``)."""
    fail = _Fail(cls)
    fail.check(isinstance(cls.params, (tuple, list)), "params is not a tuple", "params = (Param(...), ...)")
    names = set()
    for p in cls.params:
        fail.check(isinstance(p, Param), f"params holds {p!r}", "declare each parameter with explorer.Param")
        fail.check(p.name not in names, f"parameter {p.name!r} is declared twice")
        fail.check(p.name != "name", "a parameter is called 'name'", "'name' is reserved for the component name")
        names.add(p.name)
        fail.check(p.help.strip(), f"parameter {p.name!r} has no help text", "it is the tooltip and the CLI help")
        if p.low is not None and p.high is not None:
            fail.check(p.low <= p.high, f"parameter {p.name!r} has low {p.low} above high {p.high}")
        if p.choices is not None:
            fail.check(p.default is None or p.default in p.choices,
                       f"the default {p.default!r} of {p.name!r} is not among its choices {p.choices}")
        try:
            p.validate(p.default, p.name)
        except ExplorerError as exc:
            raise fail(f"the default of {p.name!r} is invalid: {exc}", "make the default satisfy low/high/choices") from None
    try:
        json.dumps(cls.describe())
    except (TypeError, ValueError) as exc:
        raise fail(f"describe() is not JSON-serialisable: {exc}", "use plain numbers, strings and lists in Param") from None


@_own_rng
def check_sampler(cls: type[Sampler], device: str | torch.device = "cpu", params: Mapping[str, Any] | None = None,
                  **kw: Any) -> Sampler:
    """A sampler draws float32 ``[n, *shape]`` on ``device`` from the given generator only (a seed
    reproduces it; torch's global RNG is untouched); ``log_prob`` (when defined) is ``[n]``, finite on
    samples and, in 1-D and 2-D, integrates to 1; 1-D ``cdf``/``icdf`` agree. Returns the instance."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    s = _build(cls, params, fail)
    fail.check(isinstance(s.shape, tuple) and s.shape and all(isinstance(d, int) and d > 0 for d in s.shape),
               f"shape is {s.shape!r}", "set self.shape to a tuple of positive ints in __init__, e.g. (2,)")
    rng_before = torch.random.get_rng_state()
    x = s.sample(N, _gen(0, device), device)
    fail.check(torch.equal(rng_before, torch.random.get_rng_state()), "sample() drew from torch's global random stream",
               "pass generator=generator to every torch.rand/randn/randint/multinomial call")
    fail.check(isinstance(x, Tensor), f"sample() returned {type(x).__name__}, not a Tensor")
    fail.check(tuple(x.shape) == (N, *s.shape), f"sample({N}) has shape {tuple(x.shape)}, expected {(N, *s.shape)}")
    fail.check(x.dtype == torch.float32, f"sample() returned {x.dtype}", "return float32 (dtype=torch.float32)")
    fail.check(_same_device(x, device), f"sample() returned a tensor on {x.device}, not on {device}",
               "create tensors with device=device")
    fail.check(_finite(x), "sample() returned NaN or infinite values")
    fail.check(not x.requires_grad, "samples require grad", "sample under torch.no_grad() or detach")
    again = cls(**params).sample(N, _gen(0, device), device)
    fail.check(torch.equal(x, again), "two fresh instances with the same seed drew different samples",
               "take all randomness from the generator argument")
    if x.std(0).max() > 0:
        other = cls(**params).sample(N, _gen(1, device), device)
        fail.check(not torch.equal(x, other), "different seeds drew identical samples", "use the generator argument")
    fail.check(tuple(s.sample(1, _gen(2, device), device).shape) == (1, *s.shape), "sample(1) has the wrong shape")
    if s.bounds is not None:
        fail.check(all(len(b) == 2 and b[0] < b[1] for b in s.bounds),
                   f"bounds {s.bounds!r} are not (low, high) pairs with low < high")
        if s.data_kind in ("1d", "2d"):
            fail.check(len(s.bounds) == s.shape[0], f"bounds has {len(s.bounds)} ranges for {s.shape[0]} dimensions")
    stats = s.stats()
    fail.check(isinstance(stats, Mapping) and all(isinstance(k, str) for k in stats), "stats() must return {str: float}")
    for k, v in stats.items():
        fail.check(isinstance(float(v), float), f"stats()[{k!r}] is not a number")
    modes = s.mixture_modes()
    if modes is not None:
        c, std = modes
        fail.check(isinstance(c, Tensor) and c.dim() == 2 and c.shape[1] == math.prod(s.shape) and float(std) > 0,
                   "mixture_modes() must return (centres [K, dim], std > 0)")
    data = s.dataset()
    if data is not None:
        fail.check(isinstance(data, Tensor) and tuple(data.shape[1:]) == s.shape, "dataset() must be a Tensor [N, *shape]")
    if s.has_log_prob:
        _check_log_prob(s, x, device, fail)
    if s.data_kind == "1d" and type(s).cdf is not Sampler.cdf:
        _check_cdf(s, x, fail)
    return s


def _check_log_prob(s: Sampler, x: Tensor, device: torch.device, fail: _Fail) -> None:
    lp = s.log_prob(x)
    fail.check(isinstance(lp, Tensor) and tuple(lp.shape) == (x.shape[0],),
               f"log_prob of [{x.shape[0]}, *shape] has shape {tuple(getattr(lp, 'shape', ()))}", f"return one value per row: [{x.shape[0]}]")
    fail.check(lp.is_floating_point() and _same_device(lp, device), "log_prob must be a float tensor on the samples' device")
    fail.check(not torch.isnan(lp).any() and not (lp == math.inf).any(), "log_prob of its own samples is NaN or +inf")
    fail.check(bool((lp > -math.inf).all()), "log_prob is -inf at some of its own samples", "the density must be > 0 where it samples")
    if s.data_kind not in ("1d", "2d"):
        return
    # The density must integrate to 1: a Riemann sum over a box holding the samples with a wide margin.
    pts = x.detach().double().cpu()
    lo, hi = pts.min(0).values, pts.max(0).values
    if s.bounds is not None:
        lo = torch.minimum(lo, torch.tensor([b[0] for b in s.bounds], dtype=torch.float64))
        hi = torch.maximum(hi, torch.tensor([b[1] for b in s.bounds], dtype=torch.float64))
    span = hi - lo
    lo, hi = lo - 0.5 * span, hi + 0.5 * span
    k = 20001 if s.data_kind == "1d" else 401
    axes = [torch.linspace(float(a), float(b), k, dtype=torch.float64) for a, b in zip(lo, hi)]
    grid = torch.cartesian_prod(*axes).reshape(-1, len(axes)) if len(axes) > 1 else axes[0].reshape(-1, 1)
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    with torch.no_grad():
        dens = torch.cat([s.log_prob(g.float().to(device)).double().cpu().exp() for g in grid.split(65536)])
    total = float(torch.nan_to_num(dens, nan=0.0).sum()) * cell
    fail.check(abs(total - 1.0) < 0.05, f"exp(log_prob) integrates to {total:.4f}, not 1, over {[(round(float(a), 3), round(float(b), 3)) for a, b in zip(lo, hi)]}",
               "log_prob must be the exact normalised log-density (drop log_prob if you only know it up to a constant)")


def _check_cdf(s: Sampler, x: Tensor, fail: _Fail) -> None:
    xs = x.reshape(-1).sort().values
    F = s.cdf(xs.reshape(-1, 1)).reshape(-1)
    fail.check(F.numel() == xs.numel() and bool(((F >= 0) & (F <= 1)).all()), "cdf values must lie in [0, 1], one per sample")
    fail.check(bool((F[1:] >= F[:-1] - 1e-6).all()), "cdf is not non-decreasing")
    if type(s).icdf is not Sampler.icdf:
        u = torch.linspace(0.05, 0.95, 19, device=x.device).reshape(-1, 1)
        q = s.icdf(u).reshape(-1)
        fail.check(q.numel() == 19 and _finite(q) and bool((q[1:] >= q[:-1] - 1e-6).all()),
                   "icdf must be finite and non-decreasing on (0, 1)")
        back = s.cdf(q.reshape(-1, 1)).reshape(-1)
        fail.check(torch.allclose(back, u.reshape(-1), atol=5e-3), "cdf(icdf(u)) != u", "icdf must invert cdf")


# ------------------------------------------------------------------------------------------------
@_own_rng
def check_architecture(cls: type[Architecture], device: str | torch.device = "cpu",
                       shapes: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
                       params: Mapping[str, Any] | None = None, **kw: Any) -> None:
    """For each (role, in_shape, out_shape) it ``supports``: ``build`` returns an nn.Module that maps a
    float32 batch ``[n, *in]`` to finite float32 ``[n, *out]`` on ``device``, seeded builds are equal,
    every parameter gets a gradient, and a discriminator passes gradients back to its input."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    arch = _build(cls, params, fail)
    built = {"generator": 0, "discriminator": 0}
    for role, in_shape, out_shape in shapes or SHAPES:
        reason = arch.supports(role, in_shape, out_shape)
        fail.check(reason is None or (isinstance(reason, str) and reason.strip()),
                   f"supports() returned {reason!r}", "return None or a message saying why not")
        if reason:
            continue
        at = f"{role} {in_shape} -> {out_shape}"
        torch.manual_seed(0)
        net = arch.build(role, in_shape, out_shape)
        fail.check(isinstance(net, nn.Module), f"build({at}) returned {type(net).__name__}, not an nn.Module")
        torch.manual_seed(0)
        twin = arch.build(role, in_shape, out_shape)
        a, b = net.state_dict(), twin.state_dict()
        fail.check(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
                   f"two builds for {at} under the same torch.manual_seed differ",
                   "initialise weights from torch's global RNG (the pipeline seeds it) and nothing else")
        net.to(device).train()
        x = torch.randn(8, *in_shape, generator=_gen(0, device), device=device).requires_grad_(True)
        y = net(x)
        fail.check(isinstance(y, Tensor) and tuple(y.shape) == (8, *out_shape),
                   f"{at}: output shape {tuple(getattr(y, 'shape', ()))}, expected {(8, *out_shape)}",
                   "reshape the output to out_shape (a discriminator returns [n, 1] logits)")
        fail.check(y.dtype == torch.float32 and _same_device(y, device) and _finite(y),
                   f"{at}: output must be finite float32 on {device} (got {y.dtype} on {y.device})")
        y.float().square().mean().backward()
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        fail.check(trainable, f"{at}: the network has no trainable parameters")
        missing = [n for n, p in trainable if p.grad is None]
        fail.check(not missing, f"{at}: parameters {missing[:5]} get no gradient", "remove unused layers or detach calls")
        fail.check(all(_finite(p.grad) for _, p in trainable), f"{at}: non-finite gradients")
        fail.check(any(bool(p.grad.abs().sum() > 0) for _, p in trainable), f"{at}: every gradient is zero")
        if role == "discriminator":
            fail.check(x.grad is not None and _finite(x.grad) and bool(x.grad.abs().sum() > 0),
                       f"{at}: no gradient reaches the input", "the generator learns through D(G(z)): never detach the input")
        built[role] += 1
    for role, count in built.items():
        if shapes is None:
            fail.check(count, f"supports() refuses every test shape for the {role}",
                       f"pass shapes=[('{role}', in_shape, out_shape), ...] that it supports")


# ------------------------------------------------------------------------------------------------
class _Flat(nn.Module):
    def __init__(self, d_in: int, d_out: int, out_shape: tuple[int, ...], hidden: int = 0) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d_out)) if hidden else nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.out_shape)


def _check_loss(out: Any, what: str, fail: _Fail) -> Tensor:
    try:
        loss, extras = normalise_loss(out, what)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc), "return a scalar tensor, or (scalar, {name: scalar tensor})") from None
    fail.check(loss.is_floating_point() and _finite(loss), f"{what} is {loss.item()}", "keep losses finite (work on logits)")
    fail.check(loss.requires_grad, f"{what} does not require grad", "compute it from the network outputs without detaching")
    for k, v in extras.items():
        fail.check(isinstance(k, str) and k not in RESERVED_KEYS, f"{what} extra {k!r} is not a free name",
                   f"names {RESERVED_KEYS} are taken by the trainer")
        fail.check(isinstance(v, Tensor) and v.numel() == 1 and _finite(v.detach()), f"{what} extra {k!r} must be a finite scalar tensor")
    return loss


@_own_rng
def check_objective(cls: type[Objective], device: str | torch.device = "cpu",
                    params: Mapping[str, Any] | None = None, **kw: Any) -> None:
    """On 2-D points and on 1x8x8 images: ``discriminator_loss`` (when it needs D) is a finite scalar
    whose gradient reaches D's parameters only; ``generator_loss`` is a finite scalar whose gradient
    reaches the fake samples and G's parameters; both are deterministic under a seed; ``critic``
    returns None or one finite value per point."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    obj = _build(cls, params, fail)
    needs_d = obj.needs_discriminator
    for shape in ((2,), (1, 8, 8)):
        d = math.prod(shape)
        torch.manual_seed(0)
        G = _Flat(4, d, shape).to(device)
        D = _Flat(d, 1, (1,), hidden=16).to(device) if needs_d else None
        real = torch.randn(32, *shape, generator=_gen(1, device), device=device)
        z = torch.randn(32, 4, generator=_gen(2, device), device=device)
        if needs_d:
            with torch.no_grad():
                fake = G(z)
            torch.manual_seed(3)
            loss = _check_loss(obj.discriminator_loss(D, real, fake), "discriminator_loss", fail)
            loss.backward()
            grads = [p.grad for p in D.parameters()]
            fail.check(all(g is not None and _finite(g) for g in grads) and any(bool(g.abs().sum() > 0) for g in grads),
                       f"discriminator_loss {shape}: D's parameters get no (finite) gradient")
            fail.check(all(p.grad is None for p in G.parameters()), "discriminator_loss reached G's parameters")
            torch.manual_seed(3)
            again, _ = normalise_loss(obj.discriminator_loss(D, real, fake), "discriminator_loss")
            fail.check(torch.allclose(loss, again), "discriminator_loss differs between two calls under the same seed")
            D.zero_grad(set_to_none=True)
        fake = G(z)
        fake.retain_grad()
        torch.manual_seed(3)
        loss = _check_loss(obj.generator_loss(D, real, fake), "generator_loss", fail)
        loss.backward()
        fail.check(fake.grad is not None and _finite(fake.grad) and bool(fake.grad.abs().sum() > 0),
                   f"generator_loss {shape}: no gradient reaches the fake samples", "build the loss from fake (through D)")
        fail.check(all(p.grad is not None and _finite(p.grad) for p in G.parameters()),
                   f"generator_loss {shape}: G's parameters get no (finite) gradient")
        torch.manual_seed(3)
        again, _ = normalise_loss(obj.generator_loss(D, real, G(z)), "generator_loss")
        fail.check(torch.allclose(loss, again), "generator_loss differs between two calls under the same seed")
        if shape == (2,):
            pts = torch.randn(50, 2, generator=_gen(4, device), device=device)
            crit = obj.critic(D, pts, real, fake.detach())
            if crit is not None:
                fail.check(isinstance(crit, Tensor) and crit.numel() == 50 and _finite(crit.detach()),
                           "critic() must return None or one finite value per point")
    fail.check(isinstance(obj.formula, str), "formula must be a string")


# ------------------------------------------------------------------------------------------------
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
    shifted fakes, the same values twice under a seed, and leaves its inputs untouched."""
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


# ------------------------------------------------------------------------------------------------
CHECKS = {"sampler": check_sampler, "architecture": check_architecture, "objective": check_objective, "metric": check_metric}


def check_component(cls: type[Component], device: str | torch.device = "cpu", params: Mapping[str, Any] | None = None,
                    **kw: Any) -> None:
    """The registration checks, then the check for its kind (``check_sampler``, ...)."""
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise AssertionError(f"{cls!r} is not a component: subclass explorer.Sampler, Architecture, Objective or Metric")
    from explorer import contract

    try:
        contract.check_class(kind, cls)
    except (TypeError, ValueError) as exc:
        raise _Fail(cls)(f"the registry would reject it: {exc}") from None
    extra = {"data": kw.pop("data")} if kind == "metric" and "data" in kw else {}
    CHECKS[kind](cls, device=device, params=_merged(params, kw), **extra)


def check_plugin(plugin: Any, name: str | None = None, device: str | torch.device = "cpu",
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """Register ``plugin`` (a module or object with hooks) in a fresh registry, require no load errors
    and no name clash with the installed plugins, and run :func:`check_component` on each component
    (``params`` maps a component name to the parameters to check it with).

    Returns the installed registry with this plugin in it (for :func:`check_training`).
    """
    from explorer.registry import Registry

    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    fresh = Registry()
    fresh.add_plugin(plugin, name=name)
    if fresh.errors:
        raise AssertionError("plugin failed to load:\n" + "\n".join(f"[{e.stage}] {e.message}\n{e.traceback}" for e in fresh.errors))
    mine = [info for kind in KINDS for info in fresh.components[kind].values()]
    if not mine:
        raise AssertionError(f"plugin {name!r} registered no components: call register(YourClass) in its hooks")
    installed = Registry().load_installed()
    for info in mine:
        other = installed.components[info.kind].get(info.name)
        if other is not None and (other.cls.__module__, other.cls.__qualname__) != (info.cls.__module__, info.cls.__qualname__):
            raise AssertionError(f"{info.kind} name {info.name!r} is already taken by plugin {other.source}: rename yours")
    installed = registry_with(plugin, name, installed)
    params = params or {}
    # Metrics are tried on the reference data sets and on this plugin's own samplers.
    samplers = [info.cls(**params.get(info.name, {})) for info in mine if info.kind == "sampler"]
    for info in mine:
        extra = {"data": reference_data() + samplers} if info.kind == "metric" else {}
        check_component(info.cls, device=device, params=params.get(info.name), **extra)
    return installed


def registry_with(plugin: Any, name: str | None = None, registry: Any = None) -> Any:
    """The installed plugins (``registry``, or ``Registry().load_installed()``) plus ``plugin`` when it is
    not installed yet (a package being developed from its folder): what :func:`check_training` needs."""
    from explorer.registry import Registry

    registry = registry if registry is not None else Registry().load_installed()
    module = getattr(plugin, "__name__", type(plugin).__module__)
    if not any(p.module == module for p in registry.plugins.values()):
        registry.add_plugin(plugin, name=name or module)
    return registry


def check_training(spec: Mapping[str, Any], registry: Any = None, steps: int = 20) -> Any:
    """Train ``spec`` (a raw spec dict, e.g. ``{"data": "my-sampler", "objective": "nonsaturating"}``)
    for ``steps`` steps in memory on the CPU, metrics included; require it to finish with finite
    losses. Returns the final :class:`~explorer.training.RunView`."""
    from explorer.pipeline import Pipeline
    from explorer.spec import parse_spec
    from explorer.training import Trainer, TrainerConfig

    raw = {"device": "cpu", "batch_size": 64, "log_every": max(1, steps // 2), "snapshot_every": steps,
           "metric_every": steps, "checkpoint_every": 0, "snapshot_size": 256, **dict(spec), "steps": steps}
    resolved = parse_spec(raw, registry)
    trainer = Trainer(Pipeline(resolved, registry), config=TrainerConfig(snapshot_hz=0))
    status = trainer.run()
    view = trainer.state.view()
    if status != "finished":
        raise AssertionError(f"training {spec!r} ended {status}: {view.error}")
    losses = [r for r in view.history if "g_loss" in r]
    if not losses or not all(math.isfinite(v) for r in losses for v in r.values() if isinstance(v, float)):
        raise AssertionError(f"training {spec!r} logged no finite losses: {losses}")
    return view


__all__ = ["check_component", "check_params", "check_sampler", "check_architecture", "check_objective", "check_metric",
           "check_plugin", "check_training", "registry_with", "reference_data"]
