"""The mmd objective at scale: steps/s of a plain hand-written MMD loop, of the engine's exact
estimator and of its linear-time options (random Fourier features, Gretton's linear statistic), in
one process, on the same networks, data and device, at several batch sizes.

    python benchmarks/mmd.py [--batches 256,1024,4096] [--seconds 4] [--features 1024] [--device auto] [--threads N]

Workload (issue 17): ring8, an MLP generator of 3 x 128, four RBF bandwidths (multiples of the median
heuristic), unbiased MMD^2, Adam. Each configuration is first timed for a couple of steps, then run
for about ``--seconds``, timed from the end of its first step; for each batch size the naive loop
and the engine's estimators run back to back, so that a drift in the machine's load hits them
alike. Prints steps/s and the ratios to the naive loop, and first the two ways of computing the
pairwise squared distances (timed alone).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from explorer.pipeline import Pipeline
from explorer.spec import parse_spec
from explorer.training import Trainer, TrainerConfig

BANDWIDTHS = [0.25, 0.5, 1.0, 2.0]
SPEC = {
    "data": "ring8", "objective": {"name": "mmd", "bandwidths": BANDWIDTHS}, "log_every": 50,
    "generator": {"name": "mlp", "depth": 3, "width": 128}, "metrics": "none",
    "snapshot_every": 10_000_000, "checkpoint_every": 0, "metric_every": 0,
}
METHODS = ("exact", "rff", "linear")


def spec_for(batch: int, steps: int, device: str, method: str = "exact", features: int = 1024):
    objective = {**SPEC["objective"], "method": method, "features": features}
    return parse_spec({**SPEC, "objective": objective, "batch_size": batch, "steps": steps, "device": device})


def engine(batch: int, steps: int, device: str, method: str, features: int) -> float:
    """Steps/s of the Trainer, timed from the end of its first step (after the step-0 snapshot that a
    run takes once) to the end of its last."""
    spec = spec_for(batch, steps + 1, device, method, features)
    trainer = Trainer(Pipeline(spec), config=TrainerConfig(snapshot_hz=0))
    marks: list[float] = []

    def mark(t: Trainer) -> None:
        if t.p.step in (1, steps + 1):
            _sync(t.p.device)
            marks.append(time.perf_counter())

    trainer.add_callback("step_end", mark)
    trainer.run()
    return steps / (marks[1] - marks[0])


def naive_mmd2(x: torch.Tensor, y: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The textbook GMMN loss: three full distance matrices, one full kernel matrix per bandwidth."""
    xx, yy, xy = x @ x.T, y @ y.T, x @ y.T
    rx, ry = xx.diag(), yy.diag()
    dxx = rx[:, None] + rx[None, :] - 2 * xx
    dyy = ry[:, None] + ry[None, :] - 2 * yy
    dxy = rx[:, None] + ry[None, :] - 2 * xy
    kxx = kyy = kxy = 0
    for s in sigmas:
        kxx = kxx + torch.exp(-dxx / (2 * s * s))
        kyy = kyy + torch.exp(-dyy / (2 * s * s))
        kxy = kxy + torch.exp(-dxy / (2 * s * s))
    n, m = x.shape[0], y.shape[0]
    return ((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
            - 2 * kxy.mean())


def naive(batch: int, steps: int, device: str, log_every: int = 50) -> float:
    """The same step written out by hand: sample, G(z), median heuristic, naive MMD^2, Adam."""
    p = Pipeline(spec_for(batch, steps, device))
    G, opt, data, latent, dev = p.G, p.opt_g, p.data, p.latent, p.device
    listed = torch.tensor(BANDWIDTHS, device=dev)
    g_sum = torch.zeros((), device=dev)
    t0 = 0.0
    for step in range(0, steps + 1):  # timed from the end of step 0, as the engine from its first
        real = data.sample(batch, p.data_gen, dev)
        fake = G(latent.sample(batch, p.noise_gen, dev))
        with torch.no_grad():  # median heuristic on 128 rows a side, as the objective does
            z = torch.cat([real[:128], fake[:128]])
            d = torch.cdist(z, z).square()
            off = d[~torch.eye(len(z), dtype=torch.bool, device=dev)]
            sigmas = listed * (off.median() / 2).sqrt()
        loss = naive_mmd2(real, fake, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        g_sum += loss.detach()
        if step % log_every == 0:
            _ = (g_sum / log_every).item()
            g_sum.zero_()
        if step == 0:
            _sync(dev)
            t0 = time.perf_counter()
    _sync(dev)
    return steps / (time.perf_counter() - t0)


def timed(fn, seconds: float, pilot: int = 2) -> tuple[float, int]:
    """Run ``fn(steps)`` for a couple of steps to estimate its rate, then for about ``seconds``."""
    rate = fn(pilot)
    steps = max(3, min(5000, int(rate * seconds)))
    return fn(steps), steps


def distance_forms(batches: list[int], device: torch.device) -> None:
    """The n x n squared distances by the matrix-product form (what kernel_sum uses) and by cdist."""
    print("pairwise squared distances, ms per n x n matrix (2-D points):")
    for n in batches:
        x, y = torch.randn(n, 2, device=device), torch.randn(n, 2, device=device)
        xx, yy = (x * x).sum(1), (y * y).sum(1)
        forms = {
            "addmm  ||x||^2 + ||y||^2 - 2 x.y": lambda: torch.addmm(yy[None, :], x, y.T, alpha=-2.0).add_(xx[:, None]).clamp_min_(0),
            "cdist(x, y)^2": lambda: torch.cdist(x, y).square_(),
        }
        cells = []
        for name, f in forms.items():
            reps = max(2, int(2e7 // (n * n)))
            f()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            _sync(device)
            cells.append(f"{name}: {(time.perf_counter() - t0) / reps * 1e3:7.2f}")
        print(f"  n = {n:5d}   " + "   ".join(cells))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--seconds", type=float, default=4.0, help="about how long each configuration runs")
    ap.add_argument("--features", type=int, default=1024, help="random Fourier features for the rff method")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",") if b]
    methods = [m for m in args.methods.split(",") if m]
    device = Pipeline(spec_for(8, 1, args.device)).device
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, load average at start: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, ~{args.seconds:g} s per configuration")
    print("workload: ring8, MLP 3 x 128 generator, 4 RBF bandwidths x median heuristic, unbiased MMD^2, "
          f"rff with {args.features} features")
    distance_forms(batches, device)
    engine(64, 20, args.device, "exact", args.features)  # warm-up
    rows = []
    for b in batches:
        rate, steps = timed(lambda s: naive(b, s, args.device), args.seconds, pilot=1 if b > 2048 else 2)
        row = {"naive": (rate, steps)}
        for m in methods:
            row[m] = timed(lambda s: engine(b, s, args.device, m, args.features), args.seconds,
                           pilot=1 if b > 2048 and m == "exact" else 2)
        rows.append((b, row))
        print(f"batch {b:5d}: " + "   ".join(f"{k} {r:8.2f} steps/s ({s} steps)" for k, (r, s) in row.items()), flush=True)
    print()
    head = "| batch | naive loop | " + " | ".join(f"engine {m}" for m in methods) + " | " + \
        " | ".join(f"{m} / naive" for m in methods) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for b, row in rows:
        base = row["naive"][0]
        print(f"| {b} | {base:.2f} | " + " | ".join(f"{row[m][0]:.2f}" for m in methods) + " | "
              + " | ".join(f"{row[m][0] / base:.1f}x" for m in methods) + " |")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nsteps/s; load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
