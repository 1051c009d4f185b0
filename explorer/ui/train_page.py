"""Train: compose a pipeline in the sidebar, press Start, watch it learn.

Thin by design: the sidebar composes a spec (explorer.ui.sidebar), the buttons steer the
server-wide RunManager (explorer.ui.controls), and a fragment polls the run's state about once a
second (explorer.ui.live). No training and no maths happen here.
"""

from __future__ import annotations

import streamlit as st

from explorer.compare import metric_directions, metric_log_keys
from explorer.errors import ExplorerError
from explorer.runs import open_run
from explorer.ui import controls, explain, live, sidebar, state

reg = state.registry()
composition = sidebar.compose(reg)
if composition.spec is not None:
    st.session_state["genex.train_spec"] = composition.spec.to_dict()  # the Compare page starts from it

st.title("Train")
notes = composition.preset.notes
st.caption(notes or "Compose a pipeline in the sidebar, then press **Start**: training runs in the background "
                    "while this page updates about once a second.")

run_id = state.current_run_id()
controls.draw_controls(composition.spec, run_id)
controls.show_flash()
run = state.live_run(run_id)


def _objective_info(spec_dict: dict) -> tuple[str, str, bool]:
    obj = spec_dict.get("objective") or {}
    name = obj.get("name", "") if isinstance(obj, dict) else str(obj)
    formula = ""
    if name in reg.components["objective"]:
        formula = getattr(reg.get("objective", name).cls, "formula", "") or ""
    return name, formula, spec_dict.get("discriminator") is not None


def declarations(spec_dict: dict) -> live.MetricDeclarations:
    return live.MetricDeclarations(metric_directions(spec_dict, reg), metric_log_keys(spec_dict, reg))


if run is not None and run.active:
    spec_dict = run.spec.to_dict()
    objective, formula, has_critic = _objective_info(spec_dict)
    critic, declared = explain.critic_of(spec_dict), declarations(spec_dict)
    name = run.spec.short_name()
    first = run.state.view()
    seen = (first.status, first.snapshot is not None)

    @st.fragment(run_every=state.POLL_S if run.active else None)
    def live_view() -> None:
        current = state.live_run(run.id)
        if current is None:
            st.warning("This run is no longer held by the server.")
            return
        view = current.state.view()
        live.draw_live(view, name, critic, key="live", starting=current.started, declared=declared, ema=run.spec.ema)
        if view.status != seen[0] or (view.snapshot is not None) != seen[1]:
            st.rerun()  # the status changed (redraw the buttons; stop polling once it ended) or the first picture arrived

    live_view()
    live.draw_explanations(first.snapshot.kind if first.snapshot is not None else "", objective, formula, has_critic)
elif run_id:
    # Ended, or not live in this server (it finished before a restart, or another process ran it): its folder
    # holds everything, so the server need not keep ended runs' histories in memory.
    try:
        store = run.store if run is not None else open_run(run_id)
    except ExplorerError as exc:
        st.warning(f"Run {run_id[:80]!r} is not live in this app and could not be opened: {exc}")
    else:
        view, run_name = live.view_from_disk(store)
        if run is None:
            st.info(f"Run {run_id} is not training in this app; showing what its folder holds ({store.path}).")
        spec_dict = store.read_spec()
        objective, formula, has_critic = _objective_info(spec_dict)
        live.draw_live(view, run_name, explain.critic_of(spec_dict), key="live", declared=declarations(spec_dict),
                       ema=spec_dict.get("ema"))
        live.draw_explanations(view.snapshot.kind if view.snapshot is not None else "", objective, formula, has_critic)
else:
    st.info("No run yet. The preset in the sidebar is a known-good pipeline: press **Start** and watch it learn.")
    if composition.spec is not None:
        objective, formula, has_critic = _objective_info(composition.spec.to_dict())
        live.draw_explanations("", objective, formula, has_critic, title="The objective")
