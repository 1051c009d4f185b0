"""The `mmd` objective: generative moment matching, no discriminator.

The generator minimises the squared maximum mean discrepancy between a real and a generated batch
under a mixture of Gaussian (RBF) kernels, k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)):

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)        (Gretton et al. 2012)

as in generative moment matching networks (GMMN; Li, Swersky, Zemel, ICML 2015) and MMD nets
(Dziugaite, Roy, Ghahramani, UAI 2015). With ``median_heuristic`` the listed bandwidths are
multiples of the median-heuristic bandwidth of the pooled batch (recomputed each step, treated as a
constant), so the same defaults suit 2-D toys spanning [-4, 4] and images in [-1, 1].

Three ways to estimate it (``method``), for batches of n real and m generated points in d dimensions
with S bandwidths:

- ``exact``: every pair, O((n + m)^2 d S) time, O(block) memory (:func:`explorer.metrics.kernel_sum`:
  one distance matrix per block shared by all bandwidths, exps and gradient fused);
- ``rff``: random Fourier features (Rahimi & Recht 2007): k(x, y) ~ phi(x) . phi(y) with
  phi(x) = [cos(W x), sin(W x)] / sqrt(F / S) and W's rows drawn from N(0, I / s^2), F / S per
  bandwidth. MMD^2 becomes ||mean phi(x) - mean phi(y)||^2, O((n + m) F d) time. Fresh frequencies
  are drawn every step from the objective's seeded generator, so each step's estimate is unbiased
  for the exact one's and a run reproduces from its seed;
- ``linear``: the linear-time statistic of Gretton et al. 2012 (Sec. 6, Lemma 14): rows i and h + i
  (h = min(n, m) / 2) form independent pairs, MMD^2_l = mean_i [k(x_i, x_h+i) + k(y_i, y_h+i)
  - k(x_i, y_h+i) - k(x_h+i, y_i)], O((n + m) d S) time, unbiased, with variance of order 1/n
  instead of 1/n^2.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from explorer import Objective, Param, hookimpl
from explorer.metrics import median_bandwidth, mmd2, witness

#: rows per side used for the median heuristic (its cost is quadratic in the rows)
MEDIAN_POINTS = 128


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def mmd2_rff(x: Tensor, y: Tensor, sigmas: Tensor, features: int, generator: torch.Generator | None,
             unbiased: bool = True) -> Tensor:
    """MMD^2 of the RBF mixture through random Fourier features (Rahimi & Recht 2007).

    ``features`` frequencies are split evenly over the bandwidths (at least one each) and drawn
    from ``generator``. phi(x) . phi(x) = S exactly (cos^2 + sin^2), so
    the unbiased form, which leaves out the diagonal k(x_i, x_i) as the exact U-statistic does, is
    (||sum_i phi(x_i)||^2 - n S) / (n (n - 1)) + (same for y) - 2 mean phi(x) . mean phi(y);
    the biased one is ||mean phi(x) - mean phi(y)||^2. For fixed samples, either is an unbiased
    estimate of the exact estimator of the same name; its standard deviation over draws of the
    frequencies falls as 1/sqrt(features).
    """
    x, y = _flat(x), _flat(y)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    s = sigmas.numel()
    per = max(1, features // s)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        w = torch.randn(d, s * per, generator=generator, device=x.device, dtype=dtype)
        w = w / sigmas.detach().to(dtype).repeat_interleave(per)  # column f scaled by 1 / s(f)
        x, y = x.to(dtype), y.to(dtype)
        ex = _mean_features(x, w)
        ey = _mean_features(y, w)
        scale = 1.0 / per  # phi's 1/sqrt(per), squared, applied once to the inner products
        if unbiased:
            if n < 2 or m < 2:
                raise ValueError("the unbiased MMD^2 needs at least two samples on each side")
            sxx = (n * n * scale * ex.square().sum() - n * s) / (n * (n - 1))
            syy = (m * m * scale * ey.square().sum() - m * s) / (m * (m - 1))
            return sxx + syy - 2.0 * scale * (ex * ey).sum()
        return scale * (ex - ey).square().sum()


def _mean_features(x: Tensor, w: Tensor) -> Tensor:
    """mean_i [cos(x_i W), sin(x_i W)], unscaled: a vector of 2F, differentiable in ``x``."""
    return _MeanFeatures.apply(x, w)


class _MeanFeatures(torch.autograd.Function):
    """Keeps the cosines and sines of the forward pass for the backward one, where autograd would
    evaluate each again (d cos = -sin, d sin = cos): half the trigonometry, and the n x F gradient
    formed in one expression, d/dx_i = (1/n) sum_f (cos(x_i w_f) g_sin_f - sin(x_i w_f) g_cos_f) w_f."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        proj = x @ w
        c, s = proj.cos(), proj.sin()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(c, s, w)
        return torch.cat([c.mean(0), s.mean(0)])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None
        c, s, w = ctx.saved_tensors
        f = w.shape[1]
        dproj = torch.mul(c, grad[f:]).addcmul_(s, grad[:f], value=-1.0).div_(c.shape[0])
        return dproj @ w.T, None


def mmd2_linear(x: Tensor, y: Tensor, sigmas: Tensor) -> Tensor:
    """The linear-time MMD^2 statistic (Gretton et al. 2012, Sec. 6, Lemma 14).

    With h = min(n, m) // 2, rows i and h + i of each batch form independent pairs (batches are
    i.i.d., so any fixed pairing will do): MMD^2_l = mean_i h((x_i, y_i), (x_h+i, y_h+i)) with
    h = k(x_i, x_h+i) + k(y_i, y_h+i) - k(x_i, y_h+i) - k(x_h+i, y_i). Unbiased, O(h d S), and it can
    be negative. Rows beyond 2h are left out.
    """
    x, y = _flat(x), _flat(y)
    h = min(x.shape[0], y.shape[0]) // 2
    if h < 1:
        raise ValueError("the linear-time MMD^2 needs at least two samples on each side")
    x1, x2, y1, y2 = x[:h], x[h : 2 * h], y[:h], y[h : 2 * h]
    neg = (-0.5 / sigmas.detach().square()).to(x.dtype)
    floor = 0.5 * math.log(torch.finfo(x.dtype).tiny)  # as in kernel_sum: no exp on the subnormal slow path

    def k(a: Tensor, b: Tensor) -> Tensor:  # k(a_i, b_i), the RBF mixture on matched rows
        d2 = (a - b).square().sum(1, keepdim=True)
        return (d2 * neg).clamp_min(floor).exp().sum(1)

    return (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).mean()


class MMD(Objective):
    """Minimise MMD^2(real, G(z)) with a mixture of RBF kernels (GMMN / MMD nets).

    ``method`` chooses how MMD^2 is estimated each step: ``exact`` (every pair, quadratic in the
    batch), ``rff`` (random Fourier features, linear in the batch, noisier for small ``features``)
    or ``linear`` (Gretton's linear-time statistic, linear and cheapest, noisiest).
    """

    name = "mmd"
    summary = "Generative moment matching (Li et al. 2015; Dziugaite et al. 2015): G minimises MMD^2 to the data, no discriminator"
    needs_discriminator = False
    formula = (r"\min_G \mathrm{MMD}^2 = \mathbb{E}\,k(x,x') + \mathbb{E}\,k(G(z),G(z')) - 2\,\mathbb{E}\,k(x,G(z)),"
               r"\quad k(x,y) = \sum_\sigma e^{-\|x-y\|^2 / 2\sigma^2}")
    #: what each ``method`` trades, for the Train page and the docs (measured in benchmarks/mmd.py)
    methods: ClassVar[dict[str, str]] = {
        "exact": "every pair of the two batches: the exact estimate, its cost quadratic in the batch "
                 "(fast to about 1,000 points a side on a CPU)",
        "rff": "random Fourier features (Rahimi & Recht 2007): the kernel approximated by `features` random "
               "cosines drawn afresh each step, cost linear in the batch; adds noise of order "
               "1/sqrt(features) to each step's estimate, so it pays at batches of thousands",
        "linear": "Gretton et al.'s linear-time statistic: each point used in one pair only; the cheapest, "
                  "but its estimate is much noisier (variance ~1/n instead of ~1/n^2), so it needs large batches",
    }
    #: the Train page's text for this objective; ``methods`` above holds the longer account of each method
    explanation: ClassVar[str] = (
        "Generative moment matching: no discriminator; the generator minimises the maximum mean discrepancy "
        "between a batch of data and a batch of samples under a mixture of Gaussian kernels (Li et al. 2015; "
        "Dziugaite et al. 2015). MMD² is 0 exactly when the distributions match. Its `method` trades exactness "
        "for speed: exact (all pairs, cost quadratic in the batch), rff or linear (cost linear in the batch, "
        "noisier estimates; for batches of thousands).")
    critic_explanation = ("the MMD witness function, positive (blue) where the data has more kernel mass than the "
                          "generator, negative (orange) where the generator has too much; minimising MMD² moves the "
                          "generated points along its gradient.")
    critic_formula = r"f^*(t) \propto \mathbb{E}_x k(t, x) - \mathbb{E}_y k(t, y)"
    critic_label = "witness"
    critic_range = None
    params = (
        Param("bandwidths", "floats", [0.1, 0.25, 0.5, 1.0, 2.0, 4.0],
              "RBF kernel bandwidths sigma (standard deviations, not variances); multiples of the median "
              "heuristic when median_heuristic is on, absolute otherwise. The small ones sharpen the modes "
              "of 2-D toys; on images (where distances concentrate) the large ones do the work",
              low=1e-6, high=1e6),
        Param("median_heuristic", "bool", True,
              "scale the bandwidths by the median-heuristic bandwidth sqrt(median ||x - y||^2 / 2) of the pooled "
              "real and generated batch (up to 128 rows of each)"),
        Param("method", "str", "exact",
              "how MMD^2 is estimated: exact (all pairs, cost quadratic in the batch), rff (random Fourier "
              "features: linear cost, adds noise ~1/sqrt(features)) or linear (Gretton's linear-time statistic: "
              "cheapest, noisiest; for batches of thousands)",
              choices=("exact", "rff", "linear")),
        Param("features", "int", 1024,
              "random Fourier features (frequencies) for method = rff, split evenly over the bandwidths and drawn "
              "afresh each step from the run's seed; cost grows linearly with it, the estimate's noise falls as "
              "1/sqrt(features)",
              low=1, high=1_000_000),
        Param("estimator", "str", "unbiased",
              "unbiased (Gretton et al. 2012; leaves out k(x_i, x_i), can go slightly negative) or biased "
              "(V-statistic, >= 0); for the exact and rff methods (linear is always unbiased)",
              choices=("unbiased", "biased")),
        Param("sqrt", "bool", False,
              "minimise sqrt(max(MMD^2, 0)) as GMMN does instead of MMD^2"),
    )

    def sigmas(self, real: Tensor, fake: Tensor) -> Tensor:
        """The kernel bandwidths for this batch (a constant for autograd)."""
        return self._sigmas(real, fake)[0]

    def _sigmas(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor | None]:
        listed = torch.as_tensor(self.config["bandwidths"], dtype=real.dtype, device=real.device)
        if not self.config["median_heuristic"]:
            return listed, None
        with torch.no_grad():
            # Batches are i.i.d., so the first rows are a fair subsample: the median over
            # (2 * MEDIAN_POINTS)^2 pairs is as good as over all pairs and far cheaper.
            k = MEDIAN_POINTS
            median = median_bandwidth(real.detach()[:k], fake.detach()[:k]).to(real.dtype)
        return listed * median, median

    def estimate(self, real: Tensor, fake: Tensor, sigmas: Tensor) -> Tensor:
        """MMD^2(real, fake) by this objective's ``method`` (rff draws from :attr:`generator`)."""
        method = self.config["method"]
        unbiased = self.config["estimator"] == "unbiased"
        if method == "rff":
            return mmd2_rff(real, fake, sigmas, self.config["features"], self._random_stream(real.device), unbiased=unbiased)
        if method == "linear":
            return mmd2_linear(real, fake, sigmas)
        return mmd2(real, fake, sigmas, unbiased=unbiased)

    def _random_stream(self, device: torch.device) -> torch.Generator:
        """The pipeline's seeded :attr:`generator`; outside a pipeline (a bare objective in a test or a
        notebook) a private one seeded 0 on ``device``, never the global stream."""
        if self.generator is None:
            self.generator = torch.Generator(device).manual_seed(0)
        return self.generator

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """MMD^2(real, fake), or its square root; extras: ``mmd2`` (the raw estimate) and, with the
        median heuristic, ``bandwidth`` (the median-heuristic sigma the listed bandwidths multiply)."""
        sig, median = self._sigmas(real, fake)
        est = self.estimate(real, fake, sig)
        # The unbiased, random-feature and linear estimates can be negative: clamp before the square
        # root (a tiny floor keeps the gradient of sqrt finite at 0).
        loss = est.clamp_min(1e-10).sqrt() if self.config["sqrt"] else est
        extras = {"mmd2": est.detach()}
        if median is not None:
            extras["bandwidth"] = median
        return loss, extras

    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> Any:
        raise TypeError("the mmd objective trains no discriminator (needs_discriminator is False)")

    def critic(self, D: nn.Module | None, x: Tensor, real: Tensor, fake: Tensor) -> Tensor:
        """The MMD witness f(t) = mean_i k(t, x_i) - mean_j k(t, G(z_j)) at points ``x``, with this
        batch's bandwidths: positive where the data has more mass than the generator."""
        with torch.no_grad():
            return witness(x, real, fake, self.sigmas(real, fake)).reshape(-1)


@hookimpl
def register_objectives(register: Any) -> None:
    register(MMD)
