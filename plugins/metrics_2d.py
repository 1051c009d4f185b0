"""2-D metrics: the mode-collapse benchmarks of VEEGAN and PacGAN on Gaussian mixtures (ring8,
grid25) and GAN Lab's grid-based KL / JS for any 2-D data."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from explorer import Metric, MetricContext, Param, Sampler, hookimpl
from explorer.metrics import all_finite, grid_divergences, mode_statistics

NAN = float("nan")


class ModeCoverage(Metric):
    """Modes captured, % high-quality samples and reverse KL (VEEGAN, Srivastava et al. 2017;
    PacGAN, Lin et al. 2018) from 2,500 generated samples.

    A sample is high quality when it lies within ``threshold`` (3) standard deviations of its
    nearest mixture centre; modes = centres nearest to at least one HQ sample; reverse_kl =
    KL(histogram of HQ samples over the modes || uniform) in nats, NaN while no sample is HQ.
    See :func:`explorer.metrics.mode_statistics` for the exact definitions and their sources.
    """

    name = "mode-coverage"
    directions = {"modes": "higher", "hq_fraction": "higher", "reverse_kl": "lower"}
    summary = "Modes captured, high-quality fraction and reverse KL to uniform (VEEGAN / PacGAN)"
    applies_to = ("2d",)
    params = (Param("threshold", "float", 3.0, "a sample is high quality within this many stds of a centre", low=0.1, high=100),)
    sample_size = 2500

    def applies(self, data: Sampler) -> bool:
        return super().applies(data) and data.mixture_modes() is not None

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        centres, std = context.data.mixture_modes()
        s = mode_statistics(fake, centres, float(std), self.config["threshold"])
        return {"modes": float(s.modes), "hq_fraction": s.hq_fraction, "reverse_kl": s.reverse_kl}


class GridDivergence(Metric):
    """GAN Lab's KL(p_real || p_fake) and JS divergence, in bits, between 30 x 30 histograms over
    the data bounds (Kahng et al. 2018, poloclub/ganlab), smoothed by 1e-4 per bin."""

    name = "grid-divergence"
    directions = {"grid_kl": "lower", "grid_js": "lower"}
    summary = "KL and JS (bits) between real and generated 2-D histograms on a 30x30 grid (GAN Lab)"
    applies_to = ("2d",)
    params = (
        Param("grid", "int", 30, "cells per side", low=2, high=500),
        Param("eps", "float", 1e-4, "added to every cell frequency before renormalising", low=0.0, high=0.1),
    )
    sample_size = 2500

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(real, fake):
            return {"grid_kl": NAN, "grid_js": NAN}
        bounds = context.data.bounds
        if not bounds:
            r = real.detach().cpu().double().numpy()
            lo, hi = r.min(0), r.max(0)
            pad = 0.05 * np.maximum(hi - lo, 1e-6)
            bounds = tuple(zip(lo - pad, hi + pad))
        kl, js = grid_divergences(real, fake, bounds, self.config["grid"], self.config["eps"])
        return {"grid_kl": kl, "grid_js": js}


@hookimpl
def register_metrics(register):
    register(ModeCoverage)
    register(GridDivergence)
