"""RunManager: background runs, the concurrency cap and its fair queue, resume and fork."""

from __future__ import annotations

import time

import pytest

from explorer.errors import ExplorerError
from explorer.manager import RunManager
from explorer.runs import list_runs, open_run
from explorer.spec import parse_spec
from explorer.training import TrainerConfig

FAST = {"data": "ring8", "steps": 40, "batch_size": 32, "log_every": 10, "metrics": "none", "snapshot_every": 20,
        "checkpoint_every": 20, "snapshot_size": 32, "device": "cpu",
        "generator": {"name": "mlp", "width": 16}, "discriminator": {"name": "mlp", "width": 16}}


def wait(pred, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def manager(tmp_path):
    # the queueing logic is the same for both backends; the thread one starts runs fastest (test_workers.py covers processes)
    mgr = RunManager(root=tmp_path, max_concurrent=1, config=TrainerConfig(snapshot_hz=5), backend="thread")
    yield mgr
    mgr.stop_all(wait=20)


def test_runs_beyond_the_cap_queue_and_then_finish(manager):
    a = manager.start(parse_spec(FAST), owner="tab-a")
    b = manager.start(parse_spec(FAST), owner="tab-a")
    assert b.status == "queued"
    assert wait(lambda: a.status == "finished" and b.status == "finished")
    assert {r.status for r in list_runs(manager.root)} == {"finished"}


def test_queue_is_fair_across_owners(manager):
    long = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="tab-a")
    assert wait(lambda: long.status == "running")
    a2 = manager.start(parse_spec(FAST), owner="tab-a")
    b1 = manager.start(parse_spec(FAST), owner="tab-b")
    manager.stop(long.id)
    # tab-a was served last: tab-b's run goes first although it queued later.
    assert wait(lambda: a2.status == "finished" and b1.status == "finished")
    assert b1.store.read_status()["started"] < a2.store.read_status()["started"]


def test_stopping_a_queued_run_never_starts_it(manager):
    long = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="a")
    queued = manager.start(parse_spec(FAST), owner="b")
    manager.stop(queued.id)
    manager.stop(long.id)
    assert wait(lambda: long.status == "stopped")
    time.sleep(0.3)
    assert queued.status == "stopped" and queued.state.view().step == 0


def test_a_stopped_run_resumes_from_its_checkpoint(manager):
    run = manager.start(parse_spec({**FAST, "steps": 100_000, "checkpoint_every": 10}), owner="a")
    assert wait(lambda: run.state.view().step >= 30)
    manager.stop(run.id)
    assert wait(lambda: run.status == "stopped")
    stopped_at = open_run(run.id, manager.root).load_checkpoint()["step"]
    again = manager.resume_run(run.id, owner="a")
    assert wait(lambda: again.state.view().step > stopped_at + 10)
    manager.stop(again.id)
    assert wait(lambda: again.status == "stopped")
    steps = [r["step"] for r in open_run(run.id, manager.root).read_metrics() if "g_loss" in r]
    assert steps == sorted(steps) and steps[0] == 10


def test_a_fork_records_its_parent_and_starts_from_its_weights(manager):
    parent = manager.start(parse_spec(FAST), owner="a")
    assert wait(lambda: parent.status == "finished")
    fork = manager.fork(parent.id, {"steps": 60, "optim.generator.lr": 1e-4}, owner="a")
    assert fork.store.summary().step == 40  # listed from its parent's step at once, never "step 0 / 60"
    assert wait(lambda: fork.status == "finished")
    status = fork.store.read_status()
    assert status["parent"] == {"run": parent.id, "step": 40}
    assert fork.spec.optim["generator"]["lr"] == pytest.approx(1e-4)
    assert [r["step"] for r in fork.store.read_metrics() if "g_loss" in r] == [50, 60]


def test_fork_must_go_past_the_branch_step(manager):
    parent = manager.start(parse_spec(FAST), owner="a")
    assert wait(lambda: parent.status == "finished")
    with pytest.raises(ExplorerError, match="set steps above"):
        manager.fork(parent.id, {"optim.generator.lr": 1e-4}, owner="a")
