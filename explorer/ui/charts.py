"""Curves over training steps, from long-form data (run, step, series, value).

One chart serves one run or ten: with a single run the colour is the series; with several the
colour is the run and the dash is the series. The Compare page draws small multiples with the same
functions.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

LOSSES = ("d_loss", "g_loss")
NOT_SERIES = {"step", "time", "steps_per_s"}
MAX_POINTS = 500  # per series and run: what a chart sends to the browser stays bounded on long runs
COLUMNS = ["run", "step", "series", "value"]


def _thin(steps: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread rows, always keeping the last one."""
    n = len(steps)
    if n <= max_points:
        return np.arange(n)
    idx = np.linspace(0, n - 1, max_points).round().astype(int)
    return np.unique(idx)


def history_frame(records: Iterable[Mapping[str, Any]], run: str = "run", max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Long-form rows (run, step, series, value) from history records (loss and metric records alike).

    Non-numeric and non-finite values are dropped; each series is thinned to ``max_points`` rows.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        step = rec.get("step")
        if step is None:
            continue
        for key, value in rec.items():
            if key in NOT_SERIES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not np.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(int(step))
            values.append(float(value))
    frames = []
    for key, (steps, values) in series.items():
        s, v = np.asarray(steps), np.asarray(values)
        keep = _thin(s, max_points)
        frames.append(pd.DataFrame({"run": run, "step": s[keep], "series": key, "value": v[keep]}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ("str", "int64", "str", "float64"))})
    return pd.concat(frames, ignore_index=True)


def combine(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several runs' long-form frames as one (for a chart of many runs)."""
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else history_frame([])


def loss_series(df: pd.DataFrame) -> list[str]:
    """The series logged with the losses (d_loss, g_loss and the objective's extras), in a stable order."""
    names = list(dict.fromkeys(df["series"]))
    first = [n for n in LOSSES if n in names]
    return first + sorted(n for n in names if n not in first)


def _y_scale(values: pd.Series, log_scale: bool) -> alt.Scale:
    if not log_scale or values.empty:
        return alt.Scale(zero=False)
    if (values > 0).all():
        return alt.Scale(type="log")
    # losses can be negative (the minimax generator loss, V(D, G)): a symmetric log keeps the sign
    nonzero = values.abs()[values.abs() > 0]
    constant = float(nonzero.min()) if len(nonzero) else 1e-3
    return alt.Scale(type="symlog", constant=max(constant, 1e-9))


def _encodings(df: pd.DataFrame) -> dict[str, Any]:
    """Colour by series for one run, by run (dash by series) for several. Legends sit on the right:
    in Streamlit a chart's height includes its legend, so a legend on top would squash the plot."""
    many_runs = df["run"].nunique() > 1
    many_series = df["series"].nunique() > 1
    enc: dict[str, Any] = {}
    if many_runs:
        enc["color"] = alt.Color("run:N", title="run", scale=alt.Scale(scheme="tableau10"),
                                 legend=alt.Legend(orient="right", labelLimit=220))
        if many_series:
            enc["strokeDash"] = alt.StrokeDash("series:N", title="series", legend=alt.Legend(orient="right"))
    else:
        enc["color"] = alt.Color("series:N", title=None, scale=alt.Scale(scheme="tableau10"),
                                 legend=alt.Legend(orient="right", labelFontSize=12) if many_series else None)
    return enc


def curves_chart(df: pd.DataFrame, series: Sequence[str] | None = None, log_scale: bool = False,
                 title: str | None = None, height: int = 340, y_title: str = "value") -> alt.LayerChart:
    """Line chart of the chosen series over steps, one shared y axis; hovering shows every value at that step."""
    if series is not None:
        df = df[df["series"].isin(list(series))]
    enc = _encodings(df)
    base = alt.Chart(df).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="~s")),
        y=alt.Y("value:Q", title=y_title, scale=_y_scale(df["value"], log_scale)),
        **enc,
    )
    hover = alt.selection_point(name="hover", nearest=True, on="pointerover", fields=["step"], empty=False, clear="pointerout")
    lines = base.mark_line(strokeWidth=1.8, interpolate="linear")
    catcher = base.mark_point(size=60, opacity=0).add_params(hover)
    points = base.mark_point(filled=True, size=45).encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")],
    )
    rule = alt.Chart(df).mark_rule(color="#888", strokeDash=[3, 3]).encode(x="step:Q").transform_filter(hover)
    chart = alt.layer(lines, catcher, points, rule).properties(height=height)
    if title:
        chart = chart.properties(title=title)
    return chart


def series_grid(df: pd.DataFrame, series: Sequence[str] | None = None, columns: int = 2, log_scale: bool = False,
                height: int = 90, width: int = 170) -> alt.FacetChart:
    """Small multiples: one panel per series, each with its own y axis (metrics on different scales)."""
    if series is not None:
        df = df[df["series"].isin(list(series))]
    enc = _encodings(df)
    enc.pop("strokeDash", None)
    if df["run"].nunique() <= 1:
        enc["color"] = alt.value("#4C78A8")
    scale = alt.Scale(type="symlog") if log_scale else alt.Scale(zero=False)
    base = alt.Chart().encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="~s", tickCount=4)),
        y=alt.Y("value:Q", title=None, scale=scale, axis=alt.Axis(format="~g", tickCount=3)),
        **enc,
    )
    lines = base.mark_line(strokeWidth=1.6, point=alt.OverlayMarkDef(size=14))
    tips = base.mark_point(size=80, opacity=0).encode(
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")],
    )
    return (
        alt.layer(lines, tips, data=df)
        .properties(height=height, width=width)
        .facet(facet=alt.Facet("series:N", title=None, header=alt.Header(labelFontSize=12, labelFontWeight="bold")), columns=columns)
        .resolve_scale(y="independent")
    )


def latest_values(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The most recent value of every series (for a metrics row)."""
    out: dict[str, float] = {}
    for rec in records:
        for key, value in rec.items():
            if key not in NOT_SERIES and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
    return out
