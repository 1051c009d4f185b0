"""What each view shows, in two or three sentences and its key formula (Goodfellow et al. 2014;
Li et al. 2015; Dziugaite et al. 2015). Objectives carry their own ``formula``; these texts explain
the pictures around it."""

from __future__ import annotations

from dataclasses import dataclass

VALUE_FUNCTION = (r"\min_G \max_D V(D,G) = \mathbb{E}_{x\sim p_\mathrm{data}}[\log D(x)]"
                  r" + \mathbb{E}_{z\sim p_z}[\log(1 - D(G(z)))]")
D_STAR = r"D^*(x) = \frac{p_\mathrm{data}(x)}{p_\mathrm{data}(x) + p_g(x)}"
SATURATING = (r"\text{saturating: } \min_G \mathbb{E}_z[\log(1 - D(G(z)))]"
              r"\qquad \text{non-saturating: } \max_G \mathbb{E}_z[\log D(G(z))]")
MMD = (r"\mathrm{MMD}^2(p, q) = \mathbb{E}\,k(x,x') + \mathbb{E}\,k(y,y') - 2\,\mathbb{E}\,k(x,y),"
       r"\qquad f^*(t) \propto \mathbb{E}_x k(t, x) - \mathbb{E}_y k(t, y)")


@dataclass(frozen=True)
class Explanation:
    text: str
    formula: str


def for_view(kind: str, objective: str, objective_formula: str = "", has_critic: bool = True) -> list[Explanation]:
    """The explanations to show beside a run's live view."""
    out: list[Explanation] = []
    if kind == "1d":
        out.append(Explanation(
            "Below, noise z from the latent prior (the lower line) is carried by the generator to x = G(z) "
            "(the upper line): where the grey lines bunch together, G packs probability mass, so p_g "
            "(orange) is high. Blue is the data density p_data, green D(x), the discriminator's belief "
            "that x is real, and grey the best discriminator for the current generator (Goodfellow et al. "
            "2014, Fig. 1 and Prop. 1); when p_g = p_data, D* = 1/2 everywhere.",
            D_STAR))
    elif kind == "2d":
        if has_critic:
            out.append(Explanation(
                "Blue points are data, orange points generated. The background is the discriminator's output "
                "D(x): blue where it believes points are real, orange where it believes they are fake; the "
                "generator moves its points uphill on it. The grey mesh is the image of a square grid of "
                "latent codes under G, and the arrows (when on) show where the generator loss pushes each point.",
                D_STAR))
        else:
            out.append(Explanation(
                "Blue points are data, orange points generated. With no discriminator the background is the "
                "MMD witness function: positive (blue) where the data has more kernel mass than the generator, "
                "negative (orange) where the generator has too much; minimising MMD² moves the generated points "
                "along its gradient. The grey mesh is the image of a latent grid under G.",
                MMD))
    elif kind == "image":
        out.append(Explanation(
            "Each row holds generated samples; the last column is the training image nearest (in pixel "
            "distance) to the sample beside it, as in Fig. 2 of Goodfellow et al. (2014). Close copies would "
            "mean the generator memorised its training set rather than learned the distribution.",
            r"\mathrm{NN}(G(z)) = \arg\min_{x_i \in \mathcal{D}_\mathrm{train}} \lVert G(z) - x_i \rVert_2"))
    elif kind == "vector":
        out.append(Explanation("The first two coordinates of real (blue) and generated (orange) samples.", ""))
    out.append(for_objective(objective, objective_formula))
    return out


def for_objective(objective: str, formula: str = "") -> Explanation:
    if objective == "minimax":
        text = ("The original game: D maximises V(D, G) while G minimises it. Early on D rejects the fakes "
                "confidently, D(G(z)) ≈ 0, where log(1 − D(G(z))) is flat: the generator's gradient vanishes "
                "and g_loss stalls (Sec. 3). At the optimum V = −log 4 ≈ −1.386.")
        return Explanation(text, formula or VALUE_FUNCTION)
    if objective == "nonsaturating":
        text = ("D learns to tell data from samples by maximising V(D, G); G, instead of minimising "
                "log(1 − D(G(z))), which is flat while D confidently rejects its samples, maximises log D(G(z)): "
                "the same fixed point, with strong gradients early in training (Goodfellow et al. 2014, Sec. 3). "
                "At the equilibrium d_loss = log 4 ≈ 1.386 and g_loss = log 2 ≈ 0.693.")
        return Explanation(text, SATURATING)
    if objective == "mmd":
        text = ("Generative moment matching: no discriminator; the generator minimises the maximum mean "
                "discrepancy between a batch of data and a batch of samples under a mixture of Gaussian "
                "kernels (Li et al. 2015; Dziugaite et al. 2015). MMD² is 0 exactly when the distributions match. "
                "Its `method` trades exactness for speed: exact (all pairs, cost quadratic in the batch), rff or "
                "linear (cost linear in the batch, noisier estimates; for batches of thousands).")
        return Explanation(text, formula or MMD)
    return Explanation(f"The {objective} objective.", formula)
