"""Two GAN objectives beyond the log loss: least squares (LSGAN) and hinge.

Both read the discriminator's raw output D(x) (no sigmoid), as the built-in objectives read logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer import Objective, Param, SpecError


def _scores(D: nn.Module | None, x: Tensor) -> Tensor:
    if D is None:
        raise TypeError("this objective needs a discriminator (needs_discriminator is True)")
    return D(x).reshape(-1)


class LeastSquares(Objective):
    """Least-squares GAN (Mao et al. 2017, "Least Squares Generative Adversarial Networks", ICCV,
    arXiv:1611.04076, Eq. 2):

        min_D 1/2 E_x[(D(x) - b)^2] + 1/2 E_z[(D(G(z)) - a)^2]
        min_G 1/2 E_z[(D(G(z)) - c)^2]

    Defaults a = 0, b = 1, c = 1 (the paper's 0-1 coding, Eq. 9); a = -1, b = 1, c = 0 makes G
    minimise the Pearson chi^2 divergence between p_data + p_g and 2 p_g (Sec. 3.2.1). For a fixed G
    the best D is D*(x) = (b p_data(x) + a p_g(x)) / (p_data(x) + p_g(x)) (Eq. 4), so the heatmap
    shows (D(x) - a) / (b - a), which is p_data / (p_data + p_g) at D*, the same scale as a GAN's D*.
    """

    name = "lsgan"
    summary = "Least-squares GAN (Mao et al. 2017): squared distances of D's scores to target codes a, b, c"
    formula = (r"\min_D \tfrac12\mathbb{E}_x[(D(x)-b)^2] + \tfrac12\mathbb{E}_z[(D(G(z))-a)^2];\quad"
               r"\min_G \tfrac12\mathbb{E}_z[(D(G(z))-c)^2]")
    explanation = ("Least squares instead of the log loss: D regresses its scores onto the codes b (real) and "
                   "a (generated), and G pulls the scores of its samples towards c. Samples on the right side "
                   "of the boundary but far from the data are still penalised, which keeps gradients alive "
                   "where the log loss saturates (Mao et al. 2017). With a = 0, b = c = 1, at the equilibrium "
                   "D = 1/2 everywhere: d_loss = 0.25 and g_loss = 0.125.")
    params = (
        Param("a", "float", 0.0, "the discriminator's target for generated samples", low=-10.0, high=10.0),
        Param("b", "float", 1.0, "the discriminator's target for real samples", low=-10.0, high=10.0),
        Param("c", "float", 1.0, "the value the generator wants D to give its samples", low=-10.0, high=10.0),
    )

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.a, self.b, self.c = self.config["a"], self.config["b"], self.config["c"]
        if self.a == self.b:
            raise SpecError("b", f"the real target b must differ from the fake target a (both are {self.a:g}); try a = 0, b = 1")

    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """d_loss = 1/2 mean (D(x) - b)^2 + 1/2 mean (D(G(z)) - a)^2; extras d_real, d_fake = mean scores."""
        sr, sf = _scores(D, real), _scores(D, fake)
        loss = 0.5 * (sr - self.b).square().mean() + 0.5 * (sf - self.a).square().mean()
        return loss, {"d_real": sr.mean().detach(), "d_fake": sf.mean().detach()}

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """g_loss = 1/2 mean (D(G(z)) - c)^2."""
        sf = _scores(D, fake)
        return 0.5 * (sf - self.c).square().mean(), {"d_fake": sf.mean().detach()}

    def critic(self, D: nn.Module | None, x: Tensor, real: Tensor, fake: Tensor) -> Tensor | None:
        """(D(x) - a) / (b - a), clamped to [0, 1]: p_data / (p_data + p_g) when D is optimal."""
        if D is None:
            return None
        return ((D(x).reshape(-1) - self.a) / (self.b - self.a)).clamp(0.0, 1.0)


class Hinge(Objective):
    """The hinge loss of Geometric GAN (Lim & Ye 2017, arXiv:1705.02894) as used by SN-GAN (Miyato
    et al. 2018, arXiv:1802.05957, Eq. 17) and BigGAN:

        min_D E_x[max(0, m - D(x))] + E_z[max(0, m + D(G(z)))]
        min_G -E_z[D(G(z))]

    with margin m = 1. D is pushed to score real points above m and fakes below -m, and stops
    caring once they are; G raises its samples' scores without bound.
    """

    name = "hinge-gan"
    summary = "Hinge loss (Lim & Ye 2017; SN-GAN): D separates real and fake by a margin, G raises D(G(z))"
    formula = (r"\min_D \mathbb{E}_x[\max(0, 1 - D(x))] + \mathbb{E}_z[\max(0, 1 + D(G(z)))];\quad"
               r"\min_G -\mathbb{E}_z[D(G(z))]")
    explanation = ("The hinge loss of SN-GAN and BigGAN: D only cares about points inside the margin (real "
                   "scores below m, generated above -m) and G raises the scores of its samples without bound. "
                   "d_loss falls to 0 once D separates the two beyond the margin; at the equilibrium "
                   "(p_g = p_data) no D does better than 2m, reached by any scores inside [-m, m].")
    params = (Param("margin", "float", 1.0, "the margin m of the discriminator's hinge", low=0.01, high=100.0),)
    # The 2-D view shows D's score in margins, the hinge's own scale: real beyond +1, fake beyond -1.
    critic_label = "D(x) / m"
    critic_range = (-2.0, 2.0)

    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """d_loss = mean relu(m - D(x)) + mean relu(m + D(G(z)))."""
        m = self.config["margin"]
        sr, sf = _scores(D, real), _scores(D, fake)
        loss = F.relu(m - sr).mean() + F.relu(m + sf).mean()
        return loss, {"d_real": sr.mean().detach(), "d_fake": sf.mean().detach()}

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """g_loss = -mean D(G(z))."""
        sf = _scores(D, fake)
        return -sf.mean(), {"d_fake": sf.mean().detach()}

    def critic(self, D: nn.Module | None, x: Tensor, real: Tensor, fake: Tensor) -> Tensor | None:
        """D(x) / m, clamped to [-2, 2]: 0 on the decision boundary, +1 and -1 on the margins."""
        if D is None:
            return None
        return (D(x).reshape(-1) / self.config["margin"]).clamp(-2.0, 2.0)
