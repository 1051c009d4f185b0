"""What the pages share: the server-wide RunManager, this tab's identity and its runs.

The RunManager is one object for the whole Streamlit server (``st.cache_resource``): it owns every
run, so a closed or reloaded tab never leaves a training without an owner that can stop it
(streamlit#8182, #6166). A tab remembers the run it shows in the URL (``?run=<id>``), so a reload
re-attaches to it; any live run of the server can be re-attached from the Train page.
"""

from __future__ import annotations

import atexit
import uuid

import streamlit as st

from explorer.device import configure_threads
from explorer.errors import ExplorerError
from explorer.manager import ManagedRun, RunManager
from explorer.registry import Registry, get_registry
from explorer.training import TrainerConfig

OWNER_KEY = "genex.owner"
RUNS_KEY = "genex.my_runs"
CURRENT_KEY = "genex.current_run"
QUERY_RUN = "run"
POLL_S = 0.5  # the Train page redraws a live run about this often
SNAPSHOT_HZ = 2.0  # live snapshots a worker sends per second at most (one per redraw)


@st.cache_resource(show_spinner=False)
def get_manager() -> RunManager:
    """The RunManager shared by every session of this server. Runs go to ``$GENEX_RUNS_DIR`` or ./runs
    (read when each run starts, so tests can point it at a temporary folder)."""
    # Each run trains in a worker process of its own (one is kept started ahead of need, so Start trains
    # at once); the server's threads only read their progress, so watching never slows a run down.
    manager = RunManager(config=TrainerConfig(snapshot_hz=SNAPSHOT_HZ), warm=1)
    configure_threads(manager.max_concurrent)
    # When the server stops, stop its runs cleanly (status "stopped", checkpoint kept); they can be
    # resumed from the Runs page. (A server killed outright closes the workers' pipes: they stop too.)
    atexit.register(manager.close, 10.0)
    return manager


def registry() -> Registry:
    """The process-wide plugin registry (tests swap it with ``explorer.registry.set_registry``)."""
    return get_registry()


def owner() -> str:
    """A stable id for this browser session (fair queueing across tabs)."""
    if OWNER_KEY not in st.session_state:
        st.session_state[OWNER_KEY] = f"tab-{uuid.uuid4().hex[:8]}"
    return st.session_state[OWNER_KEY]


def my_run_ids() -> list[str]:
    """The runs started from this tab, oldest first."""
    return list(st.session_state.get(RUNS_KEY, []))


def remember(run_id: str) -> None:
    """Make ``run_id`` this tab's current run (in the session and in the URL)."""
    runs = st.session_state.setdefault(RUNS_KEY, [])
    if run_id not in runs:
        runs.append(run_id)
    st.session_state[CURRENT_KEY] = run_id
    st.query_params[QUERY_RUN] = run_id


def current_run_id() -> str | None:
    """The run this tab shows: the URL's ``?run=`` (survives a reload), else the session's."""
    from_url = st.query_params.get(QUERY_RUN)
    if from_url:
        if st.session_state.get(CURRENT_KEY) != from_url:
            runs = st.session_state.setdefault(RUNS_KEY, [])
            if from_url not in runs:
                runs.append(from_url)
            st.session_state[CURRENT_KEY] = from_url
        return from_url
    current = st.session_state.get(CURRENT_KEY)
    if current:
        st.query_params[QUERY_RUN] = current
    return current


def live_run(run_id: str | None) -> ManagedRun | None:
    """The managed run with this id, or None when this server is not (or no longer) holding it."""
    if not run_id:
        return None
    try:
        return get_manager().get(run_id)
    except ExplorerError:
        return None
