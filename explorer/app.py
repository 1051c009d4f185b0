"""Streamlit entry point: ``streamlit run explorer/app.py``.

A router over the pages in ``explorer/ui``: Train, Sampling, Plugins, and Compare / Runs when
those modules are installed. Pages read run state and draw; the server-wide RunManager trains.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Streamlit puts the script's folder (explorer/) first on sys.path, where modules such as
# ``metrics`` or ``runs`` would shadow same-named top-level ones; the package is imported as
# ``explorer.*`` from the repository root instead (also when it is not pip-installed).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

UI = HERE / "ui"
PAGES = (
    # file, title, icon, url path
    ("train_page.py", "Train", ":material/model_training:", "train"),
    ("compare_page.py", "Compare", ":material/compare:", "compare"),
    ("runs_page.py", "Runs", ":material/history:", "runs"),
    ("sampling_page.py", "Sampling", ":material/casino:", "sampling"),
    ("plugins_page.py", "Plugins", ":material/extension:", "plugins"),
)


def pages() -> list[st.Page]:
    """Every page whose module exists; Train is the default."""
    out = []
    for filename, title, icon, url in PAGES:
        path = UI / filename
        if path.is_file():
            default = filename == "train_page.py"
            out.append(st.Page(path, title=title, icon=icon, url_path=None if default else url, default=default))
    return out


st.set_page_config(page_title="Generative Explorer", page_icon=":material/blur_on:", layout="wide",
                   initial_sidebar_state="expanded")
nav = st.navigation(pages(), position="top")
nav.run()
