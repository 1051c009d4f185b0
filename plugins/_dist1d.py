"""A scipy.stats continuous distribution with torch-side ``icdf``, ``log_prob`` and ``cdf``.

Not a plugin: the helper behind ``inverse-transform``, ``rejection`` and ``metropolis-hastings``.
scipy validates the distribution (name, shape parameters, loc, scale); the hot paths run in torch
on the caller's device wherever a closed form exists, so sampling needs no host round trip.
"""

from __future__ import annotations

import difflib
import math
import re
from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.stats as st
import torch
from torch import Tensor

from explorer.errors import SpecError, choices_text
from explorer.params import Param

#: families whose standard quantile function F0^-1(u) (loc 0, scale 1) is written in torch below
CLOSED_FORM_ICDF = (
    "norm", "uniform", "expon", "laplace", "cauchy", "logistic", "gumbel_r", "weibull_min", "lognorm", "halfnorm",
)
#: families whose standard log-density is computed in torch (torch.distributions or a closed form)
TORCH_LOG_PROB = (
    "norm", "uniform", "expon", "laplace", "cauchy", "logistic", "gamma", "beta", "t", "chi2", "gumbel_r",
    "weibull_min", "lognorm", "halfnorm",
)
#: families whose standard cdf is computed in torch
TORCH_CDF = (
    "norm", "uniform", "expon", "laplace", "cauchy", "logistic", "gamma", "chi2", "gumbel_r", "weibull_min",
    "lognorm", "halfnorm",
)

#: the quantile table: TABLE_POINTS values of u, evenly spaced in logit(u) between TABLE_EPS and 1 - TABLE_EPS
TABLE_POINTS = 8193
TABLE_EPS = 1e-7

_SQRT2 = math.sqrt(2.0)
_SHAPES_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*[=:]\s*([^,;\s]+)\s*")


@lru_cache(maxsize=1)
def continuous_names() -> tuple[str, ...]:
    """The names of every continuous distribution in scipy.stats (``norm``, ``gamma``, ...)."""
    return tuple(sorted(n for n in dir(st) if isinstance(getattr(st, n, None), st.rv_continuous)))


def parse_shapes(text: str, field: str = "shapes") -> dict[str, float]:
    """Parse ``"a=2.0, b=5.0"`` (commas or semicolons; ``:`` also works) into ``{"a": 2.0, "b": 5.0}``."""
    out: dict[str, float] = {}
    for item in re.split(r"[,;]", text or ""):
        if not item.strip():
            continue
        m = _SHAPES_RE.fullmatch(item)
        if not m:
            raise SpecError(field, f"cannot read {item.strip()!r}: write shape parameters as name=value, e.g. \"a=2.0, b=5.0\"")
        key, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            raise SpecError(field, f"{key}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise SpecError(field, f"{key}={raw} must be a finite number")
        if key in out:
            raise SpecError(field, f"shape parameter {key!r} is given twice")
        out[key] = value
    return out


def _norm_icdf(u: Tensor) -> Tensor:
    return torch.special.ndtri(u)


def _norm_cdf(z: Tensor) -> Tensor:
    return torch.special.ndtr(z)


class ScipyDist1D:
    """A validated scipy.stats continuous distribution ``name(**shape_params, loc=loc, scale=scale)``.

    ``icdf(u)``: a closed form in torch for the families in :data:`CLOSED_FORM_ICDF`; otherwise a
    quantile table: ``TABLE_POINTS`` (8193) values of u spaced evenly in logit(u) = log(u / (1 - u))
    between 1e-7 and 1 - 1e-7 (so both tails are resolved), x = scipy's ``ppf(u)``, held on the device
    and linearly interpolated in logit(u). u beyond the table's ends is clamped to them: the table path
    truncates each tail at probability 1e-7.

    ``log_prob(x)``: torch for the families torch.distributions has (:data:`TORCH_LOG_PROB`), by standardising,
    log p(x) = log p0((x - loc) / scale) - log scale, with p0 the standard density; otherwise scipy on
    the host (a numpy round trip). ``cdf`` likewise. All three work elementwise and keep x's shape.
    """

    def __init__(self, name: str, shape_params: dict[str, float] | None = None, loc: float = 0.0,
                 scale: float = 1.0, prefix: str = "") -> None:
        def field(f: str) -> str:
            return f"{prefix}.{f}" if prefix else f

        names = continuous_names()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise SpecError(field("distribution"), f"{name!r} is not a continuous distribution in scipy.stats; {hint}"
                                                   "use a scipy.stats name such as norm, expon, gamma, beta, t, lognorm")
        self.name = name
        self.dist: st.rv_continuous = getattr(st, name)
        expected = [s.strip() for s in (self.dist.shapes or "").split(",") if s.strip()]
        given = dict(shape_params or {})
        unknown = [k for k in given if k not in expected]
        missing = [k for k in expected if k not in given]
        if unknown or missing:
            if expected:
                needs = f"{name} takes shape parameters ({', '.join(expected)}); set shapes = \"{', '.join(f'{s}=...' for s in expected)}\""
            else:
                needs = f"{name} takes no shape parameters; leave shapes empty"
            what = ([f"unknown shape parameter(s) {choices_text(unknown)}"] if unknown else []) + (
                [f"missing {choices_text(missing)}"] if missing else [])
            raise SpecError(field("shapes"), f"{'; '.join(what)}: {needs}")
        if not (math.isfinite(scale) and scale > 0):
            raise SpecError(field("scale"), f"scale must be a positive number, got {scale}")
        if not math.isfinite(loc):
            raise SpecError(field("loc"), f"loc must be a finite number, got {loc}")
        self.shape_params = {k: float(given[k]) for k in expected}
        self.loc = float(loc)
        self.scale = float(scale)
        try:
            with np.errstate(all="ignore"):
                self.frozen = self.dist(*self.shape_params.values(), loc=self.loc, scale=self.scale)
                mid = float(self.frozen.ppf(0.5))
        except Exception as exc:  # scipy raises for some malformed arguments
            mid, why = math.nan, f" ({exc})"
        else:
            why = ""
        if not math.isfinite(mid):
            shown = ", ".join(f"{k}={v:g}" for k, v in self.shape_params.items())
            raise SpecError(field("shapes"), f"{shown} is outside the valid range of {name}'s shape parameters "
                                             f"({', '.join(expected)}){why}; see scipy.stats.{name} for the allowed values")
        self._field = field
        self._host_table: Tensor | None = None
        self._tables: dict[tuple[str, torch.dtype], Tensor] = {}

    # -- description --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        sp = "".join(f"{k}={v:g}, " for k, v in self.shape_params.items())
        return f"{self.name}({sp}loc={self.loc:g}, scale={self.scale:g})"

    @property
    def icdf_method(self) -> str:
        """``closed-form`` or ``table``: which path :meth:`icdf` takes."""
        return "closed-form" if self.name in CLOSED_FORM_ICDF else "table"

    def support(self) -> tuple[float, float]:
        """The exact support [a, b] (may be infinite)."""
        a, b = self.frozen.support()
        return float(a), float(b)

    def support_bounds(self, q: float = 0.001) -> tuple[float, float]:
        """A plot range: (ppf(q), ppf(1 - q))."""
        return float(self.frozen.ppf(q)), float(self.frozen.ppf(1.0 - q))

    # -- torch-side functions ---------------------------------------------------------------------
    def icdf(self, u: Tensor) -> Tensor:
        """The quantile function F^-1(u), elementwise on u's device and dtype."""
        if self.name in CLOSED_FORM_ICDF:
            # keep u strictly inside (0, 1) so that the closed forms stay finite
            half_eps = torch.finfo(u.dtype).eps / 2
            u = u.clamp(half_eps, 1.0 - half_eps)
            return self.loc + self.scale * self._standard_icdf(u)
        return self._table_icdf(u)

    def _standard_icdf(self, u: Tensor) -> Tensor:
        n, p = self.name, self.shape_params
        if n == "norm":
            return _norm_icdf(u)
        if n == "uniform":
            return u
        if n == "expon":
            return -torch.log1p(-u)
        if n == "laplace":
            h = u - 0.5
            return -torch.sign(h) * torch.log1p(-2.0 * h.abs())
        if n == "cauchy":
            return torch.tan(math.pi * (u - 0.5))
        if n == "logistic":
            return torch.log(u) - torch.log1p(-u)
        if n == "gumbel_r":
            return -torch.log(-torch.log(u))
        if n == "weibull_min":
            return (-torch.log1p(-u)) ** (1.0 / p["c"])
        if n == "lognorm":
            return torch.exp(p["s"] * _norm_icdf(u))
        if n == "halfnorm":
            return _SQRT2 * torch.erfinv(u)
        raise AssertionError(n)

    def quantile_table(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
        """x = ppf(u) at the logit-spaced u grid, computed once in float64 and cached per device."""
        key = (str(torch.device(device)), dtype)
        if key not in self._tables:
            if self._host_table is None:
                t = np.linspace(_logit(TABLE_EPS), _logit(1.0 - TABLE_EPS), TABLE_POINTS)
                with np.errstate(all="ignore"):
                    x = np.asarray(self.frozen.ppf(1.0 / (1.0 + np.exp(-t))), dtype=np.float64)
                if not np.all(np.isfinite(x)):
                    raise SpecError(self._field("distribution"), f"scipy could not compute the quantiles of {self!r} "
                                                                 "(non-finite ppf); try other shape parameters")
                # ppf is monotone; the running maximum removes scipy's root-finding noise where there is any
                self._host_table = torch.from_numpy(np.maximum.accumulate(x))
            self._tables[key] = self._host_table.to(device=device, dtype=dtype)
        return self._tables[key]

    def _table_icdf(self, u: Tensor) -> Tensor:
        table = self.quantile_table(u.device, u.dtype if u.dtype == torch.float64 else torch.float32)
        t0, t1 = _logit(TABLE_EPS), _logit(1.0 - TABLE_EPS)
        uc = u.to(table.dtype).clamp(TABLE_EPS, 1.0 - TABLE_EPS)
        t = torch.log(uc) - torch.log1p(-uc)
        pos = ((t - t0) * ((TABLE_POINTS - 1) / (t1 - t0))).clamp(0.0, TABLE_POINTS - 1)
        i = pos.floor().clamp(max=TABLE_POINTS - 2).long()
        w = pos - i.to(pos.dtype)
        return (table[i] * (1.0 - w) + table[i + 1] * w).to(u.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), elementwise; -inf outside the support."""
        if self.name not in TORCH_LOG_PROB:
            return self._host(x, self.frozen.logpdf)
        z = (x - self.loc) / self.scale
        return self._standard_log_prob(z) - math.log(self.scale)

    def _standard_log_prob(self, z: Tensor) -> Tensor:
        """log p0(z) of the standard form (loc 0, scale 1): the closed forms torch.distributions uses,
        written with Python-float constants so that no tensor is made per call (MH calls this every step)."""
        n, p = self.name, self.shape_params
        lg = math.lgamma

        def on(lo: float, f: Callable[[Tensor], Tensor], hi: float = math.inf) -> Tensor:
            # evaluate f only inside the support [lo, hi] (the formulas give nan outside); -inf elsewhere
            inside = (z >= lo) & (z <= hi)
            safe = 0.5 if hi == 1.0 else 1.0
            return torch.where(inside, f(torch.where(inside, z, torch.full_like(z, safe))), torch.full_like(z, -math.inf))

        if n == "norm":
            return -0.5 * z * z - 0.5 * math.log(2 * math.pi)
        if n == "uniform":
            return on(0.0, torch.zeros_like, 1.0)
        if n == "expon":
            return on(0.0, torch.neg)
        if n == "laplace":
            return -z.abs() - math.log(2.0)
        if n == "cauchy":
            return -torch.log1p(z * z) - math.log(math.pi)
        if n == "logistic":
            return -z - 2.0 * torch.nn.functional.softplus(-z)
        if n == "gumbel_r":
            return -z - torch.exp(-z)
        if n == "halfnorm":
            return on(0.0, lambda v: -0.5 * v * v + 0.5 * math.log(2 / math.pi))
        if n == "gamma":  # z^(a-1) e^-z / Gamma(a)
            a = p["a"]
            return on(0.0, lambda v: torch.special.xlogy(a - 1.0, v) - v - lg(a))
        if n == "chi2":  # gamma(k/2) with scale 2
            k2 = p["df"] / 2
            return on(0.0, lambda v: torch.special.xlogy(k2 - 1.0, v) - v / 2 - k2 * math.log(2.0) - lg(k2))
        if n == "beta":  # z^(a-1) (1-z)^(b-1) / B(a, b)
            a, b = p["a"], p["b"]
            lbeta = lg(a) + lg(b) - lg(a + b)
            return on(0.0, lambda v: torch.special.xlogy(a - 1.0, v) + torch.special.xlog1py(b - 1.0, -v) - lbeta, 1.0)
        if n == "t":
            df = p["df"]
            c = lg((df + 1) / 2) - lg(df / 2) - 0.5 * math.log(df * math.pi)
            return c - (df + 1) / 2 * torch.log1p(z * z / df)
        if n == "weibull_min":  # c z^(c-1) exp(-z^c)
            c = p["c"]
            return on(0.0, lambda v: math.log(c) + torch.special.xlogy(c - 1.0, v) - v ** c)
        if n == "lognorm":  # the density is 0 at z = 0: start the support just above it
            s_ = p["s"]
            return on(torch.finfo(z.dtype).tiny, lambda v: -torch.log(v) - math.log(s_) - 0.5 * math.log(2 * math.pi)
                      - torch.log(v) ** 2 / (2 * s_ * s_))
        raise AssertionError(n)

    def cdf(self, x: Tensor) -> Tensor:
        """F(x), elementwise."""
        if self.name not in TORCH_CDF:
            return self._host(x, self.frozen.cdf)
        z = (x - self.loc) / self.scale
        n, p = self.name, self.shape_params
        pos = z.clamp_min(0.0)
        if n == "norm":
            return _norm_cdf(z)
        if n == "uniform":
            return z.clamp(0.0, 1.0)
        if n == "expon":
            return -torch.expm1(-pos)
        if n == "laplace":
            return torch.where(z < 0, 0.5 * torch.exp(-z.abs()), 1.0 - 0.5 * torch.exp(-z.abs()))
        if n == "cauchy":
            return 0.5 + torch.atan(z) / math.pi
        if n == "logistic":
            return torch.sigmoid(z)
        if n == "gumbel_r":
            return torch.exp(-torch.exp(-z))
        if n == "weibull_min":
            return -torch.expm1(-(pos ** p["c"]))
        if n == "lognorm":
            return torch.where(z > 0, _norm_cdf(torch.log(pos.clamp_min(torch.finfo(z.dtype).tiny)) / p["s"]), torch.zeros_like(z))
        if n == "halfnorm":
            return torch.erf(pos / _SQRT2)
        if n == "gamma":
            return torch.special.gammainc(torch.full_like(pos, p["a"]), pos)
        if n == "chi2":
            return torch.special.gammainc(torch.full_like(pos, p["df"] / 2), pos / 2)
        raise AssertionError(n)

    @staticmethod
    def _host(x: Tensor, f: Callable[[np.ndarray], np.ndarray]) -> Tensor:
        with np.errstate(all="ignore"):
            out = np.asarray(f(x.detach().to("cpu", torch.float64).numpy()), dtype=np.float64)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def _logit(u: float) -> float:
    return math.log(u) - math.log1p(-u)


def from_params(config: dict, prefix: str) -> ScipyDist1D:
    """Build the distribution from a component's ``distribution``, ``shapes``, ``loc`` and ``scale`` params.

    ``prefix`` is the component name, so that errors name the field (``rejection.shapes``).
    """
    shapes = parse_shapes(config.get("shapes", ""), f"{prefix}.shapes")
    return ScipyDist1D(config["distribution"], shapes, config["loc"], config["scale"], prefix=prefix)


def target_params(distribution: str, shapes: str, loc: float = 0.0, scale: float = 1.0) -> tuple[Param, ...]:
    """The parameters naming a target distribution, shared by inverse-transform, rejection and metropolis-hastings."""
    return (
        Param("distribution", "str", distribution, "a scipy.stats continuous distribution: norm, expon, gamma, beta, t, ..."),
        Param("shapes", "str", shapes, "the distribution's shape parameters as name=value, e.g. \"a=2.0, b=5.0\" (empty for none)"),
        Param("loc", "float", loc, "location: x = loc + scale * standard variate"),
        Param("scale", "float", scale, "scale (> 0)", low=1e-9, high=1e9),
    )


class ShiftedMixture1D:
    """An equal-weight mixture of one distribution placed at several locations: ``base`` at its own
    ``loc`` and at each of ``modes`` (the same shape and scale, moved). p(x) = (1/K) sum_k p_base(x - s_k).

    Enough for Metropolis-Hastings (``log_prob``, ``cdf``, bounds): a multimodal target on which a
    random walk with a small step stays in the mode it starts in.
    """

    def __init__(self, base: ScipyDist1D, modes: list[float]) -> None:
        self.base = base
        self.shifts = [0.0] + [float(m) - base.loc for m in modes]

    def __repr__(self) -> str:
        where = ", ".join(f"{self.base.loc + s:g}" for s in self.shifts)
        return f"equal mixture of {self.base!r} at loc = {where}"

    @property
    def start(self) -> float:
        """Where chains start: the median of the first component (the one at ``loc``)."""
        return float(self.base.frozen.median())

    def support(self) -> tuple[float, float]:
        lo, hi = self.base.support()
        return lo + min(self.shifts), hi + max(self.shifts)

    def support_bounds(self, q: float = 0.001) -> tuple[float, float]:
        lo, hi = self.base.support_bounds(q)
        return lo + min(self.shifts), hi + max(self.shifts)

    def log_prob(self, x: Tensor) -> Tensor:
        if len(self.shifts) == 1:
            return self.base.log_prob(x)
        parts = torch.stack([self.base.log_prob(x - s) for s in self.shifts])
        return torch.logsumexp(parts, dim=0) - math.log(len(self.shifts))

    def cdf(self, x: Tensor) -> Tensor:
        return torch.stack([self.base.cdf(x - s) for s in self.shifts]).mean(dim=0)


def as_column(x: Tensor) -> Tensor:
    """``[n, 1]`` or ``[n]`` -> ``[n]`` for 1-D samplers' ``log_prob``."""
    if x.dim() >= 2 and x.shape[-1] == 1:
        return x.reshape(x.shape[:-1])
    return x


__all__ = ["ScipyDist1D", "ShiftedMixture1D", "parse_shapes", "continuous_names", "from_params", "target_params", "as_column",
           "CLOSED_FORM_ICDF", "TORCH_LOG_PROB", "TORCH_CDF", "TABLE_POINTS", "TABLE_EPS"]
