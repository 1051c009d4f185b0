"""RunManager: background runs, the concurrency cap and its fair queue, resume and fork."""

from __future__ import annotations

import threading
import time

import pytest

from explorer.errors import ExplorerError
from explorer.manager import RunManager
from explorer.runs import list_runs, open_run
from explorer.spec import parse_spec
from explorer.training import TrainerConfig
from waiting import wait

FAST = {"data": "ring8", "steps": 40, "batch_size": 32, "log_every": 10, "metrics": "none", "snapshot_every": 20,
        "checkpoint_every": 20, "snapshot_size": 32, "device": "cpu",
        "generator": {"name": "mlp", "width": 16}, "discriminator": {"name": "mlp", "width": 16}}



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


# -- groups: runs trained together by one driver (start_group) ----------------------------------------------
class FakeDriver:
    """A driver that trains nothing: it reports progress into each run's folder and state as a real one
    would, takes Stop, and finishes the runs it was not told to stop when ``finish`` is set."""

    def __init__(self, fail: str | None = None, attach_after: threading.Event | None = None):
        self.fail, self.attach_after = fail, attach_after
        self.finish, self.started = threading.Event(), threading.Event()
        self.commands: list[tuple[int, tuple]] = []
        self.stopped: set[int] = set()

    def __call__(self, runs):
        if self.attach_after is not None:
            self.attach_after.wait(10)
        for i, run in enumerate(runs):
            run.attach_driver(lambda cmd, i=i: (self.commands.append((i, cmd)), cmd[0] == "stop" and self.stopped.add(i)))
        for run in runs:
            run.store.write_status("running", step=5)
            run.state.update(status="running", step=5, steps_per_s=100.0)
            run.state.add_record({"step": 5, "time": time.time(), "kind": "loss", "g_loss": 0.7, "d_loss": 1.3})
        self.started.set()
        deadline = time.time() + 20
        while not self.finish.is_set() and len(self.stopped) < len(runs) and time.time() < deadline:
            time.sleep(0.01)
        if self.fail:
            raise RuntimeError(self.fail)
        for i, run in enumerate(runs):
            status = "stopped" if i in self.stopped else "finished"
            run.store.write_status(status, step=5 if status == "stopped" else run.spec.steps)
            run.state.update(status=status, step=run.store.read_status()["step"])


def test_a_group_is_live_and_listed_while_its_driver_trains_it_and_stop_reaches_the_driver(manager):
    driver = FakeDriver()
    specs = [parse_spec({**FAST, "seed": s}) for s in (0, 1)]
    a, b = manager.start_group(specs, owner="tab-a", names=["g-a", "g-b"], train=driver, backend="fake", slots=0)
    assert wait(lambda: driver.started.is_set())
    assert manager.get(a.id) is a and a.backend == "fake" and a.group is b.group
    view = a.state.view()
    assert view.status == "running" and view.step == 5 and view.history[0]["g_loss"] == 0.7
    listed = {r.id: r for r in list_runs(manager.root)}
    assert listed[a.id].status == "running" and listed[b.id].status == "running"  # the Runs page's listing
    manager.stop(b.id)
    assert driver.commands == [(1, ("stop",))]
    with pytest.raises(ExplorerError, match="fake backend, which cannot pause"):
        manager.pause(a.id)
    with pytest.raises(ExplorerError, match="cannot change settings"):
        manager.change(a.id, {"k_d": 2})
    driver.finish.set()
    assert wait(lambda: not a.active and not b.active)
    assert (a.status, b.status) == ("finished", "stopped")
    assert open_run(a.id, manager.root).read_status()["status"] == "finished"


def test_a_stop_sent_before_the_driver_attaches_is_held_and_delivered(manager):
    attach = threading.Event()
    driver = FakeDriver(attach_after=attach)
    a, b = manager.start_group([parse_spec(FAST)] * 2, owner="a", names=["x", "y"], train=driver, backend="fake", slots=0)
    manager.stop(a.id)
    assert a.pending == [("stop",)] and a.status == "queued"
    attach.set()
    assert wait(lambda: driver.started.is_set())
    assert driver.commands == [(0, ("stop",))] and a.pending == []
    driver.finish.set()
    assert wait(lambda: not b.active)
    assert (a.status, b.status) == ("stopped", "finished")


def test_when_the_driver_fails_every_run_it_left_unfinished_is_failed_with_the_reason(manager):
    driver = FakeDriver(fail="the cluster went away")
    runs = manager.start_group([parse_spec(FAST)] * 2, owner="a", names=["x", "y"], train=driver, backend="fake", slots=0)
    assert wait(lambda: driver.started.is_set())
    driver.finish.set()
    assert wait(lambda: not any(r.active for r in runs))
    for run in runs:
        assert run.status == "failed" and "its fake driver failed: RuntimeError: the cluster went away" in run.state.error
        status = open_run(run.id, manager.root).read_status()
        assert status["status"] == "failed" and "the cluster went away" in status["error"]  # the folder says it too
        assert status["step"] == 5


def test_a_local_group_takes_its_slots_and_waits_for_them(manager):
    long = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="a")
    assert wait(lambda: long.status == "running")
    driver = FakeDriver()
    group = manager.start_group([parse_spec(FAST)] * 3, owner="b", names=["x", "y", "z"], train=driver, backend="vectorised")
    time.sleep(0.3)
    assert not driver.started.is_set() and {r.status for r in group} == {"queued"}  # max_concurrent is 1: it waits
    single = manager.start(parse_spec(FAST), owner="c")
    manager.stop(long.id)
    assert wait(lambda: driver.started.is_set())
    time.sleep(0.3)
    assert single.status == "queued"  # the group of three counts as one run, and takes the one slot
    driver.finish.set()
    assert wait(lambda: single.status == "finished")
    assert {r.status for r in group} == {"finished"}
