"""The built-in objectives: softplus forms, saturation, the equilibrium value, and MMD."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from explorer.components import normalise_loss

from plugins.gan_objectives import Minimax, NonSaturating
from plugins.mmd import MMD


class ConstantLogit(nn.Module):
    """A 'discriminator' whose logit for every input is a learnable-looking constant ``l``."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(logit)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], 1)


class IdentityLogit(nn.Module):
    """D(x) = x[:, :1]: the logit is the first coordinate, so tests control every logit exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


@pytest.mark.parametrize("cls", [Minimax, NonSaturating])
def test_discriminator_loss_equals_naive_sigmoid_log_form(cls):
    real = torch.linspace(-5, 5, 11)[:, None]
    fake = torch.linspace(-4, 6, 11)[:, None]
    loss, extras = cls().discriminator_loss(IdentityLogit(), real, fake)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    naive = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    assert extras["d_real"].item() == pytest.approx(d_real.mean().item(), rel=1e-6)
    assert extras["d_fake"].item() == pytest.approx(d_fake.mean().item(), rel=1e-6)


def test_generator_losses_equal_naive_sigmoid_log_forms():
    fake = torch.linspace(-5, 5, 11)[:, None]
    d_fake = torch.sigmoid(fake)
    mm, _ = normalise_loss(Minimax().generator_loss(IdentityLogit(), None, fake), "g")
    ns, _ = normalise_loss(NonSaturating().generator_loss(IdentityLogit(), None, fake), "g")
    assert mm.item() == pytest.approx(torch.log(1 - d_fake).mean().item(), rel=1e-5)
    assert ns.item() == pytest.approx(-torch.log(d_fake).mean().item(), rel=1e-5)


@pytest.mark.parametrize("cls", [Minimax, NonSaturating])
@pytest.mark.parametrize("logit", [-100.0, 100.0])
def test_losses_and_gradients_stay_finite_at_extreme_logits(cls, logit):
    obj = cls()
    x = torch.zeros(4, 1)
    for loss_fn in (obj.discriminator_loss, obj.generator_loss):
        D = ConstantLogit(logit)
        loss, _ = normalise_loss(loss_fn(D, x, x), "loss")
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(D.logit.grad)


def test_naive_form_overflows_where_softplus_does_not():
    """Why the objectives use logits: in float32 sigmoid(100) == 1, so log(1 - D) = -inf."""
    logit = torch.tensor([100.0])
    assert torch.isinf(torch.log(1 - torch.sigmoid(logit))).all()
    assert torch.nn.functional.softplus(logit).item() == pytest.approx(100.0)


def _generator_logit_grad(cls, logit: float) -> float:
    D = ConstantLogit(logit)
    loss, _ = normalise_loss(cls().generator_loss(D, None, torch.zeros(8, 1)), "g")
    loss.backward()
    return D.logit.grad.item()


def test_minimax_generator_gradient_vanishes_when_d_is_confident():
    """Goodfellow et al. 2014, Sec. 3: log(1 - D(G(z))) saturates as D(G(z)) -> 0."""
    assert abs(_generator_logit_grad(Minimax, -20.0)) < 1e-8
    assert abs(_generator_logit_grad(Minimax, 0.0)) == pytest.approx(0.5, rel=1e-5)
    # ... while the non-saturating loss keeps a gradient of about -1 in the logit.
    assert _generator_logit_grad(NonSaturating, -20.0) == pytest.approx(-1.0, abs=1e-6)


def test_minimax_value_is_minus_log_4_when_d_is_one_half_everywhere():
    """Goodfellow et al. 2014, Theorem 1: at p_g = p_data, D* = 1/2 and V = -log 4."""
    x = torch.randn(32, 2)
    loss, extras = Minimax().discriminator_loss(ConstantLogit(0.0), x, x + 1)
    assert extras["value"].item() == pytest.approx(-math.log(4.0), rel=1e-6)
    assert loss.item() == pytest.approx(math.log(4.0), rel=1e-6)
    assert extras["d_real"].item() == pytest.approx(0.5) and extras["d_fake"].item() == pytest.approx(0.5)


def test_label_smoothing_changes_only_the_real_target():
    real, fake = torch.full((4, 1), 3.0), torch.full((4, 1), -1.0)
    plain, extras = NonSaturating().discriminator_loss(IdentityLogit(), real, fake)
    smooth, extras_s = NonSaturating(label_smoothing=0.1).discriminator_loss(IdentityLogit(), real, fake)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.full_like(real, 0.9)) + bce(fake, torch.zeros_like(fake))
    assert smooth.item() == pytest.approx(expected.item(), rel=1e-6)
    assert smooth.item() > plain.item()
    assert extras_s["value"].item() == pytest.approx(extras["value"].item())  # V(D, G) stays the unsmoothed game


def test_gan_extras_are_detached_scalars():
    D = ConstantLogit(0.3)
    x = torch.zeros(4, 1)
    for obj in (Minimax(), NonSaturating()):
        for loss_fn in (obj.discriminator_loss, obj.generator_loss):
            loss, extras = normalise_loss(loss_fn(D, x, x), "loss")
            assert loss.dim() == 0 and loss.requires_grad
            assert all(v.dim() == 0 and not v.requires_grad for v in extras.values())



@pytest.mark.parametrize("cls", [Minimax, NonSaturating])
def test_the_moment_matching_term_adds_weighted_mmd_to_gs_loss_and_moves_mass_between_modes(cls):
    """``mmd_weight`` adds w * MMD^2 to G's loss (off by default): with D indifferent (a constant logit),
    its gradient alone moves samples from an over-full mode towards an empty one."""
    from explorer.metrics import mmd2

    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.full((32, 2), -1.0), torch.full((32, 2), 1.0)]) + 0.05 * torch.randn(64, 2, generator=g)
    fake = (torch.full((64, 2), -1.0) + 0.05 * torch.randn(64, 2, generator=g)).requires_grad_()  # all in one mode
    D = ConstantLogit(0.3)
    plain, _ = normalise_loss(cls().generator_loss(D, real, fake), "g")
    loss, extras = normalise_loss(cls(mmd_weight=5.0, mmd_bandwidths=[1.0, 2.0]).generator_loss(D, real, fake), "g")
    est = mmd2(fake, real, [1.0, 2.0])
    assert extras["mmd2"].item() == pytest.approx(est.item(), rel=1e-5) and not extras["mmd2"].requires_grad
    assert loss.item() == pytest.approx(plain.item() + 5.0 * est.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, fake)
    assert (-grad).mean(0).gt(0).all()  # the descent direction points towards the empty mode at (1, 1)
    assert cls().config["mmd_weight"] == 0.0


# ------------------------------------------------------------------------------------------ mmd
def test_mmd_needs_no_discriminator_and_refuses_a_discriminator_loss():
    obj = MMD()
    assert obj.needs_discriminator is False
    with pytest.raises(TypeError):
        obj.discriminator_loss(None, torch.zeros(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize("kw", [{}, {"estimator": "biased"}, {"median_heuristic": False, "bandwidths": [0.5, 1, 2]},
                                {"sqrt": True}])
def test_mmd_is_near_zero_for_same_distribution_and_larger_when_shifted(kw):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g)
    same = torch.randn(400, 2, generator=g)
    shifted = torch.randn(400, 2, generator=g) + torch.tensor([1.5, 0.0])
    obj = MMD(**kw)
    loss_same, ex_same = obj.generator_loss(None, real, same)
    loss_shift, ex_shift = obj.generator_loss(None, real, shifted)
    assert abs(ex_same["mmd2"].item()) < 0.1 * ex_shift["mmd2"].item()
    assert loss_shift.item() > 3 * abs(loss_same.item())


def test_mmd_works_on_images():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    same = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    darker = torch.rand(64, 1, 8, 8, generator=g) - 1
    obj = MMD()
    assert obj.generator_loss(None, real, darker)[0] > 5 * abs(obj.generator_loss(None, real, same)[0])


@pytest.mark.parametrize("kw", [{}, {"sqrt": True}, {"estimator": "biased"}])
def test_mmd_gradients_flow_to_the_fake_samples_and_pull_them_towards_the_data(kw):
    g = torch.Generator().manual_seed(2)
    real = torch.randn(200, 2, generator=g)
    fake = (torch.randn(200, 2, generator=g) + torch.tensor([2.0, 0.0])).requires_grad_(True)
    loss, _ = MMD(**kw).generator_loss(None, real, fake)
    loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    # Gradient descent moves the fakes left, towards the real mass at the origin.
    assert fake.grad[:, 0].mean() > 0


def test_mmd_bandwidths_scale_with_the_median_heuristic():
    x = torch.randn(100, 2)
    obj = MMD(bandwidths=[1.0, 2.0])
    s_small = obj.sigmas(x, x + 0.1)
    s_big = obj.sigmas(10 * x, 10 * x + 1.0)
    assert s_big[1] == pytest.approx(2 * s_big[0].item())
    assert s_big[0] == pytest.approx(10 * s_small[0].item(), rel=1e-4)
    assert MMD(bandwidths=[0.3], median_heuristic=False).sigmas(x, x).tolist() == pytest.approx([0.3])


def test_mmd_witness_is_positive_where_real_mass_is():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(300, 2, generator=g) * 0.3 + torch.tensor([-2.0, 0.0])
    fake = torch.randn(300, 2, generator=g) * 0.3 + torch.tensor([2.0, 0.0])
    w = MMD().critic(None, torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 0.0]]), real, fake)
    assert w.shape == (3,)
    assert w[0] > 0 > w[1]
    assert abs(w[2]) < 0.1 * w[0]  # half-way between, the two means balance


def test_modules_register_their_objectives_through_the_hook():
    import pluggy

    from explorer import hookspecs
    from plugins import gan_objectives, mmd

    pm = pluggy.PluginManager("generative_explorer")
    pm.add_hookspecs(hookspecs)
    pm.register(gan_objectives)
    pm.register(mmd)
    got: list = []
    pm.hook.register_objectives(register=got.append)
    assert sorted(c.name for c in got) == ["minimax", "mmd", "nonsaturating"]
    assert all(c.formula for c in got)
