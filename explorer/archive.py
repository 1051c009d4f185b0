"""Runs in and out of the runs folder: export one as a single archive, import one, delete one.

An archive (.zip or .tar.gz) holds one run folder::

    <run id>/archive.json     format, run id, and the size and SHA-256 of every other file
    <run id>/spec.json, status.json, metrics.jsonl, checkpoint.pt
    <run id>/samples/step_0000500.npy / .png / .npz

Importing treats the archive as hostile until proven otherwise: only those names, regular files
only (no symlinks, hard links or devices), no absolute paths or '..', bounded sizes per file and in
total (checked on the bytes actually read, not on the sizes the archive claims), NumPy arrays
loaded with ``allow_pickle=False``, the checkpoint with ``torch.load(weights_only=True)``, and a
spec that resolves against the plugins installed here. Nothing is unpacked with ``extractall``:
each file is read into memory, checked, and written into a temporary folder that is renamed into
place only when everything passed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from explorer.errors import ExplorerError, SpecError
from explorer.registry import Registry, get_registry
from explorer.runs import ACTIVE, RUN_ID_RE, RunStore, atomic_write_json, runs_root
from explorer.spec import resolve

ARCHIVE_FORMAT = 1
MANIFEST = "archive.json"
FILE_RE = re.compile(r"^(spec\.json|status\.json|metrics\.jsonl|checkpoint\.pt|archive\.json|samples/step_\d{7}\.(npy|png|npz))$")
FINAL_STATUSES = ("finished", "stopped", "failed", "interrupted")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MiB = 1 << 20


class ArchiveError(ExplorerError):
    """An archive that cannot be imported safely; the message says which member and why."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Size bounds for imports (bytes). Checked against the bytes read, so a lying header gains nothing."""

    total: int = 2048 * MiB
    members: int = 20_000
    json: int = 2 * MiB  # spec.json, status.json, archive.json
    metrics: int = 256 * MiB
    checkpoint: int = 1024 * MiB
    samples: int = 64 * MiB  # each .npy / .npz / .png

    def for_name(self, name: str) -> int:
        if name.endswith(".json"):
            return self.json
        if name == "metrics.jsonl":
            return self.metrics
        if name == "checkpoint.pt":
            return self.checkpoint
        return self.samples


# -- export ------------------------------------------------------------------------------------------
def run_files(store: RunStore) -> list[str]:
    """The run's files an archive carries (relative names), in a stable order."""
    names = [n for n in ("spec.json", "status.json", "metrics.jsonl", "checkpoint.pt") if (store.path / n).is_file()]
    samples = store.path / "samples"
    if samples.is_dir():
        names += sorted(f"samples/{p.name}" for p in samples.iterdir() if p.is_file() and FILE_RE.match(f"samples/{p.name}"))
    return names


def write_archive(store: RunStore, fileobj: IO[bytes], fmt: str = "zip") -> None:
    """Write ``store`` as a zip or tar.gz archive into an open binary file."""
    if fmt not in ("zip", "tar.gz"):
        raise ExplorerError(f"unknown archive format {fmt!r}; use zip or tar.gz")
    names = run_files(store)
    if "spec.json" not in names:
        raise ExplorerError(f"run {store.id} has no spec.json; nothing to export")
    blobs = {n: (store.path / n).read_bytes() for n in names}
    manifest = {
        "format": ARCHIVE_FORMAT, "run_id": store.id, "exported": time.time(),
        "files": {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in blobs.items()},
    }
    blobs = {MANIFEST: json.dumps(manifest, indent=2).encode(), **blobs}
    if fmt == "zip":
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in blobs.items():
                zf.writestr(f"{store.id}/{name}", data)
    else:
        with tarfile.open(fileobj=fileobj, mode="w:gz") as tf:
            for name, data in blobs.items():
                info = tarfile.TarInfo(f"{store.id}/{name}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tf.addfile(info, io.BytesIO(data))


def export_bytes(store: RunStore, fmt: str = "zip") -> bytes:
    """The archive as bytes (for a download button)."""
    buf = io.BytesIO()
    write_archive(store, buf, fmt)
    return buf.getvalue()


def export_run(store: RunStore, dest: str | Path) -> Path:
    """Write the archive to ``dest`` (.zip or .tar.gz, by its name); a folder gets ``<run id>.zip``."""
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"{store.id}.zip"
    fmt = "tar.gz" if dest.name.endswith((".tar.gz", ".tgz")) else "zip"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        write_archive(store, fh, fmt)
    os.replace(tmp, dest)
    return dest


# -- reading an untrusted archive ----------------------------------------------------------------------
def _clean_name(raw: str) -> tuple[str, bool]:
    """A member name as posix parts checked for escapes; returns (name without a trailing slash, is_dir_hint)."""
    if not raw or "\\" in raw or "\x00" in raw:
        raise ArchiveError(f"member {raw!r}: backslashes and empty or NUL names are not allowed")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise ArchiveError(f"member {raw!r}: absolute paths are not allowed")
    is_dir = raw.endswith("/")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"member {raw!r}: '..' would escape the runs folder")
    return "/".join(parts), is_dir


def _members(data: bytes, limits: ArchiveLimits) -> dict[str, bytes]:
    """Every regular file of a zip or tar(.gz) archive, size-bounded; links, devices and odd names rejected."""
    out: dict[str, bytes] = {}
    total = 0

    def add(name: str, read: Any, claimed: int) -> None:
        nonlocal total
        if name in out:
            raise ArchiveError(f"member {name!r} appears twice")
        if len(out) >= limits.members:
            raise ArchiveError(f"more than {limits.members} files in the archive")
        rel = name.split("/", 1)[1] if name.count("/") and not name.startswith("samples/") else name
        cap = min(limits.for_name(rel), limits.total - total)
        if claimed > cap:
            raise ArchiveError(f"member {name!r} is {claimed} bytes, more than the {cap} allowed")
        blob = read(cap + 1)
        if len(blob) > cap:
            raise ArchiveError(f"member {name!r} is larger than the {cap} bytes allowed")
        total += len(blob)
        out[name] = blob

    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise ArchiveError(f"not a readable zip file: {exc}") from None
        with zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0xFFFF
                name, is_dir = _clean_name(info.filename)
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"member {info.filename!r} is a symbolic link; links are not allowed")
                if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveError(f"member {info.filename!r} is not a regular file")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"member {info.filename!r} is encrypted")
                if is_dir or info.is_dir():
                    continue
                try:
                    with zf.open(info) as fh:
                        add(name, fh.read, info.file_size)
                except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
                    raise ArchiveError(f"member {info.filename!r} cannot be read: {exc}") from None
        return out
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"not a zip or tar.gz archive ({exc})") from None
    with tf:
        try:
            for m in tf:
                name, _ = _clean_name(m.name)
                if m.issym() or m.islnk():
                    raise ArchiveError(f"member {m.name!r} is a link; links are not allowed")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise ArchiveError(f"member {m.name!r} is not a regular file (device, fifo or other special file)")
                fh = tf.extractfile(m)
                if fh is None:
                    raise ArchiveError(f"member {m.name!r} cannot be read")
                add(name, fh.read, m.size)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"the archive is damaged: {exc}") from None
    return out


def _split_prefix(files: dict[str, bytes]) -> tuple[str | None, dict[str, bytes]]:
    """The one top-level folder every member sits in (or none), and the members relative to it."""
    if not files:
        raise ArchiveError("the archive is empty")
    rel_ok = all(FILE_RE.match(n) for n in files)
    if rel_ok:
        return None, files
    prefixes = {n.split("/", 1)[0] for n in files}
    if len(prefixes) != 1 or any("/" not in n for n in files):
        bad = next((n for n in files if not FILE_RE.match(n.split("/", 1)[-1])), next(iter(files)))
        raise ArchiveError(f"unexpected member {bad!r}: a run archive holds one folder with spec.json, status.json, metrics.jsonl, checkpoint.pt and samples/step_NNNNNNN.npy/.png/.npz")
    prefix = prefixes.pop()
    rel = {n.split("/", 1)[1]: b for n, b in files.items()}
    for n in rel:
        if not FILE_RE.match(n):
            raise ArchiveError(f"unexpected member {prefix}/{n!r}: only spec.json, status.json, metrics.jsonl, checkpoint.pt, archive.json and samples/step_NNNNNNN.npy/.png/.npz are allowed")
    return prefix, rel


def _check_contents(rel: dict[str, bytes], registry: Registry) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate every file's content; returns (spec dict, status dict)."""
    if MANIFEST in rel:
        try:
            manifest = json.loads(rel[MANIFEST])
            listed = manifest.get("files", {}) if isinstance(manifest, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ArchiveError("archive.json is not valid JSON") from None
        for name, info in listed.items():
            if name in rel and isinstance(info, dict) and info.get("sha256") != hashlib.sha256(rel[name]).hexdigest():
                raise ArchiveError(f"{name} does not match the checksum in archive.json: the archive is damaged")
    if "spec.json" not in rel:
        raise ArchiveError("the archive has no spec.json: it is not a run archive")
    spec = _json_object(rel["spec.json"], "spec.json")
    try:
        resolve(spec, registry)
    except SpecError as exc:
        raise ArchiveError(f"the run's spec does not work with the plugins installed here: {exc}") from None
    status = _json_object(rel["status.json"], "status.json") if "status.json" in rel else {}
    if "metrics.jsonl" in rel:
        try:
            rel["metrics.jsonl"].decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError("metrics.jsonl is not UTF-8 text") from None
    for name, blob in rel.items():
        if name.endswith(".npy"):
            _check_arrays(name, blob, npz=False)
        elif name.endswith(".npz"):
            _check_arrays(name, blob, npz=True)
        elif name.endswith(".png") and not blob.startswith(PNG_MAGIC):
            raise ArchiveError(f"{name} is not a PNG image")
    if "checkpoint.pt" in rel:
        _check_checkpoint(rel["checkpoint.pt"])
    return spec, status


def _json_object(blob: bytes, name: str) -> dict[str, Any]:
    try:
        obj = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"{name} must hold a JSON object")
    return obj


def _check_arrays(name: str, blob: bytes, npz: bool) -> None:
    try:
        if npz:
            with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                if sum(i.file_size for i in zf.infolist()) > 8 * len(blob) + 64 * MiB:
                    raise ArchiveError(f"{name} inflates to far more than its size")
            with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
                for key in arrays.files:
                    _plain(name, arrays[key])
        else:
            _plain(name, np.load(io.BytesIO(blob), allow_pickle=False))
    except ArchiveError:
        raise
    except Exception as exc:  # ValueError for object arrays (pickles), BadZipFile, truncated data
        raise ArchiveError(f"{name} is not a plain NumPy array file ({type(exc).__name__}: {exc})") from None


def _plain(name: str, arr: Any) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biufU":
        raise ArchiveError(f"{name} holds {getattr(arr, 'dtype', type(arr))} data; only numbers and text are allowed")


def _check_checkpoint(blob: bytes) -> None:
    import torch

    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArchiveError(f"checkpoint.pt is not a plain tensor checkpoint; refused by torch.load(weights_only=True): {type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(state, dict) or "G" not in state:
        raise ArchiveError("checkpoint.pt is not a Generative Explorer checkpoint (no generator weights 'G')")


def _clean_status(status: dict[str, Any], run_id: str, source: str) -> dict[str, Any]:
    """The stored status, made safe to show: an active status becomes 'interrupted' (nothing trains it here)."""
    keep = {k: v for k, v in status.items() if k not in ("pid", "host", "heartbeat", "traceback")}
    state = keep.get("status")
    if state not in FINAL_STATUSES:
        keep["status"] = "interrupted"
        keep["error"] = keep.get("error") or "imported from an archive of a run that had not finished; resume it from its checkpoint"
    parent = keep.get("parent")
    if parent is not None and not (isinstance(parent, dict) and isinstance(parent.get("run"), str) and isinstance(parent.get("step"), int)):
        keep["parent"] = None
    for key in ("step", "total_steps"):
        if not isinstance(keep.get(key, 0), int):
            keep[key] = 0
    keep.update(run_id=run_id, imported={"time": time.time(), "from": source})
    keep.setdefault("created", time.time())
    return keep


def import_run(source: str | Path | bytes | IO[bytes], root: str | Path | None = None, registry: Registry | None = None,
               limits: ArchiveLimits | None = None, name: str | None = None) -> RunStore:
    """Check an archive and unpack it as a new run in the runs folder; returns its RunStore.

    ``source`` is a path, the archive's bytes or a binary file object (e.g. Streamlit's UploadedFile).
    Raises ArchiveError (an ExplorerError) naming the first problem; nothing is left behind then.
    """
    limits = limits or ArchiveLimits()
    registry = registry or get_registry()
    label = name or (str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "upload"))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ArchiveError(f"archive {str(path)!r} not found")
        if path.stat().st_size > limits.total:
            raise ArchiveError(f"archive {str(path)!r} is larger than {limits.total} bytes")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        data = source.read(limits.total + 1)
        if len(data) > limits.total:
            raise ArchiveError(f"the archive is larger than {limits.total} bytes")
    prefix, rel = _split_prefix(_members(data, limits))
    spec, status = _check_contents(rel, registry)
    base = runs_root(root)
    base.mkdir(parents=True, exist_ok=True)
    stem = prefix if prefix and RUN_ID_RE.match(prefix) else re.sub(r"[^A-Za-z0-9._-]+", "-", str(spec.get("name") or "run")).strip("-.")[:60] or "run"
    tmp = base / f".import-{uuid.uuid4().hex}"
    try:
        (tmp / "samples").mkdir(parents=True)
        for rname, blob in rel.items():
            if rname in (MANIFEST, "status.json"):
                continue
            (tmp / rname).write_bytes(blob)
        for i in range(1000):
            run_id = stem if i == 0 else (f"{stem}-imported" if i == 1 else f"{stem}-imported-{i}")
            dest = base / run_id
            try:
                dest.mkdir()  # claims the name; the rename below replaces this empty folder
            except FileExistsError:
                continue
            atomic_write_json(tmp / "status.json", _clean_status(status, run_id, Path(str(label)).name))
            os.rename(tmp, dest)
            return RunStore(dest)
        raise ArchiveError(f"could not find a free folder name for {stem!r}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- delete ----------------------------------------------------------------------------------------------
def delete_run(store: RunStore | str | Path, root: str | Path | None = None) -> None:
    """Delete a run folder; refuses a run that is queued, running or paused (stop it first)."""
    if not isinstance(store, RunStore):
        from explorer.runs import open_run

        store = open_run(str(store), root)
    path = store.path
    if path.is_symlink() or not (path / "spec.json").is_file():
        raise ExplorerError(f"{str(path)!r} is not a run folder; nothing deleted")
    st = store.read_status()
    if st.get("status") in ACTIVE:
        raise ExplorerError(f"run {store.id} is {st['status']}; stop it before deleting it")
    shutil.rmtree(path)
