"""1-D metrics against the data sampler: Wasserstein-1, the Kolmogorov-Smirnov statistic (exact
against the sampler's cdf when it has one) and the JS divergence on a shared histogram grid."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from explorer import Metric, MetricContext, Param, Sampler, hookimpl
from explorer.metrics import all_finite, js_1d

NAN = float("nan")


def _column(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).reshape(-1).numpy()


def has_cdf(data: Sampler) -> bool:
    """True when the sampler overrides :meth:`Sampler.cdf` (an exact distribution function)."""
    return type(data).cdf is not Sampler.cdf


class Wasserstein1D(Metric):
    """W_1 = int |F_real(x) - F_fake(x)| dx between the two empirical CDFs
    (``scipy.stats.wasserstein_distance``): in the data's units, and it keeps growing with the
    distance of misplaced mass, where divergences saturate."""

    name = "wasserstein-1d"
    directions = {"wasserstein1": "lower"}
    summary = "Wasserstein-1 distance to a data sample (scipy.stats.wasserstein_distance)"
    applies_to = ("1d",)
    sample_size = 2000

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(real, fake):
            return {"wasserstein1": NAN}
        return {"wasserstein1": float(stats.wasserstein_distance(_column(real), _column(fake)))}


class KolmogorovSmirnov1D(Metric):
    """KS statistic sup_x |F_fake(x) - F(x)| and its p-value: against the sampler's exact cdf
    (one-sample ``scipy.stats.kstest``) when it has one, else against the real sample
    (``scipy.stats.ks_2samp``)."""

    name = "ks-1d"
    directions = {"ks": "lower", "ks_p_value": "higher"}  # a high p-value: the test cannot tell them apart
    log_keys = frozenset({"ks_p_value"})  # from 1e-300 to 1: drawn as log10
    summary = "Kolmogorov-Smirnov statistic against the exact cdf (or a data sample) and its p-value"
    applies_to = ("1d",)
    sample_size = 2000

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(real, fake):
            return {"ks": NAN, "ks_p_value": NAN}
        f = _column(fake)
        data = context.data
        if has_cdf(data):
            try:
                def cdf(x: np.ndarray) -> np.ndarray:
                    return data.cdf(torch.as_tensor(x, dtype=torch.float64)).detach().cpu().double().numpy().reshape(-1)
                res = stats.kstest(f, cdf)
                if np.isfinite(res.statistic):
                    return {"ks": float(res.statistic), "ks_p_value": float(res.pvalue)}
            except (NotImplementedError, RuntimeError, TypeError, ValueError):
                pass  # a cdf that cannot take this input: fall back to the two-sample test
        res = stats.ks_2samp(_column(real), f)
        return {"ks": float(res.statistic), "ks_p_value": float(res.pvalue)}


class JensenShannon1D(Metric):
    """JS divergence, in bits (base 2, so 0 <= JS <= 1), between histograms of the real and the
    generated sample on one shared grid: ``bins`` equal bins over the sampler's ``bounds`` (else
    the real sample's range) plus two overflow bins, so generated mass off the grid still counts."""

    name = "js-1d"
    directions = {"js": "lower"}
    summary = "Jensen-Shannon divergence (bits) between real and generated histograms on a shared grid"
    applies_to = ("1d",)
    params = (Param("bins", "int", 50, "histogram bins over the data range", low=2, high=1000),)
    sample_size = 2000

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(real, fake):
            return {"js": NAN}
        bounds = context.data.bounds[0] if context.data.bounds else None
        return {"js": js_1d(real, fake, self.config["bins"], bounds, base=2.0)}


@hookimpl
def register_metrics(register):
    register(Wasserstein1D)
    register(KolmogorovSmirnov1D)
    register(JensenShannon1D)
