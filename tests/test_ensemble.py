"""Seed ensembles (issue #16, ``genex compare --seeds N --vectorise``): the seeds of one variant trained as
one batched model, each still in its own run folder with its own curves, snapshots and checkpoint, and what
cannot be batched trained one after another with the reason, never an error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explorer import cli, compare, ensemble
from explorer.execute import run_foreground
from explorer.records import LOSS
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import load_spec_file, parse_spec, resolve
from explorer.training import TrainerConfig
from plugins.gan_objectives import NonSaturating
from waiting import wait

PRESETS = __import__("pathlib").Path(__file__).resolve().parents[1] / "explorer" / "presets"
TINY = {"data": "ring8", "generator": {"name": "mlp", "depth": 2, "width": 32},
        "discriminator": {"name": "mlp", "depth": 2, "width": 32}, "batch_size": 64, "metrics": "none",
        "device": "cpu", "log_every": 1, "snapshot_every": 10, "checkpoint_every": 10, "snapshot_size": 128}
CONFIG = TrainerConfig(snapshot_hz=0)


def _raw(**fields):
    """TINY with ``fields`` (a field set to None is left out, e.g. the discriminator of an MMD run)."""
    return {k: v for k, v in {**TINY, **fields}.items() if v is not None}


def _specs(seeds=(0, 1), **fields):
    return [parse_spec({**_raw(**fields), "seed": s}) for s in seeds]


def _losses(store: RunStore, key: str) -> np.ndarray:
    return np.array([r[key] for r in store.read_metrics() if r.get("kind") == LOSS], dtype=float)


def test_each_seed_logs_what_it_logs_trained_alone(tmp_path):
    """The issue's check: the first 50 logged losses of every member match a run of that seed alone to 1e-4
    relative, on the ring8 preset's networks and batch (at lr 2e-4; see the README on rounding)."""
    raw = load_spec_file(PRESETS / "ring8-nonsaturating.toml")
    for role in ("generator", "discriminator"):
        raw["optim"][role]["lr"] = 2e-4
    raw.update(steps=50, log_every=1, metric_every=0, snapshot_every=25)
    specs = [resolve({**raw, "seed": s}, get_registry()) for s in (3, 4)]
    stores, note = ensemble.train_seeds(specs, [tmp_path / f"ens-{s.seed}" for s in specs], config=CONFIG)
    assert note is None and stores is not None
    for spec, store in zip(specs, stores):
        alone, _ = run_foreground(spec, out=tmp_path / f"alone-{spec.seed}", config=CONFIG)
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            got, want = _losses(store, key), _losses(alone, key)
            assert len(got) == len(want) == 50
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=f"seed {spec.seed} {key}")
        # ... and a run folder like any other: status, snapshots at the same steps, a checkpoint
        assert store.read_status()["status"] == "finished" and store.read_status()["step"] == 50
        assert store.read_status().get("vectorised") == 2
        assert [s for s in store.snapshot_steps()] == [s for s in alone.snapshot_steps()] == [25, 50]
        assert store.read_spec()["seed"] == spec.seed


def test_checkpoints_and_snapshots_hold_each_seeds_own_weights(tmp_path):
    """What a member saves is its slice of the stacked model: a resumed member trains on alone, and its
    saved samples differ from the other member's."""
    specs = _specs(steps=20)
    stores, note = ensemble.train_seeds(specs, [tmp_path / "a", tmp_path / "b"], config=CONFIG)
    assert note is None
    ckpts = [s.load_checkpoint(map_location="cpu") for s in stores]
    assert ckpts[0]["step"] == ckpts[1]["step"] == 20
    w0, w1 = (c["G"][next(iter(c["G"]))] for c in ckpts)
    assert not torch.equal(w0, w1)
    assert ckpts[0]["opt_g"]["state"], "the optimiser state of the member is saved (resume keeps Adam's moments)"
    snaps = [s.load_snapshot() for s in stores]
    assert not np.allclose(snaps[0].fake, snaps[1].fake)
    from explorer.pipeline import Pipeline
    from explorer.training import Trainer

    p = Pipeline(resolve({**stores[1].read_spec(), "steps": 25}, get_registry()))
    p.load_state_dict(ckpts[1])
    assert Trainer(p, config=CONFIG).run() == "finished" and p.step == 25


def test_a_seed_that_diverges_fails_alone_and_a_stopped_one_stops_alone(tmp_path):
    specs = _specs(seeds=(0, 1, 2), steps=30)

    def steer(trainers):
        def poison(t):
            if t.p.step == 12:  # member 1's generator blows up: a non-finite loss follows
                for q in ensemble_of[0].g_params.values():
                    with torch.no_grad():
                        q[1].fill_(float("nan"))

        def stop(t):
            if t.p.step == 8:
                t.stop()

        trainers[1].add_callback("step_end", poison)
        trainers[2].add_callback("step_end", stop)

    ensemble_of = []
    original = ensemble.Ensemble.__init__

    def remember(self, trainers, *args, **kwargs):
        original(self, trainers, *args, **kwargs)
        ensemble_of.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ensemble.Ensemble, "__init__", remember)
        stores, note = ensemble.train_seeds(specs, [tmp_path / f"r{i}" for i in range(3)], config=CONFIG,
                                            on_trainers=steer)
    assert note is None
    st = [s.read_status() for s in stores]
    assert st[0]["status"] == "finished" and st[0]["step"] == 30
    assert st[1]["status"] == "failed" and "non-finite" in st[1]["error"] and st[1]["step"] == 13
    assert st[2]["status"] == "stopped" and st[2]["step"] == 8
    assert stores[2].load_checkpoint(map_location="cpu")["step"] == 8
    assert np.isfinite(_losses(stores[0], "g_loss")).all()


@pytest.mark.parametrize("fields, words", [
    ({"generator": {"name": "mlp", "depth": 2, "width": 32, "norm": "batch"}}, "keeps buffers"),
    ({"objective": {"name": "mmd", "method": "rff"}, "discriminator": None}, "vmap cannot batch"),
])
def test_what_cannot_be_batched_trains_one_after_another_with_the_reason(tmp_path, fields, words):
    specs = _specs(steps=6, **fields)
    stores, reason = ensemble.train_seeds(specs, [tmp_path / "a", tmp_path / "b"], config=CONFIG)
    assert stores is None and words in reason
    assert not (tmp_path / "a").exists(), "nothing is written before the reason is known"
    variants = compare.expand_variants(_raw(**fields, steps=6), [], 2)
    results = compare.train_variants(variants, tmp_path / "cmp", vectorise=True)
    assert [r.status for r in results] == ["finished", "finished"]
    assert all(r.vectorised == 0 and words in r.note for r in results)
    compare.write_outputs(tmp_path / "cmp", _raw(**fields), [], results)
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "seeds trained one after another" in md and words in md


def test_a_component_may_declare_it_cannot_be_vectorised(tmp_path, monkeypatch):
    monkeypatch.setattr(NonSaturating, "vectorise", False)
    _, reason = ensemble.prepare(_specs(steps=4))
    assert reason == "the objective 'nonsaturating' declares vectorise = False"


def test_ensembles_need_the_same_spec_but_the_seed():
    a, b = _specs(steps=4)
    c = parse_spec({**TINY, "steps": 5, "seed": 2})
    assert ensemble.prepare([a, b, c])[1] == "the runs differ in more than their seed"
    assert ensemble.prepare([a])[1] == "a single seed has nothing to batch with"


def test_genex_compare_vectorise_writes_the_usual_summary(tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({**TINY, "steps": 12}))
    out = tmp_path / "out"
    code = cli.main(["compare", str(spec), "--vary", "objective=minimax,nonsaturating", "--seeds", "2",
                     "--vectorise", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "objective=minimax: 2 seeds trained as one batched model" in printed
    manifest = json.loads((out / "compare.json").read_text())
    assert [r["vectorised"] for r in manifest["runs"]] == [2, 2, 2, 2]
    assert len(list((out / "runs").iterdir())) == 4
    for name in ("summary.csv", "summary_mean.csv", "compare.png"):
        assert (out / name).exists()
    md = (out / "summary.md").read_text()
    assert "## Seed ensembles (--vectorise)" in md


def test_vectorise_and_ray_are_one_or_the_other(tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({**TINY, "steps": 12}))
    pytest.importorskip("ray")
    assert cli.main(["compare", str(spec), "--seeds", "2", "--vectorise", "--backend", "ray"]) == 2
    assert "--vectorise" in capsys.readouterr().err


def test_the_moving_average_and_packing_batch_too(tmp_path):
    """An ensemble with ``ema`` and ``pack``: each member's averaged G (what its views and metrics use) and
    its losses are the seed's own, as trained alone."""
    specs = _specs(steps=16, pack=4, ema={"decay": 0.9, "start": 4}, snapshot_every=8, checkpoint_every=8)
    stores, note = ensemble.train_seeds(specs, [tmp_path / "a", tmp_path / "b"], config=CONFIG)
    assert note is None
    for spec, store in zip(specs, stores):
        alone, _ = run_foreground(spec, out=tmp_path / f"alone-{spec.seed}", config=CONFIG)
        np.testing.assert_allclose(_losses(store, "g_loss"), _losses(alone, "g_loss"), rtol=1e-4, atol=1e-7)
        got, want = (s.load_checkpoint(map_location="cpu")["G_ema"] for s in (store, alone))
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(store.load_snapshot().fake, alone.load_snapshot().fake, rtol=1e-3, atol=1e-4)



def test_the_batched_step_keeps_the_faster_thread_count_and_gives_the_process_its_own_back():
    """The ensemble's step runs on whichever of 1 and ``most`` threads its timings show faster (a busy
    machine makes two spinning threads slower than one), rechecked every ``period`` steps."""
    import time as _time

    from explorer.device import ThreadTuner

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for slow, fast in ((2, 1), (1, 2)):
            tuner = ThreadTuner(2, period=20, probe=3)
            assert tuner.active
            for _ in range(60):
                with tuner:
                    _time.sleep(0.004 if torch.get_num_threads() == slow else 0.001)
            assert tuner.best == fast
            assert tuner.used[fast] > 45 and tuner.used[slow] >= 9  # three re-checks, 4 steps each
            assert f"{fast} thread" in tuner.summary().split(",")[0]
            tuner.restore()
            assert torch.get_num_threads() == 1
        assert not ThreadTuner(1).active  # one core, or GENEX_TORCH_THREADS: nothing to choose
    finally:
        torch.set_num_threads(before)


def test_an_ensemble_trains_the_same_numbers_on_one_thread_or_two(tmp_path):
    """What lets the thread count follow the machine's load: it does not change a run's numbers (the
    ring8 preset's networks and batch, on this CPU's MKL and torch's reductions)."""
    raw = load_spec_file(PRESETS / "ring8-nonsaturating.toml")
    raw.update(steps=24, log_every=1, metric_every=0, snapshot_every=24)
    specs = [resolve({**raw, "seed": s}, get_registry()) for s in (0, 1)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        heard: list[str] = []
        one, _ = ensemble.train_seeds(specs, [tmp_path / f"one-{s.seed}" for s in specs], config=CONFIG)
        two, _ = ensemble.train_seeds(specs, [tmp_path / f"two-{s.seed}" for s in specs], config=CONFIG,
                                      threads=2, log=heard.append)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert heard and "2 threads for" in heard[0] and "1 thread for" in heard[0]
    for a, b in zip(one, two):
        for key in ("d_loss", "g_loss"):
            np.testing.assert_allclose(_losses(b, key), _losses(a, key), rtol=1e-6, atol=0)


# -- the app's seed ensembles: one worker process trains them, each seed a live run ------------------------
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_the_manager_trains_an_ensemble_live_and_stops_one_seed(tmp_path, backend):
    from explorer.errors import ExplorerError
    from explorer.manager import RunManager

    mgr = RunManager(root=tmp_path / "runs", max_concurrent=2, config=TrainerConfig(snapshot_hz=5), backend=backend)
    try:
        specs = _specs(seeds=(0, 1, 2), steps=4000, log_every=10, snapshot_every=1000, checkpoint_every=1000)
        runs = mgr.start_ensemble(specs, owner="t", names=[f"s{s.seed}" for s in specs])
        assert all(r.backend == "vectorised" for r in runs)
        assert wait(lambda: all(r.state.step >= 20 and r.state.view().history for r in runs)), "live progress for every seed"
        assert wait(lambda: all(r.state.snapshot is not None for r in runs))
        with pytest.raises(ExplorerError, match="vectorised backend, which cannot pause"):
            mgr.pause(runs[0].id)
        mgr.stop(runs[1].id)
        assert wait(lambda: runs[1].status == "stopped")
        assert runs[0].active and runs[2].active, "the other seeds train on"
        mgr.stop(runs[0].id)
        mgr.stop(runs[2].id)
        assert wait(lambda: not any(r.active for r in runs))
        for r in runs:
            st = r.store.read_status()
            assert st["status"] == "stopped" and st.get("vectorised") == 3
            assert r.store.load_checkpoint(map_location="cpu")["step"] == st["step"]
    finally:
        mgr.close()


def test_an_ensemble_the_manager_cannot_batch_trains_its_seeds_one_after_another(tmp_path):
    from explorer.manager import RunManager

    mgr = RunManager(root=tmp_path / "runs", max_concurrent=2, config=TrainerConfig(snapshot_hz=0), backend="process")
    try:
        specs = _specs(steps=8, generator={"name": "mlp", "depth": 2, "width": 32, "norm": "batch"})
        runs = mgr.start_ensemble(specs, owner="t", names=["a", "b"])
        assert wait(lambda: not any(r.active for r in runs))
        assert [r.status for r in runs] == ["finished", "finished"]
        assert all("keeps buffers" in (r.note or "") for r in runs)
        assert all("keeps buffers" in r.store.read_status()["vectorise_note"] for r in runs)
    finally:
        mgr.close()


def test_the_compare_page_vectorises_seeds_when_asked(tmp_path, monkeypatch):
    """Compare page: the "Vectorise seeds" switch appears with more than one seed per variant, and Start then
    trains each variant's seeds as one ensemble (a group of runs on the vectorised backend)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer.ui.state import get_manager

    monkeypatch.setenv("GENEX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("GENEX_RAY_ADDRESS", raising=False)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("ui/compare_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Vectorise seeds" not in [t.label for t in at.toggle]  # one seed: nothing to batch
    [seeds] = [n for n in at.number_input if n.label == "seeds per variant"]
    seeds.set_value(2).run()
    [steps] = [n for n in at.number_input if n.label == "steps"]
    steps.set_value(40).run()
    [switch] = [t for t in at.toggle if t.label == "Vectorise seeds"]
    switch.set_value(True).run()
    assert any("seeds train together as one batched model" in c.value for c in at.caption)
    [start] = [b for b in at.button if b.label == "Start comparison"]
    manager = get_manager()  # the server's, shared with earlier tests in this process
    before = {r.id for r in manager.runs()}
    start.click().run()
    assert not at.exception, [e.value for e in at.exception]
    try:
        runs = [r for r in manager.runs() if r.id not in before]
        assert len(runs) == 4 and {r.backend for r in runs} == {"vectorised"}
        assert len({id(r.group) for r in runs}) == 2, "one ensemble per variant"
        assert wait(lambda: not any(r.active for r in runs), 120)
        assert [r.status for r in runs] == ["finished"] * 4
    finally:
        manager.stop_all(wait=20)


def test_a_third_party_pipeline_batches_like_a_built_in_one(tmp_path):
    """The example package's data, architecture and objective (checkerboard, resmlp, lsgan) declare nothing
    about ensembles and batch as the built-ins do: each seed matches its run alone."""
    registry = get_registry()
    if "lsgan" not in registry.components["objective"] or "resmlp" not in registry.components["architecture"]:
        pytest.skip("the example package is not installed (pip install -e examples/generative-explorer-extras)")
    raw = {**TINY, "data": "checkerboard", "objective": "lsgan", "generator": {"name": "resmlp"},
           "discriminator": {"name": "resmlp"}, "steps": 12}
    specs = [resolve({**raw, "seed": s}, registry) for s in (0, 1)]
    stores, note = ensemble.train_seeds(specs, [tmp_path / "a", tmp_path / "b"], registry=registry, config=CONFIG)
    assert note is None
    for spec, store in zip(specs, stores):
        alone, _ = run_foreground(spec, out=tmp_path / f"alone-{spec.seed}", registry=registry, config=CONFIG)
        np.testing.assert_allclose(_losses(store, "d_loss"), _losses(alone, "d_loss"), rtol=1e-4, atol=1e-7)


def test_the_train_page_says_why_a_seed_of_an_ensemble_cannot_pause(tmp_path, monkeypatch):
    """Pause and Step on a run that trains in a seed ensemble: the page says why not (no exception)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer.ui.state import get_manager

    monkeypatch.setenv("GENEX_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=90)
    at.run()
    manager = get_manager()
    try:
        runs = manager.start_ensemble(_specs(steps=100_000, log_every=10), owner="t", names=["a", "b"])
        assert wait(lambda: runs[0].state.status == "running")
        at.run()
        [pick] = [s for s in at.selectbox if s.label == "Run"]
        pick.set_value(runs[0].id).run()
        [pause] = [b for b in at.button if b.label == "Pause"]
        pause.click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("vectorised backend, which cannot pause" in e.value for e in at.error), [e.value for e in at.error]
        assert runs[0].active
    finally:
        manager.stop_all(wait=20)
