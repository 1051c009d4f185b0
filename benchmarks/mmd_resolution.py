"""Why moment matching stalls short of the GAN's sample quality on grid25: the loss cannot see the rest.

    python benchmarks/mmd_resolution.py RUN_FOLDER [--repeats 100] [--batches 512,2048]

``RUN_FOLDER`` is a finished ``grid25-mmd`` run (``genex run explorer/presets/grid25-mmd.toml --out
RUN_FOLDER``). With its final generator and the objective exactly as it trained (kernels, median
heuristic, estimator), this prints, for each batch size, the objective's MMD^2 estimate between

* two independent data batches: the estimator's noise floor (mean ~0, its spread is the noise), and
* a data batch and a batch of G's samples: what the loss sees of G's remaining error,

over ``--repeats`` draws, and their ratio: how many noise standard deviations G's error is at that
batch size. When it is about one or less at the training batch, a step's gradient on the remaining
error is mostly noise: training cannot sharpen the modes further, whatever the steps. It also prints
the run's final mode coverage (the `mode-coverage` metric on 2,500 samples) for reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from explorer.device import configure_threads, make_generator
from explorer.metrics import mode_statistics
from explorer.pipeline import Pipeline
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import resolve


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished grid25-mmd run folder")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--batches", default="", help="batch sizes, comma-separated (default: the run's, and 4x it)")
    args = ap.parse_args()
    configure_threads()
    store = RunStore(Path(args.run))
    spec = resolve(store.read_spec(), get_registry())
    p = Pipeline(spec, device="cpu")
    p.load_state_dict(store.load_checkpoint(map_location="cpu"), optimizers=False, rng=False)
    obj = p.objective
    if obj.name != "mmd":
        raise SystemExit(f"{args.run} trained {obj.name!r}, not mmd")
    gen = make_generator(p.device, 12345)
    centres, std = p.data.mixture_modes()
    fake = p.generate(p.latent.sample(2500, gen, p.device))
    s = mode_statistics(fake, centres, float(std), 3.0)
    print(f"{store.path.name}: step {p.step:,}; final G: {s.modes} modes, {100 * s.hq_fraction:.1f}% high quality, "
          f"reverse KL {s.reverse_kl:.3f}")
    print(f"objective as trained: {obj.config}")
    sizes = [int(b) for b in args.batches.split(",") if b.strip()] or [spec.batch_size, 4 * spec.batch_size]
    print("| batch | MMD² data vs data (noise floor) | MMD² data vs G | G's error in noise s.d. |")
    print("|---|---|---|---|")
    for n in sizes:
        floor, err = [], []
        for _ in range(args.repeats):
            x, x2 = p.data.sample(n, gen, p.device), p.data.sample(n, gen, p.device)
            g = p.generate(p.latent.sample(n, gen, p.device))
            floor.append(float(obj.estimate(x, x2, obj.sigmas(x, x2))))
            err.append(float(obj.estimate(x, g, obj.sigmas(x, g))))
        f, e = np.array(floor), np.array(err)
        snr = (e.mean() - f.mean()) / f.std(ddof=1)
        print(f"| {n:,} | {f.mean():.2e} ± {f.std(ddof=1):.1e} | {e.mean():.2e} ± {e.std(ddof=1):.1e} | {snr:.2f} |")


if __name__ == "__main__":
    main()
