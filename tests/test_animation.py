"""A run as an animation (issue #14): `genex export-animation`, explorer.animation and the Runs page button.

Tiny real runs are trained once per module; frames are one per saved snapshot, 16:9 slide-sized, with
the step and the losses at that step; user errors exit 2 with one line and no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import animation, cli
from explorer.execute import run_foreground
from explorer.runs import RunStore
from explorer.spec import resolve
from explorer.training import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "explorer" / "ui"
TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 30, "batch_size": 32, "log_every": 5,
    "snapshot_every": 10, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


def _train(root: Path, **changes) -> RunStore:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other jobs
    try:
        store, state = run_foreground(resolve({**TINY, **changes}), root=root, config=TrainerConfig(snapshot_hz=0))
    finally:
        torch.set_num_threads(before)
    assert state.view().status == "finished"
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, RunStore]:
    root = tmp_path_factory.mktemp("trained")
    return {"gan": _train(root), "mmd": _train(root, name="tiny-mmd", objective="mmd")}


@pytest.fixture
def runs(tmp_path, monkeypatch, trained) -> Path:
    """A runs folder holding a copy of each trained run (a test may damage its copy)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GENEX_RUNS_DIR", str(root))
    for name, store in trained.items():
        shutil.copytree(store.path, root / name)
    return root


def gif_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with Image.open(path) as im:
        assert im.format == "GIF"
        return im.n_frames, im.size


def genex(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


# -- the module ------------------------------------------------------------------------------------------
def test_a_gif_has_one_slide_sized_frame_per_snapshot_and_lands_in_the_run_folder(runs):
    store = RunStore(runs / "gan")
    steps = store.snapshot_steps()
    assert steps == [10, 20, 30]
    path = animation.export_animation(store)
    assert path == store.path / "tiny.gif"
    assert gif_frames(path) == (len(steps), (1280, 720))
    import imageio.v3 as iio

    frames = iio.imread(path, index=None)
    assert frames.shape == (len(steps), 720, 1280, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the step, the points and the curves move
    assert [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")] == []  # written atomically


def test_each_frame_carries_the_losses_logged_at_its_step(trained):
    store = trained["gan"]
    records = [json.loads(line) for line in (store.path / "metrics.jsonl").read_text().splitlines()]
    history = animation.LossHistory.from_records(store.read_metrics())
    assert history.keys == ["d_loss", "g_loss"]
    at20 = next(r for r in records if r["step"] == 20 and "g_loss" in r)
    assert history.at(20) == pytest.approx({"d_loss": at20["d_loss"], "g_loss": at20["g_loss"]})
    assert history.at(22) == history.at(20)  # between two logs: the last one before
    mmd = animation.LossHistory.from_records(trained["mmd"].read_metrics())
    assert mmd.keys == ["g_loss"] and set(mmd.at(30)) == {"g_loss"}  # no discriminator, no d_loss


def test_frames_are_drawn_at_the_width_asked_for_and_16_9(trained, tmp_path):
    out = animation.export_animation(trained["mmd"], out=tmp_path / "small.gif", width=640, fps=2)
    assert gif_frames(out) == (3, (640, 360))
    with Image.open(out) as im:
        assert im.info["duration"] == 500 and im.info["loop"] == 0


def test_a_run_with_more_snapshots_than_the_cap_keeps_its_first_and_last(trained):
    assert animation.frame_steps(trained["gan"]) == [10, 20, 30]
    assert animation.frame_steps(trained["gan"], max_frames=2) == [10, 30]


def test_a_damaged_snapshot_is_still_a_frame_saying_so(runs):
    store = RunStore(runs / "gan")
    (store.path / "samples" / "step_0000020.npz").write_bytes(b"PK\x03\x04 truncated")
    (store.path / "samples" / "step_0000020.npy").write_bytes(b"garbage")
    (store.path / "samples" / "step_0000020.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert gif_frames(animation.export_animation(store)) == (3, (1280, 720))


# -- the command line ---------------------------------------------------------------------------------------
def test_genex_export_animation_by_run_id_and_by_folder_path(runs, tmp_path, capsys):
    rc, out, err = genex(capsys, "export-animation", "gan", "-q")
    assert rc == 0, err
    assert gif_frames(runs / "gan" / "tiny.gif") == (3, (1280, 720))
    assert "3 frames" in out and "1280x720" in out
    elsewhere = tmp_path / "elsewhere"  # genex run --out makes run folders outside the runs folder
    shutil.copytree(runs / "mmd", elsewhere)
    rc, out, err = genex(capsys, "export-animation", str(elsewhere), "--out", str(tmp_path / "m.gif"), "--fps", "8", "-q")
    assert rc == 0, err
    assert gif_frames(tmp_path / "m.gif") == (3, (1280, 720))


@pytest.mark.parametrize("case, expect", [
    ("unknown-id", "no run 'no-such-run'"),
    ("no-snapshots", "has no saved snapshots"),
    ("damaged-spec", "is damaged: spec.json"),
    ("not-a-run-folder", "is not a run folder"),
    ("all-snapshots-unreadable", "none of run"),
    ("bad-fps", "--fps 0"),
    ("bad-width", "--width 10"),
    ("format-and-out-disagree", "ends in .mp4 but the format is gif"),
    ("out-folder-missing", "does not exist"),
])
def test_a_run_that_cannot_be_animated_exits_2_with_one_line(runs, tmp_path, capsys, case, expect):
    gan = runs / "gan"
    args = ["gan"]
    if case == "unknown-id":
        args = ["no-such-run"]
    elif case == "no-snapshots":
        for p in (gan / "samples").iterdir():
            p.unlink()
    elif case == "damaged-spec":
        (gan / "spec.json").write_text("null")
    elif case == "not-a-run-folder":
        (tmp_path / "empty").mkdir()
        args = [str(tmp_path / "empty")]
    elif case == "all-snapshots-unreadable":
        for p in (gan / "samples").iterdir():
            p.write_bytes(b"garbage")
    elif case == "bad-fps":
        args += ["--fps", "0"]
    elif case == "bad-width":
        args += ["--width", "10"]
    elif case == "format-and-out-disagree":
        args += ["--format", "gif", "--out", str(tmp_path / "x.mp4")]
    elif case == "out-folder-missing":
        args += ["--out", str(tmp_path / "missing" / "x.gif")]
    rc, out, err = genex(capsys, "export-animation", *args, "-q")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genex export-animation: error: ") and expect in lines[0], err
    assert "Traceback" not in err and not list(tmp_path.rglob("*.gif"))


def test_mp4_without_imageio_ffmpeg_says_which_pip_line_installs_it(runs, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError
    rc, out, err = genex(capsys, "export-animation", "gan", "--format", "mp4", "-q")
    assert rc == 2 and "pip install 'generative-explorer[mp4]'" in err and "Traceback" not in err
    assert not list((runs / "gan").glob("*.mp4"))


def test_mp4_with_imageio_ffmpeg_is_a_readable_video_of_every_snapshot(runs, capsys):
    pytest.importorskip("imageio_ffmpeg")
    rc, out, err = genex(capsys, "export-animation", "gan", "--format", "mp4", "-q")
    assert rc == 0, err
    import imageio.v3 as iio

    video = iio.imread(runs / "gan" / "tiny.mp4", index=None)
    assert video.shape == (3, 720, 1280, 3)


def test_genex_help_does_not_import_the_animation_code():
    code = ("import sys; from explorer import cli; cli.build_parser(); "
            "print(sorted(m for m in ('explorer.animation', 'imageio', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the Runs page ----------------------------------------------------------------------------------------------
def test_the_runs_page_offers_the_animation_of_a_run_with_snapshots(runs):
    from streamlit.testing.v1 import AppTest

    for p in (runs / "mmd" / "samples").iterdir():  # a run without snapshots gets no button
        p.unlink()
    at = AppTest.from_file(str(UI / "runs_page.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.selectbox(key="runs.open").set_value("mmd").run()
    assert not [b for b in at.button if b.key == "runs.anim"]
    at.selectbox(key="runs.open").set_value("gan").run()
    assert at.button(key="runs.anim").label == "Export animation (GIF)"
    assert not [b for b in at.get("download_button") if b.proto.id and "runs.anim_dl" in b.proto.id]
    at.button(key="runs.anim").click().run()
    assert not at.exception and not at.error
    downloads = [b for b in at.get("download_button") if "runs.anim_dl" in b.proto.id]
    assert len(downloads) == 1 and "Download GIF" in downloads[0].proto.label
