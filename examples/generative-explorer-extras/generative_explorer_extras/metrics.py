"""Two metrics: a nearest-neighbour two-sample test for any data, and checkerboard coverage."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from explorer import Metric, MetricContext, Param, Sampler

NAN = float("nan")


class NearestNeighbourAccuracy(Metric):
    """Leave-one-out 1-nearest-neighbour two-sample accuracy (Lopez-Paz & Oquab 2017, "Revisiting
    Classifier Two-Sample Tests"; recommended for GANs by Xu et al. 2018, arXiv:1806.07755).

    Pool n real and n generated samples (flattened); classify each point by the label of its nearest
    other point (Euclidean). Accuracy ~0.5: the two samples cannot be told apart; ~1: they separate
    cleanly. ``nn_accuracy_real`` near 0 means each real point has a generated twin: memorisation.
    """

    name = "nn-accuracy"
    summary = "1-NN two-sample test accuracy: 0.5 = indistinguishable from the data, 1 = fully separable"
    applies_to = ("any",)
    sample_size = 1000
    # 0.5 is the ideal and values below it are rare (they mean copies), so lower is better for the
    # pooled accuracy; the per-class parts are diagnostics with no better direction.
    directions = {"nn_accuracy": "lower", "nn_accuracy_real": None, "nn_accuracy_fake": None}

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        n = min(len(real), len(fake))
        x = torch.cat([real[:n].reshape(n, -1), fake[:n].reshape(n, -1)]).double()
        if not torch.isfinite(x).all():
            return {"nn_accuracy": NAN, "nn_accuracy_real": NAN, "nn_accuracy_fake": NAN}
        d = torch.cdist(x, x)
        d.fill_diagonal_(float("inf"))
        label = torch.arange(2 * n, device=x.device) < n   # True = real
        same = label[d.argmin(dim=1)] == label
        return {
            "nn_accuracy": same.double().mean().item(),
            "nn_accuracy_real": same[:n].double().mean().item(),
            "nn_accuracy_fake": same[n:].double().mean().item(),
        }


class CheckerboardCoverage(Metric):
    """For `checkerboard` data: ``dark_fraction``, the share of generated points on dark squares (1 for
    the data), and ``squares_covered``, the share of dark squares that hold at least ``min_share`` of
    their fair share n / K of the generated points (a mode-coverage count for a board)."""

    name = "checkerboard-coverage"
    summary = "Share of samples on dark squares and share of dark squares covered (checkerboard data)"
    applies_to = ("2d",)
    sample_size = 2000
    directions = {"dark_fraction": "higher", "squares_covered": "higher"}
    params = (
        Param("min_share", "float", 0.1, "a square is covered with at least this fraction of its fair share of samples",
              low=0.0, high=1.0),
    )

    def applies(self, data: Sampler) -> bool:
        return super().applies(data) and callable(getattr(data, "cell_index", None))

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, Any]:
        board: Any = context.data
        cells = board.cell_index(fake)
        k = len(board.dark)
        on = cells[cells >= 0]
        counts = torch.bincount(on, minlength=k)
        fair = len(fake) / k
        return {
            "dark_fraction": (cells >= 0).double().mean().item(),
            "squares_covered": (counts >= max(self.config["min_share"] * fair, 1e-9)).double().mean().item(),
        }
