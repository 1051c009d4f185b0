"""Issue #12: one damaged run folder never breaks a listing or a page. The Runs page, `genex runs` and
`?run=` still list and open every good run when run folders are damaged in each way the issue found."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import cli, compare
from explorer.errors import ExplorerError
from explorer.runs import iter_runs, list_runs, open_run
from hostile_support import DAMAGE, copy_run, train_tiny

UI = Path(__file__).resolve().parents[1] / "explorer" / "ui"
GOOD = ("good-a", "good-b")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("source"))


@pytest.fixture
def runs(tmp_path, monkeypatch, source) -> Path:
    """Two good runs and one damaged copy per way of damage, all in one runs folder."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GENEX_RUNS_DIR", str(root))
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    for run_id in GOOD:
        copy_run(source, root, run_id)
    for name, damage in DAMAGE.items():
        damage(copy_run(source, root, name).path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(before)


def test_every_run_is_listed_and_every_good_run_reads_whole(runs):
    listed = {r.id: r for r in list_runs(runs)}
    assert set(listed) == set(GOOD) | set(DAMAGE)
    for run_id in GOOD:
        assert listed[run_id].status == "finished" and listed[run_id].step == 20 and not listed[run_id].damaged
    for name in ("status-created-not-a-time", "status-not-an-object", "status-missing", "status-step-a-string",
                 "status-duplicate-keys", "spec-null", "spec-not-json", "spec-components-wrong-type", "spec-deeply-nested"):
        assert listed[name].status == "damaged" and listed[name].error, name


def test_reading_every_file_of_every_run_never_raises_anything_but_a_clear_error(runs):
    for store in iter_runs(runs):
        store.summary()
        for rec in store.read_metrics():
            assert isinstance(rec["step"], int)
        for step in store.snapshot_steps():
            store.load_snapshot(step)
        try:
            store.read_spec()
            store.load_checkpoint()
        except ExplorerError as exc:
            assert "\n" not in str(exc)


def test_genex_runs_lists_every_run_with_the_damaged_ones_marked(runs, capsys):
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for run_id in GOOD:
        assert re.search(rf"^{run_id}\s+finished\s+20/20", out, re.M)
    for name in DAMAGE:
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), name
    assert cli.main(["runs", "--json"]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == set(GOOD) | set(DAMAGE)


def test_run_ids_open_every_good_run_and_refuse_a_damaged_spec_in_words(runs):
    for run_id in GOOD:
        assert open_run(run_id).read_spec()["name"] == "tiny"
    for name in DAMAGE:
        try:
            open_run(name)
        except ExplorerError as exc:
            assert name.startswith("spec-") and "is damaged: spec.json" in str(exc)
    assert not list(runs.glob("leftover-tmp-files/**/*.tmp"))  # opened: a killed run's leftovers are gone


def test_the_runs_page_lists_every_run_and_opens_each_one_without_an_exception(runs):
    at = AppTest.from_file(str(UI / "runs_page.py"), default_timeout=120)
    at.run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert set(table["run"]) == set(GOOD) | set(DAMAGE)
    assert set(table.loc[table["run"].isin(GOOD), "status"]) == {"finished"}
    for run_id in [*DAMAGE, *GOOD]:
        at.selectbox(key="runs.open").set_value(run_id).run()
        assert not at.exception, (run_id, at.exception)
        if run_id.startswith("spec-"):
            assert any("cannot be shown" in e.value for e in at.error), run_id
        elif run_id in GOOD:
            assert not at.error and not at.warning, run_id
            assert any("tiny" in s.value for s in at.subheader)


def test_the_train_page_opens_good_runs_from_the_url_and_names_damaged_ones(runs):
    for run_id in ("good-a", "spec-null", "status-created-not-a-time", "snapshot-npz-wrong-shapes", "../outside", "x" * 10_000):
        at = AppTest.from_file(str(UI / "train_page.py"), default_timeout=120)
        at.query_params["run"] = run_id
        at.run()
        assert not at.exception, (run_id[:40], at.exception)
        if run_id == "good-a":
            assert any("not training in this app" in i.value for i in at.info)
        elif run_id in ("spec-null", "../outside") or len(run_id) > 1000:
            assert any("could not be opened" in w.value for w in at.warning), run_id[:40]


def test_a_metric_that_ended_undefined_is_not_damage(tmp_path, source):
    """A run whose last metric pass found no high-quality sample ends with reverse KL = NaN: a value
    the metric may take, so the run lists as finished (it once listed as damaged); infinity is still refused."""
    good = copy_run(source, tmp_path, "nan-metric")
    status = json.loads((good.path / "status.json").read_text())
    status["final_metrics"] = {"modes": 0.0, "reverse_kl": float("nan")}
    (good.path / "status.json").write_text(json.dumps(status))
    summary = good.summary()
    assert summary.status == "finished" and not summary.damaged
    assert good.read_status()["final_metrics"]["modes"] == 0.0
    bad = copy_run(source, tmp_path, "inf-metric")
    status["final_metrics"] = {"reverse_kl": float("inf")}
    (bad.path / "status.json").write_text(json.dumps(status))
    assert bad.summary().status == "damaged"
