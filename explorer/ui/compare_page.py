"""Compare: one pipeline, one or two things varied, the runs trained together on the same data and noise.

Thin by design: explorer.compare builds the variants and reads the results; the server-wide
RunManager trains (queueing beyond its limit, fairly across tabs); views and charts draw. The URL
carries the base spec and the varied fields (explorer.ui.urlspec), so a link reproduces the set-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from explorer import compare, ray_backend
from explorer.errors import ExplorerError
from explorer.runs import ACTIVE, RunStore, common_snapshot_steps, iter_runs, open_run
from explorer.spec import SLOTS, resolve
from explorer.ui import charts, explain, state, urlspec, views
from explorer.ui.presets import load_presets

COMPARE_KEY = "genex.compare"  # {"ids": [...], "labels": {id: label}, "base": raw}
POLL_S = 1.0
VARY_FIELDS = ["objective", "generator", "discriminator", "latent", "data", "optim.generator.lr", "optim.discriminator.lr",
               "k_d", "batch_size", "other field…"]
SLOT_KIND = {s[0]: s[1] for s in SLOTS}

reg = state.registry()
manager = state.get_manager()
owner = state.owner()

st.title("Compare")
st.caption("Train variants of one pipeline side by side: the same seed gives every run the same data, the same noise "
           "and the same initial weights, so what differs is only what you vary.")


# -- where the base pipeline comes from --------------------------------------------------------------
def base_from_link() -> dict[str, Any] | None:
    try:
        raw = urlspec.spec_from_query(st.query_params)
        if raw is not None:
            resolve(raw, reg)
        return raw
    except ExplorerError as exc:
        st.error(f"The link's pipeline cannot be used: {exc}", icon="🔗")
        return None


presets = [p for p in load_presets(reg) if not p.error]
sources: dict[str, dict[str, Any] | None] = {}
link_raw = base_from_link()
if link_raw is not None:
    sources["the link"] = link_raw
train_spec = st.session_state.get("genex.train_spec")  # the Train page's composed spec, when it shares it
if isinstance(train_spec, dict):
    sources["the Train page"] = train_spec
current = st.session_state.get(state.CURRENT_KEY)
if current:
    try:
        sources[f"the Train page's run ({current})"] = open_run(current).read_spec()
    except ExplorerError:
        pass
sources["a preset"] = None

with st.container(border=True):
    st.subheader("Set up a comparison")
    c = st.columns([1.2, 2])
    source = c[0].radio("Start from", list(sources), key="cmp.source", horizontal=False)
    base_id = source  # what the settings below start from: choosing another base resets them to its values
    if sources[source] is None:
        by_id = {p.id: p for p in presets}
        pid = c[1].selectbox("Preset", list(by_id), key="cmp.preset", format_func=lambda i: by_id[i].title)
        base_id = f"preset:{pid}"
        base_raw = dict(by_id[pid].raw) if pid else {}
        if pid and by_id[pid].notes:
            c[1].caption(by_id[pid].notes)
    else:
        base_raw = dict(sources[source])
        c[1].markdown(f"**{base_raw.get('name') or 'pipeline'}** from {source}")
    base_raw.pop("provenance", None)

    # What to vary: up to two fields, each with its values.
    link_vary = []
    if source == "the link":
        for v in st.query_params.get_all("vary")[:2]:
            try:
                link_vary.append(compare.parse_vary(v))
            except ExplorerError as exc:
                st.error(f"The link's `vary={v[:80]}` cannot be used: {exc}", icon="🔗")
    varies: list[tuple[str, list[Any]]] = []
    for i in range(2):
        row = st.columns([1.2, 1.2, 3])
        preset_field = link_vary[i][0] if i < len(link_vary) else None
        choices = ["(nothing)"] + VARY_FIELDS
        default_idx = choices.index(preset_field) if preset_field in choices else (1 if i == 0 else 0)
        fld = row[0].selectbox(f"Vary #{i + 1}", choices, index=default_idx, key=f"cmp.field{i}")
        if fld == "(nothing)":
            continue
        if fld == "other field…":
            fld = row[1].text_input("dotted field", value=preset_field or "data.std", key=f"cmp.path{i}",
                                    help="Any field of the spec, e.g. data.std, latent.dim, generator.width, optim.generator.betas")
        if fld in SLOT_KIND:
            names = reg.names(SLOT_KIND[fld])
            current_val = base_raw.get(fld, "")
            current_name = current_val.get("name") if isinstance(current_val, dict) else current_val
            default = [v for v in (link_vary[i][1] if i < len(link_vary) else [current_name]) if v in names]
            if fld == "objective" and len(default) < 2:
                default = [n for n in ("minimax", "nonsaturating") if n in names] or names[:2]
            values = row[2].multiselect(f"{fld} values", names, default=default, key=f"cmp.values{i}")
        else:
            default_text = ", ".join(map(str, link_vary[i][1])) if i < len(link_vary) else str(compare.get_path(base_raw, fld) or "")
            text = row[2].text_input(f"{fld} values (comma-separated)", value=default_text, key=f"cmp.text{i}",
                                     help="TOML values: 1e-3, 0.5, true, \"name\", [0.5, 0.999]")
            try:
                values = compare.parse_vary(f"{fld}={text}")[1] if text.strip() else []
            except ExplorerError as exc:
                st.error(str(exc))
                values = []
        if values:
            varies.append((fld, list(values)))
    # How the runs train. [0]: where, a choice shown only when Ray is installed and $GENEX_RAY_ADDRESS names a
    # cluster; [1]: kept for how (a "vectorise seeds" switch goes there).
    how = st.columns(2)
    ray_address = os.environ.get(ray_backend.ADDRESS_ENV, "").strip()
    on_ray = False
    if ray_address and ray_backend.available():
        here, there = "this machine", f"Ray cluster at {ray_address}"
        on_ray = how[0].radio("Run on", [here, there], key="cmp.run_on", horizontal=True,
                              help=f"{ray_backend.ADDRESS_ENV} points at {ray_address}. On the cluster each run is a Ray "
                                   "task; it shows here live and lands in the runs folder like a run trained here. "
                                   "Stop works; pause, step and settings changes need a run trained here.") == there
    c2 = st.columns(3)
    seeds = c2[0].number_input("seeds per variant", 1, 5, 1, key="cmp.seeds",
                               help="More than one gives each variant several runs (mean ± standard error in the table).")
    steps = c2[1].number_input("steps", 10, 1_000_000, int(base_raw.get("steps") or 2000), step=100, key=f"cmp.steps.{base_id}",
                               help="The base pipeline's own steps until you change them (a link reproduces what ran).")
    try:
        variants = compare.expand_variants(base_raw, varies, int(seeds), reg, steps=int(steps))
        error = None
    except (ExplorerError, ValueError) as exc:
        variants, error = [], str(exc)
        st.error(error)
    if variants:
        where = (f". They train as Ray tasks on the cluster at {ray_address} (as many at once as it has room for), "
                 "none of them in this server's slots." if on_ray else
                 f". At most {manager.max_concurrent} train at once on this server; the rest wait their turn.")
        st.caption(f"{len(variants)} runs: " + " · ".join(v.label for v in variants) + where)
    # how[1]: the seeds of each variant as one batched model (explorer.ensemble), on this machine, with seeds > 1
    vectorise = not on_ray and int(seeds) > 1 and how[1].toggle(
        "Vectorise seeds", key="cmp.vectorise",
        help="Train the seeds of each variant as one batched model (torch.func.vmap): one worker and one slot per "
             "variant instead of one per seed, each seed still its own run with its own curves, samples and checkpoint. "
             "Pipelines that cannot be batched (batch norm, spectral norm, an objective drawing random numbers) train "
             "their seeds one after another, with the reason shown. Stop works per seed; pause and step do not.")
    if vectorise and variants:
        st.caption(f"Each variant's {int(seeds)} seeds train together as one batched model, in one slot.")
    too_few = not variants or len(variants) < 2
    start = c2[2].button("Start comparison", type="primary", disabled=too_few, key="cmp.start",
                         help="Needs at least two runs: vary something, or use more seeds." if too_few else None)
    if start and variants:
        try:
            names = [f"{v.spec.short_name()}-{v.label}" for v in variants]
            if on_ray:  # one driver for the whole comparison, in a thread of the manager's: no local slot
                runs = manager.start_group([v.spec for v in variants], owner=owner, names=names,
                                           train=ray_backend.group_trainer(ray_address), backend="ray", slots=0)
            elif vectorise:  # one ensemble per variant: its seeds share a worker and a slot
                groups: dict[str, list[int]] = {}
                for i, v in enumerate(variants):
                    groups.setdefault(compare.variant_label(v.changes), []).append(i)
                by_index: dict[int, Any] = {}
                for members in groups.values():
                    started = manager.start_ensemble([variants[i].spec for i in members], owner=owner,
                                                     names=[names[i] for i in members])
                    by_index.update(zip(members, started))
                runs = [by_index[i] for i in range(len(variants))]
            else:
                runs = [manager.start(v.spec, owner=owner, name=name) for v, name in zip(variants, names)]
        except ExplorerError as exc:
            st.error(str(exc))
        else:
            st.session_state[COMPARE_KEY] = {"ids": [r.id for r in runs], "labels": {r.id: v.label for r, v in zip(runs, variants)}}
            st.query_params.from_dict({**urlspec.spec_to_query(base_raw, reg),
                                       "vary": [f"{f}={','.join(map(str, vals))}" for f, vals in varies]})

with st.expander("…or compare runs from the history"):
    stores = {s.id: s for s in iter_runs(comparisons=True)}
    summaries = {k: s.summary() for k, s in stores.items()}
    options = [k for k, s in sorted(summaries.items(), key=lambda kv: -kv[1].created) if s.status not in ("queued", "damaged")]
    # labelled by what never changes (name and id): Streamlit keeps a selection by its labels, so a running
    # run's moving step or status in its label would drop it from the selection on the next redraw
    picked = st.multiselect("runs", options, key="cmp.history", format_func=lambda k: f"{summaries[k].name} · {k}")
    if picked:
        st.caption(" · ".join(f"{summaries[k].name}: {summaries[k].status}, step {summaries[k].step:,}" for k in picked))
    if st.button("Compare these", disabled=len(picked) < 2, key="cmp.from_history"):
        specs = {k: stores[k].read_spec() for k in picked}
        st.session_state[COMPARE_KEY] = {"ids": picked, "labels": compare.labels_for_specs(specs),
                                         "paths": {k: str(stores[k].path) for k in picked}}


# -- the comparison -------------------------------------------------------------------------------------
def _store(run_id: str, paths: dict[str, str]) -> RunStore | None:
    live = state.live_run(run_id)
    if live is not None:
        return live.store
    try:
        return RunStore(Path(paths[run_id])) if run_id in paths else open_run(run_id)
    except ExplorerError:
        return None


def _run_rows(ids: list[str], labels: dict[str, str], paths: dict[str, str]) -> list[dict[str, Any]]:
    """What each run has now: live state when this server trains it, else its folder."""
    out = []
    for rid in ids:
        live = state.live_run(rid)
        store = _store(rid, paths)
        if live is not None:
            view = live.state.view()
            out.append(dict(id=rid, label=labels.get(rid, rid), store=store, status=view.status, step=view.step, total=view.total_steps,
                            history=view.history if view.history else (store.read_metrics() if store else []), snapshot=view.snapshot,
                            error=view.error, live=True, note=live.note, backend=live.backend))
        elif store is not None:
            s = store.summary()
            out.append(dict(id=rid, label=labels.get(rid, rid), store=store, status=s.status, step=s.step, total=s.total_steps,
                            history=store.read_metrics(), snapshot=None, error=s.error, live=False,
                            note=_vectorise_note(store), backend=None))
    return out


def _vectorise_note(store: RunStore) -> str | None:
    note = store.read_status().get("vectorise_note")
    return f"trained one after another, not as one batched model: {note}" if isinstance(note, str) else None


def draw_comparison(info: dict[str, Any]) -> None:
    ids, labels, paths = info["ids"], info.get("labels", {}), info.get("paths", {})
    rows = _run_rows(ids, labels, paths)
    if not rows:
        st.info("The runs of this comparison are gone (deleted from the history?).")
        return
    active = [r for r in rows if r["status"] in ACTIVE]
    head = st.columns([3, 1])
    head[0].subheader(f"Comparison of {len(rows)} runs")
    if active and head[1].button(f"Stop these {len(active)} runs", key="cmp.stop_all"):
        for r in active:
            if r["live"]:
                manager.stop(r["id"])
        st.rerun()
    prog = st.columns(min(len(rows), 4))
    for i, r in enumerate(rows):
        col = prog[i % len(prog)]
        text = f"**{r['label']}** · {r['status']} · {r['step']:,}/{r['total']:,}"
        if r.get("backend") == "vectorised" and not r["note"]:
            text += " · batched with its variant's other seeds"
        col.progress(min(r["step"] / max(r["total"], 1), 1.0), text=text)
        if r["status"] == "failed":
            col.error(r["error"] or "failed")
        if r["note"]:
            col.caption(r["note"][:300])

    # Small multiples, in step: the latest of each, or the saved snapshot every run has at one step.
    st.markdown("**Samples**")
    stores = [r["store"] for r in rows if r["store"] is not None]
    steps = common_snapshot_steps(stores)
    c = st.columns([1, 3])
    mode = c[0].segmented_control("show", ["latest", "same step"], default="same step" if steps and not active else "latest",
                                  key="cmp.mode") or "latest"
    step = None
    if mode == "same step":
        if steps:
            step = c[1].select_slider("step", steps, value=steps[-1], key="cmp.step") if len(steps) > 1 else steps[0]
        else:
            c[1].caption("No step has a saved snapshot in every run yet.")
    cols = st.columns(min(len(rows), 4))
    snaps = []
    for r in rows:
        snap = r["snapshot"] if mode == "latest" and r["snapshot"] is not None else None
        if snap is None and r["store"] is not None and (mode == "latest" or step is not None):
            snap = r["store"].load_snapshot(step if mode == "same step" else None)
        snaps.append(snap)
    # one frame for every panel (same axes), so the runs compare at a glance
    opts = views.ViewOptions(height=260, arrows=False, mapping=False, domain=views.held_domain(snaps, "cmp.views"))
    for i, (r, snap) in enumerate(zip(rows, snaps)):
        with cols[i % len(cols)]:
            st.caption(f"{r['label']}" + (f" · step {snap.step:,}" if snap is not None else ""))
            critic = explain.critic_of(r["store"].read_spec()) if r["store"] is not None else None
            views.draw_snapshot(snap, opts=opts, critic=critic, key=f"cmp.view.{i}")

    # Overlaid curves, coloured by run.
    frames = [charts.history_frame(r["history"], run=r["label"]) for r in rows]
    df = charts.combine(frames)
    changes = pd.concat([charts.changes_frame(r["history"], run=r["label"]) for r in rows], ignore_index=True)
    if len(df):
        names = charts.loss_series(df)
        default = [n for n in ("g_loss", "d_loss") if n in names] or names[:1]
        chosen = st.multiselect("curves", names, default=default, key="cmp.series")
        grid = st.columns(2)
        for i, name in enumerate(chosen):
            # height= on the element: Streamlit fits the whole chart (title, axes, legend) into it
            fig = charts.curves_figure(df, [name], title=name, height=200, changes=changes)  # spec cached: a redraw sends only data
            grid[i % 2].vega_lite_chart(fig.spec(), width="stretch", height=300, key=f"cmp.curve.{name}")

    # Final and best values, sortable.
    table = []
    for r in rows:
        directions = compare.metric_directions(r["store"].read_spec(), reg) if r["store"] is not None else {}
        final, best = compare.final_and_best(r["history"], directions)
        row = {"run": r["label"], "status": r["status"], "step": r["step"]}
        row.update({k: v for k, v in final.items()})
        row.update({f"best {k}": v for k, v in best.items()})
        table.append(row)
    st.markdown("**Final and best values** (click a column to sort; best = highest or lowest, as each metric declares)")
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", key="cmp.table")
    specs = {r["label"]: r["store"].read_spec() for r in rows if r["store"] is not None}
    diff = compare.spec_diff_rows(specs)
    st.markdown("**What differs** (only the fields that are not the same in every run)")
    if diff:
        st.dataframe(pd.DataFrame(diff), hide_index=True, width="stretch", key="cmp.diff")
    else:
        st.caption("The specs are identical.")


RUNS_QUERY = "runs"  # the comparison shown, as run ids in the URL: a reload (or the link) finds it again
MAX_LINKED_RUNS = 16


def comparison_from_url() -> dict[str, Any] | None:
    """The comparison named by ``?runs=id,id,...`` (each opened as ``?run=`` is: only runs in the runs
    folder and its comparisons), or None; runs that cannot be opened are named and left out."""
    text = st.query_params.get(RUNS_QUERY) or ""
    stores: dict[str, RunStore] = {}
    for run_id in [i.strip() for i in text.split(",") if i.strip()][:MAX_LINKED_RUNS]:
        try:
            store = open_run(run_id)
            stores[store.id] = store
        except ExplorerError as exc:
            st.warning(f"Run {run_id[:80]!r} of the linked comparison cannot be opened: {exc}")
    specs: dict[str, Any] = {}
    for run_id, store in stores.items():
        try:
            specs[run_id] = store.read_spec()
        except ExplorerError as exc:
            st.warning(f"Run {run_id[:80]!r} of the linked comparison cannot be shown: {exc}")
    if len(specs) < 2:
        return None
    return {"ids": list(specs), "labels": compare.labels_for_specs(specs), "paths": {k: str(stores[k].path) for k in specs}}


info = st.session_state.get(COMPARE_KEY)
if not info and st.query_params.get(RUNS_QUERY):
    info = comparison_from_url()
    if info:
        st.session_state[COMPARE_KEY] = info
if info and info.get("ids"):
    ids_text = ",".join(info["ids"])
    if st.query_params.get(RUNS_QUERY) != ids_text:
        st.query_params[RUNS_QUERY] = ids_text
    any_active = any((lr := state.live_run(i)) is not None and lr.active for i in info["ids"])

    @st.fragment(run_every=POLL_S if any_active else None)
    def live_comparison() -> None:
        draw_comparison(info)
        still = any((lr := state.live_run(i)) is not None and lr.active for i in info["ids"])
        if any_active and not still:
            st.rerun()  # everything ended: stop polling and show the finished state

    live_comparison()
else:
    st.info("Pick a pipeline and what to vary, then press **Start comparison**; or pick finished runs from the history.")
