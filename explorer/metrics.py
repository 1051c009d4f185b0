"""Metric computations shared by plugins (objectives and metrics).

Kernels and MMD follow Gretton et al. 2012 ("A Kernel Two-Sample Test") and GMMN (Li, Swersky,
Zemel 2015): k(x, y) = sum_s exp(-||x - y||^2 / (2 s^2)) over a set of bandwidths s.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``[n, m]`` between rows of x and y (clamped at 0)."""
    x, y = _flat(x), _flat(y)
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def median_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """The median heuristic: sqrt(median pairwise squared distance / 2) over the pooled sample."""
    z = torch.cat([_flat(x), _flat(y)])
    d = sq_distances(z, z)
    n = d.shape[0]
    off = d[~torch.eye(n, dtype=torch.bool, device=d.device)]
    return (off.median() / 2.0).clamp_min(1e-12).sqrt()


def rbf_mixture_kernel(d2: Tensor, sigmas: Sequence[float] | Tensor) -> Tensor:
    """sum_s exp(-d2 / (2 s^2)) for squared distances ``d2``."""
    sig = torch.as_tensor(sigmas, dtype=d2.dtype, device=d2.device).reshape(-1, *([1] * d2.dim()))
    return torch.exp(-d2.unsqueeze(0) / (2.0 * sig * sig)).sum(0)


def mmd2(x: Tensor, y: Tensor, sigmas: Sequence[float] | Tensor, unbiased: bool = True) -> Tensor:
    """Squared maximum mean discrepancy between samples x [n, ...] and y [m, ...].

    Unbiased (Gretton et al. 2012, Eq. 3): the diagonal terms k(x_i, x_i) are left out, so the
    estimate can be negative; biased: the plain V-statistic, always >= 0.
    """
    kxx = rbf_mixture_kernel(sq_distances(x, x), sigmas)
    kyy = rbf_mixture_kernel(sq_distances(y, y), sigmas)
    kxy = rbf_mixture_kernel(sq_distances(x, y), sigmas)
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD^2 needs at least two samples on each side")
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx = kxx.mean()
        syy = kyy.mean()
    return sxx + syy - 2.0 * kxy.mean()


def witness(points: Tensor, x: Tensor, y: Tensor, sigmas: Sequence[float] | Tensor) -> Tensor:
    """The MMD witness function f(t) = mean_i k(t, x_i) - mean_j k(t, y_j) at ``points``.

    Positive where x (real data) has more mass than y (generated), negative where less.
    """
    kx = rbf_mixture_kernel(sq_distances(points, x), sigmas).mean(1)
    ky = rbf_mixture_kernel(sq_distances(points, y), sigmas).mean(1)
    return kx - ky
