"""Train one run into its folder: the body shared by ``genex run``, the app's worker processes and
the in-process (thread) backend.

The trainer's events are persisted through the run's :class:`~explorer.runs.RunStore` (the source
of truth); a failure of any kind marks the run failed with a clear message and loses nothing
already written.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable

from explorer.errors import ExplorerError, PluginError
from explorer.pipeline import Pipeline
from explorer.registry import Registry, get_registry
from explorer.render import snapshot_png
from explorer.runs import RunStore, mark_live
from explorer.snapshots import snapshot_arrays
from explorer.spec import Spec
from explorer.training import RunState, Trainer, TrainerConfig

HEARTBEAT_EVERY_S = 2.0


def attach_store(trainer: Trainer, store: RunStore) -> None:
    """Persist a trainer's logs, metrics, changes of settings, snapshots and checkpoints into its run folder."""
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

    def on_change(tr: Trainer, record: dict[str, Any], live: bool) -> None:
        if live:  # new to the spec: spec.json's change log gets it first (resume and fork reproduce it)
            store.append_change(record["step"], record["set"])
        store.append_metrics(record)

    def on_finish(tr: Trainer, status: str) -> None:
        store.write_status(status, step=tr.p.step, error=tr.state.error, finished=time.time(),
                           final_metrics=dict(tr.last_metrics))

    trainer.add_callback("log", on_log)
    trainer.add_callback("metrics", on_metrics)
    trainer.add_callback("snapshot", on_snapshot)
    trainer.add_callback("checkpoint", on_checkpoint)
    trainer.add_callback("change", on_change)
    trainer.add_callback("finish", on_finish)


def execute(store: RunStore, spec: Spec, state: RunState, registry: Registry | None = None,
            resume_state: dict[str, Any] | None = None, resume_optimizers: bool = True,
            on_trainer: Callable[[Trainer], None] | None = None, config: TrainerConfig | None = None,
            pipeline: Pipeline | None = None, resume_from: str | Path | None = None) -> str:
    """Build the pipeline and train it in the calling thread, recording everything in ``store``.

    ``resume_state`` is a checkpoint already loaded; ``resume_from`` a run folder whose checkpoint
    to load here (so a supervisor never holds it in memory). Any failure (a bad spec, a plugin
    raising, a non-finite loss, a missing checkpoint) marks the run failed with a clear message;
    nothing is raised, nothing already written is lost.
    """
    mark_live(store.id)
    trainer: Trainer | None = None
    try:
        if resume_from is not None:
            resume_state = RunStore(resume_from).load_checkpoint(map_location="cpu")
        pipeline = pipeline or Pipeline(spec, registry)
        if resume_state is not None:
            pipeline.load_state_dict(resume_state, optimizers=resume_optimizers, rng=resume_optimizers)
            resume_state = None  # the pipeline holds its own copy now
        trainer = Trainer(pipeline, state, config, cache_dir=str(store.path.parent / ".cache"))
        attach_store(trainer, store)
        if on_trainer is not None:
            on_trainer(trainer)
        store.write_status("running", run_id=store.id, device=state.device, step=pipeline.step, started=time.time())
        return trainer.run()  # on_finish writes how it ended
    except (Exception, SystemExit) as exc:  # a component may call sys.exit() while it is built: fail this run only
        if isinstance(exc, ExplorerError):
            msg = str(exc)
        elif trainer is not None:
            msg = trainer.describe_failure(exc)
        elif isinstance(exc, SystemExit):
            msg = _exit_while_building(exc, registry)
        else:
            msg = f"{type(exc).__name__}: {exc}"
        store.write_status("failed", error=msg, traceback=traceback.format_exc())
        state.update(status="failed", error=msg)
        return "failed"
    finally:
        mark_live(store.id, False)


def _exit_while_building(exc: SystemExit, registry: Registry | None) -> str:
    info = (registry or get_registry()).blame(exc)
    where = f" in {info.kind} {info.name!r} from plugin {info.source}" if info is not None else ""
    return f"sys.exit({exc.code!r}) called{where} while the pipeline was built; the run did not start"


def run_foreground(spec: Spec, out: str | Path | None = None, root: str | Path | None = None,
                   registry: Registry | None = None, progress: Callable[[Trainer], None] | None = None,
                   config: TrainerConfig | None = None) -> tuple[RunStore, RunState]:
    """Train one spec in the calling thread (the CLI): returns its store and final state."""
    try:
        pipeline = Pipeline(spec, registry)  # a spec that cannot be built fails here, before any folder is made
    except SystemExit as exc:
        raise PluginError(_exit_while_building(exc, registry)) from None
    store = RunStore.create(spec.to_dict(), root, name=spec.short_name(), out=out)
    state = RunState(spec.steps)
    execute(store, spec, state, registry, on_trainer=progress, config=config, pipeline=pipeline)
    return store, state
