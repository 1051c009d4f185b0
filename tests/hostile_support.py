"""Shared by the hostile-input tests: a tiny finished run to copy, ways to damage a run folder, archives."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from explorer.execute import run_foreground
from explorer.runs import RunStore
from explorer.spec import resolve
from explorer.training import TrainerConfig

TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 20, "batch_size": 32, "log_every": 5,
    "snapshot_every": 10, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


def train_tiny(root: Path) -> RunStore:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store, state = run_foreground(resolve(TINY), root=root, config=TrainerConfig(snapshot_hz=0))
    finally:
        torch.set_num_threads(before)
    assert state.view().status == "finished"
    return store


def copy_run(store: RunStore, root: Path, run_id: str) -> RunStore:
    dest = root / run_id
    shutil.copytree(store.path, dest)
    return RunStore(dest)


def _npz(**arrays) -> bytes:
    bio = io.BytesIO()
    np.savez(bio, **arrays)
    return bio.getvalue()


def _npy(arr) -> bytes:
    bio = io.BytesIO()
    np.save(bio, arr)
    return bio.getvalue()


def _edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def _last(folder: Path, suffix: str) -> Path:
    return sorted(folder.glob(f"samples/step_*{suffix}"))[-1]


def _ckpt_step_string(p: Path) -> None:
    state = torch.load(p / "checkpoint.pt", weights_only=True)
    state["step"] = "twenty"
    torch.save(state, p / "checkpoint.pt")


# Every way the issue (#12) found a run folder damaged, and a few more: name -> what to do to the folder.
DAMAGE: dict[str, Callable[[Path], None]] = {
    "status-created-not-a-time": lambda p: _edit_json(p / "status.json", created="yesterday"),
    "status-not-an-object": lambda p: (p / "status.json").write_text("[1, 2]"),
    "status-missing": lambda p: (p / "status.json").unlink(),
    "status-step-a-string": lambda p: _edit_json(p / "status.json", step="abc", parent={"run": 5}),
    "status-duplicate-keys": lambda p: (p / "status.json").write_text('{"status": "finished", "status": "running"}'),
    "metrics-json-but-not-records": lambda p: (p / "metrics.jsonl").write_text('5\n{"g_loss": 1}\n{"step": "abc"}\n[]\n"x"\n'),
    "metrics-not-utf8": lambda p: (p / "metrics.jsonl").write_bytes(b"\xff\xfe\x00garbage\n{\"step\": 1, \"g_loss\": 1e999999}\n"),
    "spec-null": lambda p: (p / "spec.json").write_text("null"),
    "spec-not-json": lambda p: (p / "spec.json").write_bytes(b"\x00\x01 not json"),
    "spec-components-wrong-type": lambda p: _edit_json(p / "spec.json", data=5, optim=[1], steps="many"),
    "spec-deeply-nested": lambda p: (p / "spec.json").write_text('{"notes": ' + "[" * 5000 + "]" * 5000 + "}"),
    "snapshot-npz-wrong-shapes": lambda p: _last(p, ".npz").write_bytes(_npz(step=np.array(20), kind=np.array("2d"),
                                                                            real=np.zeros((5, 3)), fake=np.zeros((5, 3)))),
    "snapshot-npz-wrong-keys": lambda p: _last(p, ".npz").write_bytes(_npz(hello=np.zeros(3))),
    "snapshot-npz-critic-wrong-shape": lambda p: _last(p, ".npz").write_bytes(_npz(
        step=np.array(20), kind=np.array("2d"), real=np.zeros((5, 2)), fake=np.zeros((5, 2)),
        extra_grid_x=np.zeros(4), extra_grid_y=np.zeros(4), extra_critic=np.zeros((2, 2)))),
    "snapshot-npz-not-a-zip": lambda p: _last(p, ".npz").write_bytes(b"PK\x03\x04 truncated"),
    "snapshot-npy-wrong-shape": lambda p: (_last(p, ".npy").write_bytes(_npy(np.zeros(7))), _last(p, ".npz").unlink()),
    "snapshot-npy-huge-header": lambda p: (_last(p, ".npy").write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 2), }".ljust(128, b" ")[:127] + b"\n"),
        _last(p, ".npz").unlink()),
    "snapshot-png-garbage": lambda p: (_last(p, ".png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"), _last(p, ".npz").unlink(),
                                       _last(p, ".npy").unlink()),
    "snapshot-odd-file-names": lambda p: (p / "samples" / "step_abc.npy").write_bytes(b"x"),
    "checkpoint-step-a-string": _ckpt_step_string,
    "checkpoint-truncated": lambda p: (p / "checkpoint.pt").write_bytes((p / "checkpoint.pt").read_bytes()[:100]),
    "leftover-tmp-files": lambda p: ((p / ".status.json.999999.tmp").write_text("{"),
                                     (p / "samples" / ".step_0000020.npz.999999.tmp").write_bytes(b"half")),
}


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run_members(store: RunStore, prefix: str = "r1/") -> dict[str, bytes]:
    from explorer import archive

    return {prefix + n: (store.path / n).read_bytes() for n in archive.run_files(store)}
