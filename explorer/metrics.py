"""Metric computations shared by plugins (objectives and metrics): pure functions, no plugins.

Kernels and MMD follow Gretton et al. 2012 ("A Kernel Two-Sample Test") and GMMN (Li, Swersky,
Zemel 2015): k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)) over a set of bandwidths s. Below them:
two-sample distances for any data, histogram divergences, the mode-collapse metrics of VEEGAN and
PacGAN. Feature-space metrics for images live next to their one user, in :mod:`plugins._feature_metrics`. The kernel functions stay differentiable torch code (objectives train on them);
the rest run on snapshots and may use NumPy on the host.
"""

from __future__ import annotations

import functools
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``[n, m]`` between rows of x and y (clamped at 0)."""
    x, y = _flat(x), _flat(y)
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def median_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """The median heuristic: sqrt(median pairwise squared distance / 2) over the pooled sample."""
    z = torch.cat([_flat(x), _flat(y)])
    d = sq_distances(z, z)
    n = d.shape[0]
    # The off-diagonal entries as a strided view (row i of the [n - 1, n + 1] view starts just after
    # d[i, i]), not a boolean-mask copy: the same n (n - 1) values, in half the time.
    off = d.flatten()[1:].view(n - 1, n + 1)[:, :-1]
    return (off.median() / 2.0).clamp_min(1e-12).sqrt()


def rbf_mixture_kernel(d2: Tensor, sigmas: Sequence[float] | Tensor) -> Tensor:
    """sum_s exp(-d2 / (2 s^2)) for squared distances ``d2``."""
    sig = torch.as_tensor(sigmas, dtype=d2.dtype, device=d2.device).reshape(-1, *([1] * d2.dim()))
    return torch.exp(-d2.unsqueeze(0) / (2.0 * sig * sig)).sum(0)


#: elements in one block of a kernel matrix (512 KiB in float32): a block stays in the CPU's cache
#: through the exps of all bandwidths instead of streaming an n x m matrix through memory per bandwidth
KERNEL_BLOCK = 1 << 17


def kernel_sum(a: Tensor, b: Tensor | None, sigmas: Sequence[float] | Tensor) -> Tensor:
    """sum_i sum_j k(a_i, b_j) for the RBF mixture k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)).

    With ``b`` None: sum_{i != j} k(a_i, a_j), the off-diagonal sum of a sample with itself (each
    diagonal term is exactly ``len(sigmas)``). Differentiable in ``a`` and ``b`` (not in the sigmas,
    which are constants here) and never builds the n x m matrix: the squared distances are computed
    once per block of rows (the ``||a||^2 + ||b||^2 - 2 a.b`` form, one GEMM) and shared by every
    bandwidth; the exps, the sum and the gradient coefficients are accumulated in that block; with
    ``b`` None only the blocks on and above the diagonal are computed. The gradient is formed in the
    same pass, d/da_i sum_j k(a_i, b_j) = -2 sum_j G_ij (a_i - b_j) with G_ij = sum_s e^{-d_ij / 2s^2} / 2s^2,
    as two small GEMMs, so backward costs nothing more. Half-precision inputs are summed in float32.
    """
    sig = torch.as_tensor(sigmas, dtype=torch.float64 if a.dtype == torch.float64 else torch.float32, device=a.device)
    coeffs = (0.5 / (sig.detach() * sig.detach())).reshape(-1)
    return _KernelSum.apply(_flat(a), None if b is None else _flat(b), coeffs)


class _KernelSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor | None, coeffs: Tensor) -> Tensor:  # type: ignore[override]
        grads = ctx.needs_input_grad[0] or (b is not None and ctx.needs_input_grad[1])
        dtype = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(a.device.type, enabled=False):
            total, ga, gb = _kernel_sum_blocks(a.detach().to(dtype), None if b is None else b.detach().to(dtype),
                                               coeffs.to(dtype), grads)
        ctx.save_for_backward(ga, gb)
        ctx.dtypes = (a.dtype, None if b is None else b.dtype)
        return total.to(a.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        ga, gb = ctx.saved_tensors
        da = (grad * ga).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] and ga is not None else None
        db = (grad * gb).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] and gb is not None else None
        return da, db, None


def _kernel_sum_blocks(a: Tensor, b: Tensor | None, coeffs: Tensor, grads: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The blocked pass behind :func:`kernel_sum`: (total, d total / d a, d total / d b)."""
    same = b is None
    bm = a if same else b
    n, m = a.shape[0], bm.shape[0]
    # exp of an argument below log(smallest normal) underflows into subnormals, which CPUs compute
    # on a slow path (15x slower measured for float32); such terms are < 1e-37: flooring the
    # argument there changes no sum and keeps every exp on the fast path.
    floor = 0.5 * math.log(torch.finfo(a.dtype).tiny)
    # On the CPU the coefficients are plain numbers (no sync to read them) and a block whose largest
    # distance keeps c * d above the floor skips the clamp; elsewhere they stay device scalars.
    on_cpu = a.device.type == "cpu"
    cs: list[Any] = coeffs.tolist() if on_cpu else list(coeffs)
    aa, bb = (a * a).sum(1), (bm * bm).sum(1)
    total = a.new_zeros(())
    ga = torch.zeros_like(a) if grads else None
    gb = torch.zeros_like(bm) if grads and not same else None
    rows = max(1, KERNEL_BLOCK // max(m, 1))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        r, j0 = i1 - i0, (i0 if same else 0)
        ai, bj = a[i0:i1], bm[j0:]
        d2 = torch.addmm(bb[None, j0:], ai, bj.T, alpha=-2.0).add_(aa[i0:i1, None]).clamp_min_(0.0)  # [r, m - j0]
        if same:
            d2[:, :r].diagonal().zero_()
        e = torch.empty_like(d2)
        g = torch.empty_like(d2) if grads else None
        dmax = float(d2.max()) if on_cpu else 0.0
        for s, c in enumerate(cs):
            torch.mul(d2, -c, out=e)
            if not on_cpu or c * dmax > -floor:
                e.clamp_min_(floor)
            e.exp_()
            if g is not None:
                if s == 0:
                    torch.mul(e, c, out=g)
                else:
                    g.add_(e, alpha=c) if on_cpu else g.addcmul_(e, c)
            total += e.sum()
            if same:  # the blocks right of the diagonal stand for their mirror images too
                total += e[:, r:].sum()
        if same:
            total -= r * coeffs.shape[0]  # the diagonal: exp(0) = 1 per bandwidth
        if g is None:
            continue
        if same:  # a_i - a_i = 0: left in, G_ii would cancel in a_i sum_j G_ij - sum_j G_ij a_j and cost digits
            g[:, :r].diagonal().zero_()
        ga[i0:i1].addcmul_(ai, g.sum(1, keepdim=True)).sub_(g @ bj)  # type: ignore[index]
        if same:
            off = g[:, r:]
            ga[i1:].addcmul_(a[i1:], off.sum(0)[:, None]).sub_(off.T @ ai)  # type: ignore[index]
        else:
            gb.addcmul_(bm, g.sum(0)[:, None]).sub_(g.T @ ai)  # type: ignore[union-attr]
    # d/da_i of sum_{i != j} k counts each pair twice; of sum_ij k(a_i, b_j) once: -2 G (a_i - b_j)
    if ga is not None:
        ga.mul_(-4.0 if same else -2.0)
    if gb is not None:
        gb.mul_(-2.0)
    return total, ga, gb


def mmd2(x: Tensor, y: Tensor, sigmas: Sequence[float] | Tensor, unbiased: bool = True) -> Tensor:
    """Squared maximum mean discrepancy between samples x [n, ...] and y [m, ...].

    Unbiased (Gretton et al. 2012, Eq. 3): the diagonal terms k(x_i, x_i) are left out, so the
    estimate can be negative; biased: the plain V-statistic, always >= 0. O((n + m)^2 d) time, the
    three kernel sums by :func:`kernel_sum` (blocked, O(block) memory beyond the inputs).
    """
    n, m = x.shape[0], y.shape[0]
    s = len(sigmas) if not isinstance(sigmas, Tensor) else sigmas.numel()
    if x.dtype in (torch.float16, torch.bfloat16) or y.dtype in (torch.float16, torch.bfloat16):
        # kernel sums of thousands of terms and their difference need more than 8 bits of mantissa
        return mmd2(x.float(), y.float(), sigmas, unbiased).to(x.dtype)
    sxx, syy, sxy = kernel_sum(x, None, sigmas), kernel_sum(y, None, sigmas), kernel_sum(x, y, sigmas)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD^2 needs at least two samples on each side")
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    return (sxx + n * s) / n**2 + (syy + m * s) / m**2 - 2.0 * sxy / (n * m)


def witness(points: Tensor, x: Tensor, y: Tensor, sigmas: Sequence[float] | Tensor) -> Tensor:
    """The MMD witness function f(t) = mean_i k(t, x_i) - mean_j k(t, y_j) at ``points``.

    Positive where x (real data) has more mass than y (generated), negative where less.
    """
    kx = rbf_mixture_kernel(sq_distances(points, x), sigmas).mean(1)
    ky = rbf_mixture_kernel(sq_distances(points, y), sigmas).mean(1)
    return kx - ky


# --------------------------------------------------------------------------------------------
# One host thread for snapshot metrics
# --------------------------------------------------------------------------------------------
_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved: tuple[int, Any] | None = None
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


@contextmanager
def one_host_thread(active: bool = True) -> Iterator[None]:
    """Run torch's and NumPy's (BLAS, OpenMP) host pools on one thread inside the block.

    The metrics here are small (a few thousand points); next to a training thread or another run, a
    multi-thread pool spends longer waiting at its barriers than computing (5-30x slower measured
    on a busy 2-core machine). The settings are process-wide, so nested and concurrent uses are
    counted under a lock: the first entry saves them, the last exit restores them.
    """
    global _threads_depth, _threads_saved
    if not active:
        yield
        return
    with _threads_lock:
        if _threads_depth == 0:
            from threadpoolctl import threadpool_limits

            _threads_saved = (torch.get_num_threads(), threadpool_limits(1))
            torch.set_num_threads(1)
        _threads_depth += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0 and _threads_saved is not None:
                torch.set_num_threads(_threads_saved[0])
                _threads_saved[1].restore_original_limits()
                _threads_saved = None


def _one_thread(fn: _Fn) -> _Fn:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_host_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Helpers shared by the metric plugins (host-side; metrics run on snapshots, off the hot path)
# --------------------------------------------------------------------------------------------
def _np64(x: Tensor | np.ndarray) -> np.ndarray:
    """Rows of ``x`` as a float64 NumPy array ``[n, d]``."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def _rows64(x: Tensor | np.ndarray) -> Tensor:
    """Rows as a float64 CPU tensor ``[n, d]`` (no copy when already one)."""
    return torch.as_tensor(_np64(x))


@_one_thread
def pairwise_distances(x: Tensor | np.ndarray, y: Tensor | np.ndarray, chunk: int = 1024) -> Tensor:
    """Euclidean distances ``[n, m]`` in float64 on the CPU.

    Uses the fast matrix-product form and snaps squared distances below 1e-12 of the mean squared
    norm to exactly 0, so that a point and its copy are at distance 0 (the k-NN metrics below rely
    on it: a duplicated point has a k-NN radius of 0 and its copy must still fall inside).
    """
    return torch.cat(list(_distance_chunks(_rows64(x), _rows64(y), chunk)))


def _distance_chunks(a: Tensor, b: Tensor, chunk: int):
    scale = (torch.linalg.vector_norm(a) ** 2 + torch.linalg.vector_norm(b) ** 2) / (a.shape[0] + b.shape[0])
    for i in range(0, a.shape[0], chunk):
        d2 = sq_distances(a[i : i + chunk], b)
        d2[d2 <= 1e-12 * scale] = 0.0
        yield d2.sqrt()


# --------------------------------------------------------------------------------------------
# Any data: MMD permutation test, energy distance, sliced Wasserstein
# --------------------------------------------------------------------------------------------
@_one_thread
def mmd2_permutation_test(
    x: Tensor, y: Tensor, sigmas: Sequence[float] | Tensor, permutations: int = 200,
    unbiased: bool = True, seed: int = 0,
) -> tuple[float, float]:
    """MMD^2 of x against y and its permutation-test p-value (Gretton et al. 2012, Sec. 5).

    Under H0 (same distribution) the labels are exchangeable: pool the samples, relabel them at
    random ``permutations`` times and count how often the permuted MMD^2 reaches the observed one;
    p = (1 + #{MMD^2_perm >= MMD^2_obs}) / (1 + permutations). The kernel matrix is built once.
    """
    z = torch.cat([_flat(x), _flat(y)]).to(torch.float64)
    n, m = x.shape[0], y.shape[0]
    k = rbf_mixture_kernel(sq_distances(z, z), sigmas)
    diag = k.diagonal()
    gen = torch.Generator().manual_seed(seed)
    labels = [torch.cat([torch.ones(n), torch.zeros(m)]).to(k)]
    labels += [labels[0][torch.randperm(n + m, generator=gen)] for _ in range(permutations)]

    def stats(e: Tensor) -> Tensor:  # e: [n+m, B] indicators of the x side
        ke = k @ e
        kf = k @ (1 - e)
        sxx, syy, sxy = (e * ke).sum(0), ((1 - e) * kf).sum(0), ((1 - e) * ke).sum(0)
        if unbiased:
            return (sxx - diag @ e) / (n * (n - 1)) + (syy - diag @ (1 - e)) / (m * (m - 1)) - 2 * sxy / (n * m)
        return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)

    values = torch.cat([stats(torch.stack(labels[i : i + 256], 1)) for i in range(0, len(labels), 256)])
    observed = values[0]
    p_value = (1 + (values[1:] >= observed).sum()) / (1 + permutations)
    return float(observed), float(p_value)


@_one_thread
def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Székely & Rizzo 2013): sqrt(2 E||X - Y|| - E||X - X'|| - E||Y - Y'||).

    The expectations are plain means over all pairs (V-statistics), as in
    ``scipy.stats.energy_distance``, which this equals in 1-D (there it is sqrt(2) times the L2
    distance between the two empirical CDFs).
    """
    a, b = _flat(x).to(torch.float64), _flat(y).to(torch.float64)
    e = 2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()
    return float(e.clamp_min(0.0).sqrt())


def wasserstein_1d(u: np.ndarray, v: np.ndarray, p: float = 1.0) -> np.ndarray:
    """Exact W_p between the empirical distributions of each column of u [n, L] and v [m, L].

    W_p^p = int_0^1 |F^-1(t) - G^-1(t)|^p dt; both quantile functions are steps, constant between
    the merged levels {i/n} and {j/m}, so the integral is a finite sum.
    """
    u, v = np.sort(np.asarray(u, np.float64), 0), np.sort(np.asarray(v, np.float64), 0)
    n, m = u.shape[0], v.shape[0]
    levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    widths = np.diff(levels, prepend=0.0)
    mids = levels - widths / 2
    iu = np.minimum((mids * n).astype(np.int64), n - 1)
    iv = np.minimum((mids * m).astype(np.int64), m - 1)
    return ((widths[:, None] * np.abs(u[iu] - v[iv]) ** p).sum(0)) ** (1.0 / p)


@_one_thread
def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 128, p: float = 1.0, seed: int = 0) -> float:
    """Sliced Wasserstein distance SW_p = (E_theta W_p^p(theta.X, theta.Y))^(1/p) (Bonneel et al. 2015).

    theta runs over ``projections`` random unit directions drawn from a fixed seed, so successive
    snapshots are measured along the same slices. For a translation by s, every slice sees W_p =
    |theta . s|, so SW_1 = |s| E|theta_1|: |s| in 1-D, (2/pi)|s| in 2-D.
    """
    a, b = _np64(x), _np64(y)
    theta = np.random.default_rng(seed).standard_normal((a.shape[1], projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    w = wasserstein_1d(a @ theta, b @ theta, p)
    return float(np.mean(w**p) ** (1.0 / p))


# --------------------------------------------------------------------------------------------
# Histogram divergences (1-D grid, GAN Lab's 2-D grid)
# --------------------------------------------------------------------------------------------
def kl_divergence(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> float:
    """KL(p || q) = sum_i p_i log(p_i / q_i) of two histograms (normalised here; 0 log 0 = 0)."""
    p, q = np.asarray(p, np.float64).ravel(), np.asarray(q, np.float64).ravel()
    p, q = p / p.sum(), q / q.sum()
    s = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[s] * np.log(p[s] / q[s])) / np.log(base))


def js_divergence(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> float:
    """Jensen-Shannon divergence (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2.

    Bounded by log(2) in the chosen base: 1 bit with the default base 2. Equals the *square* of
    ``scipy.spatial.distance.jensenshannon(p, q, base)``, which returns the distance. No smoothing
    is needed: m > 0 wherever p or q is.
    """
    p, q = np.asarray(p, np.float64).ravel(), np.asarray(q, np.float64).ravel()
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return max(0.0, 0.5 * kl_divergence(p, m, base) + 0.5 * kl_divergence(q, m, base))


def histogram_1d(x: Tensor | np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Counts on ``bins`` equal bins over [lo, hi] plus an underflow and an overflow bin (bins + 2)."""
    edges = np.linspace(lo, hi, bins + 1)
    v = _np64(x)[:, 0]
    idx = np.searchsorted(edges, v, side="right")  # 0 below, bins + 1 above
    idx[v == hi] = bins  # the last bin is closed, as in np.histogram
    return np.bincount(idx, minlength=bins + 2).astype(np.float64)


def js_1d(real: Tensor, fake: Tensor, bins: int = 50, bounds: tuple[float, float] | None = None, base: float = 2.0) -> float:
    """JS divergence between 1-D samples on one shared histogram grid (over ``bounds``, else the
    range of the real sample); mass outside the grid lands in two overflow bins, so it counts."""
    r = _np64(real)[:, 0]
    lo, hi = bounds if bounds is not None else (float(r.min()), float(r.max()))
    hi = hi if hi > lo else lo + 1.0
    return js_divergence(histogram_1d(real, lo, hi, bins), histogram_1d(fake, lo, hi, bins), base)


def grid_divergences(
    real: Tensor, fake: Tensor, bounds: Sequence[tuple[float, float]], grid: int = 30,
    eps: float = 1e-4, base: float = 2.0,
) -> tuple[float, float]:
    """GAN Lab's KL(p_real || p_fake) and JS on a ``grid`` x ``grid`` histogram over ``bounds``.

    As GAN Lab (poloclub/ganlab, src/ganlab_evaluators.ts): densities are bin frequencies plus
    ``eps`` = 1e-4 per bin, logs in base 2. Unlike GAN Lab we renormalise after smoothing (so both
    are proper divergences, JS <= 1 bit) and add one bin for points outside the grid.
    """
    def hist(x: Tensor) -> np.ndarray:
        a = _np64(x)[:, :2]
        ij = []
        for d, (lo, hi) in enumerate(bounds):
            t = (a[:, d] - lo) / (hi - lo)
            ij.append(np.floor(t * grid).astype(np.int64))
        i, j = ij
        inside = (i >= 0) & (i < grid) & (j >= 0) & (j < grid)
        flat = np.where(inside, i * grid + j, grid * grid)
        h = np.bincount(flat, minlength=grid * grid + 1) / a.shape[0] + eps
        return h / h.sum()

    p, q = hist(real), hist(fake)
    return kl_divergence(p, q, base), js_divergence(p, q, base)


# --------------------------------------------------------------------------------------------
# Mode collapse on Gaussian mixtures (VEEGAN, PacGAN)
# --------------------------------------------------------------------------------------------
@dataclass
class ModeStats:
    modes: int             #: components nearest to at least one high-quality sample
    hq_fraction: float     #: fraction of samples within ``threshold`` std of their nearest centre
    reverse_kl: float      #: KL(HQ mode histogram || uniform), natural log; NaN with no HQ sample
    counts: np.ndarray     #: HQ samples assigned to each component


def mode_statistics(samples: Tensor, centres: Tensor | np.ndarray, std: float, threshold: float = 3.0) -> ModeStats:
    """Mode-collapse metrics of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018).

    A sample is high quality (HQ) when ||x - mu_nearest|| < threshold * std (strict, as
    ``MetricLogger`` in fjxmlzn/PacGAN, synthetic_data_experiments/PacGAN/pacgan/extensions.py);
    each HQ sample counts for its nearest centre; modes = components with a non-zero count.
    Reverse KL (PacGAN Table 1): KL(p_modes || uniform) = sum_k p_k log(K p_k) = log K - H(p),
    with p the normalised histogram of HQ samples over the K components. The model histogram is
    the first argument, so empty components contribute 0 log 0 = 0 and need no smoothing; with no
    HQ sample at all p is undefined and the value is NaN (PacGAN's code gives NaN there too).
    """
    x = _np64(samples)
    c = _np64(centres)
    d = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    nearest, dmin = d.argmin(1), d.min(1)
    hq = dmin < threshold * std
    counts = np.bincount(nearest[hq], minlength=c.shape[0]).astype(np.float64)
    if counts.sum() > 0:
        p = counts / counts.sum()
        s = p > 0
        reverse_kl = max(0.0, float(np.sum(p[s] * np.log(p[s] * c.shape[0]))))
    else:
        reverse_kl = float("nan")
    return ModeStats(int((counts > 0).sum()), float(hq.mean()), reverse_kl, counts)


def all_finite(*xs: Tensor) -> bool:
    """True when every value is finite (a diverged generator gives NaN samples: metrics then
    report NaN instead of failing the run)."""
    return all(bool(torch.isfinite(x).all()) for x in xs)
