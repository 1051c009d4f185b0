"""RunManager: trains runs in background threads, shared by the whole server (or the CLI).

It owns every run it starts (a closed browser tab never orphans one: any page can find and stop
it), caps how many train at once (``GENEX_MAX_RUNS``; the rest queue and start fairly, taking turns
across owners), and persists each run through its RunStore.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from explorer.errors import ExplorerError, SpecError
from explorer.pipeline import Pipeline
from explorer.registry import Registry, get_registry
from explorer.render import snapshot_png
from explorer.runs import ACTIVE, RunStore, open_run
from explorer.snapshots import snapshot_arrays
from explorer.spec import Spec, resolve, set_path
from explorer.training import RunState, Trainer, TrainerConfig

_live: set[str] = set()
_live_lock = threading.Lock()
HEARTBEAT_EVERY_S = 2.0


def live_run_ids() -> set[str]:
    """Run ids being trained by this process right now."""
    with _live_lock:
        return set(_live)


def attach_store(trainer: Trainer, store: RunStore) -> None:
    """Persist a trainer's logs, metrics, snapshots and checkpoints into its run folder."""
    last_beat = [0.0]

    def on_log(tr: Trainer, record: dict[str, Any]) -> None:
        store.append_metrics(record)
        now = time.monotonic()
        if now - last_beat[0] > HEARTBEAT_EVERY_S:
            last_beat[0] = now
            store.write_status(tr.state.status, step=record["step"], steps_per_s=record.get("steps_per_s"))

    def on_metrics(tr: Trainer, record: dict[str, Any]) -> None:
        store.append_metrics(record)

    def on_snapshot(tr: Trainer, snap: Any, save: bool) -> None:
        if save:
            store.save_snapshot(snap.step, snap.fake, snapshot_png(snap, f"{tr.spec.short_name()} - step {snap.step}"), snapshot_arrays(snap))

    def on_checkpoint(tr: Trainer) -> None:
        store.save_checkpoint(tr.p.state_dict())

    trainer.add_callback("log", on_log)
    trainer.add_callback("metrics", on_metrics)
    trainer.add_callback("snapshot", on_snapshot)
    trainer.add_callback("checkpoint", on_checkpoint)
    trainer.cache_dir = str(store.path.parent / ".cache")  # type: ignore[attr-defined]


def execute(store: RunStore, spec: Spec, state: RunState, registry: Registry | None = None,
            resume_state: dict[str, Any] | None = None, resume_optimizers: bool = True,
            on_trainer: Callable[[Trainer], None] | None = None, config: TrainerConfig | None = None,
            pipeline: Pipeline | None = None) -> str:
    """Build the pipeline and train it in the calling thread, recording everything in ``store``.

    Any failure (a bad spec, a plugin raising, a non-finite loss) marks the run failed with a clear
    message; nothing is raised, nothing already written is lost.
    """
    with _live_lock:
        _live.add(store.id)
    trainer: Trainer | None = None
    try:
        pipeline = pipeline or Pipeline(spec, registry)
        if resume_state is not None:
            pipeline.load_state_dict(resume_state, optimizers=resume_optimizers, rng=resume_optimizers)
        trainer = Trainer(pipeline, state, config)
        attach_store(trainer, store)
        if on_trainer is not None:
            on_trainer(trainer)
        store.write_status("running", run_id=store.id, device=state.device, step=pipeline.step, started=time.time())
        status = trainer.run()
        store.write_status(status, step=pipeline.step, error=state.error, finished=time.time(),
                           final_metrics=dict(trainer.last_metrics))
        return status
    except Exception as exc:
        if isinstance(exc, ExplorerError):
            msg = str(exc)
        else:
            msg = (trainer.describe_failure(exc) if trainer else f"{type(exc).__name__}: {exc}")
        state.update(status="failed", error=msg)
        store.write_status("failed", error=msg, traceback=traceback.format_exc())
        return "failed"
    finally:
        with _live_lock:
            _live.discard(store.id)


@dataclass
class ManagedRun:
    """A run the manager owns: its folder, spec, live state and (once built) its trainer."""

    id: str
    store: RunStore
    spec: Spec
    state: RunState
    owner: str
    resume_state: dict[str, Any] | None = None
    resume_optimizers: bool = True
    trainer: Trainer | None = None
    thread: threading.Thread | None = None
    queued_at: float = field(default_factory=time.time)
    start_paused: bool = False
    stop_requested: bool = False

    @property
    def status(self) -> str:
        # One attribute read (atomic): no need to copy the whole history as RunState.view() does.
        return self.state.status

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def default_max_runs() -> int:
    env = os.environ.get("GENEX_MAX_RUNS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return 4 if torch.cuda.is_available() else max(2, (os.cpu_count() or 2) // 2)


class RunManager:
    """Starts, queues, steers and forgets runs; safe to call from many Streamlit sessions at once."""

    def __init__(self, root: str | Path | None = None, max_concurrent: int | None = None,
                 registry: Registry | None = None, config: TrainerConfig | None = None):
        self.root = root
        self.max_concurrent = max_concurrent or default_max_runs()
        self.registry = registry
        self.config = config
        self._runs: dict[str, ManagedRun] = {}
        self._queue: list[str] = []
        self._training: set[str] = set()  # ids whose thread is training now
        self._served: dict[str, float] = {}  # owner -> when a run of theirs last started
        self._lock = threading.RLock()

    # -- starting -------------------------------------------------------------------------------------
    def start(self, spec: Spec, owner: str = "cli", parent: dict[str, Any] | None = None,
              paused: bool = False, name: str | None = None) -> ManagedRun:
        """Create the run folder and queue the run; it starts as soon as a slot is free."""
        store = RunStore.create(spec.to_dict(), self.root, name=name or spec.short_name(), parent=parent)
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, start_paused=paused)
        return self._enqueue(run)

    def _enqueue(self, run: ManagedRun) -> ManagedRun:
        with self._lock:
            self._runs[run.id] = run
            self._queue.append(run.id)
            self._schedule()
        return run

    def _schedule(self) -> None:
        with self._lock:
            running = [self._runs[i] for i in self._training]
            while self._queue and len(running) < self.max_concurrent:
                per_owner: dict[str, int] = {}
                for r in running:
                    per_owner[r.owner] = per_owner.get(r.owner, 0) + 1
                # Fair share: the owner with the fewest runs training goes first; between equals, the owner
                # served longest ago (round robin), then the oldest queued run.
                def turn(i: str) -> tuple[int, float, float]:
                    owner = self._runs[i].owner
                    return per_owner.get(owner, 0), self._served.get(owner, float("-inf")), self._runs[i].queued_at

                next_id = min(self._queue, key=turn)
                self._queue.remove(next_id)
                run = self._runs[next_id]
                if run.stop_requested:
                    run.state.update(status="stopped")
                    run.store.write_status("stopped")
                    continue
                run.thread = threading.Thread(target=self._work, args=(run,), name=f"genex-run-{run.id}", daemon=True)
                self._training.add(run.id)
                self._served[run.owner] = time.monotonic()
                run.thread.start()
                running.append(run)

    def _work(self, run: ManagedRun) -> None:
        def hold(trainer: Trainer) -> None:
            run.trainer = trainer
            if run.start_paused:
                trainer.pause()
            if run.stop_requested:
                trainer.stop()

        try:
            execute(run.store, run.spec, run.state, self.registry, run.resume_state, run.resume_optimizers, hold, self.config)
        finally:
            run.resume_state = None
            with self._lock:
                self._training.discard(run.id)
                self._schedule()

    # -- steering -------------------------------------------------------------------------------------
    def get(self, run_id: str) -> ManagedRun:
        with self._lock:
            if run_id not in self._runs:
                raise ExplorerError(f"run {run_id!r} is not live in this app; open it from the Runs page")
            return self._runs[run_id]

    def runs(self, owner: str | None = None) -> list[ManagedRun]:
        with self._lock:
            return [r for r in self._runs.values() if owner is None or r.owner == owner]

    def stop(self, run_id: str) -> None:
        run = self.get(run_id)
        run.stop_requested = True
        with self._lock:
            if run_id in self._queue:
                self._queue.remove(run_id)
                run.state.update(status="stopped")
                run.store.write_status("stopped")
        if run.trainer is not None:
            run.trainer.stop()

    def pause(self, run_id: str) -> None:
        run = self.get(run_id)
        run.start_paused = True
        if run.trainer is not None:
            run.trainer.pause()

    def resume(self, run_id: str) -> None:
        run = self.get(run_id)
        run.start_paused = False
        if run.trainer is not None:
            run.trainer.resume()

    def step(self, run_id: str, n: int = 1) -> None:
        run = self.get(run_id)
        if run.trainer is not None:
            run.trainer.step_once(n)

    def stop_all(self, owner: str | None = None, wait: float = 0.0) -> None:
        for run in self.runs(owner):
            if run.active:
                self.stop(run.id)
        deadline = time.time() + wait
        for run in self.runs(owner):
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.time()))

    def forget(self, run_id: str) -> None:
        """Drop a finished run from memory (its folder stays)."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and not run.active:
                del self._runs[run_id]

    # -- history: resume, fork --------------------------------------------------------------------------
    def resume_run(self, run_id: str, owner: str = "cli", extra_steps: int | None = None) -> ManagedRun:
        """Continue a stopped (or interrupted, or finished) run from its checkpoint, in the same folder."""
        store = open_run(run_id, self.root)
        with self._lock:
            if run_id in self._runs and self._runs[run_id].active:
                raise ExplorerError(f"run {run_id} is still running")
        ckpt = store.load_checkpoint(map_location="cpu")
        raw = store.read_spec()
        if extra_steps:
            raw["steps"] = int(ckpt.get("step", 0)) + int(extra_steps)
        spec = resolve(raw, self.registry or get_registry())
        if int(ckpt.get("step", 0)) >= spec.steps:
            raise ExplorerError(f"run {run_id} already reached its {spec.steps} steps; ask for more steps to continue it")
        store.write_status("queued", total_steps=spec.steps)
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, resume_state=ckpt)
        return self._enqueue(run)

    def fork(self, run_id: str, changes: dict[str, Any], owner: str = "cli", name: str | None = None) -> ManagedRun:
        """A new run that starts from another run's checkpoint with changed settings.

        ``changes`` maps dotted spec fields to values (``{"optim.generator.lr": 1e-4}``). The fork records
        its parent (run and step); the weights carry over, the optimiser state too when it still fits.
        """
        parent_store = open_run(run_id, self.root)
        ckpt = parent_store.load_checkpoint(map_location="cpu")
        raw = copy.deepcopy(parent_store.read_spec())
        raw.pop("provenance", None)
        for path, value in changes.items():
            set_path(raw, path, value)
        spec = resolve(raw, self.registry or get_registry())
        step = int(ckpt.get("step", 0))
        if step >= spec.steps:
            raise SpecError("steps", f"the fork starts at step {step}; set steps above that (e.g. {step + 1000})")
        same_optim = raw.get("optim") == parent_store.read_spec().get("optim")
        parent = {"run": parent_store.id, "step": step}
        store = RunStore.create(spec.to_dict(), self.root, name=name or f"{spec.short_name()}-fork", parent=parent)
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, resume_state=ckpt, resume_optimizers=same_optim)
        return self._enqueue(run)


def run_foreground(spec: Spec, out: str | Path | None = None, root: str | Path | None = None,
                   registry: Registry | None = None, progress: Callable[[Trainer], None] | None = None,
                   config: TrainerConfig | None = None) -> tuple[RunStore, RunState]:
    """Train one spec in the calling thread (the CLI): returns its store and final state."""
    pipeline = Pipeline(spec, registry)  # a spec that cannot be built fails here, before any folder is made
    store = RunStore.create(spec.to_dict(), root, name=spec.short_name(), out=out)
    state = RunState(spec.steps)
    execute(store, spec, state, registry, on_trainer=progress, config=config, pipeline=pipeline)
    return store, state
