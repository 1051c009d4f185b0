"""Snapshots: small, plain-numpy pictures of a run's state that the UI and the run folder draw.

Taken in the trainer's thread (never in Streamlit's), a few times a second at most, from the
pipeline's fixed view batches, so watching a run never changes what it learns.

- 1-D: x grid with p_data (exact where the sampler knows its density, a KDE otherwise), p_g (KDE
  of generated samples), D(x), and D*(x) = p_data / (p_data + p_g) (Goodfellow et al. 2014, Prop. 1);
  the z -> x = G(z) mapping for a line of latent points (Figure 1 of the paper).
- 2-D: real and generated points, the critic (D's probability, or MMD's witness) on a grid, the
  generator's manifold as a warped grid of the latent square, and where the generator loss pushes
  each generated point (minus its gradient).
- Images: a grid of generated samples and each one's nearest training image (memorisation check,
  Goodfellow et al. 2014, Fig. 2).

Generated samples come from the averaged generator when the spec has ``ema`` (``Pipeline.G_eval``);
the raw generator's samples of the same latent codes are kept beside them in ``extras["fake_raw"]``
(and, in 1-D, ``g_of_z_raw``, ``p_g_raw`` and ``d_star_raw``; in 2-D, ``manifold_raw`` and ``arrows_raw``),
so a view can show either (:func:`raw_snapshot`). With ``pack`` > 1
the critic drawn at a point x is D(x, x, ..., x) (``Pipeline.D_view``), and the arrows are the packed
objective's own push on the first multiple of ``pack`` generated points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats

from explorer.components import normalise_loss

if TYPE_CHECKING:
    from explorer.pipeline import Pipeline

GRID_1D = 200
GRID_2D = 40
MANIFOLD = 15
ARROWS = 150
IMAGES = 64


@dataclass
class Snapshot:
    """One picture of a run at ``step``: arrays only (cheap to copy, easy to save)."""

    step: int
    kind: str  # 1d, 2d, image, vector
    real: np.ndarray
    fake: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _bounds(pipe: "Pipeline", real: np.ndarray, fake: np.ndarray, dims: int) -> list[tuple[float, float]]:
    """View bounds: the sampler's hint, widened to show generated points that wandered off (within reason)."""
    hint = getattr(pipe.data, "bounds", None)
    out = []
    for d in range(dims):
        lo, hi = np.percentile(real[:, d], [0.5, 99.5])
        if hint is not None:
            lo, hi = min(lo, hint[d][0]), max(hi, hint[d][1])
        span = hi - lo or 1.0
        flo, fhi = np.percentile(fake[:, d], [1, 99]) if np.isfinite(fake).all() else (lo, hi)
        lo = max(min(lo, flo), lo - span)
        hi = min(max(hi, fhi), hi + span)
        pad = 0.25 * (hi - lo)  # generous: the app's view (which holds still between redraws) crops it
        out.append((float(lo - pad), float(hi + pad)))
    return out


def _kde(sample: np.ndarray, grid: np.ndarray) -> np.ndarray:
    sample = sample[np.isfinite(sample)]
    if sample.size < 3 or np.ptp(sample) < 1e-9:
        dens = np.zeros_like(grid)
        if sample.size:
            dens[np.argmin(np.abs(grid - sample.mean()))] = 1.0 / (grid[1] - grid[0])
        return dens
    return stats.gaussian_kde(sample)(grid)


def take_snapshot(pipe: "Pipeline", step: int, arrows: bool = True) -> Snapshot:
    """A snapshot fitted to the data kind. Every module, random stream and sampler is left exactly as
    it was (:meth:`~explorer.pipeline.Pipeline.untouched`), so a run learns the same however often
    it is watched."""
    with pipe.untouched(), torch.no_grad():
        return _take(pipe, step, arrows)


def _take(pipe: "Pipeline", step: int, arrows: bool) -> Snapshot:
    fake_t = pipe.generate(pipe.view_z)
    real_t = pipe.view_real
    kind = pipe.data.data_kind
    real, fake = _np(real_t), _np(fake_t)
    snap = Snapshot(step=step, kind=kind, real=real, fake=fake)
    if pipe.G_ema is not None:
        snap.extras["fake_raw"] = _np(pipe.generate(pipe.view_z[:IMAGES] if kind == "image" else pipe.view_z, raw=True))
    if kind == "1d":
        _one_d(pipe, snap, real_t, fake_t)
    elif kind == "2d":
        _two_d(pipe, snap, real_t, fake_t, arrows)
    elif kind == "image":
        _images(pipe, snap)
    return snap


def _d_star(p_data: np.ndarray, p_g: np.ndarray) -> np.ndarray:
    """D*(x) = p_data / (p_data + p_g) (Goodfellow et al. 2014, Prop. 1); NaN where both vanish."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p_data + p_g > 1e-12, p_data / (p_data + p_g), np.nan)


def _critic(pipe: "Pipeline", x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray | None:
    out = pipe.objective.critic(getattr(pipe, "D_view", pipe.D), x, real, fake)
    return None if out is None else _np(out.reshape(-1))


def _one_d(pipe: "Pipeline", snap: Snapshot, real_t: torch.Tensor, fake_t: torch.Tensor) -> None:
    (lo, hi), = _bounds(pipe, snap.real, snap.fake, 1)
    grid = np.linspace(lo, hi, GRID_1D)
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=pipe.device).reshape(-1, 1)
    if pipe.data.has_log_prob:
        p_data = np.exp(_np(pipe.data.log_prob(grid_t)))
        exact = 1.0
    else:
        p_data = _kde(snap.real[:, 0], grid)
        exact = 0.0
    p_g = _kde(snap.fake[:, 0], grid)
    d_star = _d_star(p_data, p_g)
    snap.extras.update(x=grid, p_data=p_data, p_g=p_g, d_star=d_star, p_data_exact=np.array(exact))
    if "fake_raw" in snap.extras:  # the raw G's density and the D* that D, trained against it, tends to
        snap.extras["p_g_raw"] = p_g_raw = _kde(snap.extras["fake_raw"][:, 0], grid)
        snap.extras["d_star_raw"] = _d_star(p_data, p_g_raw)
    crit = _critic(pipe, grid_t, real_t, fake_t)
    if crit is not None:
        snap.extras["critic"] = crit
    # The transform itself: a line of latent points and where G sends them.
    z = pipe.view_z[:400]
    order = torch.argsort(z.reshape(len(z), -1)[:, 0])
    z = z[order][:: max(1, len(z) // 40)]
    snap.extras["z"] = _np(z.reshape(len(z), -1)[:, 0])
    snap.extras["g_of_z"] = _np(pipe.generate(z).reshape(-1))
    if pipe.G_ema is not None:
        snap.extras["g_of_z_raw"] = _np(pipe.generate(z, raw=True).reshape(-1))


def _two_d(pipe: "Pipeline", snap: Snapshot, real_t: torch.Tensor, fake_t: torch.Tensor, arrows: bool) -> None:
    (x0, x1), (y0, y1) = _bounds(pipe, snap.real, snap.fake, 2)
    xs, ys = np.linspace(x0, x1, GRID_2D), np.linspace(y0, y1, GRID_2D)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=pipe.device)
    crit = _critic(pipe, pts, real_t, fake_t)
    snap.extras.update(grid_x=xs, grid_y=ys)
    if crit is not None:
        snap.extras["critic"] = crit.reshape(GRID_2D, GRID_2D)
    # The generator's manifold: a grid over the latent square (first two latent dims, the rest 0).
    zdim = int(np.prod(pipe.latent.shape))
    lo, hi = _latent_square(pipe)
    line = torch.linspace(lo, hi, MANIFOLD, device=pipe.device)
    zz = torch.zeros(MANIFOLD, MANIFOLD, zdim, device=pipe.device)
    zz[..., 0] = line[None, :]
    if zdim > 1:
        zz[..., 1] = line[:, None]
    warped = pipe.generate(zz.reshape(-1, *pipe.latent.shape)).reshape(MANIFOLD, MANIFOLD, 2)
    snap.extras["manifold"] = _np(warped)
    if pipe.G_ema is not None:
        raw = pipe.generate(zz.reshape(-1, *pipe.latent.shape), raw=True).reshape(MANIFOLD, MANIFOLD, 2)
        snap.extras["manifold_raw"] = _np(raw)
    if arrows:
        pack = getattr(pipe.spec, "pack", 1)
        snap.extras["arrows"] = _generator_push(pipe, real_t, fake_t[: ARROWS - ARROWS % pack])
        if "fake_raw" in snap.extras:  # the push on the raw G's samples: what training actually follows
            raw_t = torch.as_tensor(snap.extras["fake_raw"][: ARROWS - ARROWS % pack], device=pipe.device)
            snap.extras["arrows_raw"] = _generator_push(pipe, real_t, raw_t)


def _latent_square(pipe: "Pipeline") -> tuple[float, float]:
    """The latent prior's declared ``latent_box``, else the central 95% of the view's latent codes."""
    box = pipe.latent.latent_box
    if box is not None:
        return float(box[0]), float(box[1])
    z = _np(pipe.view_z.reshape(len(pipe.view_z), -1)[:, :2])
    z = z[np.isfinite(z).all(1)]
    if not len(z):
        return -1.0, 1.0
    lo, hi = np.percentile(z, [2.5, 97.5])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 1.0, float(lo) + 1.0)


def _generator_push(pipe: "Pipeline", real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """-d(generator loss)/d(fake point), per point: where the objective moves each sample."""
    with torch.enable_grad():
        x = fake.detach().clone().requires_grad_(True)
        loss, _ = normalise_loss(pipe.objective.generator_loss(pipe.D, real[: len(x)], x), "generator_loss")
        (grad,) = torch.autograd.grad(loss * len(x), x, allow_unused=True)
    if grad is None:
        return np.zeros((len(x), 2), dtype=np.float32)
    return _np(-grad)


def _images(pipe: "Pipeline", snap: Snapshot) -> None:
    fake = snap.fake[:IMAGES]
    snap.fake = fake
    snap.real = snap.real[:IMAGES]
    train = pipe.data.dataset()
    if train is None:
        return
    train_np = _np(train.reshape(len(train), -1)) if isinstance(train, torch.Tensor) else np.asarray(train).reshape(len(train), -1)
    flat = fake.reshape(len(fake), -1)
    d = (flat**2).sum(1)[:, None] + (train_np**2).sum(1)[None, :] - 2 * flat @ train_np.T
    idx = np.argmin(d, axis=1)
    snap.extras["nearest"] = train_np[idx].reshape(fake.shape)
    snap.extras["nearest_dist"] = np.sqrt(np.maximum(d[np.arange(len(idx)), idx], 0.0))


#: the raw G's extras (spec ``ema``) and the averaged G's they stand in for
RAW_EXTRAS = {"manifold_raw": "manifold", "g_of_z_raw": "g_of_z", "p_g_raw": "p_g", "d_star_raw": "d_star",
              "arrows_raw": "arrows"}
_OF_THE_AVERAGE = ("nearest", "nearest_dist")  # about the averaged G's samples only


def raw_snapshot(snap: Snapshot) -> Snapshot | None:
    """The raw generator's side of a snapshot taken from the averaged one (spec ``ema``): the same real
    points, critic and latent codes, with the raw G's samples (``fake_raw``), manifold, z -> x mapping,
    p_g, D* and push arrows in place of the average's. None when the snapshot holds no raw samples.

    A saved snapshot may lack some of them (older files keep only ``fake_raw``, ``manifold_raw`` and
    ``g_of_z_raw``): the average's are then left out rather than shown as the raw G's, except the 1-D
    p_g and D*, which are computed here from ``fake_raw`` (a KDE, as the trainer does)."""
    ex = snap.extras
    if "fake_raw" not in ex:
        return None
    fake = np.asarray(ex["fake_raw"])
    extras = {k: v for k, v in ex.items()
              if k != "fake_raw" and k not in RAW_EXTRAS and k not in RAW_EXTRAS.values() and k not in _OF_THE_AVERAGE}
    extras.update({name: ex[raw] for raw, name in RAW_EXTRAS.items() if raw in ex})
    if snap.kind == "1d" and "x" in ex and "p_g" not in extras:
        extras["p_g"] = _kde(_rows_1d(fake), np.asarray(ex["x"], dtype=float))
        if "p_data" in ex:
            extras["d_star"] = _d_star(np.asarray(ex["p_data"], dtype=float), extras["p_g"])
    if "g_of_z" not in extras:
        extras.pop("z", None)  # a mapping needs both ends
    return Snapshot(step=snap.step, kind=snap.kind, real=snap.real, fake=fake, extras=extras, time=snap.time)


def _rows_1d(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr, dtype=float).reshape(len(arr), -1)[:, 0] if len(arr) else np.zeros(0)


def snapshot_arrays(snap: Snapshot) -> dict[str, Any]:
    """Everything in a snapshot as a flat dict of arrays (for ``np.savez``)."""
    out: dict[str, Any] = {"step": np.array(snap.step), "kind": np.array(snap.kind), "real": snap.real, "fake": snap.fake}
    out.update({f"extra_{k}": v for k, v in snap.extras.items()})
    return out


def infer_kind(arrays: Any) -> str:
    """The snapshot kind (1d, 2d, image, vector) of saved arrays: their saved ``kind``, else (older files,
    bare sample arrays) what they hold. The one place that infers it."""
    files = set(arrays.files) if hasattr(arrays, "files") else set(arrays)
    if "kind" in files:
        return str(arrays["kind"])
    if "extra_x" in files:
        return "1d"
    if "extra_grid_x" in files:
        return "2d"
    fake = np.asarray(arrays["fake"])
    if fake.ndim == 4:
        return "image"
    return {1: "1d", 2: "2d"}.get(fake.shape[-1] if fake.ndim == 2 else 0, "vector")


def snapshot_from_arrays(arrays: Any, kind: str | None = None) -> Snapshot:
    """A Snapshot back from a saved ``.npz``; its kind is saved with it (``kind`` overrides, and older
    files get theirs from :func:`infer_kind`)."""
    kind = kind if kind is not None and "kind" not in arrays.files else infer_kind(arrays)
    extras = {k[len("extra_"):]: arrays[k] for k in arrays.files if k.startswith("extra_")}
    return Snapshot(step=int(arrays["step"]), kind=kind, real=arrays["real"], fake=arrays["fake"], extras=extras)
