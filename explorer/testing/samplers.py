"""check_sampler: shapes, dtype, device, seeds, state that survives a checkpoint, and an exact
log_prob / cdf when there is one."""

from __future__ import annotations

import io
import math
from typing import Any, Mapping

import torch
from torch import Tensor

from explorer.components import Sampler
from explorer.device import tree_to_device
from explorer.testing._base import N, _build, _Fail, _finite, _gen, _merged, _own_rng, _same_device


@_own_rng
def check_sampler(cls: type[Sampler], device: str | torch.device = "cpu", params: Mapping[str, Any] | None = None,
                  **kw: Any) -> Sampler:
    """A sampler draws float32 ``[n, *shape]`` on ``device`` from the given generator only (a seed
    reproduces it; torch's global RNG is untouched); ``state_dict`` survives ``torch.save`` /
    ``torch.load(weights_only=True)`` and a fresh instance loaded with it continues the same stream
    (what a resumed run relies on); ``log_prob`` (when defined) is ``[n]``, finite on
    samples and, in 1-D and 2-D, integrates to 1; 1-D ``cdf``/``icdf`` agree; the optional
    capabilities it declares (``propose``/``envelope``, ``trace``, ``labels``: see
    :mod:`explorer.capabilities`) keep their protocols. Returns the instance."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    s = _build(cls, params, fail)
    fail.check(isinstance(s.shape, tuple) and s.shape and all(isinstance(d, int) and d > 0 for d in s.shape),
               f"shape is {s.shape!r}", "set self.shape to a tuple of positive ints in __init__, e.g. (2,)")
    rng_before = _global_rng(device)
    x = s.sample(N, _gen(0, device), device)
    fail.check(all(torch.equal(a, b) for a, b in zip(rng_before, _global_rng(device))), "sample() drew from torch's global random stream",
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
    _check_state(cls, params, s, device, fail)
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
    _check_capabilities(s, device, fail)
    return s


def _offered(fn: Any, *args: Any) -> Any:
    """Call a capability; None when it raises NotImplementedError (not offered for this configuration)."""
    try:
        return fn(*args)
    except NotImplementedError:
        return None


def _check_capabilities(s: Sampler, device: torch.device, fail: _Fail) -> None:
    """The optional protocols of :mod:`explorer.capabilities` that the sampler declares."""
    from explorer.capabilities import has_capability

    fail.check(has_capability(s, "propose") == has_capability(s, "envelope"),
               "it defines only one of propose() and envelope()", "rejection samplers define both (see explorer.capabilities)")
    if has_capability(s, "propose"):
        out = _offered(s.propose, 200, _gen(5, device), device)
        if out is not None:
            fail.check(isinstance(out, tuple) and len(out) == 4 and all(isinstance(t, Tensor) for t in out),
                       "propose() must return four tensors (x, y, p, accepted)")
            x, y, p, acc = out
            fail.check(all(t.shape[0] == 200 for t in out) and all(t.numel() == 200 for t in out[1:]),
                       "propose(200) must return 200 proposals x and 200 values of each of y, p, accepted")
            fail.check(acc.dtype == torch.bool and torch.equal(acc.reshape(-1), (y <= p).reshape(-1)),
                       "accepted must be the boolean mask y <= p(x)")
            env = s.envelope(x)
            fail.check(isinstance(env, Tensor) and env.numel() == 200 and _finite(env),
                       "envelope(x) must be finite, one value per proposal")
            fail.check(bool((y.reshape(-1) <= env.reshape(-1) * (1 + 1e-5) + 1e-12).all()),
                       "a proposal's height y lies above the envelope", "y = u * envelope(x) with u ~ U(0, 1)")
            fail.check(bool((p.reshape(-1) <= env.reshape(-1) * (1 + 1e-4) + 1e-9).all()),
                       "the envelope M q(x) lies below the target density p(x) somewhere", "raise M")
    if has_capability(s, "trace"):
        before = s.state_dict()
        tr = _offered(s.trace, 50, _gen(6, device), device)
        if tr is not None:
            fail.check(isinstance(tr, Tensor) and tr.shape[0] == 50 and _finite(tr),
                       "trace(50) must return 50 finite states", "return one chain's states [n_steps]")
            again = s.trace(50, _gen(6, device), device)
            fail.check(torch.equal(tr, again), "trace() differs between two calls with the same seed")
            after = s.state_dict()
            fail.check(before.keys() == after.keys() and all(not isinstance(v, Tensor) or torch.equal(v, after[k]) for k, v in before.items()),
                       "trace() moved the sampling chains", "run the trace on a fresh chain of its own")
    if has_capability(s, "labels"):
        data = s.dataset()
        y = _offered(s.labels)
        if y is not None:
            fail.check(data is not None, "labels() is defined but dataset() returns None", "labels describe dataset()'s rows")
            fail.check(isinstance(y, Tensor) and y.dim() == 1 and y.shape[0] == data.shape[0] and not y.is_floating_point(),
                       "labels() must be an integer tensor [N], one label per row of dataset()")


def _check_state(cls: type[Sampler], params: Mapping[str, Any], s: Sampler, device: torch.device, fail: _Fail) -> None:
    state = s.state_dict()
    fail.check(isinstance(state, Mapping), f"state_dict() returned {type(state).__name__}, not a dict")
    buf = io.BytesIO()
    try:
        torch.save(dict(state), buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's
        fail.check(False, f"state_dict() does not survive a checkpoint: {type(exc).__name__}: {exc}",
                   "keep state_dict() to tensors, numbers and strings")
        return
    fresh = cls(**params)
    if loaded:  # as a resumed run does: an empty state is never loaded
        try:
            fresh.load_state_dict(tree_to_device(loaded, device))
        except Exception as exc:  # noqa: BLE001
            fail.check(False, f"load_state_dict(state_dict()) raised {type(exc).__name__}: {exc}",
                       "load_state_dict must accept what state_dict returned")
    continued = s.sample(N, _gen(3, device), device)
    resumed = fresh.sample(N, _gen(3, device), device)
    fail.check(torch.equal(continued, resumed),
               "a fresh instance loaded with state_dict() draws differently from the instance that saved it",
               "put everything sample() carries between calls (chain positions, cursors) into state_dict() "
               "and restore it in load_state_dict()")


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


def _global_rng(device: torch.device) -> list[Tensor]:
    """torch's global random states a sampler must leave alone: the CPU's, and the GPU's when sampling there."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states
