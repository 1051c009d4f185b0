"""The mmd objective's estimators against a NumPy brute force: exact to 1e-5 relative, random
Fourier features within a few standard errors over draws, the linear-time statistic exactly (and, over
random pairings, equal on average to the full estimate); gradients; reproducibility from the seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import explorer.metrics as metrics
from explorer.metrics import kernel_sum, mmd2
from explorer.pipeline import Pipeline
from explorer.spec import parse_spec
from explorer.training import Trainer, TrainerConfig
from plugins.mmd import MMD, mmd2_linear, mmd2_rff

SIGMAS = [0.3, 0.7, 1.5, 3.0]


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared with other jobs: one torch thread is several times faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def k_np(a: np.ndarray, b: np.ndarray, sigmas) -> float:
    """The RBF mixture between two points, the slow way."""
    d2 = float(((a - b) ** 2).sum())
    return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas)


def brute_mmd2(x: np.ndarray, y: np.ndarray, sigmas, unbiased: bool = True) -> float:
    """Gretton et al. 2012, Eq. 3 (unbiased) or the V-statistic, by explicit loops over pairs."""
    n, m = len(x), len(y)
    sxx = sum(k_np(x[i], x[j], sigmas) for i in range(n) for j in range(n) if not (unbiased and i == j))
    syy = sum(k_np(y[i], y[j], sigmas) for i in range(m) for j in range(m) if not (unbiased and i == j))
    sxy = sum(k_np(x[i], y[j], sigmas) for i in range(n) for j in range(m))
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


def brute_linear(x: np.ndarray, y: np.ndarray, sigmas) -> float:
    """Gretton et al. 2012, Lemma 14, rows i and h + i paired."""
    h = min(len(x), len(y)) // 2
    return float(np.mean([k_np(x[i], x[h + i], sigmas) + k_np(y[i], y[h + i], sigmas)
                          - k_np(x[i], y[h + i], sigmas) - k_np(x[h + i], y[i], sigmas) for i in range(h)]))


def samples(n: int = 60, m: int = 50, d: int = 2, shift: float = 0.8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64) * 1.3 + shift


# ------------------------------------------------------------------------------------ exact
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_estimate_matches_the_brute_force_to_1e_5(unbiased, dtype, monkeypatch):
    # Small blocks, so that several row blocks, the mirrored blocks above the diagonal and a ragged
    # last block are all exercised.
    monkeypatch.setattr(metrics, "KERNEL_BLOCK", 7 * 50)
    x, y = samples(n=53, m=47)
    expected = brute_mmd2(x.numpy(), y.numpy(), SIGMAS, unbiased)
    got = float(mmd2(x.to(dtype), y.to(dtype), SIGMAS, unbiased=unbiased))
    assert got == pytest.approx(expected, rel=1e-5)
    obj = MMD(bandwidths=SIGMAS, median_heuristic=False, estimator="unbiased" if unbiased else "biased")
    _, extras = obj.generator_loss(None, x.to(dtype), y.to(dtype))
    assert float(extras["mmd2"]) == pytest.approx(expected, rel=1e-5)


def test_exact_kernel_sums_have_the_gradients_of_the_plain_formula(monkeypatch):
    monkeypatch.setattr(metrics, "KERNEL_BLOCK", 40)
    x, y = samples(n=23, m=17, d=3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: kernel_sum(a, b, SIGMAS), (x, y))
    assert torch.autograd.gradcheck(lambda a: kernel_sum(a, None, SIGMAS), (x,))

    def plain(a, b):  # every pair, the kernel matrix materialised
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in SIGMAS)

    for unbiased in (True, False):
        got = torch.autograd.grad(mmd2(x, y, SIGMAS, unbiased=unbiased), (x, y))
        kxx, kyy, kxy = plain(x, x), plain(y, y), plain(x, y)
        n, m, s = len(x), len(y), len(SIGMAS)
        if unbiased:
            ref = (kxx.sum() - n * s) / (n * (n - 1)) + (kyy.sum() - m * s) / (m * (m - 1)) - 2 * kxy.mean()
        else:
            ref = kxx.mean() + kyy.mean() - 2 * kxy.mean()
        want = torch.autograd.grad(ref, (x, y))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_exact_kernel_sum_takes_no_gradient_for_data_that_needs_none():
    x, y = samples()
    y.requires_grad_(True)
    mmd2(x, y, SIGMAS).backward()
    assert x.grad is None and y.grad is not None and torch.isfinite(y.grad).all()


def test_far_apart_points_give_zero_kernel_and_no_subnormal_garbage():
    # Every pair far beyond the bandwidths: each term underflows; the sum must be 0 (to float
    # precision) with a vanishing gradient, not NaN.
    x = torch.randn(40, 2) * 0.01
    y = (torch.randn(40, 2) * 0.01 + 1000.0).requires_grad_(True)
    total = kernel_sum(x, y, [0.01, 0.1])
    total.backward()
    assert float(total.detach()) == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(y.grad).all() and y.grad.abs().max() < 1e-9


def test_half_precision_inputs_are_summed_in_float32():
    x, y = (t.to(torch.bfloat16) for t in samples(n=64, m=64))
    want = float(mmd2(x.double(), y.double(), SIGMAS))  # the same (rounded) points in float64
    got = mmd2(x, y, SIGMAS)
    assert got.dtype == torch.bfloat16
    assert float(got) == pytest.approx(want, rel=1e-2)  # bfloat16's own rounding of the result


# -------------------------------------------------------------------------- random features
@pytest.mark.parametrize("unbiased", [True, False])
def test_random_features_are_unbiased_for_the_exact_estimate_within_a_few_standard_errors(unbiased):
    x, y = samples(n=40, m=30, d=3, shift=0.5)
    expected = brute_mmd2(x.numpy(), y.numpy(), SIGMAS, unbiased)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([mmd2_rff(x, y, torch.tensor(SIGMAS, dtype=x.dtype), 256, gen, unbiased=unbiased)
                         for _ in range(200)])
    mean, se = float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))
    assert abs(mean - expected) < 4 * se
    assert se < 0.05 * abs(expected)  # the test has power: the estimate is not just noise


def test_random_feature_noise_falls_as_one_over_sqrt_features():
    x, y = samples(n=40, m=30, d=3, shift=0.5)
    sig = torch.tensor(SIGMAS, dtype=x.dtype)
    gen = torch.Generator().manual_seed(1)
    std = {f: float(torch.stack([mmd2_rff(x, y, sig, f, gen) for _ in range(200)]).std()) for f in (64, 1024)}
    assert std[1024] == pytest.approx(std[64] / 4, rel=0.35)


def test_random_features_are_drawn_from_the_objectives_seeded_generator_only():
    x, y = samples()
    obj = MMD(method="rff", features=128, bandwidths=SIGMAS, median_heuristic=False)
    values = []
    for seed in (5, 5, 6):
        obj.generator = torch.Generator().manual_seed(seed)
        global_before = torch.random.get_rng_state()
        values.append(float(obj.generator_loss(None, x, y)[1]["mmd2"]))
        assert torch.equal(torch.random.get_rng_state(), global_before)  # the global stream is untouched
    assert values[0] == values[1] != values[2]
    # Fresh frequencies each step: the stream advances.
    obj.generator = torch.Generator().manual_seed(5)
    first = float(obj.generator_loss(None, x, y)[1]["mmd2"])
    assert float(obj.generator_loss(None, x, y)[1]["mmd2"]) != first


# ------------------------------------------------------------------------------- linear-time
def test_linear_statistic_matches_the_brute_force_to_1e_5():
    x, y = samples(n=61, m=50)
    sig = torch.tensor(SIGMAS, dtype=x.dtype)
    expected = brute_linear(x.numpy(), y.numpy(), SIGMAS)
    assert float(mmd2_linear(x, y, sig)) == pytest.approx(expected, rel=1e-5)
    assert float(mmd2_linear(x.float(), y.float(), sig.float())) == pytest.approx(expected, rel=1e-5)
    _, extras = MMD(method="linear", bandwidths=SIGMAS, median_heuristic=False).generator_loss(None, x, y)
    assert float(extras["mmd2"]) == pytest.approx(expected, rel=1e-5)


def test_linear_statistic_averages_to_the_full_unbiased_estimate_over_random_pairings():
    # With independent random orders of x and y, E[MMD^2_l] is the U-statistic of the whole sample.
    x, y = samples(n=40, m=40, shift=0.5)
    expected = brute_mmd2(x.numpy(), y.numpy(), SIGMAS, True)
    sig = torch.tensor(SIGMAS, dtype=x.dtype)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([mmd2_linear(x[torch.randperm(40, generator=gen)], y[torch.randperm(40, generator=gen)], sig)
                         for _ in range(2000)])
    mean, se = float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))
    assert abs(mean - expected) < 4 * se


# ----------------------------------------------------------------------------- the objective
@pytest.mark.parametrize("method", ["exact", "rff", "linear"])
def test_every_method_pulls_the_fakes_towards_the_data_and_survives_a_negative_estimate(method):
    g = torch.Generator().manual_seed(2)
    real = torch.randn(400, 2, generator=g)
    fake = (torch.randn(400, 2, generator=g) + torch.tensor([2.0, 0.0])).requires_grad_(True)
    obj = MMD(method=method, sqrt=True)
    obj.generator = torch.Generator().manual_seed(0)
    loss, _ = obj.generator_loss(None, real, fake)
    loss.backward()
    assert torch.isfinite(fake.grad).all() and fake.grad[:, 0].mean() > 0
    # Two samples of one distribution: the estimates straddle 0; the square root is clamped first.
    seen_negative = False
    for seed in range(20):
        same = torch.randn(400, 2, generator=g).requires_grad_(True)
        loss, extras = obj.generator_loss(None, real, same)
        loss.backward()
        seen_negative |= float(extras["mmd2"]) < 0
        assert torch.isfinite(loss) and torch.isfinite(same.grad).all()
    assert seen_negative


def test_method_and_features_are_declared_with_help():
    params = {p.name: p for p in MMD.params}
    assert params["method"].choices == ("exact", "rff", "linear") and params["method"].default == "exact"
    assert params["features"].default == 1024 and params["features"].kind == "int"
    assert set(MMD.methods) == set(params["method"].choices)
    assert all(m in MMD.explanation for m in MMD.methods)


FAST = {"data": "ring8", "objective": {"name": "mmd", "method": "rff", "features": 64}, "steps": 12,
        "batch_size": 64, "log_every": 4, "metrics": "none", "snapshot_every": 1000, "checkpoint_every": 0,
        "generator": {"name": "mlp", "width": 16}, "device": "cpu"}


def test_a_random_feature_run_reproduces_from_its_seed():
    def g_losses(seed: int) -> list[float]:
        trainer = Trainer(Pipeline(parse_spec({**FAST, "seed": seed})), config=TrainerConfig(snapshot_hz=0))
        trainer.run()
        return [r["g_loss"] for r in trainer.state.view().history if "g_loss" in r]

    a, b, c = g_losses(0), g_losses(0), g_losses(1)
    assert len(a) == 3 and a == b and a != c
