"""Comparisons on a Ray cluster: ``genex compare SPEC --vary ... --backend ray [--address ADDR]``.

Each run of a comparison is one Ray task asking for its resources (1 CPU; 1 GPU when the spec's
device is ``cuda``, or ``auto`` on a cluster that has GPUs). Nothing assumes a shared file system:

* before anything is submitted, a tiny task on every alive node loads that node's plugin registry
  and reports which of the components the variants need are missing (with the plugin and the pip
  line that installs it) and which are there in another version;
* a run trains on its worker into a temporary folder, through the same in-process body as
  ``genex run`` (:func:`explorer.execute.execute`), and comes back to the driver as a run archive
  (:mod:`explorer.archive`), imported into ``<out>/runs/NN-<label>/``: the same layout as a local
  comparison, so the tables, the picture and the Compare and Runs pages read it unchanged;
* progress streams to a small inbox actor pinned to the driver's node, in batches (at most four a
  second per run): the run's state (status, step, steps per second), its log, metric and change
  records, and its latest snapshot (at most one a second); the driver drains it, prints the losses,
  and hands everything to ``on_event`` (the Compare page feeds each run's live state with it:
  :func:`group_trainer`, for :meth:`RunManager.start_group <explorer.manager.RunManager.start_group>`);
* each run's folder exists from the start (``<out>/runs/NN-<label>``, or a folder the caller chose),
  says ``running`` with a heartbeat while the run trains and holds its latest checkpoint; Stop on one
  run (``stop``) ends its task at the next step boundary, ``stopped`` with its final checkpoint;
* at every checkpoint the task ships the run folder as it stands (an archive: spec, metrics,
  snapshots, checkpoint) to the inbox, synchronously, so a worker that dies (killed, out of memory,
  a node lost, ``os._exit`` in a plugin) is retried from its last checkpoint on any node, at most
  ``retries`` times; then the run is marked failed with the reason, and the other runs go on;
* Ctrl-C cancels the tasks still queued or training (``ray.cancel``); finished runs are kept, a
  cancelled run that had shipped a checkpoint comes back as ``interrupted`` (resumable), the others as
  ``stopped``; a local instance started here is shut down (tests/test_ray_backend.py sends a real SIGINT).

``import ray`` happens only in this module, and only when a Ray comparison is asked for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from explorer.errors import ExplorerError, one_line

ADDRESS_ENV = "GENEX_RAY_ADDRESS"
PIP_LINE = "pip install 'generative-explorer[ray]'"
DEFAULT_RETRIES = 2
CHECK_TIMEOUT_S = 180.0
CANCEL_GRACE_S = 10.0
# Ray counts a task whose worker process died as a system failure; these are retried from the checkpoint.
SYSTEM_FAILURES = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError",
                   "OwnerDiedError", "ObjectReconstructionFailedError", "LocalRayletDiedError", "RaySystemError")


class ComparisonCancelled(ExplorerError):
    """Ctrl-C during a Ray comparison: the remaining tasks were cancelled. ``results`` holds the runs
    that came back (finished, failed, or interrupted at their last checkpoint)."""

    def __init__(self, message: str, results: list[Any]):
        super().__init__(message)
        self.results = results


def available() -> bool:
    """Whether Ray can be imported here (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    """ExplorerError (exit status 2 from ``genex``) with the pip line when Ray is not installed."""
    if not available():
        raise ExplorerError(f"--backend ray needs Ray, which is not installed here; install it with: {PIP_LINE}")


LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONNECT_TIMEOUT_S = 10.0


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS address ``host:port`` (``[::1]:port`` too); None for anything else (``ray://``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return None
    return host.strip("[]"), int(port)


def _ray(loopback: bool = False) -> Any:
    require_ray()
    if loopback and "ray" not in sys.modules:
        # A local instance listens on the loopback address only; and Ray, told to join 127.0.0.1:port,
        # would otherwise go to this machine's network address instead, where nothing listens.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    return ray


def _check_reachable(address: str) -> None:
    """ExplorerError at once when nothing accepts connections at ``address`` (ray.init would retry for minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ExplorerError(f"could not reach the Ray cluster at {address!r}: {exc.strerror or exc}; is `ray start --head` "
                            f"running there, and is {ADDRESS_ENV} (or --address) host:port of its GCS, e.g. 10.0.0.1:6379?") from None


_connection_lock = threading.Lock()
_connection = {"users": 0, "ours": False}  # callers of connect() not yet disconnected; whether Ray was started here


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to the cluster at ``address`` (else ``$GENEX_RAY_ADDRESS``), or start a local Ray
    instance on 127.0.0.1 with ``num_cpus`` CPUs. Returns (the ray module, whether this call started
    it). Each call is paired with :func:`disconnect`: the connection this module made is shut down
    when its last user disconnects (the app trains several comparisons at once on one connection).
    An already initialised Ray (a notebook, a test) is used as is, and never shut down here."""
    address = (address or os.environ.get(ADDRESS_ENV) or "").strip() or None
    hp = _host_port(address) if address else None
    ray = _ray(loopback=address is None or (hp is not None and hp[0] in LOOPBACK))
    with _connection_lock:
        if ray.is_initialized():
            _connection["users"] += 1
            return ray, False
        if address:
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, logging_level="warning", log_to_driver=False)
            else:
                # "local": a new instance, never one a `ray start` left registered in /tmp/ray (even a dead one)
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            hint = (" (is `ray start --head` running there, and is the address host:port of its GCS, e.g. 10.0.0.1:6379? "
                    "A cluster with token authentication also needs RAY_AUTH_MODE=token here, and its token)"
                    if address else "")
            raise ExplorerError(f"could not connect to {where}: {one_line(str(exc))[:300]}{hint}") from None
        _connection.update(users=_connection["users"] + 1, ours=True)
        return ray, True


def disconnect() -> None:
    """One user of :func:`connect` is done; the last one shuts down the connection (and a local
    instance, with every process it started) when this module made it."""
    import ray

    with _connection_lock:
        _connection["users"] = max(0, _connection["users"] - 1)
        if _connection["users"] == 0 and _connection["ours"]:
            _connection["ours"] = False
            ray.shutdown()


# -- what the workers need -----------------------------------------------------------------------------
def needed_components(specs: Sequence[Any], registry: Any) -> dict[str, dict[str, Any]]:
    """Every component the specs use (slots, metrics, objectives named in change logs), keyed
    ``kind:name``, with the plugin, distribution and version that provide it here."""
    from explorer.spec import SLOTS

    out: dict[str, dict[str, Any]] = {}

    def add(kind: str, name: Any) -> None:
        if not isinstance(name, str) or f"{kind}:{name}" in out:
            return
        info = registry.components[kind].get(name)
        out[f"{kind}:{name}"] = {"kind": kind, "name": name, "plugin": getattr(info, "plugin", None),
                                 "dist": getattr(info, "dist", None), "version": getattr(info, "version", None)}

    for spec in specs:
        for key, kind, _ in SLOTS:
            comp = getattr(spec, key)
            if comp is not None:
                add(kind, comp.name)
        for m in spec.metrics:
            add("metric", m.name)
        for entry in spec.changes or []:
            obj = entry.get("set", {}).get("objective") if isinstance(entry, Mapping) else None
            add("objective", obj.get("name") if isinstance(obj, Mapping) else obj)
    return out


def pip_line(dist: str | None, version: str | None, plugin: str | None = None) -> str:
    """The pip line that installs a component's distribution (pinned to the driver's version)."""
    if not dist:
        return f"install the package that provides plugin {plugin or '?'}"
    pin = f"=={version}" if version and version not in ("?", "None") else ""
    return f"pip install '{dist}{pin}'"


def _check_node(needed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Runs on a worker: which needed components its registry lacks, and which differ in version."""
    import torch

    from explorer.registry import get_registry

    reg = get_registry()
    missing, other_version = [], []
    for want in needed.values():
        info = reg.components.get(want["kind"], {}).get(want["name"])
        if info is None:
            failed = [e for e in reg.errors if e.plugin == want["plugin"] or (want["dist"] and e.dist == want["dist"])]
            skipped = reg.skipped.get(want["plugin"] or "")
            why = (f"installed but failed to load: {failed[0].message}" if failed
                   else f"not loaded: {skipped}" if skipped else "not installed")
            missing.append({**want, "why": why})
        elif want["version"] and info.version != want["version"]:
            other_version.append({**want, "here": info.version})
    try:
        from importlib.metadata import version

        genex = version("generative-explorer")
    except Exception:
        genex = None
    return {"host": socket.gethostname(), "missing": missing, "other_version": other_version,
            "torch": torch.__version__, "genex": genex, "python": sys.version.split()[0]}


def check_workers(ray: Any, needed: Mapping[str, Mapping[str, Any]], log: Callable[[str], None] | None = None) -> None:
    """Ask every alive node with CPUs whether it can build the needed components; ExplorerError naming
    the node, the component, its plugin and the pip line when one cannot. Version differences are
    reported through ``log`` (results may then differ from a local run) but do not stop the comparison."""
    import torch
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from explorer.registry import BUILTIN_DIST, _version

    here = _version(BUILTIN_DIST)
    task = ray.remote(num_cpus=0, max_retries=1)(_check_node)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(dict(needed)):
            n.get("NodeManagerAddress", n["NodeID"][:8]) for n in nodes}
    if not refs:
        raise ExplorerError("the Ray cluster has no alive node with CPUs to train on")
    problems, notes = [], []
    for ref, node in refs.items():
        try:
            report = ray.get(ref, timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # explorer itself cannot be imported there, or the node did not answer
            cause = getattr(exc, "cause", None) or exc
            problems.append(f"on node {node}, the check could not run ({type(cause).__name__}: {one_line(str(cause))[:200]}); "
                            f"install this package there: {pip_line(BUILTIN_DIST, here)} (and torch {torch.__version__})")
            continue
        for m in report["missing"]:
            problems.append(f"on node {node}, {m['kind']} {m['name']!r} from plugin {m['plugin']} ({m['dist'] or 'local'} "
                            f"{m['version'] or ''}) is {m['why']}: {pip_line(m['dist'], m['version'], m['plugin'])}")
        for m in report["other_version"]:
            notes.append(f"node {node} has {m['dist']} {m['here']} for {m['kind']} {m['name']!r} (here: {m['version']})")
        if report["torch"] != torch.__version__:
            notes.append(f"node {node} has torch {report['torch']} (here: {torch.__version__})")
        if here and report["genex"] and report["genex"] != here:
            notes.append(f"node {node} has generative-explorer {report['genex']} (here: {here})")
    if problems:
        raise ExplorerError("the Ray workers cannot train this comparison: " + "; ".join(problems)
                            + ". Every worker needs this package, torch and every plugin package the spec uses, in the same versions")
    if notes and log:
        log("warning: versions differ on the cluster, so results may differ from a local run: " + "; ".join(notes))


# -- the task ------------------------------------------------------------------------------------------
class _Inbox:
    """A small actor on the driver's node: progress and checkpoint bundles from the tasks, and the
    runs the driver wants stopped (each task's flush asks)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []
        self.stops: set[int] = set()

    def push(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)

    def push_many(self, index: int, items: list[tuple[Any, ...]]) -> bool:
        """Take a task's batch of progress; returns whether the driver wants that run stopped."""
        self.items.extend(items)
        return index in self.stops

    def stop(self, index: int) -> None:
        self.stops.add(index)

    def drain(self) -> list[tuple[Any, ...]]:
        out, self.items = self.items, []
        return out


class _Stream:
    """On the worker: a run's progress (state changes, records, snapshots), sent to the inbox in batches
    at most every ``every_s`` (one actor call, whatever the steps per second); each batch's answer says
    whether the driver wants the run stopped, and then the trainer stops at its next step boundary.
    Snapshots go at most one per ``snapshot_every_s``; the last one held back goes before the final status."""

    def __init__(self, inbox: Any, index: int, attempt: int, every_s: float = 0.25, snapshot_every_s: float = 0.0):
        self.inbox, self.index, self.attempt = inbox, index, attempt
        self.every_s, self.snapshot_every_s = every_s, snapshot_every_s
        self.items: list[tuple[Any, ...]] = []
        self.last_flush = self.last_snap = float("-inf")
        self.held: Any = None
        self.trainer: Any = None

    def put(self, kind: str, step: int, payload: Any) -> None:
        self.items.append((kind, self.index, self.attempt, int(step), payload))

    def snapshot(self, snap: Any, last: bool = False) -> None:
        if self.snapshot_every_s <= 0:
            return
        now = time.monotonic()
        if last or now - self.last_snap >= self.snapshot_every_s:
            self.last_snap, self.held = now, None
            self.put("snapshot", snap.step, snap)
        else:
            self.held = snap

    def flush(self, force: bool = False) -> None:
        import ray

        now = time.monotonic()
        if not force and now - self.last_flush < self.every_s:
            return
        self.last_flush = now
        items, self.items = self.items, []
        stop = ray.get(self.inbox.push_many.remote(self.index, items), timeout=120)
        if stop and self.trainer is not None and not self.trainer.stopping:
            self.trainer.stop()


def _streaming_state(stream: _Stream, total_steps: int) -> Any:
    """A RunState that also streams every change to the driver (as the app's worker processes do),
    snapshots at most every ``snapshot_every_s`` and the last one before the final status."""
    from explorer.runs import ACTIVE
    from explorer.training import RunState

    def forward(state: RunState, kind: str, payload: Any) -> None:
        if kind == "snapshot":
            stream.snapshot(payload)
        elif kind == "state":
            if payload.get("status") not in (None, *ACTIVE) and stream.held is not None:
                stream.snapshot(stream.held, last=True)  # the last picture before the final status
            stream.put("state", state.step, payload)
        else:
            stream.put("record", int(payload.get("step", state.step)), payload)
        stream.flush()

    return RunState(total_steps, forward=forward)


def _train_task(job: dict[str, Any], inbox: Any, bundle: bytes | None, hook: Callable[[Any, int], None] | None) -> dict[str, Any]:
    """One run, on a worker: train into a temporary folder (from the shipped checkpoint bundle when
    this is a retry), stream its progress, ship a bundle at every checkpoint, return the run as an archive."""
    import ray
    import torch

    from explorer.archive import export_bytes, import_run
    from explorer.execute import execute
    from explorer.registry import get_registry
    from explorer.runs import RunStore
    from explorer.spec import resolve
    from explorer.training import TrainerConfig

    from explorer.device import env_threads

    torch.set_num_threads(env_threads() or max(1, int(job["cpus"])))
    idx, attempt = job["index"], job["attempt"]
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="genex-ray-"))
    try:
        registry = get_registry()
        spec = resolve(job["spec"], registry)
        if bundle is not None:
            store = import_run(bundle, root=tmp, registry=registry)
            resume_from: Path | None = store.path
        else:
            store = RunStore.create(spec.to_dict(), out=tmp / job["folder"])
            resume_from = None
        snapshot_every_s = float(job.get("snapshot_every_s", 0.0))
        stream = _Stream(inbox, idx, attempt, snapshot_every_s=snapshot_every_s)
        state = _streaming_state(stream, spec.steps)

        def on_trainer(trainer: Any) -> None:
            stream.trainer = trainer

            def on_checkpoint(tr: Any) -> None:
                if tr.p.step < tr.spec.steps and not tr.stopping:  # the final one comes back with the result
                    stream.flush(force=True)
                    ray.get(inbox.push.remote(("bundle", idx, attempt, int(tr.p.step), export_bytes(store))), timeout=120)

            trainer.add_callback("checkpoint", on_checkpoint)
            trainer.add_callback("step_end", lambda tr: stream.flush())  # a Stop is heard within a quarter second
            if hook is not None:
                hook(trainer, attempt)

        config = TrainerConfig(snapshot_hz=1.0 / snapshot_every_s if snapshot_every_s > 0 else 0.0)
        status = execute(store, spec, state, registry, on_trainer=on_trainer, config=config, resume_from=resume_from)
        stream.flush(force=True)
        return {"status": status, "error": state.error, "archive": export_bytes(store), "host": socket.gethostname(),
                "seconds": time.monotonic() - t0}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the driver ------------------------------------------------------------------------------------------
def _force_cancel(ray: Any, ref: Any) -> None:
    """Kill the worker of a task that ignored its cancel, unless the task has ended meanwhile: Ray 2.60
    aborts the driver process (a failed check in its task manager, logged in the driver's
    python-core-driver log) when a forced cancel crosses the reply of a task that is completing: the
    Ctrl-C clean-up force-cancelled every task at once after its plain cancel, so the driver (the
    pytest process, in the first Ctrl-C test) could die mid-clean-up."""
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        ray.cancel(ref, force=True)


STATE_FIELDS = ("status", "step", "total_steps", "steps_per_s", "device", "error")
HEARTBEAT_S = 2.0


@dataclass
class _Slot:
    index: int
    variant: Any
    store: Any  # the run's folder here (a RunStore)
    folder: str  # its name: the name of the task's temporary folder too
    attempt: int = 0
    bundle: bytes | None = None
    bundle_step: int = 0
    ref: Any = None
    started: float = 0.0
    last_step: int = 0
    last_print: float = float("-inf")
    last_beat: float = float("-inf")
    training: bool = False  # the current attempt said it is running
    stop_asked: float | None = None  # when a stop was asked for (train_variants' ``stop``)
    force_cancelled: bool = False
    done: bool = False


def _gpus_for(spec: Any, ray: Any, gpus_per_run: float) -> float:
    device = spec.settings.get("device", "auto")
    if device == "cuda":
        return gpus_per_run
    if device == "auto" and ray.cluster_resources().get("GPU", 0) > 0:
        return gpus_per_run
    return 0.0


def unpack_into(archive: bytes, folder: Path, registry: Any, source: str, status: str | None = None,
                **fields: Any) -> Any:
    """Unpack a run archive into ``folder`` (made if missing; a run folder that exists is filled in
    place, keeping its name and creation time); returns its RunStore. The archive is checked and
    unpacked beside it first (:func:`explorer.archive.import_run`), then each file replaces the old one
    atomically, status.json last: ``status`` and ``fields`` override the archive's."""
    import uuid

    from explorer.archive import import_run
    from explorer.runs import RunStore

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".ray-{uuid.uuid4().hex[:12]}"  # a dot folder: never listed as a run
    try:
        imported = import_run(archive, root=staging, registry=registry, name=source)
        folder.mkdir(exist_ok=True)
        store = RunStore(folder)
        old = store.read_status() if (folder / "status.json").exists() else {}
        new = imported.read_status()
        for item in imported.path.iterdir():
            if item.name == "status.json":
                continue
            if item.is_dir():
                if (folder / item.name).exists():
                    os.replace(folder / item.name, staging / f"old-{item.name}")
                os.replace(item, folder / item.name)
            else:
                os.replace(item, folder / item.name)
        keep = {k: v for k, v in new.items() if k not in ("status", "pid", "host", "heartbeat")}
        if old.get("created") is not None:
            keep["created"] = old["created"]
        if status is not None:  # the archive's own note ("imported from a run that had not finished") no longer holds
            keep.pop("error", None)
        keep.update(fields, run_id=folder.name)
        store.write_status(status or new.get("status", "interrupted"), **keep)
        return store
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_variants(variants: Sequence[Any], out: Path | None = None, address: str | None = None, jobs: int | None = None,
                   log: Callable[[str], None] | None = None, retries: int = DEFAULT_RETRIES, num_cpus: int | None = None,
                   cpus_per_run: int = 1, gpus_per_run: float = 1.0, progress_every_s: float = 2.0,
                   hook: Callable[[Any, int], None] | None = None, registry: Any = None,
                   folders: Sequence[Path] | None = None, on_event: Callable[[int, str, Any], None] | None = None,
                   stop: set[int] | None = None, snapshot_every_s: float = 1.0) -> list[Any]:
    """Train every variant as a Ray task; returns their RunResults in order.

    Run ``i`` lands in ``folders[i]`` (default ``out/runs/<nn>-<label>``, as
    :func:`explorer.compare.train_variants` lays them out): made at the start (a folder that exists, such
    as one :meth:`RunManager.start_group <explorer.manager.RunManager.start_group>` made, is filled in
    place), marked ``running`` with a heartbeat while it trains, holding its latest checkpoint (so a driver
    that dies leaves a resumable run), and always left with a final status.

    ``on_event(index, kind, payload)`` is called here, in the calling thread, as the runs report:
    ``"state"`` with RunState fields (status, step, total_steps, steps_per_s, device, error; a final
    status only once the run's folder holds it), ``"record"`` with each log, metric and change record,
    ``"snapshot"`` with the latest :class:`~explorer.snapshots.Snapshot`, at most one per
    ``snapshot_every_s`` per run, and its last one. ``stop`` is a set of indices that other threads add
    to: such a run is told to stop at its next step boundary and comes back ``stopped`` with its final
    checkpoint, as a local run does (one not started yet is cancelled: ``stopped`` at step 0; one that
    has not come back after ``CANCEL_GRACE_S`` is cancelled: ``interrupted`` at its last checkpoint).

    ``jobs`` caps the runs in flight (default: all at once, the cluster's resources decide).
    ``hook(trainer, attempt)`` runs on the worker as each attempt's trainer is built (tests inject
    faults with it). Raises ComparisonCancelled on Ctrl-C, ExplorerError when Ray is missing, the
    cluster cannot be reached or a worker lacks a plugin.
    """
    from explorer import compare
    from explorer.records import LOSS, record_kind
    from explorer.registry import get_registry, is_installed
    from explorer.runs import ACTIVE, RunStore, mark_live

    registry = registry or get_registry()
    if not is_installed(registry):
        raise ExplorerError("the Ray backend trains with the installed plugins; a registry set in code exists only in this process")
    if folders is None:
        if out is None:
            raise ValueError("train_variants needs out or folders")
        folders = [Path(out) / "runs" / f"{i + 1:02d}-{compare._slug(v.label)}" for i, v in enumerate(variants)]
    folders = [Path(f) for f in folders]
    if len(folders) != len(variants):
        raise ValueError(f"train_variants got {len(folders)} folders for {len(variants)} variants")
    say = log or (lambda msg: None)
    stop = stop if stop is not None else set()
    ray, _ = connect(address, num_cpus)
    slots: list[_Slot] = []
    inbox = None
    try:
        check_workers(ray, needed_components([v.spec for v in variants], registry), log)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        inbox = ray.remote(num_cpus=0)(_Inbox).options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        task = ray.remote(_train_task)
        for i, (v, folder) in enumerate(zip(variants, folders)):
            store = RunStore(folder) if (folder / "spec.json").exists() else RunStore.create(v.spec.to_dict(), out=folder)
            mark_live(store.id)  # a folder marked running here reads as running while this process lives
            slots.append(_Slot(i, v, store, folder.name))
        results: list[Any] = [None] * len(slots)
        waiting = list(slots)
        running: dict[Any, _Slot] = {}
        limit = max(1, jobs) if jobs else len(slots)
        done = [0]
        broken_consumer: list[str] = []

        def emit(idx: int, kind: str, payload: Any) -> None:
            if on_event is None:
                return
            try:
                on_event(idx, kind, payload)
            except Exception as exc:  # a watcher's bug never stops the runs; said once
                if not broken_consumer:
                    broken_consumer.append(kind)
                    say(f"warning: on_event raised {type(exc).__name__}: {one_line(str(exc))[:200]}; training goes on")

        def submit(slot: _Slot) -> None:
            job = {"index": slot.index, "attempt": slot.attempt, "folder": slot.folder, "spec": slot.variant.spec.to_dict(),
                   "cpus": cpus_per_run, "snapshot_every_s": snapshot_every_s if on_event is not None else 0.0}
            slot.ref = task.options(num_cpus=cpus_per_run, num_gpus=_gpus_for(slot.variant.spec, ray, gpus_per_run),
                                    max_retries=0, name=f"genex:{slot.folder}").remote(job, inbox, slot.bundle, hook)
            slot.started = slot.started or time.monotonic()
            slot.training = False
            running[slot.ref] = slot

        def finish(slot: _Slot, result: Any, note: str = "", quiet: bool = False) -> None:
            results[slot.index] = result
            slot.done = True
            done[0] += 1
            if not quiet:
                err = f" ({result.error})" if result.error else ""
                say(f"[{done[0]}/{len(slots)}] {slot.variant.label}: {result.status} at step {result.step} "
                    f"in {result.seconds:.1f} s{note}{err}")

        def bring_back(slot: _Slot, archive: bytes | None, status: str | None = None, error: str | None = None,
                       host: str = "") -> Any:
            """The run's folder from ``archive`` (or as it is), with ``status`` when given; then its final state."""
            if archive is not None:
                extra = {"error": error, "step": slot.bundle_step} if status is not None else {}
                unpack_into(archive, slot.store.path, registry, f"ray:{host + ':' if host else ''}{slot.folder}", status, **extra)
            elif status is not None:
                slot.store.write_status(status, error=error, step=0)
            res = compare.result_of(slot.variant, slot.store, time.monotonic() - slot.started if slot.started else 0.0)
            emit(slot.index, "state", {"status": res.status, "step": res.step, "error": res.error})
            return res

        def drain(quiet: bool = False) -> None:
            for item in ray.get(inbox.drain.remote()):
                kind, idx, attempt, step, payload = item[:5]
                slot = slots[idx]
                if slot.done:
                    continue
                if kind == "bundle":
                    if step >= slot.bundle_step:
                        slot.bundle, slot.bundle_step = payload, step
                        if not quiet:  # the folder holds the latest checkpoint: a driver that dies leaves it resumable
                            unpack_into(payload, slot.store.path, registry, f"ray:{slot.folder}", "running", step=step)
                            slot.last_beat = time.monotonic()
                    continue
                if attempt != slot.attempt:
                    continue
                if kind == "state":
                    fields = {k: v for k, v in payload.items() if k in STATE_FIELDS}
                    if fields.get("status") not in (None, *ACTIVE):
                        del fields["status"]  # how it ended: once its folder says so (bring_back)
                    if fields.get("status") == "running" and not slot.training:
                        slot.training = True
                        slot.store.write_status("running", run_id=slot.store.id, step=step, started=time.time())
                        slot.last_beat = time.monotonic()
                        if slot.stop_asked is not None:  # asked while it was still starting
                            inbox.stop.remote(slot.index)
                    emit(idx, "state", fields)
                elif kind == "record":
                    if record_kind(payload) == LOSS:
                        slot.last_step = step
                        now = time.monotonic()
                        if not quiet and now - slot.last_print >= progress_every_s:
                            slot.last_print = now
                            shown = {k: v for k, v in payload.items() if k not in ("step", "time") and isinstance(v, float)}
                            keys = [k for k in shown if k.endswith("loss")] or [k for k in shown if not k.startswith("data_")
                                                                                  and k != "steps_per_s"]
                            losses = " ".join(f"{k}={shown[k]:.4g}" for k in keys)
                            say(f"  {slot.variant.label}: step {step}/{slot.variant.spec.steps} {losses}".rstrip())
                    emit(idx, "record", payload)
                elif kind == "snapshot":
                    emit(idx, "snapshot", payload)
            now = time.monotonic()
            for slot in running.values():
                if slot.training and not quiet and now - slot.last_beat >= HEARTBEAT_S:
                    slot.last_beat = now
                    slot.store.write_status("running", step=slot.last_step)

        def handle_stops() -> None:
            now = time.monotonic()
            for idx in list(stop):
                slot = slots[idx] if 0 <= idx < len(slots) else None
                if slot is None or slot.done or slot.stop_asked is not None:
                    continue
                slot.stop_asked = now
                if slot in waiting:
                    waiting.remove(slot)
                    finish(slot, bring_back(slot, None, "stopped", "stopped before it started"))
                elif slot.training:
                    inbox.stop.remote(idx)  # its next batch of progress hears it
                else:
                    ray.cancel(slot.ref)  # still waiting for the cluster (or starting): nothing trained yet
            for slot in running.values():
                if slot.stop_asked is not None and not slot.force_cancelled and now - slot.stop_asked > CANCEL_GRACE_S:
                    slot.force_cancelled = True
                    _force_cancel(ray, slot.ref)

        def settle(ref: Any) -> None:
            slot = running.pop(ref)
            try:
                out_ = ray.get(ref)
            except Exception as exc:
                drain()  # the last bundle it shipped, if any
                name = type(exc).__name__
                if slot.stop_asked is not None:
                    if slot.bundle is not None:
                        finish(slot, bring_back(slot, slot.bundle, "interrupted", f"stopped; kept up to its last checkpoint "
                                                                                  f"at step {slot.bundle_step}"))
                    else:
                        finish(slot, bring_back(slot, None, "stopped", "stopped before its first checkpoint"))
                    return
                if name in SYSTEM_FAILURES or (name == "RayTaskError" and type(getattr(exc, "cause", None)).__name__ in SYSTEM_FAILURES):
                    reason = f"the Ray worker training it died ({name}: {one_line(str(exc)).split(' Error ')[0][:160]})"
                    if slot.attempt < retries:
                        slot.attempt += 1
                        frm = f"its checkpoint at step {slot.bundle_step}" if slot.bundle is not None else "the start (no checkpoint yet)"
                        say(f"  {slot.variant.label}: {reason} near step {slot.last_step}; retry {slot.attempt}/{retries} from {frm}")
                        submit(slot)
                        return
                    msg = f"{reason}; gave up after {retries + 1} attempts"
                else:
                    cause = getattr(exc, "cause", None) or exc
                    msg = f"the Ray task failed: {type(cause).__name__}: {one_line(str(cause))[:300]}"
                finish(slot, bring_back(slot, slot.bundle, "failed", msg))
                return
            res = bring_back(slot, out_["archive"], host=out_["host"])
            note = f" on {out_['host']}" + (f" (retried {slot.attempt}x, from step {slot.bundle_step})" if slot.attempt else "")
            finish(slot, res, note)

        try:
            while waiting or running:
                handle_stops()
                while waiting and len(running) < limit:
                    submit(waiting.pop(0))
                if not running:
                    continue
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
                drain()
                for ref in ready:
                    settle(ref)
        except KeyboardInterrupt:
            # Nothing here prints or calls a callback that could raise KeyboardInterrupt again and skip the clean-up.
            cancelled = list(running.values()) + waiting
            for ref in list(running):
                ray.cancel(ref)  # KeyboardInterrupt in the task: its temporary folder is removed
            deadline = time.monotonic() + CANCEL_GRACE_S
            for ref, slot in list(running.items()):
                try:
                    finished = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                except ray.exceptions.GetTimeoutError:
                    _force_cancel(ray, ref)  # still going after the grace period
                except Exception:
                    pass  # cancelled (or failed): it has ended, and a forced cancel now could crash this process
                else:  # it ended before the cancel reached it
                    finish(slot, bring_back(slot, finished["archive"], host=finished["host"]), quiet=True)
                    cancelled.remove(slot)
            try:
                drain(quiet=True)
            except Exception:
                pass
            for slot in cancelled:
                if slot.bundle is not None:
                    res = bring_back(slot, slot.bundle, "interrupted",
                                     f"cancelled (Ctrl-C) at step {slot.last_step}; resume it from its checkpoint at step {slot.bundle_step}")
                else:
                    res = bring_back(slot, None, "stopped", "cancelled (Ctrl-C) before its first checkpoint; nothing of it was kept"
                                     if slot.training else "cancelled (Ctrl-C) before it started")
                results[slot.index] = res
            kept = sum(s.bundle is not None for s in cancelled)
            raise ComparisonCancelled(
                f"cancelled: {len(cancelled)} run(s) stopped ({kept} kept up to their last checkpoint as interrupted), "
                f"{done[0]} finished before", [r for r in results if r is not None]) from None
        return [r for r in results if r is not None]
    finally:
        for slot in slots:
            mark_live(slot.store.id, False)
        if inbox is not None:
            try:
                ray.kill(inbox)
            except Exception:
                pass
        disconnect()


# -- the Compare page: a group of the app's runs on the cluster ----------------------------------------------
def group_trainer(address: str | None = None, **options: Any) -> Callable[[list[Any]], None]:
    """A driver for :meth:`RunManager.start_group <explorer.manager.RunManager.start_group>` (``backend="ray"``,
    ``slots=0``): trains the runs as Ray tasks on the cluster at ``address`` (else ``$GENEX_RAY_ADDRESS``,
    else a local instance) into their own folders, feeding each run's live state (status, step, records,
    latest snapshot) as they report; Stop on a run stops its task (``stopped``, with its final checkpoint).
    ``options`` go to :func:`train_variants` (e.g. ``retries``, ``cpus_per_run``)."""

    def train(runs: list[Any]) -> None:
        from explorer.compare import Variant

        stop: set[int] = set()

        def commands_of(i: int) -> Callable[[tuple[Any, ...]], None]:
            def on_command(cmd: tuple[Any, ...]) -> None:
                if cmd and cmd[0] == "stop":
                    stop.add(i)  # the driver's loop sees it within a quarter second

            return on_command

        def on_event(i: int, kind: str, payload: Any) -> None:
            state = runs[i].state
            if kind == "state":
                state.update(**payload)
            elif kind == "record":
                state.add_record(payload)
            elif kind == "snapshot":
                state.update(snapshot=payload)

        for i, run in enumerate(runs):
            run.attach_driver(commands_of(i))
        variants = [Variant(label=run.store.id, changes={}, seed=int(run.spec.seed), raw=run.spec.to_dict(), spec=run.spec)
                    for run in runs]
        train_variants(variants, folders=[run.store.path for run in runs], address=address, on_event=on_event, stop=stop,
                       **options)

    return train
