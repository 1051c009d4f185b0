"""The Streamlit explorer, driven headless with streamlit.testing.v1.AppTest.

Runs train in the server-wide RunManager's threads (as in the real app): a test starts one from
the UI, then calls ``at.run()`` while the run advances. Runs are small and go to a temporary
folder; every run is stopped after each test.
"""

from __future__ import annotations

import time
import types
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import Architecture, Objective, Param, Sampler, hookimpl
from explorer.registry import Registry, set_registry

APP = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")
TIMEOUT = 90


# -- fixtures and helpers ----------------------------------------------------------------------------
@pytest.fixture
def app_runs_dir(tmp_path, monkeypatch):
    """Runs go to a temporary folder; every run still going is stopped after the test."""
    monkeypatch.setenv("GENEX_RUNS_DIR", str(tmp_path / "runs"))
    yield tmp_path / "runs"
    from explorer.ui.state import get_manager

    get_manager().stop_all(wait=20)


@pytest.fixture
def app_registry():
    """Swap the process-wide registry for one the test extends; the installed one comes back after."""
    reg = Registry().load_installed()
    set_registry(reg)
    yield reg
    set_registry(None)


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def by_label(widgets: Any, label: str) -> Any:
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r}; have {[w.label for w in widgets]}"
    return found[0]


def set_sidebar(at: AppTest, kind: str, label: str, value: Any) -> None:
    by_label(getattr(at.sidebar, kind), label).set_value(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def pick(at: AppTest, slot_title: str, name: str) -> None:
    """Choose a component in a sidebar slot (the slot's selectbox is labelled with its title)."""
    set_sidebar(at, "selectbox", slot_title, name)


def small_run_settings(at: AppTest, steps: int = 400, batch: int = 64) -> None:
    set_sidebar(at, "number_input", "steps", steps)
    set_sidebar(at, "number_input", "batch size", batch)


def progress_text(at: AppTest) -> str:
    bars = at.get("progress")
    return bars[0].proto.text if bars else ""


def step_of(at: AppTest) -> int:
    text = progress_text(at)
    if "step " not in text:
        return -1
    return int(text.split("step ")[1].split(" /")[0].replace(",", ""))


def poll(at: AppTest, until: Callable[[AppTest], bool], timeout: float = 120.0, every: float = 0.5) -> AppTest:
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if until(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; progress: {progress_text(at)!r}; errors: {[e.value for e in at.error]}")
        time.sleep(every)


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def start(at: AppTest) -> str:
    at.button(key="genex.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    run_id = at.query_params.get("run")
    assert run_id, "Start should put the run id in the URL"
    return run_id


def manager():
    from explorer.ui.state import get_manager

    return get_manager()


# -- Train page: the sidebar ---------------------------------------------------------------------------
def test_train_sidebar_lists_builtin_components_and_opens_on_the_default_preset(app_runs_dir):
    at = new_app()
    assert by_label(at.sidebar.selectbox, "Preset").value == "ring8-nonsaturating"
    data = by_label(at.sidebar.selectbox, "Data")
    assert data.value == "ring8"
    assert {"ring8", "grid25", "mixture-1d", "digits", "gaussian", "uniform"} <= set(data.options)
    assert {"minimax", "nonsaturating", "mmd"} <= set(by_label(at.sidebar.selectbox, "Objective").options)
    assert "mlp" in by_label(at.sidebar.selectbox, "Generator").options  # dcgan builds images: offered for image data
    assert by_label(at.sidebar.selectbox, "Discriminator").value == "mlp"
    # the optimiser's learning rate is a log slider generated from its declaration
    assert any(w.label == "learning rate" for w in at.sidebar.select_slider)
    assert at.button(key="genex.start").disabled is False


def test_sidebar_hides_the_discriminator_when_the_objective_needs_none(app_runs_dir):
    at = new_app()
    pick(at, "Objective", "mmd")
    assert "Discriminator" not in [s.label for s in at.sidebar.selectbox]
    assert not any(w.label.startswith("k_D") for w in [*at.sidebar.number_input, *at.sidebar.slider])
    pick(at, "Objective", "minimax")
    assert "Discriminator" in [s.label for s in at.sidebar.selectbox]


def test_a_bad_parameter_is_reported_by_field_and_start_is_disabled(app_runs_dir):
    at = new_app()
    pick(at, "Data", "mixture-1d")
    by_label(at.sidebar.text_input, "stds").set_value("0.5, oops")
    at.run()
    assert any("data.stds" in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert at.button(key="genex.start").disabled is True


# -- Train page: runs --------------------------------------------------------------------------------
def test_a_run_started_from_the_ui_progresses_and_draws_the_2d_view(app_runs_dir):
    at = new_app()
    small_run_settings(at, steps=3000, batch=64)
    run_id = start(at)
    poll(at, lambda a: step_of(a) > 0)
    first = step_of(at)
    poll(at, lambda a: step_of(a) > first)  # it keeps going between reruns: nobody trains in the script
    assert "ring8-nonsaturating" in progress_text(at)
    assert any(t.label == "gradient arrows" for t in at.toggle)  # the 2-D view's options
    poll(at, lambda a: len(charts(a)) >= 2)  # the view, and the loss curves once the first losses are logged
    assert (app_runs_dir / run_id / "spec.json").exists()
    # changing a widget never kills the run
    set_sidebar(at, "number_input", "seed", 7)
    assert manager().get(run_id).active
    at.button(key="genex.stop").click().run()
    poll(at, lambda a: "stopped" in progress_text(a), timeout=30)
    assert manager().get(run_id).status == "stopped"


def test_a_reloaded_tab_finds_its_run_again_from_the_url(app_runs_dir):
    at = new_app()
    small_run_settings(at, steps=3000, batch=64)
    run_id = start(at)
    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)
    reloaded.query_params["run"] = run_id
    poll(reloaded, lambda a: step_of(a) >= 0)
    assert "ring8-nonsaturating" in progress_text(reloaded)
    assert reloaded.selectbox(key="genex.run_pick").value == run_id
    assert reloaded.button(key="genex.stop").disabled is False  # it can steer it
    reloaded.button(key="genex.stop").click().run()
    poll(at, lambda a: "stopped" in progress_text(a), timeout=30)


def test_a_learning_rate_changed_mid_run_goes_into_the_change_log_and_onto_the_curves(app_runs_dir):
    import json

    at = new_app()
    small_run_settings(at, steps=3000, batch=64)
    at.button(key="genex.step").click().run()  # start paused, train 10 steps
    run_id = at.query_params.get("run")
    poll(at, lambda a: step_of(a) == 10 and "paused" in progress_text(a), timeout=120)
    lr = at.number_input(key=f"genex.change.{run_id}.optim.generator.lr")
    assert lr.value == pytest.approx(1e-3)  # the popover starts from the settings in force
    lr.set_value(2e-4)
    at.number_input(key=f"genex.change.{run_id}.k_d").set_value(2)
    next(b for b in at.button if b.label == "Apply at the next step").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Changing lr(G) 0.0002, k_D 2" in s.value for s in at.success)
    spec_path = app_runs_dir / run_id / "spec.json"
    poll(at, lambda a: json.loads(spec_path.read_text()).get("changes"), timeout=30)  # a paused run applies it at once
    assert json.loads(spec_path.read_text())["changes"] == [{"step": 10, "set": {"optim.generator.lr": 2e-4, "k_d": 2}}]
    at.button(key="genex.step").click().run()
    poll(at, lambda a: any("settings changed mid-run — step 10: lr(G) 0.0002, k_D 2" in c.value for c in a.caption), timeout=60)
    # the popover now starts from the new settings; applying them unchanged changes nothing
    assert at.number_input(key=f"genex.change.{run_id}.optim.generator.lr").value == pytest.approx(2e-4)
    next(b for b in at.button if b.label == "Apply at the next step").click().run()
    assert any("Nothing to change" in i.value for i in at.info)
    at.button(key="genex.stop").click().run()


def test_reset_stops_the_run_and_starts_over_paused_at_step_zero(app_runs_dir):
    at = new_app()
    small_run_settings(at, steps=3000, batch=64)
    first = start(at)
    poll(at, lambda a: step_of(a) > 0)
    at.button(key="genex.reset").click().run()
    second = at.query_params.get("run")
    assert second and second != first
    poll(at, lambda a: "paused" in progress_text(a), timeout=120)  # a worker process starts (torch imports) first
    assert step_of(at) == 0
    deadline = time.monotonic() + 20
    while manager().get(first).status != "stopped" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manager().get(first).status == "stopped"
    at.button(key="genex.step").click().run()  # Step trains a few steps, then pauses again
    poll(at, lambda a: step_of(a) >= 10 and "paused" in progress_text(a), timeout=60)


def test_the_1d_view_renders_from_its_preset(app_runs_dir):
    at = new_app()
    set_sidebar(at, "selectbox", "Preset", "mixture1d-nonsaturating")
    assert by_label(at.sidebar.selectbox, "Data").value == "mixture-1d"
    small_run_settings(at, steps=200, batch=64)
    start(at)
    poll(at, lambda a: any(t.label == "D*(x)" for t in a.toggle))
    assert charts(at)
    assert any("D^*" in l.value for l in at.latex)  # the optimal discriminator's formula
    assert any("saturating" in l.value for l in at.latex)


def test_the_image_view_shows_samples_with_their_nearest_training_images(app_runs_dir):
    at = new_app()
    set_sidebar(at, "selectbox", "Preset", "digits-dcgan")
    small_run_settings(at, steps=4, batch=16)
    at.sidebar.number_input(key=[w.key for w in at.sidebar.number_input if w.label == "ngf"][0]).set_value(8)
    at.sidebar.number_input(key=[w.key for w in at.sidebar.number_input if w.label == "ndf"][0]).set_value(8)
    at.run()
    start(at)
    poll(at, lambda a: len(a.image) > 0)
    assert len(at.image) == 1  # one picture per update
    assert "nearest" in at.image[0].captions[0]


def test_an_error_inside_a_plugin_fails_the_run_with_a_clear_message(app_runs_dir, app_registry):
    class Explodes(Objective):
        name = "explodes"
        summary = "raises on its third training step (test plugin)"
        params = (Param("after", "int", 2, "training steps before it raises", low=0, high=100),)

        def __init__(self, **kw):
            super().__init__(**kw)
            self.calls = 0

        def discriminator_loss(self, D, real, fake):  # called by training steps only (k_d = 1), not by the views
            self.calls += 1
            return torch.nn.functional.softplus(-D(real)).mean() + torch.nn.functional.softplus(D(fake)).mean()

        def generator_loss(self, D, real, fake):
            if self.calls > self.config["after"]:
                raise RuntimeError("boom from the explodes objective")
            return torch.nn.functional.softplus(-D(fake)).mean()

    plugin = types.ModuleType("explodes_plugin")
    plugin.register_objectives = hookimpl(lambda register: register(Explodes))
    assert app_registry.add_plugin(plugin, name="explodes-plugin")
    at = new_app()
    pick(at, "Objective", "explodes")
    small_run_settings(at, steps=500, batch=32)
    at.button(key="genex.start").click().run()  # the run may fail before this rerun ends: no start() checks here
    assert not at.exception, [e.value for e in at.exception]
    poll(at, lambda a: any("boom" in e.value for e in a.error))
    message = next(e.value for e in at.error if "boom" in e.value)
    assert "failed" in message and "explodes" in message
    assert "failed" in progress_text(at)
    # the app stays usable: another run starts
    pick(at, "Objective", "nonsaturating")
    assert at.button(key="genex.start").disabled is False


# -- the other pages ------------------------------------------------------------------------------------
class Broken:
    """A plugin whose hook raises: the Plugins page must show it, and everything else must work."""

    __name__ = "broken_test_plugin"

    @hookimpl
    def register_samplers(self, register):
        raise ValueError("this test plugin is broken on purpose")


class Extra(Sampler):
    name = "test-extra-sampler"
    summary = "a third-party sampler with no UI code of its own"
    params = (
        Param("spread", "float", 0.5, "how far", low=0.0, high=10.0),
        Param("rate", "float", 1e-3, "a log-scaled number", low=1e-6, high=1.0, log=True),
        Param("mode", "str", "a", "a choice", choices=("a", "b")),
        Param("flag", "bool", False, "a switch"),
        Param("count", "int", 3, "a small range", low=1, high=8),
        Param("centres", "floats", [0.0, 1.0], "a list"),
    )

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (2,)

    def sample(self, n, generator, device):
        return self.config["spread"] * torch.randn(n, 2, generator=generator, device=device)


def test_plugins_page_shows_a_broken_plugin_and_everything_else(app_runs_dir, app_registry):
    app_registry.add_plugin(Broken(), name="broken-test-plugin")
    extra = types.ModuleType("extra_plugin")
    extra.register_samplers = hookimpl(lambda register: register(Extra))
    app_registry.add_plugin(extra, name="extra-test-plugin")
    at = new_app()
    at.switch_page("ui/plugins_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("broken-test-plugin" in e and "broken on purpose" in e for e in errors), errors
    assert any("Restart the app (`genex app`)" in c.value for c in at.caption)  # what to do about it
    labels = [x.label for x in at.expander]
    assert any("Traceback of broken-test-plugin" in x for x in labels)
    assert any("ring8" in x for x in labels) and any("test-extra-sampler" in x for x in labels)
    # the third-party sampler gets widgets from its declarations alone
    at.switch_page("ui/train_page.py").run()
    pick(at, "Data", "test-extra-sampler")
    assert by_label(at.sidebar.number_input, "spread").value == 0.5
    assert by_label(at.sidebar.select_slider, "rate").value == pytest.approx(1e-3)
    assert by_label(at.sidebar.selectbox, "mode").value == "a"
    assert by_label(at.sidebar.checkbox, "flag").value is False
    assert by_label(at.sidebar.slider, "count").value == 3
    assert by_label(at.sidebar.text_input, "centres").value == "0, 1"


def test_sampling_page_shows_the_three_methods(app_runs_dir):
    at = new_app()
    at.switch_page("ui/sampling_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert {"KS statistic D", "p-value", "acceptance rate", "1/M", "effective sample size"} <= set(metrics)
    assert float(metrics["p-value"]) > 1e-3  # 10,000 exact inverse-transform samples pass their own KS test
    assert len(charts(at)) >= 6
    # a target with shape parameters of its own
    by_label(at.selectbox, "target distribution (scipy.stats)").set_value("beta").run()
    assert not at.exception and not at.error
    assert "shape b" in [w.label for w in at.number_input]
    # "0" for the envelope constant means automatic: its declared label says so
    assert "M (0 = automatic)" in [w.label for w in at.number_input]
    # every tab picks its target the same way: from the list of scipy.stats distributions, shapes by name
    targets = [w for w in at.selectbox if w.label == "target distribution (scipy.stats)"]
    assert [w.value for w in targets] == ["beta", "beta", "gamma"]
    assert [w.label for w in at.text_input] == ["more modes at"]  # no free-text distribution anywhere
    targets[2].set_value("t").run()  # Metropolis–Hastings on a heavy-tailed target
    assert not at.exception and not at.error
    assert "shape df" in [w.label for w in at.number_input]


def test_metropolis_hastings_with_a_small_step_stays_in_one_of_two_modes(app_runs_dir):
    at = new_app()
    at.switch_page("ui/sampling_page.py").run()
    next(b for b in at.button if b.label.startswith("Show a chain stuck")).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shares = next(c.value for c in at.caption if c.value.startswith("Kept states nearest each mode"))
    assert "at 0: 100%" in shares and "at 10: 0%" in shares and "50% in each" in shares
    # a step as long as the distance between the modes crosses the valley
    by_label(at.select_slider, "step").set_value(10.0).run()
    shares = next(c.value for c in at.caption if c.value.startswith("Kept states nearest each mode"))
    first = int(shares.split("at 0: ")[1].split("%")[0])
    assert 30 <= first <= 70, shares


def test_a_link_carries_a_pipeline_into_the_train_page(app_runs_dir):
    from explorer.spec import parse_spec
    from explorer.ui import urlspec

    spec = parse_spec({"data": "grid25", "objective": "mmd", "steps": 123})
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in urlspec.spec_to_query(spec.to_dict()).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.sidebar.error, [e.value for e in at.sidebar.error]
    assert "from the link" in by_label(at.sidebar.selectbox, "Preset").format_func(by_label(at.sidebar.selectbox, "Preset").value)
    assert by_label(at.sidebar.selectbox, "Data").value == "grid25"
    assert by_label(at.sidebar.number_input, "steps").value == 123
    assert "Discriminator" not in [s.label for s in at.sidebar.selectbox]



def test_the_address_bar_carries_the_composed_pipeline_and_reproduces_it_in_a_new_tab(app_runs_dir):
    from explorer.ui import urlspec

    at = new_app()
    set_sidebar(at, "number_input", "steps", 321)
    at.run()
    token = at.query_params.get(urlspec.QUERY_KEY)
    token = token[0] if isinstance(token, list) else token
    assert token, "the Train page must keep ?spec= in step with the sidebar"
    assert urlspec.spec_from_query({urlspec.QUERY_KEY: token})["steps"] == 321
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a new tab opened on that address
    fresh.query_params[urlspec.QUERY_KEY] = token
    fresh.run()
    assert not fresh.exception
    assert by_label(fresh.sidebar.number_input, "steps").value == 321

# -- the drawing helpers, without a page ----------------------------------------------------------------
def test_history_frame_is_long_form_and_bounded_on_long_runs():
    from explorer.ui import charts

    records = [{"step": i, "time": 0.0, "d_loss": 1.0 + i, "g_loss": -0.5, "steps_per_s": 9.0} for i in range(5000)]
    records.append({"step": 5000, "time": 0.0, "modes": 8.0})
    df = charts.history_frame(records, run="a")
    assert list(df.columns) == ["run", "step", "series", "value"]
    assert set(df["series"]) == {"d_loss", "g_loss", "modes"}  # time and steps/s are not curves
    assert (df.groupby("series").size() <= charts.MAX_POINTS).all()
    assert df[df.series == "d_loss"]["step"].max() == 4999  # the latest point is always kept


def test_curves_chart_uses_log_scales_only_where_they_fit_and_colours_runs_apart():
    from explorer.ui import charts

    pos = charts.history_frame([{"step": i, "d_loss": 1.0 + i} for i in range(10)], run="a")
    neg = charts.history_frame([{"step": i, "g_loss": -1.0 - i} for i in range(10)], run="a")
    assert '"type": "log"' in charts.curves_chart(pos, log_scale=True).to_json()
    assert '"type": "symlog"' in charts.curves_chart(neg, log_scale=True).to_json()  # negative losses keep their sign
    both = charts.combine([pos, charts.history_frame([{"step": i, "d_loss": 2.0} for i in range(10)], run="b")])
    spec = charts.curves_chart(both).to_dict()
    colour = spec["layer"][0]["encoding"]["color"]["field"]
    assert colour == "run"


def test_views_draw_each_kind_of_snapshot():
    import numpy as np

    from explorer.snapshots import Snapshot
    from explorer.ui import views

    rng = np.random.default_rng(0)
    x = np.linspace(-3, 3, 200)
    one = Snapshot(0, "1d", rng.normal(size=(100, 1)), rng.normal(size=(100, 1)), {
        "x": x, "p_data": np.exp(-x**2 / 2), "p_g": np.exp(-x**2), "d_star": np.full(200, 0.5),
        "critic": np.full(200, 0.4), "p_data_exact": np.array(1.0), "z": np.linspace(-1, 1, 40), "g_of_z": np.linspace(-2, 2, 40)})
    assert len(views.view_1d(one).spec()["vconcat"]) == 3  # densities, D and D*, the z -> x mapping
    two = Snapshot(0, "2d", rng.normal(size=(100, 2)), rng.normal(size=(100, 2)), {
        "grid_x": np.linspace(-4, 4, 40), "grid_y": np.linspace(-2, 2, 40), "critic": rng.random((40, 40)),
        "manifold": rng.normal(size=(15, 15, 2)), "arrows": rng.normal(size=(100, 2))})
    fig = views.view_2d(two, views.ViewOptions(arrows=True, height=400))
    spec = fig.spec()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["image", "point", "line", "circle", "rule", "text"]  # heatmap raster + its key, manifold, points, arrows, note
    (x0, x1), (y0, y1) = views.domain_2d(two)
    assert spec["width"] / spec["height"] == pytest.approx((x1 - x0) / (y1 - y0), rel=0.02)  # a unit of x1 as long as one of x2
    assert max(spec["width"], spec["height"]) == 400
    assert fig.datasets["heat"]["url"][0].startswith("data:image/png;base64,")
    imgs = Snapshot(0, "image", rng.uniform(-1, 1, (64, 1, 8, 8)), rng.uniform(-1, 1, (64, 1, 8, 8)),
                    {"nearest": rng.uniform(-1, 1, (64, 1, 8, 8)), "nearest_dist": rng.random(64)})
    picture, caption = views.images_with_nearest(imgs, rows=8, per_row=7)
    assert picture.dtype == np.uint8 and picture.shape[1] >= 480 and "nearest" in caption


def test_param_widget_helpers_parse_lists_and_span_learning_rates():
    from explorer.ui import widgets

    assert widgets.parse_list("1, 2.5; 3", "floats") == [1.0, 2.5, 3.0]
    assert widgets.parse_list("[1, 2]", "ints") == [1, 2]
    assert widgets.parse_list("1, x", "floats") == "1, x"  # left for the spec resolver to report by field
    grid = widgets.log_grid(1e-8, 10.0, 3e-4)
    assert 3e-4 in grid and 1e-3 in grid and 2e-4 in grid and grid == sorted(grid)
    assert min(grid) >= 1e-8 and max(grid) <= 10.0


# -- the sidebar honours what components declare ---------------------------------------------------------
class CriticOnly(Architecture):
    name = "test-critic-only"
    summary = "builds discriminators only (test plugin)"

    def supports(self, role, in_shape, out_shape):
        return None if role == "discriminator" else "builds discriminators only"

    def build(self, role, in_shape, out_shape):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(torch.tensor(in_shape).prod()), 1))


def test_the_architecture_lists_honour_supports(app_runs_dir, app_registry):
    plugin = types.ModuleType("critic_plugin")
    plugin.register_architectures = hookimpl(lambda register: register(CriticOnly))
    app_registry.add_plugin(plugin, name="critic-plugin")
    at = new_app()
    assert "test-critic-only" not in by_label(at.sidebar.selectbox, "Generator").options
    assert "test-critic-only" in by_label(at.sidebar.selectbox, "Discriminator").options
    assert "dcgan" not in by_label(at.sidebar.selectbox, "Generator").options  # ring8 is 2-D, dcgan builds images
    pick(at, "Data", "digits")
    assert "dcgan" in by_label(at.sidebar.selectbox, "Generator").options


def test_metric_defaults_for_2d_data_are_the_metrics_that_apply(app_runs_dir):
    at = new_app()
    metrics = by_label(at.sidebar.multiselect, "metrics")
    assert {"mode-coverage", "energy-distance"} <= set(metrics.value)
    assert not {"ks-1d", "wasserstein-1d", "js-1d", "frechet-distance", "prdc", "memorisation"} & set(metrics.value)
    assert set(metrics.options) == set(metrics.value)  # only applicable metrics are offered
    pick(at, "Data", "mixture-1d")
    one_d = by_label(at.sidebar.multiselect, "metrics")
    assert "ks-1d" in one_d.value and "mode-coverage" not in one_d.value


def test_the_run_name_follows_the_data_and_objective(app_runs_dir):
    at = new_app()
    assert by_label(at.sidebar.text_input, "name").value == "ring8-nonsaturating"
    pick(at, "Data", "spiral")
    pick(at, "Objective", "minimax")
    assert by_label(at.sidebar.text_input, "name").value == ""
    from explorer.spec import resolve

    composed = resolve(at.session_state["genex.train_spec"])
    assert composed.short_name() == "spiral-minimax"  # the run is named after what it trains


def test_a_plugin_that_failed_to_load_is_named_on_the_train_page(app_runs_dir, app_registry):
    app_registry.add_plugin(Broken(), name="broken-test-plugin")
    at = new_app()
    warnings = [w.value for w in at.sidebar.warning]
    assert any("broken-test-plugin" in w and "failed to load" in w for w in warnings), warnings
    links = [el for el in at.sidebar.get("page_link")]
    assert links and links[0].proto.page == "plugins", [el.proto for el in links]


def test_a_run_opened_by_its_link_brings_its_pipeline_into_the_sidebar(app_runs_dir):
    """A `?run=` link from the Runs or Compare page: the sidebar, the caption and Start describe the run
    shown, not the default preset."""
    from explorer.execute import run_foreground
    from explorer.spec import parse_spec

    spec = parse_spec({"data": "grid25", "objective": "mmd", "generator": {"name": "mlp", "width": 16, "depth": 1},
                       "steps": 10, "batch_size": 32, "snapshot_every": 10, "notes": "an MMD run on the grid"})
    store, _ = run_foreground(spec, root=app_runs_dir)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = store.path.name
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert by_label(at.sidebar.selectbox, "Objective").value == "mmd"
    assert by_label(at.sidebar.selectbox, "Data").value == "grid25"
    assert "from run" in by_label(at.sidebar.selectbox, "Preset").format_func(by_label(at.sidebar.selectbox, "Preset").value)
    assert any("an MMD run on the grid" in c.value for c in at.caption)
    at.run()  # later reruns keep what the user composes (the run's pipeline is taken once)
    set_sidebar(at, "selectbox", "Objective", "nonsaturating")
    assert by_label(at.sidebar.selectbox, "Objective").value == "nonsaturating"


def test_compare_page_offers_a_ray_cluster_only_when_an_address_is_configured(app_runs_dir, monkeypatch):
    from explorer import ray_backend

    monkeypatch.delenv("GENEX_RAY_ADDRESS", raising=False)
    at = new_app()
    at.switch_page("ui/compare_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Run on" not in [r.label for r in at.radio]  # nothing to choose: every run trains here
    if not ray_backend.available():
        pytest.skip("ray is not installed (pip install 'generative-explorer[ray]')")
    monkeypatch.setenv("GENEX_RAY_ADDRESS", "10.0.0.5:6379")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    run_on = by_label(at.radio, "Run on")
    assert run_on.options == ["this machine", "Ray cluster at 10.0.0.5:6379"] and run_on.value == "this machine"
    run_on.set_value("Ray cluster at 10.0.0.5:6379").run()
    assert any("train as Ray tasks on the cluster at 10.0.0.5:6379" in c.value for c in at.caption)
