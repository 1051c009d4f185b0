"""The mode-collapse benchmark of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018),
on our built-in presets, beside the published rows.

    python benchmarks/mode_collapse.py [--seeds 3] [--steps N] [--out benchmarks/mode_collapse] [--jobs 1]
                                       [--data ring8,grid25] [--objectives minimax,nonsaturating,mmd]

For each of ring8 and grid25 it trains each objective (minimax, nonsaturating, mmd) on several
seeds: on the objective's own preset ``<data>-<objective>.toml`` where the project ships one, and
otherwise on the data's GAN preset ``<data>-nonsaturating.toml`` with only the objective changed.
It reports modes captured, % high-quality samples and reverse KL on 2,500 samples of the final
generator (the `mode-coverage` metric), as mean ± standard error over the seeds, and writes
``table.md`` (the README's table) and each run's folder under ``--out``.

    python benchmarks/mode_collapse.py --presets grid25-nonsaturating,grid25-ema-pack --seeds 5
                                       [--vary pack=1,4] [--set steps=6000] [--out ...]

trains the named presets (with ``--set`` overrides, and the cartesian product of ``--vary`` lists) on
each seed, one run at a time, and evaluates every run's final checkpoint twice on the same 2,500 latent
codes: the raw generator (the one that trains) and, where the spec has ``ema``, its moving average
(Yazici et al. 2019). Rows give mean ± standard error over the seeds, the fewest modes any seed reached,
and the minutes per run: wall time and the process's CPU time (one torch thread: one core's minutes).
It writes ``presets.md`` and ``presets.json`` (every seed's figures) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from explorer.compare import expand_variants, parse_vary, train_variants
from explorer.device import configure_threads, make_generator, stream_seed
from explorer.pipeline import Pipeline
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import load_spec_file, parse_value, parse_spec, set_path

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "explorer" / "presets"
DATA = ("ring8", "grid25")
OBJECTIVES = ("minimax", "nonsaturating", "mmd")
PUBLISHED = """\
Published rows (their networks and budgets, not ours):

| source | method | 2-D ring: modes (max 8) / % HQ / reverse KL | 2-D grid: modes (max 25) / % HQ / reverse KL |
|---|---|---|---|
| VEEGAN Table 1 | GAN | 1 / 99.3 / – | 3.3 / 0.5 / – |
| VEEGAN Table 1 | ALI | 2.8 / 0.13 / – | 15.8 / 1.6 / – |
| VEEGAN Table 1 | Unrolled GAN | 7.6 / 35.6 / – | 23.6 / 16 / – |
| VEEGAN Table 1 | VEEGAN | 8 / 52.9 / – | 24.6 / 40 / – |
| PacGAN Table 1 | GAN | 6.3±0.5 / 98.2±0.2 / 0.45±0.09 | 17.3±0.8 / 94.8±0.7 / 0.70±0.07 |
| PacGAN Table 1 | PacGAN2 | 7.9±0.1 / 95.6±2.0 / 0.07±0.03 | 23.8±0.7 / 91.3±0.8 / 0.13±0.04 |
| PacGAN Table 1 | PacGAN4 | 7.8±0.1 / 95.9±1.4 / 0.07±0.02 | 24.8±0.2 / 93.6±0.6 / 0.04±0.01 |
"""


def mean_se(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float) * scale
    if not len(vals):
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f}±{vals.std(ddof=1) / math.sqrt(len(vals)):.{digits}f}"


def preset_for(data: str, objective: str) -> Path:
    """The objective's own preset for ``data`` if the project ships one, else the data's GAN preset."""
    own = PRESET_DIR / f"{data}-{objective}.toml"
    return own if own.exists() else PRESET_DIR / f"{data}-nonsaturating.toml"


def evaluate_run(folder: Path, n: int = 2500) -> dict[str, dict[str, float]]:
    """Mode coverage of a run's final checkpoint: ``{"raw": ..., "ema": ...}`` (``ema`` only when the spec
    averages G), both on the same ``n`` latent codes (the run's ``metrics`` stream)."""
    store = RunStore(folder)
    state = store.load_checkpoint()
    spec = parse_spec(state["spec"])
    pipe = Pipeline(spec, device="cpu")
    pipe.load_state_dict(state)
    metric = get_registry().create("metric", "mode-coverage", {})
    from explorer.components import MetricContext

    ctx = MetricContext(data=pipe.data, device=pipe.device)
    z = pipe.latent.sample(n, make_generator(pipe.device, stream_seed(spec.seed, "metrics")), pipe.device)
    out = {"raw": metric.compute(pipe.view_real, pipe.generate(z, raw=True), ctx)}
    if pipe.G_ema is not None:
        out["ema"] = metric.compute(pipe.view_real, pipe.generate(z), ctx)
    return {k: {m: float(v) for m, v in d.items()} for k, d in out.items()}


def presets_benchmark(args: argparse.Namespace) -> None:
    """Train named presets over seeds (one run at a time) and report raw and averaged G per variant."""
    out = Path(args.out)
    varies = [parse_vary(v) for v in args.vary]
    rows, record = [], []
    for name in [n for n in args.presets.split(",") if n]:
        path = Path(name) if name.endswith(".toml") else PRESET_DIR / f"{name}.toml"
        base = load_spec_file(path)
        for item in args.set:
            key, _, value = item.partition("=")
            set_path(base, key.strip(), parse_value(value.strip()))
        base["metrics"] = ["mode-coverage"]
        base["metric_every"] = 0
        base["snapshot_every"] = base.get("steps", 2000)
        variants = expand_variants(base, varies, seeds=args.seeds)
        groups: dict[str, list[dict]] = {}
        for i, v in enumerate(variants):
            t0, c0 = time.monotonic(), time.process_time()
            [res] = train_variants([v], out / path.stem / f"{i + 1:02d}", jobs=1, log=print)
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
            if res.status != "finished":
                print(f"{v.label}: {res.status} {res.error}")
                continue
            ev = evaluate_run(res.store.path)
            entry = {"preset": path.stem, "label": v.label, "changes": v.changes, "seed": v.seed,
                     "steps": v.spec.steps, "wall_s": wall, "cpu_s": cpu, **ev}
            print(json.dumps(entry))
            record.append(entry)
            key = ", ".join(f"{k}={val}" for k, val in v.changes.items() if k != "seed") or "–"
            groups.setdefault(key, []).append(entry)
        for key, entries in groups.items():
            for which in ("raw", "ema"):
                got = [e[which] for e in entries if which in e]
                if not got:
                    continue
                rows.append(
                    f"| {path.stem} | {key} | {'EMA' if which == 'ema' else 'raw'} | {len(got)} | {entries[0]['steps']} | "
                    f"{mean_se([g['modes'] for g in got], digits=1)} | {min(g['modes'] for g in got):.0f} | "
                    f"{mean_se([g['hq_fraction'] for g in got], 100, 1)} | {mean_se([g['reverse_kl'] for g in got], digits=3)} | "
                    f"{np.mean([e['wall_s'] for e in entries]) / 60:.1f} / {np.mean([e['cpu_s'] for e in entries]) / 60:.1f} |")
    table = (
        f"{args.seeds} seeds per row, mean ± standard error; 2,500 samples of the final generator (raw, and its "
        f"moving average where the spec has ema, on the same latent codes); minutes per run: wall / CPU "
        f"({torch.get_num_threads()} torch thread(s), one run at a time).\n\n"
        "| preset | varied | G | seeds | steps | modes | fewest | % HQ | reverse KL | minutes (wall / CPU) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "presets.md").write_text(table)
    (out / "presets.json").write_text(json.dumps(record, indent=1))
    print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="", help="train these presets (names in explorer/presets or .toml paths) instead")
    ap.add_argument("--vary", action="append", default=[], help="with --presets: FIELD=V1,V2 (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="with --presets: FIELD=VALUE override (repeatable)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="override the presets' steps")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "mode_collapse"))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--data", default=",".join(DATA), help="which of ring8, grid25")
    args = ap.parse_args()
    configure_threads()
    if args.presets:
        presets_benchmark(args)
        return
    out = Path(args.out)
    objectives = [o for o in args.objectives.split(",") if o]
    rows = []
    for data in [d for d in args.data.split(",") if d]:
        if data not in DATA:
            ap.error(f"--data: {data!r} is not one of {', '.join(DATA)}")
        variants = []
        for objective in objectives:
            preset = preset_for(data, objective)
            base = load_spec_file(preset)
            base["metrics"] = ["mode-coverage"]
            base["metric_every"] = args.steps or base["steps"]  # computed once, on the final generator
            for v in expand_variants(base, [("objective", [objective])], seeds=args.seeds, steps=args.steps):
                variants.append((preset.stem, v))
        results = train_variants([v for _, v in variants], out / data, jobs=args.jobs, log=print)
        by_label = {r.variant.label: r for r in results}
        for objective in objectives:
            mine = [(p, by_label[v.label]) for p, v in variants if v.changes["objective"] == objective and v.label in by_label]
            final = [r.final for _, r in mine]
            preset = mine[0][0] if mine else "–"
            rows.append(
                f"| {data} | {objective} | {preset} | {len(mine)} | {mine[0][1].variant.spec.steps if mine else '–'} | "
                f"{mean_se([f.get('modes') for f in final], digits=1)} | {mean_se([f.get('hq_fraction') for f in final], 100, 1)} | "
                f"{mean_se([f.get('reverse_kl') for f in final], digits=3)} | {np.mean([r.seconds for _, r in mine]) / 60:.1f} |"
            )
    table = (
        f"Ours: {args.seeds} seeds per row, mean ± standard error; 2,500 samples; HQ = within 3 std of the nearest mode; "
        f"minutes = wall time per run ({torch.get_num_threads()} torch thread(s), {args.jobs} run(s) at once).\n\n"
        "| data | objective | preset | seeds | steps | modes | % HQ | reverse KL | minutes |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n" + PUBLISHED
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
