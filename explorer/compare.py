"""Comparisons: variants of one spec trained on the same data and noise, summarised side by side.

Comparing is how one learns what an objective does: the same seed gives the same data stream, the
same noise stream and the same initial weights (see explorer.pipeline), so the only difference
between two runs is the field that was varied. ``genex compare`` trains the cartesian product of
the ``--vary`` lists (times ``--seeds``) and writes, into its output folder::

    summary.csv / summary.md      one row per run: the varied fields, status, final losses and metrics
    summary_mean.csv              for --seeds > 1: mean and standard error per variant (also in summary.md)
    compare.png                   final samples of each variant side by side, loss curves below
    compare.json                  the base spec, the variants and where each run lives
    runs/<run folder>/            each run's own folder (spec, metrics, snapshots, checkpoint)

The same functions feed the Compare page (explorer/ui/compare_page.py); the command line itself is
in explorer.cli, reading saved runs in explorer.runs.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from explorer.errors import ExplorerError, SpecError, one_line
from explorer.records import LOSS, record_kind
from explorer.registry import Registry, get_registry
from explorer.runs import RunStore, atomic_write_bytes, atomic_write_json
from explorer.spec import Spec, apply_overrides, diff_specs, parse_value, resolve, set_path

NOT_SERIES = {"step", "time", "steps_per_s"}
# Metric keys where larger is better (everything else: distances, divergences, losses, smaller is better).
MAX_RUNS = 64


@dataclass
class Variant:
    """One run of a comparison: the fields it changes, its seed and its resolved spec."""

    label: str
    changes: dict[str, Any]
    seed: int
    raw: dict[str, Any]
    spec: Spec


@dataclass
class RunResult:
    """A trained (or failed) variant: where it lives and what it reached."""

    variant: Variant
    store: RunStore
    status: str
    step: int
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    #: with --vectorise: how many seeds trained together in its ensemble (0: it trained alone), or why
    #: its seeds could not be batched
    vectorised: int = 0
    note: str | None = None


# -- building the variants ---------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """Split ``a,b,[1, 2],"x,y"`` on the commas outside brackets and quotes."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v != ""]


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """``"optim.generator.lr=1e-3,1e-4"`` -> ``("optim.generator.lr", [0.001, 0.0001])``."""
    path, sep, values = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError("--vary", f"expected FIELD=VALUE1,VALUE2 (e.g. objective=minimax,nonsaturating), got {text!r}")
    items = [parse_value(v) for v in split_values(values)]
    if not items:
        raise SpecError(path, "give at least one value after '='")
    return path, items


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return str(value.get("name", value))
    return str(value)


def variant_label(changes: Mapping[str, Any], seed: int | None = None) -> str:
    """A short human label: ``objective=mmd lr=0.001 seed=1`` (the last part of each dotted field)."""
    parts = [f"{path.split('.')[-1] if path.count('.') >= 2 else path}={_fmt(v)}" for path, v in changes.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    return " ".join(parts) or "base"


def expand_variants(base: Mapping[str, Any], varies: Sequence[tuple[str, Sequence[Any]]], seeds: int | Sequence[int] = 1,
                    registry: Registry | None = None, **overrides: Any) -> list[Variant]:
    """The cartesian product of the varied values, times the seeds; every spec resolved up front.

    ``seeds`` is a count (the base seed, base seed + 1, ...) or an explicit list. A variant whose spec
    does not resolve raises SpecError naming the variant, before anything trains.
    """
    registry = registry or get_registry()
    base_raw = copy.deepcopy(dict(base))
    base_raw.pop("provenance", None)
    apply_overrides(base_raw, overrides)
    base_seed = int(base_raw.get("seed", 0))
    seed_list = [base_seed + i for i in range(int(seeds))] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise SpecError("--seeds", "give at least one seed")
    paths = [p for p, _ in varies]
    if len(set(paths)) != len(paths):
        raise SpecError("--vary", "each field may be varied once; put all its values in one --vary")
    if "seed" in paths and len(seed_list) > 1:
        raise SpecError("--vary", "seed is varied and --seeds asks for several seeds per variant; use one of them "
                                  "(--seeds N trains the spec's seed, +1, ...)")
    combos = list(itertools.product(*[list(v) for _, v in varies])) or [()]
    if len(combos) * len(seed_list) > MAX_RUNS:
        raise SpecError("--vary", f"{len(combos) * len(seed_list)} runs asked for; at most {MAX_RUNS} in one comparison")
    out = []
    for combo in combos:
        changes = dict(zip(paths, combo))
        for seed in seed_list:
            raw = copy.deepcopy(base_raw)
            raw["seed"] = seed
            for path, value in changes.items():  # a varied seed is the variant's own
                set_path(raw, path, value)
            label = variant_label(changes, seed if len(seed_list) > 1 else None)
            try:
                spec = resolve(raw, registry)
            except SpecError as exc:
                raise SpecError(exc.field, f"{exc.message} (in variant {one_line(label)[:200]})") from None
            out.append(Variant(label, changes, spec.seed, raw, spec))
    return out


# -- reading results -----------------------------------------------------------------------------------
def series_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every plottable series in a run's records (losses and metrics; not step, time or data_* stats)."""
    keys: dict[str, None] = {}
    for rec in records:
        for k, v in rec.items():
            if k not in NOT_SERIES and not k.startswith("data_") and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def _metric_classes(spec: Mapping[str, Any], registry: Registry | None) -> list[type]:
    """The installed classes of the metrics a spec asks for (those not installed here are left out)."""
    registry = registry or get_registry()
    out = []
    for item in spec.get("metrics") or []:
        name = item.get("name") if isinstance(item, Mapping) else item
        info = registry.components["metric"].get(name) if isinstance(name, str) else None
        if info is not None:
            out.append(info.cls)
    return out


def metric_directions(spec: Mapping[str, Any], registry: Registry | None = None) -> dict[str, str | None]:
    """Which way is better for each key the spec's metrics log, as each metric declares it
    (``Metric.directions``); metrics not installed here declare nothing (their keys get no "best")."""
    out: dict[str, str | None] = {}
    for cls in _metric_classes(spec, registry):
        out.update(getattr(cls, "directions", {}) or {})
    return out


def metric_log_keys(spec: Mapping[str, Any], registry: Registry | None = None) -> frozenset[str]:
    """The keys the spec's metrics declare as spanning orders of magnitude (``Metric.log_keys``)."""
    return frozenset(k for cls in _metric_classes(spec, registry) for k in (getattr(cls, "log_keys", ()) or ()))


def final_and_best(records: Sequence[Mapping[str, Any]],
                   directions: Mapping[str, str | None] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """The last value of every series, and the best value of every metric key whose direction is
    declared in ``directions`` (``higher`` or ``lower``; see :func:`metric_directions`). Losses and
    undeclared keys have no "best": nothing is guessed from a key's name."""
    directions = directions or {}
    final: dict[str, float] = {}
    best: dict[str, float] = {}
    for rec in records:
        is_loss = record_kind(rec) == LOSS
        for k in series_keys([rec]):
            v = float(rec[k])
            final[k] = v
            way = directions.get(k)
            if is_loss or way not in ("higher", "lower") or not math.isfinite(v):
                continue
            if k not in best or (v > best[k] if way == "higher" else v < best[k]):
                best[k] = v
    return final, best


def spec_diff_rows(specs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fields that differ among several specs: one row per field, one column per run."""
    labels = list(specs)
    if len(labels) < 2:
        return []
    first = specs[labels[0]]
    fields: dict[str, None] = {}
    for label in labels[1:]:
        fields.update(dict.fromkeys(diff_specs(first, specs[label])))
    rows = []
    for path in fields:
        row: dict[str, Any] = {"field": path}
        for label in labels:
            row[label] = _fmt_cell(get_path(specs[label], path))
        rows.append(row)
    return rows


def get_path(d: Mapping[str, Any], path: str) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _fmt_cell(v: Any) -> str:
    return "—" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else _fmt(v))


def _label_part(field: str, raw: Any, shown: Any) -> str:
    """``objective=mmd`` for ``objective.name`` (as ``--vary`` says it), ``lr=0.001`` for
    ``optim.generator.lr``, ``2 changes`` for a change log (its size, not its JSON)."""
    if field == "changes":
        n = len(raw) if isinstance(raw, list) else 0
        return f"{n} change{'s' if n != 1 else ''}"
    if field.endswith(".name"):
        field = field[: -len(".name")]
    elif field.count(".") >= 2:
        field = field.split(".")[-1]
    return f"{field}={shown}"


def labels_for_specs(specs: Mapping[str, Mapping[str, Any]], max_fields: int = 3) -> dict[str, str]:
    """Short labels for runs picked from the history: the fields in which their specs differ
    (``objective=mmd lr=0.0001``); the run id where that does not tell them apart."""
    rows = [r for r in spec_diff_rows(specs) if r["field"] not in ("name", "notes")]
    labels = {}
    for key in specs:
        parts = [_label_part(r["field"], get_path(specs[key], r["field"]), r[key]) for r in rows[:max_fields]]
        labels[key] = " ".join(parts) or key
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (v if counts[v] == 1 else f"{v} ({k})") for k, v in labels.items()}


def result_of(variant: Variant, store: RunStore, seconds: float = 0.0) -> RunResult:
    st = store.read_status()
    final, best = final_and_best(store.read_metrics(), metric_directions(store.read_spec()))
    return RunResult(variant, store, st.get("status", "unknown"), int(st.get("step", 0) or 0), final, best, st.get("error"), seconds)


# -- tables --------------------------------------------------------------------------------------------
def summary_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per run: label, the varied fields, seed, status, step, final values of every series."""
    varied = list(dict.fromkeys(k for r in results for k in r.variant.changes))
    keys = list(dict.fromkeys(k for r in results for k in r.final))
    rows = []
    for r in results:
        row: dict[str, Any] = {"run": r.variant.label}
        row.update({k: _fmt_cell(r.variant.changes.get(k)) for k in varied})
        row.update(seed=r.variant.seed, status=r.status, step=r.step)
        row.update({k: r.final.get(k) for k in keys})
        row["folder"] = r.store.path.name
        rows.append(row)
    return rows


def mean_se_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Per variant (same changes, any seed): n, and mean and standard error (s / sqrt(n)) of each final value."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(variant_label(r.variant.changes), []).append(r)
    keys = list(dict.fromkeys(k for r in results for k in r.final))
    rows = []
    for label, members in groups.items():
        row: dict[str, Any] = {"variant": label, "n": len(members)}
        for k in keys:
            vals = np.array([m.final[k] for m in members if k in m.final and math.isfinite(m.final[k])], dtype=float)
            row[f"{k}_mean"] = float(vals.mean()) if len(vals) else None
            row[f"{k}_se"] = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None
        rows.append(row)
    return rows


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_num(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def mean_se_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = [k[: -len("_mean")] for k in dict.fromkeys(c for r in rows for c in r) if k.endswith("_mean")]
    table = []
    for r in rows:
        out: dict[str, Any] = {"variant": r["variant"], "n": r["n"]}
        for k in keys:
            m, se = r.get(f"{k}_mean"), r.get(f"{k}_se")
            out[k] = "" if m is None else (f"{m:.4g} ± {se:.2g}" if se is not None else f"{m:.4g}")
        table.append(out)
    return to_markdown(table, ["variant", "n", *keys])


# -- the headless comparison -------------------------------------------------------------------------
def picture(results: Sequence[RunResult], series: Sequence[str] = ("g_loss", "d_loss")) -> bytes:
    """Final samples of each variant (its first seed) side by side, the chosen curves below."""
    from explorer.render import side_by_side_png

    shown, seen = [], set()
    for r in results:
        key = variant_label(r.variant.changes)
        if key not in seen:
            seen.add(key)
            shown.append(r)
    shown = shown[:12]
    snaps, titles, records = [], [], []
    for r in shown:
        snap = r.store.load_snapshot()
        if snap is not None:
            snaps.append(snap)
            titles.append(variant_label(r.variant.changes))
            records.append(r.store.read_metrics())
    curves: dict[str, list[tuple[list[int], list[float]]]] = {}
    for key in series:
        lines = []
        for recs in records:
            pts = [(int(x["step"]), float(x[key])) for x in recs if key in x]
            lines.append(([p[0] for p in pts], [p[1] for p in pts]))
        if any(steps for steps, _ in lines):
            curves[key] = lines
    if not snaps:
        raise ExplorerError("no run saved a snapshot; nothing to draw")
    return side_by_side_png(snaps, titles, curves or None)


def train_variants(variants: Sequence[Variant], out: Path, jobs: int = 1, device: str | None = None,
                   registry: Registry | None = None, log: Any = None, vectorise: bool = False) -> list[RunResult]:
    """Train every variant into ``out/runs/<nn>-<label>``, ``jobs`` at a time; a failed run does not stop the rest.

    ``vectorise``: the seeds of each variant train as one batched model (:mod:`explorer.ensemble`), one
    variant after another, each with every core to try (:func:`~explorer.device.spare_threads`); a
    variant whose pipeline cannot be batched trains its seeds separately, with the reason in its
    results' ``note``.
    """
    from explorer.execute import run_foreground
    from explorer.training import TrainerConfig

    (out / "runs").mkdir(parents=True, exist_ok=True)
    results: list[RunResult | None] = [None] * len(variants)
    lock = threading.Lock()
    done = [0]
    config = TrainerConfig(snapshot_hz=0)

    def folder(i: int) -> Path:
        return out / "runs" / f"{i + 1:02d}-{_slug(variants[i].label)}"

    def report(i: int, res: RunResult) -> None:
        results[i] = res
        with lock:
            done[0] += 1
            if log:
                err = f" ({res.error})" if res.error else ""
                log(f"[{done[0]}/{len(variants)}] {variants[i].label}: {res.status} at step {res.step} in {res.seconds:.1f} s{err}")

    def one(i: int, note: str | None = None) -> None:
        v = variants[i]
        t0 = time.monotonic()
        store, _ = run_foreground(v.spec, out=folder(i), registry=registry, config=config)
        res = result_of(v, store, time.monotonic() - t0)
        res.note = note
        report(i, res)

    alone = list(range(len(variants)))
    notes: dict[int, str] = {}
    if vectorise:
        from explorer import ensemble
        from explorer.device import spare_threads

        groups: dict[str, list[int]] = {}
        for i, v in enumerate(variants):
            groups.setdefault(variant_label(v.changes), []).append(i)
        for label, members in groups.items():
            if len(members) < 2:
                continue
            t0 = time.monotonic()
            try:
                stores, reason = ensemble.train_seeds([variants[i].spec for i in members], [folder(i) for i in members],
                                                      registry=registry, config=config, threads=spare_threads(),
                                                      log=(lambda m, label=label: log(f"{label}: {m}")) if log else None)
            except ExplorerError as exc:  # the spec cannot be built: the runs alone say so, each in its folder
                stores, reason = None, str(exc)
            if stores is None:
                if log:
                    log(f"{label}: its {len(members)} seeds train one after another: {reason}")
                notes.update({i: f"not vectorised: {reason}" for i in members})
                continue
            seconds = time.monotonic() - t0
            if log:
                log(f"{label}: {len(members)} seeds trained as one batched model in {seconds:.1f} s")
            for i, store in zip(members, stores):
                res = result_of(variants[i], store, seconds)
                res.vectorised = len(members)
                report(i, res)
                alone.remove(i)
    if jobs <= 1:
        for i in alone:
            one(i, notes.get(i))
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda i: one(i, notes.get(i)), alone))
    return [r for r in results if r is not None]


def vectorise_lines(results: Sequence[RunResult]) -> list[str]:
    """summary.md's account of ``--vectorise``: which variants trained as one batched model, which could not, why."""
    lines, seen = [], set()
    for r in results:
        label = variant_label(r.variant.changes)
        if label in seen or not (r.vectorised or r.note):
            continue
        seen.add(label)
        if r.vectorised:
            lines.append(f"- {label}: {r.vectorised} seeds trained as one batched model ({r.seconds:.1f} s in all)")
        else:
            lines.append(f"- {label}: seeds trained one after another; {r.note}")
    return lines


def write_outputs(out: Path, base: Mapping[str, Any], varies: Sequence[tuple[str, Sequence[Any]]], results: Sequence[RunResult]) -> None:
    """summary.csv, summary.md (and summary_mean.csv), compare.png and compare.json in ``out``."""
    rows = summary_rows(results)
    atomic_write_bytes(out / "summary.csv", to_csv(rows).encode())
    md = [f"# Comparison: {base.get('name') or 'spec'}", "",
          "Varied: " + (", ".join(f"`{p}` = {', '.join(_fmt(v) for v in vals)}" for p, vals in varies) or "nothing"), "",
          f"Seeds: {', '.join(str(s) for s in dict.fromkeys(r.variant.seed for r in results))}", "",
          "## Runs (final values)", "", to_markdown([{k: v for k, v in r.items()} for r in rows])]
    if len({r.variant.seed for r in results}) > 1:
        means = mean_se_rows(results)
        atomic_write_bytes(out / "summary_mean.csv", to_csv(means).encode())
        md += ["## Mean ± standard error over seeds", "", mean_se_markdown(means)]
    if vectorised := vectorise_lines(results):
        md += ["## Seed ensembles (--vectorise)", "", *vectorised, ""]
    try:
        atomic_write_bytes(out / "compare.png", picture(results))
        md += ["![samples and curves](compare.png)", ""]
    except ExplorerError as exc:
        md += [f"(no picture: {exc})", ""]
    atomic_write_bytes(out / "summary.md", "\n".join(md).encode())
    manifest = {
        "format": 1, "created": time.time(), "base": dict(base),
        "vary": [{"field": p, "values": list(v)} for p, v in varies],
        "runs": [{"label": r.variant.label, "changes": r.variant.changes, "seed": r.variant.seed, "folder": str(r.store.path.relative_to(out)),
                  "status": r.status, "step": r.step, "final": r.final, "best": r.best,
                  **({"vectorised": r.vectorised} if r.vectorised else {}), **({"note": r.note} if r.note else {})}
                 for r in results],
    }
    atomic_write_json(out / "compare.json", manifest)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"
