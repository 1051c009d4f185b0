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

import io
import json
import math
import os
import re
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from explorer.errors import ExplorerError, RunNotFound, shown
from explorer.records import CHANGE, KINDS

HEARTBEAT_STALE_S = 120.0
_live: set[str] = set()  # run ids this process is writing right now (a thread of this process trains them)
_live_lock = threading.Lock()
ACTIVE = ("queued", "running", "paused")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
STATUSES = ("queued", "running", "paused", "finished", "stopped", "failed", "interrupted")
DAMAGED = "damaged"  # a run folder whose files cannot be trusted: listed, openable for what is readable, never fatal
MAX_JSON_FILE = 4 << 20  # spec.json, status.json
MAX_ID_CHARS = 400  # a run id or a path to one (the longest real one is about 200)
MAX_TEXT = 10_000  # error messages and other free text read back from status.json
MAX_TIME = 32503680000.0  # the year 3000: anything later is not a time a run was made
SNAPSHOT_KINDS = ("1d", "2d", "image", "vector")
MAX_SNAPSHOT_BYTES = 512 << 20  # inflated size of one .npz or .npy
STEP_FILE_RE = re.compile(r"^step_(\d{7,12})\.npy$")
TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")


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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {shown(key)} appears twice in one object")
        out[key] = value
    return out


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses duplicate keys (no silent last-wins) and never overflows the stack.

    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError, duplicate keys, nesting) with a short message.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fresh_folder(out: str | Path) -> Path:
    """``--out``: an empty folder, made if missing; ExplorerError saying why not (a file, not empty, unwritable)."""
    if not str(out).strip():
        raise ExplorerError("--out is empty; give the folder the output should go to")
    path = Path(out)
    where = f"output folder {shown(str(path))}"
    try:
        if path.exists() and not path.is_dir():
            raise ExplorerError(f"{where} is a file, not a folder; choose a new --out")
        if path.is_dir() and any(path.iterdir()):
            raise ExplorerError(f"{where} is not empty; choose a new --out or delete it")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplorerError(f"{where} cannot be created: {_os_reason(exc)}; choose another --out") from None
    return path


def _os_reason(exc: OSError) -> str:
    """An OSError's reason in words (``Permission denied``), without the errno and repeated path."""
    return exc.strerror or type(exc).__name__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def mark_live(run_id: str, live: bool = True) -> None:
    """Record that this process is (or no longer is) writing the run ``run_id``."""
    with _live_lock:
        (_live.add if live else _live.discard)(run_id)


def live_run_ids() -> set[str]:
    """Run ids being trained by this process right now."""
    with _live_lock:
        return set(_live)


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
    damaged: list[str] = field(default_factory=list)  # what is wrong with the folder's files (empty: nothing)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= MAX_TIME


def check_status(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """status.json's fields checked one by one: (the fields that can be trusted, what was wrong).

    A field of the wrong type is dropped (and named in the problems), so whatever reads the status
    gets only well-typed values; the run then lists as damaged instead of breaking the listing.
    """
    if not isinstance(raw, dict):
        return {}, [f"status.json holds {type(raw).__name__}, not a JSON object"]
    st: dict[str, Any] = {}
    problems: list[str] = []

    def bad(key: str, what: str) -> None:
        problems.append(f"status.json: {key} is not {what} (got {shown(raw[key], 40)})")

    for key, value in raw.items():
        if key == "status":
            if isinstance(value, str) and value in STATUSES:
                st[key] = value
            else:
                bad(key, "one of " + ", ".join(STATUSES))
        elif key in ("step", "total_steps", "pid"):
            if _is_int(value) and value >= 0:
                st[key] = value
            else:
                bad(key, "a whole number")
        elif key in ("created", "heartbeat"):
            if _is_time(value):
                st[key] = float(value)
            else:
                bad(key, "a time (seconds since 1970)")
        elif key in ("error", "traceback", "host", "run_id"):
            if value is None or isinstance(value, str):
                st[key] = value[:MAX_TEXT] if isinstance(value, str) else value
            else:
                bad(key, "text")
        elif key == "parent":
            if value is None or (isinstance(value, dict) and isinstance(value.get("run"), str) and len(value["run"]) <= MAX_ID_CHARS
                                 and _is_int(value.get("step")) and value["step"] >= 0):
                st[key] = None if value is None else {"run": value["run"], "step": value["step"]}
            else:
                bad(key, "a parent run and step")
        elif key == "final_metrics":
            # NaN is a value a metric may end on (reverse KL with no high-quality sample); infinities are not
            if isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and (math.isnan(v) or abs(v) < 1e308) for v in value.values()):
                st[key] = {k: float(v) for k, v in value.items()}
            else:
                bad(key, "a table of numbers")
        else:
            st[key] = value  # other fields (imported, devices, ...) are shown nowhere that could break
    if "status" not in raw:
        problems.append("status.json has no status")
    return st, problems


def check_record(rec: Any) -> dict[str, Any] | None:
    """A metrics.jsonl record made safe: a JSON object with a whole-number ``step`` (else None); a
    ``kind`` that is one of :data:`records.KINDS`, ``errors`` as short texts by metric name and a change
    record's ``set`` (settings to plain, bounded values) are kept; other values that are not numbers are
    dropped, numbers become floats."""
    if not isinstance(rec, dict):
        return None
    step = rec.get("step")
    if not _is_int(step) or not 0 <= step <= 10**12:
        return None
    out: dict[str, Any] = {"step": step}
    if rec.get("kind") in KINDS:
        out["kind"] = rec["kind"]
    errors = rec.get("errors")
    if isinstance(errors, dict):
        kept = {str(k)[:200]: str(v)[:2000] for k, v in list(errors.items())[:50] if isinstance(v, str)}
        if kept:
            out["errors"] = kept
    if rec.get("kind") == CHANGE:
        settings = _plain(rec.get("set"))
        if not isinstance(settings, dict) or not settings:
            return None  # a change record that does not say what changed
        out["set"] = settings
    for key, value in rec.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        try:
            out[key] = float(value)
        except OverflowError:
            continue
    return out


def _plain(value: Any, depth: int = 0) -> Any:
    """A change's settings as plain, bounded JSON values (numbers, short texts, booleans, short lists and
    small tables, three levels at most), or None for anything else (dropped)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:200]
    if depth >= 3:
        return None
    if isinstance(value, list):
        items = [_plain(v, depth + 1) for v in value[:1000]]
        return [v for v in items if v is not None]
    if isinstance(value, dict):
        out = {}
        for k, v in list(value.items())[:50]:
            v = _plain(v, depth + 1)
            if isinstance(k, str) and len(k) <= 200 and v is not None:
                out[k] = v
        return out
    return None


class SnapshotArrays(dict):
    """A saved snapshot's arrays, checked (names, dtypes, shapes); reads like ``np.load``'s NpzFile."""

    @property
    def files(self) -> list[str]:
        return list(self)

    def __enter__(self) -> "SnapshotArrays":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


def _numeric(name: str, arr: Any) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} is not an array of numbers")
    return arr


def _npy_header(fh: Any, available: int) -> None:
    """Read a .npy header and refuse what np.load would regret: object dtypes (pickles) and a shape
    that claims more bytes than the file holds (numpy would allocate the claimed size first)."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("it holds Python objects (a pickle), not numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        raise ValueError(f"its header claims {nbytes} bytes of data, more than the {available} it holds")


def load_npy(path: Path) -> np.ndarray:
    """A .npy file of plain numbers, header checked before anything is allocated; ValueError otherwise."""
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        size = path.stat().st_size
        if size > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"larger than {MAX_SNAPSHOT_BYTES} bytes")
        with open(path, "rb") as fh:
            _npy_header(fh, size)
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
    except ValueError:
        raise
    except Exception as exc:  # numpy and zipfile raise many kinds for a broken file
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return _numeric(path.name, arr)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, each header checked against its member's size first; ValueError otherwise."""
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 64 or sum(i.file_size for i in infos) > MAX_SNAPSHOT_BYTES:
                raise ValueError(f"more than 64 arrays or {MAX_SNAPSHOT_BYTES} bytes")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"a member {shown(info.filename, 40)} that is not an array")
                with zf.open(info) as fh:
                    _npy_header(fh, info.file_size)
        with np.load(path, allow_pickle=False) as npz:
            return {k: _numeric(k, npz[k]) if k != "kind" else npz[k] for k in npz.files}
    except ValueError:
        raise
    except Exception as exc:  # numpy and zipfile raise many kinds for a broken file
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def check_snapshot(arrays: dict[str, np.ndarray]) -> SnapshotArrays:
    """Validate a snapshot's arrays against what the views draw; ValueError naming the first problem.

    Unknown names are dropped; a known name with the wrong shape or type makes the snapshot damaged.
    """
    for key in ("step", "real", "fake"):
        if key not in arrays:
            raise ValueError(f"no {key!r} array")
    step = _numeric("step", arrays["step"])
    if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
        raise ValueError("step is not a whole number")
    real, fake = _numeric("real", arrays["real"]), _numeric("fake", arrays["fake"])
    kind = None
    if "kind" in arrays:
        k = arrays["kind"]
        if not isinstance(k, np.ndarray) or k.dtype.kind != "U" or k.shape != () or str(k) not in SNAPSHOT_KINDS:
            raise ValueError(f"kind is not one of {', '.join(SNAPSHOT_KINDS)}")
        kind = str(k)
    if kind is None:
        kind = "1d" if "extra_x" in arrays else "2d" if "extra_grid_x" in arrays else \
            "image" if fake.ndim == 4 else {1: "1d", 2: "2d"}.get(fake.shape[-1] if fake.ndim == 2 else 0, "vector")
    if kind == "image":
        if fake.ndim != 4 or fake.shape[1] not in (1, 3) or not (1 <= fake.shape[2] <= 1024 and 1 <= fake.shape[3] <= 1024):
            raise ValueError(f"generated images of shape {fake.shape}, not (n, 1 or 3, height, width)")
    elif kind in ("1d", "2d"):
        d = int(kind[0])
        if fake.ndim != 2 or fake.shape[1] != d:
            raise ValueError(f"generated samples of shape {fake.shape}, not (n, {d})")
    elif fake.ndim != 2:
        raise ValueError(f"generated samples of shape {fake.shape}, not (n, features)")
    if real.ndim != fake.ndim or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real samples of shape {real.shape} do not match the generated ones {fake.shape}")
    out = SnapshotArrays(step=step, kind=np.array(kind), real=real, fake=fake)
    ex = {k[len("extra_"):]: _numeric(k, v) for k, v in arrays.items() if k.startswith("extra_")}

    def shape(name: str, want: tuple[int, ...], at_least: int = 1) -> None:
        if name in ex:
            got = ex[name].shape
            if got != want or (want and min(want) < at_least):
                raise ValueError(f"extra_{name} has shape {got}, not {want}")
            out[f"extra_{name}"] = ex[name]

    shape("fake_raw", tuple(fake.shape), at_least=0)  # the raw G's samples beside the averaged G's (spec ema)
    if kind == "1d":
        if not all(k in ex for k in ("x", "p_data", "p_g")) or ex["x"].ndim != 1:
            raise ValueError("a 1-D snapshot without its density curves (x, p_data, p_g)")
        g = (ex["x"].shape[0],)
        for name in ("x", "p_data", "p_g", "d_star", "critic", "p_g_raw", "d_star_raw"):
            shape(name, g)
        shape("p_data_exact", ())
        if "z" in ex or "g_of_z" in ex:
            m = (ex["z"].shape[0],) if "z" in ex and ex["z"].ndim == 1 else (-1,)
            shape("z", m)
            shape("g_of_z", m)
            shape("g_of_z_raw", m)
    elif kind == "2d":
        if ("grid_x" in ex) != ("grid_y" in ex) or ("critic" in ex and "grid_x" not in ex):
            raise ValueError("a 2-D snapshot with only part of its critic grid")
        if "grid_x" in ex:
            a = ex["grid_x"].shape[0] if ex["grid_x"].ndim == 1 else -1
            b = ex["grid_y"].shape[0] if ex["grid_y"].ndim == 1 else -1
            shape("grid_x", (a,), at_least=2)
            shape("grid_y", (b,), at_least=2)
            shape("critic", (b, a), at_least=2)
        if "manifold" in ex:
            m = ex["manifold"].shape[0]
            shape("manifold", (m, m, 2))
            shape("manifold_raw", (m, m, 2))
        if "arrows" in ex:
            if ex["arrows"].shape[0] > len(fake):
                raise ValueError("more push arrows than generated points")
            shape("arrows", (ex["arrows"].shape[0], 2), at_least=0)
        if "arrows_raw" in ex:  # the raw G's pushes beside the averaged G's (spec ema)
            if ex["arrows_raw"].shape[0] > len(fake):
                raise ValueError("more push arrows than generated points")
            shape("arrows_raw", (ex["arrows_raw"].shape[0], 2), at_least=0)
    elif kind == "image":
        shape("nearest", tuple(fake.shape))
        shape("nearest_dist", (len(fake),), at_least=0)
    return out


class RunStore:
    """Reads and writes one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._status_lock = threading.RLock()  # a heartbeat thread and the trainer both rewrite status.json
        self.snapshot_problem: str | None = None  # why the last snapshot asked for could not be read
        self.skipped_records = 0  # metrics.jsonl lines the last read_metrics() skipped

    @property
    def id(self) -> str:
        return self.path.name

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec_dict: dict[str, Any], root: str | Path | None = None, name: str | None = None,
               parent: dict[str, Any] | None = None, out: str | Path | None = None) -> "RunStore":
        """A new run folder (``out`` exactly, or ``<root>/<timestamp>-<name>``) holding the spec."""
        if out is not None:
            path = fresh_folder(out)
        else:
            base = runs_root(root)
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ExplorerError(f"the runs folder {shown(str(base))} cannot be created: {_os_reason(exc)}; "
                                    "set GENEX_RUNS_DIR to a folder you can write") from None
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
        try:
            (path / "samples").mkdir(exist_ok=True)
            atomic_write_json(path / "spec.json", spec_dict)
            store.write_status("queued", step=0, total_steps=int(spec_dict.get("steps", 0)), parent=parent, created=time.time())
        except OSError as exc:
            raise ExplorerError(f"cannot write the run folder {shown(str(path))}: {_os_reason(exc)}") from None
        return store

    # -- status -----------------------------------------------------------------------------------
    def write_status(self, status: str, **fields: Any) -> None:
        with self._status_lock:
            current = self._read_json("status.json")
            current = current if isinstance(current, dict) else {}
            current.update(fields)
            current.update(status=status, pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
            atomic_write_json(self.path / "status.json", current)

    def heartbeat(self, **fields: Any) -> None:
        """Rewrite the status as it is, with a fresh heartbeat (a paused run's process shows it is alive)."""
        with self._status_lock:
            current = self._read_json("status.json")
            status = current.get("status") if isinstance(current, dict) else None
            self.write_status(status if status in STATUSES else "running", **fields)

    def read_status(self) -> dict[str, Any]:
        """The status, with ``interrupted`` when a run marked active has no live process behind it.

        Every field is checked (:func:`check_status`); a status.json that is missing, unreadable or
        has a field of the wrong type reads as ``damaged``, with ``error`` saying what is wrong.
        """
        raw, problem = self._load_json("status.json")
        if problem:
            return {"status": DAMAGED, "error": f"status.json {problem}", "damaged": [f"status.json {problem}"]}
        st, problems = check_status(raw)
        if problems:
            st.update(status=DAMAGED, damaged=problems, error="; ".join(problems))
            return st
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
            return st.get("run_id", None) is not None and st["run_id"] not in live_run_ids()
        return time.time() - float(st.get("heartbeat", 0)) > HEARTBEAT_STALE_S

    # -- spec, metrics ------------------------------------------------------------------------------
    def read_spec(self) -> dict[str, Any]:
        """The run's spec as saved; ExplorerError when spec.json is missing, unreadable or not a spec."""
        spec, problem = self._load_json("spec.json")
        if problem is None:
            problem = spec_problem(spec)
        if problem:
            raise ExplorerError(f"run {self.id} is damaged: spec.json {problem}; delete the run or restore the file")
        return spec

    def append_change(self, step: int, settings: dict[str, Any]) -> None:
        """Add ``{"step": step, "set": settings}`` to the change log in spec.json (after every entry of a step
        <= ``step``, as :meth:`Spec.with_change` does), rewritten atomically: a live change becomes part of
        the spec, so that resuming or forking the run reproduces it."""
        import bisect

        with self._status_lock:
            spec = self.read_spec()
            changes = spec.get("changes")
            changes = list(changes) if isinstance(changes, list) else []
            steps = [c.get("step", 0) if isinstance(c, dict) and _is_int(c.get("step")) else 0 for c in changes]
            changes.insert(bisect.bisect_right(steps, step), {"step": int(step), "set": settings})
            spec["changes"] = changes
            atomic_write_json(self.path / "spec.json", spec)

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete, well-formed record (:func:`check_record`); a half-written last line (a crash
        mid-write) and lines that are not records are skipped (``skipped_records`` counts them)."""
        path = self.path / "metrics.jsonl"
        self.skipped_records = 0
        out = []
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return []
        except OSError:
            self.skipped_records = 1
            return []
        with fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = check_record(loads_json(line))
                except ValueError:
                    rec = None
                if rec is None:
                    self.skipped_records += 1
                else:
                    out.append(rec)
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
        try:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        except OSError:
            return []
        return sorted(int(m[1]) for m in map(STEP_FILE_RE.match, names) if m)

    def load_samples(self, step: int) -> np.ndarray:
        """The generated samples saved at ``step``; ValueError when the file is not plain numbers (n, ...)."""
        path = self.path / "samples" / f"step_{step:07d}.npy"
        arr = load_npy(path)
        if arr.ndim not in (2, 4) or len(arr) == 0 or (arr.ndim == 4 and (arr.shape[1] not in (1, 3) or max(arr.shape[2:]) > 1024)):
            raise ValueError(f"{path.name} holds an array of shape {arr.shape}, not samples (n, d) or images (n, 1 or 3, h, w)")
        return arr

    def load_snapshot_arrays(self, step: int) -> SnapshotArrays | None:
        """The full snapshot saved at ``step``, checked (:func:`check_snapshot`); None when there is none
        or it is damaged (``snapshot_problem`` says why), so a view falls back to the samples or the PNG."""
        path = self.path / "samples" / f"step_{step:07d}.npz"
        self.snapshot_problem = None
        if not path.exists():
            return None
        try:
            return check_snapshot(load_npz(path))
        except (OSError, ValueError) as exc:
            self.snapshot_problem = f"{path.name} is damaged: {shown(str(exc), 200)[1:-1]}"
            return None

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
        """The checkpoint, read with ``weights_only=True`` (no pickle code runs) onto ``map_location``,
        and checked field by field (:func:`check_checkpoint`)."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            raise ExplorerError(f"run {self.id} has no checkpoint to resume from (it stopped before its first one)")
        if path.is_symlink() or not path.is_file():
            raise ExplorerError(f"run {self.id}: checkpoint.pt is not a regular file; refused")
        return read_checkpoint(path, f"run {self.id}: checkpoint.pt", map_location)

    # -- summary --------------------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        """One line of the history. Never raises for what is in the folder: a run whose files are
        damaged is listed with status ``damaged`` and ``error`` saying what is wrong."""
        st = self.read_status()
        damaged = list(st.get("damaged") or [])
        spec, problem = self._load_json("spec.json")
        problem = problem or spec_problem(spec)
        if problem:
            damaged.insert(0, f"spec.json {problem}")
            spec = {}
        comps = {}
        for key in ("data", "latent", "generator", "discriminator", "objective"):
            val = spec.get(key)
            name = val.get("name") if isinstance(val, dict) else val
            if isinstance(name, str):
                comps[key] = name[:80]
        name = spec.get("name")
        steps = spec.get("steps")
        created = st.get("created")
        if created is None:
            try:
                created = self.path.stat().st_mtime
            except OSError:
                created = 0.0
        return RunSummary(
            id=self.id, path=self.path, status=DAMAGED if damaged else st.get("status", DAMAGED),
            name=name[:200] if isinstance(name, str) and name else self.id,
            step=st.get("step", 0), total_steps=st.get("total_steps", steps if _is_int(steps) else 0),
            created=float(created), components=comps,
            error="; ".join(damaged) if damaged else st.get("error"), parent=st.get("parent"), damaged=damaged,
        )

    def _load_json(self, name: str) -> tuple[Any, str | None]:
        """(the parsed file, None) or (None, what is wrong: missing, too large, not JSON, ...)."""
        path = self.path / name
        try:
            if path.is_symlink() or (path.exists() and not path.is_file()):
                return None, "is not a regular file"
            with open(path, "rb") as fh:
                data = fh.read(MAX_JSON_FILE + 1)
        except FileNotFoundError:
            return None, "is missing"
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror or exc})"
        if len(data) > MAX_JSON_FILE:
            return None, f"is larger than {MAX_JSON_FILE} bytes"
        try:
            return loads_json(data), None
        except ValueError as exc:
            return None, f"is not valid JSON ({shown(str(exc), 120)[1:-1]})"

    def _read_json(self, name: str) -> Any | None:
        return self._load_json(name)[0]

    def clean_leftovers(self) -> list[str]:
        """Remove the temporary files (``.<name>.<pid>.tmp``) a killed writer left behind; returns their names.

        Only when no live process is writing the run: an active run keeps its files, and so does a
        temporary file whose process (another one on this machine) still runs.
        """
        if self.read_status().get("status") in ACTIVE:
            return []
        removed = []
        for folder in (self.path, self.path / "samples"):
            try:
                entries = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
            except OSError:
                continue
            for p in entries:
                m = TMP_RE.match(p.name)
                if not m or not p.is_file() or p.is_symlink():
                    continue
                pid = int(m[1])
                if pid != os.getpid() and pid_alive(pid):
                    continue
                try:
                    p.unlink()
                    removed.append(p.relative_to(self.path).as_posix())
                except OSError:
                    pass
        return removed


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, np.asarray(arr), allow_pickle=False)
    return bio.getvalue()


def spec_problem(spec: Any) -> str | None:
    """What makes a saved spec.json unusable (not an object, a component or ``steps`` of the wrong
    type, absurd nesting or sizes), or None. Whether its plugins are installed is resolve()'s business."""
    if not isinstance(spec, dict):
        return f"holds {type(spec).__name__}, not a JSON object"
    from explorer.errors import SpecError
    from explorer.spec import SLOTS, check_shape

    try:
        check_shape(spec)
    except SpecError as exc:
        return f"is not a spec ({exc})"
    for key, _, _ in SLOTS:
        val = spec.get(key)
        if val is None or isinstance(val, str):
            continue
        if not isinstance(val, dict) or not isinstance(val.get("name"), str):
            return f"is not a spec ({key} is {shown(val, 40)}, not a component)"
    if spec.get("optim") is not None and (not isinstance(spec["optim"], dict) or not all(isinstance(v, dict) for v in spec["optim"].values())):
        return f"is not a spec (optim is {shown(spec['optim'], 40)}, not a table of optimiser tables)"
    if spec.get("metrics") is not None and not isinstance(spec["metrics"], (str, list)):
        return f"is not a spec (metrics is {shown(spec['metrics'], 40)})"
    if spec.get("provenance") is not None and not isinstance(spec["provenance"], dict):
        return f"is not a spec (provenance is {shown(spec['provenance'], 40)}, not a table)"
    for key in ("steps", "seed", "batch_size"):
        if key in spec and not _is_int(spec[key]):
            return f"is not a spec ({key} is {shown(spec[key], 40)}, not a whole number)"
    for key in ("name", "notes"):
        if key in spec and not isinstance(spec[key], str):
            return f"is not a spec ({key} is {shown(spec[key], 40)}, not text)"
    return None


CHECKPOINT_REFUSED = ("{label} refused: it holds Python objects, not only tensors and plain data, and loading "
                      "such objects could run code. Nothing in it was executed. A checkpoint written by "
                      "Generative Explorer holds only state dicts; this one was made or changed elsewhere.")


def read_checkpoint(source: str | Path | bytes, label: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check its fields; ExplorerError with
    one plain sentence otherwise (a pickle refusal says so, never passes torch's own text through)."""
    import pickle

    fileobj = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        state = torch.load(fileobj, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ExplorerError(CHECKPOINT_REFUSED.format(label=label)) from None
    except Exception:  # a truncated zip, not a torch file at all, an unknown storage: torch raises many kinds
        raise ExplorerError(f"{label} is damaged: it is not a readable PyTorch checkpoint (cut short or another file)") from None
    problem = checkpoint_problem(state)
    if problem:
        raise ExplorerError(f"{label} is not a Generative Explorer checkpoint: {problem}")
    return state


def checkpoint_problem(state: Any) -> str | None:
    """What is wrong with a loaded checkpoint's fields (as Pipeline.state_dict writes them), or None."""

    def state_dict(value: Any) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)

    if not isinstance(state, dict):
        return f"it holds {type(state).__name__}, not a table of state dicts"
    if not _is_int(state.get("step")) or state["step"] < 0:
        return f"step is {shown(state.get('step'), 40)}, not a whole number"
    if not state_dict(state.get("G")) or not all(isinstance(v, torch.Tensor) for v in state["G"].values()):
        return "it has no generator weights (G)"
    if state.get("D") is not None and (not state_dict(state["D"]) or not all(isinstance(v, torch.Tensor) for v in state["D"].values())):
        return "its discriminator weights (D) are not tensors"
    if state.get("G_ema") is not None and (not state_dict(state["G_ema"]) or not all(isinstance(v, torch.Tensor) for v in state["G_ema"].values())):
        return "its averaged generator's weights (G_ema) are not tensors"
    for key in ("opt_g", "opt_d", "samplers", "spec"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            return f"{key} is {type(state[key]).__name__}, not a table"
    if "opt_g" in state and state["opt_g"] is None:
        return "opt_g is empty"
    rng = state.get("rng")
    if rng is not None:
        if not isinstance(rng, dict) or not all(isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8
                                               for k in ("data", "noise")) or \
                ("objective" in rng and not (isinstance(rng["objective"], torch.Tensor) and rng["objective"].dtype == torch.uint8)):
            return "its random-generator states (rng) are not byte tensors"
    return None


def common_snapshot_steps(stores: Any) -> list[int]:
    """The snapshot steps every one of ``stores`` has saved (for views in step with one another)."""
    sets = [set(s.snapshot_steps()) for s in stores]
    return sorted(set.intersection(*sets)) if sets else []


def iter_runs(root: str | Path | None = None, comparisons: bool = False) -> Iterator[RunStore]:
    """Every run folder in the runs folder; with ``comparisons``, also the runs inside ``genex compare``
    output folders kept there (``<root>/<comparison>/runs/<run>``)."""
    base = runs_root(root)
    try:
        entries = sorted(base.iterdir()) if base.is_dir() else []
    except OSError:
        return
    for path in entries:
        try:
            if RUN_ID_RE.match(path.name) and path.is_dir() and (path / "spec.json").exists():
                yield RunStore(path)
        except OSError:
            continue
    if comparisons:
        for folder in entries:
            try:
                is_comparison = RUN_ID_RE.match(folder.name) and folder.is_dir() and (folder / "compare.json").is_file() \
                    and (folder / "runs").is_dir()
            except OSError:
                continue
            if is_comparison:
                yield from iter_runs(folder / "runs")


def list_runs(root: str | Path | None = None, comparisons: bool = True) -> list[RunSummary]:
    """Every run in the folder (and, with ``comparisons``, in the comparisons kept there), newest first."""
    return sorted((s.summary() for s in iter_runs(root, comparisons)), key=lambda r: r.created, reverse=True)


def open_run(run_id: str, root: str | Path | None = None, check_spec: bool = True) -> RunStore:
    """A run inside the runs folder, by id (its folder name), by its path relative to the runs folder
    (``<comparison>/runs/<run>``, as ``genex runs`` prints runs inside comparisons), or by a path that
    leads into the runs folder. Nothing outside the runs folder opens, whatever the id (``?run=`` in a
    URL is an id like any other). Opening a run removes the temporary files a killed run left.
    ExplorerError when its spec.json is damaged (unless ``check_spec`` is False: deleting it still works).
    """
    base = runs_root(root)
    if not isinstance(run_id, str) or not run_id.strip():
        raise RunNotFound("no run id given; `genex runs` lists them")
    if len(run_id) > MAX_ID_CHARS or "\x00" in run_id:
        raise RunNotFound(f"{shown(run_id)} is not a valid run id; `genex runs` lists them")
    rel = run_id.strip().rstrip("/")
    store = _inside(base, rel)
    if store is None:  # a path (absolute, or relative to here) that leads into the runs folder
        try:
            target = Path(rel).resolve()
            inside = base.resolve()
        except (OSError, RuntimeError):
            target = inside = None
        if target is not None and target != inside and target.is_relative_to(inside):
            store = _inside(base, target.relative_to(inside).as_posix())
        elif Path(rel).is_absolute() or rel.startswith("."):
            raise RunNotFound(f"{shown(run_id)} is not in the runs folder {str(base)!r}; only runs in it can be opened "
                              "(set GENEX_RUNS_DIR, or --root, to that folder)")
    if store is None:
        if not all(RUN_ID_RE.match(part) for part in rel.split("/")):
            raise RunNotFound(f"{shown(run_id)} is not a valid run id; `genex runs` lists them")
        raise RunNotFound(f"no run {shown(run_id)} in {str(base)!r}; `genex runs` lists them")
    if check_spec:
        store.read_spec()  # a run whose spec.json is damaged cannot be shown or resumed: say so here
    store.clean_leftovers()
    return store


def _inside(base: Path, rel: str) -> RunStore | None:
    """The run ``rel`` (``<id>`` or ``<comparison>/runs/<id>``) in ``base``, or None; never a folder
    whose real path (symbolic links followed) leaves ``base``."""
    parts = rel.split("/")
    if not all(RUN_ID_RE.match(p) for p in parts):
        return None
    if len(parts) == 3 and parts[1] == "runs":
        if not (base / parts[0] / "compare.json").is_file():
            return None
    elif len(parts) != 1:
        return None
    path = base.joinpath(*parts)
    try:
        if not (path.is_dir() and (path / "spec.json").exists()):
            return None
        if not path.resolve().is_relative_to(base.resolve()):
            return None
    except (OSError, RuntimeError):
        return None
    return RunStore(path)
