"""What one redraw of the Train page's live part costs in our code, without Streamlit: the 2-D view
(512 real and 512 generated points, the critic raster, the manifold, the arrows), the loss curves of
a 5,000-step run and the metrics grid, each built as the page builds them (spec from the cache, data
as Arrow tables).

    python benchmarks/live_redraw.py [--repeats 50]

Prints milliseconds per redraw for each part and their sum.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from explorer.snapshots import Snapshot
from explorer.ui import charts, views


def ring_snapshot(n: int = 512, seed: int = 0) -> Snapshot:
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, n) * np.pi / 4
    real = np.c_[np.cos(angles), np.sin(angles)] + rng.normal(0, 0.02, (n, 2))
    return Snapshot(1000, "2d", real, rng.normal(0, 0.5, (n, 2)), {
        "grid_x": np.linspace(-2, 2, 40), "grid_y": np.linspace(-2, 2, 40), "critic": rng.random((40, 40)),
        "manifold": rng.normal(size=(15, 15, 2)), "arrows": rng.normal(size=(n, 2))})


def per_call_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # the first call builds and caches the spec
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    snap = ring_snapshot()
    opts = views.ViewOptions(domain=views.domain_2d(snap))
    losses = [{"step": s, "time": s / 80, "kind": "loss", "d_loss": 1.3 + 0.01 * np.sin(s), "g_loss": 0.8,
               "d_real": 0.5, "d_fake": 0.5, "value": -1.38, "steps_per_s": 80.0} for s in range(10, 5001, 10)]
    metrics = [{"step": s, "time": s / 80, "kind": "metric", "energy_distance": 0.1, "grid_js": 0.3, "grid_kl": 0.2,
                "hq_fraction": 0.9, "modes": 8.0} for s in range(250, 5001, 250)]
    parts = {
        "2-D view": lambda: views.view_2d(snap, opts).spec(),
        "loss curves": lambda: charts.curves_figure(charts.history_frame(losses, run="r"), ["d_loss", "g_loss"]).spec(),
        "metrics grid": lambda: charts.series_grid_figure(charts.history_frame(metrics, run="r")).spec(),
    }
    total = 0.0
    for name, fn in parts.items():
        ms = per_call_ms(fn, args.repeats)
        total += ms
        print(f"{name:14s} {ms:6.1f} ms")
    print(f"{'one redraw':14s} {total:6.1f} ms")


if __name__ == "__main__":
    main()
