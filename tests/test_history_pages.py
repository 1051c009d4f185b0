"""The Compare and Runs pages (Streamlit AppTest), and the spec carried in the page URL."""

from __future__ import annotations

import base64
import json
import time
import tomllib
import zlib
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.errors import SpecError
from explorer.registry import get_registry
from explorer.execute import run_foreground
from explorer.runs import RunStore, list_runs
from explorer.spec import parse_spec, resolve
from explorer.training import TrainerConfig
from explorer.ui import urlspec
from explorer.ui.presets import load_presets
from explorer.ui.state import get_manager

UI = Path(__file__).resolve().parents[1] / "explorer" / "ui"
TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 20, "batch_size": 32, "log_every": 5,
    "snapshot_every": 10, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    """Every run of a test in its own folder; one torch thread (two cores shared with other jobs)."""
    monkeypatch.setenv("GENEX_RUNS_DIR", str(tmp_path / "runs"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "runs"
    get_manager().stop_all(wait=30)
    torch.set_num_threads(before)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(UI / name), default_timeout=90)


def frame(at: AppTest, column: str):
    """The first dataframe on the page with this column (AppTest keeps no key for a plain st.dataframe)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def wait_for_runs(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for run in get_manager().runs():
        while run.thread is None and run.active and time.monotonic() < deadline:
            time.sleep(0.1)  # queued: waits for a slot
        if run.thread is not None:
            run.thread.join(max(0.0, deadline - time.monotonic()))


def finished(root: Path, **changes) -> RunStore:
    store, state = run_foreground(resolve({**TINY, **changes}), root=root, config=TrainerConfig(snapshot_hz=0))
    assert state.view().status == "finished"
    return store


# -- the spec in the URL ------------------------------------------------------------------------------
def test_every_preset_survives_a_round_trip_through_the_url():
    from explorer.registry import get_registry

    reg = get_registry()
    for preset in load_presets(reg):
        if preset.error:
            continue
        full = resolve(preset.raw, reg).to_dict()
        query = urlspec.spec_to_query(full, reg)
        assert set(query) == {"spec"} and len(query["spec"]) < 1000
        back = resolve(urlspec.spec_from_query(query), reg).to_dict()
        full.pop("provenance"), back.pop("provenance")
        assert back == full, preset.id


def test_a_default_spec_is_a_tiny_link_and_a_url_without_one_gives_none():
    assert urlspec.minimal_spec(parse_spec({}).to_dict()) == {}
    assert len(urlspec.encode_spec(parse_spec({}).to_dict())) < 20
    assert urlspec.spec_from_query({"run": "x"}) is None


@pytest.mark.parametrize("token", ["", "not base64!!", base64.urlsafe_b64encode(b"plain text").decode(),
                                   base64.urlsafe_b64encode(zlib.compress(b"[1, 2]")).decode(),
                                   base64.urlsafe_b64encode(zlib.compress(b"{" * 10)).decode(), "A" * 9000])
def test_a_damaged_link_is_one_clear_spec_error(token):
    with pytest.raises(SpecError, match="link"):
        urlspec.spec_from_query({"spec": token})


def test_a_link_cannot_inflate_into_a_huge_spec():
    bomb = base64.urlsafe_b64encode(zlib.compress(json.dumps({"notes": "x" * 1_000_000}).encode(), 9)).decode()
    assert len(bomb) < urlspec.MAX_TOKEN_CHARS
    with pytest.raises(SpecError, match="larger than"):
        urlspec.spec_from_query({"spec": bomb})


# -- Compare page ---------------------------------------------------------------------------------------
def test_compare_page_draws_the_setup_from_a_preset_without_errors():
    at = page("compare_page.py")
    at.run()
    assert not at.exception and not at.error
    assert at.radio(key="cmp.source").value == "a preset"
    assert at.multiselect(key="cmp.values0").value == ["minimax", "nonsaturating"]
    assert "2 runs" in " ".join(c.value for c in at.caption)


def test_compare_page_steps_follow_the_chosen_preset():
    """Switching the preset resets the steps to the new preset's (a link then reproduces what ran)."""
    by_id = {p.id: p for p in load_presets(get_registry())}
    at = page("compare_page.py")
    at.run()
    first = at.selectbox(key="cmp.preset").value
    steps = [n for n in at.number_input if n.label == "steps"][0]
    assert steps.value == by_id[first].raw["steps"]
    steps.set_value(123).run()
    other = next(i for i, p in by_id.items() if p.raw.get("steps") not in (None, by_id[first].raw["steps"]) and not p.error)
    at.selectbox(key="cmp.preset").set_value(other).run()
    assert not at.exception
    assert [n for n in at.number_input if n.label == "steps"][0].value == by_id[other].raw["steps"]


def test_compare_page_trains_a_linked_comparison_and_shows_table_and_diff(runs_dir):
    at = page("compare_page.py")
    at.query_params.update({**urlspec.spec_to_query(TINY), "vary": "objective=minimax,nonsaturating"})
    at.run()
    assert not at.exception and not at.error
    assert at.radio(key="cmp.source").value == "the link"
    assert at.multiselect(key="cmp.values0").value == ["minimax", "nonsaturating"]
    before = {r.id for r in get_manager().runs()}
    at.button(key="cmp.start").click().run()
    assert not at.exception
    runs = [r for r in get_manager().runs() if r.id not in before]
    assert len(runs) == 2 and len({r.owner for r in runs}) == 1
    wait_for_runs()
    at.run()
    assert not at.exception and not at.error
    table = frame(at, "status")
    assert list(table["run"]) == ["objective=minimax", "objective=nonsaturating"]
    assert list(table["status"]) == ["finished", "finished"] and "g_loss" in table
    diff = frame(at, "field")
    assert list(diff["field"]) == ["objective.name"]
    assert {s.status for s in list_runs(runs_dir)} == {"finished"}
    # the URL now carries the set-up
    linked = resolve(urlspec.spec_from_query(dict(at.query_params)))
    assert linked.short_name() == "tiny" and linked.steps == 20 and linked.generator.params["width"] == 16
    assert "objective=minimax,nonsaturating" in str(at.query_params["vary"])
    # a reload (a new session with the same URL) finds the comparison again
    reloaded = page("compare_page.py")
    reloaded.query_params.update(dict(at.query_params))
    assert "runs" in reloaded.query_params
    reloaded.run()
    assert not reloaded.exception and not reloaded.error
    labels = list(frame(reloaded, "status")["run"])
    assert len(labels) == 2 and "minimax" in labels[0] and "nonsaturating" in labels[1]


def test_a_linked_comparison_of_runs_that_cannot_be_opened_is_named_not_raised(runs_dir):
    a = finished(runs_dir)
    at = page("compare_page.py")
    at.query_params["runs"] = f"{a.id},../../etc,/tmp,{'x' * 10_000}," + ",".join(str(i) for i in range(40))
    at.run()
    assert not at.exception
    assert any("cannot be opened" in w.value for w in at.warning)
    assert not [d for d in at.dataframe if "status" in d.value.columns]  # fewer than two runs: no comparison drawn


def test_a_bad_link_shows_an_error_and_falls_back_to_the_presets():
    at = page("compare_page.py")
    at.query_params["spec"] = urlspec.encode_spec({**TINY, "objective": "no-such-objective"})
    at.run()
    assert not at.exception
    assert any("link" in e.value and "no-such-objective" in e.value for e in at.error)
    assert at.radio(key="cmp.source").value == "a preset"


def test_compared_runs_are_drawn_on_shared_axes(runs_dir):
    """Small multiples share their axes: a ring of radius 1 beside one of radius 3 is drawn in one frame."""
    a = finished(runs_dir, data={"name": "ring8", "radius": 1.0})
    b = finished(runs_dir, data={"name": "ring8", "radius": 3.0})
    at = page("compare_page.py")
    at.run()
    at.multiselect(key="cmp.history").set_value([a.id, b.id]).run()
    at.button(key="cmp.from_history").click().run()
    assert not at.exception and not at.error
    panels = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if '"x1"' in c.proto.spec]
    frames = [tuple(tuple(layer["encoding"][axis]["scale"]["domain"]) for axis in ("x", "y"))
              for spec in panels for layer in spec["layer"] if layer["encoding"].get("x", {}).get("field") == "x1"]
    assert len(panels) == 2 and len(set(frames)) == 1
    (x0, x1), (y0, y1) = frames[0]
    assert x0 <= -3 and x1 >= 3 and y0 <= -3 and y1 >= 3  # the wider ring fits


def test_the_history_picker_keeps_a_running_run_picked_while_it_trains(runs_dir):
    a = finished(runs_dir)
    run = get_manager().start(resolve({**TINY, "steps": 100_000, "log_every": 5}), owner="another-tab")
    try:
        deadline = time.monotonic() + 60
        while run.store.summary().step < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        at = page("compare_page.py")
        at.run()
        picker = at.multiselect(key="cmp.history")
        picker.set_value([a.id, run.id]).run()
        labels = list(at.multiselect(key="cmp.history").options)
        step = run.store.summary().step
        while run.store.summary().step <= step and time.monotonic() < deadline:
            time.sleep(0.1)
        at.run()
        # the options are labelled by what never changes, so the selection survives the run's progress
        assert list(at.multiselect(key="cmp.history").options) == labels
        assert at.multiselect(key="cmp.history").value == [a.id, run.id]
        assert any("step" in c.value and "running" in c.value for c in at.caption)
    finally:
        get_manager().stop(run.id)


def test_a_comparison_from_finished_runs_in_the_history(runs_dir):
    a = finished(runs_dir, optim={"generator": {"lr": 1e-3}})
    b = finished(runs_dir, optim={"generator": {"lr": 1e-4}})
    at = page("compare_page.py")
    at.run()
    at.multiselect(key="cmp.history").set_value([a.id, b.id]).run()
    at.button(key="cmp.from_history").click().run()
    assert not at.exception and not at.error
    table = frame(at, "status")
    assert sorted(table["run"]) == ["lr=0.0001", "lr=0.001"]
    assert list(frame(at, "field")["field"]) == ["optim.generator.lr"]
    # finished runs are shown in step: the snapshot every run saved at the chosen step
    assert at.segmented_control(key="cmp.mode").value == "same step"
    assert at.select_slider(key="cmp.step").options == ["10", "20"]

    at.select_slider(key="cmp.step").set_value(10).run()
    assert not at.exception
    assert sum("· step 10" in c.value for c in at.caption) == 2


def test_stopping_a_comparison_leaves_other_tabs_runs_alone(runs_dir):
    other = get_manager().start(resolve({**TINY, "steps": 100_000}), owner="another-tab", paused=True)
    at = page("compare_page.py")
    at.query_params.update({**urlspec.spec_to_query({**TINY, "steps": 100_000}), "vary": "objective=minimax,nonsaturating"})
    at.run()
    before = {r.id for r in get_manager().runs()}
    at.button(key="cmp.start").click().run()
    mine = [r for r in get_manager().runs() if r.id not in before]
    assert len(mine) == 2
    at.run()
    at.button(key="cmp.stop_all").click().run()
    assert not at.exception
    for r in mine:
        if r.thread is not None:
            r.thread.join(60)
    assert {r.status for r in mine} == {"stopped"}
    assert other.active
    get_manager().stop(other.id)


# -- Runs page ----------------------------------------------------------------------------------------------
def test_runs_page_lists_filters_and_opens_runs_and_its_spec_reruns_the_pipeline(runs_dir):
    a = finished(runs_dir)
    b = finished(runs_dir, objective="mmd")
    at = page("runs_page.py")
    at.run()
    assert not at.exception and not at.error
    table = frame(at, "created")
    assert sorted(table["run"]) == sorted([a.id, b.id])
    at.multiselect(key="runs.f.obj").set_value(["mmd"]).run()
    assert list(frame(at, "created")["run"]) == [b.id]
    at.selectbox(key="runs.open").set_value(a.id).run()
    assert not at.exception
    toml_text = next(c.value for c in at.code if "objective" in c.value)
    again = parse_spec(tomllib.loads(toml_text)).to_dict()
    assert again == resolve(a.read_spec()).to_dict()
    assert at.select_slider(key="runs.snap_step").options == ["10", "20"]
    assert len(at.get("vega_lite_chart")) >= 2  # curves and the saved snapshot


def test_a_killed_run_shows_as_interrupted_not_running(runs_dir):
    a = finished(runs_dir)
    status = json.loads((a.path / "status.json").read_text())
    status.update(status="running", pid=2**22 + 12345)  # a process that is gone
    (a.path / "status.json").write_text(json.dumps(status))
    at = page("runs_page.py")
    at.run()
    assert list(frame(at, "created")["status"]) == ["interrupted"]
    assert any("killed or crashed" in w.value for w in at.warning)


def test_fork_from_the_runs_page_records_its_parent_and_draws_the_branch(runs_dir):
    a = finished(runs_dir)
    at = page("runs_page.py")
    at.run()
    at.text_area(key="runs.fork.changes").set_value("optim.generator.lr = 1e-4\nk_d = 2")
    at.number_input(key="runs.fork.steps").set_value(30)
    at.button(key="runs.fork").click().run()
    assert not at.exception and not at.error
    wait_for_runs()
    forks = [s for s in list_runs(runs_dir) if s.parent]
    assert len(forks) == 1 and forks[0].parent == {"run": a.id, "step": 20} and forks[0].status == "finished"
    at.selectbox(key="runs.open").set_value(forks[0].id).run()
    assert not at.exception
    charts = [str(c.proto) for c in at.get("vega_lite_chart")]  # the spec and its data (Arrow keeps strings readable)
    assert any("fork at 20" in c and "this fork" in c and "parent, to step 20" in c for c in charts)


def test_stop_on_the_runs_page_shows_the_run_stopped_at_once(runs_dir, monkeypatch):
    import threading

    manager = get_manager()
    real_stop = manager.stop
    # a worker process stops at its next step boundary, a moment after it is asked: so does this one
    monkeypatch.setattr(manager, "stop", lambda run_id: threading.Timer(0.5, real_stop, (run_id,)).start())
    run = manager.start(resolve({**TINY, "steps": 100_000}), owner="another-tab")
    deadline = time.monotonic() + 60
    while run.state.view().step < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    at = page("runs_page.py")
    at.run()
    at.selectbox(key="runs.open").set_value(run.store.path.name).run()
    assert any("running" in p.proto.text for p in at.get("progress"))
    at.button(key="runs.stop").click().run()
    assert not at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert texts and texts[-1].startswith("stopped"), texts  # not "running" until a reload
    assert not [b for b in at.button if b.key == "runs.stop"]


def test_delete_from_the_runs_page_removes_a_finished_run(runs_dir):
    a = finished(runs_dir)
    at = page("runs_page.py")
    at.run()
    assert at.button(key="runs.delete").disabled
    at.checkbox(key=f"runs.sure.{a.id}").check().run()
    at.button(key="runs.delete").click().run()
    assert not at.exception and not a.path.exists()
    assert any("Deleted" in s.value for s in at.success) or any("No runs yet" in i.value for i in at.info)
