"""A run as an animation: one frame per saved snapshot, sized for a slide.

    genex export-animation RUN [--format gif|mp4] [--fps N] [--width W] [--out PATH]

Each frame (16:9, 1280×720 by default) shows the snapshot as the run folder's PNGs draw it (a
histogram in 1-D, real and generated points in 2-D, an image grid for images) on axes that stay put
from frame to frame, and beside it the run's name, the step, the losses logged at that step
(``d_loss`` and ``g_loss``; an MMD run has only ``g_loss``) and the loss curves up to that step.

GIF needs imageio and Pillow (package dependencies); MP4 needs ffmpeg through ``imageio-ffmpeg``
(``pip install 'generative-explorer[mp4]'``). matplotlib and imageio are imported on first use.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from explorer.errors import ExplorerError, RunNotFound, shown
from explorer.records import LOSS, META_KEYS, record_kind
from explorer.runs import RunStore, atomic_write_bytes, open_run, runs_root

FORMATS = ("gif", "mp4")
SLIDE_WIDTH = 1280  # 16:9 frames: 1280×720 by default
MIN_WIDTH, MAX_WIDTH = 320, 3840
MAX_FPS = 60.0
MAX_FRAMES = 300  # a run with more snapshots is shown through this many, evenly spaced (first and last kept)
MP4_HINT = ("MP4 needs ffmpeg through imageio-ffmpeg, which is not installed: "
            "pip install 'generative-explorer[mp4]' (or pip install imageio-ffmpeg); a GIF needs nothing more (--format gif)")
IMAGEIO_HINT = "exporting an animation needs imageio: pip install imageio (a dependency of generative-explorer; reinstall it)"
# the curves and their numbers: the same colour for a loss in both
LOSS_COLOURS = ("#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_INCH_WIDTH = 12.8  # frames are drawn on a 12.8 × 7.2 inch figure; the dpi scales it to the width asked for


def slide_size(width: int = SLIDE_WIDTH) -> tuple[int, int]:
    """(width, height) of a 16:9 frame ``width`` pixels wide, both even (H.264 needs even sizes)."""
    w = int(width)
    if not MIN_WIDTH <= w <= MAX_WIDTH:
        raise ExplorerError(f"--width {width}: give a width from {MIN_WIDTH} to {MAX_WIDTH} pixels (a 16:9 frame; 1280 gives 1280×720)")
    w -= w % 2
    h = int(round(w * 9 / 16 / 2)) * 2
    return w, h


# -- the run ------------------------------------------------------------------------------------------
def resolve_run(run: str | Path | RunStore, root: str | Path | None = None) -> RunStore:
    """The run to animate: a RunStore, a run id in the runs folder (as ``genex runs`` prints it), or the
    path of a run folder anywhere (``genex run --out DIR`` makes them outside the runs folder).
    RunNotFound / ExplorerError with one sentence when there is no such run or its spec.json is damaged."""
    if isinstance(run, RunStore):
        run.read_spec()
        return run
    text = str(run)
    try:
        return open_run(text, root)
    except RunNotFound as exc:
        not_found = exc
    if not text.strip() or "\x00" in text or len(text) > 4096:
        raise not_found
    path = Path(text.strip())
    try:
        exists, is_dir, has_spec = path.exists(), path.is_dir(), (path / "spec.json").is_file()
    except (OSError, ValueError):
        raise not_found from None
    if is_dir and has_spec:
        store = RunStore(path)
        store.read_spec()  # a damaged spec.json: one sentence saying so
        return store
    if exists:
        raise RunNotFound(f"{shown(text)} is not a run folder (it has no spec.json); `genex runs` lists the runs")
    raise RunNotFound(f"no run {shown(text)}: neither a run id in the runs folder {str(runs_root(root))!r} "
                      "nor a run folder; `genex runs` lists the runs")


def default_output(store: RunStore, fmt: str = "gif") -> Path:
    """``<run folder>/<run name>.<fmt>``."""
    name = store.summary().name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80] or store.id
    return store.path / f"{stem}.{fmt}"


# -- losses at a step ---------------------------------------------------------------------------------
@dataclass
class LossHistory:
    """The run's loss records in step order (a step a resume re-trained counted once, the later wins)."""

    steps: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the series a frame shows, d_loss and g_loss first

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "LossHistory":
        by_step: dict[int, dict[str, Any]] = {}
        for rec in records:
            if record_kind(rec) == LOSS:
                by_step[int(rec["step"])] = dict(rec)
        steps = sorted(by_step)
        recs = [by_step[s] for s in steps]
        numeric = {k for r in recs for k, v in r.items() if k not in META_KEYS and isinstance(v, float) and math.isfinite(v)}
        losses = [k for k in ("d_loss", "g_loss") if k in numeric] + sorted(k for k in numeric if k.endswith("loss") and k not in ("d_loss", "g_loss"))
        return cls(steps, recs, losses or sorted(numeric)[:2])

    def at(self, step: int) -> dict[str, float]:
        """The losses logged at ``step``, else at the last logged step before it (the first after it when
        none is before)."""
        if not self.steps:
            return {}
        import bisect

        i = bisect.bisect_right(self.steps, step) - 1
        rec = self.records[max(i, 0)]
        return {k: rec[k] for k in self.keys if isinstance(rec.get(k), float)}

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(s, r[key]) for s, r in zip(self.steps, self.records) if isinstance(r.get(key), float) and math.isfinite(r[key])]
        if not pts:
            return np.zeros(0), np.zeros(0)
        arr = np.asarray(pts, dtype=float)
        return arr[:, 0], arr[:, 1]


# -- frames -------------------------------------------------------------------------------------------
@dataclass
class FrameSource:
    """One frame's content: a snapshot, else the snapshot's saved PNG picture, else neither (damaged)."""

    step: int
    snapshot: Any | None = None
    picture: np.ndarray | None = None
    problem: str | None = None


def _png_picture(path: Path | None) -> np.ndarray | None:
    """A saved snapshot picture as an RGB array, when it is a sane PNG (size checked before decoding)."""
    if path is None:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.format != "PNG" or im.width * im.height > 4096 * 4096:
                return None
            return np.asarray(im.convert("RGB"))
    except Exception:  # PIL raises many kinds for a broken file
        return None


def load_source(store: RunStore, step: int) -> FrameSource:
    snap = store.load_snapshot(step)
    problem = store.snapshot_problem
    if snap is not None:
        return FrameSource(step, snapshot=snap, problem=problem)
    pic = _png_picture(store.snapshot_png(step))
    if pic is not None:
        return FrameSource(step, picture=pic, problem=problem)
    return FrameSource(step, problem=problem or f"the snapshot at step {step:,} cannot be read")


def frame_steps(store: RunStore, max_frames: int = MAX_FRAMES) -> list[int]:
    """The snapshot steps that become frames: every one (at most ``max_frames``, evenly spaced, first and last kept)."""
    steps = store.snapshot_steps()
    if len(steps) <= max_frames:
        return steps
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_frames)).astype(int))
    return [steps[i] for i in idx]


class _Limits:
    """Axis limits shared by every frame (the points would jump about with per-frame limits): the real
    points' full range and the generated points' central 99%, padded; in 1-D, up to 1.6 × the peak of p_data."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.top = 0.0

    def add(self, snap: Any | None) -> None:
        if snap is None or snap.kind == "image" or snap.kind != (self.kind or snap.kind):
            return
        self.kind = snap.kind
        for pts, central in ((snap.real, False), (snap.fake, True)):
            pts = np.asarray(pts, dtype=float)
            if pts.ndim != 2 or not len(pts):
                continue
            pts = pts[np.isfinite(pts).all(axis=1)]
            if not len(pts):
                continue
            lo, hi = np.percentile(pts, (0.5, 99.5) if central else (0, 100), axis=0)
            self.xs += [float(lo[0]), float(hi[0])]
            if pts.shape[1] > 1:
                self.ys += [float(lo[1]), float(hi[1])]
        if self.kind == "1d":
            grid = snap.extras.get("x")
            if grid is not None and len(grid) and np.isfinite(grid).all():
                self.xs += [float(np.min(grid)), float(np.max(grid))]
            p = snap.extras.get("p_data")
            if p is not None and len(p) and np.isfinite(p).all():
                self.top = max(self.top, float(np.max(p)))

    def result(self) -> dict[str, tuple[float, float]]:
        def padded(vals: list[float]) -> tuple[float, float]:
            lo, hi = min(vals), max(vals)
            pad = 0.08 * (hi - lo) if hi > lo else 1.0
            return lo - pad, hi + pad

        out: dict[str, tuple[float, float]] = {}
        if self.xs:
            out["x"] = padded(self.xs)
        if self.ys and self.kind in ("2d", "vector"):
            out["y"] = padded(self.ys)
        if self.kind == "1d" and self.top > 0:
            out["y"] = (0.0, 1.6 * self.top)
        return out


def _figure(width: int, height: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_INCH_WIDTH, _INCH_WIDTH * height / width), dpi=width / _INCH_WIDTH)
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig: Any, width: int, height: int) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    if rgb.shape[:2] != (height, width):  # a pixel lost to rounding the dpi: resample to the exact size
        from PIL import Image

        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def render_frame(src: FrameSource, history: LossHistory, title: str, total_steps: int, width: int = SLIDE_WIDTH,
                 limits: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """One frame as an (height, width, 3) uint8 array: the snapshot on the left, the step, the losses
    and the loss curves on the right."""
    from explorer.render import draw_snapshot

    width, height = slide_size(width)
    fig = _figure(width, height)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0.075, 0.09, 0.48, 0.86))
    if src.snapshot is not None:
        snap = src.snapshot
        draw_snapshot(ax, snap)
        ax.set_title("")  # the step is written large beside it
        if snap.kind != "image":
            for coll in ax.collections:  # points a slide's audience can see
                coll.set_sizes([10])
            if snap.kind in ("2d", "vector"):
                ax.set_aspect("equal", adjustable="box")  # fixed limits: the box fits them, not the other way round
            if limits:
                if "x" in limits:
                    ax.set_xlim(*limits["x"])
                if "y" in limits:
                    ax.set_ylim(*limits["y"])
            ax.tick_params(labelsize=13)
            ax.xaxis.label.set_size(15)
            ax.yaxis.label.set_size(15)
            legend = ax.get_legend()
            if legend is not None:
                for text in legend.get_texts():
                    text.set_fontsize(14)
                for handle in getattr(legend, "legend_handles", None) or []:
                    if hasattr(handle, "set_sizes"):
                        handle.set_sizes([60])
    elif src.picture is not None:
        ax.imshow(src.picture, interpolation="lanczos")
        ax.axis("off")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, src.problem or "this snapshot cannot be read", ha="center", va="center", wrap=True,
                fontsize=16, color="#b00020", transform=ax.transAxes)

    right = 0.60
    fig.text(right, 0.90, title[:48], fontsize=22, weight="bold", va="top")
    of = f" / {total_steps:,}" if total_steps else ""
    fig.text(right, 0.80, f"step {src.step:,}{of}", fontsize=30, va="top")
    losses = history.at(src.step)
    colour = {k: LOSS_COLOURS[i % len(LOSS_COLOURS)] for i, k in enumerate(history.keys)}
    y = 0.67
    for key, value in list(losses.items())[:4]:
        fig.text(right, y, f"{key}  {value:.4g}", fontsize=22, va="top", color=colour[key], family="monospace")
        y -= 0.065
    if not losses:
        fig.text(right, y, "no losses logged yet", fontsize=18, va="top", color="#666666")
    if history.keys:
        cax = fig.add_axes((right + 0.02, 0.09, 0.36, 0.30))
        for key in history.keys[:4]:
            steps, values = history.series(key)
            if not len(steps):
                continue
            cax.plot(steps, values, color=colour[key], alpha=0.18, linewidth=1.5)  # the whole run, faint
            upto = steps <= src.step
            cax.plot(steps[upto], values[upto], color=colour[key], linewidth=2.2, label=key)
        cax.axvline(src.step, color="#333333", linewidth=1.2, linestyle="--")
        cax.set_xlabel("step", fontsize=14)
        cax.tick_params(labelsize=12)
        cax.spines[["top", "right"]].set_visible(False)
    if src.snapshot is not None and src.problem:
        fig.text(0.045, 0.02, src.problem[:120], fontsize=11, color="#b00020")
    return _pixels(fig, width, height)


def frames(store: RunStore, width: int = SLIDE_WIDTH, steps: Sequence[int] | None = None,
           on_frame: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """The run's frames, one per snapshot step (``steps``, default :func:`frame_steps`), drawn one at a
    time. A first pass over the snapshots fixes the axes (one snapshot in memory at a time)."""
    steps = frame_steps(store) if steps is None else list(steps)
    summary = store.summary()
    history = LossHistory.from_records(store.read_metrics())
    limits, readable, problem = _Limits(), 0, None
    for step in steps:
        src = load_source(store, step)
        limits.add(src.snapshot)
        if src.snapshot is not None or src.picture is not None:
            readable += 1
        else:
            problem = src.problem
    if steps and not readable:
        raise ExplorerError(f"none of run {store.id}'s {len(steps)} snapshots can be read ({problem}); nothing to animate")
    shared = limits.result()
    for i, step in enumerate(steps):
        yield render_frame(load_source(store, step), history, summary.name, summary.total_steps, width, shared)
        if on_frame is not None:
            on_frame(i + 1, len(steps))


# -- encoding -----------------------------------------------------------------------------------------
def _imageio() -> Any:
    try:
        import imageio.v3 as iio
    except ImportError:
        raise ExplorerError(IMAGEIO_HINT) from None
    return iio


def check_format(fmt: str) -> str:
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ExplorerError(f"--format {shown(fmt, 40)}: choose gif or mp4")
    if fmt == "mp4":
        ffmpeg_exe()
    return fmt


def ffmpeg_exe() -> str:
    """The ffmpeg imageio-ffmpeg brings; ExplorerError with the pip line when it is not installed."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):
        raise ExplorerError(MP4_HINT) from None


def check_fps(fps: float) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise ExplorerError(f"--fps {shown(fps, 40)}: give a number of frames per second") from None
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise ExplorerError(f"--fps {fps:g}: give a number of frames per second above 0 and at most {MAX_FPS:g}")
    return fps


def encode(frame_iter: Iterator[np.ndarray] | Sequence[np.ndarray], fmt: str = "gif", fps: float = 4.0) -> bytes:
    """The frames as a looping GIF or an H.264 MP4, as bytes."""
    fmt, fps = check_format(fmt), check_fps(fps)
    iio = _imageio()
    if fmt == "gif":
        stack = list(frame_iter)
        if not stack:
            raise ExplorerError("no frames to encode")
        # Pillow's GIF writer: duration per frame in milliseconds, loop=0 repeats for ever
        return iio.imwrite("<bytes>", np.stack(stack), extension=".gif", plugin="pillow",
                           duration=int(round(1000 / fps)), loop=0)
    import imageio.v2 as iio2

    ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="genex-mp4-") as tmp:
        path = os.path.join(tmp, "animation.mp4")
        n = 0
        with iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                             pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error") as writer:
            for frame in frame_iter:  # streamed to ffmpeg: only one frame in memory at a time
                writer.append_data(frame)
                n += 1
        if not n:
            raise ExplorerError("no frames to encode")
        return Path(path).read_bytes()


def animation_bytes(store: RunStore, fmt: str = "gif", fps: float = 4.0, width: int = SLIDE_WIDTH,
                    on_frame: Callable[[int, int], None] | None = None) -> bytes:
    """The run as an animation (bytes): for the Runs page's download button."""
    fmt, fps = check_format(fmt), check_fps(fps)
    slide_size(width)
    if not store.snapshot_steps():
        raise ExplorerError(f"run {store.id} has no saved snapshots yet (one is saved every snapshot_every steps); nothing to animate")
    return encode(frames(store, width, on_frame=on_frame), fmt, fps)


@dataclass
class Exported:
    path: Path
    frames: int
    snapshots: int
    size: tuple[int, int]
    bytes: int


def export_animation(run: str | Path | RunStore, out: str | Path | None = None, fmt: str | None = None, fps: float = 4.0,
                     width: int = SLIDE_WIDTH, root: str | Path | None = None,
                     on_frame: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run`` (a RunStore, run id or run folder) as an animation; returns the file's path.

    ``out``: a file, or a folder for ``<run name>.<fmt>``; default ``<run folder>/<run name>.<fmt>``.
    ``fmt``: gif or mp4; default from ``out``'s suffix, else gif. Written atomically (a temporary
    name, then a rename). ExplorerError with one sentence for every problem the user can fix.
    """
    return export(run, out, fmt, fps, width, root, on_frame).path


def export(run: str | Path | RunStore, out: str | Path | None = None, fmt: str | None = None, fps: float = 4.0,
           width: int = SLIDE_WIDTH, root: str | Path | None = None,
           on_frame: Callable[[int, int], None] | None = None) -> Exported:
    """:func:`export_animation`, returning what was written (path, frame count, size, bytes)."""
    suffix = Path(str(out)).suffix.lower().lstrip(".") if out is not None and str(out).strip() else ""
    if fmt is None:
        fmt = suffix if suffix in FORMATS else "gif"
    fmt, fps = check_format(fmt), check_fps(fps)
    size = slide_size(width)
    if suffix in FORMATS and suffix != fmt:
        raise ExplorerError(f"--out {shown(str(out))} ends in .{suffix} but the format is {fmt}; make them agree")
    store = resolve_run(run, root)
    snapshots = store.snapshot_steps()
    if not snapshots:
        raise ExplorerError(f"run {store.id} has no saved snapshots yet (one is saved every snapshot_every steps); nothing to animate")
    target = _target(store, out, fmt)
    steps = frame_steps(store)
    data = encode(frames(store, width, steps, on_frame), fmt, fps)
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise ExplorerError(f"cannot write {shown(str(target))}: {exc.strerror or type(exc).__name__}; choose another --out") from None
    return Exported(target, len(steps), len(snapshots), size, len(data))


def _target(store: RunStore, out: str | Path | None, fmt: str) -> Path:
    if out is None:
        return default_output(store, fmt)
    text = str(out)
    if not text.strip() or "\x00" in text:
        raise ExplorerError("--out is empty; give the file (or folder) the animation should go to")
    path = Path(text)
    try:
        if path.is_dir():
            return path / default_output(store, fmt).name
        if not path.parent.is_dir():
            raise ExplorerError(f"--out {shown(text)}: the folder {str(path.parent)!r} does not exist")
    except OSError as exc:
        raise ExplorerError(f"--out {shown(text)} cannot be used: {exc.strerror or type(exc).__name__}") from None
    return path
