"""Spec -> live objects on one device: data sampler, latent prior, G (and D), objective, optimisers.

Random streams are separate and seeded from the spec's seed: ``weights`` (initialisation),
``data`` (real batches), ``noise`` (latent batches), ``objective`` (any randomness in the loss,
``Objective.generator``), ``torch`` (the run's own copy of torch's global stream, which dropout
draws from), ``view`` (the fixed batches the views and
metrics use, so that watching a run never changes what it learns).

Two optional parts of the spec wrap the networks the architectures build:

- ``pack`` (PacGAN, Lin et al. 2018): D is built for ``pack`` samples concatenated along the feature
  (or channel) axis and wrapped in :class:`PackedDiscriminator`, which regroups a batch ``[B, ...]``
  into ``[B / pack, pack * ...]`` before D, so every objective and architecture packs alike. The views
  show D at one point x as D(x, x, ..., x): :attr:`Pipeline.D_view`.
- ``ema`` (Yazici et al. 2019): an exponential moving average of G's weights, :attr:`Pipeline.G_ema`,
  which the views, snapshots, saved samples and metrics use; training steps only the raw G.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from explorer.components import Architecture, Objective, Sampler
from explorer.device import TorchStream, make_generator, pick_device, seeded, stream_seed, tree_to_device
from explorer.errors import CheckpointError, SpecError
from explorer.registry import Registry, get_registry
from explorer.spec import Spec

CHECKPOINT_FORMAT = 1


class PackedDiscriminator(nn.Module):
    """PacGAN's packing (Lin et al. 2018) around any discriminator: ``forward([B, c, ...])`` judges each run of
    ``pack`` consecutive samples as one, ``net([B / pack, pack * c, ...])`` (concatenated along the first
    event axis: a vector's features, an image's channels), and returns ``[B / pack, 1]`` logits. The losses
    average over the packs exactly as over single samples, so every objective works unchanged.

    ``single(x)`` is D at each point alone, D(x, x, ..., x): ``x`` packed with ``pack - 1`` copies of itself,
    ``[n, 1]`` logits for any ``n`` (what the heatmap and the 1-D critic curve draw).
    """

    def __init__(self, net: nn.Module, pack: int) -> None:
        super().__init__()
        self.net = net
        self.pack = int(pack)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if n % self.pack:
            raise ValueError(f"packing: a batch of {n} samples does not split into packs of {self.pack}; "
                             f"pass a multiple of {self.pack} samples (D.single(x) judges each sample alone)")
        return self.net(x.reshape(n // self.pack, self.pack * x.shape[1], *x.shape[2:]))

    def single(self, x: Tensor) -> Tensor:
        return self.net(x.repeat(1, self.pack, *([1] * (x.dim() - 2))))


class PerSample(nn.Module):
    """A packed discriminator seen one sample at a time (``PackedDiscriminator.single``), for the views."""

    def __init__(self, packed: PackedDiscriminator) -> None:
        super().__init__()
        self.packed = packed

    def forward(self, x: Tensor) -> Tensor:
        return self.packed.single(x)


def make_ema(G: nn.Module) -> nn.Module:
    """A copy of ``G`` to hold its moving average: same weights and buffers, no gradients."""
    ema = copy.deepcopy(G)
    for q in ema.parameters():
        q.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, G: nn.Module, decay: float, average: bool) -> None:
    """One step of the moving average: every parameter ``ema <- decay * ema + (1 - decay) * G`` when
    ``average``, else ``ema <- G`` (before the start); buffers (batch-norm statistics, ...) are copied."""
    dst = [q for q in ema.parameters()]
    src = [q.detach() for q in G.parameters()]
    if average:
        torch._foreach_lerp_(dst, src, 1.0 - decay)
    else:
        torch._foreach_copy_(dst, src)
    for b_ema, b in zip(ema.buffers(), G.buffers()):
        b_ema.copy_(b)


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
        pack = spec.pack
        if pack > 1 and spec.batch_size % pack:
            raise SpecError("batch_size", f"{spec.batch_size:,} is not a multiple of pack = {pack}")
        d_shape = (x_shape[0] * pack, *x_shape[1:])  # pack samples along the first event axis
        if d_arch is not None:
            _check_support(d_arch, "discriminator", d_shape, (1,))
        with seeded(stream_seed(spec.seed, "weights")):
            self.G: nn.Module = g_arch.build("generator", z_shape, x_shape)
            self.D: nn.Module | None = d_arch.build("discriminator", d_shape, (1,)) if d_arch is not None else None
        if self.D is not None and pack > 1:
            self.D = PackedDiscriminator(self.D, pack)
        #: D as the views evaluate it at single points: D itself, or D(x, x, ..., x) when packing
        self.D_view: nn.Module | None = PerSample(self.D) if isinstance(self.D, PackedDiscriminator) else self.D
        self.G.to(self.device)
        if self.D is not None:
            self.D.to(self.device)
        #: the moving average of G's weights (spec ``ema``), or None; the views and metrics use it
        self.G_ema: nn.Module | None = make_ema(self.G) if spec.ema is not None else None
        self.opt_g = make_optimizer(self.G.parameters(), spec.optim["generator"])
        self.opt_d = make_optimizer(self.D.parameters(), spec.optim["discriminator"]) if self.D is not None else None
        self.data_gen = make_generator(self.device, stream_seed(spec.seed, "data"))
        self.noise_gen = make_generator(self.device, stream_seed(spec.seed, "noise"))
        self.objective.generator = make_generator(self.device, stream_seed(spec.seed, "objective"))
        self.torch_stream = TorchStream(self.device, stream_seed(spec.seed, "torch"))  # dropout and the like
        self.is_conv = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in self.G.modules())
        if self.device.type == "cuda" and self.is_conv:
            torch.backends.cudnn.benchmark = True
        # Fixed batches for the views and metrics, from their own stream (never the training streams).
        view_gen = make_generator(self.device, stream_seed(spec.seed, "view"))
        n = spec.snapshot_size
        self.view_z = self.latent.sample(n, view_gen, self.device)
        self.view_real = self.data.sample(n, view_gen, self.device)
        self.step = 0
        # The settings a change may set (see apply_change), as in force now.
        self.k_d = spec.k_d
        #: each optimiser's base learning rate: its lr while the schedule is constant, the lr a cosine
        #: schedule scales (lr(step) = base * (1 + cos(pi * step / steps)) / 2) otherwise
        self.lr_base = {role: float(cfg["lr"]) for role, cfg in spec.optim.items()}
        self.objective_spec: dict[str, Any] = spec.objective.to_dict()
        #: how many entries of ``spec.changes`` are in force (applied, or restored from a checkpoint)
        self.changes_applied = 0

    # -- changing settings mid-run ---------------------------------------------------------------
    def apply_change(self, settings: dict[str, Any]) -> None:
        """Apply one change of settings, resolved by :func:`explorer.spec.resolve_change`, at the current
        step boundary: the one function behind the spec's change log and live changes alike.

        ``optim.<role>.lr`` sets the optimiser's lr in every param group and becomes its base lr: under a
        cosine schedule the lr from this step on is the new base times the schedule's factor at the step
        (the curve keeps its phase and scales). ``k_d`` sets the discriminator steps per generator step.
        ``objective`` swaps the objective for a new one built from the registry (G, D, the optimisers and
        the objective's random stream carry on). Nothing is recorded here: the trainer records the change.
        """
        for key, value in settings.items():
            if key == "k_d":
                self.k_d = int(value)
            elif key in ("optim.generator.lr", "optim.discriminator.lr"):
                role = key.split(".")[1]
                opt = self.opt_g if role == "generator" else self.opt_d
                if opt is None:
                    raise SpecError(key, "this run has no discriminator, so there is no discriminator learning rate to change")
                self.lr_base[role] = float(value)
                for group in opt.param_groups:
                    group["lr"] = float(value)
            elif key == "objective":
                self._set_objective(dict(value))
            else:
                raise SpecError(key, "cannot change mid-run")

    def _set_objective(self, table: dict[str, Any]) -> None:
        params = dict(table)
        name = params.pop("name")
        objective: Objective = self.registry.create("objective", name, params, where="objective")  # type: ignore[assignment]
        if bool(objective.needs_discriminator) != (self.D is not None):
            raise SpecError("objective", f"cannot switch to {name!r} mid-run: it "
                            + ("needs no discriminator, and this run trains one" if self.D is not None else
                               "needs a discriminator, and this run has none"))
        objective.generator = self.objective.generator  # one random stream for the run's objective, whichever it is
        self.objective = objective
        self.objective_spec = copy.deepcopy(table)

    def restore_changes(self) -> None:
        """Put in force the settings of the change log's entries up to :attr:`step` (after a checkpoint is
        loaded), so that a resumed run trains on exactly as the run that was never stopped; later entries
        are applied by the trainer when their step comes."""
        due = [c for c in self.spec.changes if c["step"] <= self.step]
        in_force = self.spec.settings_at(self.step)
        self.k_d = int(in_force["k_d"])
        changed_lr = {key for c in due for key in c["set"] if key.startswith("optim.")}
        for role in self.lr_base:
            key = f"optim.{role}.lr"
            self.lr_base[role] = float(in_force[key])
            if key in changed_lr:  # (the optimiser's own state holds it already when it was loaded)
                opt = self.opt_g if role == "generator" else self.opt_d
                for group in opt.param_groups:  # type: ignore[union-attr]
                    group["lr"] = float(in_force[key])
        if in_force["objective"] != self.objective_spec:
            self._set_objective(dict(in_force["objective"]))
        self.changes_applied = len(due)

    # -- sampling -----------------------------------------------------------------------------
    def sample_real(self, n: int) -> Tensor:
        return self.data.sample(n, self.data_gen, self.device)

    def sample_latent(self, n: int) -> Tensor:
        return self.latent.sample(n, self.noise_gen, self.device)

    @property
    def G_eval(self) -> nn.Module:
        """The generator the views, snapshots and metrics use: the moving average when the spec has ``ema``."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: Tensor, raw: bool = False) -> Tensor:
        """G(z) without touching training state (batch-norm statistics, parametrizations, random streams),
        from the averaged G when the spec has ``ema`` (``raw=True``: the raw G, the one that trains)."""
        G = self.G if raw else self.G_eval
        with untouched(G, device=self.device):
            return G(z)

    def update_ema(self, step: int) -> None:
        """After generator step ``step`` (counted from 1): the average tracks G exactly up to ``ema.start``
        and is a moving average from then on. No random stream is drawn."""
        if self.G_ema is None:
            return
        ema = self.spec.ema or {}
        update_ema(self.G_ema, self.G, float(ema["decay"]), average=step > int(ema["start"]))

    def untouched(self) -> untouched:
        """A context in which views and metrics may call G, D, the objective and the samplers freely:
        on exit every piece of training state is as it was (see :class:`untouched`)."""
        return untouched(self.G, self.G_ema, self.D, *_module_attrs(self.objective), device=self.device,
                         generators=(self.objective.generator,), samplers=(self.data, self.latent))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State dicts and plain data only, so ``torch.load(weights_only=True)`` reads it back."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": int(self.step),
            "spec": self.spec.to_dict(),
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "D": self.D.state_dict() if self.D is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "rng": {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state(),
                    "objective": self.objective.generator.get_state(), "torch": self.torch_stream.get_state()},
            "samplers": {"data": self.data.state_dict(), "latent": self.latent.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any], optimizers: bool = True, rng: bool = True, strict: bool = True) -> None:
        """Restore weights and, when ``optimizers`` / ``rng``, the optimisers' state, the random streams and
        the stateful samplers' state (a sampler's only when its spec is unchanged).

        Nothing asked for is dropped silently: when the optimisers' or a sampler's saved state does not
        fit, ``strict`` raises a :class:`~explorer.errors.CheckpointError` that says what and why; with
        ``strict=False`` that part starts afresh and the reason goes into :attr:`resume_notes`.
        """
        self.resume_notes: list[str] = []
        self.G.load_state_dict(state["G"])
        if self.G_ema is not None:  # a checkpoint without an average (a fork that turns ema on) starts it at G
            self.G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
        if self.D is not None and state.get("D") is not None:
            try:
                self.D.load_state_dict(state["D"])
            except RuntimeError as exc:  # another architecture, width or pack than the checkpoint's
                raise CheckpointError(f"cannot resume: the checkpoint's discriminator weights do not fit this "
                                      f"discriminator (its architecture, size or pack differ: "
                                      f"{str(exc).splitlines()[0]}); start a new run for another discriminator") from None
        if optimizers:
            for what, opt, key in (("generator", self.opt_g, "opt_g"), ("discriminator", self.opt_d, "opt_d")):
                if opt is None:
                    continue
                try:
                    if state.get(key) is None:
                        raise KeyError(f"the checkpoint holds no {key}")
                    opt.load_state_dict(state[key])
                except (ValueError, KeyError, TypeError) as exc:
                    self._dropped(f"the {what}'s optimiser state does not fit this optimiser ({exc})", strict,
                                  "fork the run with the optimiser changed to start it afresh")
        if rng and "rng" in state:
            self.data_gen.set_state(state["rng"]["data"].cpu())
            self.noise_gen.set_state(state["rng"]["noise"].cpu())
            if "objective" in state["rng"]:
                self.objective.generator.set_state(state["rng"]["objective"].cpu())
            if "torch" in state["rng"]:
                self.torch_stream.set_state(state["rng"]["torch"])
            spec = self.spec.to_dict()
            for slot, sampler in (("data", self.data), ("latent", self.latent)):
                saved = state.get("samplers", {}).get(slot)
                if saved and state["spec"].get(slot) == spec.get(slot):
                    try:
                        sampler.load_state_dict(tree_to_device(saved, self.device))
                    except (ValueError, KeyError, TypeError) as exc:
                        self._dropped(f"the {slot} sampler {sampler.name!r} refused its saved state "
                                      f"({type(exc).__name__}: {exc})", strict,
                                      "fix the sampler's load_state_dict, or fork the run to restart its stream")
        self.step = int(state.get("step", 0))
        self.restore_changes()

    def _dropped(self, what: str, strict: bool, fix: str) -> None:
        if strict:
            raise CheckpointError(f"cannot resume: {what}; {fix}")
        self.resume_notes.append(f"{what}: it starts afresh")


def _module_attrs(component: Any) -> list[nn.Module]:
    """The ``nn.Module`` s a component holds as attributes (e.g. an objective's learned kernel)."""
    return [v for v in vars(component).values() if isinstance(v, nn.Module)]


def _check_support(arch: Architecture, role: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    reason = arch.supports(role, in_shape, out_shape)  # type: ignore[arg-type]
    if reason:
        raise SpecError(role, f"{arch.name!r} cannot build the {role} for input {in_shape} -> output {out_shape}: {reason}")


class untouched:
    """Context manager for views: whatever runs inside leaves the modules, the random streams and the
    samplers exactly as they were, so watching a run never changes what it learns.

    Saved on entry and restored on exit: every parameter and buffer of each module (batch-norm running
    statistics, spectral norm's power-iteration vectors ``_u``/``_v`` and any other state a layer
    updates in ``forward``), each module's train/eval flag, torch's global random streams (dropout
    draws from them) on the CPU and on ``device``, the given ``torch.Generator`` s (e.g.
    ``Objective.generator``) and the given samplers' :meth:`~explorer.components.Sampler.state_dict`.
    The modules stay in the mode they were in (a view of D shows what the objective sees); a
    parameter or buffer that ``forward`` replaced outright is put back too.
    """

    def __init__(self, *modules: nn.Module | None, generators: Any = (), samplers: Any = (),
                 device: torch.device | str | None = None) -> None:
        seen: set[int] = set()
        self.modules = [m for root in modules if root is not None for m in root.modules()
                        if not (id(m) in seen or seen.add(id(m)))]  # type: ignore[func-returns-value]
        self.generators = [g for g in generators if g is not None]
        self.samplers = list(samplers)
        self.device = torch.device(device) if device is not None else None
        self._tensors: list[tuple[nn.Module, str, str, Tensor, Tensor, int]] = []
        self._flags: list[tuple[nn.Module, bool]] = []
        self._gen_states: list[Tensor] = []
        self._sampler_states: list[Any] = []
        self._rng: Any = None

    def __enter__(self) -> "untouched":
        for m in self.modules:
            self._flags.append((m, m.training))
            for table in ("_parameters", "_buffers"):
                for name, t in getattr(m, table).items():
                    if t is not None:
                        self._tensors.append((m, table, name, t, t.detach().clone(), t._version))
        self._gen_states = [g.get_state() for g in self.generators]
        self._sampler_states = [copy.deepcopy(s.state_dict()) for s in self.samplers]
        gpus = [self.device] if self.device is not None and self.device.type == "cuda" else []
        self._rng = torch.random.fork_rng(devices=gpus)
        self._rng.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with torch.no_grad():
                for m, table, name, t, saved, version in self._tensors:
                    if getattr(m, table).get(name) is not t:
                        getattr(m, table)[name] = t  # forward replaced it: put the original back
                    if t._version != version:
                        t.copy_(saved)
            for m, flag in self._flags:
                m.training = flag
            for g, state in zip(self.generators, self._gen_states):
                g.set_state(state)
            for s, state in zip(self.samplers, self._sampler_states):
                s.load_state_dict(state)
        finally:
            self._rng.__exit__(None, None, None)
            self._tensors.clear()
            self._flags.clear()


class frozen_batchnorm(untouched):
    """Kept for plugins that used it: :class:`untouched` for one module."""

    def __init__(self, module: nn.Module):
        super().__init__(module)
