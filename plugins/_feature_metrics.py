"""Feature-space metrics for images: Fréchet distance, precision / recall (Kynkäänniemi et al. 2019),
density / coverage (Naeem et al. 2020) and a memorisation score from nearest-neighbour distances.

Pure functions on feature arrays (see :mod:`plugins._features` for the feature network); they run on
snapshots, on one host thread.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from explorer.metrics import _distance_chunks, _np64, _one_thread, _rows64, pairwise_distances


@_one_thread
def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (n - 1)-normalised covariance of feature rows."""
    f = _np64(features)
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


@_one_thread
def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (Dowson & Landau 1982; FID, Heusel et al. 2017):

        d^2 = ||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).

    Tr((cov1 cov2)^(1/2)) = sum sqrt(eig(s cov2 s)) with s = cov1^(1/2): symmetric, so no complex
    parts from ``sqrtm``; tiny negative eigenvalues from rounding are clamped to 0.
    """
    w, v = np.linalg.eigh(np.asarray(cov1, np.float64))
    s = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(s @ cov2 @ s), 0, None)).sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(max(0.0, diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt))


def knn_radii(d_self: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest *other* point, from a square distance matrix."""
    return d_self.kthvalue(k + 1, dim=1).values  # the smallest is the point itself (0)


@_one_thread
def reference_radii(real: Tensor | np.ndarray, k_pr: int = 3, k_dc: int = 5) -> tuple[Tensor, Tensor]:
    """k-NN radii of the real features for :func:`prdc` (computed once per reference set)."""
    d_rr = pairwise_distances(real, real)
    return knn_radii(d_rr, k_pr), knn_radii(d_rr, k_dc)


@_one_thread
def prdc(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k_pr: int = 3, k_dc: int = 5,
    radii: tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019, k = 3) and density and coverage (Naeem et
    al. 2020, k = 5) of ``fake`` against ``real`` feature rows. B(x, r) is the closed ball:

        precision = 1/M sum_j 1[exists i: d(Y_j, X_i) <= r_k(X_i)]
        recall    = 1/N sum_i 1[exists j: d(X_i, Y_j) <= r_k(Y_j)]
        density   = 1/(k M) sum_j sum_i 1[d(Y_j, X_i) <= r_k(X_i)]
        coverage  = 1/N sum_i 1[min_j d(X_i, Y_j) <= r_k(X_i)]

    with r_k the distance to the k-th nearest neighbour in the point's own set. ``<=`` rather than
    the ``prdc`` package's ``<``, which scores 0 for duplicated points (their radius is 0).
    ``radii``: the real set's (k_pr, k_dc) radii from :func:`reference_radii`, to reuse them.
    """
    r_pr, r_dc = radii if radii is not None else reference_radii(real, k_pr, k_dc)
    f_pr = knn_radii(pairwise_distances(fake, fake), k_pr)
    d_rf = pairwise_distances(real, fake)
    inside_dc = d_rf <= r_dc[:, None]
    return {
        "precision": float((d_rf <= r_pr[:, None]).any(0).double().mean()),
        "recall": float((d_rf <= f_pr[None, :]).any(1).double().mean()),
        "density": float(inside_dc.sum() / (k_dc * d_rf.shape[1])),
        "coverage": float(inside_dc.any(1).double().mean()),
    }


@_one_thread
def nearest_distances(queries: Tensor | np.ndarray, reference: Tensor | np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Distance from each query row to its nearest reference row; ``exclude[i]`` (an index into
    the reference) is left out for query i, for leave-one-out distances within one set.
    Chunked over the queries: memory stays O(chunk x reference)."""
    a, b = _rows64(queries), _rows64(reference)
    out, start = [], 0
    for d in _distance_chunks(a, b, 512):
        if exclude is not None:
            rows = torch.arange(d.shape[0])
            d[rows, torch.as_tensor(exclude[start : start + d.shape[0]])] = float("inf")
        out.append(d.min(1).values)
        start += d.shape[0]
    return torch.cat(out).numpy()


def memorisation_score(fake_nn: np.ndarray, train_nn: np.ndarray, quantile: float = 0.05) -> dict[str, float]:
    """How close generated samples sit to the training set, relative to the data's own spacing.

    ``fake_nn``: each generated sample's distance to its nearest training example; ``train_nn``:
    each training example's distance to its nearest *other* training example (leave-one-out).
    tau = the ``quantile`` of ``train_nn``. memorisation = fraction of generated samples with
    nearest distance <= tau: a fresh draw from the data distribution lands that close about
    ``quantile`` of the time, a generator that copies training examples always does (1.0).
    nn_ratio = median(fake_nn) / median(train_nn): about 1 for new samples, -> 0 when copying,
    > 1 when samples sit off the data (blurry, noisy). Cf. Goodfellow et al. 2014, Fig. 2.
    """
    tau = float(np.quantile(train_nn, quantile))
    med = float(np.median(train_nn))
    return {
        "memorisation": float(np.mean(fake_nn <= tau)),
        "nn_ratio": float(np.median(fake_nn) / med) if med > 0 else float("nan"),
    }
