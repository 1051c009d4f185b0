"""Seed ensembles: N seeds of a preset trained as one batched model vs one after another, in one run.

    python benchmarks/ensemble.py [--preset ring8-nonsaturating] [--seeds 8] [--steps N] [--threads T]

Trains the preset's seeds 0..N-1 twice, each into its own run folder as ``genex compare`` does
(``TrainerConfig(snapshot_hz=0)``: logs, metrics, saved snapshots and checkpoints included): first one
after another (``genex compare --seeds N``), then as one ensemble (``genex compare --seeds N
--vectorise``, :mod:`explorer.ensemble`). Prints the wall time of each, their ratio (the issue's
target: <= 0.6 on a CPU, <= 0.2 on a GPU), the steps per second, how far the ensemble's logged losses
are from the runs alone (floating-point rounding that the GAN's dynamics then amplify), and the final
mode coverage of both sets of seeds (they should agree as samples of the same distribution).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from explorer import ensemble
from explorer.device import configure_threads
from explorer.execute import run_foreground
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import load_spec_file, resolve
from explorer.training import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]


def losses(store: RunStore, key: str) -> np.ndarray:
    return np.array([r[key] for r in store.read_metrics() if key in r and r.get("kind") == "loss"], dtype=float)


def finals(stores: list[RunStore], keys: tuple[str, ...]) -> str:
    out = []
    for key in keys:
        vals = np.array([s.read_status().get("final_metrics", {}).get(key, np.nan) for s in stores], dtype=float)
        out.append(f"{key} {np.nanmean(vals):.3g} ± {np.nanstd(vals, ddof=1) / np.sqrt(len(vals)):.2g}")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ring8-nonsaturating")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, help="override the preset's steps")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: as genex compare sets them)")
    args = ap.parse_args()
    threads = args.threads or configure_threads()
    torch.set_num_threads(threads)
    path = Path(args.preset) if args.preset.endswith(".toml") else ROOT / "explorer" / "presets" / f"{args.preset}.toml"
    raw = load_spec_file(path)
    if args.steps:
        raw["steps"] = args.steps
    registry = get_registry()
    specs = [resolve({**raw, "seed": int(raw.get("seed", 0)) + i}, registry) for i in range(args.seeds)]
    steps = specs[0].steps
    config = TrainerConfig(snapshot_hz=0)
    tmp = Path(tempfile.mkdtemp(prefix="genex-ensemble-"))
    try:
        print(f"{args.preset}: {args.seeds} seeds x {steps:,} steps, batch {specs[0].batch_size}, "
              f"{threads} torch thread(s), device {specs[0].device}")
        t0 = time.perf_counter()
        alone = [run_foreground(s, out=tmp / f"alone-{s.seed}", registry=registry, config=config)[0] for s in specs]
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        stores, note = ensemble.train_seeds(specs, [tmp / f"ens-{s.seed}" for s in specs], registry=registry, config=config)
        t_ens = time.perf_counter() - t0
        if stores is None:
            raise SystemExit(f"this preset cannot be vectorised: {note}")
        total = args.seeds * steps
        print(f"one after another: {t_alone:8.1f} s  ({total / t_alone:6.1f} steps/s over all seeds)")
        print(f"vectorised:        {t_ens:8.1f} s  ({total / t_ens:6.1f} steps/s over all seeds)")
        print(f"ratio vectorised / one after another: {t_ens / t_alone:.2f}")
        for key in ("g_loss", "d_loss"):
            diffs = []
            for a, b in zip(stores, alone):
                x, y = losses(a, key)[:50], losses(b, key)[:50]
                diffs.append(np.abs(x - y) / np.maximum(np.abs(y), 1e-12))
            first = max(float(d[0]) for d in diffs)
            worst = max(float(d.max()) for d in diffs)
            print(f"{key}: first logged value max rel. diff {first:.1e}; first 50 logged values {worst:.1e}")
        keys = ("modes", "hq_fraction", "reverse_kl")
        print(f"final, one after another: {finals(alone, keys)}")
        print(f"final, vectorised:        {finals(stores, keys)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
