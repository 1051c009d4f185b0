"""Worker processes: each run the app trains lives in a process of its own.

A Streamlit server runs its page scripts and any thread it starts under one GIL, so a run trained
in a server thread slows down every time a page draws (and the page waits on the run). A worker
process owns one run: it builds the pipeline, trains, and writes the run folder (the source of
truth), while its supervisor (:class:`~explorer.manager.RunManager`) steers it over one pipe and
hears its progress over another:

    supervisor -> worker   ("job", {...}) once, then ("pause",), ("resume",), ("step", n), ("stop",),
                           ("change", {setting: value})
    worker -> supervisor   ("ready", pid), ("state", {field: value}), ("record", {...}),
                           ("snapshot", Snapshot), ("done", status, error)

An ensemble job (``{"kind": "ensemble", ...}``: the seeds of one variant as one batched model,
:mod:`explorer.ensemble`) carries several runs: each of their events and commands is wrapped as
``("member", index, *event)``, then ``("done", "ended", None)`` ends the job.

Neither side waits for the other: the training loop only appends to a queue that a sender thread
drains, and the supervisor reads each worker's pipe in a thread of its own. A worker is a fresh
interpreter (``python -m explorer.worker``), never a fork of a process that has torch or CUDA
initialised; it imports torch and loads the plugins before its job arrives, so a spare one can wait
warm. A worker that dies (killed, a segfault, ``os._exit`` in a plugin, out of memory) closes its
pipe, and the supervisor marks its run failed with the cause. A supervisor that goes away closes
the command pipe, and the worker stops its run cleanly (checkpoint kept, resumable).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # holds explorer/ (and plugins/ in a checkout)
HEARTBEAT_S = 20.0  # a worker rewrites its run's heartbeat this often, also while paused


class Steering:
    """Applies control commands to a trainer, holding those that arrive before the trainer exists.

    The same object steers a run in a worker process (commands from the pipe) and in a thread of
    the supervisor's own process (commands called directly).
    """

    def __init__(self, paused: bool = False) -> None:
        self._lock = threading.Lock()
        self._trainer: Any = None
        self._pending: list[tuple[Any, ...]] = [("pause",)] if paused else []

    def attach(self, trainer: Any) -> None:
        with self._lock:
            self._trainer = trainer
            for cmd in self._pending:
                self._apply(cmd)
            self._pending.clear()

    def command(self, cmd: tuple[Any, ...]) -> None:
        with self._lock:
            if self._trainer is None:
                self._pending.append(cmd)
            else:
                self._apply(cmd)

    def _apply(self, cmd: tuple[Any, ...]) -> None:
        t = self._trainer
        if cmd[0] == "pause":
            t.pause()
        elif cmd[0] == "resume":
            t.resume()
        elif cmd[0] == "step":
            t.step_once(int(cmd[1]))
        elif cmd[0] == "stop":
            t.stop()
        elif cmd[0] == "change":
            t.change(dict(cmd[1]))


def exit_cause(returncode: int | None) -> str:
    """Why a worker ended, in words, from its exit status."""
    if returncode is None:
        return "the worker process stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {"SIGKILL": " (killed: out of memory, or by another program)",
                "SIGSEGV": " (a segmentation fault in native code)", "SIGABRT": " (aborted by native code)"}.get(name, "")
        return f"the worker process training it was killed by {name}{hint}"
    return (f"the worker process training it exited with status {returncode} before the run ended "
            "(a plugin may have called os._exit() or sys.exit(), or the process ran out of memory)")


# -- the supervisor's side ---------------------------------------------------------------------------
class Worker:
    """The supervisor's handle on one worker process (started at once; it loads torch and the plugins,
    then waits for its job)."""

    def __init__(self) -> None:
        r_cmd, w_cmd = os.pipe()
        r_evt, w_evt = os.pipe()
        env = dict(os.environ)
        # The worker imports the same explorer (and built-in plugins) as this process, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "explorer.worker", str(r_cmd), str(w_evt)],
                                         pass_fds=(r_cmd, w_evt), stdin=subprocess.DEVNULL, env=env, cwd=os.getcwd())
        finally:
            os.close(r_cmd)
            os.close(w_evt)
        self.cmd = Connection(w_cmd, readable=False)
        self.events = Connection(r_evt, writable=False)
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, *msg: Any) -> bool:
        """Send a command; False when the worker is gone (its reader reports why)."""
        with self._send_lock:
            try:
                self.cmd.send(msg)
                return True
            except (OSError, ValueError):
                return False

    def recv(self) -> tuple[Any, ...] | None:
        """The next event, or None once the worker has closed its pipe (ended or died)."""
        try:
            return self.events.recv()
        except (EOFError, OSError):
            return None

    def close(self) -> None:
        """Close the command pipe: an idle worker exits, a training one stops its run cleanly."""
        with self._send_lock:
            if not self.cmd.closed:
                self.cmd.close()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class WorkerPool:
    """Hands out worker processes, keeping ``warm`` spares started in advance (a Start then trains at
    once instead of waiting for torch to import)."""

    def __init__(self, warm: int = 0) -> None:
        self.warm = warm
        self._spares: list[Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.fill()

    def fill(self) -> None:
        with self._lock:
            self._spares = [w for w in self._spares if w.alive()]
            while not self._closed and len(self._spares) < self.warm:
                self._spares.append(Worker())

    def take(self) -> Worker:
        with self._lock:
            worker = None
            while self._spares and worker is None:
                w = self._spares.pop(0)
                worker = w if w.alive() else None
        if worker is None:
            worker = Worker()
        if self.warm:
            threading.Thread(target=self.fill, name="genex-worker-spare", daemon=True).start()
        return worker

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for w in spares:
            w.close()
        for w in spares:
            if w.wait(5) is None:
                w.proc.kill()


# -- the worker's side ---------------------------------------------------------------------------------
class _Outbox:
    """Sends events from a thread of its own, so the training loop never waits on the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._pump, name="genex-worker-outbox", daemon=True)
        self._thread.start()

    def put(self, *msg: Any) -> None:
        self._queue.put(msg)

    def _pump(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            try:
                self.conn.send(msg)
            except (OSError, ValueError):
                pass  # the supervisor is gone; the run folder still records everything

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        self.conn.close()


def _forwarding_state(outbox: _Outbox, total_steps: int) -> Any:
    """A RunState that also sends every change to the supervisor."""
    from explorer.training import RunState

    return RunState(total_steps, forward=lambda _state, kind, payload: outbox.put(kind, payload))


def _run_job(job: dict[str, Any], cmd: Connection, outbox: _Outbox) -> None:
    from explorer.device import configure_threads
    from explorer.execute import execute
    from explorer.registry import get_registry
    from explorer.runs import ACTIVE, RunStore
    from explorer.spec import resolve
    from explorer.training import TrainerConfig

    store = RunStore(job["path"])
    steering = Steering(paused=bool(job.get("paused")))

    def listen() -> None:
        while True:
            try:
                msg = cmd.recv()
            except (EOFError, OSError):
                steering.command(("stop",))  # the supervisor went away: end the run cleanly
                return
            steering.command(tuple(msg))

    threading.Thread(target=listen, name="genex-worker-control", daemon=True).start()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            status = (store.read_status() or {}).get("status")
            if status in ACTIVE:
                store.heartbeat()

    threading.Thread(target=beat, name="genex-worker-heartbeat", daemon=True).start()
    configure_threads(int(job.get("share", 1)))
    state = _forwarding_state(outbox, int(job["spec"].get("steps", 0)))
    try:
        registry = get_registry()
        spec = resolve(job["spec"], registry)
    except Exception as exc:  # e.g. a plugin this worker cannot load
        msg = f"the worker could not build the run's spec: {exc}"
        store.write_status("failed", error=msg)
        state.update(status="failed", error=msg)
        status = "failed"
    else:
        status = execute(store, spec, state, registry, resume_optimizers=bool(job.get("resume_optimizers", True)),
                         on_trainer=steering.attach, config=TrainerConfig(**job.get("config", {})),
                         resume_from=job.get("resume_from"))
    done.set()
    outbox.put("done", status, state.error)


class _Tagged:
    """The outbox of one seed of an ensemble job: its events go out as ``("member", index, *event)``."""

    def __init__(self, outbox: _Outbox, index: int) -> None:
        self.outbox = outbox
        self.index = index

    def put(self, *msg: Any) -> None:
        self.outbox.put("member", self.index, *msg)


def _run_ensemble_job(job: dict[str, Any], cmd: Connection, outbox: _Outbox) -> None:
    """The seeds of one variant as one batched model (:mod:`explorer.ensemble`), each in its folder
    (``job["paths"]``); commands come as ``("member", index, *command)``. Seeds that cannot be batched
    train here one after another, and the reason goes to the supervisor (``("note", reason)``) and
    into each run's status (``vectorise_note``)."""
    from explorer import ensemble
    from explorer.device import configure_threads
    from explorer.registry import get_registry
    from explorer.runs import ACTIVE, RunStore
    from explorer.spec import resolve
    from explorer.training import TrainerConfig

    stores = [RunStore(p) for p in job["paths"]]
    steerings = [Steering() for _ in stores]

    def listen() -> None:
        while True:
            try:
                msg = cmd.recv()
            except (EOFError, OSError):
                for s in steerings:  # the supervisor went away: end every seed cleanly
                    s.command(("stop",))
                return
            if msg[0] == "member" and 0 <= int(msg[1]) < len(steerings):
                steerings[int(msg[1])].command(tuple(msg[2:]))

    threading.Thread(target=listen, name="genex-worker-control", daemon=True).start()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            for store in stores:
                if (store.read_status() or {}).get("status") in ACTIVE:
                    store.heartbeat()

    threading.Thread(target=beat, name="genex-worker-heartbeat", daemon=True).start()
    configure_threads(int(job.get("share", 1)))
    states = [_forwarding_state(_Tagged(outbox, i), int(s.get("steps", 0))) for i, s in enumerate(job["specs"])]  # type: ignore[arg-type]
    config = TrainerConfig(**job.get("config", {}))
    try:
        registry = get_registry()
        specs = [resolve(s, registry) for s in job["specs"]]
        ensemble.train_here(specs, stores, states, [s.attach for s in steerings], registry, config,
                            on_fallback=lambda reason: outbox.put("note", reason))
    except Exception as exc:  # a spec this worker cannot build: each seed says so, in its folder first
        msg = f"the worker could not build the runs' specs: {exc}"
        for store, state in zip(stores, states):
            store.write_status("failed", error=msg)
            state.update(status="failed", error=msg)
    done.set()
    for i, state in enumerate(states):
        outbox.put("member", i, "done", state.status, state.error)
    outbox.put("done", "ended", None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd = Connection(int(args[0]), writable=False)
    outbox = _Outbox(Connection(int(args[1]), readable=False))
    # Everything a run needs, imported before the job arrives (a spare worker waits warm).
    import torch

    import explorer.execute  # noqa: F401  (the pipeline, the trainer, the run folder)
    from explorer.registry import get_registry

    get_registry()
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # the first optimiser imports torch._dynamo: seconds
    outbox.put("ready", os.getpid())
    try:
        msg = cmd.recv()
    except (EOFError, OSError):
        outbox.close()
        return 0  # a spare that was never needed
    if msg[0] == "job":
        (_run_ensemble_job if msg[1].get("kind") == "ensemble" else _run_job)(msg[1], cmd, outbox)
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
