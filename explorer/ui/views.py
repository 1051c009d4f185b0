"""Live views of a Snapshot, fitted to the data: 1-D, 2-D, images (and a fallback for vectors).

Each function takes a :class:`~explorer.snapshots.Snapshot` (plain arrays, taken in the trainer's
thread) and returns an altair chart, or an image array for image data, so the Train page and the
Compare page's small multiples draw with the same code. Colours: real data blue, generated orange.

- 1-D: Figure 1 of Goodfellow et al. (2014): the z line below, the x line above, and the lines
  x = G(z) between them; above, p_data, p_g, D(x) and D*(x) = p_data / (p_data + p_g).
- 2-D: real and generated points over the discriminator's output (or the MMD witness), the
  generator's manifold as a warped grid of the latent square, and where the objective pushes each
  generated point.
- Images: generated samples, with each row's last column the training image nearest to the sample
  beside it (Goodfellow et al. 2014, Fig. 2), so memorisation would show.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from explorer.render import image_grid
from explorer.snapshots import Snapshot, raw_snapshot
from explorer.spec import EMA
from explorer.ui.charts import Figure
from explorer.ui.explain import Critic

REAL = "#1f77b4"
FAKE = "#ff7f0e"
D_COLOUR = "#2ca02c"
D_STAR = "#7f7f7f"
MAP_GREY = "#9a9a9a"
MAX_POINTS = 1000  # points of each kind drawn in 2-D
SAMPLES = ["real", "generated"]  # the points' two kinds, in the legend's order


@dataclass
class ViewOptions:
    """What a view draws; the Train page exposes these as toggles."""

    heatmap: bool = True
    manifold: bool = True
    arrows: bool = False
    critic: bool = True
    d_star: bool = True
    mapping: bool = True
    histogram: bool = False  # 1-D: p_g also as a histogram of the generated samples (a KDE smooths spikes away)
    height: int = 420
    domain: Sequence[tuple[float, float]] | None = None  # axis ranges to draw (None: fitted to the snapshot)
    raw: bool = False  # a run with ema: the raw G's picture beside the averaged G's


# ----------------------------------------------------------------------------------------------
# Domains that hold still
# ----------------------------------------------------------------------------------------------
def _nice_step(span: float) -> float:
    """About a tenth of ``span``, rounded to 1, 2 or 5 times a power of ten."""
    raw = max(span, 1e-9) / 10.0
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 5.0, 10.0) if m * base >= raw)


def stable_range(wanted: tuple[float, float], previous: tuple[float, float] | None = None) -> tuple[float, float]:
    """An axis range that holds still while a run trains: ``wanted`` snapped outward to round steps,
    and the previous range kept while it still holds what is wanted and is under twice its size."""
    lo, hi = float(wanted[0]), float(wanted[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return previous or ((lo - 1.0, lo + 1.0) if math.isfinite(lo) else (-1.0, 1.0))
    if previous is not None and previous[0] <= lo and hi <= previous[1] and (hi - lo) > 0.5 * (previous[1] - previous[0]):
        return previous
    if previous is not None:  # it moves: leave room, so the next few frames fit without another jump
        mid, half = (lo + hi) / 2, 0.6 * (hi - lo)
        lo, hi = mid - half, mid + half
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _rows(arr: Any) -> np.ndarray:
    """``arr`` as one row per sample (float), also when it holds no samples."""
    arr = np.asarray(arr, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1)
    return arr.reshape(len(arr), -1)


def _box(arr: np.ndarray, lo_q: float, hi_q: float) -> tuple[np.ndarray, np.ndarray] | None:
    arr = np.asarray(arr, dtype=float)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if not len(arr):
        return None
    return np.percentile(arr, lo_q, axis=0), np.percentile(arr, hi_q, axis=0)


def wanted_domain(snap: Snapshot) -> list[tuple[float, float]]:
    """Per axis, the span that shows the data and (within four data spans of it) the generated
    samples, padded by 8%."""
    real, fake = _rows(snap.real), _rows(snap.fake)
    rb, fb = _box(real, 0.5, 99.5), _box(fake, 0.5, 99.5)  # the few beyond are drawn at the edge and counted
    if rb is None:
        rb = fb or (np.full(real.shape[1], -1.0), np.full(real.shape[1], 1.0))
    lo, hi = rb
    span = np.maximum(hi - lo, 1e-6)
    if fb is not None:
        lo, hi = np.maximum(np.minimum(lo, fb[0]), lo - 4 * span), np.minimum(np.maximum(hi, fb[1]), hi + 4 * span)
    pad = 0.08 * (hi - lo)
    return [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad)]


def _equal_units(xdom: tuple[float, float], ydom: tuple[float, float], max_ratio: float = 1.5) -> tuple[tuple[float, float], tuple[float, float]]:
    """Widen the narrower axis (about its centre) so the plot's sides differ by at most ``max_ratio``
    while one unit of x1 stays as long as one unit of x2."""
    xs, ys = xdom[1] - xdom[0], ydom[1] - ydom[0]
    if xs > max_ratio * ys:
        c, half = (ydom[0] + ydom[1]) / 2, xs / max_ratio / 2
        ydom = (c - half, c + half)
    elif ys > max_ratio * xs:
        c, half = (xdom[0] + xdom[1]) / 2, ys / max_ratio / 2
        xdom = (c - half, c + half)
    return xdom, ydom


def _outside_note(fake: np.ndarray, doms: Sequence[tuple[float, float]], drawn: bool = True,
                  real: np.ndarray | None = None) -> pd.DataFrame:
    """Where the generated samples are when the data alone would not show them, as one row (or none):
    ``text``, short, drawn in the chart, and ``caption``, the sentence under it. Samples beyond the view
    are counted (drawn at its edge for 2-D points; for 1-D densities, where they are); with ``real``,
    samples away from the data that the view has followed are said too (under the chart only)."""
    fake = _rows(fake)[:, : len(doms)]
    finite = np.isfinite(fake).all(axis=1)
    out = ~finite
    for d, (lo, hi) in enumerate(doms):
        out |= finite & ((fake[:, d] < lo) | (fake[:, d] > hi))
    n = int(out.sum())
    if n:
        text = f"{n} generated sample{'s' if n > 1 else ''} beyond the view"
        if drawn:
            return pd.DataFrame({"text": [f"{text} (at its edge)"], "caption": [f"{text}, drawn at its edge"]})
        if (out & finite).any():
            beyond = fake[out & finite, 0]
            text += f", from x = {beyond.min():.3g} to {beyond.max():.3g}"
        return pd.DataFrame({"text": [text], "caption": [text]})
    box = _box(_rows(real)[:, : len(doms)], 0.5, 99.5) if real is not None else None
    if box is not None and finite.any():
        pad = 0.08 * np.maximum(box[1] - box[0], 1e-6)
        away = finite & ((fake < box[0] - pad) | (fake > box[1] + pad)).any(axis=1)
        if away.mean() >= 0.05:  # a few stragglers are normal; a share this large moved the view
            if len(doms) == 1:
                caption = (f"{away.mean():.0%} of the generated samples lie away from the data (x = {box[0][0]:.3g} "
                           f"to {box[1][0]:.3g}), between x = {fake[away, 0].min():.3g} and {fake[away, 0].max():.3g}: "
                           "the view follows them")
            else:
                caption = f"{away.mean():.0%} of the generated points lie away from the data: the view follows them"
            return pd.DataFrame({"text": [""], "caption": [caption]})
    return pd.DataFrame({"text": [], "caption": []})


# ----------------------------------------------------------------------------------------------
# 1-D
# ----------------------------------------------------------------------------------------------
def _curve(x: np.ndarray, y: np.ndarray, name: str) -> pd.DataFrame:
    y = np.asarray(y, dtype=float).reshape(-1)
    return pd.DataFrame({"x": x, "y": np.where(np.isfinite(y), y, np.nan), "curve": name})


def view_1d(snap: Snapshot, opts: ViewOptions | None = None) -> Figure:
    """Three panels on one x axis (Goodfellow et al. 2014, Fig. 1): the densities p_data and p_g;
    D(x) with the optimal D*(x) = p_data / (p_data + p_g); and the z -> x = G(z) mapping."""
    opts = opts or ViewOptions()
    ex = snap.extras
    x = np.asarray(ex["x"], dtype=float)
    lo, hi = opts.domain[0] if opts.domain else stable_range((float(x[0]), float(x[-1])))
    exact = bool(np.asarray(ex.get("p_data_exact", 0)).item())
    names = ("p_data (exact)" if exact else "p_data (KDE of the data)", "p_g (KDE of G(z))")
    datasets = {"dens": pd.concat([_curve(x, ex["p_data"], names[0]), _curve(x, ex["p_g"], names[1])]),
                "note": _outside_note(snap.fake, [(lo, hi)], drawn=False, real=snap.real)}
    if opts.histogram:
        datasets["hist"] = histogram_data(snap.fake, lo, hi)
    probs = []
    if opts.critic and "critic" in ex:
        probs.append(_curve(x, ex["critic"], "D(x)"))
    if opts.d_star and "d_star" in ex:
        probs.append(_curve(x, ex["d_star"], "D*(x) = p_data / (p_data + p_g), p_g by KDE"))
    pnames = tuple(p["curve"].iloc[0] for p in probs)
    if probs:
        datasets["probs"] = pd.concat(probs)
    mapping = bool(opts.mapping and "z" in ex)
    if mapping:
        datasets.update(_mapping_data(snap, lo, hi))
    hist = opts.histogram
    key = ("view_1d", names, pnames, mapping, hist, opts.height, lo, hi)
    return Figure(key, lambda: _view_1d(names, pnames, mapping, opts.height, lo, hi, hist), datasets)


def histogram_data(fake: np.ndarray, lo: float, hi: float, bins: int = 60) -> pd.DataFrame:
    """Samples (the generated ones in the 1-D view, a sampler's on the Sampling page) as a density
    histogram over [lo, hi], normalised by all of them (so mass outside the view is missing from the
    bars, not spread over them): spikes and hard edges a KDE smooths away stay visible."""
    values = _rows(fake)[:, 0]
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values[(values >= lo) & (values <= hi)], bins=bins, range=(lo, hi))
    dens = counts / max(len(values), 1) / (edges[1] - edges[0])
    return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "density": dens, "count": counts})


def _note_layer(x: float, y: Any) -> alt.Chart:
    return alt.Chart(alt.Data(name="note")).mark_text(align="left", baseline="top", dx=4, dy=4, fontSize=10,
                                                       color="#b34700").encode(x=alt.value(x), y=alt.value(y), text="text:N")


def _view_1d(names: tuple[str, str], pnames: tuple[str, ...], mapping: bool, height: int, lo: float, hi: float,
             hist: bool = False) -> alt.VConcatChart:
    xs = alt.X("x:Q", title=None, scale=alt.Scale(domain=[lo, hi], nice=False))
    tips = ["curve:N", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".3f")]
    dens = alt.Chart(alt.Data(name="dens")).mark_line(strokeWidth=2.2, clip=True).encode(
        x=xs, y=alt.Y("y:Q", title="density"),
        color=alt.Color("curve:N", scale=alt.Scale(domain=list(names), range=[REAL, FAKE]), title=None,
                        legend=alt.Legend(orient="top", labelLimit=320, labelFontSize=12)),
        strokeDash=alt.StrokeDash("curve:N", scale=alt.Scale(domain=list(names), range=[[5, 3], [1, 0]]), legend=None),
        tooltip=tips)
    layers = [dens, _note_layer(0, 0)]
    if hist:
        layers.insert(0, alt.Chart(alt.Data(name="hist")).mark_rect(color=FAKE, opacity=0.3).encode(
            x=alt.X("left:Q", title=None, scale=alt.Scale(domain=[lo, hi], nice=False)), x2="right:Q",
            y=alt.Y("density:Q", title="density"),
            tooltip=[alt.Tooltip("left:Q", format=".3f"), alt.Tooltip("right:Q", format=".3f"), "count:Q"]))
    panels = [alt.layer(*layers).properties(height=max(140, int(height * 0.42)))]
    if pnames:
        panels.append(alt.layer(
            # one row of its own: a mark over no data draws nothing
            alt.Chart(alt.InlineData(values=[{}])).mark_rule(color="#bbb", strokeDash=[2, 2]).encode(y=alt.datum(0.5)),
            alt.Chart(alt.Data(name="probs")).mark_line(strokeWidth=2, clip=True).encode(
                x=xs, y=alt.Y("y:Q", title="P(real)", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("curve:N", scale=alt.Scale(domain=list(pnames), range=[D_COLOUR, D_STAR][: len(pnames)]),
                                title=None, legend=alt.Legend(orient="top", labelLimit=320, labelFontSize=12)),
                strokeDash=alt.StrokeDash("curve:N", scale=alt.Scale(domain=list(pnames), range=[[1, 0], [3, 2]][: len(pnames)]),
                                          legend=None),
                tooltip=tips),
        ).properties(height=max(90, int(height * 0.28))))
    if mapping:
        panels.append(_mapping_chart(lo, hi, height=max(150, int(height * 0.36))))
    return alt.vconcat(*panels, spacing=6).resolve_scale(x="shared", color="independent", strokeDash="independent")


def _mapping_data(snap: Snapshot, lo: float, hi: float) -> dict[str, pd.DataFrame]:
    """The z line (below, rescaled to the width of the x axis) and the x line (above), joined by x = G(z)."""
    z = np.asarray(snap.extras["z"], dtype=float)
    gz = np.asarray(snap.extras["g_of_z"], dtype=float)
    zlo, zhi = float(np.min(z)), float(np.max(z))
    span = (zhi - zlo) or 1.0
    zpos = lo + (z - zlo) / span * (hi - lo) * 0.9 + 0.05 * (hi - lo)
    seg = pd.DataFrame({"zpos": zpos, "gz": np.clip(gz, lo, hi), "z": z, "G(z)": gz, "y0": 0.0, "y1": 1.0})
    labels = pd.DataFrame({"y": [0.0, 1.0], "text": [f"z ~ p_z, from {zlo:.2g} to {zhi:.2g}", "x = G(z)"]})
    return {"seg": seg, "labels": labels}


def _mapping_chart(lo: float, hi: float, height: int = 130) -> alt.LayerChart:
    # no x axis here: the z line is z rescaled to the panel's width, so x's units would mislabel it
    xs = alt.X("zpos:Q", title=None, scale=alt.Scale(domain=[lo, hi], nice=False), axis=None)
    ys = alt.Y("y0:Q", scale=alt.Scale(domain=[-0.5, 1.5]), axis=None)
    tips = [alt.Tooltip("z:Q", format=".3f"), alt.Tooltip("G(z):Q", format=".3f")]
    seg = alt.Data(name="seg")
    layers = [
        # every y here is unlabelled (axis=None): Vega-Lite cannot merge a datum's missing title with a field's
        alt.Chart(alt.Data(name="labels")).mark_rule(color="#333", strokeWidth=1.5).encode(
            y=alt.Y("y:Q", scale=alt.Scale(domain=[-0.5, 1.5]), axis=None)),  # the z line and the x line
        alt.Chart(seg).mark_rule(color=MAP_GREY, strokeWidth=1).encode(x=xs, x2="gz:Q", y=ys, y2="y1:Q"),
        alt.Chart(seg).mark_point(filled=True, color="#555", size=18).encode(x=xs, y=ys, tooltip=tips),
        alt.Chart(seg).mark_point(shape="triangle-up", filled=True, color=FAKE, size=40).encode(
            x=alt.X("gz:Q"), y=alt.Y("y1:Q", axis=None), tooltip=tips),
        # labels outside the two lines (x above the x line, z below the z line), so they never sit on the mapping
        alt.Chart(alt.Data(name="labels")).mark_text(align="left", baseline="top", dy=8, fontSize=11, color="#333").encode(
            x=alt.value(2), y=alt.Y("y:Q", axis=None), text="text:N").transform_filter("datum.y < 0.5"),
        alt.Chart(alt.Data(name="labels")).mark_text(align="left", baseline="bottom", dy=-8, fontSize=11, color="#333").encode(
            x=alt.value(2), y=alt.Y("y:Q", axis=None), text="text:N").transform_filter("datum.y >= 0.5"),
    ]
    return alt.layer(*layers).properties(height=height)


# ----------------------------------------------------------------------------------------------
# 2-D
# ----------------------------------------------------------------------------------------------
_D_RAMP = np.array([[253, 208, 162], [255, 255, 255], [179, 211, 234]], dtype=float)  # fake-ish, undecided, real-ish


def heatmap_png(values: np.ndarray, lo: float, hi: float) -> str:
    """The critic on its grid as a small PNG data URL (one raster layer instead of a rect per cell).
    Row 0 of ``values`` is the lowest y, so the picture is flipped to put it at the bottom."""
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=(lo + hi) / 2)
    t = np.clip((v - lo) / ((hi - lo) or 1.0), 0.0, 1.0) * 2.0  # 0 .. 2 over the three colours
    i = np.minimum(t.astype(int), 1)
    f = (t - i)[..., None]
    rgb = (_D_RAMP[i] * (1 - f) + _D_RAMP[i + 1] * f).astype(np.uint8)[::-1]
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _points_2d(arr: np.ndarray, label: str, doms: Sequence[tuple[float, float]] | None = None) -> pd.DataFrame:
    arr = np.asarray(arr, dtype=float)[:MAX_POINTS]
    arr = arr[np.isfinite(arr).all(axis=1)]
    if doms is not None:  # samples beyond the view are drawn on its edge, never dropped
        arr = np.column_stack([np.clip(arr[:, d], *doms[d]) for d in range(2)]) if len(arr) else arr.reshape(0, 2)
    # the label as a category: one dictionary entry in Arrow, not a string per point
    return pd.DataFrame({"x1": arr[:, 0], "x2": arr[:, 1],
                         "sample": pd.Categorical.from_codes(np.full(len(arr), SAMPLES.index(label)), SAMPLES)})


def domain_2d(snap: Snapshot, previous: Sequence[tuple[float, float]] | None = None) -> list[tuple[float, float]]:
    """The 2-D view's axis ranges: what :func:`wanted_domain` asks for, held still between redraws
    (:func:`stable_range`), the narrower axis widened to keep equal units within a 3:2 frame."""
    return _hold(wanted_domain(snap), previous, equal_units=True)


def _hold(want: Sequence[tuple[float, float]], previous: Sequence[tuple[float, float]] | None,
          equal_units: bool) -> list[tuple[float, float]]:
    prev = list(previous) if previous is not None and len(previous) == len(want) else [None] * len(want)
    dom = [stable_range(want[d], prev[d]) for d in range(len(want))]
    return list(_equal_units(dom[0], dom[1])) if equal_units and len(dom) == 2 else dom


def _wanted(snap: Snapshot) -> list[tuple[float, float]] | None:
    """The axis ranges one snapshot's view asks for (2-D: :func:`wanted_domain`; 1-D: its density grid)."""
    if snap.kind == "2d":
        return wanted_domain(snap)
    if snap.kind == "1d" and "x" in snap.extras:
        x = np.asarray(snap.extras["x"], dtype=float)
        return [(float(x[0]), float(x[-1]))] if len(x) else None
    return None


def view_2d(snap: Snapshot, opts: ViewOptions | None = None, critic: Critic | None = None) -> Figure:
    """Real and generated points over the critic heatmap, with the generator's manifold and push arrows."""
    opts = opts or ViewOptions()
    ex = snap.extras
    doms = [tuple(d) for d in (opts.domain or domain_2d(snap))]
    (x0, x1), (y0, y1) = doms
    datasets: dict[str, pd.DataFrame] = {
        "points": pd.concat([_points_2d(snap.real, "real", doms), _points_2d(snap.fake, "generated", doms)]),
        "note": _outside_note(snap.fake, doms, real=snap.real),
    }
    critic = critic or Critic()
    heat = bool(opts.heatmap and "critic" in ex and "grid_x" in ex)
    if heat:
        xs, ys = np.asarray(ex["grid_x"], dtype=float), np.asarray(ex["grid_y"], dtype=float)
        dx, dy = (xs[1] - xs[0]) / 2, (ys[1] - ys[0]) / 2
        crit = np.asarray(ex["critic"], dtype=float)
        if critic.range is not None:
            url = heatmap_png(crit, *critic.range)
        else:  # a signed function (e.g. a witness): symmetric around 0, shown scaled to its largest magnitude
            m = float(np.nanmax(np.abs(crit))) if np.isfinite(crit).any() else 1.0
            url = heatmap_png(crit / (m or 1.0), -1.0, 1.0)
        datasets["heat"] = pd.DataFrame({"x": [xs[0] - dx], "x2": [xs[-1] + dx], "y": [ys[0] - dy], "y2": [ys[-1] + dy], "url": [url]})
    manifold = bool(opts.manifold and "manifold" in ex)
    if manifold:
        datasets["manifold"] = manifold_data(np.asarray(ex["manifold"], dtype=float))
    arrows = bool(opts.arrows and "arrows" in ex)
    if arrows:
        datasets["arrows"] = arrows_data(snap.fake, np.asarray(ex["arrows"], dtype=float), doms[0], doms[1])
    width, height = equal_aspect(list(doms[0]), list(doms[1]), opts.height)
    key = ("view_2d", heat, critic, manifold, arrows, x0, x1, y0, y1, width, height)
    return Figure(key, lambda: _view_2d(heat, critic, manifold, arrows, doms, width, height), datasets)


def _view_2d(heat: bool, critic: Critic, manifold: bool, arrows: bool,
             doms: Sequence[tuple[float, float]], width: int, height: int) -> alt.LayerChart:
    X = alt.Scale(domain=list(doms[0]), nice=False)
    Y = alt.Scale(domain=list(doms[1]), nice=False)
    x_enc, y_enc = alt.X("x1:Q", scale=X, title="x₁"), alt.Y("x2:Q", scale=Y, title="x₂")
    layers: list[alt.Chart] = []
    if heat:
        layers.append(alt.Chart(alt.Data(name="heat")).mark_image(aspect=False, opacity=0.85, clip=True).encode(
            x=alt.X("x:Q", scale=X, title="x₁"), x2="x2:Q", y=alt.Y("y:Q", scale=Y, title="x₂"), y2="y2:Q", url="url:N"))
        # the colour key for the raster: three invisible points carry the gradient legend
        lo, hi = critic.range if critic.range is not None else (-1.0, 1.0)
        domain = [lo, (lo + hi) / 2, hi]
        title = critic.title if critic.range is not None else f"{critic.title} / max |{critic.title}|"
        key_points = alt.Data(values=[{"v": v} for v in domain])
        layers.append(alt.Chart(key_points).mark_point(opacity=0).encode(
            x=alt.value(0), y=alt.value(0),
            color=alt.Color("v:Q", title=title, scale=alt.Scale(domain=domain, range=["#fdd0a2", "#ffffff", "#b3d3ea"]),
                            legend=alt.Legend(orient="right", gradientLength=max(60, min(160, height - 70)), format=".2g"))))
    if manifold:
        layers.append(alt.Chart(alt.Data(name="manifold")).mark_line(color="#555", strokeWidth=0.8, opacity=0.55, clip=True).encode(
            x=x_enc, y=y_enc, detail="line:N", order="order:Q"))
    layers.append(alt.Chart(alt.Data(name="points")).mark_circle(size=11, opacity=0.6).encode(
        x=x_enc, y=y_enc,
        color=alt.Color("sample:N", scale=alt.Scale(domain=["real", "generated"], range=[REAL, FAKE]),
                        title=None, legend=alt.Legend(orient="top", symbolSize=120, labelFontSize=12)),
        tooltip=["sample:N", alt.Tooltip("x1:Q", format=".3f"), alt.Tooltip("x2:Q", format=".3f")]))
    if arrows:
        layers.append(alt.Chart(alt.Data(name="arrows")).mark_rule(color="#b34700", strokeWidth=1.2, opacity=0.8, clip=True).encode(
            x=x_enc, y=y_enc, x2="x2e:Q", y2="y2e:Q", tooltip=[alt.Tooltip("|grad|:Q", format=".3g")]))
    layers.append(_note_layer(0, 0))
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=width, height=height)


def equal_aspect(xdom: list[float], ydom: list[float], size: int) -> tuple[int, int]:
    """Plot sizes that draw one unit of x1 as long as one unit of x2 (a circle stays a circle),
    the longer side ``size`` pixels, the shorter at least half of it."""
    xs, ys = xdom[1] - xdom[0], ydom[1] - ydom[0]
    if xs <= 0 or ys <= 0:
        return size, size
    if xs >= ys:
        return size, int(max(size / 2, size * ys / xs))
    return int(max(size / 2, size * xs / ys)), size


def manifold_data(manifold: np.ndarray) -> pd.DataFrame:
    """The image of a grid over the latent square: its rows and then its columns as lines (line, order,
    x1, x2), numbered, not named: this is rebuilt on every redraw."""
    n, m = manifold.shape[:2]
    ii, jj = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    x1, x2 = np.tile(manifold[..., 0].ravel(), 2), np.tile(manifold[..., 1].ravel(), 2)
    df = pd.DataFrame({"line": np.concatenate([ii.ravel(), n + jj.ravel()]), "order": np.concatenate([jj.ravel(), ii.ravel()]),
                       "x1": x1, "x2": x2})
    return df[np.isfinite(x1) & np.isfinite(x2)]


def arrows_data(fake: np.ndarray, push: np.ndarray, xdom: Sequence[float], ydom: Sequence[float]) -> pd.DataFrame:
    """A segment from each generated point along minus the gradient of the generator loss, scaled so
    the longest is 10% of the view."""
    start = np.asarray(fake, dtype=float)[: len(push)]
    norms = np.linalg.norm(push, axis=1)
    top = float(np.nanmax(norms)) if norms.size and np.isfinite(norms).any() else 0.0
    scale = 0.1 * max(xdom[1] - xdom[0], ydom[1] - ydom[0]) / top if top > 0 else 0.0
    end = start + scale * push
    df = pd.DataFrame({"x1": start[:, 0], "x2": start[:, 1], "x2e": end[:, 0], "y2e": end[:, 1], "|grad|": norms})
    return df[np.isfinite(df.to_numpy()).all(axis=1)]


def view_vector(snap: Snapshot, opts: ViewOptions | None = None) -> Figure:
    """Data of another shape: the first two coordinates of real and generated samples."""
    opts = opts or ViewOptions()
    real, fake = _rows(snap.real), _rows(snap.fake)
    if real.shape[1] < 2:
        real, fake = np.c_[real, np.zeros(len(real))], np.c_[fake, np.zeros(len(fake))]
    pts = pd.concat([_points_2d(real[:, :2], "real"), _points_2d(fake[:, :2], "generated")])

    def build() -> alt.Chart:
        return alt.Chart(alt.Data(name="points")).mark_circle(size=11, opacity=0.6).encode(
            x=alt.X("x1:Q", title="coordinate 1"), y=alt.Y("x2:Q", title="coordinate 2"),
            color=alt.Color("sample:N", scale=alt.Scale(domain=["real", "generated"], range=[REAL, FAKE]), title=None),
        ).properties(height=opts.height, width=opts.height)

    return Figure(("view_vector", opts.height), build, {"points": pts})


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------
def images_with_nearest(snap: Snapshot, rows: int = 8, per_row: int = 7, min_width: int = 480) -> tuple[np.ndarray, str]:
    """One picture: ``rows`` rows of ``per_row`` generated images; when the snapshot has them, a last
    column (after an orange line) with the training image nearest to the sample beside it."""
    fake = np.asarray(snap.fake, dtype=np.float32)
    nearest = snap.extras.get("nearest")
    rows = max(1, min(rows, len(fake) // per_row or 1))
    fake = fake[: rows * per_row]
    if nearest is None:
        grid = image_grid(fake, ncol=per_row)
        caption = f"step {snap.step}: {len(fake)} generated samples"
    else:
        nearest = np.asarray(nearest, dtype=np.float32)
        tiles = []
        for r in range(rows):
            row = fake[r * per_row:(r + 1) * per_row]
            tiles.extend(row)
            tiles.append(nearest[r * per_row + len(row) - 1])
        grid = image_grid(np.stack(tiles), ncol=per_row + 1)
        w = fake.shape[3]
        x = (per_row) * (w + 1)  # the padding column before the last image column
        grid[:, x, :] = (228, 87, 46)
        dist = snap.extras.get("nearest_dist")
        mean = f"; mean distance to the nearest training image {float(np.mean(dist)):.3g}" if dist is not None else ""
        caption = (f"step {snap.step}: generated samples; last column (after the orange line): the training image "
                   f"nearest to the sample beside it{mean}")
    factor = max(1, int(np.ceil(min_width / grid.shape[1])))
    if factor > 1:
        grid = grid.repeat(factor, axis=0).repeat(factor, axis=1)
    return grid, caption


# ----------------------------------------------------------------------------------------------
def snapshot_figure(snap: Snapshot, opts: ViewOptions | None = None, critic: Critic | None = None) -> Figure | None:
    """The figure for a 1-D, 2-D or vector snapshot (None for images: use :func:`images_with_nearest`)."""
    if snap.kind == "1d":
        return view_1d(snap, opts)
    if snap.kind == "2d":
        return view_2d(snap, opts, critic)
    if snap.kind == "image":
        return None
    return view_vector(snap, opts)


def held_domain(snaps: Snapshot | Sequence[Snapshot | None], key: str) -> list[tuple[float, float]] | None:
    """The axis ranges for a live view under ``key``: fitted to the snapshot, then held still across
    redraws (kept in the session) until the samples outgrow them or shrink to under half. Given several
    snapshots of one kind (small multiples), one set of ranges that fits them all, so the panels share
    their axes; None when they cannot (other kinds, or kinds that differ)."""
    snaps = [snaps] if isinstance(snaps, Snapshot) else [s for s in snaps if s is not None]
    wants = [_wanted(s) for s in snaps]
    if not snaps or len({s.kind for s in snaps}) != 1 or any(w is None for w in wants):
        return None
    want = [(min(w[d][0] for w in wants), max(w[d][1] for w in wants)) for d in range(len(wants[0]))]
    store_key = f"genex.domain.{key}"
    dom = _hold(want, st.session_state.get(store_key), equal_units=snaps[0].kind == "2d")
    st.session_state[store_key] = dom
    return dom


RAW_LABEL = "raw G (the one that trains)"
RAW_TOGGLE = "raw G beside the average"
RAW_TOGGLE_HELP = ("The picture shows the moving average of G's weights (spec `ema`, Yazıcı et al. 2019). This draws the "
                   "raw G beside it: the generator the optimiser steps and D is trained against, on the same latent "
                   "codes and the same axes.")
PAIR_HEIGHT = 300  # the 2-D view's size when the averaged and the raw G are drawn side by side (two, with legends, fit 1,250 px)
PAIR_MIN_WIDTH = 360  # each 1-D view's and image grid's least width then
Y_AXIS_PX = 64  # what a 1-D view's y axis adds to the width Streamlit gives it


def ema_settings(ema: Mapping[str, Any] | bool | None) -> tuple[float, int] | None:
    """(decay, start) of a spec's ``ema`` (``True``: the defaults), or None when the run averages nothing."""
    if not ema:
        return None
    defaults = {p.name: p.default for p in EMA}
    table = ema if isinstance(ema, Mapping) else {}
    return float(table.get("decay", defaults["decay"])), int(table.get("start", defaults["start"]))


def ema_label(ema: Mapping[str, Any] | bool | None) -> str:
    """``averaged G (EMA, decay 0.99 from step 1,000)``: what a picture of an ``ema`` run shows."""
    decay, start = ema_settings(ema) or (0.0, 0)
    return f"averaged G (EMA, decay {decay:g} from step {start:,})"


def draw_snapshot(snap: Snapshot | None, container: Any = None, opts: ViewOptions | None = None,
                  critic: Critic | None = None, key: str | None = None,
                  ema: Mapping[str, Any] | bool | None = None) -> None:
    """Draw a snapshot into ``container`` (default: the page): one chart, or one image per call. With
    a ``key``, the axis ranges hold still from one redraw to the next.

    For a run with ``ema`` (its spec's table) the picture is labelled as the averaged G's, and with
    ``opts.raw`` the raw G's picture of the same latent codes is drawn beside it (:func:`draw_pair`)."""
    box = container if container is not None else st
    if snap is None:
        box.info("No samples yet: the first snapshot appears as soon as the run starts.")
        return
    opts = opts or ViewOptions()
    raw = raw_snapshot(snap) if ema_settings(ema) and opts.raw else None
    if raw is not None:
        draw_pair(snap, raw, ema, box, opts, critic, key)
        return
    if ema_settings(ema):
        box.markdown(f"**{ema_label(ema)}**")
    _draw_one(snap, box, opts, critic, key)
    if ema_settings(ema) and opts.raw:
        box.caption("This snapshot holds no samples of the raw G (snapshots keep them from the runs that average G).")


def draw_pair(snap: Snapshot, raw: Snapshot, ema: Mapping[str, Any] | bool | None, box: Any,
              opts: ViewOptions, critic: Critic | None = None, key: str | None = None) -> None:
    """The averaged G's picture and the raw G's (:func:`~explorer.snapshots.raw_snapshot`) side by side,
    labelled, on the same axes (held still together under ``key``), images at the same scale. Each chart is
    a :class:`Figure` of the same shape, so both redraw from one cached spec."""
    if snap.kind == "2d":
        opts = dataclasses.replace(opts, height=min(opts.height, PAIR_HEIGHT))
    if key is not None and opts.domain is None:
        opts = dataclasses.replace(opts, domain=held_domain([snap, raw], key))
    if snap.kind == "2d":  # fixed-size views in a row that wraps: the raw one goes under when both do not fit
        row = box.container(horizontal=True, gap="medium")
        cells = [row.container(width="content") for _ in range(2)]
    else:  # views that fill their width (1-D) or images: two equal columns (the page gives them PAIR_MIN_WIDTH)
        name = re.sub(r"[^A-Za-z0-9_-]", "_", key or "view") + "_pair"
        if snap.kind == "1d":
            # Streamlit stretches each panel of a stacked chart to the column and then adds the y axis beside it:
            # the columns keep that much room, so the first picture never runs under the second
            box.html(f"<style>.st-key-{name} [data-testid=stColumn] {{ padding-right: {Y_AXIS_PX}px; }}</style>")
        cells = list(box.container(key=name).columns(2, gap="medium"))
    shown = ((snap, ema_label(ema), ""), (raw, RAW_LABEL, ".raw"))
    if snap.kind == "image":  # one scale for both grids, so the same sample is the same size in each
        grids = [images_with_nearest(s, min_width=0) for s, _, _ in shown]
        factor = max(1, math.ceil(PAIR_MIN_WIDTH / max(g.shape[1] for g, _ in grids)))
        for cell, (_, label, _), (grid, caption) in zip(cells, shown, grids):
            cell.markdown(f"**{label}**")
            cell.image(grid.repeat(factor, axis=0).repeat(factor, axis=1), caption=caption, width="content")
    else:
        for cell, (s, label, suffix) in zip(cells, shown):
            cell.markdown(f"**{label}**")
            _draw_one(s, cell, opts, critic, None if key is None else f"{key}{suffix}")
    decay, start = ema_settings(ema) or (0.0, 0)
    if snap.step <= start:
        box.caption(f"Up to step {start:,} the average is G itself, so the two pictures match; "
                    f"from then on it trails G by about {1 / (1 - decay):,.0f} steps.")


def _draw_one(snap: Snapshot, box: Any, opts: ViewOptions, critic: Critic | None, key: str | None) -> None:
    if snap.kind == "image":
        img, caption = images_with_nearest(snap)
        box.image(img, caption=caption, width="content")
        return
    if key is not None and opts.domain is None:
        opts = dataclasses.replace(opts, domain=held_domain(snap, key))
    fig = snapshot_figure(snap, opts, critic)
    box.vega_lite_chart(fig.spec(), width="content" if snap.kind == "2d" else "stretch", key=key)
    note = fig.datasets.get("note")
    if note is not None and len(note):  # said in the chart too; a canvas is not text a reader can select
        box.caption(f"⚠ {note['caption'].iloc[0]}")
