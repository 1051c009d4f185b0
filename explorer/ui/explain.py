"""What each view shows, in two or three sentences and its key formula (Goodfellow et al. 2014,
Fig. 1 and 2, Prop. 1). The objective's own text comes from the component: its ``explanation`` and
``formula`` (and, without a discriminator, its ``critic_explanation``), so a plugin's objective is
explained exactly as a built-in one is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

D_STAR = r"D^*(x) = \frac{p_\mathrm{data}(x)}{p_\mathrm{data}(x) + p_g(x)}"


@dataclass(frozen=True)
class Explanation:
    text: str
    formula: str


def objective_class(objective: str) -> Any:
    """The registered class of the objective called ``objective``, or None when it is not installed here."""
    from explorer.registry import get_registry

    info = get_registry().components["objective"].get(objective)
    return info.cls if info is not None else None


@dataclass(frozen=True)
class Critic:
    """What a 2-D view's background shows: the objective's declared ``critic_label`` and
    ``critic_range`` (None: signed, drawn divided by its largest magnitude)."""

    title: str = "D(x)"
    range: tuple[float, float] | None = (0.0, 1.0)


def critic_of(spec_dict: Any) -> Critic:
    """The critic an objective declares, from a run's spec; for an objective not installed here, D's
    probability when the spec has a discriminator and an unscaled "critic" otherwise."""
    obj = spec_dict.get("objective") if isinstance(spec_dict, dict) else None
    name = obj.get("name", "") if isinstance(obj, dict) else str(obj or "")
    cls = objective_class(name) if name else None
    if cls is None:
        has_d = isinstance(spec_dict, dict) and spec_dict.get("discriminator") is not None
        return Critic() if has_d else Critic("critic", None)
    rng = getattr(cls, "critic_range", (0.0, 1.0))
    try:
        rng = None if rng is None else (float(rng[0]), float(rng[1]))
    except (TypeError, ValueError, IndexError):
        rng = None  # a malformed declaration: draw it unscaled rather than fail the page
    return Critic(str(getattr(cls, "critic_label", "") or "critic")[:40], rng)


def for_view(kind: str, objective: str, objective_formula: str = "", has_critic: bool = True,
             objective_cls: Any = None) -> list[Explanation]:
    """The explanations to show beside a run's live view (``objective`` is the objective's name; its
    class is looked up in the registry unless given)."""
    cls = objective_cls if objective_cls is not None else objective_class(objective)
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
            critic_text = getattr(cls, "critic_explanation", "") if cls is not None else ""
            out.append(Explanation(
                "Blue points are data, orange points generated. With no discriminator the background is the "
                "objective's critic at each point" + (f": {critic_text}" if critic_text else ".")
                + " The grey mesh is the image of a latent grid under G.",
                getattr(cls, "critic_formula", "") if cls is not None else ""))
    elif kind == "image":
        out.append(Explanation(
            "Each row holds generated samples; the last column is the training image nearest (in pixel "
            "distance) to the sample beside it, as in Fig. 2 of Goodfellow et al. (2014). Close copies would "
            "mean the generator memorised its training set rather than learned the distribution.",
            r"\mathrm{NN}(G(z)) = \arg\min_{x_i \in \mathcal{D}_\mathrm{train}} \lVert G(z) - x_i \rVert_2"))
    elif kind == "vector":
        out.append(Explanation("The first two coordinates of real (blue) and generated (orange) samples.", ""))
    out.append(for_objective(objective, objective_formula, cls))
    return out


def for_objective(objective: str, formula: str = "", objective_cls: Any = None) -> Explanation:
    """The objective's own ``explanation`` and ``formula`` (its one-line ``summary`` when it declares no
    explanation); a name that is not installed here is named as such."""
    cls = objective_cls if objective_cls is not None else objective_class(objective)
    if cls is None:
        return Explanation(f"The {objective} objective (not installed here).", formula)
    text = getattr(cls, "explanation", "") or getattr(cls, "summary", "") or f"The {objective} objective."
    return Explanation(text, getattr(cls, "formula", "") or formula)
