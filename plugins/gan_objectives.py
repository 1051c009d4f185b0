"""The two GAN games of Goodfellow et al. 2014 ("Generative Adversarial Nets", arXiv:1406.2661).

Both share the discriminator's side: D maximises V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))].
They differ in the generator's loss:

- `minimax`, the original saturating game: G minimises E_z[log(1 - D(G(z)))]. When D confidently
  rejects the fakes (D(G(z)) -> 0) this loss is flat and G gets almost no gradient (Sec. 3).
- `nonsaturating`: G maximises E_z[log D(G(z))] instead, which has the same fixed point but strong
  gradients early in training.

Every loss works on the discriminator's logits l (D = sigmoid(l)), never sigmoid followed by log:
log D = -softplus(-l) and log(1 - D) = -softplus(l), which stay finite for any logit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer import Objective, Param, hookimpl
from explorer.metrics import mmd2


_SMOOTHING = Param(
    "label_smoothing", "float", 0.0,
    "one-sided label smoothing (Salimans et al. 2016): the discriminator's target for real data is "
    "1 - label_smoothing instead of 1; fakes keep target 0. 0 turns it off",
    low=0.0, high=0.5,
)


_MMD_WEIGHT = Param(
    "mmd_weight", "float", 0.0,
    "weight w of a moment-matching term added to G's loss: w * MMD^2 between G's batch and the data batch "
    "(unbiased, RBF kernels of `mmd_bandwidths`; GMMN's statistic, Li et al. 2015). D's gradient only moves "
    "samples near where they are; this term sees how the mass is shared between distant modes. 0 turns it off",
    low=0.0, high=1000.0,
)
_MMD_BANDWIDTHS = Param(
    "mmd_bandwidths", "floats", [0.5, 1.0, 2.0],
    "RBF bandwidths sigma of the moment-matching term, in data units: about the spacing of the modes, so "
    "that it compares their masses rather than their shapes", low=1e-6, high=1e6,
)


def _logits(D: nn.Module | None, x: Tensor) -> Tensor:
    if D is None:
        raise TypeError("GAN objectives need a discriminator (needs_discriminator is True)")
    return D(x).reshape(-1)


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor, smoothing: float = 0.0) -> Tensor:
    """-E[log D(x)] - E[log(1 - D(G(z)))] on logits: mean softplus(-l_real) + mean softplus(l_fake).

    With one-sided label smoothing s the real term is the cross-entropy with target 1 - s:
    (1 - s) softplus(-l) + s softplus(l).
    """
    real_term = F.softplus(-real_logits)
    if smoothing > 0.0:
        real_term = (1.0 - smoothing) * real_term + smoothing * F.softplus(real_logits)
    return real_term.mean() + F.softplus(fake_logits).mean()


class _GANObjective(Objective):
    """The discriminator side shared by both games, and the optional moment-matching term on G's loss."""

    params = (_SMOOTHING, _MMD_WEIGHT, _MMD_BANDWIDTHS)

    def _with_moments(self, loss: Tensor, real: Tensor, fake: Tensor) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """G's game loss plus ``mmd_weight * MMD^2(fake, real)`` when the weight is set (extras: ``mmd2``).
        MMD^2, not its root as GMMN minimises: the root's gradient grows without bound as the estimate
        nears 0, where it is mostly noise, and on grid25 it knocked the GAN off its modes late in training."""
        weight = self.config["mmd_weight"]
        if not weight:
            return loss
        est = mmd2(fake, real, self.config["mmd_bandwidths"])
        return loss + weight * est, {"mmd2": est.detach()}

    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """d_loss = mean softplus(-D(x)) + mean softplus(D(G(z))) = -V(D, G) (with no smoothing).

        Extras: d_real / d_fake = mean sigmoid(D) on real / fake, and ``value`` = the estimate of
        V(D, G) = -(unsmoothed d_loss), which is -log 4 ~ -1.386 at the equilibrium D = 1/2.
        """
        lr, lf = _logits(D, real), _logits(D, fake)
        smoothing = self.config["label_smoothing"]
        loss = discriminator_bce(lr, lf, smoothing)
        with torch.no_grad():
            value = -discriminator_bce(lr, lf) if smoothing > 0.0 else -loss.detach()
            extras = {"d_real": torch.sigmoid(lr).mean(), "d_fake": torch.sigmoid(lf).mean(), "value": value}
        return loss, extras


class Minimax(_GANObjective):
    """The original saturating game: G minimises E_z[log(1 - D(G(z)))] = -E softplus(l_fake)."""

    name = "minimax"
    summary = "Original GAN game (Goodfellow et al. 2014): G minimises log(1 - D(G(z))); saturates when D wins"
    formula = (r"\min_G \max_D V(D,G) = \mathbb{E}_{x\sim p_\mathrm{data}}[\log D(x)]"
               r" + \mathbb{E}_{z\sim p_z}[\log(1 - D(G(z)))]")
    explanation = ("The original game: D maximises V(D, G) while G minimises it. Early on D rejects the fakes "
                   "confidently, D(G(z)) ≈ 0, where log(1 − D(G(z))) is flat: the generator's gradient vanishes "
                   "and g_loss stalls (Sec. 3). At the optimum V = −log 4 ≈ −1.386.")

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """g_loss = mean(-softplus(D(G(z)))) = E log(1 - D(G(z))); its gradient in the logit is
        -sigmoid(l), which vanishes as D(G(z)) -> 0."""
        lf = _logits(D, fake)
        loss = -F.softplus(lf).mean()
        return self._with_moments(loss, real, fake)  # D(G(z)) is logged by the discriminator step (d_fake)


class NonSaturating(_GANObjective):
    """The non-saturating game: G maximises E_z[log D(G(z))], i.e. minimises E softplus(-l_fake)."""

    name = "nonsaturating"
    summary = "Non-saturating GAN (Goodfellow et al. 2014, Sec. 3): G maximises log D(G(z)); strong early gradients"
    formula = (r"\max_D \mathbb{E}_{x}[\log D(x)] + \mathbb{E}_{z}[\log(1 - D(G(z)))];\quad"
               r"\underbrace{\min_G \mathbb{E}_{z}[\log(1 - D(G(z)))]}_{\text{saturating}}"
               r"\;\to\;\underbrace{\max_G \mathbb{E}_{z\sim p_z}[\log D(G(z))]}_{\text{non-saturating}}")
    explanation = ("D learns to tell data from samples by maximising V(D, G); G, instead of minimising "
                   "log(1 − D(G(z))), which is flat while D confidently rejects its samples, maximises log D(G(z)): "
                   "the same fixed point, with strong gradients early in training (Goodfellow et al. 2014, Sec. 3). "
                   "At the equilibrium d_loss = log 4 ≈ 1.386 and g_loss = log 2 ≈ 0.693.")

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """g_loss = mean softplus(-D(G(z))) = -E log D(G(z)); its gradient in the logit is
        -(1 - sigmoid(l)), close to -1 while D rejects the fakes."""
        lf = _logits(D, fake)
        loss = F.softplus(-lf).mean()
        return self._with_moments(loss, real, fake)  # D(G(z)) is logged by the discriminator step (d_fake)


@hookimpl
def register_objectives(register: Any) -> None:
    register(Minimax)
    register(NonSaturating)
