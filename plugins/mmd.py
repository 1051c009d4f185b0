"""The `mmd` objective: generative moment matching, no discriminator.

The generator minimises the squared maximum mean discrepancy between a real and a generated batch
under a mixture of Gaussian (RBF) kernels, k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)):

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)        (Gretton et al. 2012)

as in generative moment matching networks (GMMN; Li, Swersky, Zemel, ICML 2015) and MMD nets
(Dziugaite, Roy, Ghahramani, UAI 2015). With ``median_heuristic`` the listed bandwidths are
multiples of the median-heuristic bandwidth of the pooled batch (recomputed each step, treated as a
constant), so the same defaults suit 2-D toys spanning [-4, 4] and images in [-1, 1].

Cost: the full estimate builds three kernel matrices, O((n + m)^2 d) time and O((n + m)^2) memory
per step for batches of n real and m generated points in d dimensions; keep batches in the hundreds
to low thousands (GMMN used 1,000 + 1,000 on MNIST).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from explorer import Objective, Param, hookimpl
from explorer.metrics import median_bandwidth, mmd2, witness


#: rows per side used for the median heuristic (its cost is quadratic in the rows)
MEDIAN_POINTS = 128


class MMD(Objective):
    """Minimise MMD^2(real, G(z)) with a mixture of RBF kernels (GMMN / MMD nets)."""

    name = "mmd"
    summary = "Generative moment matching (Li et al. 2015; Dziugaite et al. 2015): G minimises MMD^2 to the data, no discriminator"
    needs_discriminator = False
    formula = (r"\min_G \mathrm{MMD}^2 = \mathbb{E}\,k(x,x') + \mathbb{E}\,k(G(z),G(z')) - 2\,\mathbb{E}\,k(x,G(z)),"
               r"\quad k(x,y) = \sum_\sigma e^{-\|x-y\|^2 / 2\sigma^2}")
    explanation = ("Generative moment matching: no discriminator; the generator minimises the maximum mean "
                   "discrepancy between a batch of data and a batch of samples under a mixture of Gaussian "
                   "kernels (Li et al. 2015; Dziugaite et al. 2015). MMD² is 0 exactly when the distributions match.")
    critic_explanation = ("the MMD witness function, positive (blue) where the data has more kernel mass than the "
                          "generator, negative (orange) where the generator has too much; minimising MMD² moves the "
                          "generated points along its gradient.")
    critic_formula = r"f^*(t) \propto \mathbb{E}_x k(t, x) - \mathbb{E}_y k(t, y)"
    params = (
        Param("bandwidths", "floats", [0.1, 0.25, 0.5, 1.0, 2.0, 4.0],
              "RBF kernel bandwidths sigma (standard deviations, not variances); multiples of the median "
              "heuristic when median_heuristic is on, absolute otherwise. The small ones sharpen the modes "
              "of 2-D toys; on images (where distances concentrate) the large ones do the work",
              low=1e-6, high=1e6),
        Param("median_heuristic", "bool", True,
              "scale the bandwidths by the median-heuristic bandwidth sqrt(median ||x - y||^2 / 2) of the pooled "
              "real and generated batch (up to 128 rows of each)"),
        Param("estimator", "str", "unbiased",
              "unbiased (Gretton et al. 2012; leaves out k(x_i, x_i), can go slightly negative) or biased (V-statistic, >= 0)",
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

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """MMD^2(real, fake), or its square root; extras: ``mmd2`` (the raw estimate) and, with the
        median heuristic, ``bandwidth`` (the median-heuristic sigma the listed bandwidths multiply)."""
        sig, median = self._sigmas(real, fake)
        est = mmd2(real, fake, sig, unbiased=self.config["estimator"] == "unbiased")
        # The unbiased estimate can be negative: clamp before the square root (a tiny floor keeps
        # the gradient of sqrt finite at 0).
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
