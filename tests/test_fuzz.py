"""Issue #12: property-based fuzzing of everything read from outside (hypothesis).

Generated specs (files and CLI), run archives, app URL parameters (``?spec=``, ``?run=``, ``vary=``)
and damaged run folders (files cut short as a kill -9 mid-write leaves them, bytes flipped, replaced
or removed). Each input must end in a result or one clear ExplorerError (exit 2 in the CLI): never a
traceback, never a write outside the runs folder, never a hang (each call runs under an alarm).

Bounded in time: a fixed number of inputs per test (``GENEX_FUZZ_SCALE`` multiplies them, default 1),
and a time budget as a backstop (``GENEX_FUZZ_SECONDS``, default 30, shared by the four tests: past
it, the remaining inputs are generated but not tried). With ``GENEX_FUZZ_REPORT=path`` the counts
are written there as JSON (the README's reliability figures).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import signal
import tarfile
import time
import uuid
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from explorer import archive, cli, compare
from explorer.errors import ExplorerError
from explorer.runs import STATUSES, RunStore, iter_runs, list_runs, open_run
from explorer.spec import SLOTS, TOP_KEYS, load_spec_file, parse_spec
from explorer.ui import urlspec
from hostile_support import TINY, copy_run, run_members, train_tiny

BUDGET_S = float(os.environ.get("GENEX_FUZZ_SECONDS", "30"))
SCALE = float(os.environ.get("GENEX_FUZZ_SCALE", "1"))
SHARE = {"specs": 0.25, "archives": 0.35, "urls": 0.15, "folders": 0.25}
ALARM_S = 30  # any single input taking longer than this is a hang
STATS: Counter = Counter()
# Generate only (no shrinking, which has no time bound): a failure is reported as found, with its blob to replay.
def fuzz(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None, derandomize=False,
                    print_blob=True, phases=[Phase.generate], suppress_health_check=list(HealthCheck))


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: int = ALARM_S):
    def alarm(*_):
        raise Hang(f"an input took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Budget:
    def __init__(self, name: str):
        self.name = name
        self.end = time.monotonic() + BUDGET_S * SHARE[name]

    def spent(self) -> bool:
        return time.monotonic() > self.end


def clear(exc: BaseException) -> None:
    """The error a user sees: an ExplorerError of one short line."""
    assert isinstance(exc, ExplorerError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text and len(text) < 3000, text[:500]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> RunStore:
    return train_tiny(tmp_path_factory.mktemp("source"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A runs folder, an inputs folder and an empty working folder; after the test, nothing else exists."""
    runs, inputs, cwd = tmp_path / "runs", tmp_path / "inputs", tmp_path / "cwd"
    for p in (runs, inputs, cwd):
        p.mkdir()
    monkeypatch.setenv("GENEX_RUNS_DIR", str(runs))
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    monkeypatch.chdir(cwd)
    yield runs, inputs
    assert files_under(cwd) == set(), "something was written outside the runs folder"
    assert {p.name for p in tmp_path.iterdir()} == {"runs", "inputs", "cwd"}, "something was written outside the runs folder"
    assert not list(runs.glob(".import-*")), "an import left its temporary folder"


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("GENEX_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps(dict(sorted(STATS.items())), indent=1))


# -- specs --------------------------------------------------------------------------------------------------
NAMES = ["ring8", "grid25", "gaussian", "uniform", "mlp", "dcgan", "minimax", "nonsaturating", "mmd", "image-folder",
         "digits", "mixture-1d", "auto", "none", "adam", "sgd", "cosine", "cpu"]
KEYS = sorted(TOP_KEYS) + ["name", "std", "lr", "betas", "width", "depth", "generator", "discriminator", "path", "dim"]
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(NAMES) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4), max_leaves=12)
slot_values = st.sampled_from(NAMES) | st.fixed_dictionaries({"name": st.sampled_from(NAMES) | scalars},
                                                             optional={k: values for k in ("std", "width", "depth", "dim", "path")})
spec_dicts = st.fixed_dictionaries({}, optional={
    **{key: slot_values for key, _, _ in SLOTS},
    "steps": st.integers(-5, 10**8) | values, "seed": st.integers(-5, 2**40) | values, "batch_size": st.integers(0, 10**6) | values,
    "notes": st.text(max_size=30) | st.builds(lambda n: "x" * n, st.integers(9_990, 10_010)) | values,
    "name": st.text(max_size=30) | values, "metrics": st.sampled_from(["auto", "none"]) | st.lists(st.sampled_from(NAMES) | values, max_size=3),
    "optim": st.fixed_dictionaries({}, optional={"generator": st.dictionaries(st.sampled_from(["lr", "betas", "name", "schedule", "x"]), values, max_size=3),
                                                 "discriminator": values}) | values,
    "provenance": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2) | values,
}) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), values, max_size=6)


def _to_text(raw, how: str) -> tuple[bytes, str]:
    if how == "toml":
        try:
            return tomli_w.dumps(raw).encode(), ".toml"
        except (TypeError, ValueError):
            how = "json"
    text = json.dumps(raw, allow_nan=True)
    if how == "deep":
        n = 40 + len(text) % 5000
        text = text[:-1] + (', "notes": ' if len(text) > 2 else '"notes": ') + "[" * n + "]" * n + "}"
    elif how == "duplicate" and len(text) > 2:
        text = text[:-1] + ', "steps": 1, "steps": 2}'
    return text.encode(), ".json"


@st.composite
def spec_files(draw):
    raw = draw(spec_dicts)
    how = draw(st.sampled_from(["json", "toml", "deep", "duplicate", "utf16", "latin1", "bytes", "cut", "path"]))
    if how == "path":  # not a file at all: empty, missing, a directory, odd names, a wrong ending
        return draw(st.sampled_from(["", " ", "missing.toml", ".", "/", "x" * 5000 + ".toml", "spec", "spec.yaml",
                                     "a\x00b.toml", "dir.toml", "/dev/null", "/proc/self/mem.json"])), None
    data, suffix = _to_text(raw, "toml" if how == "toml" else "deep" if how == "deep" else "duplicate" if how == "duplicate" else "json")
    if how == "utf16":
        data = data.decode().encode("utf-16")
    elif how == "latin1":
        data = data + "é".encode("latin-1")
    elif how == "bytes":
        data = draw(st.binary(max_size=200))
    elif how == "cut":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    return suffix, data


@fuzz(150)
@given(case=spec_files())
def test_fuzz_specs_and_cli_arguments(case, sandbox, capsys, tmp_path_factory):
    runs, inputs = sandbox
    if not hasattr(test_fuzz_specs_and_cli_arguments, "budget"):
        test_fuzz_specs_and_cli_arguments.budget = Budget("specs")
    if test_fuzz_specs_and_cli_arguments.budget.spent():
        return
    first, data = case
    if data is None:
        path = first if first in ("", " ") or first.startswith("/") else str(inputs / first)
        (inputs / "dir.toml").mkdir(exist_ok=True)
    else:
        path = str(inputs / f"spec{first}")
        Path(path).write_bytes(data)
    STATS["specs tried"] += 1
    with no_hang():
        try:
            parse_spec(load_spec_file(path), steps=1, device="cpu", batch_size=2)
            STATS["specs accepted"] += 1
            return  # a valid spec: training it is not this test's business
        except Exception as exc:  # noqa: BLE001 - the assertion names anything that is not a clear error
            clear(exc)
        before = files_under(runs)
        code = cli.main(["run", path, "--steps", "1", "--device", "cpu", "-q"])
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("genex run: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert files_under(runs) == before
    STATS["specs refused with exit 2"] += 1


# -- archives -----------------------------------------------------------------------------------------------
HOSTILE_NAMES = ["../escape", "/abs/spec.json", "r1/../../x", "r1\\spec.json", "r1/plugin.py", "r2/spec.json", "spec.json",
                 "r1/samples/step_1.npy", "r1/samples/", "r1/", "C:/x", "r1/samples/step_0000010.npy/x", "r1//spec.json"]


def _npy_blob(draw) -> bytes:
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    dtype = draw(st.sampled_from(["f4", "f8", "i8", "u1", "U3", "b1", "c8"]))
    bio = io.BytesIO()
    np.save(bio, np.zeros(shape, dtype=dtype))
    return bio.getvalue()


def _npz_blob(draw) -> bytes:
    keys = draw(st.lists(st.sampled_from(["step", "kind", "real", "fake", "extra_x", "extra_p_data", "extra_p_g", "extra_grid_x",
                                          "extra_grid_y", "extra_critic", "extra_manifold", "extra_nearest", "junk"]), max_size=8, unique=True))
    arrays = {}
    for k in keys:
        if k == "kind":
            arrays[k] = np.array(draw(st.sampled_from(["1d", "2d", "image", "vector", "evil"])))
        elif k == "step":
            arrays[k] = np.array(draw(st.integers(-3, 10**6)))
        else:
            arrays[k] = np.zeros(tuple(draw(st.lists(st.integers(0, 6), max_size=4))), dtype=draw(st.sampled_from(["f4", "i2", "U2"])))
    bio = io.BytesIO()
    np.savez(bio, **arrays)
    return bio.getvalue()


def _png_blob(draw) -> bytes:
    import struct

    w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return head + bytes(draw(st.integers(0, 1 << 20)))


@st.composite
def archives(draw, base: dict[str, bytes]):
    members = dict(base)
    names = list(members)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "random", "cut", "json", "npy", "npz", "png", "rename", "add", "zeros", "jsonl"]))
        name = draw(st.sampled_from(names))
        if op == "drop":
            members.pop(name, None)
        elif op == "random":
            members[name] = draw(st.binary(max_size=300))
        elif op == "cut" and name in members:
            members[name] = members[name][: draw(st.integers(0, len(members[name])))]
        elif op == "json":
            members[draw(st.sampled_from(["r1/spec.json", "r1/status.json", "r1/archive.json"]))] = json.dumps(draw(values)).encode()
        elif op == "jsonl":
            members["r1/metrics.jsonl"] = "\n".join(json.dumps(draw(values)) for _ in range(draw(st.integers(1, 4)))).encode()
        elif op == "npy":
            members[draw(st.sampled_from([n for n in names if n.endswith(".npy")] or ["r1/samples/step_0000010.npy"]))] = _npy_blob(draw)
        elif op == "npz":
            members[draw(st.sampled_from([n for n in names if n.endswith(".npz")] or ["r1/samples/step_0000010.npz"]))] = _npz_blob(draw)
        elif op == "png":
            members["r1/samples/step_0000010.png"] = _png_blob(draw)
        elif op == "rename" and name in members:
            members[draw(st.sampled_from(HOSTILE_NAMES))] = members.pop(name)
        elif op == "add":
            members[draw(st.sampled_from(HOSTILE_NAMES))] = draw(st.binary(max_size=50))
        elif op == "zeros":  # a bomb: a member of zeros that deflates to almost nothing
            members[name] = bytes(draw(st.integers(1, 80)) << 20)
    fmt = draw(st.sampled_from(["zip", "zip", "tar.gz", "tar", "bytes"]))
    if fmt == "bytes":
        return draw(st.binary(max_size=2000))
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for n, b in members.items():
                zf.writestr(zipfile.ZipInfo(n) if not n.endswith("/") else n, b, compress_type=zipfile.ZIP_DEFLATED)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if fmt == "tar.gz" else "w") as tf:
            for n, b in members.items():
                info = tarfile.TarInfo(n)
                info.type = draw(st.sampled_from([tarfile.REGTYPE] * 8 + [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE]))
                info.linkname = "/etc/passwd" if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                info.size = len(b) if info.type == tarfile.REGTYPE else 0
                tf.addfile(info, io.BytesIO(b) if info.type == tarfile.REGTYPE else None)
    blob = buf.getvalue()
    for _ in range(draw(st.integers(0, 2))):  # damage the archive itself
        if draw(st.booleans()) and blob:
            i = draw(st.integers(0, len(blob) - 1))
            blob = blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1:]
        else:
            blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


def check_opened(store: RunStore) -> None:
    """An imported run reads back without surprises."""
    store.summary()
    store.read_metrics()
    for step in store.snapshot_steps():
        store.load_snapshot(step)
    try:
        open_run(store.id).read_spec()
        store.load_checkpoint()
    except ExplorerError as exc:
        clear(exc)


@pytest.fixture(scope="module")
def base_members(source) -> dict[str, bytes]:
    return run_members(source)


@fuzz(60)
@given(data=st.data())
def test_fuzz_run_archives(data, sandbox, base_members):
    runs, _ = sandbox
    if not hasattr(test_fuzz_run_archives, "budget"):
        test_fuzz_run_archives.budget = Budget("archives")
    blob = data.draw(archives(base_members))  # drawn first: what is drawn never depends on the clock
    if test_fuzz_run_archives.budget.spent():
        return
    STATS["archives tried"] += 1
    with no_hang():
        try:
            store = archive.import_run(blob, root=runs)
        except Exception as exc:  # noqa: BLE001
            clear(exc)
            STATS["archives refused with a clear error"] += 1
            return
        assert store.path.parent == runs
        check_opened(store)
    STATS["archives imported"] += 1


# -- app URL parameters ---------------------------------------------------------------------------------------
def _token(payload: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(payload, 9)).decode().rstrip("=")


tokens = (st.text(max_size=200) | st.builds(lambda v: _token(json.dumps(v).encode()), values | spec_dicts)
          | st.builds(lambda n: _token(b"[" * n + b"]" * n), st.integers(1, 60_000))
          | st.builds(lambda b: _token(b), st.binary(max_size=300))
          | st.builds(lambda t, k: t[:k], st.builds(lambda v: _token(json.dumps(v).encode()), spec_dicts), st.integers(0, 60))
          | st.builds(lambda n: "A" * n, st.integers(7_990, 8_010)))
run_ids = (st.text(max_size=300) | st.sampled_from(["..", ".", "/", "/etc", "/etc/passwd", "../outside", "good/../../outside",
                                                    "good", "good/", "./good", "x" * 10_000, "comp/runs/good", "comp/runs/../../outside"])
           | st.builds(lambda n: "a" * n, st.integers(100, 20_000)))
varies = st.text(max_size=60) | st.builds(lambda f, v: f"{f}={v}", st.sampled_from(["objective", "data", "optim.generator.lr", "k_d", "x.y",
                                                                                   "generator.width", "", "notes"]),
                                          st.text(max_size=40) | st.sampled_from(["", ",", "[", "[" * 500, "1e-3,1e400", '"a,b"']))


@fuzz(120)
@given(token=tokens, run_id=run_ids, vary=varies)
def test_fuzz_app_url_parameters(token, run_id, vary, sandbox, source, tmp_path):
    runs, _ = sandbox
    if not hasattr(test_fuzz_app_url_parameters, "budget"):
        test_fuzz_app_url_parameters.budget = Budget("urls")
    if test_fuzz_app_url_parameters.budget.spent():
        return
    if not (runs / "good").exists():
        copy_run(source, runs, "good")
    STATS["url parameters tried"] += 3
    with no_hang():
        for case in ("spec", "run", "vary"):
            try:
                if case == "spec":
                    raw = urlspec.spec_from_query({"spec": token})
                    parse_spec(raw, steps=1)
                elif case == "run":
                    store = open_run(run_id)
                    assert store.path.resolve().is_relative_to(runs.resolve()), run_id
                    assert store.path.resolve() == (runs / "good").resolve()
                else:
                    field, vals = compare.parse_vary(vary)
                    compare.expand_variants(TINY, [(field, vals)], 1)
                STATS["url parameters accepted"] += 1
            except ValueError as exc:  # the Compare page shows these as an error too (compare.expand_variants)
                assert case == "vary" and "\n" not in str(exc), exc
                STATS["url parameters refused with a clear error"] += 1
            except Exception as exc:  # noqa: BLE001
                clear(exc)
                STATS["url parameters refused with a clear error"] += 1


# -- run folders damaged as a crash (kill -9 mid-write), a disk or a person leaves them -------------------------
DAMAGE_STEPS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["cut", "flip", "json", "remove", "random"]),
                                   st.integers(0, 10**9), st.integers(1, 255), values, st.binary(max_size=200)), min_size=1, max_size=3)


@fuzz(60)
@given(plan=DAMAGE_STEPS)
def test_fuzz_damaged_run_folders_never_break_a_listing(plan, sandbox, source):
    runs, _ = sandbox
    if not hasattr(test_fuzz_damaged_run_folders_never_break_a_listing, "budget"):
        test_fuzz_damaged_run_folders_never_break_a_listing.budget = Budget("folders")
    if test_fuzz_damaged_run_folders_never_break_a_listing.budget.spent():
        return
    if not (runs / "good").exists():
        copy_run(source, runs, "good")
    store = copy_run(source, runs, f"bad-{uuid.uuid4().hex[:12]}")
    files = sorted(p for p in store.path.rglob("*") if p.is_file())
    for index, how, at, flip, value, junk in plan:
        target = files[index % len(files)]
        if not target.exists():
            continue
        blob = target.read_bytes()
        if how == "cut":  # what a kill -9 in the middle of a write leaves
            target.write_bytes(blob[: at % max(len(blob), 1)])
        elif how == "flip" and blob:
            i = at % len(blob)
            target.write_bytes(blob[:i] + bytes([blob[i] ^ flip]) + blob[i + 1:])
        elif how == "json":
            target.write_text(json.dumps(value))
        elif how == "remove":
            target.unlink()
        else:
            target.write_bytes(junk)
    STATS["damaged run folders tried"] += 1
    with no_hang():
        listed = {r.id: r for r in list_runs(runs)}
        assert listed["good"].status == "finished"
        assert set(listed) == {s.id for s in iter_runs(runs)}
        if (store.path / "spec.json").exists():  # without one a folder is not a run (and is not listed)
            assert math.isfinite(listed[store.id].created) and listed[store.id].status in (*STATUSES, "damaged")
        check = RunStore(store.path)
        for rec in check.read_metrics():
            assert isinstance(rec["step"], int)
        for step in check.snapshot_steps():
            check.load_snapshot(step)
        try:
            open_run(store.id).read_spec()
            check.load_checkpoint()
        except Exception as exc:  # noqa: BLE001
            clear(exc)
        assert open_run("good").load_checkpoint()["step"] == 20
    STATS["damaged run folders survived"] += 1
