"""Image data: scikit-learn's bundled ``digits`` and your own ``image-folder`` (PNG/JPEG or .npz).

Images are C x H x W float32 scaled to [-1, 1] (the range of a Tanh generator, as in DCGAN),
held on the device once and sampled by random indices from the generator. Nothing is downloaded
and nothing is unpickled: .npz files are read with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from explorer import Param, Sampler, SpecError, hookimpl

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
MAX_IMAGES = 200_000
MAX_BYTES = 2 * 1024 ** 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ITU-R BT.601 luma, the weights Pillow's convert("L") uses
LUMA = (0.299, 0.587, 0.114)

_digits_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
_folder_cache: OrderedDict[tuple, Tensor] = OrderedDict()


class _ImageData(Sampler):
    """A fixed set of images ``[N, C, H, W]`` on the CPU, copied to each device once."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._images: Tensor = torch.empty(0)
        self._on_device: dict[str, Tensor] = {}

    def _data_on(self, device: torch.device | str) -> Tensor:
        key = str(torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = self._images.to(device)
        return self._on_device[key]

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        data = self._data_on(device)
        idx = torch.randint(0, data.shape[0], (n,), generator=generator, device=device)
        return data[idx]

    def dataset(self) -> Tensor:
        """All images ``[N, C, H, W]`` (float32 in [-1, 1], on the CPU)."""
        return self._images


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------
def load_digits_images(split: str = "train", upscale: int = 8, interpolation: str = "bilinear") -> tuple[Tensor, Tensor]:
    """scikit-learn's digits (1,797 8x8 images, grey levels 0..16) as ``[N, 1, upscale, upscale]`` in
    [-1, 1], with their class labels ``[N]`` (0..9).

    x = 2 v / 16 - 1. ``split``: a fixed shuffle (seed 0), then "train" = the first 80%, "test" the
    rest, "all" everything (in the original order). Cached per argument combination.
    """
    key = (split, upscale, interpolation)
    if key not in _digits_cache:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = bunch.images.astype(np.float32)  # [1797, 8, 8], values 0..16
        order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
        cut = int(TRAIN_FRACTION * len(images))
        chosen = {"train": order[:cut], "test": order[cut:], "all": np.arange(len(images))}[split]
        x = torch.from_numpy(images[chosen]).unsqueeze(1) * (2.0 / 16.0) - 1.0
        if upscale != 8:
            x = F.interpolate(x, size=(upscale, upscale), mode=interpolation,
                              **({"align_corners": False} if interpolation == "bilinear" else {}))
        labels = torch.from_numpy(bunch.target[chosen].astype(np.int64))
        _digits_cache[key] = (x.clamp(-1.0, 1.0).contiguous(), labels)
    return _digits_cache[key]


class Digits(_ImageData):
    """scikit-learn's handwritten digits (bundled with the library: no download), optionally upsampled."""

    name = "digits"
    summary = "Handwritten digits, 8x8 grey (scikit-learn's bundled set), optionally upsampled to 16 or 32"
    params = (
        Param("split", "str", "train", "train: first 80% of a fixed shuffle (seed 0); test: the rest; all",
              choices=("train", "test", "all")),
        Param("upscale", "int", 8, "image side in pixels: 8 is the original, 16 or 32 suit DCGAN", choices=(8, 16, 32)),
        Param("interpolation", "str", "bilinear", "how to upsample", choices=("bilinear", "nearest")),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._images, self._labels = load_digits_images(
            self.config["split"], self.config["upscale"], self.config["interpolation"])
        self.shape = tuple(self._images.shape[1:])

    def labels(self) -> Tensor:
        """The digit (0..9) shown in each image of :meth:`dataset`, ``[N]`` int64 (trains the feature net)."""
        return self._labels


# ------------------------------------------------------------------------------------------------
# image-folder
# ------------------------------------------------------------------------------------------------
def _fits(n: int, channels: int, size: int, where: str) -> None:
    if n > MAX_IMAGES:
        raise SpecError(where, f"{n:,} images is more than the limit of {MAX_IMAGES:,}; use a subset")
    nbytes = n * channels * size * size * 4
    if nbytes > MAX_BYTES:
        raise SpecError(where, f"{n:,} images of {channels}x{size}x{size} need {nbytes / 2**30:.1f} GiB as float32, "
                               f"more than the {MAX_BYTES / 2**30:.0f} GiB limit; use fewer images or a smaller size")


def _centre_crop(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top:top + s, left:left + s]


def open_regular(path: Path, where: str) -> IO[bytes]:
    """Open a file for reading only if it is a regular file: a FIFO, device or socket is refused
    at once (opened non-blocking and checked with fstat, so nothing can hang on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SpecError(where, f"cannot read {str(path)[:200]!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError(where, f"{str(path)[:200]!r} is not a regular file (a pipe, device or socket)")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under ``folder``, recursively, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_folder(folder: Path, channels: int, size: int, where: str, files: list[Path] | None = None) -> Tensor:
    """PNG/JPEG files under ``folder`` as ``[N, C, size, size]`` in [-1, 1]: converted to grey ("L")
    or RGB, centre-cropped to a square, resized with Lanczos filtering."""
    from PIL import Image

    files = image_files(folder) if files is None else files
    if not files:
        raise SpecError(where, f"no PNG or JPEG files found in {str(folder)!r}")
    _fits(len(files), channels, size, where)
    out = torch.empty(len(files), channels, size, size, dtype=torch.float32)
    mode = "L" if channels == 1 else "RGB"
    for i, path in enumerate(files):
        try:
            with open_regular(path, where) as fh, Image.open(fh) as im:
                im.draft(mode, (size, size))  # JPEG: decode at a reduced scale when possible
                im = im.convert(mode)
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.Resampling.LANCZOS)
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise SpecError(where, f"cannot read image {str(path)!r}: {exc}") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        out[i] = torch.from_numpy(a.astype(np.float32)) / 127.5 - 1.0
    return out


def _npz_header(path: Path, member: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of one array in an .npz, read from its .npy header without loading the data."""
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as zf, zf.open(member + ".npy") as f:
            version = fmt.read_magic(f)
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if reader is None:
                return None
            shape, _, dtype = reader(f)
            return tuple(shape), dtype
    except (KeyError, zipfile.BadZipFile, ValueError, OSError):
        return None


def _to_nchw(a: np.ndarray, where: str) -> np.ndarray:
    """[N, H, W], [N, H, W, C] or [N, C, H, W] (C in 1, 3, 4) -> [N, C, H, W]."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        first, last = a.shape[1] in (1, 3, 4), a.shape[-1] in (1, 3, 4)
        if first and not last:
            return a
        if last:
            return a.transpose(0, 3, 1, 2)
    raise SpecError(where, f"the array has shape {list(a.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
                           "with C = 1, 3 or 4 channels")


def _scale(a: np.ndarray, where: str) -> tuple[float, float]:
    """(a, b) with x -> a x + b mapping the array's values to [-1, 1], judged from its dtype and range."""
    if a.dtype == np.bool_:
        return 2.0, -1.0
    if a.dtype == np.uint8:
        return 1 / 127.5, -1.0
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise SpecError(where, f"the array's dtype {a.dtype} is not numeric; save images as uint8 (0..255) or float")
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise SpecError(where, "the array holds NaN or infinite values")
    if lo >= -1.0 and hi <= 1.0 and lo < 0.0:
        return 1.0, 0.0
    if lo >= 0.0 and hi <= 1.0 and np.issubdtype(a.dtype, np.floating):
        return 2.0, -1.0
    if lo >= 0.0 and hi <= 255.0:
        return 1 / 127.5, -1.0
    raise SpecError(where, f"pixel values span {lo:g} .. {hi:g}; expected 0..255, 0..1 or -1..1")


def load_npz(path: Path, key: str, channels: int, size: int, where: str) -> Tensor:
    """One array of an .npz as ``[N, C, size, size]`` in [-1, 1]. Read with allow_pickle=False; the
    shape and dtype are checked from the header before the data is read."""
    with open_regular(path, where) as fh:
        magic = fh.read(6)
    if not magic.startswith(b"PK"):
        what = ("holds pickled data, which is never loaded (unpickling can run code)" if magic[:1] == b"\x80"
                else "holds a single .npy array" if magic == b"\x93NUMPY" else "is not an .npz archive")
        raise SpecError(where, f"{str(path)!r} {what}; save the images with numpy.savez(path, images=array)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise SpecError(where, f"cannot read {str(path)!r} as .npz: {exc}") from None
    with npz:
        names = list(npz.files)
        if not names:
            raise SpecError(where, f"{str(path)!r} holds no arrays")
        name = key or names[0]
        if name not in names:
            raise SpecError(where.rsplit(".", 1)[0] + ".key", f"no array {name!r} in {str(path)!r}; it holds: {', '.join(names)}")
        header = _npz_header(path, name)
        if header is not None:
            shape, dtype = header
            if dtype.hasobject:
                raise SpecError(where, f"array {name!r} holds Python objects (dtype {dtype}), which would need pickle; "
                                       "pickled data is never loaded: save a numeric array (uint8 or float)")
            if len(shape) >= 1:
                _fits(shape[0], channels, size, where)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes > MAX_BYTES:
                raise SpecError(where, f"array {name!r} is {nbytes / 2**30:.1f} GiB, more than the {MAX_BYTES / 2**30:.0f} GiB limit")
        try:
            raw = npz[name]
        except ValueError as exc:
            raise SpecError(where, f"cannot load array {name!r} without pickle ({exc}); save a numeric array (uint8 or float)") from None
    a = _to_nchw(raw, where)
    if a.shape[0] == 0:
        raise SpecError(where, f"array {name!r} holds no images")
    _fits(a.shape[0], channels, size, where)
    mul, add = _scale(a, where)
    out = torch.empty(a.shape[0], channels, size, size, dtype=torch.float32)
    for start in range(0, a.shape[0], 1024):  # in chunks: bounded extra memory
        x = torch.from_numpy(np.ascontiguousarray(a[start:start + 1024]).astype(np.float32)) * mul + add
        if x.shape[1] != channels:
            if channels == 1:
                x = sum(w * x[:, c:c + 1] for c, w in enumerate(LUMA)) if x.shape[1] >= 3 else x[:, :1]
            else:
                x = x[:, :3] if x.shape[1] >= 3 else x.expand(-1, 3, -1, -1)
        x = _centre_crop(x)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + x.shape[0]] = x.clamp(-1.0, 1.0)
    return out


class ImageFolder(_ImageData):
    """Your images: a folder of PNG/JPEG files or an .npz array, resized to ``size`` and scaled to [-1, 1]."""

    name = "image-folder"
    summary = "Your own images: a folder of PNG/JPEG files or an .npz array (no pickle)"
    params = (
        Param("path", "str", "", "a folder of PNG/JPEG images (searched recursively) or an .npz file"),
        Param("channels", "int", 1, "1 = grey, 3 = RGB", choices=(1, 3)),
        Param("size", "int", 32, "images are centre-cropped to a square and resized to size x size", choices=(8, 16, 32, 64)),
        Param("key", "str", "", "for .npz: the array to use (empty = the first)"),
    )

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        where = f"{self.name}.path"
        raw = self.config["path"].strip()
        if not raw:
            raise SpecError(where, "set path to a folder of PNG/JPEG images or to an .npz file")
        try:
            path = Path(raw).expanduser()
            info = path.stat()
        except FileNotFoundError:
            raise SpecError(where, f"{raw[:200]!r} does not exist") from None
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission
            raise SpecError(where, f"{raw[:200]!r} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        if not stat.S_ISDIR(info.st_mode) and not stat.S_ISREG(info.st_mode):
            raise SpecError(where, f"{raw[:200]!r} is not a regular file or a folder (a pipe, device or socket); "
                                   "set path to a folder of PNG/JPEG images or to an .npz file")
        channels, size, key = self.config["channels"], self.config["size"], self.config["key"]
        # the cache key changes whenever a file is added, removed or rewritten
        try:
            files = image_files(path) if stat.S_ISDIR(info.st_mode) else [path]
            fingerprint = hash(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))
        except OSError as exc:
            raise SpecError(where, f"{raw[:200]!r} cannot be read: {exc.strerror or exc}") from None
        cache_key = (str(path.resolve()), fingerprint, channels, size, key)
        if cache_key in _folder_cache:
            _folder_cache.move_to_end(cache_key)
        else:
            if path.is_dir():
                images = load_folder(path, channels, size, where, files)
            elif path.suffix.lower() == ".npz":
                images = load_npz(path, key, channels, size, where)
            else:
                raise SpecError(where, f"{raw!r} is neither a folder nor an .npz file")
            _folder_cache[cache_key] = images
            while len(_folder_cache) > 2:
                _folder_cache.popitem(last=False)
        self._images = _folder_cache[cache_key]
        self.shape = (channels, size, size)


@hookimpl
def register_samplers(register) -> None:
    register(Digits)
    register(ImageFolder)
