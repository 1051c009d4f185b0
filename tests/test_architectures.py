"""The built-in architectures: shapes, output activations, DCGAN initialisation and support checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer import SpecError
from plugins.dcgan import DCGAN
from plugins.mlp import MLP

VECTOR_SHAPES = [(1,), (2,)]
IMAGE_SHAPES = [(1, 8, 8), (3, 32, 32), (1, 16, 16)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("data_shape", VECTOR_SHAPES + IMAGE_SHAPES)
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_mlp_generator_and_discriminator_output_shapes(data_shape, norm):
    arch = MLP(depth=2, width=32, norm=norm)
    latent = (5,)
    assert arch.supports("generator", latent, data_shape) is None
    G = arch.build("generator", latent, data_shape)
    D = arch.build("discriminator", data_shape, (1,))
    x = G(torch.randn(7, *latent))
    assert x.shape == (7, *data_shape)
    assert D(x).shape == (7, 1)


def test_mlp_accepts_image_shaped_latent():
    G = MLP(width=16).build("generator", (1, 4, 4), (2,))
    assert G(torch.randn(3, 1, 4, 4)).shape == (3, 2)


@pytest.mark.parametrize("act,low,high", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_mlp_generator_output_activation_bounds_samples(act, low, high):
    arch = MLP(width=16, output_activation=act)
    G = arch.build("generator", (3,), (2,))
    x = G(100.0 * torch.randn(500, 3))
    assert x.min() >= low and x.max() <= high
    assert isinstance(G.body[-1], nn.Tanh if act == "tanh" else nn.Sigmoid)


def test_mlp_output_activation_none_is_unbounded():
    G = MLP(width=16).build("generator", (3,), (2,))
    assert isinstance(G.body[-1], nn.Linear)
    assert G(100.0 * torch.randn(500, 3)).abs().max() > 1.0


def test_mlp_discriminator_ignores_output_activation_and_returns_raw_logits():
    D = MLP(width=16, output_activation="sigmoid").build("discriminator", (2,), (1,))
    assert isinstance(D.body[-1], nn.Linear)
    assert D(100.0 * torch.randn(500, 2)).abs().max() > 1.0


@pytest.mark.parametrize("activation", ["relu", "leaky-relu", "tanh", "elu", "gelu", "silu"])
def test_mlp_depth_and_activation_are_respected(activation):
    G = MLP(depth=3, width=8, activation=activation).build("generator", (2,), (2,))
    linears = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and all(m.out_features == 8 for m in linears[:3])


@pytest.mark.parametrize("arch", [MLP(width=16), DCGAN(ngf=8, ndf=8)], ids=["mlp", "dcgan"])
def test_every_parameter_receives_a_gradient(arch):
    G = arch.build("generator", (10,), (1, 8, 8))
    D = arch.build("discriminator", (1, 8, 8), (1,))
    D(G(torch.randn(4, 10))).sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("image", IMAGE_SHAPES + [(3, 64, 64)])
def test_dcgan_output_shapes(image):
    arch = DCGAN(ngf=8, ndf=8)
    assert arch.supports("generator", (16,), image) is None
    assert arch.supports("discriminator", image, (1,)) is None
    G = arch.build("generator", (16,), image)
    D = arch.build("discriminator", image, (1,))
    x = G(torch.randn(3, 16))
    assert x.shape == (3, *image)
    assert x.abs().max() <= 1.0  # Tanh output
    assert D(x).shape == (3, 1)


def test_dcgan_matches_reference_layout_at_64():
    """At 64x64 the layers are those of pytorch/examples dcgan: ngf*8 at 4x4, down to ngf."""
    G = DCGAN(ngf=64).build("generator", (100,), (3, 64, 64))
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    D = DCGAN(ndf=64).build("discriminator", (3, 64, 64), (1,))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())


def test_dcgan_init_follows_radford_et_al():
    G = DCGAN(ngf=64).build("generator", (100,), (3, 32, 32))
    D = DCGAN(ndf=64).build("discriminator", (3, 32, 32), (1,))
    conv_w = torch.cat([m.weight.flatten() for net in (G, D) for m in net.modules()
                        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    bn = [m for net in (G, D) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight for m in bn])
    assert abs(conv_w.mean().item()) < 1e-3 and conv_w.std().item() == pytest.approx(0.02, rel=0.05)
    assert bn_w.mean().item() == pytest.approx(1.0, abs=0.01) and bn_w.std().item() == pytest.approx(0.02, rel=0.2)
    assert all((m.bias == 0).all() for m in bn)


def test_dcgan_build_is_reproducible_under_the_global_seed():
    torch.manual_seed(3)
    a = DCGAN(ngf=8).build("generator", (10,), (1, 16, 16)).state_dict()
    torch.manual_seed(3)
    b = DCGAN(ngf=8).build("generator", (10,), (1, 16, 16)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("image", [(1, 10, 10), (1, 8, 16), (1, 128, 128), (2,), (64,)])
def test_dcgan_rejects_unsupported_data_with_a_message(image):
    arch = DCGAN()
    for reason in (arch.supports("generator", (100,), image), arch.supports("discriminator", image, (1,))):
        assert reason is not None and "8, 16, 32 or 64" in reason
    with pytest.raises(SpecError, match="square images"):
        arch.build("generator", (100,), image)


def test_dcgan_rejects_a_non_flat_latent():
    reason = DCGAN().supports("generator", (1, 8, 8), (1, 8, 8))
    assert reason is not None and "flat latent" in reason


def test_dcgan_pair_takes_an_optimiser_step():
    arch = DCGAN(ngf=8, ndf=8)
    G = arch.build("generator", (16,), (1, 8, 8))
    D = arch.build("discriminator", (1, 8, 8), (1,))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    fake = G(torch.randn(16, 16))
    d_loss = nn.functional.softplus(-D(real)).mean() + nn.functional.softplus(D(fake.detach())).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    before = [p.detach().clone() for p in G.parameters()]
    g_loss = nn.functional.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, G.parameters()))


def test_modules_register_their_architectures_through_the_hook():
    import pluggy

    from explorer import hookspecs
    from plugins import dcgan, mlp

    pm = pluggy.PluginManager("generative_explorer")
    pm.add_hookspecs(hookspecs)
    pm.register(mlp)
    pm.register(dcgan)
    got: list = []
    pm.hook.register_architectures(register=got.append)
    assert sorted(c.name for c in got) == ["dcgan", "mlp"]
