"""The Train page's sidebar: compose a pipeline from whatever plugins are installed.

Preset -> data sampler, latent prior, objective, generator, discriminator (hidden when the objective
needs none), optimisers, training settings (with a moving average of G, spec ``ema``, and PacGAN's
packing, spec ``pack``). Every parameter widget comes from a declaration
(:mod:`explorer.ui.widgets`), so a third-party component appears here with no UI code. The result
is a raw spec dict, resolved by :func:`explorer.spec.resolve`, whose errors name the field.

Choosing a preset (or "Restore preset") starts a new widget generation: every widget is drawn
afresh with the preset's values. Changing a widget only changes the *next* run; a run already
training keeps going.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import streamlit as st

from explorer.errors import ExplorerError
from explorer.registry import Registry
from explorer.spec import EMA, OPTIMIZER, SETTINGS, SLOTS, Spec, parse_bytes, resolve
from explorer.ui import draw
from explorer.ui.presets import DEFAULT_PRESET, Preset, blank_preset, load_presets
from explorer.ui.widgets import param_widget, params_widgets

GEN_KEY = "genex.widget_generation"
PRESET_KEY = "genex.preset"
UPLOADED_KEY = "genex.uploaded_presets"
SLOT_ORDER = ("data", "latent", "objective", "generator", "discriminator")
SLOT_TITLES = {
    "data": ("Data", "the distribution to learn: p_data"),
    "latent": ("Latent prior", "the noise z ~ p_z the generator transforms"),
    "objective": ("Objective", "what the networks optimise"),
    "generator": ("Generator", "the transform x = G(z)"),
    "discriminator": ("Discriminator", "D(x): the probability that x is real"),
}
TRAINING = ("steps", "batch_size", "k_d", "seed", "device")
ADVANCED = ("name", "precision", "log_every", "snapshot_every", "checkpoint_every", "metric_every", "snapshot_size")


@dataclass
class Composition:
    """What the sidebar composed: the raw spec, its resolved form (None when invalid) and why not."""

    raw: dict[str, Any]
    spec: Spec | None
    error: str | None
    preset: Preset


def _bump() -> None:
    st.session_state[GEN_KEY] = st.session_state.get(GEN_KEY, 0) + 1


def all_presets(reg: Registry) -> list[Preset]:
    presets = load_presets(reg) + list(st.session_state.get(UPLOADED_KEY, {}).values())
    return presets or [blank_preset(reg)]


UPLOAD_KEY = "genex.spec_upload"


def _adopt(pid: str, title: str, raw: dict[str, Any], resolved: dict[str, Any]) -> None:
    """Make a pipeline brought in from outside (a file, a link, a run) this tab's selected preset."""
    uploaded = st.session_state.setdefault(UPLOADED_KEY, {})
    uploaded[pid] = Preset(pid, title, raw, notes=str(raw.get("notes") or ""), resolved=resolved)
    st.session_state[PRESET_KEY] = pid
    _bump()


def _take_upload(reg: Registry) -> str | None:
    """Turn an uploaded spec file into a preset of this tab (before the preset menu is drawn, so it can
    select it); returns an error message for a file that does not parse."""
    file = st.session_state.get(UPLOAD_KEY)
    if file is None:
        return None
    uploaded = st.session_state.setdefault(UPLOADED_KEY, {})
    pid = f"uploaded:{file.name}"
    if pid in uploaded:
        return
    try:
        raw = parse_bytes(file.getvalue(), "json" if file.name.endswith(".json") else "toml", file.name[:200])
        resolved = resolve(raw, reg).to_dict()
    except ExplorerError as exc:
        return f"{file.name}: {exc}"
    _adopt(pid, f"{raw.get('name') or file.name} (uploaded)", raw, resolved)
    return None


LINK_TOKEN_KEY = "genex.link_token"


def _take_link(reg: Registry) -> str | None:
    """A pipeline carried in the URL (``?spec=``, explorer.ui.urlspec) becomes this tab's preset
    "from the link" once; returns a message when the link cannot be used."""
    from explorer.ui import urlspec

    token = st.query_params.get(urlspec.QUERY_KEY)
    if not token or st.session_state.get(LINK_TOKEN_KEY) == token:
        return None
    st.session_state[LINK_TOKEN_KEY] = token
    try:
        raw = urlspec.spec_from_query(st.query_params) or {}
        resolved = resolve(raw, reg).to_dict()
    except ExplorerError as exc:
        return f"The link's pipeline cannot be used: {exc}"
    _adopt("link", f"{raw.get('name') or 'pipeline'} (from the link)", raw, resolved)
    return None


RUN_TOKEN_KEY = "genex.run_token"


def _take_run(reg: Registry) -> str | None:
    """A run opened by its link (``?run=``, from the Runs or Compare page or another tab) brings its own
    pipeline: it becomes this tab's preset "from run …" once, so the sidebar and the caption describe the
    run shown and Start trains that pipeline. A run this tab started itself changes nothing."""
    from explorer.runs import open_run
    from explorer.ui.state import CURRENT_KEY, QUERY_RUN

    run_id = st.query_params.get(QUERY_RUN)
    if not run_id or st.session_state.get(RUN_TOKEN_KEY) == run_id:
        return None
    st.session_state[RUN_TOKEN_KEY] = run_id
    if st.session_state.get(CURRENT_KEY) == run_id:
        return None  # this tab's own run: the sidebar already holds its pipeline
    try:
        raw = open_run(run_id).read_spec()
    except ExplorerError:
        return None  # the page says why it cannot open the run
    raw.pop("provenance", None)
    try:
        resolved = resolve(raw, reg).to_dict()
    except ExplorerError as exc:
        return f"Run {run_id[:80]}'s pipeline cannot be composed here: {exc}"
    _adopt("run", f"{raw.get('name') or 'pipeline'} (from run {run_id[:40]})", raw, resolved)
    return None


def share_query(spec: Spec, reg: Registry) -> str:
    """``spec=...``: the query string that reproduces this pipeline."""
    from urllib.parse import urlencode

    from explorer.ui import urlspec

    return urlencode(urlspec.spec_to_query(spec.to_dict(), reg))


def urlspec_limit() -> int:
    from explorer.ui import urlspec

    return urlspec.MAX_TOKEN_CHARS


def carry_in_url(spec: Spec, reg: Registry) -> None:
    """Keep the page URL's ``spec=`` in step with the composed pipeline, so the address bar is always
    a link that reproduces the set-up (it is marked as taken, so this tab does not re-load it)."""
    from explorer.ui import urlspec

    token = urlspec.spec_to_query(spec.to_dict(), reg).get(urlspec.QUERY_KEY)
    if token and len(token) > urlspec.MAX_TOKEN_CHARS:  # e.g. thousands of drawn points: no link could load it
        st.query_params.pop(urlspec.QUERY_KEY, None)
        return
    if token and st.query_params.get(urlspec.QUERY_KEY) != token:
        st.session_state[LINK_TOKEN_KEY] = token
        st.query_params[urlspec.QUERY_KEY] = token


@st.cache_resource(show_spinner=False, max_entries=32)
def _instance(reg_id: int, kind: str, name: str, params_json: str, _reg: Registry) -> Any:
    """A component built with these parameters (cached per registry), or None when it cannot be built."""
    try:
        return _reg.create(kind, name, json.loads(params_json))
    except Exception:  # noqa: BLE001 - the spec resolver reports the reason with the field's name
        return None


def instance(reg: Registry, kind: str, name: str, params: dict[str, Any] | None = None) -> Any:
    try:
        text = json.dumps(params or {}, sort_keys=True)
    except TypeError:
        return None
    return _instance(id(reg), kind, name, text, reg)


def architectures_for(reg: Registry, role: str, in_shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None) -> list[str]:
    """The architectures whose ``supports(role, in_shape, out_shape)`` (with their default parameters)
    accepts these shapes; every architecture when the shapes are not known."""
    names = reg.names("architecture")
    if in_shape is None or out_shape is None:
        return names
    out = []
    for name in names:
        arch = instance(reg, "architecture", name)
        try:
            if arch is not None and not arch.supports(role, tuple(in_shape), tuple(out_shape)):
                out.append(name)
        except Exception:  # noqa: BLE001 - a supports() that raises cannot build it
            continue
    return out


def metrics_for(reg: Registry, data: Any) -> list[str]:
    """The metrics that apply to the data sampler ``data`` (every metric when it is unknown)."""
    names = reg.names("metric")
    if data is None:
        return names
    out = []
    for name in names:
        metric = instance(reg, "metric", name)
        try:
            if metric is not None and metric.applies(data):
                out.append(name)
        except Exception:  # noqa: BLE001
            continue
    return out


def draw_plugin_failures(reg: Registry, container: Any = None) -> None:
    """Say which plugins failed to load (their components are missing from these lists), with a link to
    the Plugins page that shows each one's traceback. Drawn at the top of the sidebar; the lead may
    also call it from the Train page's body."""
    if not reg.errors:
        return
    box = container if container is not None else st.sidebar
    names = ", ".join(dict.fromkeys(f"**{e.plugin}**" for e in reg.errors))
    box.warning(f"Plugins that failed to load: {names}. Their components are missing from the lists below.",
                icon=":material/extension_off:")
    box.page_link("ui/plugins_page.py", label="See why on the Plugins page", icon=":material/extension:")


def compose(reg: Registry) -> Composition:
    """Draw the pipeline sidebar and return what it composes."""
    sb = st.sidebar
    sb.header("Pipeline")
    draw_plugin_failures(reg, sb)
    upload_error = _take_upload(reg) or _take_link(reg) or _take_run(reg)
    presets = all_presets(reg)
    by_id = {p.id: p for p in presets}
    if st.session_state.get(PRESET_KEY) not in by_id:
        st.session_state[PRESET_KEY] = DEFAULT_PRESET if DEFAULT_PRESET in by_id else presets[0].id
    pid = sb.selectbox(
        "Preset", list(by_id), key=PRESET_KEY, format_func=lambda i: by_id[i].title + ("  (unavailable)" if by_id[i].error else ""),
        on_change=_bump, help="Known-good pipelines. Choosing one resets every setting below to it.",
    )
    preset = by_id[pid]
    if preset.error:
        sb.warning(f"This preset cannot be used here: {preset.error}")
    sb.button("Restore preset", on_click=_bump, key="genex.restore", help="Put every setting back to the preset's values.")
    base = preset.resolved or blank_preset(reg).resolved
    k = f"g{st.session_state.get(GEN_KEY, 0)}"
    raw: dict[str, Any] = {}
    if base.get("notes"):
        raw["notes"] = base["notes"]
    if base.get("changes"):  # the preset's change log (settings changed mid-run), not edited here: carried as it is
        raw["changes"] = base["changes"]

    needs_d = True
    defaults = {s[0]: (s[1], s[2]) for s in SLOTS}
    built: dict[str, Any] = {}  # the data and latent samplers as composed (for shapes and metrics)
    for slot in SLOT_ORDER:
        kind, default_name = defaults[slot]
        if slot == "discriminator" and not needs_d:
            continue
        title, what = SLOT_TITLES[slot]
        sb.subheader(title, help=what)
        x_shape = getattr(built.get("data"), "shape", None)
        z_shape = getattr(built.get("latent"), "shape", None)
        if slot == "generator":
            names = architectures_for(reg, "generator", z_shape, x_shape)
        elif slot == "discriminator":
            names = architectures_for(reg, "discriminator", x_shape, (1,))
        else:
            names = reg.names(kind)
        if not names:
            if kind == "architecture" and reg.names(kind):
                sb.error(f"No installed architecture can build the {slot} for these shapes "
                         f"({z_shape if slot == 'generator' else x_shape} -> {x_shape if slot == 'generator' else (1,)}).")
            else:
                sb.error(f"No {kind} is installed: see the Plugins page.")
            continue
        base_comp = base.get(slot) or {}
        base_name = base_comp.get("name", default_name) if isinstance(base_comp, dict) else str(base_comp)
        index = names.index(base_name) if base_name in names else (names.index(default_name) if default_name in names else 0)
        name = sb.selectbox(title, names, index=index, key=f"{k}.{slot}", label_visibility="collapsed", persist_state="session")
        info = reg.get(kind, name)
        if info.cls.summary:
            sb.caption(info.cls.summary)
        values = {kk: v for kk, v in base_comp.items() if kk != "name"} if isinstance(base_comp, dict) and name == base_name else {}
        params: dict[str, Any] = {}
        if slot == "data" and name == draw.SAMPLER:  # drawn points: a canvas, not a text input
            params = draw.drawn_params(info.cls, f"{k}.{slot}.{name}", values, sb, auto_open=name != base_name)
        elif info.cls.params:
            with sb.expander(f"{name} parameters"):
                params = params_widgets(info.cls.params, f"{k}.{slot}.{name}", values)
        raw[slot] = {"name": name, **params}
        if slot in ("data", "latent"):
            built[slot] = instance(reg, "sampler", name, params)
        if slot == "objective":
            needs_d = bool(getattr(info.cls, "needs_discriminator", True))

    settings = {p.name: p for p in SETTINGS}
    base_optim = base.get("optim") or {}
    with sb.expander("Optimisers"):
        raw["optim"] = {}
        for role in ("generator", "discriminator") if needs_d else ("generator",):
            st.markdown(f"**{role}**")
            raw["optim"][role] = params_widgets(OPTIMIZER, f"{k}.optim.{role}", base_optim.get(role) or base_optim.get("generator"))
    sb.subheader("Training")
    for name in TRAINING:
        if name == "k_d" and not needs_d:
            continue
        raw[name] = param_widget(settings[name], f"{k}.settings.{name}", base.get(name), sb)
    raw.update(ema_pack_controls(base, k, sb, raw.get("batch_size"), needs_d))
    with sb.expander("Advanced"):
        # The run's name follows the pipeline: the preset's name only while its data and objective are kept
        # (else empty: <data>-<objective>); the widget is keyed by both, so a change redraws it.
        same = all(_slot_name(raw.get(s)) == _slot_name(base.get(s)) for s in ("data", "objective"))
        for name in ADVANCED:
            if name == "name":
                key = f"{k}.settings.name.{_slot_name(raw.get('data'))}.{_slot_name(raw.get('objective'))}"
                raw[name] = param_widget(settings[name], key, base.get(name) if same else "")
            else:
                raw[name] = param_widget(settings[name], f"{k}.settings.{name}", base.get(name))
        data_name = _slot_name(raw.get("data"))
        metric_names = metrics_for(reg, built.get("data"))
        chosen_base = [m["name"] if isinstance(m, dict) else m for m in base.get("metrics", [])]
        chosen = st.multiselect("metrics", metric_names, default=[m for m in chosen_base if m in metric_names],
                                key=f"{k}.metrics.{data_name}", persist_state="session",
                                help="The metrics that apply to this data; computed every metric_every steps on a fixed "
                                     "sample, off the hot path.")
        raw["metrics"] = chosen or "none"
    sb.file_uploader("Load a spec file (TOML or JSON)", type=["toml", "json"], key=UPLOAD_KEY,
                     help="It joins the presets menu of this tab.")
    if upload_error:
        sb.error(upload_error)

    try:
        spec = resolve(raw, reg)
        error = unsupported(spec, reg)
    except ExplorerError as exc:
        spec, error = None, str(exc)
    if error:
        spec = None
        sb.error(error)
    if spec is not None:
        with sb.expander("Spec (TOML)"):
            text = spec.to_toml()
            st.code(text, language="toml")
            st.download_button("Download spec", text, file_name=f"{spec.short_name()}.toml", mime="text/plain", key="genex.dl_spec")
            query = share_query(spec, reg)
            if len(query) > len("spec=") + urlspec_limit():
                st.caption("This pipeline is too large for a link (its drawn points): download the spec instead.")
            else:
                st.markdown(f"[Link to this pipeline](./?{query}) — the address bar carries it too; "
                            "it opens this pipeline in the Train page of any tab.")
        carry_in_url(spec, reg)
    return Composition(raw, spec, error, preset)


EMA_TOGGLE = "Average G's weights (EMA)"
EMA_HELP = ("Keep an exponential moving average of the generator's weights beside G (Yazıcı et al. 2019, \"The unusual "
            "effectiveness of averaging in GAN training\"): up to the start step the average is G itself, then after "
            "each step ema ← decay · ema + (1 − decay) · G. The views, saved samples and metrics show the average, "
            "often steadier and closer to the modes than the last iterate; training steps only the raw G (the Train "
            "page can draw it beside the average). Spec: `ema = { decay, start }`.")
PACK_LABEL = "Pack (PacGAN)"
PACK_HELP = ("PacGAN (Lin et al. 2018): the discriminator judges this many samples of one kind (all real or all "
             "generated) at once, so a generator that drops modes makes packs that look unlike real ones. 1 = off. "
             "Needs an objective with a discriminator; the batch size must be a multiple of it. Spec: `pack`.")


def ema_pack_controls(base: dict[str, Any], k: str, box: Any, batch_size: Any = None, needs_d: bool = True) -> dict[str, Any]:
    """The generator's moving average (spec ``ema``) and PacGAN packing (spec ``pack``), from the preset's
    values ``base`` (``batch_size``: the one chosen above). The spec resolver checks them (a batch that does
    not split into packs, an objective without a discriminator) and the sidebar shows its message."""
    out: dict[str, Any] = {}
    ema = base.get("ema")
    if box.toggle(EMA_TOGGLE, value=bool(ema), key=f"{k}.ema.on", help=EMA_HELP, persist_state="session"):
        table = ema if isinstance(ema, dict) else {}
        params = {p.name: p for p in EMA}
        decay = param_widget(dataclasses.replace(params["decay"], label="EMA decay"), f"{k}.ema.decay", table.get("decay"), box)
        start = param_widget(dataclasses.replace(params["start"], label="EMA start step"), f"{k}.ema.start",
                             table.get("start"), box)
        out["ema"] = {"decay": decay, "start": start}
        if isinstance(decay, (int, float)) and 0 <= decay < 1 and isinstance(start, int):
            box.caption(f"From step {start:,}: an average over about the last {1 / (1 - decay):,.0f} steps.")
    pack = dataclasses.replace({p.name: p for p in SETTINGS}["pack"], label=PACK_LABEL, help=PACK_HELP)
    out["pack"] = value = param_widget(pack, f"{k}.settings.pack", base.get("pack"), box)
    if value == 1:
        box.caption("1 = off: D judges one sample at a time.")
    elif needs_d and isinstance(batch_size, int) and isinstance(value, int) and batch_size % value == 0:  # else the spec's error says why
        packs = batch_size // value
        box.caption(f"D judges packs of {value} samples: {packs:,} real and {packs:,} generated packs a batch.")
    return out


def _slot_name(value: Any) -> str:
    return str(value.get("name", "")) if isinstance(value, dict) else str(value or "")


def unsupported(spec: Spec, reg: Registry) -> str | None:
    """Why the chosen architectures (with their chosen parameters) cannot build this pipeline's networks,
    before anything starts; None when they can."""
    data = instance(reg, "sampler", spec.data.name, spec.data.params)
    latent = instance(reg, "sampler", spec.latent.name, spec.latent.params)
    if data is None or latent is None:
        return None  # the pipeline reports it when it is built
    x_shape, z_shape = tuple(data.shape), tuple(latent.shape)
    roles = [("generator", spec.generator, z_shape, x_shape)]
    if spec.discriminator is not None:
        roles.append(("discriminator", spec.discriminator, x_shape, (1,)))
    for role, comp, in_shape, out_shape in roles:
        arch = instance(reg, "architecture", comp.name, comp.params)
        reason = arch.supports(role, in_shape, out_shape) if arch is not None else None
        if reason:
            return f"{role}: {comp.name!r} cannot build the {role} for {in_shape} -> {out_shape}: {reason}"
    return None
