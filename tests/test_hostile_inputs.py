"""Issue #12: every hostile or careless input the issue lists gets one clear line (exit 2 in the CLI, an
error box in the app), never a traceback, a hang, or a write outside the runs folder."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import archive, cli
from explorer.archive import ArchiveError, ArchiveLimits
from explorer.errors import ExplorerError, RunNotFound, SpecError
from explorer.runs import RunStore, open_run
from explorer.spec import load_spec_file, parse_spec, resolve
from explorer.ui import urlspec
from hostile_support import TINY, copy_run, make_tar, make_zip, run_members, train_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> RunStore:
    return train_tiny(tmp_path_factory.mktemp("source"))


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GENEX_RUNS_DIR", str(root))
    return root


def genex(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "\x1b[" not in err


# -- spec files -------------------------------------------------------------------------------------------
def test_a_utf16_spec_file_says_it_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_bytes('data = "ring8"\n'.encode("utf-16"))
    code, _, err = genex(capsys, "run", str(path))
    assert code == 2 and "not UTF-8 text (it looks like UTF-16)" in err
    one_clear_line(err)


def test_a_spec_file_of_latin1_bytes_says_it_is_not_utf8(tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b'{"notes": "caf\xe9"}')
    with pytest.raises(SpecError, match="not UTF-8 text: byte 14"):
        load_spec_file(path)


@pytest.mark.parametrize("suffix,text", [
    (".json", "[" * 3000 + "]" * 3000),
    (".json", '{"notes": ' + "[" * 30_000 + "]" * 30_000 + "}"),
    (".toml", "x = " + "[" * 3000 + "]" * 3000),
    (".toml", "x = " + "{a = " * 3000 + "1" + "}" * 3000),
    (".json", '{"data": ' + '{"a": ' * 20 + "1" + "}" * 20 + "}"),  # parses, but nested deeper than a spec ever is
])
def test_deeply_nested_specs_are_refused_without_a_recursion_error(tmp_path, capsys, suffix, text):
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    code, _, err = genex(capsys, "run", str(path))
    assert code == 2 and "deep" in err
    one_clear_line(err)


@pytest.mark.parametrize("provenance", [5, "ring8", ["a", "b"], {"data": 3}, {"data": None}])
def test_a_provenance_of_the_wrong_type_is_one_clear_error_everywhere(tmp_path, capsys, good_run, runs, provenance):
    with pytest.raises(SpecError, match="provenance: expected a table"):
        resolve({**TINY, "provenance": provenance})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**TINY, "provenance": provenance}))
    code, _, err = genex(capsys, "run", str(path))  # the CLI
    assert code == 2 and "provenance" in err
    one_clear_line(err)
    token = base64.urlsafe_b64encode(zlib.compress(json.dumps({"provenance": provenance}).encode())).decode()
    with pytest.raises(SpecError, match="provenance"):  # an app link
        resolve(urlspec.decode_spec(token))
    members = run_members(good_run)
    members["r1/spec.json"] = json.dumps({**json.loads(members["r1/spec.json"]), "provenance": provenance}).encode()
    with pytest.raises(ArchiveError, match="provenance"):  # an archive
        archive.import_run(make_zip(members), root=runs)


@pytest.mark.parametrize("out", ["a-file", "a-file/inside", "/proc/no-such-place/run", ""])
def test_out_pointing_at_a_file_or_an_unwritable_place_exits_2(tmp_path, capsys, out):
    (tmp_path / "a-file").write_text("x")
    spec = tmp_path / "spec.toml"
    spec.write_text('data = "ring8"\nsteps = 1\n')
    out_path = str(tmp_path / out) if out and not out.startswith("/") else out
    code, _, err = genex(capsys, "run", str(spec), "--out", out_path)
    assert code == 2 and "--out" in err
    one_clear_line(err)


def test_a_path_is_a_path_never_toml_text(tmp_path, capsys, runs):
    (tmp_path / "ring8").write_text('steps = 1\n')
    with pytest.raises(SpecError, match="must end in .toml or .json"):
        parse_spec(str(tmp_path / "ring8"))
    with pytest.raises(SpecError, match="'ring8' not found"):
        parse_spec("ring8")
    with pytest.raises(SpecError, match="not found"):
        load_spec_file(tmp_path / "missing.toml")
    with pytest.raises(SpecError, match="is a directory"):
        load_spec_file(tmp_path)
    code, _, err = genex(capsys, "run", "")
    assert code == 2 and "no spec file given" in err
    assert list(runs.iterdir()) == []  # nothing trained


def test_json_duplicate_keys_are_refused_not_last_wins(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"steps": 10, "objective": "minimax", "steps": 20}')
    with pytest.raises(SpecError, match="'steps' appears twice"):
        load_spec_file(path)


def test_a_50_mb_notes_field_is_refused(tmp_path):
    with pytest.raises(SpecError, match="notes: a text of 50,000,000 characters; at most 10,000"):
        resolve({"notes": "x" * 50_000_000})
    with pytest.raises(SpecError, match="name: a name of 5,000 characters"):
        resolve({"name": "x" * 5000})


def test_unclear_spec_messages_are_clear():
    with pytest.raises(SpecError, match=r"data.name: expected the sampler's name as text, got 3"):
        resolve({"data": {"name": 3}})
    with pytest.raises(SpecError, match=r"data.name: missing"):
        resolve({"data": {"std": 3}})
    with pytest.raises(SpecError, match=r"betas: expected a list of floats like \[0.5, 0.999\], got a table"):
        resolve({"optim": {"generator": {"betas": {"a": 1}}}})
    with pytest.raises(SpecError) as info:
        resolve({"data": ["x" * 100_000]})
    assert len(str(info.value)) < 400  # a hostile value never floods the message


# -- run folders and archives -------------------------------------------------------------------------------
def test_an_archive_manifest_of_the_wrong_type_is_refused(good_run, runs):
    for manifest in (b"[1, 2]", b'{"files": [1, 2]}', b'{"files": "x"}'):
        members = {**run_members(good_run), "r1/archive.json": manifest}
        with pytest.raises(ArchiveError, match="archive.json"):
            archive.import_run(make_zip(members), root=runs)
    assert list(runs.iterdir()) == []


def test_an_archive_whose_status_created_is_not_a_time_is_refused_and_a_folder_lists_as_damaged(good_run, runs, capsys):
    members = run_members(good_run)
    members["r1/status.json"] = json.dumps({**json.loads(members["r1/status.json"]), "created": "yesterday"}).encode()
    with pytest.raises(ArchiveError, match="created is not a time"):
        archive.import_run(make_zip(members), root=runs)
    ok = copy_run(good_run, runs, "ok")
    bad = copy_run(good_run, runs, "bad")
    status = json.loads((bad.path / "status.json").read_text())
    (bad.path / "status.json").write_text(json.dumps({**status, "created": "yesterday"}))
    code, out, err = genex(capsys, "runs")
    assert code == 0 and err == ""
    assert re.search(r"^ok\s+finished", out, re.M) and re.search(r"^bad\s+damaged", out, re.M)
    assert bad.summary().error == "status.json: created is not a time (seconds since 1970) (got 'yesterday')"
    assert ok.summary().status == "finished"


def test_metrics_lines_that_are_json_but_not_records_are_skipped(good_run, runs):
    store = copy_run(good_run, runs, "r")
    with open(store.path / "metrics.jsonl", "a") as fh:
        fh.write('5\n{"g_loss": 1}\n{"step": "abc"}\n{"step": true}\n{"step": 3, "g_loss": "x", "d_loss": 1e999}\n')
        fh.write('{"step": 4, "kind": "metric", "errors": {"m": "boom", "n": 5}, "w": 1}\n'
                 '{"step": 5, "kind": {"x": 1}, "errors": [1], "w": 2}\n')
    records = store.read_metrics()
    assert all(isinstance(r["step"], int) for r in records)
    assert all(isinstance(v, float) for r in records for k, v in r.items() if k not in ("step", "kind", "errors"))
    assert store.skipped_records == 4
    # what the trainer writes is kept (a record's kind, a failed metric's message); anything else is dropped
    assert {k: v for k, v in records[-2].items() if k != "time"} == {"step": 4, "kind": "metric", "errors": {"m": "boom"}, "w": 1.0}
    assert records[-1] == {"step": 5, "w": 2.0}
    members = run_members(good_run)
    members["r1/metrics.jsonl"] += b'{"g_loss": 1}\n'
    with pytest.raises(ArchiveError, match="metrics.jsonl line .* is not a metrics record"):
        archive.import_run(make_zip(members), root=runs / "imports")


def test_a_spec_json_of_null_lists_as_damaged_and_cannot_be_opened(good_run, runs):
    store = copy_run(good_run, runs, "nullspec")
    (store.path / "spec.json").write_text("null")
    summary = store.summary()
    assert summary.status == "damaged" and "spec.json holds NoneType" in summary.error
    with pytest.raises(ExplorerError, match="nullspec is damaged: spec.json holds NoneType"):
        open_run("nullspec")
    members = {**run_members(good_run), "r1/spec.json": b"null"}
    with pytest.raises(ArchiveError, match="spec.json must hold a JSON object"):
        archive.import_run(make_zip(members), root=runs / "imports")


@pytest.mark.parametrize("arrays", [
    {"step": np.array(20), "kind": np.array("2d"), "real": np.zeros((5, 3)), "fake": np.zeros((5, 3))},
    {"hello": np.zeros(3)},
    {"step": np.array(20), "kind": np.array("1d"), "real": np.zeros((5, 1)), "fake": np.zeros((5, 1))},
    {"step": np.array(20), "kind": np.array("image"), "real": np.zeros((5, 7, 8, 8)), "fake": np.zeros((5, 7, 8, 8))},
    {"step": np.array(20), "kind": np.array("2d"), "real": np.zeros((5, 2)), "fake": np.zeros((5, 2)),
     "extra_grid_x": np.zeros(4), "extra_grid_y": np.zeros(4), "extra_critic": np.zeros((2, 2))},
    {"step": np.array("x"), "real": np.zeros((5, 2)), "fake": np.zeros((5, 2))},
])
def test_a_snapshot_with_wrong_shapes_or_keys_reads_as_damaged(good_run, runs, arrays):
    store = copy_run(good_run, runs, "r")
    step = store.snapshot_steps()[-1]
    bio = io.BytesIO()
    np.savez(bio, **arrays)
    (store.path / "samples" / f"step_{step:07d}.npz").write_bytes(bio.getvalue())
    assert store.load_snapshot_arrays(step) is None
    assert "is damaged" in store.snapshot_problem
    snap = store.load_snapshot(step)  # falls back to the generated samples alone
    assert snap is not None and snap.fake.shape[1] == 2
    members = run_members(good_run)
    members[f"r1/samples/step_{step:07d}.npz"] = bio.getvalue()
    with pytest.raises(ArchiveError, match="npz is not a plain NumPy array file of a snapshot"):
        archive.import_run(make_zip(members), root=runs / "imports")


def test_a_checkpoint_whose_step_is_a_string_is_refused_with_a_clear_message(good_run, runs):
    from explorer.manager import RunManager

    store = copy_run(good_run, runs, "r")
    state = torch.load(store.path / "checkpoint.pt", weights_only=True)
    state["step"] = "twenty"
    torch.save(state, store.path / "checkpoint.pt")
    with pytest.raises(ExplorerError, match="checkpoint.pt is not a Generative Explorer checkpoint: step is 'twenty'"):
        RunManager(root=runs).resume_run("r", owner="test", extra_steps=5)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/genex-pwned-by-issue-12",))


def test_a_pickled_checkpoint_is_refused_in_plain_words(good_run, runs):
    store = copy_run(good_run, runs, "r")
    torch.save({"G": {}, "step": 1, "evil": Boom()}, store.path / "checkpoint.pt")
    with pytest.raises(ExplorerError) as info:
        store.load_checkpoint()
    msg = str(info.value)
    assert msg.startswith("run r: checkpoint.pt refused: it holds Python objects") and "Nothing in it was executed" in msg
    assert "\x1b[" not in msg and "weights_only" not in msg and "\n" not in msg  # none of torch's text or advice
    assert not Path("/tmp/genex-pwned-by-issue-12").exists()


def test_leftover_tmp_files_are_cleaned_when_the_run_is_next_opened(good_run, runs):
    store = copy_run(good_run, runs, "r")
    dead = 2**22 + 12345  # no such process
    (store.path / f".status.json.{dead}.tmp").write_text("{")
    (store.path / "samples" / f".step_0000020.npz.{dead}.tmp").write_bytes(b"half")
    (store.path / "notes.tmp").write_text("not ours: kept")
    opened = open_run("r")
    assert sorted(p.name for p in opened.path.rglob("*.tmp")) == ["notes.tmp"]


# -- archives: bombs and unclear messages -------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    import struct

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_a_png_bomb_archive_is_refused_before_it_fills_the_runs_folder(good_run, runs):
    members = run_members(good_run)
    for i in range(4):  # zeros behind a PNG header (the 1.3 MB archive wrote 769 MB this way)
        members[f"r1/samples/step_{i:07d}.png"] = _png_header(4096, 4096) + bytes(30 << 20)
    blob = make_zip(members)
    assert len(blob) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="an archive of this size may unpack to at most"):
            archive.import_run(blob, root=runs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MB"  # streamed: memory stays flat
    assert list(runs.iterdir()) == []


def test_a_png_whose_header_claims_huge_dimensions_or_more_bytes_than_pixels_is_refused(good_run, runs):
    members = {**run_members(good_run), "r1/samples/step_0000010.png": _png_header(100_000, 100_000)}
    with pytest.raises(ArchiveError, match="claims 100000 x 100000 pixels"):
        archive.import_run(make_zip(members), root=runs)
    members = {**run_members(good_run), "r1/samples/step_0000010.png": _png_header(2, 2) + bytes(200_000)}
    with pytest.raises(ArchiveError, match="more than a 2 x 2 picture can hold"):
        archive.import_run(make_zip(members), root=runs)


def test_a_tar_bomb_stops_at_the_ratio_bound_with_memory_flat(good_run, runs):
    members = run_members(good_run)
    members["r1/metrics.jsonl"] = b"\n" * (200 << 20)  # 200 MB of newlines: a few hundred kB compressed
    blob = make_tar(members)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="an archive of this size may unpack to at most"):
            archive.import_run(blob, root=runs, limits=ArchiveLimits(floor=8 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MB"
    assert list(runs.iterdir()) == []


def test_a_nul_byte_in_a_member_name_is_named_as_such(good_run, runs):
    members = run_members(good_run)
    members["r1/spec.json#.exe"] = b"{}"  # zipfile cuts names at a NUL when writing: put it in the bytes after
    blob = make_zip(members).replace(b"r1/spec.json#.exe", b"r1/spec.json\x00.exe")
    with pytest.raises(ArchiveError, match="holds a NUL byte"):
        archive.import_run(blob, root=runs)


def test_a_damaged_tar_gz_is_one_line(good_run, runs):
    blob = make_tar(run_members(good_run))
    for cut in (blob[: len(blob) // 2], blob[:30], blob[:10] + bytes(200) + blob[210:]):
        with pytest.raises(ArchiveError) as info:
            archive.import_run(cut, root=runs)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
    assert list(runs.iterdir()) == []


# -- app URLs -----------------------------------------------------------------------------------------------
def test_a_30000_deep_json_link_is_refused_in_a_few_characters():
    token = base64.urlsafe_b64encode(zlib.compress(b"[" * 30_000 + b"]" * 30_000, 9)).decode().rstrip("=")
    assert len(token) < 200
    with pytest.raises(SpecError, match="cannot be read.*deep"):
        urlspec.decode_spec(token)
    token = base64.urlsafe_b64encode(zlib.compress(b'{"a": 1, "a": 2}')).decode()
    with pytest.raises(SpecError, match="appears twice"):
        urlspec.decode_spec(token)


def test_a_10000_character_run_id_is_not_found_without_an_os_error(runs):
    with pytest.raises(RunNotFound, match="not a valid run id"):
        open_run("a" * 10_000)
    with pytest.raises(RunNotFound):
        open_run("a" * 300)


def test_run_ids_cannot_open_a_folder_outside_the_runs_folder(good_run, runs, tmp_path):
    outside = copy_run(good_run, tmp_path, "outside")
    for run_id in (str(outside.path), str(outside.path) + "/", "../outside", "./../outside", f"{runs}/../outside",
                   "outside/../../outside", "/etc", "..", "."):
        with pytest.raises(RunNotFound):
            open_run(run_id)
    (runs / "link").symlink_to(outside.path)  # a symbolic link inside that leads out
    with pytest.raises(RunNotFound):
        open_run("link")
    inside = copy_run(good_run, runs, "inside")
    assert open_run("inside").path == inside.path
    assert open_run(str(inside.path)).path.resolve() == inside.path.resolve()  # a path into the runs folder is fine


def test_app_links_with_hostile_parameters_show_an_error_box(good_run, runs):
    from streamlit.testing.v1 import AppTest

    ui = ROOT / "explorer" / "ui"
    deep = base64.urlsafe_b64encode(zlib.compress(b"[" * 30_000 + b"]" * 30_000, 9)).decode().rstrip("=")
    valid = urlspec.encode_spec(resolve(TINY).to_dict())
    for query in ({"spec": deep}, {"spec": valid, "vary": "objective="}, {"spec": valid, "vary": "no-equals-sign"}):
        at = AppTest.from_file(str(ui / "compare_page.py"), default_timeout=90)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, (query, at.exception)
        assert at.error, query


# -- plugins and components that end the process ----------------------------------------------------------
def _with_objective_plugin(cls):
    """A registry of the installed plugins plus a plugin "quitter" (genex-quitter 0.1) registering ``cls``."""
    import types

    from explorer import hookimpl
    from explorer.registry import Registry, get_registry

    reg = Registry()
    for name, info in get_registry().plugins.items():
        reg.load_module(info.module, name=name, dist=info.dist, version=info.version)
    module = types.SimpleNamespace(register_objectives=hookimpl(lambda register: register(cls)))
    reg.add_plugin(module, name="quitter", dist="genex-quitter", version="0.1")
    return reg


def test_sys_exit_in_a_component_fails_its_run_named(runs, capsys):
    from explorer import Objective
    from explorer.execute import run_foreground

    class Quitter(Objective):
        name, summary = "test-quitter", "calls sys.exit in generator_loss"

        def discriminator_loss(self, D, real, fake):
            return torch.nn.functional.softplus(-D(real)).mean() + torch.nn.functional.softplus(D(fake)).mean()

        def generator_loss(self, D, real, fake):
            sys.exit(3)

    reg = _with_objective_plugin(Quitter)
    spec = parse_spec({**TINY, "objective": "test-quitter"}, registry=reg)
    store, state = run_foreground(spec, root=runs, registry=reg)
    view = state.view()
    assert view.status == "failed"
    assert "sys.exit(3) called in objective 'test-quitter' from plugin quitter (genex-quitter 0.1)" in view.error
    assert store.read_status()["status"] == "failed"


def test_sys_exit_while_a_component_is_built_fails_its_run_named(runs):
    from explorer import Objective
    from explorer.errors import PluginError
    from explorer.execute import execute, run_foreground
    from explorer.runs import RunStore
    from explorer.training import RunState

    class QuitsAtInit(Objective):
        name, summary = "test-quits-at-init", "calls sys.exit in its constructor"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sys.exit("bye")

        def discriminator_loss(self, D, real, fake):
            raise AssertionError("never reached")

        generator_loss = discriminator_loss

    reg = _with_objective_plugin(QuitsAtInit)
    spec = parse_spec({**TINY, "objective": "test-quits-at-init"}, registry=reg)
    named = ("sys.exit('bye') called in objective 'test-quits-at-init' from plugin quitter (genex-quitter 0.1) "
             "while the pipeline was built")
    # genex run: one clear error (exit 2), no folder made
    with pytest.raises(PluginError, match=re.escape(named)):
        run_foreground(spec, root=runs, registry=reg)
    assert not [p for p in runs.iterdir() if not p.name.startswith(".")]
    # the app's worker: the run is failed, named, and the caller goes on
    store = RunStore.create(spec.to_dict(), runs, name="quits")
    state = RunState(spec.steps)
    assert execute(store, spec, state, reg) == "failed"
    assert named in state.view().error and store.read_status()["status"] == "failed"


def test_a_plugin_calling_os_exit_at_import_is_named_and_left_out(tmp_path, monkeypatch):
    import importlib.metadata

    from explorer import registry

    site = tmp_path / "site"
    info = site / "genex_killer-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genex-killer\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[generative_explorer]\nkiller = genex_killer_mod\n")
    (site / "genex_killer_mod.py").write_text(textwrap.dedent("""
        import os
        os._exit(7)
    """))
    for dist, mod in (("genex_aaa_fine", "genex_aaa_fine_mod"), ("genex_zzz_fine", "genex_zzz_fine_mod")):  # checked in the same process
        fine = site / f"{dist}-1.0.dist-info"
        fine.mkdir()
        (fine / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 1.0\n")
        (fine / "entry_points.txt").write_text(f"[generative_explorer]\n{mod[6:9]} = {mod}\n")
        (site / f"{mod}.py").write_text(textwrap.dedent(f"""
            from explorer import Sampler, hookimpl

            class Fine(Sampler):
                name = "{mod[6:9]}-fine"
                summary = "a fine sampler"
                def __init__(self, **kw):
                    super().__init__(**kw)
                    self.shape = (1,)
                def sample(self, n, generator, device):
                    import torch
                    return torch.rand(n, 1, generator=generator, device=device)

            @hookimpl
            def register_samplers(register):
                register(Fine)
        """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]), XDG_CACHE_HOME=str(tmp_path / "cache"),
               GENEX_TORCH_THREADS="1")
    env["GENEX_LOAD_PLUGINS"] = "killer,aaa,zzz"  # built-ins and these: no other installed plugin to check
    proc = subprocess.run([sys.executable, "-m", "explorer", "plugins"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "killer (genex-killer 0.3) [import]: importing it (genex-killer 0.3) ends the Python process (exit code 7" in proc.stdout
    assert "GENEX_BLOCK_PLUGINS=killer" in proc.stdout
    assert "ring8" in proc.stdout and "aaa-fine" in proc.stdout and "zzz-fine" in proc.stdout  # everything else loads
    # The verdicts are remembered per installed version: the next start runs no check process.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry.subprocess, "run", lambda *a, **k: pytest.fail("checked again"))
    eps = [ep for ep in importlib.metadata.entry_points(group="generative_explorer") if ep.name in ("killer", "aaa", "zzz")]
    verdicts = registry.import_checks(eps)
    assert verdicts["aaa"] == verdicts["zzz"] == "" and "ends the Python process" in verdicts["killer"]


# -- image folders ------------------------------------------------------------------------------------------
def test_an_image_folder_path_that_is_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "images.npz"
    os.mkfifo(fifo)
    spec = parse_spec({**TINY, "data": {"name": "image-folder", "path": str(fifo)}, "generator": "dcgan", "discriminator": "dcgan"})

    def hang(*_):
        raise TimeoutError("the FIFO hung")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        from explorer.pipeline import Pipeline

        with pytest.raises(SpecError, match="not a regular file or a folder"):
            Pipeline(spec)
        from plugins.images import open_regular

        with pytest.raises(SpecError, match="not a regular file"):
            open_regular(fifo, "data.path")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
