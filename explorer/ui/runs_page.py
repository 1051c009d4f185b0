"""Runs: the history of every run, from the app and the CLI, from this session and earlier ones.

The run folders are the source of truth (explorer.runs): this page lists them, opens one (curves,
snapshots over time, spec), resumes or forks it from its checkpoint through the server-wide
RunManager, exports or imports it as one archive (explorer.archive), and deletes it (never a live one).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import date, datetime
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
import tomli_w

from explorer import archive, compare
from explorer.errors import ExplorerError
from explorer.records import KINDS, record_kind
from explorer.runs import ACTIVE, RunStore, iter_runs, runs_root
from explorer.spec import parse_value
from explorer.ui import charts, explain, state, urlspec, views

OPEN_KEY = "runs.open"
COMPARE_KEY = "genex.compare"
HERE = Path(__file__).resolve().parent

reg = state.registry()
manager = state.get_manager()
owner = state.owner()
root = runs_root()

st.title("Runs")
st.caption(f"Every run in `{root}`: from this app, the CLI (`genex run`, `genex compare`) and earlier sessions. "
           "A run whose process ended without finishing it shows as *interrupted*: resume it from its checkpoint.")


def _flash() -> None:
    kind, msg = st.session_state.pop("runs.flash", (None, None))
    if msg:
        getattr(st, kind)(msg)


def _go(page: str, **query: str) -> None:
    """Switch to another page of the app (a no-op when this page runs on its own, as in tests)."""
    try:
        st.switch_page(HERE / page, query_params=query or None)
    except Exception:  # not inside st.navigation
        st.session_state["runs.flash"] = ("info", f"Open the {page.split('_')[0].title()} page to see it.")


# -- import ----------------------------------------------------------------------------------------
with st.expander("Import a run archive (.zip or .tar.gz)"):
    up = st.file_uploader("archive", type=["zip", "gz", "tgz"], key="runs.upload", label_visibility="collapsed")
    if up is not None and st.button("Import", key="runs.import"):
        try:
            store = archive.import_run(up.getvalue(), name=up.name)
        except ExplorerError as exc:
            st.error(f"Not imported: {exc}")
        else:
            st.session_state[OPEN_KEY] = str(store.path.relative_to(root))
            st.session_state["runs.flash"] = ("success", f"Imported {up.name} as run {store.id}.")
_flash()

# -- the table ---------------------------------------------------------------------------------------
stores = {str(s.path.relative_to(root)): s for s in iter_runs(root, comparisons=True)}
rows = []
for key, s in stores.items():
    summ = s.summary()
    rows.append({"run": key, "name": summ.name, "status": summ.status, "step": summ.step, "of": summ.total_steps,
                 "data": summ.components.get("data", ""), "generator": summ.components.get("generator", ""),
                 "objective": summ.components.get("objective", ""), "created": datetime.fromtimestamp(summ.created),
                 "parent": f"{summ.parent['run']} @ {summ.parent['step']}" if summ.parent else ""})
df = pd.DataFrame(rows, columns=["run", "name", "status", "step", "of", "data", "generator", "objective", "created", "parent"])
if df.empty:
    st.info("No runs yet. Start one on the Train page, or from the command line: `genex run spec.toml`.")
    st.stop()
df = df.sort_values("created", ascending=False, ignore_index=True)

f = st.columns([1.3, 1, 1, 1, 1.4])
status_f = f[0].multiselect("status", sorted(df["status"].unique()), key="runs.f.status")
data_f = f[1].multiselect("data", sorted(df["data"].unique()), key="runs.f.data")
gen_f = f[2].multiselect("generator", sorted(df["generator"].unique()), key="runs.f.gen")
obj_f = f[3].multiselect("objective", sorted(df["objective"].unique()), key="runs.f.obj")
first, last = df["created"].min().date(), df["created"].max().date()
dates = f[4].date_input("created between", value=(first, last), key="runs.f.dates")
shown = df
for col, chosen in (("status", status_f), ("data", data_f), ("generator", gen_f), ("objective", obj_f)):
    if chosen:
        shown = shown[shown[col].isin(chosen)]
if isinstance(dates, (tuple, list)) and len(dates) == 2 and all(isinstance(d, date) for d in dates):
    shown = shown[(shown["created"].dt.date >= dates[0]) & (shown["created"].dt.date <= dates[1])]
shown = shown.reset_index(drop=True)

st.caption(f"{len(shown)} of {len(df)} runs. Select rows to open one or compare several; click a column header to sort.")
event = st.dataframe(shown, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="runs.table",
                     column_config={"created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
                                    "step": st.column_config.NumberColumn("step", format="%d")})
selected = [shown.loc[i, "run"] for i in (event.selection.rows if event is not None else []) if i < len(shown)]
if len(selected) == 1:
    st.session_state[OPEN_KEY] = selected[0]
if len(selected) >= 2 and st.button(f"Compare the {len(selected)} selected runs", type="primary", key="runs.compare"):
    try:
        specs = {k: stores[k].read_spec() for k in selected}
    except ExplorerError as exc:
        st.error(f"Cannot compare these runs: {exc}")
    else:
        st.session_state[COMPARE_KEY] = {"ids": [stores[k].id for k in selected], "labels": compare.labels_for_specs(
            {stores[k].id: specs[k] for k in selected}), "paths": {stores[k].id: str(stores[k].path) for k in selected}}
        _go("compare_page.py")

keys = list(shown["run"]) or list(df["run"])
if "runs.pending_open" in st.session_state:  # set by an action below, applied before the widget exists
    st.session_state[OPEN_KEY] = st.session_state.pop("runs.pending_open")
if st.session_state.get(OPEN_KEY) not in stores:
    st.session_state[OPEN_KEY] = keys[0]
opened = st.selectbox("Open a run", list(df["run"]), key=OPEN_KEY,
                      format_func=lambda k: f"{stores[k].summary().name} · {k}")
store: RunStore = stores[opened]
summary = store.summary()
try:
    spec_dict = store.read_spec()
except ExplorerError as exc:  # a damaged run: say what is wrong, offer to delete it; the other runs stay usable
    st.divider()
    st.subheader(summary.name)
    st.error(f"This run cannot be shown: {exc}")
    sure = st.checkbox("really delete this run's folder", key=f"runs.sure.{opened}")
    if st.button("Delete", disabled=not sure, key="runs.delete"):
        try:
            archive.delete_run(store)
        except ExplorerError as err:
            st.error(str(err))
        else:
            st.session_state["runs.pending_open"] = None
            st.session_state["runs.flash"] = ("success", f"Deleted {opened}.")
            st.rerun()
    st.stop()
live = state.live_run(store.id)
live = live if live is not None and live.store.path.resolve() == store.path.resolve() else None


# -- one run -------------------------------------------------------------------------------------------
def _png_ok(path: Path) -> bool:
    """A picture Streamlit can show: a PNG whose header and chunks check out (without decoding it)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
        return im.format == "PNG"
    except Exception:  # PIL raises many kinds for a broken file
        return False


def clean_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in step order with the steps a resume re-trained counted once (the later ones win)."""
    out: list[dict[str, Any]] = []
    for kind in KINDS:  # loss records, then metric records, then changes
        part: list[dict[str, Any]] = []
        for rec in records:
            if record_kind(rec) != kind:
                continue
            while part and part[-1]["step"] >= rec["step"]:
                part.pop()
            part.append(rec)
        out += part
    return out


def _parent_store() -> RunStore | None:
    parent = summary.parent
    if not parent:
        return None
    for s in stores.values():
        if s.id == parent.get("run"):
            return s
    return None


st.divider()
st.subheader(summary.name)
pct = min(summary.step / max(summary.total_steps, 1), 1.0)
st.progress(pct, text=f"{summary.status} · step {summary.step:,} / {summary.total_steps:,} · {opened}")
if summary.status == "damaged":
    st.warning(f"Some of this run's files are damaged; what can be read is shown. {summary.error}")
elif summary.status == "failed":
    st.error(summary.error or "failed")
elif summary.status == "interrupted":
    st.warning(summary.error or "interrupted")
parent_store = _parent_store()
if summary.parent:
    where = f"run **{summary.parent['run']}**" + ("" if parent_store else " (not in this runs folder)")
    st.caption(f"Forked from {where} at step {summary.parent['step']:,}.")

act = st.columns(4)
# Resume / stop
with act[0].container(border=True):
    st.markdown("**Resume**")
    if summary.status in ACTIVE:
        st.caption("Training now.")
        if live is not None and st.button("Stop this run", key="runs.stop"):
            manager.stop(live.id)
            deadline = time.monotonic() + 10  # it stops at its next step boundary: wait, so the page shows it stopped
            while live.active and time.monotonic() < deadline:
                time.sleep(0.05)
            st.rerun()
    elif not store.has_checkpoint():
        st.caption("No checkpoint saved: it cannot be resumed.")
    else:
        extra = st.number_input("more steps", 0, 10_000_000, 0 if summary.status != "finished" else 1000, step=500, key="runs.extra",
                                help="0 = continue up to the steps it was set for.")
        if st.button("Resume from checkpoint", key="runs.resume"):
            try:
                run = manager.resume_run(str(store.path), owner=owner, extra_steps=int(extra) or None)
            except ExplorerError as exc:
                st.error(str(exc))
            else:
                state.remember(run.id)
                st.session_state["runs.flash"] = ("success", f"Resumed {run.id}: it trains in the background (watch it on the Train page).")
                st.rerun()
# Fork
with act[1].container(border=True):
    st.markdown("**Fork**")
    if not store.has_checkpoint():
        st.caption("No checkpoint to fork from.")
    else:
        changes_text = st.text_area("changes, one per line", "optim.generator.lr = 1e-4", key="runs.fork.changes", height=80,
                                    help="field = value, e.g. objective = \"minimax\", k_d = 3, data.std = 0.05")
        fork_steps = st.number_input("train up to step", 1, 10_000_000, int(spec_dict.get("steps", 1000)) + 1000, step=500, key="runs.fork.steps")
        if st.button("Fork", key="runs.fork"):
            try:
                changes = {"steps": int(fork_steps)}
                for line in changes_text.splitlines():
                    if line.strip() and not line.strip().startswith("#"):
                        fld, sep, val = line.partition("=")
                        if not sep:
                            raise ExplorerError(f"{line.strip()!r}: write field = value")
                        changes[fld.strip()] = parse_value(val.strip())
                run = manager.fork(str(store.path), changes, owner=owner)
            except ExplorerError as exc:
                st.error(str(exc))
            else:
                state.remember(run.id)
                st.session_state["runs.pending_open"] = str(run.store.path.relative_to(root)) if run.store.path.is_relative_to(root) else opened
                st.session_state["runs.flash"] = ("success", f"Forked as {run.id} from step {run.store.summary().parent['step']}.")
                st.rerun()
# Export
with act[2].container(border=True):
    st.markdown("**Export**")
    fmt = st.radio("format", ["zip", "tar.gz"], horizontal=True, key="runs.fmt", label_visibility="collapsed")
    st.download_button("Download archive", data=lambda s=store, f=fmt: archive.export_bytes(s, f), file_name=f"{store.id}.{fmt}",
                       mime="application/zip" if fmt == "zip" else "application/gzip", key="runs.export", on_click="ignore",
                       help="Spec, metrics, snapshots and checkpoint in one file; import it on the Runs page of any Generative Explorer.")
    snap_count = len(store.snapshot_steps())
    if snap_count:
        # built only when asked (a frame per snapshot takes a moment); kept for this run until it has more snapshots
        if st.button("Export animation (GIF)", key="runs.anim",
                     help=f"One 1280×720 frame per saved snapshot ({snap_count}), with the step and the losses: "
                          "for slides. `genex export-animation` does the same from the command line (MP4 too)."):
            from explorer import animation

            try:
                with st.spinner(f"Drawing {snap_count} frames…"):
                    gif = animation.animation_bytes(store, "gif")
            except Exception as exc:  # a damaged snapshot or a missing encoder: say so, keep the page
                st.error(f"No animation: {exc if isinstance(exc, ExplorerError) else f'{type(exc).__name__}: {exc}'}")
            else:
                st.session_state["runs.anim.gif"] = (str(store.path), snap_count, gif)
        made = st.session_state.get("runs.anim.gif")
        if made and made[0] == str(store.path) and made[1] == snap_count:
            st.download_button(f"Download GIF ({len(made[2]) / 1024:,.0f} KiB)", made[2], file_name=f"{store.id}.gif",
                               mime="image/gif", key="runs.anim_dl", on_click="ignore")
# Delete
with act[3].container(border=True):
    st.markdown("**Delete**")
    sure = st.checkbox("really delete this run's folder", key=f"runs.sure.{opened}")
    if st.button("Delete", disabled=not sure or summary.status in ACTIVE, key="runs.delete",
                 help="A queued, running or paused run cannot be deleted: stop it first."):
        try:
            archive.delete_run(store)
        except ExplorerError as exc:
            st.error(str(exc))
        else:
            st.session_state["runs.pending_open"] = None
            st.session_state["runs.flash"] = ("success", f"Deleted {opened}.")
            st.rerun()

tab_curves, tab_snaps, tab_spec = st.tabs(["Curves", "Snapshots", "Spec"])
with tab_curves:
    records = clean_history(store.read_metrics())
    branch = None
    frames = []
    if parent_store is not None:
        branch = int(summary.parent["step"])
        before = [r for r in clean_history(parent_store.read_metrics()) if r["step"] <= branch]
        frames.append(charts.history_frame(before, run=f"parent, to step {branch}"))
        frames.append(charts.history_frame(records, run="this fork"))
    else:
        frames.append(charts.history_frame(records, run=summary.name))
    cdf = charts.combine(frames)
    if cdf.empty:
        st.caption("Nothing logged yet.")
    else:
        names = charts.loss_series(cdf)
        default = [n for n in ("d_loss", "g_loss", "mmd2") if n in names] or names[:2]
        chosen = st.multiselect("curves", names, default=default, key="runs.series")
        grid = st.columns(2)
        for i, name in enumerate(chosen):
            chart = charts.curves_chart(cdf, [name], title=name, height=200,
                                        changes=charts.changes_frame(records, run=summary.name))
            if branch is not None:
                rule = alt.Chart(pd.DataFrame({"step": [branch], "label": [f"fork at {branch}"]}))
                chart = alt.layer(chart, rule.mark_rule(color="#E4572E", strokeDash=[6, 3], strokeWidth=2).encode(x="step:Q"),
                                  rule.mark_text(align="left", dx=4, y=8, color="#E4572E").encode(x="step:Q", text="label:N"))
            grid[i % 2].altair_chart(chart, width="stretch", height=300, key=f"runs.curve.{name}")
with tab_snaps:
    steps = store.snapshot_steps()
    if not steps:
        st.caption("No snapshot saved yet (one is saved every `snapshot_every` steps).")
    else:
        step = st.select_slider("step", steps, value=steps[-1], key="runs.snap_step") if len(steps) > 1 else steps[0]
        snap = store.load_snapshot(step)
        if snap is not None and (snap.kind == "image" or len(snap.real)):
            ema = spec_dict.get("ema")
            raw = bool(views.ema_settings(ema)) and st.toggle(views.RAW_TOGGLE, key="runs.snap_raw", help=views.RAW_TOGGLE_HELP)
            views.draw_snapshot(snap, opts=views.ViewOptions(height=380, raw=raw), critic=explain.critic_of(spec_dict),
                                key="runs.snap", ema=ema)
        elif store.snapshot_png(step) is not None and _png_ok(store.snapshot_png(step)):
            st.image(str(store.snapshot_png(step)), caption=f"step {step}")
        else:
            st.caption(f"The snapshot at step {step} cannot be read.")
        if store.snapshot_problem:
            st.caption(f"Damaged: {store.snapshot_problem}")
with tab_spec:
    try:
        toml_text = tomli_w.dumps(spec_dict)
    except (TypeError, ValueError):  # a value TOML cannot hold (null): show the JSON as saved
        toml_text = "# spec.json holds values TOML cannot write; as saved:\n# " + json.dumps(spec_dict)
    st.code(toml_text, language="toml")
    c = st.columns(2)
    c[0].download_button("Download spec (TOML)", toml_text, file_name=f"{store.id}.toml", mime="text/plain", key="runs.spec_dl",
                         on_click="ignore", help="`genex run` on this file trains the same pipeline again.")
    c[1].caption("Command line: `genex run " + f"{store.id}.toml`. Link that sets up a comparison from it: "
                 f"`…/compare?{urllib.parse.urlencode(urlspec.spec_to_query(spec_dict, reg))}`")
