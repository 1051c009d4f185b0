"""The Trainer: a model-agnostic step loop with callbacks and stop / pause / step controls.

The loop never syncs with the host inside a step: each step writes its losses into a small
device buffer, read once every ``log_every`` steps (which also finds the exact step of a
non-finite loss). Snapshots for the UI are taken at most ``snapshot_hz`` times a second, metrics
every ``metric_every`` steps, both off the hot path. The trainer never imports streamlit: the UI
reads :class:`RunState`, the trainer writes it.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from explorer.components import MetricContext, normalise_loss
from explorer.device import autocast, describe, make_generator, stream_seed
from explorer.errors import ExplorerError, SpecError, TrainingError
from explorer.pipeline import Pipeline
from explorer.records import CHANGE, LOSS, METRIC
from explorer.snapshots import Snapshot, take_snapshot
from explorer.spec import MAX_CHANGES, Spec, resolve_change

EVENTS = ("step_end", "log", "snapshot", "metrics", "checkpoint", "change", "finish")
HISTORY_LIMIT = 2000  # logged records kept in memory; older ones are thinned (every other one)


@dataclass
class RunView:
    """An immutable copy of a RunState for readers (the UI)."""

    status: str
    step: int
    total_steps: int
    steps_per_s: float
    device: str
    history: list[dict[str, Any]]
    snapshot: Snapshot | None
    error: str | None
    updated: float


class RunState:
    """What a running training shares with its readers, behind a lock. Bounded in memory."""

    def __init__(self, total_steps: int = 0, device: str = "",
                 forward: Callable[["RunState", str, Any], None] | None = None) -> None:
        """``forward(state, kind, payload)``, when given, hears every change after it is applied, for a
        process that trains on behalf of another (the app's workers, Ray tasks): ``("snapshot", snap)``,
        then ``("state", fields)`` for the other fields of one update, and ``("record", record)``."""
        self._lock = threading.Lock()
        self._forward = forward
        self.status = "queued"
        self.step = 0
        self.total_steps = total_steps
        self.steps_per_s = 0.0
        self.device = device
        self.history: list[dict[str, Any]] = []
        self.snapshot: Snapshot | None = None
        self.error: str | None = None
        self.updated = time.time()

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self, k, v)
            self.updated = time.time()
        if self._forward is not None:
            snap = fields.pop("snapshot", None)
            if snap is not None:
                self._forward(self, "snapshot", snap)
            if fields:
                self._forward(self, "state", fields)

    def add_record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.history.append(record)
            if len(self.history) > HISTORY_LIMIT:
                # Decimate the older half; keep the recent half at full resolution (and every change record:
                # a chart marks each change, and a run holds at most MAX_CHANGES of them).
                half = len(self.history) // 2
                older = [r for i, r in enumerate(self.history[:half]) if i % 2 == 0 or r.get("kind") == CHANGE]
                self.history = older + self.history[half:]
            self.updated = time.time()
        if self._forward is not None:
            self._forward(self, "record", record)

    def view(self) -> RunView:
        with self._lock:
            return RunView(self.status, self.step, self.total_steps, self.steps_per_s, self.device,
                           list(self.history), self.snapshot, self.error, self.updated)


@dataclass
class TrainerConfig:
    snapshot_hz: float = 2.0  # live snapshots per second at most (0 = only the saved ones, e.g. headless)
    arrows: bool = True


class Trainer:
    """Trains one pipeline. ``run()`` blocks; call it in a thread and steer it with
    :meth:`stop`, :meth:`pause`, :meth:`resume` and :meth:`step_once`."""

    def __init__(self, pipeline: Pipeline, state: RunState | None = None, config: TrainerConfig | None = None,
                 cache_dir: str | None = None):
        self.p = pipeline
        #: where metrics may cache what they train once (e.g. image feature networks); None = no cache
        self.cache_dir = cache_dir
        self.config = config or TrainerConfig()
        self.state = state or RunState()
        self.state.update(total_steps=self.spec.steps, device=describe(pipeline.device), step=pipeline.step)
        self.callbacks: dict[str, list[Callable[..., Any]]] = defaultdict(list)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._budget = -1  # steps left before pausing again (-1 = unlimited)
        self._in_step = False
        self._buf: torch.Tensor | None = None
        self._keys: list[str] = []
        self._rows = 0
        self._last_snap = 0.0
        self._last_log_time = time.perf_counter()
        self._last_log_step = pipeline.step
        self._metric_gen = make_generator(pipeline.device, stream_seed(self.spec.seed, "metrics"))
        self.metrics = [
            (pipeline.registry.create("metric", m.name, m.params, where=f"metrics.{m.name}"), m.name) for m in self.spec.metrics
        ]
        self.metrics = [(m, n) for m, n in self.metrics if m.applies(pipeline.data)]
        self.last_metrics: dict[str, float] = {}
        self.metric_errors: dict[str, str] = {}  # metric name -> why it failed (it then sits out the run)
        self._scheduled = [
            (opt, role) for opt, role in ((pipeline.opt_g, "generator"), (pipeline.opt_d, "discriminator"))
            if opt is not None and self.spec.optim[role]["schedule"] != "constant"
        ]
        self._live_changes: list[dict[str, Any]] = []  # changes asked for live, applied at the next step boundary
        self._live_lock = threading.Lock()
        #: called before snapshots, metrics and checkpoints read the pipeline (set by a seed ensemble,
        #: which trains stacked copies of the weights); None when the pipeline's own modules train
        self.sync_weights: Callable[[], None] | None = None

    @property
    def spec(self) -> Spec:
        """The run's spec, with every change applied so far in its change log (``pipeline.spec``)."""
        return self.p.spec

    # -- controls -------------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[..., Any]) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events: {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def _fire(self, event: str, *args: Any) -> None:
        for fn in self.callbacks[event]:
            fn(self, *args)

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()
        self._budget = -1
        self.state.update(status="paused")

    def resume(self) -> None:
        self._budget = -1
        self.state.update(status="running")
        self._running.set()

    def step_once(self, n: int = 1) -> None:
        """Run ``n`` steps, then pause again (the UI's Step button)."""
        self._budget = n
        self._running.set()

    def change(self, settings: dict[str, Any]) -> None:
        """Change settings live (``{"optim.generator.lr": 2e-4, "k_d": 2, "objective": "minimax"}``): applied
        at the next step boundary, also while paused (before the next step trains), and added to the spec's
        change log at that step, so that resume and fork reproduce it. Thread-safe. A change that does not
        validate there is refused with the reason in the run's ``error`` (the run goes on)."""
        with self._live_lock:
            self._live_changes.append(dict(settings))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until ``steps`` or stop; returns the final status (finished, stopped, failed).

        The loop is four phases that :class:`explorer.ensemble.Ensemble` also drives, for several
        trainers in lockstep: :meth:`begin`, then per step :meth:`next_turn`, :meth:`train_step`
        and :meth:`end_step`, then :meth:`wrap_up`; :meth:`fail` and :meth:`finish` end it.
        """
        status = "finished"
        try:
            self.begin()
            while self.p.step < self.spec.steps:
                turn = self.next_turn()
                if turn == "stop":
                    status = "stopped"
                    break
                if turn == "wait":
                    continue
                self._in_step = True
                self.train_step()
                self.end_step()
            self.wrap_up(status)
        except (Exception, SystemExit) as exc:  # a component raised (or called sys.exit()): fail this run only
            status = self.fail(exc)
        return self.finish(status)

    def begin(self) -> None:
        """Before the first step: the changes due now, and the starting snapshot of a new run."""
        self.state.update(status="paused" if not self._running.is_set() else "running")
        self._apply_changes()
        if self.p.step == 0:
            self._snapshot(force=True)

    def next_turn(self) -> str:
        """At a step boundary: apply the changes due (the log's and live ones, also while paused), then
        say whether to ``"go"`` (train a step), ``"wait"`` (paused: call again) or ``"stop"``."""
        p = self.p
        self._apply_changes()  # before step p.step + 1 trains
        if self._stop.is_set():
            return "stop"
        if not self._running.is_set():
            if self.state.snapshot is None or self.state.snapshot.step != p.step:
                self._flush_log()
                self._snapshot(force=True)
            self._running.wait(0.1)
            return "wait"
        return "go"

    def end_step(self) -> None:
        """After a step trained: count it, then log, measure, snapshot and checkpoint as the spec says."""
        p, spec = self.p, self.spec
        p.step += 1
        self._in_step = False
        if self._budget > 0:
            self._budget -= 1
            if self._budget == 0:
                self._running.clear()
                self.state.update(status="paused")
        step = p.step
        save_snap = step % spec.snapshot_every == 0
        save_ckpt = bool(spec.checkpoint_every) and step % spec.checkpoint_every == 0
        # Anything saved to disk is checked for non-finite losses first, so a saved file is always a good one.
        if self._rows >= spec.log_every or step == spec.steps or save_snap or save_ckpt:
            self._flush_log()
        if spec.metric_every and step % spec.metric_every == 0:
            self._compute_metrics()
        if save_snap:
            self._snapshot(force=True, save=True)
        else:
            self._snapshot()
        if save_ckpt:
            self._checkpoint()
        self._fire("step_end")

    def wrap_up(self, status: str) -> None:
        """After the last step (or a stop): the last log, metrics, snapshot and checkpoint."""
        p, spec = self.p, self.spec
        if status == "finished":
            self._apply_changes(live=False)  # entries of the log's last step (nothing trains after them)
        self._flush_log()
        if status == "finished" and spec.metric_every and p.step % spec.metric_every != 0:
            self._compute_metrics()
        if p.step % spec.snapshot_every != 0:  # the loop already saved this step's snapshot
            self._snapshot(force=True, save=True)
        if not (spec.checkpoint_every and p.step % spec.checkpoint_every == 0):
            self._checkpoint()

    def fail(self, exc: BaseException) -> str:
        """Record why the run failed (a non-finite loss at its step, or a component's error, named)."""
        p = self.p
        if isinstance(exc, TrainingError):
            p.step = exc.step if isinstance(getattr(exc, "step", None), int) else self.current_step
            self.state.update(error=str(exc))
        else:
            message = self.describe_failure(exc)
            p.step = self.current_step
            self.state.update(error=message)
        return "failed"

    def finish(self, status: str) -> str:
        self._in_step = False
        self._fire("finish", status)  # first, so a run folder says how the run ended before its state does
        self.state.update(status=status, step=self.p.step)
        return status

    def _checkpoint(self) -> None:
        self._sync_weights()
        self._fire("checkpoint")

    def _sync_weights(self) -> None:
        """Bring the pipeline's modules and optimisers up to date before anything reads them (a seed
        ensemble trains stacked copies: :attr:`sync_weights`)."""
        if self.sync_weights is not None:
            self.sync_weights()

    @property
    def current_step(self) -> int:
        """The step being trained, counted from 1 (``pipeline.step`` counts the steps completed): a
        failure inside step k, whether a raised exception or a non-finite loss, is reported as step k,
        and a failed run's ``step`` (its status) is that step."""
        return self.p.step + 1 if self._in_step else self.p.step

    def describe_failure(self, exc: BaseException) -> str:
        info = self.p.registry.blame(exc)
        where = f" in {info.kind} {info.name!r} from plugin {info.source}" if info is not None else ""
        if isinstance(exc, ExplorerError):
            return f"{exc}{where}"
        if isinstance(exc, SystemExit):
            return f"step {self.current_step}: sys.exit({exc.code!r}) called{where}; the run stopped there"
        return f"step {self.current_step}: {type(exc).__name__}{where}: {exc}"

    def train_step(self) -> None:
        """One generator step, preceded by k_d discriminator steps (Goodfellow et al. 2014, Alg. 1)."""
        p, spec = self.p, self.spec
        B = spec.batch_size
        obj = p.objective
        if self._scheduled:
            self._apply_schedule()
        logged: dict[str, torch.Tensor] = {}
        with p.torch_stream.active(), autocast(p.device, spec.precision):
            real = None
            if p.D is not None:
                for _ in range(p.k_d):
                    real = p.sample_real(B)
                    with torch.no_grad():
                        fake = p.G(p.sample_latent(B))
                    d_loss, d_extra = normalise_loss(obj.discriminator_loss(p.D, real, fake), "discriminator_loss")
                    p.opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    p.opt_d.step()
                logged["d_loss"] = d_loss
                logged.update(d_extra)  # from the last of the k_d steps
            if real is None:
                real = p.sample_real(B)
            fake = p.G(p.sample_latent(B))
            g_loss, g_extra = normalise_loss(obj.generator_loss(p.D, real, fake), "generator_loss")
            p.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            p.opt_g.step()
        p.update_ema(p.step + 1)  # the moving average of G (spec ema), after the step it follows
        logged["g_loss"] = g_loss
        logged.update(g_extra)
        self._record(list(logged), [v.detach().float() for v in logged.values()])

    def _apply_schedule(self) -> None:
        """Set each scheduled optimiser's lr for this step (a pure function of the step and the base lr in
        force, so resuming from a checkpoint continues the same schedule). A change of lr changes the base
        from its step on: the cosine keeps its phase and scales to the new lr."""
        t = min(self.p.step / max(1, self.spec.steps), 1.0)
        for opt, role in self._scheduled:
            lr = self.p.lr_base[role] * 0.5 * (1.0 + math.cos(math.pi * t))
            for group in opt.param_groups:
                group["lr"] = lr

    # -- changes --------------------------------------------------------------------------------
    def _apply_changes(self, live: bool = True) -> None:
        """At a step boundary: apply the change log's entries due at this step, then the live changes
        asked for since the last boundary (each added to the change log)."""
        p = self.p
        changes = p.spec.changes
        while p.changes_applied < len(changes) and changes[p.changes_applied]["step"] <= p.step:
            entry = changes[p.changes_applied]
            self._change(entry["set"], live=False)
            p.changes_applied += 1
        if not live or not self._live_changes:
            return
        with self._live_lock:
            asked, self._live_changes = self._live_changes, []
        for settings in asked:
            try:
                if len(p.spec.changes) >= MAX_CHANGES:
                    raise SpecError("changes", f"the run's change log is full ({MAX_CHANGES:,} changes); fork the run "
                                    "to change more")
                resolved = resolve_change(p.spec, settings, p.step, p.registry, where="change")
            except SpecError as exc:
                self.state.update(error=f"change refused at step {p.step:,}: {exc}")
                continue
            p.spec = p.spec.with_change(p.step, resolved)  # after every entry up to this step: all applied
            self._change(resolved, live=True)
            p.changes_applied += 1

    def _change(self, settings: dict[str, Any], live: bool) -> None:
        """Apply one resolved change (:meth:`Pipeline.apply_change`) and record it: a ``change`` record in the
        history and ``metrics.jsonl``; the ``change`` event's ``live`` says whether it is new to the spec."""
        self._flush_log()  # a logged mean never mixes the settings before and after a change
        self.p.apply_change(settings)
        record: dict[str, Any] = {"step": self.p.step, "time": time.time(), "kind": CHANGE, "set": copy.deepcopy(settings)}
        self.state.add_record(record)
        self._fire("change", record, live)

    def _record(self, keys: list[str], vals: list[torch.Tensor]) -> None:
        self.record_row(keys, torch.stack(vals))

    def record_row(self, keys: list[str], row: torch.Tensor) -> None:
        """Buffer one step's logged values (``row[j]`` is ``keys[j]``), on the device: no host sync."""
        if self._buf is None or keys != self._keys:
            self._flush_log()
            self._keys = keys
            self._buf = torch.empty(self.spec.log_every, len(keys), device=self.p.device)
            self._rows = 0
        self._buf[self._rows] = row
        self._rows += 1

    def _flush_log(self) -> None:
        """Read the buffered losses (the one host sync), check them, log their means."""
        if self._buf is None or self._rows == 0:
            return
        rows = self._buf[: self._rows].cpu().numpy()
        n = self._rows
        first_step = self.p.step - n + 1
        self._rows = 0
        bad = ~np.isfinite(rows)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise TrainingError.at(first_step + int(r),
                f"non-finite {self._keys[c]} ({rows[r, c]}) at step {first_step + r}; the run stopped there. "
                "The last good snapshot and checkpoint are kept. Try a smaller learning rate, fp32 precision, "
                "or a different objective."
            )
        now = time.perf_counter()
        steps = self.p.step - self._last_log_step
        rate = steps / max(now - self._last_log_time, 1e-9) if steps > 0 else self.state.steps_per_s
        self._last_log_time, self._last_log_step = now, self.p.step
        record: dict[str, Any] = {"step": self.p.step, "time": time.time(), "kind": LOSS}
        record.update({k: float(v) for k, v in zip(self._keys, rows.mean(0))})
        for k, v in self.p.data.stats().items():
            record[f"data_{k}"] = float(v)
        record["steps_per_s"] = float(rate)
        self.state.add_record(record)
        self.state.update(step=self.p.step, steps_per_s=rate)
        self._fire("log", record)

    def _compute_metrics(self) -> None:
        """One metric pass on a fresh generated sample. A metric that raises fails only itself: its
        error (naming the metric and its plugin) goes into the record's ``errors`` and the run's
        warning, and it is not asked again in this run; the run and the other metrics go on."""
        if not self.metrics:
            return
        self._sync_weights()
        p = self.p
        out: dict[str, float] = {}
        errors: dict[str, str] = {}
        ctx = MetricContext(data=p.data, device=p.device, generator=self._metric_gen, cache_dir=self.cache_dir)
        n_max = max(m.sample_size for m, _ in self.metrics)
        with p.untouched(), torch.no_grad():  # metrics watch: they never change what the run learns
            z = p.latent.sample(n_max, self._metric_gen, p.device)
            fake = p.generate(z)
            real_pool = p.view_real
            for metric, name in self.metrics:
                n = metric.sample_size
                try:
                    real = real_pool if len(real_pool) >= n else torch.cat([real_pool, p.data.sample(n - len(real_pool), self._metric_gen, p.device)])
                    values = {k: float(v) for k, v in metric.compute(real[:n], fake[:n], ctx).items()}
                except Exception as exc:
                    errors[name] = self.describe_failure(exc)
                    continue
                out.update(values)
        if errors:
            self.metrics = [(m, n) for m, n in self.metrics if n not in errors]
            message = "; ".join(f"metric {name!r} failed and is skipped for the rest of this run: {msg}"
                                for name, msg in errors.items())
            self.metric_errors.update(errors)
            self.state.update(error=message)
        record: dict[str, Any] = {"step": p.step, "time": time.time(), "kind": METRIC, **out}
        if errors:
            record["errors"] = errors
        self.last_metrics.update(out)
        self.state.add_record(record)
        self._fire("metrics", record)

    def _snapshot(self, force: bool = False, save: bool = False) -> None:
        now = time.monotonic()
        if not force and (self.config.snapshot_hz <= 0 or now - self._last_snap < 1.0 / self.config.snapshot_hz):
            return
        self._last_snap = now
        self._sync_weights()
        snap = take_snapshot(self.p, self.p.step, arrows=self.config.arrows)
        self.state.update(snapshot=snap, step=self.p.step)
        self._fire("snapshot", snap, save)

