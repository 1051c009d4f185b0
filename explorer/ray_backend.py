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
* progress (step and losses at every logged step) streams to a small inbox actor pinned to the
  driver's node, which the driver drains and prints;
* at every checkpoint the task ships the run folder as it stands (an archive: spec, metrics,
  snapshots, checkpoint) to the inbox, synchronously, so a worker that dies (killed, out of memory,
  a node lost, ``os._exit`` in a plugin) is retried from its last checkpoint on any node, at most
  ``retries`` times; then the run is marked failed with the reason, and the other runs go on;
* Ctrl-C cancels the tasks still queued or training (``ray.cancel``); finished runs are kept, and a
  cancelled run that had shipped a checkpoint comes back as ``interrupted`` (resumable).

``import ray`` happens only in this module, and only when a Ray comparison is asked for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
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


def _ray(local: bool = False) -> Any:
    require_ray()
    if local and "ray" not in sys.modules:
        # A local instance listens on the loopback address only (Ray otherwise picks the machine's address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to the cluster at ``address`` (else ``$GENEX_RAY_ADDRESS``), or start a local Ray
    instance on 127.0.0.1 with ``num_cpus`` CPUs. Returns (the ray module, whether this call started
    it: then the caller shuts it down). An already initialised Ray (a notebook, a test) is used as is."""
    address = address or os.environ.get(ADDRESS_ENV) or None
    ray = _ray(local=address is None)
    if ray.is_initialized():
        return ray, False
    try:
        if address:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="warning", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        hint = (" (is `ray start --head` running there, and is the address host:port of its GCS, e.g. 10.0.0.1:6379?)"
                if address else "")
        raise ExplorerError(f"could not connect to {where}: {one_line(str(exc))[:300]}{hint}") from None
    return ray, True


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
    """A small actor on the driver's node: progress records and checkpoint bundles from the tasks."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def push(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple[Any, ...]]:
        out, self.items = self.items, []
        return out


def _train_task(job: dict[str, Any], inbox: Any, bundle: bytes | None, hook: Callable[[Any, int], None] | None) -> dict[str, Any]:
    """One run, on a worker: train into a temporary folder (from the shipped checkpoint bundle when
    this is a retry), ship a bundle at every checkpoint, return the finished run as an archive."""
    import ray
    import torch

    from explorer.archive import export_bytes, import_run
    from explorer.execute import execute
    from explorer.registry import get_registry
    from explorer.runs import RunStore
    from explorer.spec import resolve
    from explorer.training import RunState, TrainerConfig

    env = os.environ.get("GENEX_TORCH_THREADS", "")
    torch.set_num_threads(int(env) if env.isdigit() and int(env) > 0 else max(1, int(job["cpus"])))
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
        state = RunState(spec.steps)

        def on_trainer(trainer: Any) -> None:
            def on_log(tr: Any, rec: dict[str, Any]) -> None:
                shown = {k: v for k, v in rec.items() if k not in ("step", "time") and isinstance(v, float)}
                inbox.push.remote(("log", idx, attempt, int(rec["step"]), shown))

            def on_checkpoint(tr: Any) -> None:
                if tr.p.step < tr.spec.steps:  # the final one comes back with the result
                    ray.get(inbox.push.remote(("bundle", idx, attempt, int(tr.p.step), export_bytes(store))), timeout=120)

            trainer.add_callback("log", on_log)
            trainer.add_callback("checkpoint", on_checkpoint)
            if hook is not None:
                hook(trainer, attempt)

        status = execute(store, spec, state, registry, on_trainer=on_trainer, config=TrainerConfig(snapshot_hz=0),
                         resume_from=resume_from)
        return {"status": status, "error": state.error, "archive": export_bytes(store), "host": socket.gethostname(),
                "seconds": time.monotonic() - t0}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the driver ------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    variant: Any
    folder: str
    attempt: int = 0
    bundle: bytes | None = None
    bundle_step: int = 0
    ref: Any = None
    started: float = 0.0
    last_step: int = 0
    last_print: float = float("-inf")


def _gpus_for(spec: Any, ray: Any, gpus_per_run: float) -> float:
    device = spec.settings.get("device", "auto")
    if device == "cuda":
        return gpus_per_run
    if device == "auto" and ray.cluster_resources().get("GPU", 0) > 0:
        return gpus_per_run
    return 0.0


def train_variants(variants: Sequence[Any], out: Path, address: str | None = None, jobs: int | None = None,
                   log: Callable[[str], None] | None = None, retries: int = DEFAULT_RETRIES, num_cpus: int | None = None,
                   cpus_per_run: int = 1, gpus_per_run: float = 1.0, progress_every_s: float = 2.0,
                   hook: Callable[[Any, int], None] | None = None, registry: Any = None) -> list[Any]:
    """Train every variant as a Ray task; the runs come back into ``out/runs/<nn>-<label>`` (as
    :func:`explorer.compare.train_variants` lays them out). Returns their RunResults in order.

    ``jobs`` caps the runs in flight (default: all at once, the cluster's resources decide).
    ``hook(trainer, attempt)`` runs on the worker as each attempt's trainer is built (tests inject
    faults with it). Raises ComparisonCancelled on Ctrl-C, ExplorerError when Ray is missing, the
    cluster cannot be reached or a worker lacks a plugin.
    """
    from explorer import compare
    from explorer.registry import get_registry, is_installed

    registry = registry or get_registry()
    if not is_installed(registry):
        raise ExplorerError("the Ray backend trains with the installed plugins; a registry set in code exists only in this process")
    say = log or (lambda msg: None)
    ray, started = connect(address, num_cpus)
    try:
        check_workers(ray, needed_components([v.spec for v in variants], registry), log)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        inbox = ray.remote(num_cpus=0)(_Inbox).options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        task = ray.remote(_train_task)
        runs_dir = out / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        slots = [_Slot(i, v, f"{i + 1:02d}-{compare._slug(v.label)}") for i, v in enumerate(variants)]
        results: list[Any] = [None] * len(slots)
        waiting = list(slots)
        running: dict[Any, _Slot] = {}
        limit = max(1, jobs) if jobs else len(slots)
        done = [0]

        def submit(slot: _Slot) -> None:
            job = {"index": slot.index, "attempt": slot.attempt, "folder": slot.folder, "spec": slot.variant.spec.to_dict(),
                   "cpus": cpus_per_run}
            slot.ref = task.options(num_cpus=cpus_per_run, num_gpus=_gpus_for(slot.variant.spec, ray, gpus_per_run),
                                    max_retries=0, name=f"genex:{slot.folder}").remote(job, inbox, slot.bundle, hook)
            slot.started = slot.started or time.monotonic()
            running[slot.ref] = slot

        def finish(slot: _Slot, result: Any, note: str = "") -> None:
            results[slot.index] = result
            done[0] += 1
            err = f" ({result.error})" if result.error else ""
            say(f"[{done[0]}/{len(slots)}] {slot.variant.label}: {result.status} at step {result.step} "
                f"in {result.seconds:.1f} s{note}{err}")

        def bring_back(slot: _Slot, archive: bytes | None, status: str | None = None, error: str | None = None,
                       host: str = "") -> Any:
            """Import ``archive`` (or make a bare folder) as the run's folder; optionally override its status."""
            from explorer.archive import import_run
            from explorer.runs import RunStore

            if archive is not None:
                store = import_run(archive, root=runs_dir, registry=registry, name=f"ray:{host + ':' if host else ''}{slot.folder}")
            else:
                store = RunStore.create(slot.variant.spec.to_dict(), out=runs_dir / slot.folder)
            if status is not None:
                store.write_status(status, error=error, step=slot.bundle_step if archive is not None else 0)
            return compare.result_of(slot.variant, store, time.monotonic() - slot.started)

        def drain() -> None:
            for item in ray.get(inbox.drain.remote()):
                kind, idx, attempt, step = item[:4]
                slot = slots[idx]
                if kind == "bundle" and step >= slot.bundle_step:
                    slot.bundle, slot.bundle_step = item[4], step
                elif kind == "log" and attempt == slot.attempt:
                    slot.last_step = step
                    now = time.monotonic()
                    if now - slot.last_print >= progress_every_s:
                        slot.last_print = now
                        keys = [k for k in item[4] if k.endswith("loss")] or [k for k in item[4] if not k.startswith("data_")
                                                                                     and k != "steps_per_s"]
                        losses = " ".join(f"{k}={item[4][k]:.4g}" for k in keys)
                        say(f"  {slot.variant.label}: step {step}/{slot.variant.spec.steps} {losses}".rstrip())

        def settle(ref: Any) -> None:
            slot = running.pop(ref)
            try:
                out_ = ray.get(ref)
            except Exception as exc:
                drain()  # the last bundle it shipped, if any
                name = type(exc).__name__
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
                while waiting and len(running) < limit:
                    submit(waiting.pop(0))
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                drain()
                for ref in ready:
                    settle(ref)
        except KeyboardInterrupt:
            cancelled = [s for s in running.values()] + waiting
            for ref in list(running):
                ray.cancel(ref)  # KeyboardInterrupt in the task: its temporary folder is removed
            deadline = time.monotonic() + CANCEL_GRACE_S
            for ref, slot in list(running.items()):
                try:
                    finished = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                except Exception:
                    ray.cancel(ref, force=True)
                else:  # it ended before the cancel reached it
                    results[slot.index] = bring_back(slot, finished["archive"])
                    cancelled.remove(slot)
                    done[0] += 1
            try:
                drain()
            except Exception:
                pass
            for slot in cancelled:
                if slot.bundle is not None:
                    results[slot.index] = bring_back(slot, slot.bundle, "interrupted",
                                                     f"cancelled (Ctrl-C) at step {slot.last_step}; resume it from its checkpoint")
            kept = [r for r in results if r is not None]
            raise ComparisonCancelled(
                f"cancelled: {len(cancelled)} run(s) stopped ({sum(s.bundle is not None for s in cancelled)} kept up to their "
                f"last checkpoint as interrupted), {done[0]} finished before", kept) from None
        return [r for r in results if r is not None]
    finally:
        if started:
            ray.shutdown()
