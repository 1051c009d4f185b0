"""Live views that cost little to redraw and hold still: specs built once, only data new on each
redraw, the critic as one raster layer, axis ranges that do not jump between frames, and samples
beyond the view drawn at its edge and counted."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.snapshots import Snapshot
from explorer.ui import charts, views


def ring_snapshot(seed: int, spread: float = 0.1, shift: float = 0.0) -> Snapshot:
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, 500) * np.pi / 4
    real = np.c_[np.cos(angles), np.sin(angles)] + rng.normal(0, 0.02, (500, 2))
    fake = rng.normal(shift, spread, (500, 2))
    return Snapshot(seed, "2d", real, fake, {
        "grid_x": np.linspace(-2, 2, 40), "grid_y": np.linspace(-2, 2, 40), "critic": rng.random((40, 40)),
        "manifold": rng.normal(size=(15, 15, 2)), "arrows": rng.normal(size=(150, 2))})


def test_a_live_chart_is_validated_once_and_redraws_send_only_new_data(monkeypatch):
    built = []
    real_spec = charts.cached_spec

    def counting(key, build):
        return real_spec(key, lambda: (built.append(key), build())[1])

    monkeypatch.setattr(charts, "cached_spec", counting)
    charts._specs.clear()
    domain = views.domain_2d(ring_snapshot(0))
    opts = views.ViewOptions(domain=domain)
    first = views.view_2d(ring_snapshot(1), opts).spec()
    second_fig = views.view_2d(ring_snapshot(2), opts)
    second = second_fig.spec()
    assert len(built) == 1  # the second frame reused the first one's spec
    assert {k: v for k, v in first.items() if k != "datasets"} == {k: v for k, v in second.items() if k != "datasets"}
    assert not first["datasets"]["points"].equals(second["datasets"]["points"])
    # drawn on a canvas, with no ARIA label per mark: a redraw repaints, it does not restyle SVG nodes
    assert first["usermeta"]["embedOptions"]["renderer"] == "canvas" and first["config"]["aria"] is False
    curves = [{"step": s, "d_loss": 1.0 / s, "g_loss": 0.7} for s in range(1, 50)]
    charts.curves_figure(charts.history_frame(curves[:10], run="r")).spec()
    charts.curves_figure(charts.history_frame(curves, run="r")).spec()
    assert len(built) == 2


def test_the_critic_is_one_raster_image_coloured_by_its_value():
    snap = ring_snapshot(0)
    snap.extras["critic"] = np.tile(np.linspace(0, 1, 40), (40, 1))  # D rises from left to right
    fig = views.view_2d(snap)
    assert len(fig.datasets["heat"]) == 1 and fig.spec()["datasets"]["heat"].num_rows == 1  # the picture, not 1,600 cells
    import base64
    import io

    from PIL import Image

    url = fig.datasets["heat"]["url"][0]
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert img.shape == (40, 40, 3)
    assert img[20, 0, 2] < img[20, 0, 0]  # left: D = 0, the "generated" orange
    assert img[20, -1, 2] > img[20, -1, 0]  # right: D = 1, the "real" blue
    assert (img[20, 20] > 240).all()  # D = 1/2 is white


def test_the_2d_domain_holds_still_while_samples_move_inside_it_and_grows_when_they_leave():
    first = views.domain_2d(ring_snapshot(0))
    assert views.domain_2d(ring_snapshot(1, shift=0.05), first) == first  # small moves: the same frame
    moved = views.domain_2d(ring_snapshot(2, spread=0.2, shift=2.5), first)
    assert moved[0][1] > first[0][1] + 1 and moved[1][1] > first[1][1] + 1  # the view follows the samples
    (x0, x1), (y0, y1) = moved
    assert 1 / 1.5 <= (x1 - x0) / (y1 - y0) <= 1.5  # never squashed past 3:2
    # back on the data: the frame shrinks again, so the data never sits small in a corner of it
    back = views.domain_2d(ring_snapshot(3, shift=0.05), moved)
    assert back != moved and (back[0][1] - back[0][0]) < 0.75 * (x1 - x0)
    assert views.domain_2d(ring_snapshot(4, shift=0.05), back) == back  # and holds still there


def test_samples_beyond_the_view_are_drawn_at_its_edge_and_counted():
    snap = ring_snapshot(0)
    snap.fake[:7] = [[-15.0, 0.0]] * 7  # a diverged generator's stragglers, beyond four data spans
    fig = views.view_2d(snap)
    (x0, _), _ = views.domain_2d(snap)
    pts = fig.datasets["points"]
    gen = pts[pts["sample"] == "generated"]
    assert len(gen) == 500 and gen["x1"].min() == pytest.approx(x0)  # none dropped: clipped to the edge
    assert fig.datasets["note"]["caption"].tolist() == ["7 generated samples beyond the view, drawn at its edge"]
    assert fig.datasets["note"]["text"].tolist() == ["7 generated samples beyond the view (at its edge)"]


def test_stable_range_snaps_to_round_steps():
    assert views.stable_range((-1.23, 0.97)) == pytest.approx((-1.5, 1.0))  # steps of 0.5 for a span of 2.2
    assert views.stable_range((0.1, 0.2), previous=(0.0, 1.0)) == pytest.approx((0.08, 0.22))  # far smaller: refit, with room
    assert views.stable_range((0.1, 0.9), previous=(0.0, 1.0)) == (0.0, 1.0)


def test_slow_runs_show_their_rate_not_zero():
    from explorer.ui.live import rate_text

    assert rate_text(0.3) == "0.3" and rate_text(85.4) == "85" and rate_text(4.25) == "4.2" and rate_text(0) == "0"


def test_a_diverged_1d_generator_is_named_where_it_went():
    x = np.linspace(-3, 3, 200)
    rng = np.random.default_rng(0)
    fake = np.r_[rng.normal(0, 0.5, 490).clip(-2, 2), np.full(10, -15.0)].reshape(-1, 1)  # ten samples far off, at x = -15
    snap = Snapshot(5, "1d", rng.normal(0, 1, (500, 1)), fake, {"x": x, "p_data": np.exp(-x ** 2 / 2), "p_g": np.exp(-x ** 2 / 2)})
    fig = views.view_1d(snap)
    assert fig.datasets["note"]["text"].tolist() == ["10 generated samples beyond the view, from x = -15 to -15"]


def test_a_1d_view_that_follows_the_generator_away_from_the_data_says_so():
    x = np.linspace(-16, 3, 200)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 1, (500, 1)), rng.normal(-15, 0.3, (500, 1))
    snap = Snapshot(5, "1d", real, fake, {"x": x, "p_data": np.exp(-x ** 2 / 2), "p_g": np.exp(-(x + 15) ** 2 / 0.18)})
    note = views.view_1d(snap).datasets["note"]
    assert note["text"].tolist() == [""]  # nothing beyond the view: the chart stays clean
    assert note["caption"][0].startswith("100% of the generated samples lie away from the data (x = -3")
    assert "between x = -15.9" in note["caption"][0] and note["caption"][0].endswith("the view follows them")
    on_data = Snapshot(5, "1d", real, rng.normal(0, 1, (500, 1)), snap.extras)
    assert views.view_1d(on_data).datasets["note"].empty  # a generator on the data: nothing to say


def test_metric_panels_say_which_way_is_better_and_draw_p_values_on_a_log_scale_as_declared():
    from explorer.ui.live import MetricDeclarations, as_declared

    records = [{"step": s, "kind": "metric", "energy_distance": 0.1, "hq_fraction": 0.9, "undeclared": 1.0,
                "ks_p_value": p} for s, p in ((10, 1e-14), (20, 0.0))]
    decl = MetricDeclarations({"energy_distance": "lower", "hq_fraction": "higher", "ks_p_value": "higher"}, frozenset({"ks_p_value"}))
    df = as_declared(charts.history_frame(records, run="r"), decl)
    assert set(df["series"]) == {"energy_distance (↓ better)", "hq_fraction (↑ better)", "undeclared", "log10 ks_p_value (↑ better)"}
    p = df[df["series"] == "log10 ks_p_value (↑ better)"].sort_values("step")["value"].tolist()
    assert p[0] == pytest.approx(-14.0) and np.isnan(p[1])  # a p-value of 0 has no logarithm: left out, not -inf
    assert df[df["series"] == "undeclared"]["value"].tolist() == [1.0, 1.0]
    spec = charts.series_grid_figure(df).spec()
    assert sum(table.num_rows for table in spec["datasets"].values()) == 8  # every value still drawn


def test_a_curve_with_one_point_so_far_is_drawn_as_a_dot():
    spec = charts.curves_figure(charts.history_frame([{"step": 5, "kind": "loss", "g_loss": 0.7}], run="r")).spec()
    dots = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "point"
            and any(t.get("filter") == "datum.n < 2" for t in layer.get("transform", []))]
    assert dots and dots[0]["mark"]["opacity"] == 1
    two = charts.curves_figure(charts.history_frame([{"step": s, "kind": "loss", "g_loss": 0.7} for s in (5, 10)], run="r")).spec()
    assert "datum.n < 2" not in str(two["layer"])  # lines of two points or more need no dots


def test_the_1d_view_can_show_p_g_as_a_histogram_that_keeps_spikes():
    x = np.linspace(-3, 3, 200)
    rng = np.random.default_rng(0)
    fake = np.r_[np.full(300, 1.0), rng.normal(0, 0.5, 200).clip(-2.9, 2.9)].reshape(-1, 1)  # a spike at x = 1
    snap = Snapshot(5, "1d", rng.normal(0, 1, (500, 1)), fake,
                    {"x": x, "p_data": np.exp(-x ** 2 / 2), "p_g": np.exp(-x ** 2 / 2), "d_star": np.full(200, 0.5)})
    assert "hist" not in views.view_1d(snap).datasets  # off by default
    fig = views.view_1d(snap, views.ViewOptions(histogram=True))
    hist = fig.datasets["hist"]
    assert hist["count"].sum() == 500
    assert ((hist["density"] * (hist["right"] - hist["left"])).sum()) == pytest.approx(1.0)  # all in view: mass 1
    spike = hist.loc[hist["density"].idxmax()]
    assert spike["left"] <= 1.0 <= spike["right"] and spike["count"] >= 300
    assert any("p_g by KDE" in c for c in fig.datasets["probs"]["curve"])  # D* says which estimate it uses
    assert fig.spec()["vconcat"]  # draws
