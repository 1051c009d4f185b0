"""The ``drawn`` sampler (your own 2-D data) and the canvas's conversions from Fabric.js JSON to points.

The points live in the spec, so everything that reproduces a spec reproduces the data set: validation
names ``data.points``, sampling follows the seed, ``log_prob`` is the exact mixture, the points survive
TOML, JSON and the URL, and ``genex run`` twice gives the same numbers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from explorer import SpecError
from explorer.spec import parse_spec, parse_text
from explorer.ui import draw, urlspec
from plugins import toys2d
from plugins.drawn import DEFAULT_POINTS, MAX_POINTS, Drawn
from test_app import app_runs_dir  # noqa: F401 - the AppTest fixture: runs in a temporary folder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
THREE = [0.0, 0.0, 1.0, 0.5, -0.75, -1.25]


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def spec_with(points, **more):
    return parse_spec({"data": {"name": "drawn", "points": points, **more}})


# -- the sampler ---------------------------------------------------------------------------------------------
def test_drawn_is_a_builtin_sampler_with_a_default_drawing():
    spec = parse_spec({"data": "drawn"})
    assert spec.data.params["points"] == DEFAULT_POINTS and len(DEFAULT_POINTS) % 2 == 0
    assert spec.data.params["noise"] == 0.05
    assert spec.provenance["data"].startswith("drawn (generative-explorer")
    s = Drawn()
    assert s.shape == (2,) and s.has_log_prob and s.data_kind == "2d"
    (x0, x1), (y0, y1) = s.bounds
    pts = np.array(DEFAULT_POINTS).reshape(-1, 2)
    assert x0 < pts[:, 0].min() and pts[:, 0].max() < x1 and y0 < pts[:, 1].min() and pts[:, 1].max() < y1
    assert math.isclose(x1 - x0, y1 - y0)  # square, like the other 2-D toys


@pytest.mark.parametrize("points, message", [
    ([], "no points: draw at least one point"),
    ([0.1, 0.2, 0.3], "3 numbers cannot be x, y pairs: give an even count"),
    ([0.0] * (2 * MAX_POINTS + 2), f"{MAX_POINTS + 1:,} points; at most {MAX_POINTS:,} are allowed"),
    ([0.0, 150.0], r"points\[1\]: 150.0 is above the maximum 100"),
    ([0.0, "x"], r"points\[1\]: expected a number"),
    ("0, 1", "expected a list of floats"),
])
def test_bad_points_are_one_spec_error_naming_data_points(points, message):
    with pytest.raises(SpecError, match=message) as err:
        spec_with(points)
    assert err.value.field.startswith("data.points")


def test_non_finite_points_and_noise_out_of_bounds_are_refused():
    with pytest.raises(SpecError, match="finite") as err:
        spec_with([0.0, float("nan")])
    assert err.value.field == "data.points[1]"
    with pytest.raises(SpecError, match="below the minimum") as err:
        spec_with(THREE, noise=0.0)
    assert err.value.field == "data.noise"
    with pytest.raises(SpecError, match="drawn.points"):  # built directly: named by the component
        Drawn(points=[1.0])


@pytest.mark.parametrize("device", DEVICES)
def test_samples_come_from_the_seed_on_the_device_and_sit_on_the_points(device):
    s = Drawn(points=THREE, noise=0.01)
    a = s.sample(4000, gen(7, device), device)
    assert a.shape == (4000, 2) and a.dtype == torch.float32 and a.device.type == device
    assert torch.equal(a, Drawn(points=THREE, noise=0.01).sample(4000, gen(7, device), device))
    assert not torch.equal(a, s.sample(4000, gen(8, device), device))
    pts = torch.tensor(THREE, device=device).reshape(-1, 2)
    nearest = torch.cdist(a, pts).min(1)
    assert nearest.values.max() < 0.06  # within 6 noise stds of a drawn point
    counts = torch.bincount(nearest.indices, minlength=3).cpu().numpy()
    assert np.all(np.abs(counts / 4000 - 1 / 3) < 0.03)  # each point picked uniformly
    assert abs(float((a - pts[nearest.indices]).std()) - 0.01) < 0.001


def test_log_prob_is_the_exact_equal_mixture_of_isotropic_gaussians():
    rng = np.random.default_rng(0)
    pts = np.round(rng.uniform(-2, 2, (37, 2)), 2)
    noise = 0.2
    s = Drawn(points=pts.ravel().tolist(), noise=noise)
    x = rng.uniform(-2.5, 2.5, (500, 2))
    # brute force: mean over the points of the 2-D normal density N(p_k, noise^2 I)
    d2 = ((x[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    brute = np.log(np.mean(np.exp(-d2 / (2 * noise ** 2)) / (2 * np.pi * noise ** 2), axis=1))
    got = s.log_prob(torch.tensor(x, dtype=torch.float64)).numpy()
    assert np.allclose(got, brute, rtol=1e-10, atol=1e-10)
    # a density: it integrates to 1 over a grid that holds the mass
    g = np.linspace(-3.5, 3.5, 351)
    gx, gy = np.meshgrid(g, g)
    dens = np.exp(s.log_prob(torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))).numpy())
    assert abs(dens.sum() * (g[1] - g[0]) ** 2 - 1.0) < 1e-3


def test_log_prob_in_chunks_equals_one_pass_and_stays_finite_far_away(monkeypatch):
    s = Drawn(points=DEFAULT_POINTS, noise=0.05)
    x = torch.randn(1000, 2, generator=gen(1), dtype=torch.float64) * 3
    whole = s.log_prob(x)
    monkeypatch.setattr(toys2d, "LOG_PROB_CHUNK", 64)  # a few rows at a time (the mixture's shared log_prob)
    assert torch.allclose(s.log_prob(x), whole, rtol=0, atol=1e-12)
    assert torch.isfinite(s.log_prob(torch.tensor([[50.0, -50.0]]))).all()  # logsumexp: no underflow to -inf
    assert s.log_prob(torch.zeros(0, 2)).shape == (0,)


def test_mode_coverage_metrics_see_the_drawn_points_as_modes():
    from explorer.metrics import mode_statistics

    s = Drawn(points=THREE, noise=0.02)
    centres, std = s.mixture_modes()
    assert centres.tolist() == torch.tensor(THREE).reshape(-1, 2).tolist() and std == 0.02
    stats = mode_statistics(s.sample(600, gen(0), "cpu"), centres, std, 3.0)
    assert stats.modes == 3 and stats.hq_fraction > 0.95


# -- the points live in the spec -----------------------------------------------------------------------------
def test_points_survive_toml_json_and_the_url_exactly():
    rng = np.random.default_rng(3)
    flat = [round(float(v), 2) + 0.0 for v in rng.uniform(-2, 2, 600)]  # 300 drawn points
    spec = spec_with(flat, noise=0.03)
    for text, fmt in ((spec.to_toml(), "toml"), (spec.to_json(), "json")):
        assert parse_spec(parse_text(text, fmt)).data.params["points"] == flat
    token = urlspec.encode_spec(spec.to_dict())
    assert len(token) < urlspec.MAX_TOKEN_CHARS / 2  # a few hundred points fit in a link with room to spare
    assert parse_spec(urlspec.spec_from_query({"spec": token})).data.params == {"points": flat, "noise": 0.03}
    # the default drawing is left out of a link, like any default
    assert urlspec.minimal_spec(parse_spec({"data": "drawn"}).to_dict()) == {"data": "drawn"}


def test_genex_run_twice_on_drawn_points_gives_the_same_numbers(tmp_path, capsys):
    from explorer.cli import main
    from explorer.runs import RunStore

    spec = {"name": "mine", "data": {"name": "drawn", "points": THREE, "noise": 0.1}, "steps": 30, "batch_size": 32,
            "log_every": 5, "snapshot_every": 30, "metrics": "none", "device": "cpu", "seed": 4,
            "generator": {"name": "mlp", "width": 16, "depth": 1}, "discriminator": {"name": "mlp", "width": 16, "depth": 1}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for out in ("a", "b"):
            assert main(["run", str(path), "--out", str(tmp_path / out)]) == 0
    finally:
        torch.set_num_threads(before)
    losses = []
    for out in ("a", "b"):
        store = RunStore(tmp_path / out)
        assert store.read_spec()["data"]["points"] == THREE
        losses.append([(r["step"], r["d_loss"], r["g_loss"]) for r in store.read_metrics() if "g_loss" in r])
    assert [s for s, _, _ in losses[0]] == [5, 10, 15, 20, 25, 30]
    assert losses[0] == losses[1]


# -- the canvas: Fabric.js JSON <-> data points --------------------------------------------------------------
# What the canvas sent after three clicks, a freehand stroke and a line (trimmed from a real session).
CLICKS = [{"type": "Circle", "originX": "left", "originY": "center", "left": left, "top": top, "radius": 3,
           "width": 6, "height": 6, "strokeWidth": 2, "scaleX": 1, "scaleY": 1, "angle": 0}
          for left, top in ((96, 100), (296, 100), (196, 200))]
STROKE = {"type": "Path", "originX": "center", "originY": "center", "left": 150, "top": 300, "width": 200.006,
          "height": 100.006, "strokeWidth": 3, "scaleX": 1, "scaleY": 1, "angle": 0,
          "path": [["M", 49.997, 350.003]] + [["Q", 50 + 10 * i, 350 - 5 * i, 55 + 10 * i, 347.5 - 5 * i] for i in range(20)]
          + [["L", 250.003, 249.997]]}
LINE = {"type": "Line", "originX": "center", "originY": "center", "left": 340, "top": 340, "width": 80, "height": 80,
        "strokeWidth": 3, "scaleX": 1, "scaleY": 1, "angle": 0, "x1": -40, "x2": 40, "y1": -40, "y2": 40}


def test_clicks_map_pixels_to_data_coordinates_with_y_up():
    flat, dropped = draw.points_from_drawing({"objects": CLICKS})
    assert flat == [-1.0, 1.0, 1.0, 1.0, 0.0, 0.0] and dropped == 0
    assert draw.px_to_data(0, 0) == (-2.0, 2.0) and draw.px_to_data(400, 400) == (2.0, -2.0)
    assert draw.px_to_data(*draw.data_to_px(0.37, -1.42)) == (0.37, -1.42)


def test_a_stroke_and_a_line_leave_a_point_every_eight_pixels_along_them():
    stroke = draw.object_pixels(STROKE)
    gaps = np.hypot(*np.diff(np.array(stroke), axis=0).T)
    assert np.allclose(gaps, 8.0, atol=0.05)  # a straight stroke: evenly spaced
    assert np.allclose(stroke[0], (50, 350), atol=0.01) and math.hypot(stroke[-1][0] - 250, stroke[-1][1] - 250) < 8
    assert len(stroke) == 1 + int(math.hypot(200, 100) // 8)
    line = draw.object_pixels(LINE)
    assert np.allclose(line[0], (300, 300)) and len(line) == 1 + int(math.hypot(80, 80) // 8)
    assert all(math.isclose(x, y) for x, y in line)
    flat, _ = draw.points_from_drawing({"objects": CLICKS + [STROKE, LINE]})
    assert len(flat) == 2 * (3 + len(stroke) + len(line))
    assert flat[6:8] == [-1.5, -1.5]  # the stroke starts at pixel (50, 350)


def test_a_moved_scaled_or_rotated_object_is_placed_where_it_is_shown():
    moved = {**STROKE, "left": 200, "top": 250}  # dragged by (+50, -50) with the toolbar's edit toggle
    assert np.allclose(draw.object_pixels(moved), np.array(draw.object_pixels(STROKE)) + [50, -50], atol=0.05)
    turned = {**LINE, "angle": 90}  # the line from top-left to bottom-right, turned a quarter
    assert np.allclose(draw.object_pixels(turned)[0], (380, 300))
    bigger = {**CLICKS[2], "scaleX": 2, "scaleY": 2, "left": 192}  # the ring scaled about its centre
    assert np.allclose(draw.object_pixels(bigger), [(200, 200)])
    assert draw.object_pixels({"type": "Rect", "left": 1, "top": 1}) == []  # other shapes are not data


def test_the_points_a_canvas_opens_with_come_back_unchanged_and_the_limit_holds():
    flat = [0.123, -1.987, 1.0, 1.0, 3.5, 0.0]  # finer than a pixel, and one off the canvas
    drawing = json.loads(json.dumps(draw.drawing_from_points(flat)))
    assert all(o["type"] == "Circle" for o in drawing["objects"])
    back, _ = draw.points_from_drawing(drawing, draw.keep_map(flat))
    assert back == flat
    rounded, _ = draw.points_from_drawing(drawing)  # without the map: to the nearest pixel, on the canvas
    assert rounded == [0.12, -1.99, 1.0, 1.0, 2.0, 0.0]
    many, dropped = draw.points_from_drawing({"objects": CLICKS * 5}, limit=4)
    assert len(many) == 8 and dropped == 11
    assert draw.points_from_drawing(None) == ([], 0)


def test_the_canvas_background_is_a_labelled_square_png():
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(draw.axes_png()))
    assert img.size == (draw.CANVAS_PX, draw.CANVAS_PX)


# -- the Train page's sidebar (AppTest) ----------------------------------------------------------------------
def _app():
    from test_app import new_app

    return new_app()


def _composed(at):
    return parse_spec(at.session_state["genex.train_spec"])


def _labels(at):
    return [b.label for b in at.button]


def test_picking_drawn_opens_the_canvas_and_the_drawing_becomes_the_specs_points(app_runs_dir):
    from test_app import pick

    at = _app()
    pick(at, "Data", "drawn")
    assert "Use these points" in _labels(at)  # picked just now: the canvas opened by itself
    assert any(c.value.startswith("**29 points** drawn") for c in at.sidebar.caption)
    assert _composed(at).data.params == {"points": DEFAULT_POINTS, "noise": 0.05}
    next(b for b in at.button if b.label == "Use these points").click().run()
    assert not at.exception and "Use these points" not in _labels(at)  # closed, and stays closed
    at.run()
    assert "Use these points" not in _labels(at)
    next(b for b in at.sidebar.button if b.label == "Draw the data").click().run()
    assert "Use these points" in _labels(at)
    next(b for b in at.button if b.label == "Clear").click().run()
    assert not at.exception
    assert any("0 points" in m.value for m in at.markdown)
    assert next(b for b in at.button if b.label == "Use these points").disabled  # nothing to use


def test_the_drawn_preset_shows_its_points_without_opening_the_canvas(app_runs_dir):
    from test_app import set_sidebar

    at = _app()
    set_sidebar(at, "selectbox", "Preset", "drawn-nonsaturating")
    assert "Use these points" not in _labels(at)
    assert any(c.value.startswith("**16 points** drawn") for c in at.sidebar.caption)
    spec = _composed(at)
    assert spec.data.name == "drawn" and len(spec.data.params["points"]) == 32 and spec.steps == 2000


def test_without_the_canvas_component_the_points_are_typed_and_checked(app_runs_dir, monkeypatch):
    from test_app import by_label, pick

    monkeypatch.setattr(draw, "canvas_component",
                        lambda: (None, "ModuleNotFoundError: No module named 'streamlit_drawable_canvas'"))
    at = _app()
    pick(at, "Data", "drawn")
    assert any("drawing canvas (streamlit-drawable-canvas) is not available" in i.value for i in at.sidebar.info)
    assert "Use these points" not in _labels(at) and "Draw the data" not in _labels(at)
    by_label(at.sidebar.text_input, "points").set_value("0, 0, 1, 1.5").run()
    assert not at.exception and _composed(at).data.params["points"] == [0.0, 0.0, 1.0, 1.5]
    by_label(at.sidebar.text_input, "points").set_value("0, 0, 1").run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert any(e.startswith("data.points: 3 numbers cannot be x, y pairs") for e in errors), errors


def test_a_drawing_too_large_for_a_link_is_not_put_in_the_address_bar(app_runs_dir):
    """Thousands of points (allowed in a spec) make a token longer than a link may carry: the address bar
    then holds no spec= that could not be loaded back, and the Spec panel says to download the spec."""
    from streamlit.testing.v1 import AppTest

    from explorer.execute import run_foreground
    from explorer.training import TrainerConfig
    from test_app import APP, TIMEOUT

    rng = np.random.default_rng(5)
    flat = [round(float(v), 2) + 0.0 for v in rng.uniform(-2, 2, 2 * MAX_POINTS)]
    spec = parse_spec({"data": {"name": "drawn", "points": flat}, "steps": 1, "batch_size": 8, "metrics": "none",
                       "generator": {"name": "mlp", "width": 8, "depth": 1}, "discriminator": {"name": "mlp", "width": 8, "depth": 1}})
    assert len(urlspec.encode_spec(spec.to_dict())) > urlspec.MAX_TOKEN_CHARS
    store, _ = run_foreground(spec, root=app_runs_dir, config=TrainerConfig(snapshot_hz=0))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = store.path.name
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _composed(at).data.params["points"] == flat  # the run's drawing, in the sidebar
    assert any(c.value.startswith(f"**{MAX_POINTS:,} points** drawn") for c in at.sidebar.caption)
    assert "spec" not in at.query_params
    assert any("too large for a link" in c.value for c in at.sidebar.caption)
