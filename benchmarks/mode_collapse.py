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
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from explorer.compare import expand_variants, train_variants
from explorer.device import configure_threads
from explorer.spec import load_spec_file

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="override the presets' steps")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "mode_collapse"))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--data", default=",".join(DATA), help="which of ring8, grid25")
    args = ap.parse_args()
    configure_threads()
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
