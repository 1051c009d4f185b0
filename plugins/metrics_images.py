"""Image metrics in the feature space of a small classifier trained on the data set itself
(:mod:`plugins._features`; nothing is downloaded): Fréchet distance, precision / recall, density /
coverage, and a memorisation score from nearest-training-neighbour distances.

The reference set is the sampler's whole ``dataset()`` (a fixed random subset of at most
``max_reference`` images for the k-NN metrics), not the small real batch passed to ``compute``:
it is what the generator trains on, and it keeps the reference identical across snapshots.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from explorer import Metric, MetricContext, Param, Sampler, hookimpl
from plugins._features import dataset_features, feature_extractor_for
from plugins._feature_metrics import (
    frechet_distance, gaussian_stats, memorisation_score, nearest_distances, prdc, reference_radii,
)
from explorer.metrics import all_finite

NAN = float("nan")


def _subset(n: int, k: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset of k of n indices (all of them when k >= n)."""
    return np.arange(n) if k >= n else np.sort(np.random.default_rng(seed).permutation(n)[:k])


class _ImageMetric(Metric):
    applies_to = ("image",)

    def applies(self, data: Sampler) -> bool:
        return super().applies(data) and data.dataset() is not None


class FrechetDistance(_ImageMetric):
    """Fréchet distance between Gaussians fitted to the features of generated and training images
    (FID's formula, Heusel et al. 2017, in our own feature space: numbers are comparable between
    runs on the same data set, not with published FIDs). Also reports ``feature_accuracy``, the
    feature classifier's held-out accuracy."""

    name = "frechet-distance"
    directions = {"frechet_distance": "lower", "feature_accuracy": None}  # the feature network's accuracy: no "best"
    summary = "Fréchet distance in the features of a classifier trained on the data set (FID-like, no download)"
    sample_size = 1000

    def __init__(self, **kw):
        super().__init__(**kw)
        self._ref: tuple[object, tuple[np.ndarray, np.ndarray]] | None = None

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        ext = feature_extractor_for(context.data, context.cache_dir)
        if not all_finite(fake):
            return {"frechet_distance": NAN, "feature_accuracy": ext.accuracy}
        if self._ref is None or self._ref[0] is not ext:
            self._ref = (ext, gaussian_stats(dataset_features(context.data, ext)))
        mu_r, cov_r = self._ref[1]
        mu_f, cov_f = gaussian_stats(ext(fake))
        return {"frechet_distance": frechet_distance(mu_f, cov_f, mu_r, cov_r), "feature_accuracy": ext.accuracy}


class PRDC(_ImageMetric):
    """Precision and recall (Kynkäänniemi et al. 2019, k = 3) and density and coverage (Naeem et
    al. 2020, k = 5) of generated against training features; see :func:`plugins._feature_metrics.prdc`.
    Precision / density: are samples realistic? Recall / coverage: is the data's variety covered?"""

    name = "prdc"
    directions = {"precision": "higher", "recall": "higher", "density": "higher", "coverage": "higher"}
    summary = "Precision/recall (k=3) and density/coverage (k=5) in classifier feature space"
    params = (
        Param("k_pr", "int", 3, "neighbours for precision / recall (Kynkäänniemi et al.: 3)", low=1, high=50),
        Param("k_dc", "int", 5, "neighbours for density / coverage (Naeem et al.: 5)", low=1, high=50),
        Param("max_reference", "int", 5000, "training images in the reference set at most", low=10, high=50000),
    )
    sample_size = 1000

    def __init__(self, **kw):
        super().__init__(**kw)
        self._ref: tuple[object, Tensor, tuple[Tensor, Tensor]] | None = None  # (extractor, features, radii)

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(fake):
            return dict.fromkeys(("precision", "recall", "density", "coverage"), NAN)
        c = self.config
        ext = feature_extractor_for(context.data, context.cache_dir)
        if self._ref is None or self._ref[0] is not ext:
            ref = dataset_features(context.data, ext)
            ref = ref[torch.as_tensor(_subset(ref.shape[0], c["max_reference"]))].double()
            self._ref = (ext, ref, reference_radii(ref, c["k_pr"], c["k_dc"]))
        _, ref, radii = self._ref
        return prdc(ref, ext(fake), c["k_pr"], c["k_dc"], radii=radii)


class Memorisation(_ImageMetric):
    """Does the generator copy its training images? Each generated image's distance to its
    nearest training image, against the training set's own leave-one-out nearest-neighbour
    distances (in pixels by default, as in Goodfellow et al. 2014, Fig. 2; or in classifier
    features). ``memorisation``: the fraction of samples closer than the ``quantile`` of the
    training distances (about ``quantile`` for new samples, 1 for copies); ``nn_ratio``: median
    sample distance over median training distance (about 1 for new samples, near 0 for copies).
    See :func:`plugins._feature_metrics.memorisation_score`."""

    name = "memorisation"
    directions = {"memorisation": "lower", "nn_ratio": "higher"}
    summary = "Fraction of samples closer to a training image than training images are to each other"
    params = (
        Param("quantile", "float", 0.05, "a sample counts as memorised below this quantile of train-train NN distances", low=0.001, high=0.5),
        Param("space", "str", "pixels", "where distances are measured", choices=("pixels", "features")),
        Param("calibration", "int", 2000, "training images whose leave-one-out NN distance sets the threshold", low=10, high=50000),
    )
    sample_size = 1000

    def __init__(self, **kw):
        super().__init__(**kw)
        self._train: tuple[object, Tensor, np.ndarray] | None = None  # (owner, train rows, train NN distances)

    def compute(self, real: Tensor, fake: Tensor, context: MetricContext) -> dict[str, float]:
        if not all_finite(fake):
            return {"memorisation": NAN, "nn_ratio": NAN}
        images = context.data.dataset()
        if self.config["space"] == "features":
            ext = feature_extractor_for(context.data, context.cache_dir)
            train, query, owner = dataset_features(context.data, ext), ext(fake), ext
        else:
            train = images.reshape(images.shape[0], -1)
            query, owner = fake.reshape(fake.shape[0], -1), images
        if self._train is None or self._train[0] is not owner:
            train = train.detach().to("cpu", torch.float64)  # converted once, not every snapshot
            idx = _subset(train.shape[0], self.config["calibration"])
            self._train = (owner, train, nearest_distances(train[torch.as_tensor(idx)], train, exclude=idx))
        _, train, train_nn = self._train
        return memorisation_score(nearest_distances(query, train), train_nn, self.config["quantile"])


@hookimpl
def register_metrics(register):
    register(FrechetDistance)
    register(PRDC)
    register(Memorisation)
