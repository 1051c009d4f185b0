"""Curves over training steps, from long-form data (run, step, series, value), and the cache that
makes redrawing a live chart cheap.

One chart serves one run or ten: with a single run the colour is the series; with several the
colour is the run and the dash is the series. The Compare page draws small multiples with the same
functions.

A live page redraws its charts a few times a second. Building an altair chart and validating it
against the Vega-Lite schema costs far more than the data it shows (hundreds of milliseconds), so a
live chart is a :class:`Figure`: a chart built once over *named* datasets, its Vega-Lite spec cached
by what its shape depends on, and only the data (small DataFrames, sent as Arrow) new on each redraw.
With an unchanged spec the browser swaps the data in place instead of drawing the chart anew.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa

LOSSES = ("d_loss", "g_loss")
NOT_SERIES = {"step", "time", "steps_per_s", "kind", "errors", "set"}
MAX_POINTS = 500  # per series and run: what a chart sends to the browser stays bounded on long runs
COLUMNS = ["run", "step", "series", "value"]
SPEC_CACHE_SIZE = 256

_specs: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
_specs_lock = threading.Lock()


def cached_spec(key: Hashable, build: Callable[[], Any]) -> dict[str, Any]:
    """The Vega-Lite spec of ``build()`` (an altair chart over named datasets), built and validated
    once per ``key`` and then reused (least recently used ones are dropped past SPEC_CACHE_SIZE)."""
    with _specs_lock:
        spec = _specs.get(key)
        if spec is not None:
            _specs.move_to_end(key)
            return spec
    spec = build().to_dict()
    spec.pop("datasets", None)
    # Drawn on a canvas, without an ARIA label per mark: a redraw then costs the browser a repaint, not a
    # thousand SVG nodes restyled (the page's renderer used ~70% of a core at two redraws a second, ~40% so)
    spec["usermeta"] = {**spec.get("usermeta", {}), "embedOptions": {"renderer": "canvas"}}
    spec.setdefault("config", {})["aria"] = False
    with _specs_lock:
        _specs[key] = spec
        while len(_specs) > SPEC_CACHE_SIZE:
            _specs.popitem(last=False)
    return spec


@dataclass(frozen=True)
class Figure:
    """A chart as a cached spec plus the data it draws: ``key`` names everything the spec depends on,
    ``build`` makes the altair chart over ``alt.Data(name=...)`` sources, ``datasets`` fills them."""

    key: Hashable
    build: Callable[[], Any]
    datasets: Mapping[str, pd.DataFrame]

    def spec(self) -> dict[str, Any]:
        """The full Vega-Lite spec, datasets included as Arrow tables (converted here on one thread:
        pyarrow's thread pool costs more than these small tables)."""
        datasets = {k: pa.Table.from_pandas(v, preserve_index=False, nthreads=1) for k, v in self.datasets.items()}
        return {**cached_spec(self.key, self.build), "datasets": datasets}


def _thin(steps: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread rows, always keeping the last one."""
    n = len(steps)
    if n <= max_points:
        return np.arange(n)
    idx = np.linspace(0, n - 1, max_points).round().astype(int)
    return np.unique(idx)


def _number(value: Any) -> float:
    """A real number, or NaN for anything else (bools, strings, lists, None)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def history_frame(records: Iterable[Mapping[str, Any]], run: str = "run", max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Long-form rows (run, step, series, value) from history records (loss and metric records alike).

    Non-numeric and non-finite values are dropped; each series is thinned to ``max_points`` rows.
    A live page calls this on every redraw: one pass per key over plain records, one frame at the end.
    """
    records = [r for r in records if isinstance(r, Mapping) and isinstance(r.get("step"), (int, float))
               and not isinstance(r.get("step"), bool)]
    names: list[str] = []
    steps: list[np.ndarray] = []
    values: list[np.ndarray] = []
    if records:
        steps_all = np.array([float(r["step"]) for r in records])
        for key in dict.fromkeys(k for r in records for k in r):  # every key, in order of appearance
            if key in NOT_SERIES:
                continue
            vals = np.fromiter((_number(r.get(key)) for r in records), dtype=float, count=len(records))
            ok = np.isfinite(vals) & np.isfinite(steps_all)
            if not ok.any():
                continue
            s, v = steps_all[ok].astype(np.int64), vals[ok]
            keep = _thin(s, max_points)
            names.append(str(key))
            steps.append(s[keep])
            values.append(v[keep])
    if not names:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ("str", "int64", "str", "float64"))})
    # One frame, with run and series as categoricals (codes, not a string per row: cheap to build and to
    # send as Arrow on every redraw of a live chart).
    sizes = [len(s) for s in steps]
    n = sum(sizes)
    return pd.DataFrame({
        "run": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[run]),
        "step": np.concatenate(steps),
        "series": pd.Categorical.from_codes(np.repeat(np.arange(len(names)), sizes), categories=names),
        "value": np.concatenate(values),
    })


CHANGE_COLOUR = "#7b3294"
_SHORT = {"optim.generator.lr": "lr(G)", "optim.discriminator.lr": "lr(D)", "k_d": "k_D", "objective": "objective"}


def change_label(settings: Mapping[str, Any]) -> str:
    """``lr(G) 0.0002, k_D 2, objective minimax``: a change record's settings, in a few words."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            value = value.get("name", "?")
        elif isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{_SHORT.get(key, key)} {value}")
    return ", ".join(parts)


def changes_frame(records: Iterable[Mapping[str, Any]], run: str = "run") -> pd.DataFrame:
    """One row (run, step, change) per change record (settings changed mid-run): markers on the curves."""
    rows = [(run, int(r["step"]), change_label(r["set"])) for r in records
            if isinstance(r, Mapping) and r.get("kind") == "change" and isinstance(r.get("set"), Mapping)
            and isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)]
    return pd.DataFrame(rows, columns=["run", "step", "change"]).astype({"step": "int64"})


def with_changes(df: pd.DataFrame, changes: pd.DataFrame | None) -> pd.DataFrame:
    """``df`` (long form) with a ``change`` column: None on its rows, and for a faceted chart one extra row
    per change and series (value NaN) so that every panel draws the change's marker."""
    df = df.assign(change=None)
    if changes is None or not len(changes) or not len(df):
        return df
    series = df["series"].astype(str).unique()
    extra = pd.DataFrame([{"run": c.run, "step": c.step, "series": s, "value": np.nan, "change": c.change}
                          for c in changes.itertuples() for s in series])
    out = pd.concat([df.astype({"run": str, "series": str}), extra], ignore_index=True)
    return out


def _change_layers(data: Any, faceted: bool = False) -> list[Any]:
    """A dashed purple rule at each change, its settings in the tooltip (and, unfaceted, written at the top)."""
    chart = alt.Chart() if faceted else alt.Chart(data)
    rule = chart.mark_rule(color=CHANGE_COLOUR, strokeDash=[6, 3], strokeWidth=1.5).encode(
        x="step:Q", tooltip=[alt.Tooltip("step:Q", title="changed at step"), alt.Tooltip("change:N", title="settings")])
    if faceted:
        return [rule.transform_filter("isValid(datum.change)")]
    label = chart.mark_text(align="left", baseline="top", dx=3, dy=2, fontSize=10, color=CHANGE_COLOUR).encode(
        x="step:Q", y=alt.value(0), text="change:N")
    return [rule, label]


def combine(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several runs' long-form frames as one (for a chart of many runs)."""
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else history_frame([])


def loss_series(df: pd.DataFrame) -> list[str]:
    """The series logged with the losses (d_loss, g_loss and the objective's extras), in a stable order."""
    names = list(dict.fromkeys(df["series"]))
    first = [n for n in LOSSES if n in names]
    return first + sorted(n for n in names if n not in first)


def _y_scale_args(values: pd.Series, log_scale: bool) -> tuple[str, float]:
    """The y scale for ``values``: linear, log, or (for series that go negative) symlog with a
    constant rounded to a power of ten, so the scale, and the cached spec, change rarely."""
    if not log_scale or values.empty:
        return "linear", 0.0
    if (values > 0).all():
        return "log", 0.0
    # losses can be negative (the minimax generator loss, V(D, G)): a symmetric log keeps the sign
    nonzero = values.abs()[values.abs() > 0]
    constant = float(nonzero.min()) if len(nonzero) else 1e-3
    return "symlog", 10.0 ** math.floor(math.log10(max(constant, 1e-9)))


def _y_scale(kind: str, constant: float) -> alt.Scale:
    if kind == "linear":
        return alt.Scale(zero=False)
    if kind == "log":
        return alt.Scale(type="log")
    return alt.Scale(type="symlog", constant=constant)


def _encodings(many_runs: bool, many_series: bool) -> dict[str, Any]:
    """Colour by series for one run, by run (dash by series) for several. Legends sit on the right:
    in Streamlit a chart's height includes its legend, so a legend on top would squash the plot."""
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


def _shape(df: pd.DataFrame) -> tuple[bool, bool]:
    return df["run"].nunique() > 1, df["series"].nunique() > 1


def curves_chart(df: pd.DataFrame, series: Sequence[str] | None = None, log_scale: bool = False,
                 title: str | None = None, height: int = 340, y_title: str = "value",
                 changes: pd.DataFrame | None = None) -> alt.LayerChart:
    """Line chart of the chosen series over steps, one shared y axis; hovering shows every value at that step.
    ``changes`` (:func:`changes_frame`) marks where settings changed mid-run."""
    if series is not None:
        df = df[df["series"].isin(list(series))]
    marked = changes if changes is not None and len(changes) else None
    return _curves(df, _shape(df), _y_scale_args(df["value"], log_scale), title, height, y_title, changes=marked)


def curves_figure(df: pd.DataFrame, series: Sequence[str] | None = None, log_scale: bool = False,
                  title: str | None = None, height: int = 340, y_title: str = "value",
                  changes: pd.DataFrame | None = None) -> Figure:
    """:func:`curves_chart` as a live :class:`Figure` (its spec built once per shape and scale)."""
    if series is not None:
        df = df[df["series"].isin(list(series))]
    shape, scale = _shape(df), _y_scale_args(df["value"], log_scale)
    # a line needs two points: a curve with one value so far (the first log, a metric pass) is drawn as a dot
    lone = bool(len(df)) and bool((df.groupby(["run", "series"], observed=True).size() == 1).any())
    marked = changes is not None and bool(len(changes))
    key = ("curves", shape, scale, title, height, y_title, lone, marked)
    datasets = {"curves": df, **({"changes": changes} if marked else {})}
    return Figure(key, lambda: _curves(alt.Data(name="curves"), shape, scale, title, height, y_title, lone,
                                       alt.Data(name="changes") if marked else None), datasets)


def _curves(data: Any, shape: tuple[bool, bool], scale: tuple[str, float], title: str | None, height: int,
            y_title: str, lone: bool = False, changes: Any = None) -> alt.LayerChart:
    enc = _encodings(*shape)
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="~s")),
        y=alt.Y("value:Q", title=y_title, scale=_y_scale(*scale)),
        **enc,
    )
    hover = alt.selection_point(name="hover", nearest=True, on="pointerover", fields=["step"], empty=False, clear="pointerout")
    lines = base.mark_line(strokeWidth=1.8, interpolate="linear")
    catcher = base.mark_point(size=60, opacity=0).add_params(hover)
    points = base.mark_point(filled=True, size=45).encode(
        opacity=alt.condition(hover, alt.value(1), alt.value(0)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")],
    )
    rule = alt.Chart(data).mark_rule(color="#888", strokeDash=[3, 3]).encode(x="step:Q").transform_filter(hover)
    layers = [lines, catcher, points, rule]
    if changes is not None:
        layers += _change_layers(changes)
    if lone:
        layers.insert(1, base.mark_point(filled=True, size=40, opacity=1).transform_joinaggregate(
            n="count()", groupby=["run", "series"]).transform_filter("datum.n < 2"))
    chart = alt.layer(*layers).properties(height=height)
    if title:
        chart = chart.properties(title=title)
    return chart


def series_grid(df: pd.DataFrame, series: Sequence[str] | None = None, columns: int = 2, log_scale: bool = False,
                height: int = 90, width: int = 140) -> alt.FacetChart:
    """Small multiples: one panel per series, each with its own y axis (metrics on different scales)."""
    if series is not None:
        df = df[df["series"].isin(list(series))]
    return _series_grid(df, df["run"].nunique() > 1, columns, log_scale, height, width)


def series_grid_figure(df: pd.DataFrame, columns: int = 2, log_scale: bool = False, height: int = 90,
                       width: int = 140, changes: pd.DataFrame | None = None) -> Figure:
    """:func:`series_grid` as a live :class:`Figure`; ``changes`` marks where settings changed mid-run."""
    many_runs = df["run"].nunique() > 1
    marked = changes is not None and bool(len(changes))
    if marked:
        df = with_changes(df, changes)
    key = ("series_grid", many_runs, columns, log_scale, height, width, marked)
    return Figure(key, lambda: _series_grid(alt.Data(name="grid"), many_runs, columns, log_scale, height, width, marked),
                  {"grid": df})


def _series_grid(data: Any, many_runs: bool, columns: int, log_scale: bool, height: int, width: int,
                 marked: bool = False) -> alt.FacetChart:
    enc = _encodings(many_runs, False)
    enc.pop("strokeDash", None)
    if not many_runs:
        enc["color"] = alt.value("#4C78A8")
    scale = alt.Scale(type="symlog") if log_scale else alt.Scale(zero=False)
    base = alt.Chart().encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="~s", tickCount=4)),
        y=alt.Y("value:Q", title=None, scale=scale, axis=alt.Axis(format=".3~g", tickCount=3)),
        **enc,
    )
    lines = base.mark_line(strokeWidth=1.6, point=alt.OverlayMarkDef(size=14))
    tips = base.mark_point(size=80, opacity=0).encode(
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")],
    )
    layers = [lines, tips]
    if marked:  # the grid's own rows carry the changes (a facet's layers share its data)
        layers = [layer.transform_filter("!isValid(datum.change)") for layer in layers] + _change_layers(None, faceted=True)
    return (
        alt.layer(*layers, data=data)
        .properties(height=height, width=width)
        .facet(facet=alt.Facet("series:N", title=None, header=alt.Header(labelFontSize=12, labelFontWeight="bold")), columns=columns)
        .resolve_scale(y="independent")
    )
