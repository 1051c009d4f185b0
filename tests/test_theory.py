"""The code held to the theory of Goodfellow et al. (2014): Proposition 1 and Theorem 1."""

from __future__ import annotations

import math

import torch
from scipy import stats

from explorer.registry import get_registry
from explorer.components import normalise_loss


def test_trained_discriminator_matches_the_optimal_discriminator_for_a_fixed_generator():
    """Prop. 1: for fixed G, D*(x) = p_data(x) / (p_data(x) + p_g(x)).

    p_data = N(0, 1); the generator is fixed at x = 1 + 0.5 z, z ~ N(0, 1), so p_g = N(1, 0.5^2).
    A discriminator trained with the minimax objective's D loss to convergence must match D* within
    0.05 everywhere on [-1.5, 2.5] (where both densities have mass) and within 0.02 on average.
    """
    reg = get_registry()
    objective = reg.create("objective", "minimax")
    D = reg.create("architecture", "mlp", {"depth": 2, "width": 64, "activation": "tanh"}).build("discriminator", (1,), (1,))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=800, gamma=0.3)
    for _ in range(2400):
        real = torch.randn(1024, 1, generator=gen)
        fake = 1.0 + 0.5 * torch.randn(1024, 1, generator=gen)
        loss, _ = normalise_loss(objective.discriminator_loss(D, real, fake), "discriminator_loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    x = torch.linspace(-1.5, 2.5, 201).reshape(-1, 1)
    p_data = stats.norm(0, 1).pdf(x.numpy()[:, 0])
    p_g = stats.norm(1, 0.5).pdf(x.numpy()[:, 0])
    d_star = p_data / (p_data + p_g)
    with torch.no_grad():
        d = torch.sigmoid(D(x)).numpy()[:, 0]
    err = abs(d - d_star)
    assert err.max() < 0.05, f"max |D - D*| = {err.max():.3f}"
    assert err.mean() < 0.02, f"mean |D - D*| = {err.mean():.3f}"


def test_at_the_equilibrium_d_star_is_one_half_and_the_value_is_minus_log_4():
    """Theorem 1: p_g = p_data gives D* = 1/2 and C(G) = -log 4; a D trained on two samples of one
    distribution learns nothing better than 1/2, and the minimax value it reaches is -log 4."""
    reg = get_registry()
    objective = reg.create("objective", "minimax")
    D = reg.create("architecture", "mlp", {"depth": 1, "width": 16}).build("discriminator", (1,), (1,))
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    for _ in range(400):
        real, fake = torch.randn(512, 1, generator=gen), torch.randn(512, 1, generator=gen)
        loss, _ = normalise_loss(objective.discriminator_loss(D, real, fake), "discriminator_loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
    real, fake = torch.randn(20000, 1, generator=gen), torch.randn(20000, 1, generator=gen)
    with torch.no_grad():
        loss, extras = normalise_loss(objective.discriminator_loss(D, real, fake), "discriminator_loss")
        d = torch.sigmoid(D(torch.linspace(-2, 2, 101).reshape(-1, 1)))
    assert abs(d - 0.5).max() < 0.03
    assert abs(extras["value"].item() - (-math.log(4))) < 0.01
