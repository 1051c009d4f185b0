"""Runs in and out of the runs folder: export one as a single archive, import one, delete one.

An archive (.zip or .tar.gz) holds one run folder::

    <run id>/archive.json     format, run id, and the size and SHA-256 of every other file
    <run id>/spec.json, status.json, metrics.jsonl, checkpoint.pt
    <run id>/samples/step_0000500.npy / .png / .npz

Importing treats the archive as hostile until proven otherwise: only those names, regular files
only (no symlinks, hard links, devices or NUL bytes in names), no absolute paths or '..', bounded
sizes per file and in total (checked on the bytes actually written, not on the sizes the archive
claims; in all at most ``ratio`` times the archive's own size, so a small bomb stops early), NumPy
arrays loaded with ``allow_pickle=False`` after their headers are checked against their sizes,
PNG pictures checked by their header's dimensions, every JSON file and metrics record checked like
a run folder's (explorer.runs), the checkpoint with ``torch.load(weights_only=True)``, and a spec
that resolves against the plugins installed here. Nothing is unpacked with ``extractall``: each
member streams in chunks into a temporary folder that is renamed into place only when everything
passed; memory stays flat whatever the archive holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import tarfile
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from explorer.errors import ExplorerError, SpecError, shown
from explorer.registry import Registry, get_registry
from explorer.runs import (ACTIVE, RUN_ID_RE, RunStore, atomic_write_json, check_record, check_snapshot, check_status,
                           load_npy, load_npz, loads_json, read_checkpoint, runs_root, spec_problem)
from explorer.spec import resolve

ARCHIVE_FORMAT = 1
MANIFEST = "archive.json"
FILE_RE = re.compile(r"^(spec\.json|status\.json|metrics\.jsonl|checkpoint\.pt|archive\.json|samples/step_\d{7}\.(npy|png|npz))$")
FINAL_STATUSES = ("finished", "stopped", "failed", "interrupted")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MiB = 1 << 20
CHUNK = 1 << 20
MAX_IMAGE_SIDE = 4096


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
    ratio: int = 50  # in all, at most this many times the archive's own size ...
    floor: int = 64 * MiB  # ... or this, whichever is larger

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
class _Budget:
    """Bytes and files an import may still write: every member is counted as it streams to disk."""

    def __init__(self, limits: ArchiveLimits, archive_size: int):
        self.limits = limits
        # Real runs compress a few times at most (weights and samples are noise-like): a small archive
        # that inflates beyond ``ratio`` times its size is a bomb, whatever its headers claim.
        self.total = min(limits.total, max(limits.floor, limits.ratio * archive_size))
        self.used = 0
        self.files = 0


def _clean_name(raw: str) -> tuple[str, bool]:
    """A member name as posix parts checked for escapes; returns (name without a trailing slash, is_dir_hint)."""
    if "\x00" in raw:
        raise ArchiveError(f"member {shown(raw)}: the name holds a NUL byte (a trick to hide a file's real name); refused")
    if not raw or "\\" in raw:
        raise ArchiveError(f"member {shown(raw)}: backslashes and empty names are not allowed")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise ArchiveError(f"member {shown(raw)}: absolute paths are not allowed")
    is_dir = raw.endswith("/")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"member {shown(raw)}: '..' would escape the runs folder")
    return "/".join(parts), is_dir


_ALLOWED = "only spec.json, status.json, metrics.jsonl, checkpoint.pt, archive.json and samples/step_NNNNNNN.npy/.png/.npz are allowed"


class _Layout:
    """Maps member names to run files: every member sits in one top-level folder, or none does."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.decided = False
        self.seen: set[str] = set()

    def relative(self, name: str) -> str:
        if FILE_RE.match(name):
            prefix, rel = None, name
        else:
            prefix, _, rel = name.partition("/")
            if not rel or not FILE_RE.match(rel):
                raise ArchiveError(f"unexpected member {shown(name)}: a run archive holds one folder with spec.json, status.json, "
                                   "metrics.jsonl, checkpoint.pt and samples/step_NNNNNNN.npy/.png/.npz")
        if not self.decided:
            self.prefix, self.decided = prefix, True
        elif prefix != self.prefix:
            raise ArchiveError(f"unexpected member {shown(name)}: the members are not all in one folder; {_ALLOWED}")
        if rel in self.seen:
            raise ArchiveError(f"member {shown(name)} appears twice")
        self.seen.add(rel)
        return rel


def _stream(name: str, rel: str, fh: IO[bytes], claimed: int, dest: Path, budget: _Budget) -> None:
    """Copy one member to ``dest`` in chunks, refusing it as soon as it passes its bound (its kind's
    limit, and what is left of the whole import's): nothing larger ever sits in memory or on disk."""
    budget.files += 1
    if budget.files > budget.limits.members:
        raise ArchiveError(f"more than {budget.limits.members} files in the archive")
    cap = min(budget.limits.for_name(rel), budget.total - budget.used)
    why = f" (an archive of this size may unpack to at most {budget.total} bytes)" if cap < budget.limits.for_name(rel) else ""
    if claimed > cap:
        raise ArchiveError(f"member {shown(name)} is {claimed} bytes, more than the {cap} allowed{why}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(dest, "xb") as out:
        while True:
            chunk = fh.read(min(CHUNK, cap + 1 - written))
            if not chunk:
                break
            written += len(chunk)
            if written > cap:
                raise ArchiveError(f"member {shown(name)} is larger than the {cap} bytes allowed{why}")
            out.write(chunk)
    budget.used += written


def _extract(data: IO[bytes], size: int, tmp: Path, limits: ArchiveLimits) -> str | None:
    """Unpack every regular file of a zip or tar(.gz) archive into ``tmp`` (bounded, streamed; links,
    devices and odd names refused); returns the archive's top-level folder name, if any."""
    budget = _Budget(limits, size)
    layout = _Layout()
    head = data.read(4)
    data.seek(0)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            zf = zipfile.ZipFile(data)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
            raise ArchiveError(f"not a readable zip file ({_one_line(exc)})") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.members:
                raise ArchiveError(f"more than {limits.members} files in the archive")
            for info in infos:
                mode = (info.external_attr >> 16) & 0xFFFF
                name, is_dir = _clean_name(info.orig_filename)
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"member {shown(info.filename)} is a symbolic link; links are not allowed")
                if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveError(f"member {shown(info.filename)} is not a regular file")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"member {shown(info.filename)} is encrypted")
                if is_dir or info.is_dir():
                    continue
                rel = layout.relative(name)
                try:
                    with zf.open(info) as fh:
                        _stream(name, rel, fh, info.file_size, tmp / rel, budget)
                except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
                    raise ArchiveError(f"member {shown(info.filename)} cannot be read: {_one_line(exc)}") from None
        return layout.prefix
    try:
        tf = tarfile.open(fileobj=data, mode="r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise ArchiveError(f"not a zip or tar.gz archive ({_one_line(exc)})") from None
    with tf:
        try:
            count = 0
            while True:
                m = tf.next()
                if m is None:
                    break
                count += 1
                if count > limits.members:
                    raise ArchiveError(f"more than {limits.members} files in the archive")
                name, _ = _clean_name(m.name)
                if m.issym() or m.islnk():
                    raise ArchiveError(f"member {shown(m.name)} is a link; links are not allowed")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise ArchiveError(f"member {shown(m.name)} is not a regular file (device, fifo or other special file)")
                rel = layout.relative(name)
                fh = tf.extractfile(m)
                if fh is None:
                    raise ArchiveError(f"member {shown(m.name)} cannot be read")
                _stream(name, rel, fh, m.size, tmp / rel, budget)
                tf.members = []  # nothing needs the headers already read: keep memory flat
        except ArchiveError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
            raise ArchiveError(f"the archive is damaged (cut short or corrupted): {_one_line(exc)}") from None
    return layout.prefix


def _one_line(exc: BaseException) -> str:
    """An exception's message on one short line (library messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_contents(tmp: Path, registry: Registry) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate every unpacked file's content; returns (spec dict, status dict)."""
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    if not files:
        raise ArchiveError("the archive is empty")
    if MANIFEST in files:
        manifest = _json_file(tmp / MANIFEST, MANIFEST)
        listed = manifest.get("files", {})
        if not isinstance(listed, dict):
            raise ArchiveError(f"archive.json is damaged: 'files' is {type(listed).__name__}, not a table of file -> size and checksum")
        for name, info in listed.items():
            if name in files and name != MANIFEST:
                want = info.get("sha256") if isinstance(info, dict) else None
                if want != _sha256(tmp / name):
                    raise ArchiveError(f"{shown(name)} does not match the checksum in archive.json: the archive is damaged")
    if "spec.json" not in files:
        raise ArchiveError("the archive has no spec.json: it is not a run archive")
    spec = _json_file(tmp / "spec.json", "spec.json")
    problem = spec_problem(spec)
    if problem:
        raise ArchiveError(f"spec.json {problem}")
    try:
        resolve(spec, registry)
    except SpecError as exc:
        raise ArchiveError(f"the run's spec does not work with the plugins installed here: {exc}") from None
    status: dict[str, Any] = {}
    if "status.json" in files:
        status, problems = check_status(_json_file(tmp / "status.json", "status.json"))
        if problems:
            raise ArchiveError(f"the run's status.json is damaged: {'; '.join(problems)}")
    if "metrics.jsonl" in files:
        _check_metrics(tmp / "metrics.jsonl")
    for name in files:
        path = tmp / name
        try:
            if name.endswith(".npy"):
                arr = load_npy(path)
                if arr.ndim < 2:
                    raise ValueError(f"an array of shape {arr.shape}, not (n, ...)")
            elif name.endswith(".npz"):
                check_snapshot(load_npz(path))
        except ValueError as exc:
            raise ArchiveError(f"{name} is not a plain NumPy array file of a snapshot ({_one_line(exc)})") from None
        if name.endswith(".png"):
            _check_png(name, path)
    if "checkpoint.pt" in files:
        try:
            read_checkpoint(tmp / "checkpoint.pt", "checkpoint.pt")
        except ExplorerError as exc:
            raise ArchiveError(str(exc)) from None
    return spec, status


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_file(path: Path, name: str) -> dict[str, Any]:
    try:
        obj = loads_json(path.read_bytes())
    except ValueError as exc:
        raise ArchiveError(f"{name} is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"{name} must hold a JSON object, not {type(obj).__name__}")
    return obj


def _check_metrics(path: Path) -> None:
    """Every line a record with a whole-number step; only a last line cut short (a crash mid-write) may be broken."""
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = check_record(loads_json(line))
        except ValueError:
            rec = None
            if i == len(lines):  # no newline after it: a half-written last line
                continue
        if rec is None:
            raise ArchiveError(f"metrics.jsonl line {i} is not a metrics record (a JSON object with a whole-number step): "
                               f"{shown(line.decode('utf-8', 'replace'), 60)}")


def _check_png(name: str, path: Path) -> None:
    """A PNG's header (IHDR) decoded: its dimensions bounded, and the file no larger than its pixels could need."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        raise ArchiveError(f"{name} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise ArchiveError(f"{name} claims {width} x {height} pixels; snapshot pictures are at most {MAX_IMAGE_SIDE} on a side")
    if size > width * height * 8 + height + 64 * 1024:  # 16-bit RGBA, stored without compression, plus chunks
        raise ArchiveError(f"{name} is {size} bytes, more than a {width} x {height} picture can hold: refused")
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()  # chunk structure and checksums, without decoding the pixels
    except Exception as exc:  # PIL raises many kinds for a broken file
        raise ArchiveError(f"{name} is a damaged PNG image ({_one_line(exc)})") from None


def _clean_status(status: dict[str, Any], run_id: str, source: str) -> dict[str, Any]:
    """The stored status (already checked), made safe to show: an active status becomes 'interrupted' (nothing trains it here)."""
    keep = {k: v for k, v in status.items() if k not in ("pid", "host", "heartbeat", "traceback")}
    state = keep.get("status")
    if state not in FINAL_STATUSES:
        keep["status"] = "interrupted"
        keep["error"] = keep.get("error") or "imported from an archive of a run that had not finished; resume it from its checkpoint"
    keep.update(run_id=run_id, imported={"time": time.time(), "from": source[:200]})
    keep.setdefault("created", time.time())
    return keep


def import_run(source: str | Path | bytes | IO[bytes], root: str | Path | None = None, registry: Registry | None = None,
               limits: ArchiveLimits | None = None, name: str | None = None) -> RunStore:
    """Check an archive and unpack it as a new run in the runs folder; returns its RunStore.

    ``source`` is a path, the archive's bytes or a binary file object (e.g. Streamlit's UploadedFile).
    Members stream into a temporary folder inside the runs folder, each bounded as it is written
    (its kind's limit, and at most ``limits.ratio`` times the archive's size in all), then every
    file is checked; only then is the folder renamed into place. Raises ArchiveError (an
    ExplorerError) naming the first problem; nothing is left behind then.
    """
    limits = limits or ArchiveLimits()
    registry = registry or get_registry()
    label = name or (str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "upload"))
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            if not path.is_file():
                raise ArchiveError(f"archive {shown(str(path))} not found" + (" (it is a directory)" if path.is_dir() else ""))
            size = path.stat().st_size
        except OSError as exc:
            raise ArchiveError(f"archive {shown(str(path))} cannot be read: {exc.strerror or exc}") from None
        if size > limits.total:
            raise ArchiveError(f"archive {shown(str(path))} is larger than {limits.total} bytes")
        data: IO[bytes] = open(path, "rb")
    elif isinstance(source, (bytes, bytearray)):
        size, data = len(source), io.BytesIO(bytes(source))
    else:
        blob = source.read(limits.total + 1)
        if len(blob) > limits.total:
            raise ArchiveError(f"the archive is larger than {limits.total} bytes")
        size, data = len(blob), io.BytesIO(blob)
    base = runs_root(root)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_imports(base)
    tmp = base / f".import-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        with data:
            prefix = _extract(data, size, tmp, limits)
        (tmp / "samples").mkdir(exist_ok=True)
        spec, status = _check_contents(tmp, registry)
        for leftover in (MANIFEST, "status.json"):
            (tmp / leftover).unlink(missing_ok=True)
        stem = prefix if prefix and RUN_ID_RE.match(prefix) else re.sub(r"[^A-Za-z0-9._-]+", "-", str(spec.get("name") or "run")).strip("-.")[:60] or "run"
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


def _remove_stale_imports(base: Path, age_s: float = 3600.0) -> None:
    """Temporary import folders left by a process killed mid-import (older than an hour)."""
    try:
        for p in base.glob(".import-*"):
            if p.is_dir() and not p.is_symlink() and time.time() - p.stat().st_mtime > age_s:
                shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass


# -- delete ----------------------------------------------------------------------------------------------
def delete_run(store: RunStore | str | Path, root: str | Path | None = None) -> None:
    """Delete a run folder; refuses a run that is queued, running or paused (stop it first)."""
    if not isinstance(store, RunStore):
        from explorer.runs import open_run

        store = open_run(str(store), root, check_spec=False)
    path = store.path
    if path.is_symlink() or not (path / "spec.json").is_file():
        raise ExplorerError(f"{str(path)!r} is not a run folder; nothing deleted")
    st = store.read_status()
    if st.get("status") in ACTIVE:
        raise ExplorerError(f"run {store.id} is {st['status']}; stop it before deleting it")
    shutil.rmtree(path)
