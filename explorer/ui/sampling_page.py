"""Sampling: three classical ways to turn random numbers into samples of a chosen distribution,
made visible with the built-in samplers (inverse-transform, rejection, metropolis-hastings)."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from explorer.capabilities import has_capability
from explorer.ui import sampling_views as sv
from explorer.ui import state
from explorer.ui.widgets import params_widgets

reg = state.registry()


def offering(*needed: str, preferred: str) -> list[str]:
    """The installed samplers that declare every capability in ``needed``, ``preferred`` first."""
    names = [n for n, info in reg.components["sampler"].items() if all(has_capability(info.cls, c) for c in needed)]
    return sorted(names, key=lambda n: (n != preferred, n))


TARGET = ("distribution", "shapes", "loc", "scale")  # the scipy target every built-in 1-D sampler declares


def target_controls(prefix: str, default: str) -> dict[str, object]:
    """The same target controls on every tab: a scipy.stats distribution from a list, its own shape
    parameters by name, loc and scale."""
    names = sv.continuous_distributions()
    dist = st.selectbox("target distribution (scipy.stats)", names, index=names.index(default) if default in names else 0,
                        key=f"{prefix}.dist",
                        help="Any continuous distribution in scipy.stats.")
    shapes = {shape: st.number_input(f"shape {shape}", value=float(value), format="%g", key=f"{prefix}.{dist}.{shape}")
              for shape, value in sv.shape_defaults(dist).items()}
    loc = st.number_input("loc", value=0.0, format="%g", key=f"{prefix}.loc")
    scale = st.number_input("scale", value=1.0, min_value=1e-9, format="%g", key=f"{prefix}.scale")
    return {"distribution": dist, "shapes": sv.shapes_text(shapes), "loc": loc, "scale": scale}


def sampler_controls(name: str, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Widgets for a sampler's declared parameters; a scipy target (the built-ins') gets the shared controls."""
    params = reg.get("sampler", name).cls.params
    declared = {p.name: p for p in params}
    values: dict[str, object] = {}
    if set(TARGET) <= set(declared):
        values = target_controls(prefix, str(declared["distribution"].default))
    values.update(params_widgets(params, prefix, skip=skip + tuple(values)))
    return values


def _two_modes() -> None:
    """The built-in sampler's controls set to a two-mode target that a small-step chain cannot cross."""
    st.session_state.update({"samp.mh.dist": "norm", "samp.mh.loc": 0.0, "samp.mh.scale": 1.0,
                             "samp.mh.modes": "10", "samp.mh.step": 1.0, "samp.mh.sampler": "metropolis-hastings"})


def choose(names: list[str], key: str) -> str:
    return names[0] if len(names) == 1 else st.selectbox("sampler", names, key=key,
                                                          help="Every installed sampler that offers this view.")


st.title("Sampling")
st.caption("Before any network: the exact transforms. Uniform noise in blue, the target distribution in orange, "
           "the mapping between them in grey.")

tab_inv, tab_rej, tab_mh = st.tabs(["Inverse transform", "Rejection sampling", "Metropolis–Hastings"])

# ------------------------------------------------------------------------------------------------
with tab_inv:
    st.markdown("If F is the cdf of the target, then x = F⁻¹(u) with u ~ Uniform(0, 1) has exactly that "
                "distribution (Devroye 1986, §II.2): a **learned transform** that needs no learning. A GAN's "
                "generator learns such a map when no formula for F⁻¹ exists.")
    st.latex(r"u \sim \mathcal{U}(0,1),\quad x = F^{-1}(u) \;\Rightarrow\; P(x \le t) = P(u \le F(t)) = F(t)")
    controls, body = st.columns([1, 3], gap="large")
    with controls:
        target = target_controls("samp.inv", "gamma")
        n = st.select_slider("samples", [100, 300, 1000, 3000, 10_000, 30_000, 100_000], value=10_000, key="samp.inv.n")
        seed = st.number_input("seed", value=0, min_value=0, step=1, key="samp.inv.seed")
    with body:
        sampler, error = sv.safe_create(reg, "inverse-transform", target)
        if error:
            st.error(error)
        else:
            with torch.no_grad():
                samples = sampler.sample(int(n), sv.make_generator(seed), "cpu").double().numpy().reshape(-1)
                u_lines = np.linspace(0.05, 0.95, 13)
                x_lines = sampler.icdf(torch.as_tensor(u_lines, dtype=torch.float64)).numpy()
            x = sv.grid_for(sampler)
            pdf, F = sv.density(sampler, x), sv.cdf(sampler, x)
            st.altair_chart(sv.inverse_transform_chart(x, pdf, F, u_lines, x_lines), width="content")
            st.markdown(f"**{int(n):,} samples of F⁻¹(u)** (bars) over the true density p(x) (line)")
            st.altair_chart(sv.histogram_chart(samples, x, pdf), width="stretch")
            stat, p = sv.ks_test(samples, sampler)
            c = st.columns(3)
            c[0].metric("KS statistic D", f"{stat:.4f}", help="sup |empirical cdf − F|: scipy.stats.kstest")
            c[1].metric("p-value", f"{p:.3g}", help="Large when the samples are consistent with F.")
            c[2].metric("expected D ≈", f"{0.87 / np.sqrt(len(samples)):.4f}", help="The typical size of D under the null: about 0.87/√n.")

# ------------------------------------------------------------------------------------------------
with tab_rej:
    st.markdown("Propose x from an easy density q and a height u·M·q(x) under the envelope M·q(x) ≥ p(x); keep x when "
                "the point falls under p(x) (von Neumann 1951). The kept points are exact draws from p, and a "
                "fraction 1/M of proposals is kept: the tighter the envelope, the cheaper the samples.")
    st.latex(r"x \sim q,\ u \sim \mathcal{U}(0,1):\ \text{accept if } u\,M\,q(x) \le p(x);\qquad P(\text{accept}) = 1/M")
    rejecters = offering("propose", "envelope", preferred="rejection")
    if not rejecters:
        st.warning("No installed sampler offers `propose` and `envelope` (the built-in `rejection` does; see the Plugins page).")
    else:
        controls, body = st.columns([1, 3], gap="large")
        with controls:
            rej_name = choose(rejecters, "samp.rej.sampler")
            params = sampler_controls(rej_name, f"samp.rej.{rej_name}" if rej_name != "rejection" else "samp.rej")
            n = st.select_slider("proposals", [200, 500, 1000, 2000, 5000, 20_000], value=2000, key="samp.rej.n")
            seed = st.number_input("seed", value=0, min_value=0, step=1, key="samp.rej.seed")
        with body:
            sampler, error = sv.safe_create(reg, rej_name, params)
            if error:
                st.error(error)
            else:
                with torch.no_grad():
                    x, y, p, acc = sampler.propose(int(n), sv.make_generator(seed), "cpu")
                    grid = sv.grid_for(sampler)
                    envelope = sampler.envelope(torch.as_tensor(grid, dtype=torch.float32)).double().numpy()
                x, y, acc = x.double().numpy(), y.double().numpy(), acc.numpy()
                pdf = sv.density(sampler, grid)
                st.altair_chart(sv.rejection_chart(x, y, acc, grid, pdf, envelope), width="stretch")
                expected = sampler.stats().get("expected_acceptance_rate", float("nan"))
                c = st.columns(3)
                c[0].metric("accepted", f"{int(acc.sum()):,} of {len(acc):,}")
                c[1].metric("acceptance rate", f"{acc.mean():.3f}", delta=f"{acc.mean() - expected:+.3f} vs 1/M",
                            delta_color="off")
                c[2].metric("1/M", f"{expected:.3f}", help="The expected acceptance rate when p and q are normalised densities.")
                kept = x[acc]
                if kept.size > 1:
                    st.markdown(f"**{kept.size:,} accepted points** (bars) over the target density p(x) (line)")
                    st.altair_chart(sv.histogram_chart(kept, grid, pdf), width="stretch")
                    stat, pv = sv.ks_test(kept, sampler)
                    st.caption(f"KS test of the accepted points against p: D = {stat:.4f}, p-value = {pv:.3g}")

# ------------------------------------------------------------------------------------------------
with tab_mh:
    st.markdown("A random walk that proposes x' = x + step·ε and moves there with probability min(1, p(x')/p(x)) "
                "(Metropolis et al. 1953; Hastings 1970). Its stationary distribution is p, but successive states are "
                "correlated: burn-in discards the start, and the autocorrelation says how many steps one independent "
                "sample costs. Too small a step accepts nearly everything and crawls; too large a step rejects nearly everything.")
    st.latex(r"x' = x + \sigma\varepsilon,\ \varepsilon\sim\mathcal{N}(0,1);\qquad "
             r"\alpha(x \to x') = \min\!\left(1, \frac{p(x')}{p(x)}\right)")
    st.markdown("**Several modes.** With *more modes at* = 10 the target is an equal mixture of two normals, at 0 and "
                "at 10. The chain starts in the mode at 0; with step 1 it almost never crosses the empty valley, so the "
                "kept states show one mode where p has two and the trace is a flat band. A step near the distance "
                "between the modes hops across, at the price of rejecting most proposals.")
    st.button("Show a chain stuck in one of two modes", key="samp.mh.two_modes", on_click=_two_modes,
              help="norm target, a second mode at 10, step 1")
    chains = offering("trace", preferred="metropolis-hastings")
    if not chains:
        st.warning("No installed sampler offers `trace` (the built-in `metropolis-hastings` does; see the Plugins page).")
    else:
        controls, body = st.columns([1, 3], gap="large")
        with controls:
            mh_name = choose(chains, "samp.mh.sampler")
            params = sampler_controls(mh_name, f"samp.mh.{mh_name}" if mh_name != "metropolis-hastings" else "samp.mh",
                                      skip=("chains", "thin"))
            n_steps = st.select_slider("chain length", [500, 1000, 2000, 5000, 10_000, 20_000], value=5000, key="samp.mh.n")
            seed = st.number_input("seed", value=0, min_value=0, step=1, key="samp.mh.seed")
        with body:
            sampler, error = sv.safe_create(reg, mh_name, params)
            if error:
                st.error(error)
            else:
                with torch.no_grad():
                    trace = sampler.trace(int(n_steps), sv.make_generator(seed), "cpu").double().numpy()
                burn = min(int(params.get("burn_in", 0)), len(trace) - 2)
                kept = trace[burn:]
                rho = sv.autocorrelation(kept, 100)
                grid = sv.grid_for(sampler, kept)
                pdf = sv.density(sampler, grid)
                st.markdown("**Trace of one chain** (grey: burn-in, discarded)")
                st.altair_chart(sv.trace_chart(trace, burn), width="stretch")
                left, right = st.columns(2)
                with left:
                    st.markdown(f"**{kept.size:,} kept states** (bars) over p(x) (line)")
                    st.altair_chart(sv.histogram_chart(kept, grid, pdf, height=260), width="stretch")
                with right:
                    st.markdown("**Autocorrelation** of the kept states against the lag")
                    st.altair_chart(sv.acf_chart(rho), width="stretch")
                c = st.columns(3)
                c[0].metric("acceptance rate", f"{sv.acceptance_from_trace(trace):.3f}",
                            help="The fraction of steps where the chain moved; about 0.2–0.5 mixes well for a random walk.")
                c[1].metric("effective sample size", f"{sv.effective_sample_size(kept, rho):,.0f}",
                            help="n / (1 + 2 Σ ρ_k): how many independent draws the kept trace is worth.")
                c[2].metric("kept states", f"{kept.size:,}")
                centres = [float(params.get("loc", 0.0)), *params.get("modes", [])] if params.get("modes") else []
                if len(centres) > 1 and isinstance(params["modes"], list):
                    nearest = np.abs(kept[:, None] - np.asarray(centres)[None, :]).argmin(axis=1)
                    shares = ", ".join(f"at {c:g}: {np.mean(nearest == i):.0%}" for i, c in enumerate(centres))
                    st.caption(f"Kept states nearest each mode — {shares} (p puts {1 / len(centres):.0%} in each).")
