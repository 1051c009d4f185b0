"""The Train page's run controls: Start, Pause/Resume, Step, Stop, Reset, and which run a tab shows.

Every action goes through the server-wide RunManager (:mod:`explorer.ui.state`); none trains in
the script thread. Actions are button callbacks, so they take effect before the page redraws;
a message meant for the user (a spec or device error) is kept for the next draw.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from explorer.device import pick_device
from explorer.errors import ExplorerError
from explorer.spec import Spec
from explorer.ui import state
from explorer.ui.charts import change_label

FLASH_KEY = "genex.flash"
RUN_PICK_KEY = "genex.run_pick"
STEP_N_KEY = "genex.step_n"
CHANGE_KEY = "genex.change"


def flash(kind: str, message: str) -> None:
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(FLASH_KEY, (None, None))
    if message:
        getattr(st, kind, st.info)(message)


def _start(spec: Spec | None, paused: bool = False) -> str | None:
    if spec is None:
        flash("error", "The pipeline in the sidebar is not valid yet: see the message there.")
        return None
    try:
        pick_device(spec.device)
        run = state.get_manager().start(spec, owner=state.owner(), paused=paused)
    except ExplorerError as exc:
        flash("error", str(exc))
        return None
    state.remember(run.id)
    st.session_state[RUN_PICK_KEY] = run.id
    return run.id


def on_start(spec: Spec | None) -> None:
    """A new run with the sidebar's settings; runs already going keep going."""
    _start(spec)


def on_pause_resume(run_id: str) -> None:
    run = state.live_run(run_id)
    if run is None:
        return
    try:
        if run.status == "paused":
            state.get_manager().resume(run_id)
        else:
            state.get_manager().pause(run_id)
    except ExplorerError as exc:  # e.g. a run a group trains (a Ray cluster, a seed ensemble) cannot pause
        flash("error", str(exc))


def on_step(spec: Spec | None, run_id: str | None) -> None:
    """Train ``n`` steps, then pause. With no live run, start one paused at step 0 first (a queued run
    takes its steps as soon as it starts)."""
    n = int(st.session_state.get(STEP_N_KEY, 1))
    run = state.live_run(run_id)
    if run is None or not run.active:
        run_id = _start(spec, paused=True)
        if run_id is None:
            return
    try:
        state.get_manager().step(run_id, n)
    except ExplorerError as exc:
        flash("error", str(exc))


def on_stop(run_id: str) -> None:
    if state.live_run(run_id) is not None:
        state.get_manager().stop(run_id)


def on_reset(spec: Spec | None, run_id: str | None) -> None:
    """Stop the current run and start over at step 0 with the sidebar's settings, paused."""
    if run_id and state.live_run(run_id) is not None and state.live_run(run_id).active:
        state.get_manager().stop(run_id)
    _start(spec, paused=True)


def current_settings(run: Any) -> dict[str, Any]:
    """The changeable settings in force in a live run: its spec's change log up to its step, then the
    changes this server has sent it since."""
    out = run.spec.settings_at(int(run.state.step))
    for _, settings in run.changes:
        out.update(settings)
    return out


def on_change(run_id: str) -> None:
    """Send the popover's settings that differ from those in force; they apply at the next step boundary."""
    run = state.live_run(run_id)
    if run is None or not run.active:
        flash("warning", "The run is no longer live: settings change only while it trains or is paused.")
        return
    now = current_settings(run)
    prefix = f"{CHANGE_KEY}.{run_id}"  # per run: another run's popover starts from its own settings
    asked = {key: st.session_state[f"{prefix}.{key}"] for key in now if f"{prefix}.{key}" in st.session_state}
    if "objective" in asked and asked["objective"] == now["objective"].get("name"):
        del asked["objective"]  # the same objective: keep its parameters as they are
    changed = {k: v for k, v in asked.items() if k == "objective" or v != now[k]}
    if not changed:
        flash("info", "Nothing to change: these are the settings in force.")
        return
    try:
        resolved = state.get_manager().change(run_id, changed)
    except ExplorerError as exc:
        flash("error", f"Not changed: {exc}")
        return
    flash("success", f"Changing {change_label(resolved)} at the next step (from step {run.state.step:,}). The change is "
                     "written to the run's change log, so resume, fork and `genex run` of its spec replay it; the curves "
                     "mark it with a dashed purple line.")


def draw_change(run: Any) -> None:
    """Change learning rates, k_D or the objective of a live run (a popover beside the buttons)."""
    now = current_settings(run)
    reg = state.registry()
    needs_d = run.spec.discriminator is not None
    objectives = sorted(n for n, info in reg.components["objective"].items()
                        if bool(getattr(info.cls, "needs_discriminator", True)) == needs_d)
    prefix = f"{CHANGE_KEY}.{run.id}"
    with st.form(f"{prefix}.form", border=False):
        st.caption("Applied at the next step boundary and drawn as a marker on the curves.")
        for role in ("generator", "discriminator"):
            key = f"optim.{role}.lr"
            if key in now:
                st.number_input(f"{role} learning rate", min_value=1e-8, max_value=10.0, value=float(now[key]),
                                format="%g", step=float(now[key]) / 2, key=f"{prefix}.{key}")
        if needs_d:
            st.number_input("k_D (discriminator steps per generator step)", min_value=1, max_value=100,
                            value=int(now["k_d"]), step=1, key=f"{prefix}.k_d")
        name = now["objective"].get("name")
        st.selectbox("objective", objectives, index=objectives.index(name) if name in objectives else 0,
                     key=f"{prefix}.objective",
                     help="Only objectives that use the networks this run has (with or without a discriminator).")
        st.form_submit_button("Apply at the next step", type="primary", on_click=on_change, args=(run.id,))


def on_pick() -> None:
    picked = st.session_state.get(RUN_PICK_KEY)
    if picked:
        state.remember(picked)


def runs_table(run_ids: list[str]) -> list[dict[str, object]]:
    """Rows describing runs (for the table under the run picker)."""
    mine = set(state.my_run_ids())
    rows = []
    for rid in run_ids:
        run = state.live_run(rid)
        if run is None:
            rows.append({"run": rid, "status": "not live", "step": None, "of": None, "tab": "this" if rid in mine else "other"})
            continue
        v = run.state.view()
        rows.append({"run": rid, "status": v.status, "step": v.step, "of": v.total_steps,
                     "tab": "this" if rid in mine else "other"})
    return rows


def draw_controls(spec: Spec | None, run_id: str | None) -> None:
    """The buttons row and the run picker."""
    run = state.live_run(run_id)
    status = run.status if run is not None else None
    active = run is not None and run.active
    # Buttons sized to their labels in a row that wraps, never truncates ("St…"); the run picker beside them.
    c = st.columns([2.2, 1], vertical_alignment="bottom")
    row = c[0].container(horizontal=True, vertical_alignment="bottom", gap="small")
    row.button("Start", type="primary", key="genex.start", on_click=on_start, args=(spec,), disabled=spec is None,
               help="Start a new run with the sidebar's settings (a run already going keeps going).", width="content")
    row.button("Resume" if status == "paused" else "Pause", key="genex.pause", on_click=on_pause_resume,
               args=(run_id,), disabled=not active, width="content",
               help="Pause the run (it stays in memory) or let it continue.")
    row.button("Step", key="genex.step", on_click=on_step, args=(spec, run_id), width="content",
               help="Train the given number of steps, then pause. With no run, start one paused at step 0.")
    row.number_input("steps", min_value=1, max_value=100_000, value=10, step=1, key=STEP_N_KEY, width=120,
                     label_visibility="collapsed", help="Steps per press of Step.")
    row.button("Stop", key="genex.stop", on_click=on_stop, args=(run_id,), disabled=not active, width="content",
               help="Stop the run for good (its folder, checkpoint and samples stay on disk).")
    row.button("Reset", key="genex.reset", on_click=on_reset, args=(spec, run_id), disabled=spec is None, width="content",
               help="Stop this run and start over at step 0 with the sidebar's settings, paused.")
    with row.popover("Change settings", disabled=not active, width="content",
                     help="Change the learning rates, k_D or the objective while the run trains or is paused."):
        if active:
            draw_change(run)
    manager = state.get_manager()
    options = list(dict.fromkeys([*(r for r in reversed(state.my_run_ids())),
                                  *(r.id for r in manager.runs() if r.active)]))
    if run_id and run_id not in options:
        options.insert(0, run_id)
    if options:
        st.session_state[RUN_PICK_KEY] = run_id if run_id in options else None
        c[1].selectbox("Run", options, key=RUN_PICK_KEY, on_change=on_pick,
                       placeholder="attach a live run of this server",
                       help="The runs of this tab first, then every live run of this server: pick one to watch and steer it.")
        with st.expander(f"Runs: {len(options)} (this tab's, and every live run of this server)"):
            st.dataframe(runs_table(options), hide_index=True, width="stretch")
