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

from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from explorer.render import image_grid
from explorer.snapshots import Snapshot

REAL = "#1f77b4"
FAKE = "#ff7f0e"
D_COLOUR = "#2ca02c"
D_STAR = "#7f7f7f"
MAP_GREY = "#9a9a9a"
MAX_POINTS = 1000  # points of each kind drawn in 2-D


@dataclass
class ViewOptions:
    """What a view draws; the Train page exposes these as toggles."""

    heatmap: bool = True
    manifold: bool = True
    arrows: bool = False
    critic: bool = True
    d_star: bool = True
    mapping: bool = True
    height: int = 420


# ----------------------------------------------------------------------------------------------
# 1-D
# ----------------------------------------------------------------------------------------------
def _curve(x: np.ndarray, y: np.ndarray, name: str) -> pd.DataFrame:
    y = np.asarray(y, dtype=float).reshape(-1)
    return pd.DataFrame({"x": x, "y": np.where(np.isfinite(y), y, np.nan), "curve": name})


def view_1d(snap: Snapshot, opts: ViewOptions | None = None) -> alt.VConcatChart:
    """Three panels on one x axis (Goodfellow et al. 2014, Fig. 1): the densities p_data and p_g;
    D(x) with the optimal D*(x) = p_data / (p_data + p_g); and the z -> x = G(z) mapping."""
    opts = opts or ViewOptions()
    ex = snap.extras
    x = np.asarray(ex["x"], dtype=float)
    lo, hi = float(x[0]), float(x[-1])
    exact = bool(np.asarray(ex.get("p_data_exact", 0)).item())
    names = ["p_data (exact)" if exact else "p_data (KDE of the data)", "p_g (KDE of G(z))"]
    dens = pd.concat([_curve(x, ex["p_data"], names[0]), _curve(x, ex["p_g"], names[1])])
    xs = alt.X("x:Q", title=None, scale=alt.Scale(domain=[lo, hi], nice=False))
    tips = ["curve:N", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".3f")]
    panels = [alt.Chart(dens).mark_line(strokeWidth=2.2).encode(
        x=xs, y=alt.Y("y:Q", title="density"),
        color=alt.Color("curve:N", scale=alt.Scale(domain=names, range=[REAL, FAKE]), title=None,
                        legend=alt.Legend(orient="top", labelLimit=320, labelFontSize=12)),
        strokeDash=alt.StrokeDash("curve:N", scale=alt.Scale(domain=names, range=[[5, 3], [1, 0]]), legend=None),
        tooltip=tips).properties(height=max(140, int(opts.height * 0.42)))]
    probs = []
    if opts.critic and "critic" in ex:
        probs.append(_curve(x, ex["critic"], "D(x)"))
    if opts.d_star and "d_star" in ex:
        probs.append(_curve(x, ex["d_star"], "D*(x) = p_data / (p_data + p_g)"))
    if probs:
        pnames = [p["curve"].iloc[0] for p in probs]
        half = pd.DataFrame({"x": [lo], "x2": [hi], "y": [0.5]})
        panels.append(alt.layer(
            alt.Chart(half).mark_rule(color="#bbb", strokeDash=[2, 2]).encode(
                x=alt.X("x:Q", scale=alt.Scale(domain=[lo, hi], nice=False), title=None), x2="x2:Q", y="y:Q"),
            alt.Chart(pd.concat(probs)).mark_line(strokeWidth=2).encode(
                x=xs, y=alt.Y("y:Q", title="P(real)", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("curve:N", scale=alt.Scale(domain=pnames, range=[D_COLOUR, D_STAR][: len(pnames)]),
                                title=None, legend=alt.Legend(orient="top", labelLimit=320, labelFontSize=12)),
                strokeDash=alt.StrokeDash("curve:N", scale=alt.Scale(domain=pnames, range=[[1, 0], [3, 2]][: len(pnames)]),
                                          legend=None),
                tooltip=tips),
        ).properties(height=max(90, int(opts.height * 0.28))))
    if opts.mapping and "z" in ex:
        panels.append(mapping_chart(snap, lo, hi, height=max(90, int(opts.height * 0.3))))
    return alt.vconcat(*panels, spacing=6).resolve_scale(x="shared", color="independent", strokeDash="independent")


def mapping_chart(snap: Snapshot, lo: float, hi: float, height: int = 130) -> alt.LayerChart:
    """The z line (below, rescaled to the width of the x axis) and the x line (above), joined by x = G(z)."""
    z = np.asarray(snap.extras["z"], dtype=float)
    gz = np.asarray(snap.extras["g_of_z"], dtype=float)
    zlo, zhi = float(np.min(z)), float(np.max(z))
    span = (zhi - zlo) or 1.0
    zpos = lo + (z - zlo) / span * (hi - lo) * 0.9 + 0.05 * (hi - lo)
    seg = pd.DataFrame({"zpos": zpos, "gz": np.clip(gz, lo, hi), "z": z, "G(z)": gz, "y0": 0.0, "y1": 1.0})
    axis_lines = pd.DataFrame({"x": [lo, lo], "x2": [hi, hi], "y": [0.0, 1.0]})
    labels = pd.DataFrame({"x": [lo, lo], "y": [0.0, 1.0], "text": [f"z ~ p_z  [{zlo:.2g}, {zhi:.2g}]", "x = G(z)"]})
    xs = alt.X("zpos:Q", title=None, scale=alt.Scale(domain=[lo, hi], nice=False))
    ys = alt.Y("y0:Q", scale=alt.Scale(domain=[-0.25, 1.3]), axis=None)
    layers = [
        alt.Chart(axis_lines).mark_rule(color="#333", strokeWidth=1.5).encode(
            x=alt.X("x:Q", scale=alt.Scale(domain=[lo, hi], nice=False), title=None), x2="x2:Q", y=alt.Y("y:Q", axis=None)),
        alt.Chart(seg).mark_rule(color=MAP_GREY, strokeWidth=1).encode(x=xs, x2="gz:Q", y=ys, y2="y1:Q"),
        alt.Chart(seg).mark_point(filled=True, color="#555", size=18).encode(
            x=xs, y=ys, tooltip=[alt.Tooltip("z:Q", format=".3f"), alt.Tooltip("G(z):Q", format=".3f")]),
        alt.Chart(seg).mark_point(shape="triangle-up", filled=True, color=FAKE, size=40).encode(
            x=alt.X("gz:Q"), y=alt.Y("y1:Q"), tooltip=[alt.Tooltip("z:Q", format=".3f"), alt.Tooltip("G(z):Q", format=".3f")]),
        alt.Chart(labels).mark_text(align="left", dy=-8, fontSize=11, color="#333").encode(
            x=alt.X("x:Q"), y=alt.Y("y:Q"), text="text:N"),
    ]
    return alt.layer(*layers).properties(height=height)


# ----------------------------------------------------------------------------------------------
# 2-D
# ----------------------------------------------------------------------------------------------
def _cells(xs: np.ndarray, ys: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    dx = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    dy = (ys[1] - ys[0]) if len(ys) > 1 else 1.0
    gx, gy = np.meshgrid(xs, ys)  # values[i, j] is at (xs[j], ys[i])
    return pd.DataFrame({
        "x": (gx - dx / 2).ravel(), "x2": (gx + dx / 2).ravel(),
        "y": (gy - dy / 2).ravel(), "y2": (gy + dy / 2).ravel(), "value": values.ravel(),
    })


def _points_2d(arr: np.ndarray, label: str) -> pd.DataFrame:
    arr = np.asarray(arr, dtype=float)[:MAX_POINTS]
    arr = arr[np.isfinite(arr).all(axis=1)]
    return pd.DataFrame({"x1": arr[:, 0], "x2": arr[:, 1], "sample": label})


def view_2d(snap: Snapshot, opts: ViewOptions | None = None, critic_title: str = "D(x)") -> alt.LayerChart:
    """Real and generated points over the critic heatmap, with the generator's manifold and push arrows."""
    opts = opts or ViewOptions()
    ex = snap.extras
    pts = pd.concat([_points_2d(snap.real, "real"), _points_2d(snap.fake, "generated")])
    if "grid_x" in ex:
        xs, ys = np.asarray(ex["grid_x"], dtype=float), np.asarray(ex["grid_y"], dtype=float)
        dx, dy = (xs[1] - xs[0]) / 2, (ys[1] - ys[0]) / 2
        xdom, ydom = [float(xs[0] - dx), float(xs[-1] + dx)], [float(ys[0] - dy), float(ys[-1] + dy)]
    else:
        lo = pts[["x1", "x2"]].min().to_numpy()
        hi = pts[["x1", "x2"]].max().to_numpy()
        pad = 0.08 * (hi - lo + 1e-9)
        xdom, ydom = [float(lo[0] - pad[0]), float(hi[0] + pad[0])], [float(lo[1] - pad[1]), float(hi[1] + pad[1])]
    X = alt.Scale(domain=xdom, nice=False)
    Y = alt.Scale(domain=ydom, nice=False)
    layers: list[alt.Chart] = []
    if opts.heatmap and "critic" in ex:
        crit = np.asarray(ex["critic"], dtype=float)
        cells = _cells(xs, ys, np.nan_to_num(crit, nan=0.0))
        if critic_title.startswith("D"):
            domain = [0.0, 0.5, 1.0]
        else:  # a witness function: symmetric around 0
            m = float(np.nanmax(np.abs(crit))) or 1.0
            domain = [-m, 0.0, m]
        layers.append(alt.Chart(cells).mark_rect(opacity=0.85).encode(
            x=alt.X("x:Q", scale=X, title="x₁"), x2="x2:Q", y=alt.Y("y:Q", scale=Y, title="x₂"), y2="y2:Q",
            color=alt.Color("value:Q", title=critic_title,
                            scale=alt.Scale(domain=domain, range=["#fdd0a2", "#ffffff", "#b3d3ea"]),
                            legend=alt.Legend(orient="right", gradientLength=160, format=".2g")),
            tooltip=[alt.Tooltip("value:Q", title=critic_title, format=".3f")]))
    if opts.manifold and "manifold" in ex:
        layers.append(manifold_layer(np.asarray(ex["manifold"], dtype=float), X, Y))
    layers.append(alt.Chart(pts).mark_circle(size=11, opacity=0.6).encode(
        x=alt.X("x1:Q", scale=X, title="x₁"), y=alt.Y("x2:Q", scale=Y, title="x₂"),
        color=alt.Color("sample:N", scale=alt.Scale(domain=["real", "generated"], range=[REAL, FAKE]),
                        title=None, legend=alt.Legend(orient="top", symbolSize=120, labelFontSize=12)),
        tooltip=["sample:N", alt.Tooltip("x1:Q", format=".3f"), alt.Tooltip("x2:Q", format=".3f")]))
    if opts.arrows and "arrows" in ex:
        layers.append(arrows_layer(snap.fake, np.asarray(ex["arrows"], dtype=float), xdom, ydom, X, Y))
    chart = alt.layer(*layers).resolve_scale(color="independent")
    width, height = equal_aspect(xdom, ydom, opts.height)
    return chart.properties(width=width, height=height)


def equal_aspect(xdom: list[float], ydom: list[float], size: int) -> tuple[int, int]:
    """Plot sizes that draw one unit of x1 as long as one unit of x2 (a circle stays a circle),
    the longer side ``size`` pixels, the shorter at least half of it."""
    xs, ys = xdom[1] - xdom[0], ydom[1] - ydom[0]
    if xs <= 0 or ys <= 0:
        return size, size
    if xs >= ys:
        return size, int(max(size / 2, size * ys / xs))
    return int(max(size / 2, size * xs / ys)), size


def manifold_layer(manifold: np.ndarray, X: alt.Scale, Y: alt.Scale) -> alt.Chart:
    """The image of a grid over the latent square: its rows and columns drawn as lines."""
    n = manifold.shape[0]
    rows = []
    for i in range(n):
        for j in range(manifold.shape[1]):
            rows.append((f"r{i}", j, *manifold[i, j]))
            rows.append((f"c{j}", i, *manifold[i, j]))
    df = pd.DataFrame(rows, columns=["line", "order", "x1", "x2"])
    df = df[np.isfinite(df[["x1", "x2"]]).all(axis=1)]
    return alt.Chart(df).mark_line(color="#555", strokeWidth=0.8, opacity=0.55, clip=True).encode(
        x=alt.X("x1:Q", scale=X), y=alt.Y("x2:Q", scale=Y), detail="line:N", order="order:Q")


def arrows_layer(fake: np.ndarray, push: np.ndarray, xdom: list[float], ydom: list[float], X: alt.Scale, Y: alt.Scale) -> alt.Chart:
    """A segment from each generated point along minus the gradient of the generator loss, scaled so
    the longest is 10% of the view."""
    start = np.asarray(fake, dtype=float)[: len(push)]
    norms = np.linalg.norm(push, axis=1)
    top = float(np.nanmax(norms)) if norms.size and np.isfinite(norms).any() else 0.0
    scale = 0.1 * max(xdom[1] - xdom[0], ydom[1] - ydom[0]) / top if top > 0 else 0.0
    end = start + scale * push
    df = pd.DataFrame({"x1": start[:, 0], "y1": start[:, 1], "x2": end[:, 0], "y2": end[:, 1],
                       "|grad|": norms})
    df = df[np.isfinite(df.to_numpy()).all(axis=1)]
    return alt.Chart(df).mark_rule(color="#b34700", strokeWidth=1.2, opacity=0.8, clip=True).encode(
        x=alt.X("x1:Q", scale=X), y=alt.Y("y1:Q", scale=Y), x2="x2:Q", y2="y2:Q",
        tooltip=[alt.Tooltip("|grad|:Q", format=".3g")])


def view_vector(snap: Snapshot, opts: ViewOptions | None = None) -> alt.Chart:
    """Data of another shape: the first two coordinates of real and generated samples."""
    opts = opts or ViewOptions()
    real, fake = snap.real.reshape(len(snap.real), -1), snap.fake.reshape(len(snap.fake), -1)
    if real.shape[1] < 2:
        real, fake = np.c_[real, np.zeros(len(real))], np.c_[fake, np.zeros(len(fake))]
    pts = pd.concat([_points_2d(real[:, :2], "real"), _points_2d(fake[:, :2], "generated")])
    return alt.Chart(pts).mark_circle(size=11, opacity=0.6).encode(
        x=alt.X("x1:Q", title="coordinate 1"), y=alt.Y("x2:Q", title="coordinate 2"),
        color=alt.Color("sample:N", scale=alt.Scale(domain=["real", "generated"], range=[REAL, FAKE]), title=None),
    ).properties(height=opts.height, width=opts.height)


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
def snapshot_chart(snap: Snapshot, opts: ViewOptions | None = None, critic_title: str = "D(x)") -> alt.TopLevelMixin | None:
    """The chart for a 1-D, 2-D or vector snapshot (None for images: use :func:`images_with_nearest`)."""
    if snap.kind == "1d":
        return view_1d(snap, opts)
    if snap.kind == "2d":
        return view_2d(snap, opts, critic_title)
    if snap.kind == "image":
        return None
    return view_vector(snap, opts)


def draw_snapshot(snap: Snapshot | None, container: Any = None, opts: ViewOptions | None = None,
                  critic_title: str = "D(x)", key: str | None = None) -> None:
    """Draw a snapshot into ``container`` (default: the page): one chart, or one image per call."""
    box = container if container is not None else st
    if snap is None:
        box.info("No samples yet: the first snapshot appears as soon as the run starts.")
        return
    if snap.kind == "image":
        img, caption = images_with_nearest(snap)
        box.image(img, caption=caption, width="content")
        return
    chart = snapshot_chart(snap, opts, critic_title)
    box.altair_chart(chart, width="content" if snap.kind == "2d" else "stretch", key=key)
