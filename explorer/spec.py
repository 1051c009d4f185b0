"""The pipeline spec: parse, validate, fill defaults, round-trip TOML/JSON, helpful errors.

A spec names the components and the training settings. Every field has a default, so this works::

    data = "ring8"
    objective = "nonsaturating"

A component is a name (``data = "ring8"``) or a table with ``name`` and its parameters
(``[data] name = "ring8"  std = 0.05``). Optimisers live under ``[optim.generator]`` and
``[optim.discriminator]``. The resolved spec has every default filled in and records which plugin
(and version) each component came from, so a run made with a plugin that is no longer installed
says exactly what is missing.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import json
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from explorer.errors import SpecError, choices_text, did_you_mean, shown
from explorer.params import Param, resolve_params
from explorer.registry import Registry, get_registry

# Top-level scalar settings: one declaration drives validation, the sidebar and the CLI.
SETTINGS: tuple[Param, ...] = (
    Param("name", "str", "", "a short name for the run (default: <data>-<objective>)"),
    Param("notes", "str", "", "free text: what this pipeline shows, what to look for"),
    Param("seed", "int", 0, "seeds the weights, the data stream and the noise stream", low=0, high=2**31 - 1),
    Param("steps", "int", 2000, "generator steps to train", low=1, high=10_000_000),
    Param("batch_size", "int", 256, "samples per batch (real and generated)", low=2, high=65_536),
    Param("k_d", "int", 1, "discriminator steps per generator step (k in Goodfellow et al. 2014, Alg. 1)", low=1, high=100),
    Param("device", "str", "auto", "auto = cuda, then mps, then cpu", choices=("auto", "cpu", "cuda", "mps")),
    Param("precision", "str", "fp32", "bf16 autocast on CUDA (ignored elsewhere)", choices=("fp32", "bf16")),
    Param("log_every", "int", 50, "steps between logged losses (the only host sync)", low=1, high=1_000_000),
    Param("snapshot_every", "int", 500, "steps between sample snapshots saved to disk", low=1, high=10_000_000),
    Param("checkpoint_every", "int", 1000, "steps between checkpoints (0 = only at the end)", low=0, high=10_000_000),
    Param("metric_every", "int", 500, "steps between metric evaluations (0 = never)", low=0, high=10_000_000),
    Param("snapshot_size", "int", 1000, "points (or images) kept in each snapshot", low=16, high=100_000),
    Param("pack", "int", 1, "PacGAN packing (Lin et al. 2018): the discriminator judges `pack` samples of one kind "
          "(all real or all generated) at once, concatenated along the feature (or channel) axis; 1 = off. "
          "batch_size must be a multiple of it", low=1, high=16),
)

# The generator's exponential moving average (Yazici et al. 2019, "The unusual effectiveness of averaging in
# GAN training"): ``ema = { decay = 0.999, start = 1000 }``; off when absent. Views, snapshots, saved samples
# and metrics use the averaged generator; training uses (and only changes) the raw one.
EMA: tuple[Param, ...] = (
    Param("decay", "float", 0.999, "weight of the old average at each step: ema = decay * ema + (1 - decay) * G "
          "(an average over about 1 / (1 - decay) steps)", low=0.0, high=0.999999),
    Param("start", "int", 1000, "steps before averaging begins: up to this step the average is G itself",
          low=0, high=10_000_000),
)

OPTIMIZER: tuple[Param, ...] = (
    Param("name", "str", "adam", "optimiser", choices=("adam", "sgd", "rmsprop")),
    Param("lr", "float", 1e-3, "learning rate", low=1e-8, high=10.0, log=True),
    Param("betas", "floats", [0.5, 0.999], "Adam's (beta1, beta2)", low=0.0, high=0.99999),
    Param("momentum", "float", 0.0, "SGD / RMSprop momentum", low=0.0, high=0.9999),
    Param("weight_decay", "float", 0.0, "L2 weight decay", low=0.0, high=1.0),
    Param("schedule", "str", "constant", "learning-rate schedule over the run's steps: constant, or cosine "
          "annealing from lr to 0 (Loshchilov & Hutter 2017)", choices=("constant", "cosine")),
)

_SETTING = {p.name: p for p in SETTINGS}
_OPTIMIZER = {p.name: p for p in OPTIMIZER}
_EMA_EXAMPLE = "e.g. ema = { decay = 0.999, start = 1000 }"

# Component slots: (spec key, component kind, default name).
SLOTS: tuple[tuple[str, str, str], ...] = (
    ("data", "sampler", "ring8"),
    ("latent", "sampler", "gaussian"),
    ("generator", "architecture", "mlp"),
    ("discriminator", "architecture", "mlp"),
    ("objective", "objective", "nonsaturating"),
)
TOP_KEYS = {p.name for p in SETTINGS} | {s[0] for s in SLOTS} | {"optim", "metrics", "changes", "ema", "provenance"}

# Settings a run may change mid-run: in the spec's change log (``[[changes]]``) and live
# (``RunManager.change``). Their values are checked by the same declarations as the spec's own fields
# (SETTINGS' k_d, OPTIMIZER's lr, the objective's parameters).
CHANGEABLE: tuple[str, ...] = ("optim.generator.lr", "optim.discriminator.lr", "k_d", "objective")
MAX_CHANGES = 1000  # entries in one change log (a live run refuses more)


@dataclass
class ComponentSpec:
    """A component by name with its resolved parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.params)}


@dataclass
class Spec:
    """A resolved pipeline spec: every field validated and every default filled in."""

    settings: dict[str, Any]
    data: ComponentSpec
    latent: ComponentSpec
    generator: ComponentSpec
    discriminator: ComponentSpec | None
    objective: ComponentSpec
    optim: dict[str, dict[str, Any]]
    metrics: list[ComponentSpec]
    provenance: dict[str, str] = field(default_factory=dict)
    #: the change log, sorted by step: ``{"step": N, "set": {setting: value}}``, each applied at the step
    #: boundary where ``pipeline.step == N`` (before step N + 1 is trained); values resolved
    #: (lr as float, k_d as int, the objective as a full ``{"name": ..., <params>}`` table)
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: the generator's moving average, ``{"decay": float, "start": int}``, or None (off): see :data:`EMA`
    ema: dict[str, Any] | None = None

    # -- the top-level settings (declared in SETTINGS), typed ------------------------------------------
    @property
    def name(self) -> str:
        return str(self.settings["name"])

    @property
    def notes(self) -> str:
        return str(self.settings["notes"])

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def steps(self) -> int:
        return int(self.settings["steps"])

    @property
    def batch_size(self) -> int:
        return int(self.settings["batch_size"])

    @property
    def k_d(self) -> int:
        return int(self.settings["k_d"])

    @property
    def device(self) -> str:
        return str(self.settings["device"])

    @property
    def precision(self) -> str:
        return str(self.settings["precision"])

    @property
    def log_every(self) -> int:
        return int(self.settings["log_every"])

    @property
    def snapshot_every(self) -> int:
        return int(self.settings["snapshot_every"])

    @property
    def checkpoint_every(self) -> int:
        return int(self.settings["checkpoint_every"])

    @property
    def metric_every(self) -> int:
        return int(self.settings["metric_every"])

    @property
    def snapshot_size(self) -> int:
        return int(self.settings["snapshot_size"])

    @property
    def pack(self) -> int:
        return int(self.settings["pack"])

    @property
    def needs_discriminator(self) -> bool:
        return self.discriminator is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(copy.deepcopy(self.settings))
        for key, _, _ in SLOTS:
            comp = getattr(self, key)
            if comp is not None:
                out[key] = comp.to_dict()
        out["optim"] = copy.deepcopy(self.optim)
        out["metrics"] = [m.to_dict() for m in self.metrics]
        if self.changes:
            out["changes"] = copy.deepcopy(self.changes)
        if self.ema is not None:
            out["ema"] = dict(self.ema)
        if self.provenance:
            out["provenance"] = dict(self.provenance)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def short_name(self) -> str:
        return self.settings.get("name") or f"{self.data.name}-{self.objective.name}"

    # -- settings that change mid-run ------------------------------------------------------------------
    def initial_settings(self) -> dict[str, Any]:
        """The changeable settings as the run starts: {``optim.generator.lr``, ``optim.discriminator.lr``
        (with a discriminator), ``k_d``, ``objective`` (a full table)}."""
        out: dict[str, Any] = {f"optim.{role}.lr": float(cfg["lr"]) for role, cfg in self.optim.items()}
        out["k_d"] = self.k_d
        out["objective"] = self.objective.to_dict()
        return out

    def settings_at(self, step: int) -> dict[str, Any]:
        """The changeable settings in force once the change log's entries up to ``step`` (included)
        have been applied, i.e. while step ``step + 1`` trains."""
        out = self.initial_settings()
        for change in self.changes:
            if change["step"] > step:
                break
            out.update(copy.deepcopy(change["set"]))
        return out

    def with_change(self, step: int, settings: Mapping[str, Any]) -> "Spec":
        """A copy of this spec with ``{"step": step, "set": settings}`` (resolved: see :func:`resolve_change`)
        added to the change log, after every entry of a step <= ``step`` (so it applies after them)."""
        changes = copy.deepcopy(self.changes)
        at = bisect.bisect_right([c["step"] for c in changes], step)
        changes.insert(at, {"step": int(step), "set": copy.deepcopy(dict(settings))})
        return dataclasses.replace(self, changes=changes)


# ----------------------------------------------------------------------------------------------
# Bounds on what a spec may hold: far beyond any real pipeline, far below what could hurt.
MAX_SPEC_BYTES = 1 << 20  # a spec file or text
MAX_DEPTH = 16  # nesting of tables and lists (a real spec needs 4)
MAX_PARSE_DEPTH = 100  # brackets in the text, counted before parsing (no parser recursion runs out of stack)
MAX_STRING = 10_000  # any string value (notes included)
MAX_NAME = 200  # the run's name, component names, keys
MAX_ITEMS = 10_000  # items in one list or table


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON spec file into a plain dict, with one clear message for every way it can be wrong.

    A path is a path: it must name an existing regular file ending in .toml or .json, of UTF-8 text.
    """
    text_path = str(path)
    if not text_path.strip():
        raise SpecError("", "no spec file given: pass the path of a .toml or .json spec (e.g. genex run spec.toml)")
    if "\x00" in text_path:
        raise SpecError("", f"spec file {shown(text_path)}: a path cannot hold a NUL character")
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError("", f"spec file {shown(text_path)} not found") from None
    except NotADirectoryError:
        raise SpecError("", f"spec file {shown(text_path)} not found (a part of the path is a file, not a folder)") from None
    except OSError as exc:
        raise SpecError("", f"spec file {shown(text_path)} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError("", f"spec file {shown(text_path)} is a directory; pass the path of a .toml or .json file in it")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError("", f"spec file {shown(text_path)} is not a regular file (a pipe, device or socket); pass a .toml or .json file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SpecError("", f"spec file {shown(text_path)} must end in .toml or .json (the ending says how to read it)")
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError("", f"spec file {shown(text_path)} is {info.st_size:,} bytes; a spec is at most {MAX_SPEC_BYTES:,}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError("", f"spec file {shown(text_path)} cannot be read: {exc.strerror or exc}") from None
    return parse_bytes(data, fmt=suffix[1:], source=str(path))


def parse_bytes(data: bytes, fmt: str = "toml", source: str = "spec") -> dict[str, Any]:
    """A spec from the bytes of a file (an upload, an archive member): UTF-8 (a BOM is fine) or a clear message."""
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError("", f"{source} is {len(data):,} bytes; a spec is at most {MAX_SPEC_BYTES:,}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) > 1 and (data[1:2] == b"\x00" or data[:1] == b"\x00"))
        hint = " (it looks like UTF-16)" if utf16 else ""
        raise SpecError("", f"{source} is not UTF-8 text{hint}: byte {exc.start} cannot be read; save it as UTF-8") from None
    return parse_text(text, fmt=fmt, source=source)


def parse_text(text: str, fmt: str = "toml", source: str = "spec") -> dict[str, Any]:
    """A spec from TOML or JSON text: syntax errors, duplicate keys and absurd nesting get one clear line."""
    if fmt not in ("toml", "json"):
        raise SpecError("", f"{source}: unknown format {fmt!r}; use toml or json")
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError("", f"{source} is {len(text):,} characters; a spec is at most {MAX_SPEC_BYTES:,}")
    depth = _bracket_depth(text, fmt)
    if depth > MAX_PARSE_DEPTH:
        raise SpecError("", f"{source} nests tables or lists {depth} deep; a spec nests at most {MAX_DEPTH} deep")
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates) if fmt == "json" else tomllib.loads(text)
    except _DuplicateKey as exc:
        raise SpecError("", f"{source} is not valid JSON: the key {shown(exc.key)} appears twice in one object") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError("", f"{source} is not valid {fmt.upper()}: {shown(str(exc), 300)[1:-1]}") from None
    except RecursionError:
        raise SpecError("", f"{source} nests tables or lists too deeply; a spec nests at most {MAX_DEPTH} deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise SpecError("", f"{source} is not valid {fmt.upper()}: {shown(str(exc), 300)[1:-1]}") from None
    if not isinstance(raw, dict):
        raise SpecError("", f"{source} must be a table of fields, got {type(raw).__name__}")
    check_shape(raw)
    return raw


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _bracket_depth(text: str, fmt: str) -> int:
    """How deep ``[``/``{`` nest outside strings and comments: a cheap guard before a recursive parser
    sees the text (generous: the exact limit is checked on the parsed value by :func:`check_shape`)."""
    depth = best = 0
    quote = ""
    escaped = comment = False
    for ch in text:
        if ch == "\n" and fmt == "toml":
            quote, escaped, comment = "", False, False
            continue
        if comment:
            continue
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch == '"' or (ch == "'" and fmt == "toml"):
            quote = ch
        elif ch == "#" and fmt == "toml":
            comment = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return best


def check_shape(raw: Any, where: str = "") -> None:
    """Refuse a spec that is nested too deeply or holds huge strings, lists or keys (any source: file, link, archive).

    Iterative, so no input can exhaust the stack; values' meaning is checked later by :func:`resolve`.
    """
    stack: list[tuple[Any, str, int]] = [(raw, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(path, f"nested more than {MAX_DEPTH} deep; a spec needs only a few levels")
        if isinstance(node, str):
            if len(node) > MAX_STRING:
                raise SpecError(path, f"a text of {len(node):,} characters; at most {MAX_STRING:,} are allowed")
        elif isinstance(node, Mapping):
            if len(node) > MAX_ITEMS:
                raise SpecError(path, f"a table of {len(node):,} fields; at most {MAX_ITEMS:,} are allowed")
            for key, value in node.items():
                if not isinstance(key, str) or len(key) > MAX_NAME:
                    raise SpecError(path, f"field name {shown(key)} is not a short text")
                stack.append((value, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(node, (list, tuple)):
            if len(node) > MAX_ITEMS:
                raise SpecError(path, f"a list of {len(node):,} items; at most {MAX_ITEMS:,} are allowed")
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


def resolve(raw: Mapping[str, Any], registry: Registry | None = None) -> Spec:
    """Validate a raw spec dict and fill every default; raise SpecError naming the bad field."""
    registry = registry or get_registry()
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a spec must be a table of fields, got {type(raw).__name__}")
    check_shape(raw)
    raw = dict(raw)
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(key, f"unknown field; valid fields: {choices_text(TOP_KEYS - {'provenance'})}" + did_you_mean(key, TOP_KEYS))
    provenance = raw.get("provenance") or {}
    if not isinstance(provenance, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in provenance.items()):
        raise SpecError("provenance", "expected a table of component -> plugin source (Generative Explorer writes it; "
                        f"delete the field and it is filled in again), got {shown(provenance)}")
    settings = resolve_params(SETTINGS, {k: raw[k] for k in raw if k in {p.name for p in SETTINGS}}, "")
    if len(settings["name"]) > MAX_NAME:
        raise SpecError("name", f"a name of {len(settings['name']):,} characters; at most {MAX_NAME} are allowed (put long text in notes)")
    comps: dict[str, ComponentSpec | None] = {}
    new_prov: dict[str, str] = {}
    for key, kind, default in SLOTS:
        value = raw.get(key, default)
        comp = _component(value, key, kind, registry, provenance)
        comps[key] = comp
        new_prov[key] = registry.get(kind, comp.name).source
    objective_cls = registry.get("objective", comps["objective"].name).cls
    if not getattr(objective_cls, "needs_discriminator", True):
        comps["discriminator"] = None
        new_prov.pop("discriminator")
    optim = _optim(raw.get("optim", {}), needs_d=comps["discriminator"] is not None)
    metrics = _metrics(raw.get("metrics", "auto"), registry, provenance)
    for m in metrics:
        new_prov[f"metric:{m.name}"] = registry.get("metric", m.name).source
    _check_pack(settings, comps)
    ema = _ema(raw.get("ema"))
    spec = Spec(settings=settings, optim=optim, metrics=metrics, provenance=new_prov, ema=ema, **comps)  # type: ignore[arg-type]
    if "changes" in raw:
        spec = _changes(raw["changes"], spec, registry)
    return spec


def _check_pack(settings: Mapping[str, Any], comps: Mapping[str, ComponentSpec | None]) -> None:
    """``pack`` needs a discriminator, and a batch that splits into whole packs."""
    pack, batch = int(settings["pack"]), int(settings["batch_size"])
    if pack == 1:
        return
    if comps["discriminator"] is None:
        objective = comps["objective"].name  # type: ignore[union-attr]
        raise SpecError("pack", f"pack = {pack} packs samples for the discriminator, and objective {objective!r} "
                        "trains none; set pack = 1 (or leave it out), or choose an objective with a discriminator")
    if batch % pack:
        lower, upper = batch - batch % pack, batch + pack - batch % pack
        choice = f"{lower:,} or {upper:,}" if lower >= 2 else f"{upper:,}"
        raise SpecError("batch_size", f"{batch:,} is not a multiple of pack = {pack}: the discriminator sees the batch "
                        f"as {batch:,} / {pack} packs of {pack} samples; choose a batch_size that is a multiple of "
                        f"{pack} (e.g. {choice}) or another pack")


def _ema(raw: Any) -> dict[str, Any] | None:
    """The ``ema`` table resolved: absent or false = off; true = the defaults; a table of decay and start."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return resolve_params(EMA, {}, "ema")
    if not isinstance(raw, Mapping):
        raise SpecError("ema", f"expected a table {{ decay = ..., start = ... }} ({_EMA_EXAMPLE}), true for the "
                        f"defaults, or false for none; got {shown(raw)}")
    resolved = resolve_params(EMA, raw, "ema")
    if not resolved["decay"] < 1.0:
        raise SpecError("ema.decay", f"{resolved['decay']} must be below 1 (1 would never move the average)")
    return resolved


_CHANGE_KEYS = ("step", "set")


def _changes(raw: Any, spec: Spec, registry: Registry) -> Spec:
    """The spec with its change log resolved: each entry checked (``changes[i].step``, ``changes[i].set.<key>``
    named in every message), sorted by step (entries of one step keep their order) and its values resolved
    against the settings in force where it applies."""
    example = 'e.g. changes = [{ step = 500, set = { "optim.generator.lr" = 2e-4, k_d = 2 } }]'
    if raw is None:
        return spec
    if not isinstance(raw, list):
        raise SpecError("changes", f"expected a list of tables {{ step = N, set = {{...}} }} ({example}), got {shown(raw)}")
    if len(raw) > MAX_CHANGES:
        raise SpecError("changes", f"a change log of {len(raw):,} entries; at most {MAX_CHANGES:,} are allowed")
    entries: list[tuple[int, int, Mapping[str, Any]]] = []
    for i, entry in enumerate(raw):
        where = f"changes[{i}]"
        if not isinstance(entry, Mapping):
            raise SpecError(where, f"expected a table {{ step = N, set = {{...}} }} ({example}), got {shown(entry)}")
        for key in entry:
            if key not in _CHANGE_KEYS:
                raise SpecError(f"{where}.{key}", "unknown field; a change has: step, set" + did_you_mean(key, _CHANGE_KEYS))
        for key in _CHANGE_KEYS:
            if key not in entry:
                raise SpecError(f"{where}.{key}", f"missing ({example})")
        step = change_step(entry["step"], spec.steps, f"{where}.step")
        entries.append((step, i, entry["set"]))
    entries.sort(key=lambda e: (e[0], e[1]))  # stable: one step's entries apply in the order written
    for step, i, values in entries:
        spec = spec.with_change(step, resolve_change(spec, values, step, registry, where=f"changes[{i}].set"))
    return spec


def change_step(value: Any, steps: int, where: str = "step") -> int:
    """A change's step: a whole number from 0 (before the first step) to ``steps`` (after the last)."""
    step = Param("step", "int", 0).validate(value, where)
    if step < 0:
        raise SpecError(where, f"{step} is before the start; a change applies at a step from 0 to the run's {steps:,} steps")
    if step > steps:
        raise SpecError(where, f"{step:,} is beyond the run's {steps:,} steps; a change applies at a step from 0 to {steps:,}")
    return step


def _flatten_change(values: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    """``set``'s keys as dotted names: ``{ optim = { generator = { lr = 1e-4 } } }`` (TOML's unquoted
    dotted keys) reads as ``"optim.generator.lr"``; the objective's table is a value, not flattened."""
    out: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = list(reversed(list(values.items())))
    while stack:
        key, value = stack.pop()
        if not isinstance(key, str):
            raise SpecError(where, f"a setting's name must be text, got {shown(key)}")
        if isinstance(value, Mapping) and key not in CHANGEABLE and not key.startswith("objective") and key.count(".") < 3:
            stack.extend(reversed([(f"{key}.{k}", v) for k, v in value.items()]))
        else:
            out.append((key, value))
    return out


def resolve_change(spec: Spec, values: Any, step: int, registry: Registry | None = None, where: str = "set") -> dict[str, Any]:
    """Check the settings of one change (``{"optim.generator.lr": 2e-4, "k_d": 2, "objective": "minimax"}``)
    against ``spec`` as it stands at ``step`` (its change log applied up to ``step``) and resolve them: lr a
    float, k_d an int, the objective a full ``{"name": ..., <params>}`` table. SpecError names the bad key.

    What can change is :data:`CHANGEABLE`. The objective is given as in the spec: a name, or a table with
    ``name`` and parameters (defaults filled in); a table without ``name`` (or ``"objective.<param>"``
    keys) changes parameters of the objective in force. The networks stay, so the new objective must need
    a discriminator exactly when the one in force does.
    """
    registry = registry or get_registry()
    if not isinstance(values, Mapping):
        raise SpecError(where, f"expected a table of settings to change, e.g. {{ \"optim.generator.lr\" = 2e-4, k_d = 2 }}; "
                        f"got {shown(values)}")
    in_force = spec.settings_at(step)
    out: dict[str, Any] = {}
    objective: dict[str, Any] | None = None  # the objective table as given (without name: params of the one in force)
    objective_params: dict[str, Any] = {}  # "objective.<param>" keys
    for key, value in _flatten_change(values, where):
        at = f"{where}.{key}"
        if key == "k_d":
            out[key] = _SETTING["k_d"].validate(value, at)
        elif key in ("optim.generator.lr", "optim.discriminator.lr"):
            role = key.split(".")[1]
            if role not in spec.optim:
                raise SpecError(at, f"this run has no discriminator (its objective {in_force['objective']['name']!r} "
                                "trains none), so there is no discriminator learning rate to change")
            out[key] = _OPTIMIZER["lr"].validate(value, at)
        elif key == "objective":
            if isinstance(value, str):
                objective = {"name": value}
            elif isinstance(value, Mapping):
                objective = dict(value)
            else:
                raise SpecError(at, f"expected an objective name or a table {{ name = ..., <params> }}, got {shown(value)}")
        elif key.startswith("objective.") and key.count(".") == 1:
            objective_params[key.split(".", 1)[1]] = value
        else:
            raise SpecError(at, f"cannot change mid-run; what can: {', '.join(CHANGEABLE)} "
                            "(fork the run to change anything else)" + did_you_mean(key, CHANGEABLE))
    if objective is not None or objective_params:
        current = in_force["objective"]
        table = dict(objective or {})
        if "name" not in table:  # parameters of the objective in force
            table = {**current, **table}
        table.update(objective_params)
        comp = _component(table, f"{where}.objective", "objective", registry, {})
        needs_d = bool(getattr(registry.get("objective", comp.name).cls, "needs_discriminator", True))
        if needs_d != spec.needs_discriminator:
            if spec.needs_discriminator:
                why = (f"it needs no discriminator, while this run's objective {current['name']!r} trains one",
                       "an objective that trains a discriminator")
            else:
                why = (f"it needs a discriminator, and this run has none (its objective {current['name']!r} trains none)",
                       "an objective that needs no discriminator")
            raise SpecError(f"{where}.objective", f"cannot switch to {comp.name!r} mid-run: {why[0]}; a change keeps the "
                            f"networks as they are, so switch to {why[1]}, or start a new run (or fork this one) "
                            f"with objective = {comp.name!r}")
        out["objective"] = comp.to_dict()
    if not out:
        raise SpecError(where, f"empty: name at least one setting to change ({', '.join(CHANGEABLE)})")
    return out


def _component(value: Any, key: str, kind: str, registry: Registry, provenance: Mapping[str, str]) -> ComponentSpec:
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, Mapping):
        params = dict(value)
        if "name" not in params:
            raise SpecError(f"{key}.name", f"missing: name the {kind}, e.g. {key} = {{ name = \"...\" }}; choose one of: {choices_text(registry.components[kind])}")
        name = params.pop("name")
        if not isinstance(name, str):
            raise SpecError(f"{key}.name", f"expected the {kind}'s name as text, got {shown(name)}; choose one of: {choices_text(registry.components[kind])}")
    else:
        raise SpecError(key, f"expected a {kind} name or a table with 'name', got {shown(value)}")
    prov_key = f"metric:{name}" if kind == "metric" else key
    if name not in registry.components[kind] and prov_key in provenance:
        raise SpecError(key, missing_plugin_message(kind, name, provenance[prov_key], registry))
    info = registry.get(kind, name, where=key)
    return ComponentSpec(name, resolve_params(info.cls.params, params, key))


def _optim(raw: Any, needs_d: bool) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise SpecError("optim", "expected a table with [optim.generator] and [optim.discriminator]")
    roles = ("generator", "discriminator")
    for key in raw:
        if key not in roles:
            raise SpecError(f"optim.{key}", f"unknown network; valid: {', '.join(roles)}" + did_you_mean(key, roles))
    out = {}
    for role in roles if needs_d else roles[:1]:
        section = raw.get(role, {})
        if not isinstance(section, Mapping):
            raise SpecError(f"optim.{role}", f"expected a table of optimiser settings, got {shown(section)}")
        resolved = resolve_params(OPTIMIZER, section, f"optim.{role}")
        if len(resolved["betas"]) != 2:
            raise SpecError(f"optim.{role}.betas", f"expected two values [beta1, beta2], got {resolved['betas']!r}")
        out[role] = resolved
    return out


def _metrics(raw: Any, registry: Registry, provenance: Mapping[str, str]) -> list[ComponentSpec]:
    if isinstance(raw, str) and raw == "auto":
        return [ComponentSpec(n, resolve_params(registry.get("metric", n).cls.params, {}, f"metrics.{n}")) for n in registry.names("metric")]
    if raw is None or (isinstance(raw, str) and raw == "none"):
        return []
    if not isinstance(raw, list):
        raise SpecError("metrics", f"expected \"auto\", \"none\" or a list of metric names, got {shown(raw)}")
    return [_component(item, f"metrics[{i}]", "metric", registry, provenance) for i, item in enumerate(raw)]


def missing_plugin_message(kind: str, name: str, source: str, registry: Registry) -> str:
    """What to do about a component a spec recorded (``source`` = 'plugin (dist version)') that is not here."""
    match = re.match(r"^(?P<plugin>\S+) \((?P<dist>\S+) (?P<version>[^)]*)\)$", source)
    plugin = match["plugin"] if match else source
    if plugin in registry.skipped:
        return f"{kind} {name!r} came from {source}, which is not loaded here ({registry.skipped[plugin]})"
    failed = [e for e in registry.errors if e.plugin == plugin or (match and e.dist == match["dist"])]
    if failed:
        return (f"{kind} {name!r} comes from {source}, which is installed but failed to load "
                f"({failed[0].message}); see `genex plugins --verbose`")
    hint = f"`pip install {match['dist']}=={match['version']}`" if match and match["version"] not in ("", "None", "?") else "install that plugin package"
    return f"{kind} {name!r} came from {source}, which is not installed here; {hint} and try again"


def parse_spec(source: str | Path | Mapping[str, Any], registry: Registry | None = None, **overrides: Any) -> Spec:
    """A spec from a file path, TOML text or a dict, with top-level overrides (``steps=100``).

    A ``Path``, or a ``str`` of one line, is a file path (never read as TOML text): a missing file is
    "not found", a folder "is a directory". TOML text is a ``str`` of more than one line.
    """
    if isinstance(source, Mapping):
        check_shape(source)
        raw = copy.deepcopy(dict(source))
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        raw = load_spec_file(source)
    else:
        raw = parse_text(str(source))
    apply_overrides(raw, overrides)
    return resolve(raw, registry)


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set top-level fields of a raw spec in place (None: left as it is). ``steps`` shortening a run
    drops the entries of its ``changes`` log that would come after the new end (``genex run PRESET
    --steps 200`` on a preset whose learning rate drops at step 2,500), rather than refusing them."""
    for key, value in overrides.items():
        if value is None:
            continue
        raw[key] = value
        changes = raw.get("changes")
        if key == "steps" and isinstance(value, int) and isinstance(changes, list):
            raw["changes"] = [c for c in changes if not (isinstance(c, dict) and isinstance(c.get("step"), int)
                                                          and not isinstance(c.get("step"), bool) and c["step"] > value)]
    return raw


# ----------------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A CLI value: a TOML literal when it parses (1e-3, true, [1, 2], "x"), else the plain string."""
    if len(text) > MAX_STRING or _bracket_depth(text, "toml") > MAX_DEPTH or "\n" in text:
        return text  # never a spec value; the spec check names it
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        return text


def set_path(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set a dotted field in a raw spec (``objective``, ``data.std``, ``optim.generator.lr``).

    Setting a component slot to a new name keeps no parameters from the old component; setting it
    to the name it already has keeps its parameters (so varying ``objective`` over ``mmd,minimax``
    on a preset that tunes ``mmd`` keeps the tuned ``mmd``); setting a parameter on a shorthand
    component (``data = "ring8"``) expands it to a table first.
    """
    parts = path.split(".")
    slot_keys = {s[0] for s in SLOTS}
    if parts[0] not in TOP_KEYS:
        raise SpecError(path, f"unknown field; valid fields: {choices_text(TOP_KEYS - {'provenance'})}" + did_you_mean(parts[0], TOP_KEYS))
    if len(parts) == 1:
        current = raw.get(path)
        if path in slot_keys and isinstance(value, str) and isinstance(current, dict) and current.get("name") == value:
            return raw
        raw[path] = value
        raw.pop("provenance", None)
        return raw
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if i == 0 and part in slot_keys:
            if child is None:
                child = {"name": dict((s[0], s[2]) for s in SLOTS)[part]}
            elif isinstance(child, str):
                child = {"name": child}
        elif child is None:
            child = {}
        if not isinstance(child, dict):
            raise SpecError(".".join(parts[: i + 1]), f"cannot set a field inside {child!r}")
        node[part] = child
        node = child
    node[parts[-1]] = value
    raw.pop("provenance", None)
    return raw


def diff_specs(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """The fields that differ between two spec dicts: {dotted path: (a value, b value)}."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b), key=str):
        if key == "provenance":
            continue
        va, vb = a.get(key), b.get(key)
        path = f"{prefix}{key}"
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.update(diff_specs(va, vb, path + "."))
        elif va != vb:
            out[path] = (va, vb)
    return out
