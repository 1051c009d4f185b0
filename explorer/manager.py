"""RunManager: supervises the runs of a server (or of `genex compare`), each in a worker process.

It owns every run it starts (a closed browser tab never orphans one: any page can find and stop
it), caps how many train at once (``GENEX_MAX_RUNS``; the rest queue and start fairly, taking turns
across owners), and steers each run over its worker's control channel (:mod:`explorer.worker`);
the worker writes the run folder, and its progress (status, log records, the latest snapshot)
streams back into the run's :class:`~explorer.training.RunState` for the pages to read.

Runs train in worker processes when the plugins can be loaded there, that is when the manager
uses the installed plugins. A registry built in code (a test, a notebook) exists only in this
process, so its runs train in threads here instead (``backend="thread"``, also selectable with
``GENEX_WORKERS=thread``).

A *group* of runs (:meth:`RunManager.start_group`) is trained together by one driver function that the
caller gives: runs on a Ray cluster (:func:`explorer.ray_backend.group_trainer`), or a seed ensemble
trained as one vectorised pipeline. The manager makes their folders and live states, lists them like
any other run, routes Stop (and whatever else the driver declares it handles) to the driver, and marks
any run the driver leaves unfinished as failed.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from explorer.errors import ExplorerError, SpecError
from explorer.registry import Registry, get_registry, is_installed
from explorer.runs import ACTIVE, RunStore, mark_live, open_run
from explorer.spec import CHANGEABLE, MAX_CHANGES, Spec, resolve, resolve_change, set_path
from explorer.training import RunState, TrainerConfig
from explorer.worker import Steering, Worker, WorkerPool, exit_cause

BACKENDS = ("process", "thread")


@dataclass
class ManagedRun:
    """A run the manager owns: its folder, spec, live state (a copy fed by its worker) and its channel."""

    id: str
    store: RunStore
    spec: Spec
    state: RunState
    owner: str
    resume_from: Path | None = None  # the run folder whose checkpoint the run starts from (resume, fork)
    resume_optimizers: bool = True
    queued_at: float = field(default_factory=time.time)
    start_paused: bool = False
    stop_requested: bool = False
    backend: str = "process"
    worker: Worker | None = None
    steering: Steering | None = None
    thread: threading.Thread | None = None  # the worker's reader, or the training thread
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # commands sent before it started
    changes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # live changes sent: (step then, settings)
    group: RunGroup | None = None  # the group it trains in (start_group), else None
    on_command: Callable[[tuple[Any, ...]], None] | None = None  # a group driver's control handler (attach_driver)
    note: str | None = None  # what its driver has to say about how it trains (e.g. why it was not vectorised)
    _command_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def status(self) -> str:
        # One attribute read (atomic): no need to copy the whole history as RunState.view() does.
        return self.state.status

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def started(self) -> bool:
        return self.worker is not None or self.steering is not None or self.on_command is not None

    def command(self, *cmd: Any) -> None:
        """Send a control command (pause, resume, step, stop, change); held until the run starts."""
        if self.worker is not None:
            self.worker.send(*cmd)
        elif self.steering is not None:
            self.steering.command(cmd)
        else:
            with self._command_lock:  # never lost between a group driver's attach_driver and this
                if self.on_command is not None:
                    self.on_command(cmd)
                else:
                    self.pending.append(cmd)

    def attach_driver(self, on_command: Callable[[tuple[Any, ...]], None]) -> None:
        """For a group's driver: take this run's control commands from now on (``("stop",)``, ...),
        first those sent while it had none, in order. ``on_command`` is called under a lock, from the
        thread that sent the command: it must be quick (set a flag) and never call :meth:`command`."""
        with self._command_lock:
            for cmd in self.pending:
                on_command(cmd)
            self.pending.clear()
            self.on_command = on_command


@dataclass
class RunGroup:
    """Runs trained together by one driver (:meth:`RunManager.start_group`)."""

    runs: list[ManagedRun]
    train: Callable[[list[ManagedRun]], None]
    backend: str
    slots: int = 1
    commands: tuple[str, ...] = ("stop",)
    thread: threading.Thread | None = None

    @property
    def leader(self) -> ManagedRun:
        """The run that stands for the group in the manager's queue."""
        return self.runs[0]


#: what each control command is called in a refusal
COMMAND_WORDS = {"pause": "pause", "resume": "resume", "step": "step", "change": "change settings", "stop": "stop"}


def inherited_changes(changes: Any, step: int, overridden: list[str]) -> Any:
    """A fork's change log: its parent's entries up to ``step``, less the settings whose dotted path
    overlaps one in ``overridden`` (the fork sets them itself); entries left empty are dropped."""
    if not isinstance(changes, list):
        return changes  # the spec check names what is wrong with it

    def overlaps(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in overridden)

    out = []
    for entry in changes:
        if not isinstance(entry, dict) or not isinstance(entry.get("set"), dict):
            out.append(entry)
            continue
        if isinstance(entry.get("step"), int) and entry["step"] > step:
            continue
        kept = {k: v for k, v in entry["set"].items() if not (isinstance(k, str) and overlaps(k))}
        if kept:
            out.append({**entry, "set": kept})
    return out


def _follow(state: RunState, event: tuple[Any, ...]) -> None:
    """Apply one of a worker's progress events (``state``, ``record``, ``snapshot``) to a run's live state."""
    kind = event[0]
    if kind == "state":
        state.update(**event[1])
    elif kind == "record":
        state.add_record(event[1])
    elif kind == "snapshot":
        state.update(snapshot=event[1])


def _note_fallback(runs: Sequence[ManagedRun], reason: str) -> None:
    """The seeds of an ensemble that could not be batched say why (the Compare page shows it)."""
    for run in runs:
        run.note = f"trained one after another, not as one batched model: {reason}"


def default_max_runs() -> int:
    env = os.environ.get("GENEX_MAX_RUNS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return 4 if torch.cuda.is_available() else max(2, (os.cpu_count() or 2) // 2)


class RunManager:
    """Starts, queues, steers and forgets runs; safe to call from many Streamlit sessions at once.

    ``backend`` is ``"process"`` (a worker process per run; the default where the plugins can be
    loaded in one) or ``"thread"``; ``warm`` worker processes are kept started ahead of need.
    """

    def __init__(self, root: str | Path | None = None, max_concurrent: int | None = None,
                 registry: Registry | None = None, config: TrainerConfig | None = None,
                 backend: str | None = None, warm: int = 0):
        self.root = root
        self.max_concurrent = max_concurrent or default_max_runs()
        self.registry = registry
        self.config = config
        backend = backend or os.environ.get("GENEX_WORKERS") or "process"
        if backend not in BACKENDS:
            raise ExplorerError(f"unknown run backend {backend!r}; choose one of: {', '.join(BACKENDS)} (GENEX_WORKERS)")
        self.backend = backend
        self._runs: dict[str, ManagedRun] = {}
        self._queue: list[str] = []
        self._training: set[str] = set()  # ids whose worker (or thread) is training now
        self._served: dict[str, float] = {}  # owner -> when a run of theirs last started
        self._lock = threading.RLock()
        self._pool = WorkerPool(warm if backend == "process" else 0)

    def _backend_for_run(self) -> str:
        """Worker processes load the installed plugins; a registry built in code lives only here."""
        if self.backend == "thread":
            return "thread"
        registry = self.registry or get_registry()
        return "process" if is_installed(registry) else "thread"

    # -- starting -------------------------------------------------------------------------------------
    def start(self, spec: Spec, owner: str = "cli", parent: dict[str, Any] | None = None,
              paused: bool = False, name: str | None = None) -> ManagedRun:
        """Create the run folder and queue the run; it starts as soon as a slot is free."""
        store = RunStore.create(spec.to_dict(), self.root, name=name or spec.short_name(), parent=parent)
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, start_paused=paused)
        return self._enqueue(run)

    def start_group(self, specs: Sequence[Spec], owner: str, names: Sequence[str],
                    train: Callable[[list[ManagedRun]], None], backend: str, slots: int = 1,
                    commands: Sequence[str] = ("stop",)) -> list[ManagedRun]:
        """Runs trained together by one driver: ``train(runs)`` is called once, in a thread of its own.

        Here: each run's folder (``names[i]``, as :meth:`start` names it) and :class:`ManagedRun` (status
        ``queued``, ``backend`` as given, e.g. ``"ray"`` or ``"vectorised"``), registered at once, so
        :meth:`get`, the Compare page and the Runs page see them like any other run. The driver writes the
        run folders and keeps each ``run.state`` up to date (``status``, ``step``, ``steps_per_s``,
        records through ``add_record``, ``snapshot``): a run's folder first, then its state, as the
        trainer does. It takes each run's commands with :meth:`ManagedRun.attach_driver` (those sent
        before are held in ``run.pending`` and delivered then, in order); the manager refuses at once
        any command not in ``commands`` (an ExplorerError naming the backend), so ``"stop"`` should be
        there and must end the run (``stopped``, or ``interrupted`` at its last checkpoint). The
        manager marks each run live (:func:`~explorer.runs.mark_live`) while ``train`` runs; when it
        returns or raises, every run of the group still queued, running or paused is marked failed with
        the reason, folder first, then state.

        Slots: the group takes ``slots`` of :attr:`max_concurrent` (at most all of them) for as long as
        ``train`` runs, on its first run, whatever the number of runs: a group trained by one local
        process (a vectorised seed ensemble) counts as one run, the default. It waits in the queue, in
        fair turn with single runs, until that many slots are free. ``slots=0`` is for runs that use no
        local slot (a Ray cluster trains them): ``train`` starts at once and other runs never wait for it.
        """
        specs, names = list(specs), list(names)
        if not specs or len(names) != len(specs):
            raise ValueError(f"start_group needs one name per spec (got {len(specs)} specs, {len(names)} names)")
        runs = []
        for spec, name in zip(specs, names):
            store = RunStore.create(spec.to_dict(), self.root, name=name or spec.short_name())
            runs.append(ManagedRun(store.id, store, spec, RunState(spec.steps), owner, backend=backend))
        group = RunGroup(runs, train, backend, max(0, int(slots)), tuple(commands))
        with self._lock:
            for run in runs:
                run.group = group
                self._runs[run.id] = run
            if group.slots == 0:
                self._launch_group(group)
            else:
                self._queue.append(group.leader.id)
                self._schedule()
        return runs

    def start_ensemble(self, specs: Sequence[Spec], owner: str, names: Sequence[str]) -> list[ManagedRun]:
        """The seeds of one variant (specs equal but for the seed) trained as one batched model
        (:mod:`explorer.ensemble`) by one worker process, one slot for them all; each seed its own run
        and folder. Stop works per seed; pause, step and changes are refused (the seeds step together).
        Seeds that cannot be batched train in that worker one after another, and each run's ``note``
        says why."""
        return self.start_group(specs, owner, names, self._train_ensemble, backend="vectorised", slots=1)

    def _train_ensemble(self, runs: list[ManagedRun]) -> None:
        """The driver of :meth:`start_ensemble`: one worker process (or, with an in-code registry, this
        process) trains the seeds; its tagged events feed each run's state."""
        if self._backend_for_run() == "thread":
            self._train_ensemble_here(runs)
            return
        worker = self._pool.take()
        worker.send("job", {"kind": "ensemble", "paths": [str(r.store.path) for r in runs],
                            "specs": [r.spec.to_dict() for r in runs], "share": self.max_concurrent,
                            "config": vars(self.config) if self.config is not None else {}})
        for i, run in enumerate(runs):
            run.attach_driver(lambda cmd, i=i: worker.send("member", i, *cmd))
        ended: set[int] = set()
        while (msg := worker.recv()) is not None:
            if msg[0] == "note":
                _note_fallback(runs, msg[1])
            if msg[0] != "member" or not 0 <= msg[1] < len(runs):
                continue
            run, event = runs[msg[1]], msg[2:]
            if event[0] == "done":
                ended.add(msg[1])
                if run.state.status in ACTIVE:  # trust the worker's word over a lost state message
                    run.state.update(status=event[1], error=event[2])
            else:
                _follow(run.state, event)
        returncode = worker.wait(10)
        worker.close()
        if len(ended) < len(runs):
            raise ExplorerError(f"{exit_cause(returncode)}. Everything up to each run's last checkpoint is kept: "
                                "resume it from the Runs page.")

    def _train_ensemble_here(self, runs: list[ManagedRun]) -> None:
        from explorer import ensemble

        steerings = [Steering() for _ in runs]
        for run, steering in zip(runs, steerings):
            run.attach_driver(steering.command)
        ensemble.train_here([r.spec for r in runs], [r.store for r in runs], [r.state for r in runs],
                            [s.attach for s in steerings], self.registry, self.config,
                            on_fallback=lambda reason: _note_fallback(runs, reason))

    def _launch_group(self, group: RunGroup) -> int:
        """Start a group's driver thread; returns the slots it takes. Under the lock."""
        runs = group.runs
        if all(r.stop_requested for r in runs):  # every run was stopped while the group waited: nothing to train
            for r in runs:
                r.store.write_status("stopped")
                r.state.update(status="stopped")
            return 0
        if group.slots:
            self._training.update(r.id for r in runs)
            self._served[group.leader.owner] = time.monotonic()
        group.thread = threading.Thread(target=self._train_group, args=(group,), name=f"genex-group-{group.leader.id}",
                                        daemon=True)
        for r in runs:
            r.thread = group.thread
        group.thread.start()
        return self._slots_of(group.leader) if group.slots else 0

    def _train_group(self, group: RunGroup) -> None:
        for run in group.runs:
            mark_live(run.id)
        reason = f"its {group.backend} driver ended without finishing it"
        try:
            group.train(list(group.runs))
        except Exception as exc:  # the driver's own failure: every run it left unfinished says why
            why = str(exc) if isinstance(exc, ExplorerError) else f"{type(exc).__name__}: {exc}"
            reason = f"its {group.backend} driver failed: {why}"
        finally:
            for run in group.runs:
                if run.active:
                    self._fail(run, reason)
                run.state.update(history=[])  # the run folders hold the whole history now
                mark_live(run.id, False)
            with self._lock:
                self._training.difference_update(r.id for r in group.runs)
                self._schedule()

    def _refuse_unless_driver_can(self, run: ManagedRun, command: str) -> None:
        group = run.group
        if group is not None and command not in group.commands:
            can = " and ".join(COMMAND_WORDS.get(c, c) for c in group.commands) or "nothing"
            raise ExplorerError(f"run {run.id} trains on the {group.backend} backend, which cannot "
                                f"{COMMAND_WORDS.get(command, command)} a run while it trains (it can {can}); "
                                "stop it, then resume or fork it here from its last checkpoint")

    def _enqueue(self, run: ManagedRun) -> ManagedRun:
        run.backend = self._backend_for_run()
        with self._lock:
            self._runs[run.id] = run
            self._queue.append(run.id)
            self._schedule()
        return run

    def _slots_of(self, run: ManagedRun) -> int:
        """The slots of ``max_concurrent`` a run takes while it trains: 1; a group's slots all on its leader."""
        if run.group is None:
            return 1
        return min(run.group.slots, self.max_concurrent) if run is run.group.leader else 0

    def _schedule(self) -> None:
        with self._lock:
            running = [self._runs[i] for i in self._training]
            used = sum(self._slots_of(r) for r in running)
            while self._queue and used < self.max_concurrent:
                per_owner: dict[str, int] = {}
                for r in running:
                    per_owner[r.owner] = per_owner.get(r.owner, 0) + self._slots_of(r)
                # Fair share: the owner with the fewest runs training goes first; between equals, the owner
                # served longest ago (round robin), then the oldest queued run.
                def turn(i: str) -> tuple[int, float, float]:
                    owner = self._runs[i].owner
                    return per_owner.get(owner, 0), self._served.get(owner, float("-inf")), self._runs[i].queued_at

                next_id = min(self._queue, key=turn)
                run = self._runs[next_id]
                if used + self._slots_of(run) > self.max_concurrent:
                    break  # a group waits for all its slots; nothing overtakes it, so it never starves
                self._queue.remove(next_id)
                if run.group is not None:
                    taken = self._launch_group(run.group)
                    if taken:
                        used += taken
                        running.append(run)
                    continue
                if run.stop_requested:
                    run.store.write_status("stopped")
                    run.state.update(status="stopped")
                    continue
                self._training.add(run.id)
                self._served[run.owner] = time.monotonic()
                try:
                    self._launch(run)
                except Exception as exc:  # e.g. no process could be started (out of memory, too many processes)
                    self._training.discard(run.id)
                    self._fail(run, f"could not start the run's worker: {type(exc).__name__}: {exc}")
                    continue
                running.append(run)
                used += 1

    def _launch(self, run: ManagedRun) -> None:
        """Start ``run``: hand it to a worker process (or a thread), then pass on the commands it got while queued."""
        if run.backend == "process":
            run.worker = self._pool.take()
            run.worker.send("job", {
                "path": str(run.store.path), "spec": run.spec.to_dict(), "paused": run.start_paused,
                "resume_from": str(run.resume_from) if run.resume_from else None,
                "resume_optimizers": run.resume_optimizers, "share": self.max_concurrent,
                "config": vars(self.config) if self.config is not None else {},
            })
            target = self._supervise
        else:
            run.steering = Steering(paused=run.start_paused)
            target = self._train_here
        for cmd in run.pending:
            run.command(*cmd)
        run.pending.clear()
        run.thread = threading.Thread(target=target, args=(run,), name=f"genex-run-{run.id}", daemon=True)
        run.thread.start()

    def _supervise(self, run: ManagedRun) -> None:
        """Read a worker's events into the run's state until the worker ends; if it died, say why."""
        worker = run.worker
        assert worker is not None
        done = None
        while (msg := worker.recv()) is not None:
            if msg[0] == "done":
                done = msg
            else:
                _follow(run.state, msg)
        returncode = worker.wait(10)
        worker.close()
        if done is None:
            where = f" at step {run.state.step:,}" if run.state.step else ""
            self._fail(run, f"{exit_cause(returncode)}{where}. Everything up to its last checkpoint is kept: "
                            "resume it from the Runs page.")
        elif run.state.status in ACTIVE:  # the worker said it ended; trust that over a lost state message
            run.state.update(status=done[1], error=done[2])
        self._finished(run)

    def _train_here(self, run: ManagedRun) -> None:
        from explorer.execute import execute  # the pipeline, trainer and renderer: only where a run trains

        assert run.steering is not None
        try:
            execute(run.store, run.spec, run.state, self.registry, resume_from=run.resume_from,
                    resume_optimizers=run.resume_optimizers, on_trainer=run.steering.attach, config=self.config)
        finally:
            self._finished(run)

    def _finished(self, run: ManagedRun) -> None:
        # The run folder holds the whole history now; a long-lived server keeps only the latest state.
        run.state.update(history=[])
        with self._lock:
            self._training.discard(run.id)
            self._schedule()

    @staticmethod
    def _fail(run: ManagedRun, message: str) -> None:
        run.store.write_status("failed", error=message, step=run.state.step)
        run.state.update(status="failed", error=message)

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
        self._refuse_unless_driver_can(run, "stop")
        with self._lock:
            run.stop_requested = True
            if run.group is not None:  # its driver ends it (a group still queued gets it as it starts)
                if run.active:
                    run.command("stop")
                return
            if run_id in self._queue:
                self._queue.remove(run_id)
                run.store.write_status("stopped")
                run.state.update(status="stopped")
                return
            run.command("stop")

    def pause(self, run_id: str) -> None:
        run = self.get(run_id)
        self._refuse_unless_driver_can(run, "pause")
        with self._lock:
            run.start_paused = True
            if run.started or run.group is not None:  # a group's driver gets it as it attaches
                run.command("pause")
                if run.status == "running":
                    run.state.update(status="paused")  # the worker confirms; the page need not wait for it

    def resume(self, run_id: str) -> None:
        run = self.get(run_id)
        self._refuse_unless_driver_can(run, "resume")
        with self._lock:
            run.start_paused = False
            if run.started or run.group is not None:  # a group's driver gets it as it attaches
                run.command("resume")
                if run.status == "paused":
                    run.state.update(status="running")

    def step(self, run_id: str, n: int = 1) -> None:
        """Train ``n`` steps, then pause (a queued run does so as soon as it starts)."""
        run = self.get(run_id)
        self._refuse_unless_driver_can(run, "step")
        with self._lock:
            run.command("step", int(n))

    def change(self, run_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change settings of a live run: ``{"optim.generator.lr": 2e-4, "k_d": 2, "objective": "minimax"}``
        (what can change: :data:`explorer.spec.CHANGEABLE`; values as in a spec's change log).

        Checked here against the run's spec (a SpecError naming the bad setting; an ExplorerError when the
        run is not live), then sent over the run's control channel: the run applies it at its next step
        boundary N (a paused run at once, before its next step; a queued run as it starts, in the order
        sent), adds ``{"step": N, "set": ...}`` to its spec's change log on disk (so resume and fork
        reproduce it) and records a ``change`` record in its history and metrics.jsonl. Returns the
        settings as resolved (the objective as a full table).
        """
        run = self.get(run_id)
        self._refuse_unless_driver_can(run, "change")
        with self._lock:
            if not run.active or run.stop_requested:
                raise ExplorerError(f"run {run_id} is {'stopping' if run.active else run.status}: settings change only "
                                    "while a run is live (queued, running or paused); fork it to go on with changed settings")
            step = int(run.state.step)
            if step >= run.spec.steps:
                raise ExplorerError(f"run {run_id} has trained all its {run.spec.steps:,} steps; nothing is left to change")
            if len(run.spec.changes) + len(run.changes) >= MAX_CHANGES:
                raise ExplorerError(f"run {run_id}'s change log is full ({MAX_CHANGES:,} changes); fork the run to change more")
            if not isinstance(settings, Mapping):
                raise SpecError("change", f"expected a table of settings ({', '.join(CHANGEABLE)}), got {type(settings).__name__}")
            spec = run.spec
            for at, earlier in run.changes:  # what this manager already sent, as the run will hold it
                spec = spec.with_change(max(at, 0), earlier)
            resolved = resolve_change(spec, dict(settings), step, self.registry or get_registry(), where="change")
            run.changes.append((step, resolved))
            run.command("change", copy.deepcopy(dict(settings)))
        return resolved

    def stop_all(self, owner: str | None = None, wait: float = 0.0) -> None:
        for run in self.runs(owner):
            if run.active and (run.group is None or "stop" in run.group.commands):
                self.stop(run.id)
        deadline = time.time() + wait
        for run in self.runs(owner):
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.time()))

    def close(self, wait: float = 10.0) -> None:
        """Stop every run cleanly (checkpoints kept, resumable) and end the spare workers."""
        self.stop_all(None, wait)
        self._pool.close()

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
        step = int(ckpt.get("step", 0))
        del ckpt  # the run loads it itself when it starts
        if extra_steps:
            raw["steps"] = step + int(extra_steps)
            if isinstance(raw.get("changes"), list):  # entries past the new end are never reached in this continuation
                raw["changes"] = [c for c in raw["changes"] if not (isinstance(c, dict) and isinstance(c.get("step"), int)
                                                                    and c["step"] > raw["steps"])]
        spec = resolve(raw, self.registry or get_registry())
        if step >= spec.steps:
            raise ExplorerError(f"run {run_id} already reached its {spec.steps} steps; ask for more steps to continue it")
        store.write_status("queued", total_steps=spec.steps, step=step)
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, resume_from=store.path)
        run.state.update(step=step)
        return self._enqueue(run)

    def fork(self, run_id: str, changes: dict[str, Any], owner: str = "cli", name: str | None = None) -> ManagedRun:
        """A new run that starts from another run's checkpoint with changed settings.

        ``changes`` maps dotted spec fields to values (``{"optim.generator.lr": 1e-4}``). The fork records
        its parent (run and step); the weights carry over, the optimiser state too when it still fits.
        The fork inherits its parent's change log up to its step only (those settings are in force when it
        starts), less the settings ``changes`` sets: the fork's own values are in force from its start.
        """
        parent_store = open_run(run_id, self.root)
        ckpt = parent_store.load_checkpoint(map_location="cpu")
        step = int(ckpt.get("step", 0))
        del ckpt
        raw = copy.deepcopy(parent_store.read_spec())
        raw.pop("provenance", None)
        for path, value in changes.items():
            set_path(raw, path, value)
        if "changes" in raw:
            raw["changes"] = inherited_changes(raw["changes"], step, list(changes))
        registry = self.registry or get_registry()
        if raw.get("changes"):
            bare = resolve({k: v for k, v in raw.items() if k != "changes"}, registry)
            if not bare.needs_discriminator:  # the fork trains no discriminator: its inherited lr changes go
                raw["changes"] = inherited_changes(raw["changes"], step, ["optim.discriminator"])
        spec = resolve(raw, registry)
        if step >= spec.steps:
            raise SpecError("steps", f"the fork starts at step {step}; set steps above that (e.g. {step + 1000})")
        same_optim = raw.get("optim") == parent_store.read_spec().get("optim")
        parent = {"run": parent_store.id, "step": step}
        store = RunStore.create(spec.to_dict(), self.root, name=name or f"{spec.short_name()}-fork", parent=parent)
        store.write_status("queued", step=step)  # it starts where its parent was, not at 0, from the first listing
        run = ManagedRun(store.id, store, spec, RunState(spec.steps), owner, resume_from=parent_store.path,
                         resume_optimizers=same_optim)
        run.state.update(step=step)
        return self._enqueue(run)
