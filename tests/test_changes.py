"""Changing a setting mid-run: the spec's change log (``changes``), live changes through the run manager
(a worker process or a thread), and resume and fork reproducing them bit for bit."""

from __future__ import annotations

import json
import math

import pytest

from explorer.errors import ExplorerError, SpecError
from explorer.execute import run_foreground
from explorer.manager import RunManager
from explorer.pipeline import Pipeline
from explorer.records import CHANGE, change_records, record_kind, split_records
from explorer.runs import RunStore, check_record, open_run
from explorer.spec import diff_specs, parse_spec, parse_text, resolve
from explorer.training import Trainer, TrainerConfig
from waiting import wait

FAST = {"data": "ring8", "steps": 40, "batch_size": 32, "log_every": 1, "metrics": "none", "snapshot_every": 20,
        "checkpoint_every": 20, "snapshot_size": 32, "device": "cpu", "seed": 3,
        "generator": {"name": "mlp", "width": 16}, "discriminator": {"name": "mlp", "width": 16}}
AT = 12  # the step boundary of the change: after step 12, before step 13
CHANGE_SET = {"optim.generator.lr": 3e-3, "k_d": 2, "objective": "minimax"}
RESOLVED = {"optim.generator.lr": 3e-3, "k_d": 2, "objective": {"name": "minimax", "label_smoothing": 0.0, "mmd_weight": 0.0,
                                                              "mmd_bandwidths": [0.5, 1.0, 2.0]}}



def losses(records):
    return [(r["step"], r["d_loss"], r["g_loss"]) for r in records if record_kind(r) == "loss"]


def headless(tmp_path, name, spec):
    store, state = run_foreground(parse_spec(spec), out=tmp_path / name, config=TrainerConfig(snapshot_hz=0))
    assert state.status == "finished", state.error
    return store


@pytest.fixture
def manager(request, tmp_path):
    mgr = RunManager(root=tmp_path / "runs", max_concurrent=2, config=TrainerConfig(snapshot_hz=5),
                     backend=getattr(request, "param", "thread"))
    yield mgr
    mgr.close(wait=30)


def reach(manager, run, step):
    """Train a paused run to exactly ``step`` and wait there, paused."""
    manager.step(run.id, step - run.state.step)
    assert wait(lambda: run.state.step == step and run.status == "paused"), (run.status, run.state.step, run.state.error)


# (a) a live change gives the same run as the same change in the spec's change log --------------------------
@pytest.mark.parametrize("manager", ["thread", "process"], indirect=True)
def test_a_live_change_trains_exactly_as_the_same_change_in_the_spec_and_lands_in_spec_json(manager, tmp_path):
    logged = headless(tmp_path, "logged", {**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]})
    unchanged = headless(tmp_path, "unchanged", FAST)
    assert losses(logged.read_metrics())[AT:] != losses(unchanged.read_metrics())[AT:]  # the change matters
    assert losses(logged.read_metrics())[:AT] == losses(unchanged.read_metrics())[:AT]  # ... from its step on

    run = manager.start(parse_spec(FAST), owner="t", paused=True)
    reach(manager, run, AT)
    assert manager.change(run.id, CHANGE_SET) == RESOLVED
    assert wait(lambda: any(record_kind(r) == CHANGE for r in run.state.view().history))  # applied while paused
    assert run.status == "paused" and run.state.step == AT
    manager.resume(run.id)
    assert wait(lambda: run.status == "finished"), run.state.error

    assert losses(run.store.read_metrics()) == losses(logged.read_metrics())  # bit for bit
    saved = run.store.read_spec()
    assert saved["changes"] == [{"step": AT, "set": RESOLVED}] == logged.read_spec()["changes"]
    assert resolve(saved).to_dict() == parse_spec({**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]}).to_dict()


def test_a_change_sent_while_the_run_is_queued_is_held_and_applied_as_it_starts(tmp_path):
    mgr = RunManager(root=tmp_path / "runs", max_concurrent=1, config=TrainerConfig(snapshot_hz=5), backend="thread")
    try:
        blocker = mgr.start(parse_spec({**FAST, "steps": 100_000}), owner="a")
        queued = mgr.start(parse_spec(FAST), owner="b")
        assert queued.status == "queued"
        mgr.change(queued.id, {"k_d": 2})
        mgr.change(queued.id, {"objective": "minimax"})  # held, then applied in the order sent
        assert [cmd[0] for cmd in queued.pending] == ["change", "change"]
        mgr.stop(blocker.id)
        assert wait(lambda: queued.status == "finished"), queued.state.error
    finally:
        mgr.close(wait=30)
    at_start = [{"step": 0, "set": {"k_d": 2}}, {"step": 0, "set": {"objective": RESOLVED["objective"]}}]
    assert queued.store.read_spec()["changes"] == at_start
    logged = headless(tmp_path, "logged", {**FAST, "changes": at_start})
    assert losses(queued.store.read_metrics()) == losses(logged.read_metrics())


# (b) resume and fork reproduce the changes ------------------------------------------------------------------
def test_a_run_stopped_after_a_live_change_resumes_to_exactly_the_losses_of_a_run_never_stopped(manager, tmp_path):
    never_stopped = headless(tmp_path, "ref", {**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]})
    run = manager.start(parse_spec(FAST), owner="t", paused=True)
    reach(manager, run, AT)
    manager.change(run.id, CHANGE_SET)
    reach(manager, run, AT + 6)
    manager.stop(run.id)
    assert wait(lambda: run.status == "stopped")
    assert run.store.load_checkpoint()["step"] == AT + 6  # after the change: k_d and the objective must come back

    again = manager.resume_run(run.id, owner="t")
    assert wait(lambda: again.status == "finished"), again.state.error
    records = open_run(run.id, manager.root).read_metrics()
    assert losses(records) == losses(never_stopped.read_metrics())
    assert [r["step"] for r in change_records(records)] == [AT]  # applied once, not again on resume


@pytest.mark.parametrize("stop_at", [8, 18], ids=["stopped-before-the-change", "stopped-after-it"])
def test_resuming_a_spec_change_log_with_a_cosine_schedule_continues_the_same_trajectory(manager, tmp_path, stop_at):
    spec = {**FAST, "optim": {"generator": {"schedule": "cosine"}, "discriminator": {"schedule": "cosine"}},
            "changes": [{"step": AT, "set": {**CHANGE_SET, "optim.discriminator.lr": 5e-4}}]}
    never_stopped = headless(tmp_path, "ref", spec)
    run = manager.start(parse_spec(spec), owner="t", paused=True)
    reach(manager, run, stop_at)
    manager.stop(run.id)
    assert wait(lambda: run.status == "stopped")
    again = manager.resume_run(run.id, owner="t")
    assert wait(lambda: again.status == "finished"), again.state.error
    records = open_run(run.id, manager.root).read_metrics()
    assert losses(records) == losses(never_stopped.read_metrics())
    assert [r["step"] for r in change_records(records)] == [AT]


def test_the_cosine_schedule_takes_a_changed_lr_as_its_base_from_that_step_on():
    spec = parse_spec({**FAST, "optim": {"generator": {"lr": 1e-3, "schedule": "cosine"}},
                       "changes": [{"step": 20, "set": {"optim.generator.lr": 4e-3}}]})
    trainer = Trainer(Pipeline(spec), config=TrainerConfig(snapshot_hz=0))
    seen = {}
    trainer.add_callback("step_end", lambda tr: seen.__setitem__(tr.p.step, tr.p.opt_g.param_groups[0]["lr"]))
    assert trainer.run() == "finished"
    cos = lambda step: 0.5 * (1 + math.cos(math.pi * step / 40))  # noqa: E731  (the lr of step s + 1 uses t = s / steps)
    assert seen[20] == pytest.approx(1e-3 * cos(19))
    assert seen[21] == pytest.approx(4e-3 * cos(20))
    assert seen[30] == pytest.approx(4e-3 * cos(29))


def test_a_fork_inherits_its_parents_change_log_up_to_its_step_only(manager, tmp_path):
    late = {"step": 30, "set": {"k_d": 3}}
    parent = manager.start(parse_spec({**FAST, "changes": [{"step": AT, "set": CHANGE_SET}, late]}), owner="t", paused=True)
    reach(manager, parent, 20)  # the checkpoint at step 20: after the first change, before the second
    manager.stop(parent.id)
    assert wait(lambda: parent.status == "stopped")
    fork = manager.fork(parent.id, {}, owner="t")
    assert fork.spec.changes == [{"step": AT, "set": RESOLVED}]
    assert wait(lambda: fork.status == "finished"), fork.state.error
    only_first = headless(tmp_path, "ref", {**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]})
    assert losses(fork.store.read_metrics()) == [r for r in losses(only_first.read_metrics()) if r[0] > 20]

    # a fork that sets a changed setting itself: its own value is in force from its start
    forked = manager.fork(parent.id, {"k_d": 4, "optim.generator.lr": 1e-4}, owner="t")
    assert forked.spec.changes == [{"step": AT, "set": {"objective": RESOLVED["objective"]}}]
    assert wait(lambda: forked.status == "finished"), forked.state.error


# (c) the change record --------------------------------------------------------------------------------------
def test_a_change_is_recorded_in_metrics_jsonl_with_kind_change_and_readers_plot_nothing_of_it(tmp_path):
    store = headless(tmp_path, "run", {**FAST, "log_every": 5, "changes": [{"step": AT, "set": CHANGE_SET}]})
    lines = [json.loads(line) for line in (store.path / "metrics.jsonl").read_text().splitlines()]
    changes = [r for r in lines if r.get("kind") == "change"]
    assert len(changes) == 1 and changes[0]["step"] == AT and changes[0]["set"] == RESOLVED
    assert isinstance(changes[0]["time"], float)
    assert [r["step"] for r in lines if r.get("kind") == "loss"][:4] == [5, 10, AT, AT + 5]  # a log mean never spans a change
    records = store.read_metrics()
    assert change_records(records) == [{"step": AT, "kind": "change", "set": RESOLVED, "time": changes[0]["time"]}]
    loss_recs, metric_recs = split_records(records)
    assert all(record_kind(r) != CHANGE for r in loss_recs + metric_recs)
    assert check_record({"step": 3, "kind": "change", "set": "lr"}) is None  # a change record says what changed


# (d) invalid changes: one clear message ---------------------------------------------------------------------
@pytest.mark.parametrize("settings, field, message", [
    ({"optim.generator.betas": [0.1, 0.2]}, "change.optim.generator.betas", "cannot change mid-run; what can: optim.generator.lr"),
    ({"k_dd": 2}, "change.k_dd", "did you mean 'k_d'"),
    ({"optim.generator.lr": 50.0}, "change.optim.generator.lr", "above the maximum 10"),
    ({"k_d": 0}, "change.k_d", "below the minimum 1"),
    ({"objective": "mmd"}, "change.objective", "cannot switch to 'mmd' mid-run: it needs no discriminator"),
    ({"objective": "minimx"}, "change.objective", "did you mean 'minimax'"),
    ({}, "change", "empty: name at least one setting"),
])
def test_an_invalid_live_change_is_refused_with_one_clear_message(manager, settings, field, message):
    run = manager.start(parse_spec({**FAST, "steps": 100_000}), owner="t", paused=True)
    with pytest.raises(SpecError) as info:
        manager.change(run.id, settings)
    assert info.value.field == field and message in str(info.value) and "\n" not in str(info.value)
    assert not run.pending or all(cmd[0] != "change" for cmd in run.pending)


def test_a_change_to_a_run_that_is_not_live_is_refused(manager):
    run = manager.start(parse_spec({**FAST, "steps": 5}), owner="t")
    assert wait(lambda: run.status == "finished")
    with pytest.raises(ExplorerError, match="settings change only while a run is live"):
        manager.change(run.id, {"k_d": 2})
    with pytest.raises(ExplorerError, match="not live in this app"):
        manager.change("no-such-run", {"k_d": 2})


@pytest.mark.parametrize("changes, field, message", [
    ([{"step": 41, "set": {"k_d": 2}}], "changes[0].step", "41 is beyond the run's 40 steps"),
    ([{"step": -1, "set": {"k_d": 2}}], "changes[0].step", "before the start"),
    ([{"step": 5, "set": {"k_d": 2}}, {"step": 3, "set": {"lr": 1e-3}}], "changes[1].set.lr", "cannot change mid-run"),
    ([{"step": 5, "set": {"objective": "mmd"}}], "changes[0].set.objective", "needs no discriminator"),
    ([{"step": 5, "sett": {"k_d": 2}}], "changes[0].sett", "did you mean 'set'"),
    ({"step": 5}, "changes", "expected a list of tables"),
])
def test_an_invalid_change_log_names_the_field(changes, field, message):
    with pytest.raises(SpecError) as info:
        parse_spec({**FAST, "changes": changes})
    assert info.value.field == field and message in str(info.value)


def test_a_run_without_a_discriminator_changes_its_objective_within_its_kind_only():
    spec = parse_spec({**FAST, "objective": "mmd", "changes": [{"step": 5, "set": {"objective": {"bandwidths": [0.5, 1.0]}}}]})
    assert spec.changes[0]["set"]["objective"]["name"] == "mmd"  # a table without name: the objective in force
    assert spec.changes[0]["set"]["objective"]["bandwidths"] == [0.5, 1.0]
    for bad, message in (({"objective": "minimax"}, "needs a discriminator, and this run has none"),
                         ({"optim.discriminator.lr": 1e-3}, "no discriminator learning rate")):
        with pytest.raises(SpecError, match=message):
            parse_spec({**FAST, "objective": "mmd", "changes": [{"step": 5, "set": bad}]})


# (e) the spec round-trips -----------------------------------------------------------------------------------
TOML = """
data = "ring8"
steps = 300

[[changes]]
step = 200
set = { k_d = 2 }

[[changes]]
step = 100
set = { "optim.generator.lr" = 2e-4, objective = { name = "minimax" } }
"""


def test_a_spec_with_changes_round_trips_toml_and_json_sorted_by_step():
    spec = resolve(parse_text(TOML))
    assert [c["step"] for c in spec.changes] == [100, 200]
    assert spec.settings_at(150)["optim.generator.lr"] == 2e-4 and spec.settings_at(150)["k_d"] == 1
    assert spec.settings_at(200)["k_d"] == 2 and spec.settings_at(99)["objective"]["name"] == "nonsaturating"
    assert resolve(parse_text(spec.to_toml())).to_dict() == spec.to_dict()
    assert resolve(parse_text(spec.to_json(), fmt="json")).to_dict() == spec.to_dict()
    plain = parse_spec({"data": "ring8", "steps": 300})
    assert "changes" not in plain.to_dict()  # specs without changes are written as before
    assert set(diff_specs(plain.to_dict(), spec.to_dict())) == {"changes"}


def test_genex_run_applies_the_change_log(tmp_path):
    from explorer.cli import main

    path = tmp_path / "spec.toml"
    path.write_text(parse_spec({**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]}).to_toml())
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    via_api = headless(tmp_path, "api", {**FAST, "changes": [{"step": AT, "set": CHANGE_SET}]})
    cli_run = RunStore(tmp_path / "cli")
    assert losses(cli_run.read_metrics()) == losses(via_api.read_metrics())
    assert [r["step"] for r in change_records(cli_run.read_metrics())] == [AT]
