"""Seed ensembles: N seeds of a preset trained as one batched model vs one after another, in one run.

    python benchmarks/ensemble.py [--preset ring8-nonsaturating] [--seeds 8] [--steps N] [--threads T]

Trains the preset's seeds 0..N-1 twice through ``explorer.compare.train_variants``, exactly as
``genex compare`` does (each into its own run folder; logs, metrics, saved snapshots and checkpoints
included), with the torch threads the command sets (one per run on a 2-core machine; the ensemble's
batched step may use every core, measured against one thread as it trains; ``--threads T`` sets
``GENEX_TORCH_THREADS``, fixing both): first one after another (``genex compare --seeds N``), then as
one ensemble (``genex compare --seeds N --vectorise``). Prints the wall time of each, their ratio (the
issue's target: <= 0.6 on a CPU, <= 0.2 on a GPU), the steps per second, how far the ensemble's
logged losses are from the runs alone (floating-point rounding that the GAN's dynamics then amplify),
and the final mode coverage of both sets of seeds (they should agree as samples of one distribution).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from explorer.compare import expand_variants, train_variants
from explorer.device import configure_threads
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import load_spec_file

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
    if args.threads:
        os.environ["GENEX_TORCH_THREADS"] = str(args.threads)
    threads = configure_threads()  # what `genex compare` does first
    path = Path(args.preset) if args.preset.endswith(".toml") else ROOT / "explorer" / "presets" / f"{args.preset}.toml"
    raw = load_spec_file(path)
    registry = get_registry()
    variants = expand_variants(raw, [], args.seeds, registry, steps=args.steps)
    steps = variants[0].spec.steps
    tmp = Path(tempfile.mkdtemp(prefix="genex-ensemble-"))
    try:
        print(f"{args.preset}: {args.seeds} seeds x {steps:,} steps, batch {variants[0].spec.batch_size}, "
              f"{threads} torch thread(s), {os.cpu_count()} cores")
        t0 = time.perf_counter()
        alone = [r.store for r in train_variants(variants, tmp / "alone", registry=registry)]
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = train_variants(variants, tmp / "ens", registry=registry, vectorise=True,
                                 log=lambda line: print(line) if "thread" in line else None)
        t_ens = time.perf_counter() - t0
        if not all(r.vectorised for r in results):
            raise SystemExit(f"this preset cannot be vectorised: {results[0].note}")
        stores = [r.store for r in results]
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
