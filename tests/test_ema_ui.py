"""The generator's moving average (spec ``ema``) and PacGAN packing (spec ``pack``) in the app: the sidebar
sets them (and a link carries them), the spec's own checks show as sidebar errors, and a run that averages
G offers the raw G's picture beside the average's (a run without ``ema`` offers nothing of the kind)."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.snapshots import Snapshot, raw_snapshot
from explorer.ui import urlspec, views
from test_app import APP, TIMEOUT, app_runs_dir, by_label, charts, new_app, poll, set_sidebar, start  # noqa: F401

EMA_TOGGLE, PACK = "Average G's weights (EMA)", "Pack (PacGAN)"


def _toggle(at: AppTest, label: str):
    return by_label(at.sidebar.toggle, label)


def _spec(at: AppTest) -> dict:
    return at.session_state["genex.train_spec"]


def _token(at: AppTest) -> str:
    token = at.query_params.get(urlspec.QUERY_KEY)
    return token[0] if isinstance(token, list) else token


def _raw_toggles(at: AppTest) -> list:
    return [t for t in at.main.toggle if t.label == views.RAW_TOGGLE]


# -- the sidebar ------------------------------------------------------------------------------------------
def test_the_sidebar_sets_ema_and_pack_and_a_link_carries_them_to_a_new_tab(app_runs_dir):
    at = new_app()
    assert _toggle(at, EMA_TOGGLE).value is False and "ema" not in _spec(at)  # the default preset averages nothing
    assert by_label(at.sidebar.slider, PACK).value == 1 and _spec(at)["pack"] == 1
    set_sidebar(at, "toggle", EMA_TOGGLE, True)
    set_sidebar(at, "number_input", "EMA decay", 0.95)
    set_sidebar(at, "number_input", "EMA start step", 40)
    set_sidebar(at, "slider", PACK, 4)
    assert _spec(at)["ema"] == {"decay": 0.95, "start": 40} and _spec(at)["pack"] == 4
    assert any("about the last 20 steps" in c.value for c in at.sidebar.caption)
    assert not at.sidebar.error and at.button(key="genex.start").disabled is False

    carried = urlspec.spec_from_query({urlspec.QUERY_KEY: _token(at)})  # the address bar carries them
    assert carried["ema"] == {"decay": 0.95, "start": 40} and carried["pack"] == 4
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a new tab opened on that address
    fresh.query_params[urlspec.QUERY_KEY] = _token(at)
    fresh.run()
    assert not fresh.exception and not fresh.sidebar.error, [e.value for e in fresh.sidebar.error]
    assert "from the link" in by_label(fresh.sidebar.selectbox, "Preset").format_func(by_label(fresh.sidebar.selectbox, "Preset").value)
    assert _toggle(fresh, EMA_TOGGLE).value is True
    assert by_label(fresh.sidebar.number_input, "EMA decay").value == pytest.approx(0.95)
    assert by_label(fresh.sidebar.number_input, "EMA start step").value == 40
    assert by_label(fresh.sidebar.slider, PACK).value == 4
    assert _spec(fresh)["ema"] == {"decay": 0.95, "start": 40} and _spec(fresh)["pack"] == 4

    set_sidebar(fresh, "toggle", EMA_TOGGLE, False)  # and off again: the spec averages nothing
    assert "ema" not in _spec(fresh)
    assert "ema" not in urlspec.spec_from_query({urlspec.QUERY_KEY: _token(fresh)})


def test_a_preset_with_ema_fills_the_controls_and_another_preset_clears_them(app_runs_dir):
    at = new_app()
    set_sidebar(at, "selectbox", "Preset", "grid25-ema")
    assert _toggle(at, EMA_TOGGLE).value is True
    assert by_label(at.sidebar.number_input, "EMA decay").value == pytest.approx(0.99)
    assert by_label(at.sidebar.number_input, "EMA start step").value == 1000
    assert _spec(at)["ema"] == {"decay": 0.99, "start": 1000}
    set_sidebar(at, "selectbox", "Preset", "ring8-nonsaturating")
    assert _toggle(at, EMA_TOGGLE).value is False and "ema" not in _spec(at)
    assert not [w for w in at.sidebar.number_input if w.label == "EMA decay"]


def test_a_pack_the_batch_does_not_split_into_or_an_objective_without_d_is_refused_in_the_sidebar(app_runs_dir):
    at = new_app()
    set_sidebar(at, "number_input", "batch size", 100)
    set_sidebar(at, "slider", PACK, 3)
    errors = [e.value for e in at.sidebar.error]
    assert any("batch_size: 100 is not a multiple of pack = 3" in e and "99 or 102" in e for e in errors), errors
    assert at.button(key="genex.start").disabled is True
    set_sidebar(at, "slider", PACK, 4)
    assert not at.sidebar.error and _spec(at)["pack"] == 4
    set_sidebar(at, "selectbox", "Objective", "mmd")
    errors = [e.value for e in at.sidebar.error]
    assert any("pack = 4 packs samples for the discriminator, and objective 'mmd' trains none" in e for e in errors), errors
    assert at.button(key="genex.start").disabled is True


# -- the raw G beside the average --------------------------------------------------------------------------
def test_the_raw_g_toggle_appears_only_for_runs_that_average_g_and_draws_both(app_runs_dir):
    at = new_app()
    set_sidebar(at, "number_input", "steps", 400)
    set_sidebar(at, "number_input", "batch size", 64)
    start(at)
    poll(at, lambda a: any(t.label == "gradient arrows" for t in a.main.toggle))
    assert not _raw_toggles(at)  # no average, nothing to put beside it
    assert not any(m.value.startswith("**averaged G") for m in at.main.markdown)
    at.button(key="genex.stop").click().run()

    set_sidebar(at, "toggle", EMA_TOGGLE, True)
    set_sidebar(at, "number_input", "EMA decay", 0.9)
    set_sidebar(at, "number_input", "EMA start step", 20)
    start(at)
    poll(at, lambda a: bool(_raw_toggles(a)))
    assert _raw_toggles(at)[0].value is False  # offered, off: one picture, labelled as the average's
    assert any(m.value == "**averaged G (EMA, decay 0.9 from step 20)**" for m in at.main.markdown)
    _raw_toggles(at)[0].set_value(True)
    poll(at, lambda a: any(m.value == f"**{views.RAW_LABEL}**" for m in a.main.markdown))
    labels = [m.value for m in at.main.markdown if m.value.startswith("**averaged G") or m.value == f"**{views.RAW_LABEL}**"]
    assert labels == ["**averaged G (EMA, decay 0.9 from step 20)**", f"**{views.RAW_LABEL}**"]
    poll(at, lambda a: len(charts(a)) >= 3)  # the two pictures, and the loss curves once the first losses are logged
    at.button(key="genex.stop").click().run()


# -- the raw G's side of a snapshot ------------------------------------------------------------------------
def test_raw_snapshot_puts_the_raw_gs_samples_in_place_of_the_averages():
    x = np.linspace(-3, 3, 50)
    p = np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)
    real, fake, raw = np.zeros((30, 1)), np.full((30, 1), 1.0), np.random.default_rng(0).normal(size=(30, 1))
    snap = Snapshot(5, "1d", real, fake, extras={"x": x, "p_data": p, "p_g": p, "d_star": p, "fake_raw": raw,
                                                  "z": np.arange(3.0), "g_of_z": np.ones(3)})
    out = raw_snapshot(snap)
    assert out.fake is raw and out.real is real and out.step == 5
    assert "z" not in out.extras and "g_of_z" not in out.extras  # a saved file without g_of_z_raw: no mapping
    assert out.extras["p_g"].shape == x.shape and not np.allclose(out.extras["p_g"], p)  # its own KDE
    assert raw_snapshot(Snapshot(5, "2d", real, fake)) is None
    two = Snapshot(5, "2d", np.zeros((4, 2)), np.zeros((4, 2)),
                   extras={"fake_raw": np.ones((4, 2)), "manifold": np.zeros((3, 3, 2)), "manifold_raw": np.ones((3, 3, 2)),
                           "arrows": np.zeros((4, 2)), "critic": np.zeros((2, 2))})
    out = raw_snapshot(two)
    assert (out.extras["manifold"] == 1).all() and "arrows" not in out.extras and "critic" in out.extras


def test_the_raw_gs_picture_redraws_from_the_averages_cached_spec(monkeypatch):
    from explorer.pipeline import Pipeline
    from explorer.snapshots import take_snapshot
    from explorer.spec import parse_spec
    from explorer.ui import charts

    spec = parse_spec({"data": "grid25", "generator": {"name": "mlp", "depth": 1, "width": 8},
                       "discriminator": {"name": "mlp", "depth": 1, "width": 8}, "batch_size": 16, "metrics": "none",
                       "device": "cpu", "snapshot_size": 64, "ema": {"decay": 0.9, "start": 0}})
    pipe = Pipeline(spec)
    for p in pipe.G.parameters():  # the raw G moves away from its average
        p.data.add_(0.3)
    snap = take_snapshot(pipe, 5)
    raw = raw_snapshot(snap)
    assert not np.allclose(raw.fake, snap.fake) and raw.extras["arrows"].shape == snap.extras["arrows"].shape
    built = []
    real_spec = charts.cached_spec
    monkeypatch.setattr(charts, "cached_spec", lambda key, build: real_spec(key, lambda: (built.append(key), build())[1]))
    charts._specs.clear()
    opts = views.ViewOptions(domain=views.domain_2d(snap), height=views.PAIR_HEIGHT, arrows=True)
    average, beside = views.view_2d(snap, opts).spec(), views.view_2d(raw, opts).spec()
    assert len(built) == 1  # one spec for both pictures: only their data differ
    assert {k: v for k, v in average.items() if k != "datasets"} == {k: v for k, v in beside.items() if k != "datasets"}
    assert not average["datasets"]["points"].equals(beside["datasets"]["points"])


def test_the_runs_page_draws_a_saved_snapshot_beside_the_raw_gs_for_runs_that_average_g(app_runs_dir):
    from pathlib import Path

    from explorer.execute import run_foreground
    from explorer.spec import parse_spec
    from explorer.training import TrainerConfig

    tiny = {"data": "ring8", "generator": {"name": "mlp", "depth": 1, "width": 8},
            "discriminator": {"name": "mlp", "depth": 1, "width": 8}, "steps": 20, "batch_size": 32, "snapshot_every": 20,
            "metric_every": 0, "device": "cpu", "snapshot_size": 64}
    plain, _ = run_foreground(parse_spec(tiny), root=app_runs_dir, config=TrainerConfig(snapshot_hz=0))
    averaged, _ = run_foreground(parse_spec({**tiny, "ema": {"decay": 0.9, "start": 5}}), root=app_runs_dir,
                                 config=TrainerConfig(snapshot_hz=0))
    at = AppTest.from_file(str(Path(APP).parent / "ui" / "runs_page.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key="runs.open").set_value(plain.id).run()
    assert not at.exception and not [t for t in at.toggle if t.label == views.RAW_TOGGLE]
    at.selectbox(key="runs.open").set_value(averaged.id).run()
    assert not at.exception
    pictures = len(charts(at))
    assert any(m.value == "**averaged G (EMA, decay 0.9 from step 5)**" for m in at.markdown)
    at.toggle(key="runs.snap_raw").set_value(True).run()
    assert not at.exception
    assert len(charts(at)) == pictures + 1
    assert any(m.value == f"**{views.RAW_LABEL}**" for m in at.markdown)
