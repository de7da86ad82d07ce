"""Data sets for the training dashboard, all loaded into memory as tensors.

Offline and always there:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images).
* ``mnist1d``: MNIST-1D ("Scaling down Deep Learning"), built locally with the
  ``mnist1d`` package's ``make_dataset`` and its default arguments (4000 train / 1000 test).

Downloaded once on first use (with progress, and a clear message when offline):

* ``mnist``, ``fashion_mnist``, ``cifar10`` from the mirrors torchvision lists.

And any image folder on disk with one sub-folder per class.

Loading is a generator: it yields :class:`~playground.progress.Progress` while it
downloads or reads, and returns a :class:`DataBundle`.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import tarfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import BadFileError, UserError
from ...paths import data_dir
from ...progress import Progress, finish
from ..checkpoints import NUMPY_ARRAYS, restricted_load
from ..download import cached_download
from ..download import download as download  # re-exported: it used to live here

OFFLINE_DATASETS = {"digits": "Digits 8x8 (scikit-learn)", "mnist1d": "MNIST-1D"}
DOWNLOADABLE_DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
IMAGE_FOLDER = "folder"
DATASETS = {**OFFLINE_DATASETS, **DOWNLOADABLE_DATASETS, IMAGE_FOLDER: "Image folder…"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class DataBundle:
    """A data set split into training and validation tensors.

    ``*_x`` hold inputs scaled to [0, 1] (images: (N, C, H, W); sequences: (N, L));
    ``mean`` and ``std`` are the training set's, applied by the trainer per batch so the
    raw tensors stay displayable.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    split_note: str = ""
    mean: float = 0.0
    std: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return self.train_x.dim() == 4

    def describe(self) -> str:
        return (f"{len(self.train_x):,} train / {len(self.val_x):,} validation · "
                f"{self.num_classes} classes · input {'x'.join(map(str, self.input_shape))}"
                + (f" · {self.split_note}" if self.split_note else ""))


def _finish(name: str, train_x, train_y, val_x, val_y, classes, note) -> DataBundle:
    train_x = torch.as_tensor(train_x, dtype=torch.float32)
    val_x = torch.as_tensor(val_x, dtype=torch.float32)
    return DataBundle(
        name=name, train_x=train_x, train_y=torch.as_tensor(train_y, dtype=torch.long),
        val_x=val_x, val_y=torch.as_tensor(val_y, dtype=torch.long), classes=list(classes),
        split_note=note, mean=float(train_x.mean()), std=float(train_x.std().clamp_min(1e-6)))


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < val_fraction < 1.0:
        raise UserError("The validation fraction must be between 0 and 1.")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


# -- offline sets --------------------------------------------------------------------------
def load_digits(val_fraction: float = 0.2, seed: int = 0) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    tr, va = _split(len(x), val_fraction, seed)
    return _finish("digits", x[tr], d.target[tr], x[va], d.target[va],
                   [str(c) for c in range(10)], f"random {val_fraction:.0%} held out (seed {seed})")


MNIST1D_KEYS = ("x", "y", "x_test", "y_test", "t")


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> dict:
    """MNIST-1D built offline with the package's default arguments (seed 42).

    Building takes a few seconds (and cannot be interrupted), so the arrays are kept in
    ``<data dir>/datasets/mnist1d.npz`` after the first time (read without pickle).
    """
    cache = data_dir() / "datasets" / "mnist1d.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as f:
                if all(k in f for k in MNIST1D_KEYS):
                    return {k: f[k] for k in MNIST1D_KEYS}
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    os.environ.setdefault("MPLBACKEND", "Agg")  # mnist1d imports pyplot
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    arrays = {k: np.asarray(data[k]) for k in MNIST1D_KEYS}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name("mnist1d.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # no cache, no harm
    return arrays


def load_mnist1d() -> DataBundle:
    d = mnist1d_arrays()
    return _finish("mnist1d", d["x"], d["y"], d["x_test"], d["y_test"],
                   [str(c) for c in range(10)], "official test split as validation")


# -- downloadable sets ---------------------------------------------------------------------
MIRROR_ENV = "PLAYGROUND_DATASET_MIRROR"


def _download_table(name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(mirror base URLs, [(file name, md5)]) for a downloadable set, read from torchvision."""
    from torchvision import datasets

    if name in ("mnist", "fashion_mnist"):
        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        return list(cls.mirrors), [(f, md5) for f, md5 in cls.resources]
    if name == "cifar10":
        url = datasets.CIFAR10.url
        return [url.rsplit("/", 1)[0] + "/"], [(datasets.CIFAR10.filename, datasets.CIFAR10.tgz_md5)]
    raise UserError(f"Unknown data set {name!r}")


def fetch_files(name: str, root: Path) -> Generator[Progress, None, Path]:
    """Make sure every file of a downloadable set is in ``root`` (checked by md5)."""
    mirrors, files = _download_table(name)
    if os.environ.get(MIRROR_ENV):
        mirrors = [os.environ[MIRROR_ENV].rstrip("/") + "/"]
    root.mkdir(parents=True, exist_ok=True)
    for fname, md5 in files:
        yield from cached_download([base + fname for base in mirrors], root / fname, md5=md5,
                                   what=f"{DATASETS[name]} ({fname})",
                                   hint="The digits and MNIST-1D data sets work without a network.")
    return root


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise UserError(f"{path.name} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path.name} is truncated")
    return data.reshape(dims)


def _load_mnist_like(name: str, root: Path) -> Generator[Progress, None, DataBundle]:
    yield from fetch_files(name, root)
    yield Progress(None, f"Reading {DATASETS[name]}")
    arrays = {}
    for fname, _ in _download_table(name)[1]:
        key = ("train" if fname.startswith("train") else "test") + ("_x" if "images" in fname else "_y")
        arrays[key] = _read_idx(root / fname)
    if name == "mnist":
        classes = [str(c) for c in range(10)]
    else:
        classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    scale = np.float32(1 / 255)
    return _finish(name, arrays["train_x"][:, None] * scale, arrays["train_y"],
                   arrays["test_x"][:, None] * scale, arrays["test_y"], classes,
                   "official test split as validation")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file: (images (N, 3, 32, 32) uint8, labels (N,)).

    The batches are Python pickles of a dict of numpy arrays, read through
    :func:`~playground.ml.checkpoints.restricted_load` with only what rebuilds numpy
    arrays allowed, so a doctored batch cannot run code.
    """
    d = restricted_load(path, NUMPY_ARRAYS, what=f"the CIFAR-10 batch {path.name}", encoding="latin1")
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise BadFileError(f"The CIFAR-10 batch {path.name} does not hold 'data' and 'labels'.")
    try:
        x = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d["labels"], np.int64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise BadFileError(f"The CIFAR-10 batch {path.name} is damaged ({exc}).") from None
    if len(x) != len(y):
        raise BadFileError(f"The CIFAR-10 batch {path.name} has {len(x)} images but {len(y)} labels.")
    return x, y


def _load_cifar10(root: Path) -> Generator[Progress, None, DataBundle]:
    yield from fetch_files("cifar10", root)
    folder = root / "cifar-10-batches-py"
    if not (folder / "test_batch").exists():
        yield Progress(None, "Unpacking CIFAR-10")
        with tarfile.open(root / _download_table("cifar10")[1][0][0]) as tar:
            tar.extractall(root, filter="data")
    parts = []
    for i in range(1, 6):
        parts.append(read_cifar_batch(folder / f"data_batch_{i}"))
        yield Progress(i / 6, f"Reading CIFAR-10 batch {i} / 5")
    tx, ty = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    vx, vy = read_cifar_batch(folder / "test_batch")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    scale = np.float32(1 / 255)
    return _finish("cifar10", tx * scale, ty, vx * scale, vy, classes, "official test split as validation")


# -- image folders -------------------------------------------------------------------------
def _too_many_pixels(width: int, height: int) -> bool:
    """Whether a picture is over PIL's decompression-bomb limit (read at call time).

    PIL only warns between the limit and twice the limit and refuses above; a picture
    that will be shrunk to a thumbnail has no need of either, so both are skipped.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and width * height > limit


def load_image_folder(path: str | Path, image_size: int = 32, val_fraction: float = 0.2,
                      seed: int = 0) -> Generator[Progress, None, DataBundle]:
    """Images in ``path/<class>/*.png``, resized to ``image_size`` squared."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    if len(classes) < 2 or not files:
        raise UserError(f"{root} needs at least two sub-folders of images, one per class "
                        f"(found {len(classes)} sub-folders and {len(files)} images).")
    images, labels, skipped = [], [], 0
    grey = True
    for k, (f, label) in enumerate(files):
        try:
            with Image.open(f) as im:
                if _too_many_pixels(im.width, im.height):
                    raise Image.DecompressionBombError(f"{f.name} is {im.width}x{im.height} pixels")
                grey = grey and im.mode in ("L", "1", "I;16", "I")
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
                labels.append(label)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            skipped += 1  # unreadable, or too big to decode (possibly built to exhaust memory)
        if k % 50 == 0:
            yield Progress(k / len(files), f"Reading images {k}/{len(files)}")
    if len(images) < 2:
        raise UserError(f"No readable images in {root}.")
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
    if grey:
        x = x[:, :1]
    y = np.asarray(labels)
    tr, va = _split(len(x), val_fraction, seed)
    note = f"random {val_fraction:.0%} held out (seed {seed})"
    if skipped:
        note += f"; {skipped} unreadable files skipped"
    return _finish(root.name, x[tr], y[tr], x[va], y[va], classes, note)


# -- one entry point ----------------------------------------------------------------------
def load_dataset(name: str, *, folder: str | None = None, image_size: int = 32,
                 val_fraction: float = 0.2, seed: int = 0,
                 root: Path | None = None) -> Generator[Progress, None, DataBundle]:
    """Load a data set by name, yielding progress; returns the :class:`DataBundle`."""
    if name == "digits":
        return load_digits(val_fraction, seed)
    if name == "mnist1d":
        yield Progress(None, "Building MNIST-1D")
        return load_mnist1d()
    if name in DOWNLOADABLE_DATASETS:
        base = (root or data_dir() / "datasets") / name
        if name == "cifar10":
            return (yield from _load_cifar10(base))
        return (yield from _load_mnist_like(name, base))
    if name == IMAGE_FOLDER:
        if not folder:
            raise UserError("Choose an image folder first.")
        return (yield from load_image_folder(folder, image_size, val_fraction, seed))
    raise UserError(f"Unknown data set {name!r}. Choose one of: {', '.join(DATASETS)}.")


def load_dataset_now(name: str, **kwargs) -> DataBundle:
    """:func:`load_dataset` without the progress (for scripts and tests)."""
    return finish(load_dataset(name, **kwargs))


def remove_download(name: str, root: Path | None = None) -> None:
    shutil.rmtree((root or data_dir() / "datasets") / name, ignore_errors=True)
