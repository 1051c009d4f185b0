"""The component interfaces: Sampler, Architecture, Objective, Metric.

A plugin subclasses one of these, sets ``name`` (kebab-case), ``summary`` and ``params``
(a tuple of :class:`~explorer.params.Param`), and registers the class through a hook. The host
instantiates it with the resolved parameters: ``cls(**params)``; the values are also kept on
``self.config``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from explorer.params import Param, resolve_params

from explorer.hookspecs import KINDS  # noqa: E402  (re-exported: the four kinds, one per hook)
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
Role = Literal["generator", "discriminator"]


class Component:
    """Base of every component: a name, a one-line summary and declared parameters."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.config: dict[str, Any] = resolve_params(self.params, params, self.name or type(self).__name__)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Plain-data description (for ``genex plugins --json`` and the Plugins page)."""
        return {"kind": cls.kind, "name": cls.name, "summary": cls.summary, "params": [p.to_json() for p in cls.params]}


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------
class Sampler(Component):
    """A distribution to draw from; serves both as a data distribution and as a latent prior.

    Subclasses set ``self.shape`` (the event shape: ``(1,)``, ``(2,)``, ``(1, 8, 8)``) in ``__init__``
    and implement :meth:`sample`. Samplers that know their density override :meth:`log_prob`;
    1-D samplers may override :meth:`cdf` and :meth:`icdf`. Further optional capabilities
    (``propose``/``envelope``, ``trace``, ``labels``) are protocols in :mod:`explorer.capabilities`.
    """

    kind = "sampler"
    shape: tuple[int, ...] = ()
    #: data range hint for views, e.g. ((-3, 3),) in 1-D or ((-2, 2), (-2, 2)) in 2-D; None = infer
    bounds: tuple[tuple[float, float], ...] | None = None
    #: as a latent prior: the interval (lo, hi) of each coordinate that a grid over latent codes should
    #: span (the 2-D view's manifold mesh), e.g. (low, high) for a uniform box, mean -/+ 2 std for a
    #: Gaussian; None = the host takes the central 95% of drawn codes
    latent_box: tuple[float, float] | None = None

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Draw ``n`` samples as a float32 tensor of shape ``[n, *shape]`` on ``device``.

        All randomness must come from ``generator`` (a ``torch.Generator`` on ``device``), so that a
        seed reproduces the stream exactly.
        """
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each row of ``x`` (shape ``[n, *shape]`` -> ``[n]``)."""
        raise NotImplementedError

    def cdf(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def icdf(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Running statistics worth logging (e.g. ``acceptance_rate``); empty by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State a stateful sampler carries between ``sample`` calls (Markov chains' positions, a
        cursor into a data set), saved in checkpoints so a resumed run continues the same stream.

        Tensors, numbers and strings only (checkpoints load with ``weights_only=True``). Stateless
        samplers (most) keep the default: nothing.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; may raise ``ValueError`` when ``state`` does not
        fit this configuration (the sampler then starts afresh). The default ignores ``state``."""

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not Sampler.log_prob

    def capabilities(self) -> list[str]:
        """The optional capabilities this sampler declares (``icdf``, ``propose``, ``trace``, ...; see
        :mod:`explorer.capabilities`)."""
        from explorer.capabilities import capabilities

        return capabilities(self)

    @property
    def data_kind(self) -> str:
        """``1d``, ``2d``, ``image`` (C x H x W) or ``vector`` (any other flat shape)."""
        return data_kind(self.shape)

    #: the centres and std of a Gaussian mixture, for mode-collapse metrics (ring8, grid25, ...)
    def mixture_modes(self) -> tuple[Tensor, float] | None:
        return None

    #: for data sets: the training images as a tensor [N, *shape] (nearest-neighbour views, metrics)
    def dataset(self) -> Tensor | None:
        return None


def data_kind(shape: tuple[int, ...]) -> str:
    if len(shape) == 1 and shape[0] == 1:
        return "1d"
    if len(shape) == 1 and shape[0] == 2:
        return "2d"
    if len(shape) == 3:
        return "image"
    return "vector"


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------
class Architecture(Component):
    """Builds an ``nn.Module`` for a role.

    generator: maps ``[n, *in_shape]`` latent codes to ``[n, *out_shape]`` samples.
    discriminator: maps ``[n, *in_shape]`` samples to ``[n, 1]`` logits (``out_shape == (1,)``).
    """

    kind = "architecture"
    #: whether the networks it builds may train in a seed ensemble (``genex compare --vectorise``): the
    #: seeds' weights stacked and run through ``torch.func.vmap``. Networks with buffers (batch-norm
    #: running statistics, spectral norm) are never vectorised; set False for any other reason
    vectorise: ClassVar[bool] = True

    def supports(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str | None:
        """None when this architecture can build the role for these shapes, else the reason why not."""
        return None

    def build(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------
class Objective(Component):
    """Says whether it needs a discriminator and computes the losses (to be minimised).

    ``discriminator_loss(D, real, fake)`` and ``generator_loss(D, real, fake)`` return a scalar
    tensor, or ``(loss, extras)`` where ``extras`` maps names to scalar tensors to log (e.g.
    ``d_real``, the mean D(x) on real data). ``D`` is None when ``needs_discriminator`` is False.
    ``fake`` passed to ``discriminator_loss`` is already detached from the generator.
    """

    kind = "objective"
    needs_discriminator: ClassVar[bool] = True
    #: a seeded torch.Generator on the pipeline's device, set by the pipeline before training: draw any
    #: randomness from it (e.g. WGAN-GP's interpolation weights) so that a run reproduces from its seed
    generator: torch.Generator | None = None
    #: the key formula, in LaTeX, shown with the explanation on the Train page
    formula: ClassVar[str] = ""
    #: two or three sentences for the Train page: what the objective does and what to look for in its
    #: curves (e.g. the loss values at the equilibrium); empty = the one-line ``summary`` is shown
    explanation: ClassVar[str] = ""
    #: objectives without a discriminator: what their :meth:`critic` shows as the 2-D view's background,
    #: in a sentence, and its formula in LaTeX (e.g. MMD's witness function)
    critic_explanation: ClassVar[str] = ""
    critic_formula: ClassVar[str] = ""
    #: the 2-D heatmap's legend title for what :meth:`critic` returns, and its value range: a fixed
    #: ``(low, high)`` (the default, D's probability, is 0..1), or None for a signed function with no
    #: fixed scale (drawn divided by its largest magnitude, e.g. MMD's witness)
    critic_label: ClassVar[str] = "D(x)"
    critic_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    #: whether a seed ensemble (``genex compare --vectorise``) may compute the losses of all its seeds in
    #: one call under ``torch.func.vmap`` (each tensor argument then holds one seed's batch). Set False if
    #: the losses keep Python state between calls; random draws and networks of its own are detected
    #: (those ensembles train their seeds one after another, with a note)
    vectorise: ClassVar[bool] = True

    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> Any:
        raise NotImplementedError

    def generator_loss(self, D: nn.Module | None, real: Tensor, fake: Tensor) -> Any:
        raise NotImplementedError

    def critic(self, D: nn.Module | None, x: Tensor, real: Tensor, fake: Tensor) -> Tensor | None:
        """What the 2-D heatmap shows at points ``x``: by default sigmoid(D(x)), the probability
        that ``x`` is real. Objectives without a discriminator may return a witness function."""
        if D is None:
            return None
        return torch.sigmoid(D(x)).reshape(-1)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
@dataclass
class MetricContext:
    """What a metric may need beyond the two samples."""

    data: Sampler
    device: torch.device
    generator: torch.Generator | None = None
    cache_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


DIRECTIONS = ("higher", "lower", None)


class Metric(Component):
    """``compute(real, fake, context) -> {name: float}``; runs on snapshots, off the hot path.

    ``applies_to`` lists the data kinds it handles (``1d``, ``2d``, ``image``, ``vector`` or ``any``);
    override :meth:`applies` for finer checks (e.g. needs ``mixture_modes``).
    """

    kind = "metric"
    applies_to: ClassVar[tuple[str, ...]] = ("any",)
    #: for every key :meth:`compute` returns: ``"higher"`` or ``"lower"`` (which is better), or None for a
    #: diagnostic that has no better direction (it gets no "best" in comparisons). The contract kit
    #: checks that every returned key is declared here.
    directions: ClassVar[Mapping[str, str | None]] = {}
    #: keys whose values span orders of magnitude (p-values near 1e-14 and near 1): the app plots their
    #: log10, and says so in the panel's title
    log_keys: ClassVar[frozenset[str]] = frozenset()
    #: how many generated samples it wants (the papers' 2,500 for mode metrics)
    sample_size: ClassVar[int] = 1000

    def applies(self, data: Sampler) -> bool:
        return "any" in self.applies_to or data.data_kind in self.applies_to

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> Mapping[str, float]:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {**super().describe(), "applies_to": list(cls.applies_to), "directions": dict(cls.directions),
                "log_keys": sorted(cls.log_keys)}


BASES: dict[str, type[Component]] = {
    "sampler": Sampler,
    "architecture": Architecture,
    "objective": Objective,
    "metric": Metric,
}


def normalise_loss(out: Any, where: str) -> tuple[Tensor, dict[str, Tensor]]:
    """Accept ``loss`` or ``(loss, extras)`` from an objective; check it is a scalar tensor."""
    extras: dict[str, Tensor] = {}
    if isinstance(out, tuple):
        out, extras = out
    if not isinstance(out, Tensor) or out.dim() != 0:
        raise TypeError(f"{where} must return a scalar tensor (or (scalar, dict)); got {type(out).__name__}")
    return out, dict(extras)


__all__ = [
    "Component", "Sampler", "Architecture", "Objective", "Metric", "MetricContext", "BASES", "KINDS",
    "NAME_RE", "data_kind", "normalise_loss", "math",
]
