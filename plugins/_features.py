"""A small image classifier, trained on the data set itself, whose penultimate layer is the feature
space of the image metrics (Fréchet distance, precision/recall, density/coverage).

FID uses Inception features, whose weights need a download; here nothing is downloaded. A small
CNN is trained for a few epochs on the sampler's own ``dataset()``: on its class labels when the
sampler has a ``labels()`` method (digits), else on pseudo-labels, the k-means cluster ids
(scikit-learn ``KMeans``, k = 10) of the downsampled pixels, so the features still separate the
data's visual clusters. 20% of the images are held out; the held-out accuracy is reported as the
metric ``feature_accuracy`` (how much to trust the feature space). The trained weights are cached
on disk as a state dict (``torch.save``, loaded with ``weights_only=True``), keyed by a hash of the
images, the labels and the training recipe: a second call loads instead of training.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.capabilities import has_capability
from explorer.components import Sampler
from explorer.metrics import one_host_thread

#: part of the cache key: bump when the network or the training recipe changes
RECIPE = {"version": 1, "epochs": 8, "batch": 64, "lr": 2e-3, "holdout": 0.2, "seed": 0, "max_side": 32, "clusters": 10}
MAX_TRAIN = 20_000  # images used for training at most (a fixed random subset beyond that)
SMALL = 5_000_000  # below this many input values, run the net on one thread


def _threads_for(x: Tensor):
    """One host thread for small inputs (see :func:`explorer.metrics.one_host_thread`): this net is
    tiny, and beside a training thread a multi-thread pool waits far longer than it computes."""
    return one_host_thread(x.numel() < SMALL)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/generative-explorer`` (``~/.cache/generative-explorer`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "generative-explorer"


def prepare(images: Tensor, max_side: int = RECIPE["max_side"]) -> Tensor:
    """Float32 ``[n, C, H, W]`` on the CPU, area-downsampled so that no side exceeds ``max_side``."""
    x = images.detach().to("cpu", torch.float32)
    h, w = x.shape[-2:]
    if h > max_side or w > max_side:
        x = F.adaptive_avg_pool2d(x, (min(h, max_side), min(w, max_side)))
    return x


class SmallConvNet(nn.Module):
    """conv3x3(32) -> conv3x3/2(64) -> 4x4 average pool -> 128-d features -> class logits."""

    def __init__(self, channels: int, classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),      # 32 x H x W
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 64 x H/2 x W/2
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),                 # 64*4*4 = 1024
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),            # feature_dim: the feature space
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class FeatureExtractor:
    """A trained :class:`SmallConvNet` plus what the metrics report about it."""

    net: SmallConvNet
    accuracy: float          #: held-out accuracy on the (pseudo-)labels
    key: str                 #: the cache key (hash of data, labels and recipe)
    from_cache: bool         #: True when loaded from disk rather than trained now
    pseudo_labels: bool      #: True when trained on k-means cluster ids
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @torch.no_grad()
    def __call__(self, images: Tensor, batch: int = 1024) -> Tensor:
        """Features ``[n, 128]`` (float32, CPU) of images ``[n, C, H, W]`` in the data's range."""
        x = prepare(images)
        self.net.eval()
        with _threads_for(x):
            return torch.cat([self.net.features(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def _labels_of(data: Sampler, n: int) -> Tensor | None:
    if not has_capability(data, "labels"):
        return None
    y = data.labels()
    if y is None:
        return None
    y = torch.as_tensor(y).reshape(-1)
    if y.shape[0] != n:
        return None
    return torch.as_tensor(np.unique(y.cpu().numpy(), return_inverse=True)[1].reshape(-1), dtype=torch.long)


def kmeans_labels(images: Tensor, clusters: int = RECIPE["clusters"], seed: int = 0) -> Tensor:
    """Pseudo-labels: k-means cluster ids of the flattened, downsampled images (fit on <= 5,000)."""
    from sklearn.cluster import KMeans

    flat = prepare(images, 8).reshape(images.shape[0], -1).numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    fit = flat[rng.permutation(len(flat))[:5000]]
    with one_host_thread():
        km = KMeans(n_clusters=min(clusters, len(fit)), n_init=4, random_state=seed).fit(fit)
        return torch.as_tensor(km.predict(flat), dtype=torch.long)


def cache_key(images: Tensor, labels: Tensor | None) -> str:
    h = hashlib.sha256(repr(sorted(RECIPE.items())).encode())
    h.update(repr(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy()).tobytes())
    h.update(b"labels" if labels is not None else b"kmeans")
    if labels is not None:
        h.update(labels.cpu().numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:20]


def train_feature_net(images: Tensor, labels: Tensor, classes: int) -> tuple[SmallConvNet, float]:
    """Train a :class:`SmallConvNet` (Adam, cross-entropy) on 80% of the images; return it and its
    accuracy on the held-out 20%. Seeded and run under a forked RNG, so it is reproducible and
    leaves the global torch RNG untouched."""
    r = RECIPE
    x = prepare(images)
    n = x.shape[0]
    with torch.random.fork_rng(devices=[]), _threads_for(x), torch.enable_grad():  # callers may hold no_grad
        torch.manual_seed(r["seed"])
        perm = torch.randperm(n)
        n_test = max(1, int(round(r["holdout"] * n))) if n > 1 else 0
        test, train = perm[:n_test], perm[n_test:][:MAX_TRAIN]
        net = SmallConvNet(x.shape[1], classes)
        opt = torch.optim.Adam(net.parameters(), lr=r["lr"])
        net.train()
        for _ in range(r["epochs"]):
            order = train[torch.randperm(train.shape[0])]
            for i in range(0, order.shape[0], r["batch"]):
                idx = order[i : i + r["batch"]]
                loss = F.cross_entropy(net(x[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[test]).argmax(1) == labels[test]).float().mean()) if n_test else float("nan")
    return net, acc


def _save_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_or_train(images: Tensor, labels: Tensor | None = None, cache_dir: str | os.PathLike | None = None) -> FeatureExtractor:
    """The feature extractor for these images: loaded from ``cache_dir`` when a net trained on the
    same images, labels and recipe is there, else trained now and saved (atomically)."""
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    pseudo = labels is None
    if pseudo:
        key = cache_key(images, None)
    else:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        key = cache_key(images, labels)
    path = Path(cache_dir or default_cache_dir()) / f"feature-net-{key}.pt"
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = SmallConvNet(int(state["channels"]), int(state["classes"]))
            net.load_state_dict(state["state_dict"])
            return FeatureExtractor(net.eval(), float(state["accuracy"]), key, True, bool(state["pseudo_labels"]))
        except Exception:  # a corrupt or stale file: train again and overwrite it
            pass
    if pseudo:
        labels = kmeans_labels(images)
    classes = int(labels.max()) + 1
    net, acc = train_feature_net(images, labels, classes)
    payload = {"state_dict": net.state_dict(), "accuracy": acc, "channels": images.shape[1],
               "classes": classes, "pseudo_labels": pseudo, "recipe_version": RECIPE["version"]}
    _save_atomic(payload, path)
    return FeatureExtractor(net, acc, key, False, pseudo)


# One extractor per data set tensor in this process; holding the tensor keeps its id unique.
_BY_DATASET: dict[int, tuple[Tensor, FeatureExtractor]] = {}


def feature_extractor_for(data: Sampler, cache_dir: str | os.PathLike | None = None) -> FeatureExtractor:
    """The feature extractor for a data sampler's ``dataset()`` (with its ``labels()`` if any),
    memoised in memory per data set and on disk per content hash."""
    images = data.dataset()
    if images is None:
        raise ValueError(f"sampler {data.name!r} has no dataset(): image feature metrics need its training images")
    hit = _BY_DATASET.get(id(images))
    if hit is not None and hit[0] is images:
        return hit[1]
    ext = load_or_train(images, _labels_of(data, images.shape[0]), cache_dir)
    _BY_DATASET[id(images)] = (images, ext)
    return ext


def dataset_features(data: Sampler, ext: FeatureExtractor) -> Tensor:
    """Features of the whole training set, computed once per extractor."""
    if "dataset" not in ext._memo:
        ext._memo["dataset"] = ext(data.dataset())
    return ext._memo["dataset"]


def clear_memory_cache() -> None:
    """Forget the in-memory extractors (the disk cache stays)."""
    _BY_DATASET.clear()
