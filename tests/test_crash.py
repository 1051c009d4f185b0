"""A run killed mid-way (kill -9) keeps everything up to its last snapshot and reads as interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

from explorer.manager import RunManager
from explorer.runs import RunStore, list_runs

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "crash", "data": "ring8", "objective": "nonsaturating", "steps": 1_000_000, "batch_size": 32, "log_every": 5,
    "snapshot_every": 20, "checkpoint_every": 20, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_killed_run_is_readable_and_reads_as_interrupted_then_resumes(tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(tomli_w.dumps(SPEC))
    runs = tmp_path / "runs"
    out = runs / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENEX_RUNS_DIR": str(runs)}
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "run", str(spec_path), "--out", str(out), "-q"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = RunStore(out)
    try:
        deadline = time.monotonic() + 240
        while not (store.snapshot_steps() and store.has_checkpoint() and len(store.snapshot_steps()) >= 2):
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no snapshot after 240 s"
            time.sleep(0.2)
        assert store.read_status()["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    st = store.read_status()
    assert st["status"] == "interrupted" and "killed or crashed" in st["error"]
    assert [r.status for r in list_runs(runs)] == ["interrupted"]
    records = store.read_metrics()  # every complete line parses; a half-written last line is skipped
    assert records and all("step" in r for r in records)
    steps = store.snapshot_steps()
    samples = store.load_samples(steps[-1])
    assert samples.shape == (64, 2) and np.isfinite(samples).all()
    snap = store.load_snapshot(steps[-1])
    assert snap is not None and snap.kind == "2d" and snap.step == steps[-1]
    ckpt = store.load_checkpoint()  # torch.load(weights_only=True) inside
    assert ckpt["step"] >= 20 and ckpt["step"] % 20 == 0
    assert set(ckpt["G"]) and all(isinstance(v, torch.Tensor) for v in ckpt["G"].values())

    # and it can be resumed from that checkpoint
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        manager = RunManager(root=runs, max_concurrent=1)
        run = manager.resume_run("killed", owner="test", extra_steps=10)
        run.thread.join(120)
    finally:
        torch.set_num_threads(before)
    assert store.read_status()["status"] == "finished"
    assert store.read_status()["step"] == ckpt["step"] + 10
