"""The built-in samplers: shapes, reproducibility, and that each draws from the distribution it claims."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import scipy.stats as st
import torch

from explorer import Sampler, SpecError
from plugins import (images, inverse_transform, metropolis_hastings, mixture_1d, noise, rejection,
                     toys2d)
from plugins._dist1d import ScipyDist1D, parse_shapes
from plugins.images import Digits, ImageFolder
from plugins.inverse_transform import InverseTransform
from plugins.metropolis_hastings import MetropolisHastings
from plugins.mixture_1d import Mixture1D
from plugins.noise import Gaussian, Uniform
from plugins.rejection import Rejection
from plugins.toys2d import Grid25, Moons, Ring8, Spiral

MODULES = (noise, inverse_transform, rejection, metropolis_hastings, mixture_1d, toys2d, images)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def registered() -> dict[str, type]:
    found: list[type] = []
    for module in MODULES:
        module.register_samplers(found.append)
    return {cls.name: cls for cls in found}


def small_instances(tmp_path) -> dict[str, Sampler]:
    """One instance of every built-in sampler, with parameters that keep the test fast."""
    np.savez(tmp_path / "faces.npz", images=np.random.default_rng(0).integers(0, 256, (12, 20, 20), dtype=np.uint8))
    kwargs = {"metropolis-hastings": {"burn_in": 20, "chains": 16},
              "image-folder": {"path": str(tmp_path / "faces.npz"), "size": 16}}
    return {name: cls(**kwargs.get(name, {})) for name, cls in registered().items()}


# ------------------------------------------------------------------------------------------------
# contract
# ------------------------------------------------------------------------------------------------
def test_plugin_modules_register_every_built_in_sampler():
    names = set(registered())
    assert names == {"uniform", "gaussian", "inverse-transform", "rejection", "metropolis-hastings", "mixture-1d",
                     "ring8", "grid25", "moons", "spiral", "digits", "image-folder"}
    for cls in registered().values():
        assert issubclass(cls, Sampler) and cls.summary
        assert cls.describe()["name"] == cls.name


@pytest.mark.parametrize("device", DEVICES)
def test_samples_are_float32_of_the_declared_shape_on_the_device(tmp_path, device):
    for name, s in small_instances(tmp_path).items():
        x = s.sample(37, gen(0, device), device)
        assert x.shape == (37, *s.shape), name
        assert x.dtype == torch.float32, name
        assert x.device.type == device, name
        assert torch.isfinite(x).all(), name
        if s.has_log_prob:
            lp = s.log_prob(x)
            assert lp.shape == (37,) and lp.device.type == device, name
            assert torch.isfinite(lp).all(), name


def test_the_same_seed_reproduces_the_same_samples(tmp_path):
    first, second = small_instances(tmp_path), small_instances(tmp_path)
    for name in first:
        a = first[name].sample(50, gen(7), "cpu")
        b = second[name].sample(50, gen(7), "cpu")
        c = second[name].sample(50, gen(8), "cpu")
        assert torch.equal(a, b), name
        assert not torch.equal(b, c), name


# ------------------------------------------------------------------------------------------------
# the scipy-backed 1-D distributions
# ------------------------------------------------------------------------------------------------
KS_CASES = [
    ("norm", "", "closed-form"),
    ("expon", "", "closed-form"),
    ("gamma", "a=2.0", "table"),
    ("beta", "a=2.0, b=5.0", "table"),
    ("t", "df=3", "table"),
]


@pytest.mark.parametrize("dist, shapes, path", KS_CASES)
def test_inverse_transform_samples_pass_a_ks_test(dist, shapes, path):
    s = InverseTransform(distribution=dist, shapes=shapes, loc=0.5, scale=2.0)
    assert s.dist.icdf_method == path
    x = s.sample(5000, gen(1), "cpu").numpy().ravel()
    frozen = s.dist.frozen
    assert st.kstest(x, frozen.cdf).pvalue > 0.01


@pytest.mark.parametrize("dist, shapes", [("gamma", "a=0.7"), ("beta", "a=2, b=5"), ("t", "df=2"), ("lognorm", "s=0.9")])
def test_icdf_agrees_with_scipy_ppf_on_both_paths(dist, shapes):
    d = ScipyDist1D(dist, parse_shapes(shapes), loc=-1.0, scale=1.5)
    u = torch.linspace(1e-5, 1 - 1e-5, 2001, dtype=torch.float64)
    got, want = d.icdf(u).numpy(), d.frozen.ppf(u.numpy())
    assert np.max(np.abs(got - want) / (1 + np.abs(want))) < 1e-4


@pytest.mark.parametrize("dist, shapes", [("norm", ""), ("uniform", ""), ("expon", ""), ("laplace", ""), ("cauchy", ""),
                                          ("logistic", ""), ("gamma", "a=2.5"), ("beta", "a=0.8, b=3"), ("t", "df=4"),
                                          ("chi2", "df=3"), ("gumbel_r", ""), ("weibull_min", "c=1.7"),
                                          ("lognorm", "s=0.5"), ("halfnorm", ""), ("rayleigh", "")])
def test_log_prob_and_cdf_match_scipy_including_outside_the_support(dist, shapes):
    d = ScipyDist1D(dist, parse_shapes(shapes), loc=0.3, scale=1.7)
    lo, hi = d.support_bounds(1e-4)
    x = torch.linspace(lo - 2.0, hi + 2.0, 1001, dtype=torch.float64)
    want = d.frozen.logpdf(x.numpy())
    got = d.log_prob(x).numpy()
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.allclose(got[finite], want[finite], atol=1e-8)
    assert np.allclose(d.cdf(x).numpy(), d.frozen.cdf(x.numpy()), atol=1e-8)


def test_a_misspelt_scipy_name_is_a_spec_error_with_a_suggestion():
    with pytest.raises(SpecError) as info:
        InverseTransform(distribution="gama", shapes="a=2")
    assert info.value.field == "inverse-transform.distribution"
    assert "did you mean 'gamma'" in str(info.value)


def test_wrong_shape_parameters_are_named_with_the_distributions_own_shape_names():
    with pytest.raises(SpecError) as info:
        InverseTransform(distribution="beta", shapes="a=2, c=3")
    assert info.value.field == "inverse-transform.shapes"
    assert "c" in info.value.message and "(a, b)" in info.value.message
    with pytest.raises(SpecError, match="outside the valid range"):
        InverseTransform(distribution="gamma", shapes="a=-1")
    with pytest.raises(SpecError, match="name=value"):
        InverseTransform(distribution="gamma", shapes="a 2")


# ------------------------------------------------------------------------------------------------
# rejection sampling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"proposal": "gaussian", "proposal_loc": 0.3, "proposal_scale": 0.3},
                                    {"distribution": "norm", "shapes": "", "proposal": "gaussian", "proposal_scale": 1.5}])
def test_rejection_accepts_about_one_in_m_and_samples_the_target(kwargs):
    s = Rejection(**kwargs)
    x = s.sample(5000, gen(2), "cpu")
    assert x.shape == (5000, 1)
    stats = s.stats()
    assert stats["expected_acceptance_rate"] == pytest.approx(1 / s.M)
    assert abs(stats["acceptance_rate"] - 1 / s.M) < 0.03
    assert st.kstest(x.numpy().ravel(), s.target.frozen.cdf).pvalue > 0.01


def test_rejection_refuses_an_envelope_below_the_target_and_says_the_minimum():
    required = Rejection().required_M  # beta(2, 5) on [0, 1]: max p = 2.4576
    assert required == pytest.approx(2.4576, rel=1e-3)
    with pytest.raises(SpecError) as info:
        Rejection(M=2.0)
    assert info.value.field == "rejection.M" and "at least 2.45" in info.value.message
    assert Rejection(M=3.0).M == 3.0


def test_rejection_refuses_a_proposal_with_lighter_tails_than_the_target():
    with pytest.raises(SpecError, match="unbounded"):
        Rejection(distribution="t", shapes="df=2", proposal="gaussian")


def test_rejection_propose_accepts_exactly_the_points_under_the_target_density():
    s = Rejection()
    x, y, p, accepted = s.propose(4000, gen(3), "cpu")
    assert x.shape == y.shape == p.shape == accepted.shape == (4000,)
    assert torch.equal(accepted, y <= p)
    assert torch.all(y <= s.envelope(x) + 1e-6)
    assert torch.all(s.envelope(x) >= p)  # the envelope covers the target
    assert abs(accepted.float().mean().item() - 1 / s.M) < 0.03


# ------------------------------------------------------------------------------------------------
# Metropolis-Hastings
# ------------------------------------------------------------------------------------------------
def test_metropolis_hastings_after_burn_in_matches_the_target():
    s = MetropolisHastings(chains=4096, burn_in=300)  # gamma(a=2)
    x = s.sample(4096, gen(4), "cpu").numpy().ravel()  # one row per chain: independent draws
    assert st.kstest(x, st.gamma(2.0).cdf).pvalue > 0.01
    y = s.sample(20000, gen(5), "cpu").numpy().ravel()
    assert abs(y.mean() - 2.0) < 0.1 and abs(y.var() - 2.0) < 0.25
    assert 0.2 < s.stats()["acceptance_rate"] < 0.95


def test_metropolis_hastings_on_two_modes_crosses_only_with_a_long_step():
    mixture = lambda v: 0.5 * st.norm(0, 1).cdf(v) + 0.5 * st.norm(10, 1).cdf(v)  # noqa: E731
    s = MetropolisHastings(distribution="norm", shapes="", modes=[10.0], step=1.0, chains=2048, burn_in=300)
    x = torch.linspace(-4, 14, 50, dtype=torch.float64)
    assert torch.allclose(s.cdf(x), torch.as_tensor(mixture(x.numpy())), atol=1e-6)
    logp = 0.5 * (st.norm(0, 1).pdf(x.numpy()) + st.norm(10, 1).pdf(x.numpy()))
    assert np.allclose(s.log_prob(x.float()).exp().numpy(), logp, atol=1e-6)
    stuck = s.sample(2048, gen(7), "cpu").numpy().ravel()
    assert (stuck > 5).mean() < 0.01  # every chain starts in the mode at 0 and stays there
    hops = MetropolisHastings(distribution="norm", shapes="", modes=[10.0], step=10.0, chains=2048, burn_in=2000)
    y = hops.sample(2048, gen(7), "cpu").numpy().ravel()
    assert st.kstest(y, mixture).pvalue > 0.01  # a step as long as the gap samples the mixture


def test_metropolis_hastings_cycles_through_chains_so_n_can_exceed_chains():
    s = MetropolisHastings(chains=8, burn_in=10, thin=2, distribution="norm", shapes="")
    g = gen(6)
    a = s.sample(5, g, "cpu")
    b = s.sample(20, g, "cpu")
    assert a.shape == (5, 1) and b.shape == (20, 1)
    assert s._cursor == 25 % 8
    assert s.stats()["acceptance_rate"] > 0


def test_metropolis_hastings_trace_is_one_chain_from_the_start_point():
    s = MetropolisHastings(step=0.5)
    tr = s.trace(3000, gen(7), "cpu")
    assert tr.shape == (3000,) and tr.dtype == torch.float32
    assert tr[0].item() == pytest.approx(st.gamma(2).median(), rel=1e-6)
    moves = (tr[1:] != tr[:-1]).float().mean().item()
    assert 0.3 < moves < 1.0  # a random walk that both accepts and rejects
    assert abs(tr[500:].mean().item() - 2.0) < 0.5
    assert s.stats() == {}  # the sampling chains were not touched


# ------------------------------------------------------------------------------------------------
# mixtures and toys
# ------------------------------------------------------------------------------------------------
def test_mixture_1d_log_prob_and_cdf_match_scipy():
    means, stds, weights = [-2.0, 1.0, 3.0], [0.5, 1.0, 0.3], [1.0, 2.0, 1.0]
    s = Mixture1D(means=means, stds=stds, weights=weights)
    x = torch.linspace(-6, 6, 501, dtype=torch.float64).reshape(-1, 1)
    w = np.array(weights) / sum(weights)
    pdf = sum(wk * st.norm(m, sd).pdf(x.numpy().ravel()) for wk, m, sd in zip(w, means, stds))
    cdf = sum(wk * st.norm(m, sd).cdf(x.numpy().ravel()) for wk, m, sd in zip(w, means, stds))
    assert np.allclose(s.log_prob(x).numpy(), np.log(pdf), atol=1e-9)
    assert np.allclose(s.cdf(x).numpy().ravel(), cdf, atol=1e-9)
    u = torch.tensor([0.01, 0.2, 0.5, 0.9, 0.999], dtype=torch.float64)
    assert torch.allclose(s.cdf(s.icdf(u)), u, atol=1e-9)
    sample = s.sample(5000, gen(8), "cpu").numpy().ravel()
    assert st.kstest(sample, lambda v: sum(wk * st.norm(m, sd).cdf(v) for wk, m, sd in zip(w, means, stds))).pvalue > 0.01


def test_mixture_1d_rejects_mismatched_lengths_and_non_positive_weights():
    with pytest.raises(SpecError, match="one value per component"):
        Mixture1D(means=[0.0, 1.0], stds=[1.0], weights=[1.0, 1.0])
    with pytest.raises(SpecError, match="positive"):
        Mixture1D(weights=[1.0, 0.0])


@pytest.mark.parametrize("cls, lim", [(Ring8, 1.5), (Grid25, 5.5)])
def test_gaussian_ring_and_grid_densities_integrate_to_one_and_samples_sit_on_the_modes(cls, lim):
    s = cls(std=0.1)
    h = 0.02  # a Riemann sum of a Gaussian is already exact to ~1e-6 at a fifth of its std
    v = torch.arange(-lim, lim + h / 2, h, dtype=torch.float64)
    gx, gy = torch.meshgrid(v, v, indexing="ij")
    mass = s.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp().sum().item() * h * h
    assert mass == pytest.approx(1.0, abs=1e-3)
    centres, std = s.mixture_modes()
    x = s.sample(5000, gen(9), "cpu")
    dist, nearest = torch.cdist(x, centres).min(dim=1)
    assert (dist < 3 * std).float().mean().item() > 0.97  # P(|N(0, I_2)| < 3) = 0.989
    assert set(nearest.tolist()) == set(range(len(centres)))


def test_ring8_modes_are_eight_points_on_the_circle():
    centres, std = Ring8(radius=2.0, std=0.02).mixture_modes()
    assert centres.shape == (8, 2) and std == 0.02
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    assert Grid25().mixture_modes()[0].shape == (25, 2)


def test_moons_and_spiral_have_no_exact_density_and_stay_in_their_bounds():
    for s in (Moons(noise=0.0), Spiral(noise=0.0)):
        assert not s.has_log_prob
        x = s.sample(2000, gen(10), "cpu")
        for d, (lo, hi) in enumerate(s.bounds):
            assert lo <= x[:, d].min() and x[:, d].max() <= hi


def test_noise_densities_are_exact():
    g = Gaussian(dim=3, mean=1.0, std=2.0)
    x = g.sample(100, gen(11), "cpu").double()
    want = st.multivariate_normal(np.ones(3), 4.0 * np.eye(3)).logpdf(x.numpy())
    assert np.allclose(g.log_prob(x).numpy(), want)
    u = Uniform(dim=2, low=-1.0, high=3.0)
    lp = u.log_prob(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    assert lp[0].item() == pytest.approx(-2 * math.log(4.0)) and lp[1].item() == -math.inf
    g1 = Gaussian(dim=1, mean=1.0, std=2.0)
    p = torch.tensor([0.1, 0.5, 0.975])
    assert torch.allclose(g1.cdf(g1.icdf(p)), p, atol=1e-6)
    assert Uniform(dim=1, low=2.0, high=4.0).icdf(torch.tensor([0.25])).item() == 2.5
    with pytest.raises(SpecError, match="greater than low"):
        Uniform(low=1.0, high=1.0)


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("upscale", [8, 32])
def test_digits_are_one_channel_images_in_minus_one_to_one(upscale):
    d = Digits(upscale=upscale)
    x = d.sample(64, gen(12), "cpu")
    assert x.shape == (64, 1, upscale, upscale) and d.shape == (1, upscale, upscale)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() == -1.0
    data = d.dataset()
    assert data.shape == (1437, 1, upscale, upscale) and d.labels().shape == (1437,)
    assert Digits(split="test").dataset().shape[0] == 1797 - 1437


def test_digits_train_and_test_splits_do_not_overlap():
    train = Digits(split="train").dataset().reshape(1437, -1)
    test = Digits(split="test").dataset().reshape(360, -1)
    everything = Digits(split="all").dataset().reshape(1797, -1)
    assert {tuple(r) for r in torch.cat([train, test]).tolist()} == {tuple(r) for r in everything.tolist()}


def test_image_folder_reads_a_folder_of_pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(tmp_path / "sub" / "white.png")
    s = ImageFolder(path=str(tmp_path), channels=3, size=16)
    data = s.dataset()
    assert s.shape == (3, 16, 16) and data.shape == (5, 3, 16, 16)
    assert data.min() >= -1 and data.max() <= 1
    assert torch.allclose(data[-1], torch.ones(3, 16, 16))  # sub/white.png sorts last
    grey = ImageFolder(path=str(tmp_path), channels=1, size=8)
    assert grey.sample(10, gen(13), "cpu").shape == (10, 1, 8, 8)


@pytest.mark.parametrize("array, channels, expected_first", [
    (np.zeros((6, 12, 12), dtype=np.uint8), 1, -1.0),                       # [N, H, W] uint8
    (np.ones((6, 12, 12, 3), dtype=np.float32), 1, 1.0),                    # [N, H, W, C] in 0..1
    (np.full((6, 3, 10, 14), -1.0, dtype=np.float64), 3, -1.0),             # [N, C, H, W] in -1..1, not square
])
def test_image_folder_reads_an_npz_in_any_common_layout(tmp_path, array, channels, expected_first):
    np.savez(tmp_path / "data.npz", labels=np.arange(6), images=array)
    s = ImageFolder(path=str(tmp_path / "data.npz"), key="images", channels=channels, size=8)
    data = s.dataset()
    assert data.shape == (6, channels, 8, 8)
    assert torch.allclose(data, torch.full_like(data, expected_first))


def test_image_folder_never_unpickles(tmp_path):
    np.savez(tmp_path / "objects.npz", images=np.array([np.zeros((4, 4)), None], dtype=object))
    with pytest.raises(SpecError, match="Python objects.*pickle"):
        ImageFolder(path=str(tmp_path / "objects.npz"))
    with open(tmp_path / "pickled.npz", "wb") as fh:
        pickle.dump({"images": np.zeros((2, 4, 4))}, fh)
    with pytest.raises(SpecError, match="pickled data, which is never loaded"):
        ImageFolder(path=str(tmp_path / "pickled.npz"))


def test_image_folder_explains_bad_paths_shapes_and_keys(tmp_path):
    with pytest.raises(SpecError, match="set path") as info:
        ImageFolder()
    assert info.value.field == "image-folder.path"
    with pytest.raises(SpecError, match="does not exist"):
        ImageFolder(path=str(tmp_path / "missing"))
    with pytest.raises(SpecError, match="no PNG or JPEG"):
        ImageFolder(path=str(tmp_path))
    np.savez(tmp_path / "flat.npz", x=np.zeros((5, 64)))
    with pytest.raises(SpecError, match=r"shape \[5, 64\]"):
        ImageFolder(path=str(tmp_path / "flat.npz"))
    np.savez(tmp_path / "big.npz", x=np.full((2, 4, 4), 1000.0))
    with pytest.raises(SpecError, match="expected 0..255"):
        ImageFolder(path=str(tmp_path / "big.npz"))
    with pytest.raises(SpecError, match="it holds: x") as info:
        ImageFolder(path=str(tmp_path / "big.npz"), key="images")
    assert info.value.field == "image-folder.key"


def test_image_folder_refuses_too_many_images_before_loading_them(tmp_path, monkeypatch):
    np.savez(tmp_path / "many.npz", x=np.zeros((50, 8, 8), dtype=np.uint8))
    monkeypatch.setattr(images, "MAX_IMAGES", 40)
    with pytest.raises(SpecError, match="more than the limit of 40"):
        ImageFolder(path=str(tmp_path / "many.npz"), size=8)
