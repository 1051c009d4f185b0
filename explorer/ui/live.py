"""The live part of the Train page: progress, the view fitted to the data, the curves, the formulas.

Drawn from a :class:`~explorer.training.RunView` (a copy taken under the run's lock), so the
trainer never waits for the page. The page polls it with ``st.fragment(run_every=...)`` while the
run is active; the trainer keeps its own pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import streamlit as st

from explorer.records import change_records, split_records
from explorer.runs import ACTIVE, RunStore
from explorer.snapshots import Snapshot
from explorer.training import RunView
from explorer.ui import charts, explain, views
from explorer.ui.explain import Critic

STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/play_arrow:", "paused": ":material/pause:",
                "finished": ":material/check_circle:", "stopped": ":material/stop_circle:", "failed": ":material/error:",
                "interrupted": ":material/warning:"}


def split_history(history: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Loss records (logged every log_every steps) and metric records (every metric_every steps)."""
    losses, metrics = split_records(history)
    return list(losses), list(metrics)


def rate_text(steps_per_s: float) -> str:
    """Steps per second as people read them: 85, 4.2, 0.3 (never "0" for a slow run that moves)."""
    if steps_per_s >= 10:
        return f"{steps_per_s:,.0f}"
    if steps_per_s >= 0.1:
        return f"{steps_per_s:.1f}"
    return f"{steps_per_s:.2f}" if steps_per_s > 0 else "0"


def draw_progress(view: RunView, name: str, starting: bool = False) -> None:
    total = max(view.total_steps, 1)
    icon = STATUS_ICONS.get(view.status, "")
    status = "starting (loading the pipeline)" if starting and view.status == "queued" else view.status
    text = f"{icon} **{name}** · {status} · step {view.step:,} / {view.total_steps:,}"
    if view.status in ("running", "paused") or view.steps_per_s:
        text += f" · {rate_text(view.steps_per_s)} steps/s"
    if view.device:
        text += f" · {view.device}"
    st.progress(min(view.step / total, 1.0), text=text)
    if view.status == "failed":
        st.error(f"The run failed: {view.error or 'no message'}", icon=":material/error:")
    elif view.error:
        st.warning(view.error)


def view_options(kind: str, key: str, ema: Mapping[str, Any] | bool | None = None) -> views.ViewOptions:
    """Toggles for what the view draws (inside the fragment, so toggling redraws only the live part).
    A run that averages G (spec ``ema``) also gets a toggle that draws the raw G beside the average."""
    opts = views.ViewOptions()
    # toggles sized to their labels in a row that wraps: a narrow column never truncates them
    c = st.container(horizontal=True, gap="medium") if kind in ("1d", "2d") or views.ema_settings(ema) else None
    if views.ema_settings(ema):
        opts.raw = c.toggle(views.RAW_TOGGLE, value=False, key=f"{key}.raw", width="content", help=views.RAW_TOGGLE_HELP)
    if kind == "2d":
        opts.heatmap = c.toggle("heatmap", value=True, key=f"{key}.heatmap", help="The critic behind the points.", width="content")
        opts.manifold = c.toggle("manifold", value=True, key=f"{key}.manifold", help="G applied to a grid over the latent square.",
                                 width="content")
        opts.arrows = c.toggle("gradient arrows", value=False, key=f"{key}.arrows", width="content",
                               help="Where the generator loss pushes each generated point.")
    elif kind == "1d":
        opts.critic = c.toggle("D(x)", value=True, key=f"{key}.critic", width="content")
        opts.d_star = c.toggle("D*(x)", value=True, key=f"{key}.dstar", help="The optimal discriminator for the current generator.",
                               width="content")
        opts.mapping = c.toggle("z → x mapping", value=True, key=f"{key}.mapping", width="content")
        opts.histogram = c.toggle("p_g histogram", value=False, key=f"{key}.hist", width="content",
                                  help="The generated samples as a histogram under p_g's smooth estimate (a KDE, which "
                                       "D* uses): spikes and hard edges the KDE smooths away show here.")
    return opts


def draw_view(snap: Snapshot | None, critic: Critic, key: str, active: bool = True,
              ema: Mapping[str, Any] | bool | None = None) -> None:
    if snap is None:
        st.info("Waiting for the first snapshot…" if active else
                "This run saved no snapshot before it ended (they are saved every `snapshot_every` steps).")
        return
    opts = view_options(snap.kind, key, ema)
    views.draw_snapshot(snap, opts=opts, critic=critic, key=f"{key}.view", ema=ema)


BETTER = {"higher": "↑ better", "lower": "↓ better"}


@dataclass(frozen=True)
class MetricDeclarations:
    """What a run's metrics declare about their keys: which way is better (``Metric.directions``) and
    which span orders of magnitude (``Metric.log_keys``, plotted as log10)."""

    directions: Mapping[str, str | None] = field(default_factory=dict)
    log_keys: frozenset[str] = frozenset()


def as_declared(df: Any, decl: MetricDeclarations) -> Any:
    """``df`` (a :func:`charts.history_frame` of metric records) as its metrics declare it: each series
    labelled with the way it is better (``energy_distance (↓ better)``), and log-scale keys as log10
    (``log10 ks_p_value (↑ better)``; values at or below 0 are left out). Undeclared series are as given."""
    if not len(df) or not (decl.directions or decl.log_keys):
        return df

    def label(series: str) -> str:
        name = f"log10 {series}" if series in decl.log_keys else series
        return f"{name} ({BETTER[decl.directions[series]]})" if decl.directions.get(series) in BETTER else name

    df = df.copy()
    if decl.log_keys:
        logged = df["series"].isin(list(decl.log_keys)).to_numpy()
        values = df["value"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(values)
        df["value"] = np.where(logged, np.where(values > 0, logs, np.nan), values)
    if hasattr(df["series"], "cat"):
        df["series"] = df["series"].cat.rename_categories(label)
    else:
        df["series"] = df["series"].map(label)
    return df


def draw_curves(history: list[dict[str, Any]], run_name: str, key: str,
                declared: MetricDeclarations | None = None) -> None:
    losses, metrics = split_history(history)
    if not losses and not metrics:
        st.caption("The loss curves appear after the first logged steps.")
        return
    changes = charts.changes_frame(change_records(history), run=run_name)
    loss_df = charts.history_frame(losses, run=run_name)
    names = charts.loss_series(loss_df)
    c = st.columns([2.3, 1.4], vertical_alignment="bottom")
    default = [n for n in ("d_loss", "g_loss", "mmd2") if n in names] or names[:2]
    # keyed by the series on offer: another run's series (another objective) gets its own selection
    chosen = c[0].multiselect("Losses over steps", names, default=default, key=f"{key}.series.{'.'.join(names)}",
                              help="Losses and what the objective logs beside them (d_real, d_fake: mean D on real and "
                                   "generated data; value: the estimate of V(D, G)).")
    log_scale = c[1].toggle("log scale", key=f"{key}.log", width="content",
                            help="For the losses and the metrics; a symmetric log where a series goes negative.")
    if chosen:
        fig = charts.curves_figure(loss_df, chosen, log_scale=log_scale, changes=changes)
        st.vega_lite_chart(fig.spec(), width="stretch", key=f"{key}.losses")
    if len(changes):
        said = "; ".join(f"step {c.step:,}: {c.change}" for c in changes.tail(4).itertuples())
        more = f" (and {len(changes) - 4} earlier)" if len(changes) > 4 else ""
        st.caption(f"Dashed purple lines: settings changed mid-run — {said}{more}.")
    if metrics:
        met_df = as_declared(charts.history_frame(metrics, run=run_name), declared or MetricDeclarations())
        st.markdown("**Metrics** (on a fixed sample, every `metric_every` steps; ↑/↓: which way each metric says is better)")
        fig = charts.series_grid_figure(met_df, log_scale=log_scale, changes=changes)
        st.vega_lite_chart(fig.spec(), width="content", key=f"{key}.metrics")


def draw_explanations(kind: str, objective: str, formula: str, has_critic: bool, title: str = "What am I looking at?") -> None:
    with st.expander(title, expanded=True):
        for item in explain.for_view(kind, objective, formula, has_critic):
            st.markdown(item.text)
            if item.formula:
                st.latex(item.formula)


def draw_live(view: RunView, name: str, critic: Critic, key: str, starting: bool = False,
              declared: MetricDeclarations | None = None, ema: Mapping[str, Any] | bool | None = None) -> None:
    """Everything that changes while a run trains (the explanations stay outside, drawn once). ``ema``: the
    run's spec table, when it averages G (the picture is the average's, with the raw G beside it on request)."""
    draw_progress(view, name, starting)
    # A row that wraps: the curves go under the picture when the page is too narrow for both side by side
    # (columns would squeeze a fixed-size 2-D view over its neighbour).
    kind = view.snapshot.kind if view.snapshot is not None else ""
    # the curves take the rest of the row, but never less than a readable 340 px: below that they wrap
    css = (f".st-key-{key}_row > div:has(> .st-key-{key}_curves) {{ min-width: min(340px, 100%); "
           "flex: 1 1 340px; }")
    if views.ema_settings(ema) and st.session_state.get(f"{key}.raw"):
        # the averaged and the raw G side by side: room for both, the curves below (a 2-D view sizes itself,
        # and a row of content-sized views would otherwise shrink and stack them while the charts first draw)
        pair = 2 * (views.PAIR_HEIGHT + 70 if kind == "2d" else views.PAIR_MIN_WIDTH) + 24  # 2-D: + its legend
        css += f" .st-key-{key}_row > div:has(> .st-key-{key}_view) {{ min-width: min({pair}px, 100%); }}"
    st.html(f"<style>{css}</style>")
    with st.container(horizontal=True, gap="large", key=f"{key}_row"):
        with st.container(key=f"{key}_view", width="content" if kind == "2d" else "stretch"):
            draw_view(view.snapshot, critic, key, active=view.status in ACTIVE, ema=ema)
        with st.container(key=f"{key}_curves"):
            draw_curves(view.history, name, key, declared)


def view_from_disk(store: RunStore) -> tuple[RunView, str]:
    """A RunView of a run that is not live here, from its folder: status, metrics, last snapshot."""
    summary = store.summary()
    snap = store.load_snapshot()
    view = RunView(summary.status, summary.step, summary.total_steps, 0.0, "", store.read_metrics(), snap, summary.error, 0.0)
    return view, summary.name
