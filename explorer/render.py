"""PNG pictures of snapshots for run folders and CLI outputs (matplotlib's object API: thread-safe,
no pyplot state). A histogram for 1-D data, a scatter for 2-D, an image grid for images."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Sequence

import numpy as np

from explorer.snapshots import Snapshot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(figsize: tuple[float, float]) -> "Figure":
    """A matplotlib figure on the Agg canvas (matplotlib is imported here, on first use: a page that
    only shows image grids never loads it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


REAL_COLOUR = "#1f77b4"
FAKE_COLOUR = "#ff7f0e"


def image_grid(images: np.ndarray, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tile [n, C, H, W] images in [-1, 1] into one [H', W', 3] uint8 picture."""
    n, c, h, w = images.shape
    nrow = int(np.ceil(n / ncol))
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        img = np.clip((images[i] + 1) / 2, 0, 1)
        img = np.repeat(img, 3, 0) if c == 1 else img[:3]
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    return (grid * 255).astype(np.uint8)


def draw_snapshot(ax, snap: Snapshot, title: str | None = None) -> None:
    """Draw one snapshot onto a matplotlib Axes."""
    if snap.kind == "1d":
        x = snap.extras.get("x")
        ax.hist(snap.fake[:, 0], bins=60, density=True, alpha=0.5, color=FAKE_COLOUR, label="generated")
        if x is not None:
            ax.plot(x, snap.extras["p_data"], color=REAL_COLOUR, label="p_data")
        else:
            ax.hist(snap.real[:, 0], bins=60, density=True, alpha=0.4, color=REAL_COLOUR, label="real")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend(loc="upper right", fontsize=7)
    elif snap.kind == "image":
        ax.imshow(image_grid(snap.fake[:64]), interpolation="nearest")
        ax.axis("off")
    else:
        ax.scatter(snap.real[:, 0], snap.real[:, 1], s=3, alpha=0.4, color=REAL_COLOUR, label="real")
        ax.scatter(snap.fake[:, 0], snap.fake[:, 1], s=3, alpha=0.6, color=FAKE_COLOUR, label="generated")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_title(title or f"step {snap.step}", fontsize=9)


def snapshot_png(snap: Snapshot, title: str | None = None) -> bytes:
    fig = _figure((4, 4))
    draw_snapshot(fig.add_subplot(111), snap, title)
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig: "Figure") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def side_by_side_png(snaps: Sequence[Snapshot], titles: Sequence[str], curves: dict[str, list[tuple[list[int], list[float]]]] | None = None) -> bytes:
    """Samples of several runs side by side, with optional loss curves below (``genex compare``)."""
    n = max(1, len(snaps))
    rows = 2 if curves else 1
    fig = _figure((3.2 * n, 3.2 * rows))
    for i, (snap, title) in enumerate(zip(snaps, titles)):
        draw_snapshot(fig.add_subplot(rows, n, i + 1), snap, title)
    if curves:
        for j, (series, lines) in enumerate(list(curves.items())[:n]):
            ax = fig.add_subplot(rows, n, n + j + 1)
            for (steps, values), title in zip(lines, titles):
                ax.plot(steps, values, label=title, linewidth=1)
            ax.set_title(series, fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
    fig.tight_layout()
    return figure_png(fig)
