"""Plugins: every installed plugin and component with its version and parameters, and every plugin
that failed to load with its traceback. Reads the process-wide registry; changes nothing."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.components import KINDS
from explorer.ui import state
from explorer.ui.widgets import format_value

reg = state.registry()
info = reg.describe()

st.title("Plugins")
st.caption("Built-in components register through the same `generative_explorer` entry points as third-party "
           "packages (`pip install generative-explorer-<thing>`); a plugin that fails to load is listed below "
           "and everything else keeps working. Plugins load once per server: after installing, upgrading or "
           "editing a plugin package, restart the app (`genex app`) to load it.")

n_components = sum(len(reg.components[k]) for k in KINDS)
c = st.columns(4)
c[0].metric("plugins loaded", len(reg.plugins))
c[1].metric("components", n_components)
c[2].metric("failed to load", len(reg.errors))
c[3].metric("skipped", len(reg.skipped))

if reg.errors:
    st.subheader("Failed to load")
    for err in reg.errors:
        where = f"{err.plugin}" + (f" ({err.dist} {err.version or '?'})" if err.dist else "")
        st.error(f"**{where}** failed at {err.stage}: {err.message}", icon=":material/extension_off:")
        st.caption("Fixed it, or installed the package while the app was running? Restart the app (`genex app`): "
                   "plugins load once per server, and `genex plugins` shows the state a restart will load.")
        if err.traceback:
            with st.expander(f"Traceback of {err.plugin}"):
                st.code(err.traceback, language="python")
if reg.skipped:
    st.subheader("Skipped")
    for name, why in reg.skipped.items():
        st.info(f"**{name}**: {why}")

st.subheader("Plugins")
st.dataframe(
    pd.DataFrame([
        {"plugin": p["name"], "distribution": p["distribution"] or "", "version": p["version"] or "",
         "module": p["module"], "components": ", ".join(p["components"])}
        for p in info["plugins"]
    ]),
    hide_index=True, width="stretch", height=36 * (len(info["plugins"]) + 1) + 4,
)

st.subheader("Components")
tabs = st.tabs([f"{kind}s ({len(reg.components[kind])})" for kind in KINDS])
for tab, kind in zip(tabs, KINDS):
    with tab:
        for name in reg.names(kind):
            comp = reg.get(kind, name)
            cls = comp.cls
            extra = ""
            if kind == "objective":
                extra = " · needs a discriminator" if getattr(cls, "needs_discriminator", True) else " · no discriminator"
            with st.expander(f"**{name}** — {cls.summary or cls.__name__}"):
                st.caption(f"from {comp.source}{extra} · `{cls.__module__}.{cls.__qualname__}`")
                if kind == "objective" and getattr(cls, "formula", ""):
                    st.latex(cls.formula)
                if cls.params:
                    st.dataframe(
                        pd.DataFrame([
                            {"parameter": p.name, "kind": p.kind, "default": format_value(p.default),
                             "allowed": ", ".join(map(format_value, p.choices)) if p.choices else
                             (p.bounds_text() if p.kind in ("int", "float", "floats", "ints") else ""),
                             "help": p.help}
                            for p in cls.params
                        ]),
                        hide_index=True, width="stretch",
                    )
                else:
                    st.caption("No parameters.")
