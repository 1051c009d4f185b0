"""Spec -> live objects on one device: data sampler, latent prior, G (and D), objective, optimisers.

Random streams are separate and seeded from the spec's seed: ``weights`` (initialisation),
``data`` (real batches), ``noise`` (latent batches), ``objective`` (any randomness in the loss,
``Objective.generator``), ``view`` (the fixed batches the views and
metrics use, so that watching a run never changes what it learns).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from explorer.components import Architecture, Objective, Sampler
from explorer.device import make_generator, pick_device, seeded, stream_seed, tree_to_device
from explorer.errors import SpecError
from explorer.registry import Registry, get_registry
from explorer.spec import Spec

CHECKPOINT_FORMAT = 1


def make_optimizer(params: Any, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam, SGD or RMSprop from an ``[optim.<role>]`` table."""
    name, lr, wd = cfg["name"], cfg["lr"], cfg["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg["betas"]), weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd)
    raise SpecError("optim.name", f"unknown optimiser {name!r}")


class Pipeline:
    """Everything one run trains, built from a resolved spec on one device."""

    def __init__(self, spec: Spec, registry: Registry | None = None, device: torch.device | str | None = None):
        self.spec = spec
        self.registry = registry or get_registry()
        self.device = torch.device(device) if device is not None else pick_device(spec.device)
        reg = self.registry
        self.data: Sampler = reg.create("sampler", spec.data.name, spec.data.params, where="data")  # type: ignore[assignment]
        self.latent: Sampler = reg.create("sampler", spec.latent.name, spec.latent.params, where="latent")  # type: ignore[assignment]
        self.objective: Objective = reg.create("objective", spec.objective.name, spec.objective.params, where="objective")  # type: ignore[assignment]
        g_arch: Architecture = reg.create("architecture", spec.generator.name, spec.generator.params, where="generator")  # type: ignore[assignment]
        d_arch: Architecture | None = None
        if spec.discriminator is not None:
            d_arch = reg.create("architecture", spec.discriminator.name, spec.discriminator.params, where="discriminator")  # type: ignore[assignment]
        x_shape, z_shape = tuple(self.data.shape), tuple(self.latent.shape)
        _check_support(g_arch, "generator", z_shape, x_shape)
        if d_arch is not None:
            _check_support(d_arch, "discriminator", x_shape, (1,))
        with seeded(stream_seed(spec.seed, "weights")):
            self.G: nn.Module = g_arch.build("generator", z_shape, x_shape)
            self.D: nn.Module | None = d_arch.build("discriminator", x_shape, (1,)) if d_arch is not None else None
        self.G.to(self.device)
        if self.D is not None:
            self.D.to(self.device)
        self.opt_g = make_optimizer(self.G.parameters(), spec.optim["generator"])
        self.opt_d = make_optimizer(self.D.parameters(), spec.optim["discriminator"]) if self.D is not None else None
        self.data_gen = make_generator(self.device, stream_seed(spec.seed, "data"))
        self.noise_gen = make_generator(self.device, stream_seed(spec.seed, "noise"))
        self.objective.generator = make_generator(self.device, stream_seed(spec.seed, "objective"))
        self.is_conv = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in self.G.modules())
        if self.device.type == "cuda" and self.is_conv:
            torch.backends.cudnn.benchmark = True
        # Fixed batches for the views and metrics, from their own stream (never the training streams).
        view_gen = make_generator(self.device, stream_seed(spec.seed, "view"))
        n = spec.snapshot_size
        self.view_z = self.latent.sample(n, view_gen, self.device)
        self.view_real = self.data.sample(n, view_gen, self.device)
        self.step = 0

    # -- sampling -----------------------------------------------------------------------------
    def sample_real(self, n: int) -> Tensor:
        return self.data.sample(n, self.data_gen, self.device)

    def sample_latent(self, n: int) -> Tensor:
        return self.latent.sample(n, self.noise_gen, self.device)

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """G(z) without touching training state (batch-norm running statistics stay as they are)."""
        with frozen_batchnorm(self.G):
            return self.G(z)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State dicts and plain data only, so ``torch.load(weights_only=True)`` reads it back."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": int(self.step),
            "spec": self.spec.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict() if self.D is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "rng": {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state(),
                    "objective": self.objective.generator.get_state()},
            "samplers": {"data": self.data.state_dict(), "latent": self.latent.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any], optimizers: bool = True, rng: bool = True) -> None:
        """Restore weights (and, when the optimisers match, their state and the random streams)."""
        self.G.load_state_dict(state["G"])
        if self.D is not None and state.get("D") is not None:
            self.D.load_state_dict(state["D"])
        if optimizers:
            try:
                self.opt_g.load_state_dict(state["opt_g"])
                if self.opt_d is not None and state.get("opt_d") is not None:
                    self.opt_d.load_state_dict(state["opt_d"])
            except (ValueError, KeyError):
                pass  # a fork that changed the optimiser starts its optimiser afresh
        if rng and "rng" in state:
            self.data_gen.set_state(state["rng"]["data"].cpu())
            self.noise_gen.set_state(state["rng"]["noise"].cpu())
            if "objective" in state["rng"]:
                self.objective.generator.set_state(state["rng"]["objective"].cpu())
            spec = self.spec.to_dict()
            for slot, sampler in (("data", self.data), ("latent", self.latent)):
                saved = state.get("samplers", {}).get(slot)
                if saved and state["spec"].get(slot) == spec.get(slot):
                    try:
                        sampler.load_state_dict(tree_to_device(saved, self.device))
                    except (ValueError, KeyError, TypeError):
                        pass  # state that does not fit this sampler: it starts afresh
        self.step = int(state.get("step", 0))


def _check_support(arch: Architecture, role: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    reason = arch.supports(role, in_shape, out_shape)  # type: ignore[arg-type]
    if reason:
        raise SpecError(role, f"{arch.name!r} cannot build the {role} for input {in_shape} -> output {out_shape}: {reason}")


class frozen_batchnorm:
    """Context manager: batch-norm layers normalise with batch statistics as in training but leave
    their running statistics untouched (momentum 0), so a view of G never changes G."""

    def __init__(self, module: nn.Module):
        self.layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[tuple[float | None, Tensor | None]] = []

    def __enter__(self) -> "frozen_batchnorm":
        for m in self.layers:
            nbt = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            self.saved.append((m.momentum, nbt))
            m.momentum = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for m, (momentum, nbt) in zip(self.layers, self.saved):
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
        self.saved.clear()
