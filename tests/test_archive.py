"""Run archives: a round trip keeps everything; hostile archives are refused and leave nothing behind."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import archive
from explorer.archive import ArchiveError, ArchiveLimits
from explorer.errors import ExplorerError
from explorer.execute import run_foreground
from explorer.runs import RunStore, list_runs
from explorer.spec import resolve
from explorer.training import TrainerConfig

TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 20, "batch_size": 32, "log_every": 5,
    "snapshot_every": 10, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> RunStore:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store, state = run_foreground(resolve(TINY), root=tmp_path_factory.mktemp("source"), config=TrainerConfig(snapshot_hz=0))
    finally:
        torch.set_num_threads(before)
    assert state.view().status == "finished"
    return store


def files_of(store: RunStore) -> dict[str, bytes]:
    return {n: (store.path / n).read_bytes() for n in archive.run_files(store)}


def assert_left_nothing(root: Path) -> None:
    assert not root.exists() or [p.name for p in root.iterdir()] == []


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_an_exported_run_imports_with_every_file_intact(finished_run, tmp_path, fmt):
    data = archive.export_bytes(finished_run, fmt)
    imported = archive.import_run(data, root=tmp_path)
    assert imported.id == finished_run.id and imported.path.parent == tmp_path
    src, dst = files_of(finished_run), files_of(imported)
    assert set(src) == set(dst)
    assert all(src[n] == dst[n] for n in src if n != "status.json")
    st = imported.read_status()
    assert st["status"] == "finished" and st["imported"]["time"] > 0
    assert imported.read_metrics() == finished_run.read_metrics()
    assert imported.load_checkpoint()["step"] == 20
    assert [r.id for r in list_runs(tmp_path)] == [imported.id]


def test_importing_the_same_archive_twice_keeps_both(finished_run, tmp_path):
    data = archive.export_bytes(finished_run)
    first = archive.import_run(data, root=tmp_path)
    second = archive.import_run(io.BytesIO(data), root=tmp_path)
    assert second.id == f"{first.id}-imported"


def test_export_to_a_file_picks_the_format_from_the_name(finished_run, tmp_path):
    path = archive.export_run(finished_run, tmp_path / "run.tar.gz")
    assert tarfile.is_tarfile(path)
    assert archive.import_run(path, root=tmp_path / "runs").read_spec() == finished_run.read_spec()


def test_an_imported_run_that_was_running_reads_as_interrupted(finished_run, tmp_path):
    files = {f"r1/{n}": b for n, b in files_of(finished_run).items()}
    status = json.loads(files["r1/status.json"])
    status.update(status="running", pid=os.getpid(), heartbeat=time.time())
    files["r1/status.json"] = json.dumps(status).encode()
    store = archive.import_run(make_zip(files), root=tmp_path)
    assert store.read_status()["status"] == "interrupted"


# -- hostile archives ---------------------------------------------------------------------------------
def make_zip(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return buf.getvalue()


def make_tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info in members:
            blob = data.get(info.name)
            if blob is not None:
                info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob) if blob is not None else None)
    return buf.getvalue()


def good_members(run: RunStore, prefix: str = "r1/") -> dict[str, bytes]:
    return {prefix + n: b for n, b in files_of(run).items()}


@pytest.mark.parametrize("bad_name", ["r1/../../escape.json", "/etc/spec.json", "r1/samples/../../x.npy", "C:/spec.json", "r1\\spec.json"])
def test_members_that_would_escape_the_runs_folder_are_refused(finished_run, tmp_path, bad_name):
    members = good_members(finished_run)
    members[bad_name] = b"{}"
    with pytest.raises(ArchiveError):
        archive.import_run(make_zip(members), root=tmp_path / "runs")
    assert_left_nothing(tmp_path / "runs")
    assert not (tmp_path / "escape.json").exists()


def test_a_zip_symlink_is_refused(finished_run, tmp_path):
    members = good_members(finished_run)
    members["r1/samples/step_0000099.npy"] = b"/etc/passwd"
    with pytest.raises(ArchiveError, match="link"):
        archive.import_run(make_zip(members, modes={"r1/samples/step_0000099.npy": 0o120777}), root=tmp_path / "runs")
    assert_left_nothing(tmp_path / "runs")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_tar_links_and_special_files_are_refused(finished_run, tmp_path, kind):
    data = good_members(finished_run)
    infos = [tarfile.TarInfo(n) for n in data]
    evil = tarfile.TarInfo("r1/metrics.jsonl" if kind != tarfile.LNKTYPE else "r1/samples/step_0000099.npy")
    evil.type = kind
    evil.linkname = "/etc/passwd"
    data.pop("r1/metrics.jsonl", None)
    infos = [i for i in infos if i.name != "r1/metrics.jsonl"] + [evil]
    with pytest.raises(ArchiveError):
        archive.import_run(make_tar(infos, data), root=tmp_path / "runs")
    assert_left_nothing(tmp_path / "runs")


def test_oversized_members_and_archives_are_refused(finished_run, tmp_path):
    members = good_members(finished_run)
    members["r1/metrics.jsonl"] = b"{}\n" * 50_000  # 150 kB, highly compressible
    with pytest.raises(ArchiveError, match="allowed"):
        archive.import_run(make_zip(members), root=tmp_path / "runs", limits=ArchiveLimits(metrics=100_000))
    with pytest.raises(ArchiveError, match="allowed"):
        archive.import_run(make_zip(members), root=tmp_path / "runs", limits=ArchiveLimits(total=120_000))
    with pytest.raises(ArchiveError, match="larger than"):
        archive.import_run(io.BytesIO(make_zip(members)), root=tmp_path / "runs", limits=ArchiveLimits(total=1000))
    assert_left_nothing(tmp_path / "runs")


class Boom:
    """Unpickling this would run a command."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/genex-pwned-by-archive",))


def test_a_checkpoint_that_needs_pickle_is_refused_and_runs_nothing(finished_run, tmp_path):
    members = good_members(finished_run)
    bio = io.BytesIO()
    torch.save({"G": {}, "evil": Boom()}, bio)
    members["r1/checkpoint.pt"] = bio.getvalue()
    with pytest.raises(ArchiveError, match="refused: it holds Python objects.*Nothing in it was executed"):
        archive.import_run(make_zip(members), root=tmp_path / "runs")
    assert not Path("/tmp/genex-pwned-by-archive").exists()
    assert_left_nothing(tmp_path / "runs")


def test_an_object_array_is_refused(finished_run, tmp_path):
    members = good_members(finished_run)
    bio = io.BytesIO()
    np.save(bio, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    members["r1/samples/step_0000010.npy"] = bio.getvalue()
    with pytest.raises(ArchiveError, match="NumPy"):
        archive.import_run(make_zip(members), root=tmp_path / "runs")


def test_unexpected_files_and_damaged_checksums_are_refused(finished_run, tmp_path):
    members = good_members(finished_run)
    with pytest.raises(ArchiveError, match="unexpected member"):
        archive.import_run(make_zip({**members, "r1/plugin.py": b"import os"}), root=tmp_path / "runs")
    with zipfile.ZipFile(io.BytesIO(archive.export_bytes(finished_run))) as zf:
        exported = {n: zf.read(n) for n in zf.namelist()}
    exported[f"{finished_run.id}/metrics.jsonl"] += b'{"step": 99}\n'
    with pytest.raises(ArchiveError, match="checksum"):
        archive.import_run(make_zip(exported), root=tmp_path / "runs")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        archive.import_run(b"hello, not an archive", root=tmp_path / "runs")
    assert_left_nothing(tmp_path / "runs")


def test_a_spec_that_needs_a_missing_plugin_says_so(finished_run, tmp_path):
    members = good_members(finished_run)
    spec = json.loads(members["r1/spec.json"])
    spec["objective"] = {"name": "wasserstein-unicorn"}
    spec["provenance"]["objective"] = "unicorns (generative-explorer-unicorns 1.0)"
    members["r1/spec.json"] = json.dumps(spec).encode()
    with pytest.raises(ArchiveError, match="generative-explorer-unicorns"):
        archive.import_run(make_zip(members), root=tmp_path / "runs")


# -- delete ----------------------------------------------------------------------------------------------
def test_delete_refuses_a_live_run_and_removes_a_finished_one(finished_run, tmp_path):
    store = archive.import_run(archive.export_bytes(finished_run), root=tmp_path)
    trainer = subprocess.Popen(["sleep", "30"])  # stands for another process (a `genex run`) training it
    try:
        status = json.loads((store.path / "status.json").read_text())
        status.update(status="running", pid=trainer.pid, host=socket.gethostname(), heartbeat=time.time())
        (store.path / "status.json").write_text(json.dumps(status))
        assert store.read_status()["status"] == "running"
        with pytest.raises(ExplorerError, match="stop it"):
            archive.delete_run(store)
        assert store.path.exists()
    finally:
        trainer.kill()
        trainer.wait()
    store.write_status("finished")
    archive.delete_run(store.id, root=tmp_path)
    assert not store.path.exists()
