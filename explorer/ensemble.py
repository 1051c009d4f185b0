"""Seed ensembles: the seeds of one variant trained as one batched model (``genex compare --vectorise``).

N runs that differ only in their seed do the same arithmetic on different numbers. An ensemble
stacks their weights (``torch.func.stack_module_state``: each parameter gains a leading axis of N)
and runs one step for all of them through ``torch.func.vmap`` over ``functional_call``: one batched
matrix product per layer instead of N small ones, one optimiser step over the stacked tensors (Adam,
SGD and RMSprop act element by element, so each seed's update is its own). Everything else stays per
seed and unchanged:

* each seed keeps its own :class:`~explorer.pipeline.Pipeline` (its initial weights, data, noise and
  torch streams, drawn exactly as a run of that seed alone draws them) and its own
  :class:`~explorer.training.Trainer` with its run folder, logs, metrics, snapshots and checkpoints:
  the trainers are driven in lockstep through their phases (``begin``, ``next_turn``, ``end_step``,
  ``wrap_up``), and before a snapshot, a metric pass or a checkpoint reads a seed's pipeline, its
  slice of the stacked weights and optimiser state is copied back into it (``Trainer.sync_weights``);
* the losses of a seed equal those of the seed trained alone up to floating-point rounding (a batched
  product sums in another order), and its checkpoint is an ordinary one: resume or fork it alone;
* a seed that fails (a non-finite loss) or is stopped ends alone; the others go on.

What cannot be batched trains its seeds one after another instead, with the reason
(:func:`why_not`): networks with buffers (batch-norm running statistics, spectral norm), objectives
with networks of their own, components that declare ``vectorise = False``, anything ``vmap`` refuses
(random draws inside a loss, in-place updates of state) or whose batched losses do not match the
separate ones on a trial batch, and runs that resume from a checkpoint.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from explorer.components import normalise_loss
from explorer.device import ThreadTuner, autocast, describe
from explorer.errors import one_line
from explorer.pipeline import Pipeline, _module_attrs, make_optimizer
from explorer.registry import Registry, get_registry
from explorer.runs import RunStore, mark_live
from explorer.spec import Spec
from explorer.training import RunState, Trainer, TrainerConfig

TRIAL_RTOL = 1e-4  # batched vs separate losses on the trial batch
NOT_COMPARED = ("seed", "name")  # the fields in which the seeds of one ensemble may differ


class _Bound(nn.Module):
    """A module's forward with given (batched) weights: what an objective receives as ``D``."""

    def __init__(self, base: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "_base", base)  # not registered: the weights come from params
        object.__setattr__(self, "_weights", (params, buffers))

    def forward(self, *args: Any) -> Tensor:
        return functional_call(self._base, self._weights, args)


def _has_buffers(module: nn.Module | None) -> bool:
    return module is not None and any(True for _ in module.buffers())


def _component_refuses(p: Pipeline) -> str | None:
    spec = p.spec
    for kind, slot in (("architecture", spec.generator), ("architecture", spec.discriminator)):
        if slot is None:
            continue
        info = p.registry.components[kind].get(slot.name)
        if info is not None and not getattr(info.cls, "vectorise", True):
            return f"the {kind} {slot.name!r} declares vectorise = False"
    if not getattr(type(p.objective), "vectorise", True):
        return f"the objective {p.objective.name!r} declares vectorise = False"
    return None


def _comparable(spec: Spec) -> dict[str, Any]:
    d = spec.to_dict()
    for key in NOT_COMPARED:
        d.pop(key, None)
    return d


def static_reason(pipelines: Sequence[Pipeline]) -> str | None:
    """Why these pipelines cannot train as one ensemble, from their specs and networks alone (None: they can)."""
    if len(pipelines) < 2:
        return "a single seed has nothing to batch with"
    first = _comparable(pipelines[0].spec)
    if any(_comparable(p.spec) != first for p in pipelines[1:]):
        return "the runs differ in more than their seed"
    p0 = pipelines[0]
    if any(p.step != 0 for p in pipelines):
        return "a run resumes from a checkpoint"
    if any(p.device != p0.device for p in pipelines):
        return "the runs are on different devices"
    reason = _component_refuses(p0)
    if reason:
        return reason
    for role, module in (("generator", p0.G), ("discriminator", p0.D)):
        if _has_buffers(module):
            name = (p0.spec.generator if role == "generator" else p0.spec.discriminator).name  # type: ignore[union-attr]
            return (f"the {role} ({name!r}) keeps buffers (batch-norm running statistics or spectral norm's "
                    "vectors), which one batched model cannot update seed by seed")
    if _module_attrs(p0.objective):
        return f"the objective {p0.objective.name!r} trains networks of its own"
    return None


class Ensemble:
    """Trains several trainers' pipelines (one spec, several seeds) as one batched model, in lockstep."""

    def __init__(self, trainers: Sequence[Trainer], threads: int = 1) -> None:
        self.trainers = list(trainers)
        #: the batched step's thread count, the faster of the process's and ``threads``, measured as it trains
        self.tuner = ThreadTuner(threads if trainers and trainers[0].p.device.type == "cpu" else 1)
        self.pipes = [t.p for t in self.trainers]
        p0 = self.pipes[0]
        self.n = len(self.pipes)
        self.device = p0.device
        self.G_base = copy.deepcopy(p0.G).to("meta")
        self.g_params, self.g_buffers = stack_module_state([p.G for p in self.pipes])
        self.D_base = copy.deepcopy(p0.D).to("meta") if p0.D is not None else None
        if p0.D is not None:
            self.d_params, self.d_buffers = stack_module_state([p.D for p in self.pipes])  # type: ignore[arg-type]
        else:
            self.d_params, self.d_buffers = {}, {}
        self.ema_params: dict[str, Tensor] | None = None
        if p0.G_ema is not None:
            self.ema_params = {k: torch.stack([dict(p.G_ema.named_parameters())[k].detach() for p in self.pipes])  # type: ignore[union-attr]
                               for k, _ in p0.G_ema.named_parameters()}
        self.opt_g = make_optimizer(list(self.g_params.values()), p0.spec.optim["generator"])
        self.opt_d = make_optimizer(list(self.d_params.values()), p0.spec.optim["discriminator"]) if self.d_params else None
        for opt, own in ((self.opt_g, p0.opt_g), (self.opt_d, p0.opt_d)):
            if opt is not None and own is not None:
                for group, own_group in zip(opt.param_groups, own.param_groups):
                    group["lr"] = own_group["lr"]
        self._generate = vmap(self._g_forward, randomness="error")
        self._d_losses = vmap(self._d_loss, randomness="error")
        self._g_losses = vmap(self._g_loss, randomness="error")
        self._synced = [-1] * self.n  # the step each seed's pipeline was last brought up to date at
        self.active = list(range(self.n))
        for i, t in enumerate(self.trainers):
            t.sync_weights = (lambda i=i: self.sync(i))

    # -- the batched functions (one seed's view: vmap adds the seed axis) --------------------------
    @property
    def lead(self) -> Pipeline:
        """The pipeline whose settings (k_d, objective, learning rates) the ensemble follows: all seeds
        share the spec and its change log, so any active one will do."""
        return self.pipes[self.active[0] if self.active else 0]

    def _g_forward(self, gp: dict[str, Tensor], gb: dict[str, Tensor], z: Tensor) -> Tensor:
        return functional_call(self.G_base, (gp, gb), (z,))

    def _d_loss(self, dp: dict[str, Tensor], db: dict[str, Tensor], real: Tensor, fake: Tensor) -> Any:
        D = _Bound(self.D_base, dp, db)  # type: ignore[arg-type]
        return normalise_loss(self.lead.objective.discriminator_loss(D, real, fake), "discriminator_loss")

    def _g_loss(self, gp: dict[str, Tensor], gb: dict[str, Tensor], dp: dict[str, Tensor], db: dict[str, Tensor],
                real: Tensor, z: Tensor) -> Any:
        fake = functional_call(self.G_base, (gp, gb), (z,))
        D = _Bound(self.D_base, dp, db) if self.D_base is not None else None
        return normalise_loss(self.lead.objective.generator_loss(D, real, fake), "generator_loss")

    def _stack(self, draw: Callable[[Pipeline], Tensor]) -> Tensor:
        """One batch per seed from that seed's own streams (inside its torch stream, as a run alone draws)."""
        out = []
        for p in self.pipes:
            with p.torch_stream.active():
                out.append(draw(p))
        return torch.stack(out)

    # -- one step for every seed --------------------------------------------------------------------
    def train_step(self) -> None:
        """k_d discriminator steps and one generator step for every seed at once (as Trainer.train_step)."""
        lead = self.lead
        spec = lead.spec
        B = spec.batch_size
        for i in self.active:
            t = self.trainers[i]
            if t._scheduled:
                t._apply_schedule()
        self._follow_lr(lead)
        logged: dict[str, Tensor] = {}
        with autocast(self.device, spec.precision):
            real = None
            if self.D_base is not None:
                for _ in range(lead.k_d):
                    real = self._stack(lambda p: p.sample_real(B))
                    z = self._stack(lambda p: p.sample_latent(B))
                    with torch.no_grad():
                        fake = self._generate(self.g_params, self.g_buffers, z)
                    d_loss, d_extra = self._d_losses(self.d_params, self.d_buffers, real, fake)
                    self.opt_d.zero_grad(set_to_none=True)  # type: ignore[union-attr]
                    d_loss.sum().backward()  # the seeds are independent: each gets its own loss's gradient
                    self.opt_d.step()  # type: ignore[union-attr]
                logged["d_loss"] = d_loss
                logged.update(d_extra)
            if real is None:
                real = self._stack(lambda p: p.sample_real(B))
            z = self._stack(lambda p: p.sample_latent(B))
            d_fixed = {k: v.detach() for k, v in self.d_params.items()}  # G's step moves only G
            g_loss, g_extra = self._g_losses(self.g_params, self.g_buffers, d_fixed, self.d_buffers, real, z)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.sum().backward()
            self.opt_g.step()
        self._update_ema(lead.step + 1)
        logged["g_loss"] = g_loss
        logged.update(g_extra)
        keys = list(logged)
        rows = torch.stack([v.detach().float().reshape(self.n) for v in logged.values()], dim=1)  # [seed, key]
        for i in self.active:
            self.trainers[i].record_row(keys, rows[i])

    def _follow_lr(self, lead: Pipeline) -> None:
        for opt, own in ((self.opt_g, lead.opt_g), (self.opt_d, lead.opt_d)):
            if opt is not None and own is not None:
                for group, own_group in zip(opt.param_groups, own.param_groups):
                    group["lr"] = own_group["lr"]

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        if self.ema_params is None:
            return
        ema = self.lead.spec.ema or {}
        dst = list(self.ema_params.values())
        src = [self.g_params[k].detach() for k in self.ema_params]
        if step > int(ema["start"]):
            torch._foreach_lerp_(dst, src, 1.0 - float(ema["decay"]))
        else:
            torch._foreach_copy_(dst, src)

    # -- bringing one seed's pipeline up to date ------------------------------------------------------
    @torch.no_grad()
    def sync(self, i: int) -> None:
        """Copy seed ``i``'s slice of the stacked weights, moving average and optimiser state into its own
        pipeline (before a snapshot, a metric pass or a checkpoint reads it)."""
        p = self.pipes[i]
        if self._synced[i] == p.step:
            return
        self._synced[i] = p.step
        for module, stacked in ((p.G, self.g_params), (p.D, self.d_params), (p.G_ema, self.ema_params)):
            if module is None or stacked is None:
                continue
            for name, param in module.named_parameters():
                param.copy_(stacked[name][i])
        for opt, own, stacked in ((self.opt_g, p.opt_g, self.g_params), (self.opt_d, p.opt_d, self.d_params)):
            if opt is None or own is None:
                continue
            module = p.G if stacked is self.g_params else p.D
            for (name, param) in module.named_parameters():  # type: ignore[union-attr]
                state = opt.state.get(stacked[name])
                if state:
                    own.state[param] = {k: self._slice(v, i, param) for k, v in state.items()}

    def _slice(self, value: Any, i: int, param: Tensor) -> Any:
        if not isinstance(value, Tensor):
            return copy.deepcopy(value)
        if value.dim() == param.dim() + 1 and value.shape[0] == self.n and value.shape[1:] == param.shape:
            return value[i].clone()
        return value.clone()  # per-step scalars (Adam's step count) are the same for every seed

    # -- checking on a trial batch ---------------------------------------------------------------------
    def trial(self) -> str | None:
        """Run the batched losses (forward and backward) once on the seeds' fixed view batches and compare
        them with each seed's own losses on the same batches; None when they agree. Changes no weight,
        optimiser state or random stream."""
        pipes = self.pipes
        p0 = pipes[0]
        pack = p0.spec.pack
        n = min(p0.spec.batch_size, len(p0.view_z), len(p0.view_real)) // pack * pack
        if n < pack:
            return None
        real = torch.stack([p.view_real[:n] for p in pipes])
        z = torch.stack([p.view_z[:n] for p in pipes])
        try:
            with torch.no_grad():
                fake = self._generate(self.g_params, self.g_buffers, z)
            batched: dict[str, Tensor] = {}
            if self.D_base is not None:
                d_loss, _ = self._d_losses(self.d_params, self.d_buffers, real, fake)
                d_loss.sum().backward()
                batched["d_loss"] = d_loss.detach()
            g_loss, _ = self._g_losses(self.g_params, self.g_buffers, self.d_params, self.d_buffers, real, z)
            g_loss.sum().backward()
            batched["g_loss"] = g_loss.detach()
        except Exception as exc:  # what vmap refuses: random draws, in-place state, an unsupported operation
            return f"torch.func.vmap cannot batch this pipeline ({type(exc).__name__}: {one_line(str(exc))[:300]})"
        finally:
            for t in [*self.g_params.values(), *self.d_params.values()]:
                t.grad = None
        for i, p in enumerate(pipes):
            with p.untouched():
                with torch.no_grad():
                    own_fake = p.G(z[i])
                alone: dict[str, float] = {}
                if p.D is not None:
                    alone["d_loss"] = float(normalise_loss(p.objective.discriminator_loss(p.D, real[i], own_fake), "d")[0].detach())
                alone["g_loss"] = float(normalise_loss(p.objective.generator_loss(p.D, real[i], p.G(z[i])), "g")[0].detach())
            for key, value in alone.items():
                got = float(batched[key][i])
                if abs(got - value) > TRIAL_RTOL * max(1.0, abs(value)):
                    return (f"its batched {key} ({got:.6g}) differs from seed {p.spec.seed}'s own ({value:.6g}) on a "
                            "trial batch")
        return None

    # -- the lockstep loop --------------------------------------------------------------------------------
    def run(self) -> list[str]:
        """Train every seed to its end (finished, stopped or failed, each on its own); their statuses."""
        statuses: list[str] = ["failed"] * self.n

        def end(i: int, status: str) -> None:
            statuses[i] = self.trainers[i].finish(status)
            self.active.remove(i)

        def phase(i: int, fn: Callable[[], Any]) -> Any:
            """Run one seed's phase; a failure there ends that seed alone (returns None)."""
            try:
                return fn()
            except (Exception, SystemExit) as exc:
                end(i, self.trainers[i].fail(exc))
                return None

        def close(i: int, status: str) -> None:
            phase(i, lambda: self.trainers[i].wrap_up(status))
            if i in self.active:  # wrap_up went well
                end(i, status)

        try:
            for i in list(self.active):
                phase(i, self.trainers[i].begin)
            while self.active:
                waiting = False
                for i in list(self.active):
                    t = self.trainers[i]
                    if t.p.step >= t.spec.steps:
                        close(i, "finished")
                        continue
                    turn = phase(i, t.next_turn)
                    if turn == "stop":
                        close(i, "stopped")
                    elif turn == "wait":
                        waiting = True  # a paused seed holds the ensemble (its seeds step together)
                if not self.active or waiting:
                    continue
                for i in self.active:
                    self.trainers[i]._in_step = True
                try:
                    with self.tuner:
                        self.train_step()
                except (Exception, SystemExit) as exc:  # a component raised: every seed shares it
                    for i in list(self.active):
                        end(i, self.trainers[i].fail(exc))
                    break
                for i in list(self.active):
                    phase(i, self.trainers[i].end_step)  # a non-finite loss ends that seed only
        finally:
            self.tuner.restore()
        return statuses


def prepare(specs: Sequence[Spec], registry: Registry | None = None) -> tuple[list[Pipeline], str | None]:
    """Build each seed's pipeline and say why they cannot train as one ensemble (None: they can). A
    spec that cannot be built raises here, as it would for a run alone."""
    registry = registry or get_registry()
    pipes = [Pipeline(spec, registry) for spec in specs]
    return pipes, static_reason(pipes)


def train_seeds(specs: Sequence[Spec], folders: Sequence[str | Path | None], registry: Registry | None = None,
                config: TrainerConfig | None = None, root: str | Path | None = None,
                on_trainers: Callable[[list[Trainer]], None] | None = None,
                states: Sequence[RunState] | None = None,
                stores: Sequence[RunStore] | None = None, threads: int = 1,
                log: Callable[[str], None] | None = None) -> tuple[list[RunStore] | None, str | None]:
    """Train the seeds of one variant as one ensemble, each into its own run folder (``folders[i]``, or
    ``stores[i]`` when the caller made them). Returns ``(stores, None)``; or ``(None, reason)`` when
    they cannot be batched, before anything is written, so that the caller trains them one by one.
    ``threads``: the most intra-op threads the batched step may use (:class:`~explorer.device.ThreadTuner`
    picks; ``log`` hears which it used)."""
    from explorer.execute import attach_store

    registry = registry or get_registry()
    pipes, reason = prepare(specs, registry)
    if reason is not None:
        return None, reason
    states = list(states) if states is not None else [RunState(s.steps) for s in specs]
    trainers = [Trainer(p, state, config) for p, state in zip(pipes, states)]
    ensemble = Ensemble(trainers, threads)
    reason = ensemble.trial()
    if reason is not None:
        return None, reason
    if stores is None:
        stores = [RunStore.create(s.to_dict(), root, name=s.short_name(), out=f) for s, f in zip(specs, folders)]
    stores = list(stores)
    for t, store in zip(trainers, stores):
        mark_live(store.id)
        t.cache_dir = str(store.path.parent / ".cache")
        attach_store(t, store)
    if on_trainers is not None:
        on_trainers(trainers)
    try:
        for p, store, state in zip(pipes, stores, states):
            store.write_status("running", run_id=store.id, device=describe(p.device), step=p.step, started=time.time(),
                               vectorised=len(pipes))
        ensemble.run()
    finally:
        for store in stores:
            mark_live(store.id, False)
    if log is not None and ensemble.tuner.active:
        log(f"the batched step ran on {ensemble.tuner.summary()}")
    return stores, None


def train_here(specs: Sequence[Spec], stores: Sequence[RunStore], states: Sequence[RunState],
               attach: Sequence[Callable[[Trainer], None]], registry: Registry | None = None,
               config: TrainerConfig | None = None, on_fallback: Callable[[str], None] | None = None) -> str | None:
    """Train seeds whose run folders exist (the app's ensembles): as one ensemble when they batch, else one
    after another in this thread, each folder's status saying why (``vectorise_note``; ``on_fallback(reason)``
    first). ``attach[i]`` receives seed ``i``'s trainer (its steering). Returns that reason, or None."""
    from explorer.execute import execute

    trained, reason = train_seeds(specs, [None] * len(specs), registry, config=config, states=states, stores=stores,
                                  on_trainers=lambda ts: [a(t) for a, t in zip(attach, ts)])
    if trained is None:
        assert reason is not None
        if on_fallback is not None:
            on_fallback(reason)
        for store, spec, state, attach_one in zip(stores, specs, states, attach):
            store.write_status("queued", vectorise_note=reason)
            execute(store, spec, state, registry, on_trainer=attach_one, config=config)
    return reason
