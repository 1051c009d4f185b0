"""``genex app``: the explorer's Streamlit server, started warm.

``streamlit run explorer/app.py`` imports torch, scipy, pandas, altair and the plugins in the first
tab's first script run, so the first tab after a start waits seconds for its controls. This command
runs the same server in this process after importing all of that and starting the RunManager, so
the first tab opens as fast as any other. Streamlit options pass through:
``genex app --server.port 8502``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"
#: what the repository's .streamlit/config.toml sets for speed and for a server without a display; given
#: as flags so they hold from any working folder (options given to `genex app` come later and win)
FLAGS = ("--server.headless", "true", "--server.fileWatcherType", "none", "--server.runOnSave", "false",
         "--runner.postScriptGC", "false", "--browser.gatherUsageStats", "false")


def warm_up() -> None:
    """Import what every page needs, load the plugins and presets, and start the RunManager (with its
    spare worker), once, in this process."""
    import torch  # noqa: F401  (seconds: the heaviest import of all)

    from explorer.registry import get_registry
    from explorer.ui import charts, controls, explain, live, sidebar, state, views  # noqa: F401
    from explorer.ui.presets import load_presets

    load_presets(get_registry())
    state.get_manager()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Serve the explorer (Streamlit) with torch, the plugins and the presets loaded before the "
                          "server starts, so the first tab opens as fast as any other.")
    parser.add_argument("streamlit_options", nargs=argparse.REMAINDER,
                        help="passed to `streamlit run`, e.g. --server.port 8502 --server.address 0.0.0.0")


def run(args: argparse.Namespace) -> int:
    from streamlit.web import cli as streamlit_cli

    t0 = time.monotonic()
    print("Generative Explorer: loading torch, the plugins and the presets…", flush=True)
    _warm_quietly()
    print(f"  ready in {time.monotonic() - t0:.1f} s; starting the server.", flush=True)
    sys.argv = ["streamlit", "run", str(APP), *FLAGS, *args.streamlit_options]
    try:
        streamlit_cli.main(prog_name="streamlit", standalone_mode=False)
    except KeyboardInterrupt:
        pass
    return 0


def _warm_quietly() -> None:
    try:
        warm_up()
    except BaseException:  # noqa: BLE001  (the page that needs it reports the same failure, clearly)
        pass
