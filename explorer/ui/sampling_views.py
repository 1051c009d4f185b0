"""Helpers and charts for the Sampling page: the inverse transform method, rejection sampling and
Metropolis-Hastings, drawn from the built-in samplers (through the registry) on the host.

Colours: the uniform in blue, the target in orange, mappings in grey (as the page's legend says).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import scipy.stats as stats
import torch

from explorer.components import Sampler
from explorer.ui.views import histogram_data

UNIFORM = "#1f77b4"
TARGET = "#ff7f0e"
TARGET_LINE = "#c44e00"  # the target density p(x) as a line: the target's orange, dark enough over orange bars
GREY = "#8c8c8c"
REJECTED = "#b0b0b0"
NICE_SHAPES = {
    "gamma": {"a": 2.0}, "beta": {"a": 2.0, "b": 5.0}, "t": {"df": 3.0}, "chi2": {"df": 3.0}, "lognorm": {"s": 0.5},
    "weibull_min": {"c": 1.5}, "weibull_max": {"c": 1.5}, "skewnorm": {"a": 4.0}, "gennorm": {"beta": 1.5},
    "pareto": {"b": 3.0}, "invgamma": {"a": 3.0}, "f": {"dfn": 5.0, "dfd": 10.0}, "triang": {"c": 0.3},
    "truncnorm": {"a": -1.0, "b": 2.0}, "loggamma": {"c": 2.0}, "powerlaw": {"a": 2.0},
}


def continuous_distributions() -> list[str]:
    """Every continuous distribution in scipy.stats (``norm``, ``gamma``, ...)."""
    return sorted(n for n in dir(stats) if isinstance(getattr(stats, n, None), stats.rv_continuous))


def shape_names(dist: str) -> list[str]:
    shapes = getattr(stats, dist).shapes or ""
    return [s.strip() for s in shapes.split(",") if s.strip()]


def shape_defaults(dist: str) -> dict[str, float]:
    """Sensible shape parameters: hand-picked for common families, else scipy's own test values."""
    names = shape_names(dist)
    if dist in NICE_SHAPES:
        return dict(NICE_SHAPES[dist])
    try:
        from scipy.stats._distr_params import distcont  # scipy's test values; private, so optional

        for name, args in distcont:
            if name == dist and len(args) == len(names):
                return {n: float(f"{a:.3g}") for n, a in zip(names, args)}
    except Exception:  # pragma: no cover - scipy layout changes
        pass
    return {n: 1.0 for n in names}


def shapes_text(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def make_generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy().reshape(-1)


def grid_for(sampler: Sampler, samples: np.ndarray | None = None, n: int = 400) -> np.ndarray:
    """An x grid over the sampler's plot range (its ``bounds``), widened to the samples' 0.5-99.5%."""
    if sampler.bounds:
        lo, hi = sampler.bounds[0]
    else:
        lo, hi = -3.0, 3.0
    if samples is not None and samples.size:
        qlo, qhi = np.percentile(samples, [0.5, 99.5])
        lo, hi = min(lo, qlo), max(hi, qhi)
    return np.linspace(lo, hi, n)


def density(sampler: Sampler, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        lp = sampler.log_prob(torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1))
    return np.exp(_np(lp))


def cdf(sampler: Sampler, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _np(sampler.cdf(torch.as_tensor(x, dtype=torch.float64)))


def ks_test(samples: np.ndarray, sampler: Sampler) -> tuple[float, float]:
    """Kolmogorov-Smirnov test of the samples against the sampler's exact cdf: (statistic, p-value)."""
    res = stats.kstest(samples, lambda v: cdf(sampler, np.asarray(v, dtype=float)))
    return float(res.statistic), float(res.pvalue)


# ----------------------------------------------------------------------------------------------
# Inverse transform
# ----------------------------------------------------------------------------------------------
def inverse_transform_chart(x: np.ndarray, pdf: np.ndarray, F: np.ndarray, u_lines: np.ndarray,
                            x_lines: np.ndarray, width: int = 520) -> alt.HConcatChart:
    """Left: the uniform density of u (blue). Right: F(x) (grey) with a few u_i carried across to
    x_i = F^-1(u_i) and down to the x axis, over the target density p(x) (orange, right axis)."""
    lo, hi = float(x[0]), float(x[-1])
    X = alt.Scale(domain=[lo, hi], nice=False)
    U = alt.Scale(domain=[0, 1])
    uni = pd.DataFrame({"d0": [0.0], "d1": [1.0], "u0": [0.0], "u1": [1.0]})
    left = alt.Chart(uni).mark_rect(color=UNIFORM, opacity=0.35, stroke=UNIFORM, strokeWidth=2).encode(
        x=alt.X("d0:Q", scale=alt.Scale(domain=[1.4, 0]), title="density of u"), x2="d1:Q",
        y=alt.Y("u0:Q", scale=U, title="u ~ Uniform(0, 1)"), y2="u1:Q",
    ).properties(width=110, height=300)
    curve = pd.DataFrame({"x": x, "F(x)": np.clip(F, 0, 1), "p(x)": pdf})
    lines = []
    for u, xv in zip(u_lines, x_lines):
        if np.isfinite(xv) and lo <= xv <= hi:
            lines.append({"x": lo, "y": u, "x2": xv, "y2": u, "u": u, "F^-1(u)": xv})
            lines.append({"x": xv, "y": u, "x2": xv, "y2": 0.0, "u": u, "F^-1(u)": xv})
    seg = pd.DataFrame(lines or [{"x": lo, "y": 0.0, "x2": lo, "y2": 0.0, "u": 0.0, "F^-1(u)": lo}])
    tips = [alt.Tooltip("u:Q", format=".3f"), alt.Tooltip("F^-1(u):Q", format=".3f")]
    cdf_layer = alt.Chart(curve).mark_line(color=GREY, strokeWidth=2.5).encode(
        x=alt.X("x:Q", scale=X, title="x = F⁻¹(u)"), y=alt.Y("F(x):Q", scale=U, title="F(x)"))
    map_layer = alt.Chart(seg).mark_rule(color=GREY, strokeWidth=1, strokeDash=[4, 3], clip=True).encode(
        x=alt.X("x:Q", scale=X), y=alt.Y("y:Q", scale=U), x2="x2:Q", y2="y2:Q", tooltip=tips)
    ends = alt.Chart(seg[seg["y2"] == 0.0]).mark_point(shape="triangle-down", filled=True, color=TARGET, size=50).encode(
        x=alt.X("x2:Q", scale=X), y=alt.Y("y2:Q", scale=U), tooltip=tips)
    starts = alt.Chart(seg[seg["y2"] != 0.0]).mark_point(filled=True, color=UNIFORM, size=40).encode(
        x=alt.X("x:Q", scale=X), y=alt.Y("y:Q", scale=U), tooltip=tips)
    dens = alt.Chart(curve).mark_area(color=TARGET, opacity=0.25, line={"color": TARGET, "strokeWidth": 2}).encode(
        x=alt.X("x:Q", scale=X), y=alt.Y("p(x):Q", title="target density p(x)", axis=alt.Axis(orient="right", titleColor=TARGET)))
    mapping = alt.layer(cdf_layer, map_layer, ends, starts)
    right = alt.layer(dens, mapping).resolve_scale(y="independent").properties(width=width, height=300)
    return alt.hconcat(left, right, spacing=4)


def histogram_chart(samples: np.ndarray, x: np.ndarray, pdf: np.ndarray, colour: str = TARGET, bins: int = 60,
                    height: int = 280) -> alt.LayerChart:
    """A density-normalised histogram of ``samples`` with the true density p(x) over it."""
    lo, hi = float(x[0]), float(x[-1])
    hist = histogram_data(samples, lo, hi, bins)
    X = alt.Scale(domain=[lo, hi], nice=False)
    bars = alt.Chart(hist).mark_rect(color=colour, opacity=0.45).encode(
        x=alt.X("left:Q", scale=X, title="x"), x2="right:Q", y=alt.Y("density:Q", title="density"),
        tooltip=[alt.Tooltip("left:Q", format=".3f"), alt.Tooltip("right:Q", format=".3f"), "count:Q"])
    line = alt.Chart(pd.DataFrame({"x": x, "p": pdf, "what": "true density p(x)"})).mark_line(color=TARGET_LINE, strokeWidth=2).encode(
        x=alt.X("x:Q", scale=X), y="p:Q", tooltip=[alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("p:Q", format=".3f")])
    return alt.layer(bars, line).properties(height=height)


# ----------------------------------------------------------------------------------------------
# Rejection sampling
# ----------------------------------------------------------------------------------------------
def rejection_chart(x: np.ndarray, y: np.ndarray, accepted: np.ndarray, grid: np.ndarray, pdf: np.ndarray,
                    envelope: np.ndarray, max_points: int = 3000, height: int = 380) -> alt.LayerChart:
    """Proposals (x, u M q(x)) under the envelope M q(x): accepted below p(x) in orange, rejected in grey."""
    n = min(len(x), max_points)
    pts = pd.DataFrame({"x": x[:n], "u·M·q(x)": y[:n], "proposal": np.where(accepted[:n], "accepted", "rejected")})
    curves = pd.concat([
        pd.DataFrame({"x": grid, "y": pdf, "curve": "target p(x)"}),
        pd.DataFrame({"x": grid, "y": envelope, "curve": "envelope M·q(x)"}),
    ])
    lo, hi = float(grid[0]), float(grid[-1])
    X = alt.Scale(domain=[lo, hi], nice=False)
    dots = alt.Chart(pts).mark_circle(size=9, opacity=0.6).encode(
        x=alt.X("x:Q", scale=X, title="x ~ q"), y=alt.Y("u·M·q(x):Q", title="height u · M q(x)"),
        color=alt.Color("proposal:N", scale=alt.Scale(domain=["accepted", "rejected"], range=[TARGET, REJECTED]),
                        legend=alt.Legend(orient="top", title=None)))
    lines = alt.Chart(curves).mark_line(strokeWidth=2.2).encode(
        x=alt.X("x:Q", scale=X), y="y:Q",
        color=alt.Color("curve:N", scale=alt.Scale(domain=["target p(x)", "envelope M·q(x)"], range=[TARGET_LINE, UNIFORM]),
                        legend=alt.Legend(orient="top", title=None)),
        strokeDash=alt.StrokeDash("curve:N", scale=alt.Scale(domain=["target p(x)", "envelope M·q(x)"], range=[[1, 0], [6, 3]]), legend=None))
    return alt.layer(dots, lines).resolve_scale(color="independent").properties(height=height)


# ----------------------------------------------------------------------------------------------
# Metropolis-Hastings
# ----------------------------------------------------------------------------------------------
def acceptance_from_trace(trace: np.ndarray) -> float:
    """The fraction of steps where the chain moved (a rejected proposal repeats the state)."""
    return float(np.mean(trace[1:] != trace[:-1])) if len(trace) > 1 else 0.0


def autocorrelation(trace: np.ndarray, max_lag: int = 100) -> np.ndarray:
    """rho_k for k = 0..max_lag (FFT estimate, normalised so rho_0 = 1)."""
    x = np.asarray(trace, dtype=float) - np.mean(trace)
    n = len(x)
    if n < 2 or not np.any(x):
        return np.ones(1)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    acov = np.fft.irfft(f * np.conj(f), size)[:n]
    return (acov / acov[0])[: max_lag + 1]


def effective_sample_size(trace: np.ndarray, rho: np.ndarray) -> float:
    """n / (1 + 2 sum rho_k), summing until the first negative rho_k (Geyer's initial positive sequence, simplified)."""
    total = 0.0
    for r in rho[1:]:
        if r < 0:
            break
        total += r
    return float(len(trace) / (1 + 2 * total))


def trace_chart(trace: np.ndarray, burn_in: int, height: int = 300, max_points: int = 4000) -> alt.LayerChart:
    idx = np.unique(np.linspace(0, len(trace) - 1, min(len(trace), max_points)).astype(int))
    df = pd.DataFrame({"step": idx, "x": trace[idx], "phase": np.where(idx < burn_in, "burn-in", "kept")})
    line = alt.Chart(df).mark_line(strokeWidth=1).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("x:Q", title="state x"),
        color=alt.Color("phase:N", scale=alt.Scale(domain=["burn-in", "kept"], range=[REJECTED, TARGET]),
                        legend=alt.Legend(orient="right", title="one chain")))
    return line.properties(height=height)


def acf_chart(rho: np.ndarray, height: int = 260) -> alt.Chart:
    """A stick plot of rho_k against the lag k."""
    df = pd.DataFrame({"lag": np.arange(len(rho)), "autocorrelation": rho, "zero": 0.0})
    return alt.Chart(df).mark_rule(color=UNIFORM, strokeWidth=2).encode(
        x=alt.X("lag:Q", scale=alt.Scale(domain=[0, max(len(rho) - 1, 1)], nice=False)),
        y=alt.Y("zero:Q", title="autocorrelation ρ_k", scale=alt.Scale(domain=[min(-0.1, float(rho.min())), 1])),
        y2="autocorrelation:Q",
        tooltip=["lag:Q", alt.Tooltip("autocorrelation:Q", format=".3f")],
    ).properties(height=height)


def safe_create(reg: Any, name: str, params: dict[str, Any]) -> tuple[Sampler | None, str | None]:
    """A sampler from the registry, or the message saying why not (a bad parameter, a missing plugin)."""
    from explorer.errors import ExplorerError

    try:
        return reg.create("sampler", name, params, where=name), None
    except ExplorerError as exc:
        return None, str(exc)
