"""Data sets for the SOM viewer, all offline, all returned as :class:`SOMData`.

Built in:

* ``rgb``: random colours (r, g, b in [0, 1]) from a seed, labelled with the nearest of
  a few named colours. The classic first SOM: similar colours end up side by side.
* ``iris``: scikit-learn's bundled iris (150 x 4, 3 species).
* ``wine``: scikit-learn's bundled wine (178 x 13, 3 cultivars).
* ``digits``: scikit-learn's bundled 8 x 8 digits (1797 x 64), pixels scaled to [0, 1].
* ``mnist1d``: MNIST-1D's 4000 training signals of length 40, built locally by the
  ``mnist1d`` package's ``make_dataset`` (never its downloading ``get_dataset``).

And any CSV file via :func:`load_csv`.

Standardisation (z-score: every feature minus its mean, over its standard deviation)
matters when features have different units or ranges, because the SOM measures plain
Euclidean distance: without it, wine's proline (hundreds) would drown its hue (about 1).
So iris and wine are standardised by default, and CSV files are too. Colours, digit
pixels and MNIST-1D signals share one scale already and are left as they are, so their
prototypes can be shown as colours, images and curves. ``mean`` and ``scale`` record
what was done, so values can be shown in the original units: ``x * scale + mean``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

BUILTIN = {
    "rgb": "Random RGB colours",
    "iris": "Iris (4 measurements, 3 species)",
    "wine": "Wine (13 chemical measurements, 3 cultivars)",
    "digits": "Digits 8x8 (scikit-learn)",
    "mnist1d": "MNIST-1D (signals of length 40)",
}

NAMED_COLOURS = {  # the labels of the rgb data set
    "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "grey": (0.5, 0.5, 0.5),
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
}

MISSING_MARKERS = {"", "na", "n/a", "nan", "null", "none", "?", "-"}


class SOMDataError(UserError, ValueError):
    """A data set could not be loaded; the message says why, for the user."""


@dataclass
class SOMData:
    """Samples for a SOM, with what is known about them."""

    name: str
    x: np.ndarray  # float32 (n, d)
    labels: np.ndarray | None = None  # int64 (n,), values 0 .. len(label_names) - 1
    label_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    image_shape: tuple[int, int] | None = None  # each sample is an image of this shape
    mean: np.ndarray | None = None  # standardisation used: original = x * scale + mean
    scale: np.ndarray | None = None
    notes: str = ""  # e.g. columns a CSV file had that were left out

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score every column; a constant column is only centred (its scale is taken as 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return ((x - mean) / scale).astype(np.float32), mean.astype(np.float32), scale.astype(np.float32)


def _finish(name, x, labels, label_names, feature_names, standardize, image_shape=None, notes="") -> SOMData:
    x = np.asarray(x, dtype=np.float64)
    mean = scale = None
    if standardize:
        x, mean, scale = _standardise(x)
    return SOMData(name=name, x=np.ascontiguousarray(x, dtype=np.float32),
                   labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                   label_names=[str(n) for n in label_names], feature_names=[str(n) for n in feature_names],
                   image_shape=image_shape, mean=mean, scale=scale, notes=notes)


# -----------------------------------------------------------------------------
# Built-in data sets


def rgb(n: int = 1000, seed: int = 0) -> SOMData:
    """``n`` uniformly random colours; label = the nearest named colour."""
    x = np.random.default_rng(seed).random((n, 3))
    names = list(NAMED_COLOURS)
    centres = np.array([NAMED_COLOURS[c] for c in names])
    labels = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return _finish("rgb", x, labels, names, ["r", "g", "b"], standardize=False)


def iris(standardize: bool = True) -> SOMData:
    from sklearn.datasets import load_iris

    d = load_iris()
    return _finish("iris", d.data, d.target, d.target_names, d.feature_names, standardize)


def wine(standardize: bool = True) -> SOMData:
    from sklearn.datasets import load_wine

    d = load_wine()
    return _finish("wine", d.data, d.target, d.target_names, d.feature_names, standardize)


def digits(standardize: bool = False) -> SOMData:
    from sklearn.datasets import load_digits

    d = load_digits()
    names = [f"pixel {r},{c}" for r in range(8) for c in range(8)]
    return _finish("digits", d.data / 16.0, d.target, [str(i) for i in range(10)], names,
                   standardize, image_shape=(8, 8))


def mnist1d(standardize: bool = False) -> SOMData:
    """The 4000 training signals of MNIST-1D, built offline (about a second, cached)."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # mnist1d imports pyplot; no GUI backend in a worker
    from .training.data import mnist1d_arrays  # make_dataset(get_dataset_args()), cached; never downloads

    d = mnist1d_arrays()
    x = np.asarray(d["x"], dtype=np.float64)
    return _finish("mnist1d", x, np.asarray(d["y"]), [str(i) for i in range(10)],
                   [f"t{i}" for i in range(x.shape[1])], standardize)


def load(name: str, standardize: bool | None = None) -> SOMData:
    """A built-in data set by name (see BUILTIN); ``standardize=None`` means its default."""
    makers = {"rgb": rgb, "iris": iris, "wine": wine, "digits": digits, "mnist1d": mnist1d}
    if name not in makers:
        raise SOMDataError(f"Unknown data set {name!r}; choose one of {', '.join(makers)}.")
    if name == "rgb":
        if standardize:
            raise SOMDataError("The RGB colours are not standardised (they are shown as colours).")
        return rgb()
    return makers[name]() if standardize is None else makers[name](standardize=standardize)


# -----------------------------------------------------------------------------
# CSV files


def _number(text: str) -> float | None:
    """The cell as a float, or None when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def _is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING_MARKERS


def _read_text(path: Path) -> str:
    if not path.exists():
        raise SOMDataError(f"File not found: {path}")
    if path.is_dir():
        raise SOMDataError(f"{path} is a folder, not a CSV file.")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SOMDataError(f"Could not read {path}: {e.strerror or e}") from e
    if b"\x00" in raw[:65536]:
        raise SOMDataError(f"{path.name} does not look like a CSV text file (it contains binary data).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if not text.strip():
        raise SOMDataError(f"{path.name} is empty.")
    return text


def _split_rows(text: str, name: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) per non-blank record, with the delimiter guessed from the start."""
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or nothing to go on: plain commas
    reader = csv.reader(io.StringIO(text), dialect)
    rows = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except csv.Error as e:
        raise SOMDataError(f"{name} is not a readable CSV file (line {reader.line_num}: {e}).") from e
    if not rows:
        raise SOMDataError(f"{name} is empty.")
    width = len(rows[0][1])
    for line, cells in rows:
        if len(cells) != width:
            raise SOMDataError(f"{name}, line {line}: {len(cells)} fields where the first line has {width}.")
    return rows


def _has_header(rows: list[tuple[int, list[str]]]) -> bool:
    """The first row names the columns if none of it is a number, or if some column has a
    word on top of numbers (like 'height' above 1.72)."""
    first = rows[0][1]
    if all(_number(c) is None for c in first):
        return True
    if len(rows) < 2:
        return False
    second = rows[1][1]
    return any(_number(a) is None and not _is_missing(a) and _number(b) is not None for a, b in zip(first, second))


def _label_index(label_column, names: list[str], has_header: bool, name: str) -> int:
    shown = ", ".join(names)
    if isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool):
        i = int(label_column)
        if -len(names) <= i < len(names):
            return i % len(names)
        raise SOMDataError(f"Unknown label column {i}: {name} has columns 0 to {len(names) - 1} ({shown}).")
    if isinstance(label_column, str):
        if label_column in names:
            return names.index(label_column)
        lowered = [n.lower() for n in names]
        if label_column.strip().lower() in lowered:
            return lowered.index(label_column.strip().lower())
        hint = "" if has_header else " (the file has no header line, so give the column's number)"
        raise SOMDataError(f"Unknown label column {label_column!r} in {name}{hint}; the columns are: {shown}.")
    raise SOMDataError(f"The label column must be a column name or number, not {label_column!r}.")


def csv_columns(path) -> list[str]:
    """The column names :func:`load_csv` would see (header names, or "column N"); [] if unreadable."""
    try:
        rows = _split_rows(_read_text(Path(path)), Path(path).name)
    except (SOMDataError, OSError):
        return []
    first = rows[0][1] if _has_header(rows) else [""] * len(rows[0][1])
    return [c or f"column {j + 1}" for j, c in enumerate(first)]


def load_csv(path, label_column: str | int | None = None, standardize: bool = True) -> SOMData:
    """Read a CSV file: numeric columns become features, ``label_column`` the labels.

    The delimiter (, ; tab |) and a header line are detected. Without a header the
    columns are called "column 1", "column 2", ... The label column may be given by
    name or by 0-based number; its values (words or numbers) become 0, 1, 2, ... in
    sorted order, with the values themselves as ``label_names``. Columns that are not
    all numbers are left out (and listed in ``notes``). Missing values ("", NA, NaN,
    ?, ...) and infinities are an error naming the column and the line, as is a file
    that is missing, binary, empty or without numeric columns: all raise
    :class:`SOMDataError` with a message meant for the user.
    """
    path = Path(path)
    name = path.name
    rows = _split_rows(_read_text(path), name)
    header = _has_header(rows)
    width = len(rows[0][1])
    first = rows[0][1] if header else [""] * width
    names = [c or f"column {j + 1}" for j, c in enumerate(first)]
    data = rows[1:] if header else rows
    if not data:
        raise SOMDataError(f"{name} has a header line but no data.")
    label_j = None if label_column is None else _label_index(label_column, names, header, name)

    features, skipped = [], []
    for j in range(width):
        if j == label_j:
            continue
        cells = [cells[j] for _, cells in data]
        if all(_number(c) is not None or _is_missing(c) for c in cells):
            features.append(j)
        else:
            skipped.append(names[j])
    if not features:
        raise SOMDataError(f"{name} has no numeric columns to use as features"
                           + (f" (left out as text: {', '.join(skipped)})." if skipped else "."))

    x = np.empty((len(data), len(features)), dtype=np.float64)
    for r, (line, cells) in enumerate(data):
        for c, j in enumerate(features):
            value = _number(cells[j]) if not _is_missing(cells[j]) else None
            if value is None or not math.isfinite(value):
                what = "is missing" if value is None else f"is not a finite number ({cells[j]})"
                raise SOMDataError(f"{name}: the value in column '{names[j]}' at data row {r + 1} "
                                   f"(line {line}) {what}. Fill it in or remove the row.")
            x[r, c] = value

    labels, label_names = None, []
    if label_j is not None:
        raw = [cells[label_j] for _, cells in data]
        for r, v in enumerate(raw):
            if _is_missing(v):
                raise SOMDataError(f"{name}: the label in column '{names[label_j]}' at data row {r + 1} "
                                   f"(line {data[r][0]}) is missing.")
        numeric = all(_number(v) is not None for v in raw)
        values = sorted(set(raw), key=(lambda v: float(v)) if numeric else str)
        index = {v: i for i, v in enumerate(values)}
        labels = np.array([index[v] for v in raw], dtype=np.int64)
        label_names = values

    notes = f"Left out (not numeric): {', '.join(skipped)}." if skipped else ""
    return _finish(path.stem, x, labels, label_names, [names[j] for j in features], standardize, notes=notes)


# -----------------------------------------------------------------------------
# Single samples from a file (to find their best matching unit on a trained map)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_to_sample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A picture of a digit (grey levels, any size, dark or light ink) as a digits sample.

    Scikit-learn's digits are light ink (16) on black (0), each cut from a 32 x 32 bitmap
    whose digit fills the height (and keeps its aspect ratio, centred across), counted in
    4 x 4 blocks; here scaled to [0, 1]. So: make the ink the bright part (the border tells
    which side is the background), crop to the ink, centre it in a square as tall as the
    digit, average down to ``shape`` and stretch to [0, 1].
    """
    g = np.asarray(image, dtype=np.float64)
    if g.ndim != 2 or min(g.shape) < 2:
        raise SOMDataError("The picture is too small to read a sample from.")
    g = (g - g.min()) / (np.ptp(g) or 1.0)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if border.mean() > 0.5:  # dark ink on a light page
        g = 1.0 - g
    ink = g > 0.1
    if ink.any():
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        g = g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(g.shape)
    canvas = np.zeros((side, side))
    top, left = (side - g.shape[0]) // 2, (side - g.shape[1]) // 2
    canvas[top : top + g.shape[0], left : left + g.shape[1]] = g
    from PIL import Image

    small = np.asarray(Image.fromarray((canvas * 255).astype(np.uint8)).resize(
        (shape[1], shape[0]), Image.Resampling.BOX), dtype=np.float64)
    return (small / (small.max() or 1.0)).ravel()


def _loose_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank line, split at the delimiter the start suggests
    (, ; tab |) or else at white space; lines may differ in length."""
    try:
        delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = None
    rows = []
    for k, line in enumerate(text.splitlines()):
        if line.strip():
            cells = next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split()
            rows.append((k + 1, [c.strip() for c in cells]))
    return rows


def load_samples(path, n_features: int, data: SOMData | None = None) -> tuple[np.ndarray, list[str]]:
    """Samples from a file, in the units of ``data`` (its standardisation applied), and a name each.

    A picture (PNG, JPEG, ...) is read as one image sample when ``data`` has images (the
    digits). Anything else is read as text: every line with exactly ``n_features`` numbers
    (in the file's original units) is a sample; other lines (a header, a label column of
    words) are skipped. Raises :class:`SOMDataError` with a message for the user.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        shape = getattr(data, "image_shape", None)
        if shape is None or int(np.prod(shape)) != n_features:
            raise SOMDataError(f"{path.name} is a picture, but this map was not trained on images; "
                               f"load a text file with {n_features} numbers per line.")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im = im.convert("RGBA")  # transparent parts become white paper, not black
                page = Image.new("RGBA", im.size, (255, 255, 255, 255))
                grey = np.asarray(Image.alpha_composite(page, im).convert("L"))
        except (UnidentifiedImageError, OSError) as e:
            raise SOMDataError(f"{path.name} is not a readable picture.") from e
        x = image_to_sample(grey, shape)[None, :]
        names = [path.name]
    else:
        found, names = [], []
        rows = _loose_rows(_read_text(path))
        wanted = list(getattr(data, "feature_names", None) or [])
        header = rows[0][1] if rows else []
        if len(wanted) == n_features and all(w in header for w in wanted):  # pick the columns by name
            columns = [header.index(w) for w in wanted]
            for line, cells in rows[1:]:
                values = [_number(cells[j]) if j < len(cells) else None for j in columns]
                if all(v is not None and math.isfinite(v) for v in values):
                    found.append(values)
                    names.append(f"{path.name}, line {line}")
        else:
            for line, cells in rows:
                values = [v for v in map(_number, cells) if v is not None]
                if len(values) == n_features and all(math.isfinite(v) for v in values):
                    found.append(values)
                    names.append(f"{path.name}, line {line}")
        if not found:
            raise SOMDataError(f"{path.name} has no line with exactly {n_features} numbers, "
                               f"which is what this map's samples have.")
        x = np.array(found, dtype=np.float64)
        if data is not None and data.mean is not None:
            x = (x - data.mean) / data.scale
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise SOMDataError(f"{path.name} has numbers too large for a sample (beyond ±3.4e38).")
    return x, names


# -----------------------------------------------------------------------------
# What a saved map keeps of its data


def describe(data: SOMData) -> dict:
    """A data set without its samples, as JSON-ready values: its name, feature and label
    names, image shape and standardisation: enough to draw a map trained on it and to
    bring new samples into its units."""
    as_list = lambda a: None if a is None else [float(v) for v in a]  # noqa: E731
    return {"data": data.name, "feature_names": list(data.feature_names), "label_names": list(data.label_names),
            "image_shape": None if data.image_shape is None else list(data.image_shape),
            "mean": as_list(data.mean), "scale": as_list(data.scale)}


def from_description(meta: dict, n_features: int) -> SOMData:
    """The inverse of :func:`describe`: a :class:`SOMData` with no samples (x is empty)."""
    as_array = lambda key: None if meta.get(key) is None else np.asarray(meta[key], np.float64)  # noqa: E731
    shape = meta.get("image_shape")
    return SOMData(name=str(meta.get("data") or ""), x=np.zeros((0, n_features), np.float32),
                   label_names=list(meta.get("label_names") or []),
                   feature_names=list(meta.get("feature_names") or []),
                   image_shape=tuple(shape) if shape else None, mean=as_array("mean"), scale=as_array("scale"))
