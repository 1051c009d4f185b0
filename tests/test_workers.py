"""Runs in worker processes: steering over the control channel, progress streamed back, the same
numbers as a headless run, and a worker that dies (SIGKILL, a plugin's ``os._exit``) leaves a clear
failed run while the manager's other runs keep training."""

from __future__ import annotations

import importlib
import json
import os
import signal
import time

import pytest

from explorer.execute import run_foreground
from explorer.manager import RunManager
from explorer.registry import get_registry
from explorer.spec import parse_spec
from explorer.training import TrainerConfig
from waiting import wait

FAST = {"data": "ring8", "steps": 60, "batch_size": 32, "log_every": 10, "metrics": "none", "snapshot_every": 20,
        "checkpoint_every": 20, "snapshot_size": 32, "device": "cpu", "seed": 3,
        "generator": {"name": "mlp", "width": 16}, "discriminator": {"name": "mlp", "width": 16}}



@pytest.fixture
def manager(tmp_path):
    mgr = RunManager(root=tmp_path / "runs", max_concurrent=2, config=TrainerConfig(snapshot_hz=5), backend="process")
    yield mgr
    mgr.close(wait=30)


def losses(store):
    return [(r["step"], r["d_loss"], r["g_loss"]) for r in store.read_metrics() if "g_loss" in r]


def test_a_worker_trains_the_same_numbers_as_a_headless_run_and_streams_its_progress(manager, tmp_path):
    run = manager.start(parse_spec(FAST), owner="t")
    assert run.backend == "process"
    assert wait(lambda: run.status == "finished")
    assert run.worker is not None and run.worker.pid != os.getpid()
    assert run.store.read_status()["pid"] != os.getpid()  # the worker wrote the run folder
    view = run.state.view()
    assert view.step == 60 and view.snapshot is not None and view.snapshot.step == 60
    assert [r["step"] for r in view.history if "g_loss" in r] == [10, 20, 30, 40, 50, 60]
    headless, _ = run_foreground(parse_spec(FAST), out=tmp_path / "headless", config=TrainerConfig(snapshot_hz=0))
    assert losses(run.store) == losses(headless)  # same seed, same numbers, whichever process trained it


def test_pause_step_resume_and_stop_go_over_the_control_channel(manager):
    run = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="t", paused=True)
    manager.step(run.id, 7)  # sent before the worker has built its trainer: held, then applied
    assert wait(lambda: run.state.step == 7 and run.status == "paused")
    time.sleep(0.5)
    assert run.state.step == 7  # Step trains exactly n steps, then pauses
    manager.resume(run.id)
    assert wait(lambda: run.state.step > 50)
    manager.pause(run.id)
    assert run.status == "paused"
    manager.stop(run.id)
    assert wait(lambda: run.status == "stopped")
    assert run.store.read_status()["status"] == "stopped" and run.store.has_checkpoint()


def test_a_killed_worker_fails_its_run_with_the_cause_and_the_other_run_keeps_training(manager):
    victim = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="a")
    other = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="b")
    assert wait(lambda: victim.store.has_checkpoint() and other.state.step >= 20)
    os.kill(victim.worker.pid, signal.SIGKILL)
    assert wait(lambda: victim.status == "failed", 30)
    assert "SIGKILL" in victim.state.error and "resume it" in victim.state.error
    status = victim.store.read_status()
    assert status["status"] == "failed" and "SIGKILL" in status["error"]
    before = other.state.step
    assert wait(lambda: other.state.step > before + 20, 60)  # still training
    assert other.status == "running"
    # the failed run resumes from its last checkpoint
    manager.stop(other.id)
    resumed = manager.resume_run(victim.id, owner="a", extra_steps=10)
    assert wait(lambda: resumed.status == "finished")


@pytest.fixture
def exiting_plugin(tmp_path, monkeypatch):
    """An installed plugin (a distribution with an entry point) whose objective calls os._exit(1) at its 30th step."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "genex_exiting.py").write_text(
        "import os\n"
        "from explorer import hookimpl\n"
        "from plugins.gan_objectives import NonSaturating\n"
        "class Exiting(NonSaturating):\n"
        "    name = 'test-exiting'\n"
        "    calls = 0\n"
        "    def generator_loss(self, D, real, fake):\n"
        "        type(self).calls += 1\n"
        "        if type(self).calls >= 30:\n"
        "            os._exit(1)\n"
        "        return super().generator_loss(D, real, fake)\n"
        "@hookimpl\n"
        "def register_objectives(register):\n"
        "    register(Exiting)\n")
    info = site / "genex_exiting-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genex-exiting\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[generative_explorer]\nexiting = genex_exiting\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield get_registry(reload=True)
    monkeypatch.undo()
    importlib.invalidate_caches()
    get_registry(reload=True)


def test_a_plugin_calling_os_exit_fails_only_its_run(manager, exiting_plugin):
    assert "test-exiting" in exiting_plugin.names("objective")
    doomed = manager.start(parse_spec({**FAST, "objective": "test-exiting", "steps": 1000}), owner="a")
    fine = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="b")
    assert doomed.backend == "process"
    assert wait(lambda: doomed.status == "failed")
    assert "exited with status 1" in doomed.state.error and "os._exit" in doomed.state.error
    assert json.loads((doomed.store.path / "status.json").read_text())["status"] == "failed"
    before = fine.state.step
    assert wait(lambda: fine.state.step > before + 20, 60) and fine.status == "running"
