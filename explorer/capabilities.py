"""Optional sampler capabilities: what a sampler may offer beyond ``sample``, and who uses it.

A sampler declares a capability by defining the method (the methods on
:class:`~explorer.components.Sampler` that raise ``NotImplementedError`` or return None are the
undeclared defaults). The host asks :func:`has_capability` instead of looking at names, and the
contract kit (:func:`explorer.testing.check_sampler`) exercises every capability a sampler declares.

==============  =====================================================  =====================================
capability      signature                                              used by
==============  =====================================================  =====================================
``log_prob``    ``log_prob(x [n, *shape]) -> [n]`` exact, normalised     D* and divergences in the views, metrics
``cdf``         ``cdf(x) -> F(x)`` elementwise, 1-D                     KS test (``ks-1d``), Sampling page
``icdf``        ``icdf(u) -> F^-1(u)`` elementwise, 1-D                 Sampling page (inverse transform)
``propose``     ``propose(n, generator, device) -> (x, y, p, accepted)``  Sampling page (rejection sampling)
``envelope``    ``envelope(x) -> M q(x)`` elementwise, >= p(x)          Sampling page (rejection sampling)
``trace``       ``trace(n_steps, generator, device) -> [n_steps]``      Sampling page (Markov chains)
``labels``      ``labels() -> [N]`` int, one per ``dataset()`` row       image feature networks (class labels)
``dataset``     ``dataset() -> [N, *shape]`` or None                     nearest-neighbour views, image metrics
``mixture_modes`` ``mixture_modes() -> (centres [K, d], std)`` or None   mode-coverage metrics
==============  =====================================================  =====================================

A capability may still raise ``NotImplementedError`` for some configurations (a ``uniform`` sampler's
``icdf`` with ``dim`` > 1): callers treat that as "not offered here".
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from explorer.components import Sampler


@runtime_checkable
class Proposes(Protocol):
    """Rejection sampling made visible: one batch of proposals and the envelope above the target."""

    def propose(self, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, y, p, accepted)``, each ``[n]``: proposals x ~ q, heights y = u M q(x), the target
        density p(x), and the mask y <= p(x)."""

    def envelope(self, x: Tensor) -> Tensor:
        """M q(x), elementwise: lies above the target density p(x)."""


@runtime_checkable
class Traces(Protocol):
    """A Markov chain made visible: the states of one fresh chain."""

    def trace(self, n_steps: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """The first ``n_steps`` states ``[n_steps]`` of one chain (no burn-in, no thinning); leaves the
        sampling chains alone."""


@runtime_checkable
class Labelled(Protocol):
    """A data set whose images carry class labels (feature networks train on them)."""

    def labels(self) -> Tensor:
        """One integer label per row of ``dataset()``: ``[N]``."""


_OVERRIDES = ("log_prob", "cdf", "icdf", "dataset", "mixture_modes")
_PROTOCOLS: dict[str, Any] = {"propose": Proposes, "envelope": Proposes, "trace": Traces, "labels": Labelled}
CAPABILITIES = (*_OVERRIDES[:3], "propose", "envelope", "trace", "labels", *_OVERRIDES[3:])


def has_capability(sampler: Any, name: str) -> bool:
    """Whether ``sampler`` (an instance or a class) declares the capability ``name`` (see the table)."""
    cls = sampler if isinstance(sampler, type) else type(sampler)
    if name in _OVERRIDES:
        return getattr(cls, name, None) is not getattr(Sampler, name)
    if name in _PROTOCOLS:
        return callable(getattr(cls, name, None))
    raise ValueError(f"unknown capability {name!r}; capabilities: {', '.join(CAPABILITIES)}")


def capabilities(sampler: Any) -> list[str]:
    """Every capability ``sampler`` declares, in the table's order."""
    return [name for name in CAPABILITIES if has_capability(sampler, name)]
