"""RunStore: one run's folder on disk, the source of truth for every run.

    runs/<YYYYmmdd-HHMMSS>-<short-name>/
      spec.json        the resolved spec (every default filled in, plugin provenance)
      status.json      running / paused / finished / stopped / failed (+ error), pid, heartbeat, parent
      metrics.jsonl    one JSON record per logged step (step, time, d_loss, g_loss, ...) and per metric pass
      samples/step_000500.npy / .png / .npz   generated samples, their picture, the full snapshot
      checkpoint.pt    state dicts and plain data only (torch.load(weights_only=True))

Every file but metrics.jsonl is written atomically (temporary name, then rename); metrics.jsonl is
appended line by line and flushed, and a half-written last line is skipped on reading. A run whose
status says running but whose process is gone (or whose heartbeat is stale) reads as ``interrupted``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from explorer.errors import ExplorerError, RunNotFound

HEARTBEAT_STALE_S = 120.0
ACTIVE = ("queued", "running", "paused")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def runs_root(root: str | Path | None = None) -> Path:
    """The runs folder: ``root``, else ``$GENEX_RUNS_DIR``, else ``./runs``."""
    return Path(root or os.environ.get("GENEX_RUNS_DIR") or "runs")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunSummary:
    """A line of the run history."""

    id: str
    path: Path
    status: str
    name: str
    step: int
    total_steps: int
    created: float
    components: dict[str, str]
    error: str | None
    parent: dict[str, Any] | None


class RunStore:
    """Reads and writes one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec_dict: dict[str, Any], root: str | Path | None = None, name: str | None = None,
               parent: dict[str, Any] | None = None, out: str | Path | None = None) -> "RunStore":
        """A new run folder (``out`` exactly, or ``<root>/<timestamp>-<name>``) holding the spec."""
        if out is not None:
            path = Path(out)
            if path.exists() and any(path.iterdir()):
                raise ExplorerError(f"output folder {str(path)!r} is not empty; choose a new --out or delete it")
            path.mkdir(parents=True, exist_ok=True)
        else:
            base = runs_root(root)
            base.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            stem = f"{stamp}-{_slug(name or spec_dict.get('name') or 'run')}"
            for i in range(1000):
                path = base / (stem if i == 0 else f"{stem}-{i}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
        store = cls(path)
        (path / "samples").mkdir(exist_ok=True)
        atomic_write_json(path / "spec.json", spec_dict)
        store.write_status("queued", step=0, total_steps=int(spec_dict.get("steps", 0)), parent=parent, created=time.time())
        return store

    # -- status -----------------------------------------------------------------------------------
    def write_status(self, status: str, **fields: Any) -> None:
        current = self._read_json("status.json") or {}
        current.update(fields)
        current.update(status=status, pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
        atomic_write_json(self.path / "status.json", current)

    def read_status(self) -> dict[str, Any]:
        """The status, with ``interrupted`` when a run marked active has no live process behind it."""
        st = self._read_json("status.json")
        if st is None:
            return {"status": "unknown", "error": "status.json is missing or unreadable"}
        if st.get("status") in ACTIVE and self._orphaned(st):
            st["status"] = "interrupted"
            st.setdefault("error", None)
            st["error"] = st["error"] or "the process running this run ended without finishing it (killed or crashed); everything up to its last snapshot is kept"
        return st

    @staticmethod
    def _orphaned(st: dict[str, Any]) -> bool:
        if st.get("host") not in (None, socket.gethostname()):
            return time.time() - float(st.get("heartbeat", 0)) > HEARTBEAT_STALE_S
        pid = st.get("pid")
        if not isinstance(pid, int) or not pid_alive(pid):
            return True
        if pid == os.getpid():
            from explorer.manager import live_run_ids

            return st.get("run_id", None) is not None and st["run_id"] not in live_run_ids()
        return time.time() - float(st.get("heartbeat", 0)) > HEARTBEAT_STALE_S

    # -- spec, metrics ------------------------------------------------------------------------------
    def read_spec(self) -> dict[str, Any]:
        spec = self._read_json("spec.json")
        if spec is None:
            raise ExplorerError(f"run {self.id}: spec.json is missing or unreadable")
        return spec

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete record; a half-written last line (a crash mid-write) is skipped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    # -- snapshots ----------------------------------------------------------------------------------
    def save_snapshot(self, step: int, fake: np.ndarray, png: bytes | None, arrays: dict[str, Any] | None = None) -> None:
        stem = self.path / "samples" / f"step_{step:07d}"
        buf = _npy_bytes(fake)
        atomic_write_bytes(stem.with_suffix(".npy"), buf)
        if png is not None:
            atomic_write_bytes(stem.with_suffix(".png"), png)
        if arrays is not None:
            import io

            bio = io.BytesIO()
            np.savez_compressed(bio, **arrays)
            atomic_write_bytes(stem.with_suffix(".npz"), bio.getvalue())

    def snapshot_steps(self) -> list[int]:
        folder = self.path / "samples"
        if not folder.exists():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.npy"))

    def load_samples(self, step: int) -> np.ndarray:
        return np.load(self.path / "samples" / f"step_{step:07d}.npy", allow_pickle=False)

    def load_snapshot_arrays(self, step: int) -> Any | None:
        path = self.path / "samples" / f"step_{step:07d}.npz"
        return np.load(path, allow_pickle=False) if path.exists() else None

    def load_snapshot(self, step: int | None = None) -> Any | None:
        """A saved :class:`~explorer.snapshots.Snapshot` (the full .npz when there is one, else the generated
        samples alone); the last one when ``step`` is None; None when there is none or it cannot be read."""
        from explorer.snapshots import Snapshot, infer_kind, snapshot_from_arrays

        steps = self.snapshot_steps()
        if not steps:
            return None
        step = steps[-1] if step is None else step
        try:
            arrays = self.load_snapshot_arrays(step)
            if arrays is not None:
                with arrays:
                    return snapshot_from_arrays(arrays)
            fake = self.load_samples(step)
        except (OSError, ValueError, KeyError):
            return None
        real = np.zeros((0,) + fake.shape[1:], dtype=np.float32)
        return Snapshot(step=step, kind=infer_kind({"fake": fake}), real=real, fake=fake)

    def snapshot_png(self, step: int) -> Path | None:
        path = self.path / "samples" / f"step_{step:07d}.png"
        return path if path.exists() else None

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import io

        bio = io.BytesIO()
        torch.save(state, bio)
        atomic_write_bytes(self.path / "checkpoint.pt", bio.getvalue())

    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.pt").exists()

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint, read with ``weights_only=True`` (no pickle code runs) onto ``map_location``."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            raise ExplorerError(f"run {self.id} has no checkpoint to resume from (it stopped before its first one)")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise ExplorerError(f"run {self.id}: checkpoint.pt cannot be read safely ({type(exc).__name__}: {exc})") from None

    # -- summary --------------------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        st = self.read_status()
        spec = self._read_json("spec.json") or {}
        comps = {}
        for key in ("data", "latent", "generator", "discriminator", "objective"):
            val = spec.get(key)
            if isinstance(val, dict):
                comps[key] = val.get("name", "?")
        return RunSummary(
            id=self.id, path=self.path, status=st.get("status", "unknown"), name=spec.get("name") or self.id,
            step=int(st.get("step", 0) or 0), total_steps=int(st.get("total_steps", spec.get("steps", 0)) or 0),
            created=float(st.get("created", self.path.stat().st_mtime)), components=comps,
            error=st.get("error"), parent=st.get("parent"),
        )

    def _read_json(self, name: str) -> Any | None:
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, np.asarray(arr), allow_pickle=False)
    return bio.getvalue()


def common_snapshot_steps(stores: Any) -> list[int]:
    """The snapshot steps every one of ``stores`` has saved (for views in step with one another)."""
    sets = [set(s.snapshot_steps()) for s in stores]
    return sorted(set.intersection(*sets)) if sets else []


def iter_runs(root: str | Path | None = None, comparisons: bool = False) -> Iterator[RunStore]:
    """Every run folder in the runs folder; with ``comparisons``, also the runs inside ``genex compare``
    output folders kept there (``<root>/<comparison>/runs/<run>``)."""
    base = runs_root(root)
    if not base.exists():
        return
    for path in sorted(base.iterdir()):
        if path.is_dir() and (path / "spec.json").exists():
            yield RunStore(path)
    if comparisons:
        for folder in sorted(base.iterdir()):
            if folder.is_dir() and (folder / "compare.json").is_file() and (folder / "runs").is_dir():
                yield from iter_runs(folder / "runs")


def list_runs(root: str | Path | None = None, comparisons: bool = True) -> list[RunSummary]:
    """Every run in the folder (and, with ``comparisons``, in the comparisons kept there), newest first."""
    return sorted((s.summary() for s in iter_runs(root, comparisons)), key=lambda r: r.created, reverse=True)


def open_run(run_id: str, root: str | Path | None = None) -> RunStore:
    """A run by id (its folder name), by its path relative to the runs folder (``<comparison>/runs/<run>``,
    as ``genex runs`` prints runs inside comparisons) or by path."""
    p = Path(run_id)
    if p.is_dir() and (p / "spec.json").exists():
        return RunStore(p)
    if not all(RUN_ID_RE.match(part) for part in run_id.split("/")):
        raise RunNotFound(f"{run_id!r} is not a valid run id")
    path = runs_root(root) / run_id
    if not (path / "spec.json").exists():
        raise RunNotFound(f"no run {run_id!r} in {runs_root(root)}; `genex runs` lists them")
    return RunStore(path)
