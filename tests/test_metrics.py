"""Metrics: the pure functions in explorer.metrics / plugins._features against references and
closed forms, and the thin Metric plugins end to end on tiny samplers defined here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats
from scipy.spatial.distance import jensenshannon

from explorer import MetricContext, Sampler
from plugins import _features as feats
from plugins._feature_metrics import frechet_distance, gaussian_stats, memorisation_score, nearest_distances, prdc
from explorer.metrics import (
    energy_distance, grid_divergences, js_1d, js_divergence, mmd2, mmd2_permutation_test, mode_statistics,
    one_host_thread, sliced_wasserstein, wasserstein_1d,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Tiny samplers (independent of plugins/)
# --------------------------------------------------------------------------------------------
RING = torch.tensor([[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)])


class Ring(Sampler):
    name = "test-ring"
    std = 0.01

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (2,)
        self.bounds = ((-1.5, 1.5), (-1.5, 1.5))

    def sample(self, n, generator, device="cpu"):
        k = torch.randint(0, 8, (n,), generator=generator)
        return RING[k] + self.std * torch.randn(n, 2, generator=generator)

    def mixture_modes(self):
        return RING, self.std


class Blob(Ring):
    name = "test-blob"

    def mixture_modes(self):
        return None


class Normal1D(Sampler):
    name = "test-normal"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (1,)

    def sample(self, n, generator, device="cpu"):
        return torch.randn(n, 1, generator=generator)

    def cdf(self, x):
        return torch.special.ndtr(x)


class Digits(Sampler):
    """sklearn's bundled 8x8 digits (no download), scaled to [-1, 1], with labels."""

    name = "test-digits"
    n = 600

    def __init__(self, **kw):
        super().__init__(**kw)
        from sklearn.datasets import load_digits

        d = load_digits()
        self.shape = (1, 8, 8)
        self._x = torch.tensor(d.images[: self.n] / 8.0 - 1.0, dtype=torch.float32)[:, None]
        self._y = torch.tensor(d.target[: self.n])

    def sample(self, n, generator, device="cpu"):
        return self._x[torch.randint(0, len(self._x), (n,), generator=generator)]

    def dataset(self):
        return self._x

    def labels(self):
        return self._y


def ctx(data: Sampler, cache_dir=None) -> MetricContext:
    return MetricContext(data=data, device=torch.device("cpu"), generator=gen(1), cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------------------------
def brute_mmd2(x: np.ndarray, y: np.ndarray, sigmas, unbiased: bool) -> float:
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in sigmas)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd2_matches_a_numpy_double_loop(unbiased):
    x = torch.randn(9, 3, generator=gen(0), dtype=torch.float64)
    y = torch.randn(7, 3, generator=gen(1), dtype=torch.float64) + 0.5
    sigmas = [0.5, 1.0, 2.0]
    expected = brute_mmd2(x.numpy(), y.numpy(), sigmas, unbiased)
    assert float(mmd2(x, y, sigmas, unbiased=unbiased)) == pytest.approx(expected, rel=1e-10)
    observed, _ = mmd2_permutation_test(x, y, sigmas, permutations=10, unbiased=unbiased)
    assert observed == pytest.approx(expected, rel=1e-10)


def test_mmd2_is_near_zero_for_one_distribution_and_grows_with_shift():
    x = torch.randn(500, 2, generator=gen(0))
    values = [float(mmd2(x, torch.randn(500, 2, generator=gen(1)) + s, [0.5, 1.0, 2.0])) for s in (0.0, 0.5, 1.0, 2.0)]
    assert abs(values[0]) < 0.01
    assert values[0] < values[1] < values[2] < values[3]


def test_mmd_permutation_p_value_is_small_for_shifted_and_large_for_same():
    x = torch.randn(200, 2, generator=gen(0))
    same = torch.randn(200, 2, generator=gen(1))
    shifted = same + torch.tensor([0.5, 0.0])
    _, p_shift = mmd2_permutation_test(x, shifted, [0.5, 1.0, 2.0], permutations=200)
    _, p_same = mmd2_permutation_test(x, same, [0.5, 1.0, 2.0], permutations=200)
    assert p_shift <= 0.01
    assert p_same > 0.05


# --------------------------------------------------------------------------------------------
# Energy distance, Wasserstein, sliced Wasserstein
# --------------------------------------------------------------------------------------------
def test_energy_distance_matches_scipy_in_1d():
    a = torch.randn(300, 1, generator=gen(0))
    b = 2 * torch.randn(170, 1, generator=gen(1)) + 1
    assert energy_distance(a, b) == pytest.approx(stats.energy_distance(a[:, 0].numpy(), b[:, 0].numpy()), rel=1e-6)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("p", [1, 2])
def test_exact_wasserstein_1d_matches_scipy_for_unequal_sizes(p):
    u = np.random.default_rng(0).normal(size=(137, 1))
    v = np.random.default_rng(1).exponential(size=(91, 1))
    if p == 1:
        expected = stats.wasserstein_distance(u[:, 0], v[:, 0])
    else:  # W_2 via a fine quantile grid
        t = (np.arange(200_000) + 0.5) / 200_000
        expected = np.sqrt(np.mean((np.quantile(u[:, 0], t, method="inverted_cdf") - np.quantile(v[:, 0], t, method="inverted_cdf")) ** 2))
    assert wasserstein_1d(u, v, p)[0] == pytest.approx(expected, rel=1e-4)


def test_sliced_wasserstein_of_a_translation_is_the_shift_in_1d_and_two_over_pi_of_it_in_2d():
    x1 = torch.randn(400, 1, generator=gen(0))
    assert sliced_wasserstein(x1, x1 + 1.5) == pytest.approx(1.5, rel=1e-6)
    x2 = torch.randn(400, 2, generator=gen(0))
    shift = torch.tensor([3.0, 4.0])  # |s| = 5; every slice sees W_1 = |theta . s|
    assert sliced_wasserstein(x2, x2 + shift, projections=1000) == pytest.approx(5 * 2 / math.pi, rel=0.03)
    assert sliced_wasserstein(x2, torch.randn(400, 2, generator=gen(1))) < 0.15


# --------------------------------------------------------------------------------------------
# Mode collapse (VEEGAN / PacGAN)
# --------------------------------------------------------------------------------------------
def test_samples_exactly_on_all_eight_modes_capture_eight_all_hq_and_zero_reverse_kl():
    s = mode_statistics(RING.repeat(10, 1), RING, std=0.01)
    assert (s.modes, s.hq_fraction) == (8, 1.0)
    assert s.reverse_kl == pytest.approx(0.0, abs=1e-12)


def test_samples_on_three_modes_give_three_and_reverse_kl_log_8_over_3():
    s = mode_statistics(RING[[0, 3, 5]].repeat(20, 1) + 0.005, RING, std=0.01)
    assert (s.modes, s.hq_fraction) == (3, 1.0)
    assert s.reverse_kl == pytest.approx(math.log(8 / 3))
    # unequal use of the modes: 2:1:1 on three modes -> sum p log(8 p)
    t = mode_statistics(torch.cat([RING[[0]].repeat(20, 1), RING[[1]].repeat(10, 1), RING[[2]].repeat(10, 1)]), RING, 0.01)
    p = np.array([0.5, 0.25, 0.25])
    assert t.reverse_kl == pytest.approx(float(np.sum(p * np.log(8 * p))))


def test_far_away_samples_are_not_high_quality_and_capture_no_mode():
    s = mode_statistics(torch.full((50, 2), 10.0), RING, std=0.01)
    assert (s.modes, s.hq_fraction) == (0, 0.0)
    assert math.isnan(s.reverse_kl)


def test_only_high_quality_samples_enter_the_mode_histogram():
    # 10 samples on mode 0, 30 at 5 std from mode 1 (not HQ): one mode, 25% HQ, KL = log 8
    x = torch.cat([RING[[0]].repeat(10, 1), RING[[1]].repeat(30, 1) + torch.tensor([0.05, 0.0])])
    s = mode_statistics(x, RING, std=0.01)
    assert (s.modes, s.hq_fraction) == (1, 0.25)
    assert s.reverse_kl == pytest.approx(math.log(8))


# --------------------------------------------------------------------------------------------
# Histogram divergences
# --------------------------------------------------------------------------------------------
def test_js_divergence_is_zero_for_identical_histograms_bounded_by_log2_and_is_scipys_square():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    q = np.array([0.0, 1.0, 1.0, 4.0])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(p, q, base=2) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    assert js_divergence(p, q, base=math.e) == pytest.approx(jensenshannon(p, q) ** 2)
    disjoint = js_divergence([1, 1, 0, 0], [0, 0, 1, 1], base=math.e)
    assert disjoint == pytest.approx(math.log(2))  # the maximum
    assert js_divergence(p, q, base=math.e) < math.log(2)


def test_js_1d_counts_generated_mass_outside_the_grid():
    real = torch.randn(1000, 1, generator=gen(0))
    assert js_1d(real, torch.randn(1000, 1, generator=gen(1)), bins=20) < 0.02
    assert js_1d(real, real + 100.0, bins=20) == pytest.approx(1.0)  # all in the overflow bin: 1 bit


def test_grid_divergences_are_small_for_one_distribution_and_large_for_disjoint_ones():
    bounds = ((-1.5, 1.5), (-1.5, 1.5))
    ring = Ring()
    real, other = ring.sample(2500, gen(0)), ring.sample(2500, gen(1))
    kl, js = grid_divergences(real, other, bounds)
    assert kl < 0.1 and js < 0.03
    kl_far, js_far = grid_divergences(real, real * 0.0 + torch.tensor([1.2, 1.2]), bounds)
    assert kl_far > 5 and 0.9 < js_far <= 1.0


# --------------------------------------------------------------------------------------------
# Feature-space metrics
# --------------------------------------------------------------------------------------------
def test_frechet_distance_is_zero_for_identical_features_and_matches_the_gaussian_closed_form():
    f = torch.randn(500, 6, generator=gen(0))
    assert frechet_distance(*gaussian_stats(f), *gaussian_stats(f)) == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: ||mu1 - mu2||^2 + sum (s1 - s2)^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(closed)
    # full covariances: the sqrtm formula
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    ref = np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(np.zeros(4), c1, np.zeros(4), c2) == pytest.approx(ref, rel=1e-6)


def test_prdc_is_one_for_a_sample_like_the_reference_and_zero_for_disjoint_sets():
    real = torch.randn(600, 5, generator=gen(0))
    same = prdc(real, real)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0
    like = prdc(real, torch.randn(600, 5, generator=gen(1)))
    assert like["precision"] > 0.8 and like["recall"] > 0.8 and like["coverage"] > 0.8
    assert 0.7 < like["density"] < 1.3
    far = prdc(real, torch.randn(600, 5, generator=gen(1)) + 20.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_counts_copies_of_duplicated_points_unlike_a_strict_less_than():
    # every real point appears 6 times: all k-NN radii are 0; prdc's strict "<" would score 0
    real = torch.randn(50, 3, generator=gen(0)).repeat(6, 1)
    out = prdc(real, real[:100])
    assert out["precision"] == 1.0 and out["density"] > 0


def test_memorisation_is_one_for_copies_and_near_the_quantile_for_fresh_samples():
    train = torch.randn(2000, 4, generator=gen(0))
    idx = np.arange(2000)
    train_nn = nearest_distances(train, train, exclude=idx)
    copies = memorisation_score(nearest_distances(train[:300], train), train_nn, 0.05)
    assert copies["memorisation"] == 1.0 and copies["nn_ratio"] == 0.0
    fresh = memorisation_score(nearest_distances(torch.randn(2000, 4, generator=gen(1)), train), train_nn, 0.05)
    assert 0.02 < fresh["memorisation"] < 0.1
    assert 0.85 < fresh["nn_ratio"] < 1.15


# --------------------------------------------------------------------------------------------
# The feature classifier
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """A digits sampler and a feature cache folder holding its trained classifier."""
    feats.clear_memory_cache()
    folder = tmp_path_factory.mktemp("features")
    data = Digits()
    ext = feats.feature_extractor_for(data, folder)
    return data, folder, ext


def test_feature_classifier_is_trained_once_then_loaded_from_disk(digits_cache, monkeypatch):
    data, folder, first = digits_cache
    assert not first.from_cache and not first.pseudo_labels
    assert first.accuracy > 0.85  # held-out accuracy on real digit labels
    assert len(list(folder.glob("feature-net-*.pt"))) == 1

    def no_training(*a, **k):
        raise AssertionError("retrained although a cached classifier exists")

    monkeypatch.setattr(feats, "train_feature_net", no_training)
    feats.clear_memory_cache()
    second = feats.feature_extractor_for(data, folder)
    assert second.from_cache and second.key == first.key and second.accuracy == first.accuracy
    x = data.dataset()[:50]
    assert torch.allclose(second(x), first(x))


def test_feature_classifier_without_labels_trains_on_kmeans_pseudo_labels(tmp_path):
    x = Digits().dataset()[:300]
    ext = feats.load_or_train(x, None, tmp_path)
    assert ext.pseudo_labels and ext.accuracy > 0.6
    assert ext.key != feats.cache_key(x, torch.zeros(300, dtype=torch.long))


# --------------------------------------------------------------------------------------------
# The plugins, end to end
# --------------------------------------------------------------------------------------------
def all_metric_classes():
    from plugins import metrics_1d, metrics_2d, metrics_images, metrics_samples

    found = []
    for mod in (metrics_samples, metrics_1d, metrics_2d, metrics_images):
        mod.register_metrics(found.append)
    return {cls.name: cls for cls in found}


def test_metric_plugins_register_the_suggested_names_with_valid_defaults():
    classes = all_metric_classes()
    assert set(classes) == {
        "mmd", "energy-distance", "sliced-wasserstein", "wasserstein-1d", "ks-1d", "js-1d",
        "mode-coverage", "grid-divergence", "frechet-distance", "prdc", "memorisation",
    }
    for cls in classes.values():
        cls()  # defaults validate
    assert classes["mode-coverage"].sample_size == 2500


def test_mode_coverage_on_the_mixture_itself_finds_all_modes():
    m = all_metric_classes()
    ring = Ring()
    assert m["mode-coverage"]().applies(ring) and not m["mode-coverage"]().applies(Blob())
    out = m["mode-coverage"]().compute(ring.sample(2500, gen(0)), ring.sample(2500, gen(1)), ctx(ring))
    assert out["modes"] == 8.0
    assert out["hq_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)  # P(|x - mu| < 3 std) in 2-D
    assert out["reverse_kl"] < 0.01


def test_any_data_metrics_separate_a_shifted_sample_and_report_nan_for_nan_samples():
    m = all_metric_classes()
    ring = Ring()
    real, same, shifted = ring.sample(600, gen(0)), ring.sample(600, gen(1)), ring.sample(600, gen(1)) + 0.5
    mmd = m["mmd"](permutations=100)
    for name, key in (("mmd", "mmd2_eval"), ("energy-distance", "energy_distance"), ("sliced-wasserstein", "sliced_wasserstein")):
        metric = mmd if name == "mmd" else m[name]()
        a, b = metric.compute(real, same, ctx(ring))[key], metric.compute(real, shifted, ctx(ring))[key]
        assert a < b, name
        assert math.isnan(metric.compute(real, shifted * float("nan"), ctx(ring))[key])
    assert mmd.compute(real, shifted, ctx(ring))["mmd_p_value"] < 0.02


def test_ks_1d_uses_the_exact_cdf_when_the_sampler_has_one():
    m = all_metric_classes()
    data = Normal1D()
    real, fake = data.sample(500, gen(0)), data.sample(500, gen(1)) + 0.3
    out = m["ks-1d"]().compute(real, fake, ctx(data))
    assert out["ks"] == pytest.approx(stats.kstest(fake[:, 0].numpy(), "norm").statistic, rel=1e-5)
    w = m["wasserstein-1d"]().compute(real, fake, ctx(data))["wasserstein1"]
    assert w == pytest.approx(0.3, abs=0.12)
    assert m["js-1d"]().compute(real, real, ctx(data))["js"] == pytest.approx(0.0, abs=1e-12)


def test_ks_1d_falls_back_to_the_two_sample_test_without_a_cdf():
    class NoCdf(Normal1D):
        name = "test-no-cdf"
        cdf = Sampler.cdf

    m = all_metric_classes()
    data = NoCdf()
    real, fake = data.sample(400, gen(0)), data.sample(300, gen(1)) + 0.3
    out = m["ks-1d"]().compute(real, fake, ctx(data))
    assert out["ks"] == pytest.approx(stats.ks_2samp(real[:, 0].numpy(), fake[:, 0].numpy()).statistic)


def test_one_host_thread_nests_and_restores_the_thread_settings():
    before = torch.get_num_threads()
    with one_host_thread():
        assert torch.get_num_threads() == 1
        with one_host_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1  # the inner exit does not restore early
    assert torch.get_num_threads() == before


def test_image_metrics_end_to_end_on_digits(digits_cache):
    data, folder, _ = digits_cache
    m = all_metric_classes()
    c = ctx(data, folder)
    assert m["prdc"]().applies(data) and not m["prdc"]().applies(Ring())
    copies = data.dataset()[:300]
    noise = torch.rand(300, 1, 8, 8, generator=gen(0)) * 2 - 1
    fd = m["frechet-distance"]()
    fd_copies, fd_noise = fd.compute(copies, copies, c), fd.compute(copies, noise, c)
    assert fd_copies["frechet_distance"] < fd_noise["frechet_distance"]
    assert fd_copies["feature_accuracy"] > 0.85
    pr_copies, pr_noise = m["prdc"]().compute(copies, copies, c), m["prdc"]().compute(copies, noise, c)
    assert pr_copies["precision"] == 1.0 and pr_noise["precision"] < 0.2
    mem = m["memorisation"]()
    assert mem.compute(copies, copies, c)["memorisation"] == 1.0
    assert mem.compute(copies, noise, c)["memorisation"] == 0.0
