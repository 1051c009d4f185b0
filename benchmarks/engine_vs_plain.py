"""Engine overhead: the ring8 non-saturating workload through the Trainer and through a plain,
hand-written PyTorch loop, in one process, on the same networks, data and device.

    python benchmarks/engine_vs_plain.py [--steps 2000] [--repeats 3] [--device auto] [--threads N]

Prints steps/s for each and the ratio engine / plain (target: >= 0.90). Rounds alternate between
the two so that drift in the machine's load hits both alike; the median round is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from explorer.pipeline import Pipeline
from explorer.spec import parse_spec
from explorer.training import Trainer, TrainerConfig

SPEC = {
    "data": "ring8", "objective": "nonsaturating", "batch_size": 256, "log_every": 50,
    "metrics": "none", "snapshot_every": 10_000_000, "checkpoint_every": 0, "metric_every": 0,
}


def engine(steps: int, device: str) -> float:
    spec = parse_spec({**SPEC, "steps": steps, "device": device})
    trainer = Trainer(Pipeline(spec), config=TrainerConfig(snapshot_hz=0))
    _sync(trainer.p.device)
    t0 = time.perf_counter()
    trainer.run()
    _sync(trainer.p.device)
    return steps / (time.perf_counter() - t0)


def plain(steps: int, device: str, log_every: int = 50) -> float:
    """The same step as the engine's, written out by hand (the DCGAN example's loop, on logits)."""
    p = Pipeline(parse_spec({**SPEC, "steps": steps, "device": device}))
    G, D, opt_g, opt_d, B = p.G, p.D, p.opt_g, p.opt_d, 256
    data, latent, dev = p.data, p.latent, p.device
    _sync(dev)
    t0 = time.perf_counter()
    d_sum = torch.zeros((), device=dev)
    g_sum = torch.zeros((), device=dev)
    for step in range(1, steps + 1):
        real = data.sample(B, p.data_gen, dev)
        with torch.no_grad():
            fake = G(latent.sample(B, p.noise_gen, dev))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(G(latent.sample(B, p.noise_gen, dev)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d_sum += d_loss.detach()
        g_sum += g_loss.detach()
        if step % log_every == 0:
            _ = (d_sum / log_every).item(), (g_sum / log_every).item()
            d_sum.zero_()
            g_sum.zero_()
    _sync(dev)
    return steps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine(100, args.device)  # warm-up both paths
    plain(100, args.device)
    eng, pl = [], []
    for _ in range(args.repeats):
        eng.append(engine(args.steps, args.device))
        pl.append(plain(args.steps, args.device))
    e, p = statistics.median(eng), statistics.median(pl)
    print(f"device: {Pipeline(parse_spec({**SPEC, 'device': args.device})).device}, torch threads: {torch.get_num_threads()}, "
          f"steps: {args.steps} x {args.repeats} rounds")
    print(f"engine : {e:8.1f} steps/s   (rounds: {', '.join(f'{x:.0f}' for x in eng)})")
    print(f"plain  : {p:8.1f} steps/s   (rounds: {', '.join(f'{x:.0f}' for x in pl)})")
    print(f"ratio engine/plain: {e / p:.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
