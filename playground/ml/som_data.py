"""Data sets for the SOM viewer, all offline, all returned as :class:`SOMData`.

Built in:

* ``rgb``: random colours (r, g, b in [0, 1]) from a seed, labelled with the nearest of
  a few named colours. The classic first SOM: similar colours end up side by side.
* ``iris``: scikit-learn's bundled iris (150 x 4, 3 species).
* ``wine``: scikit-learn's bundled wine (178 x 13, 3 cultivars).
* ``digits``: scikit-learn's bundled 8 x 8 digits (1797 x 64), pixels scaled to [0, 1].
* ``mnist1d``: MNIST-1D's 4000 training signals of length 40, built locally by the
  ``mnist1d`` package's ``make_dataset`` (never its downloading ``get_dataset``).

And any CSV file via :func:`read_csv` (a generator that yields progress and can be
cancelled, for jobs) or :func:`load_csv` (the same, blocking). Files are checked against
limits (MAX_FEATURES columns, MEMORY_BUDGET_BYTES, MAX_SAMPLE_PIXELS) before memory is
spent on them, so a huge file is a message rather than a frozen or exhausted machine.

Standardisation (z-score: every feature minus its mean, over its standard deviation)
matters when features have different units or ranges, because the SOM measures plain
Euclidean distance: without it, wine's proline (hundreds) would drown its hue (about 1).
So iris and wine are standardised by default, and CSV files are too. Colours, digit
pixels and MNIST-1D signals share one scale already and are left as they are, so their
prototypes can be shown as colours, images and curves. ``mean`` and ``scale`` record
what was done, so values can be shown in the original units: ``x * scale + mean``.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import time
from array import array
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..progress import Progress

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
# Limits: checked before memory is spent, so that a huge file is a message, not a frozen app

MAX_FEATURES = 2048  # columns a SOM can use as features (a label column comes on top)
MEMORY_BUDGET_BYTES = 2 << 30  # the most a data set may take while it is read and standardised
BYTES_PER_CELL = 24  # peak bytes per value while reading: float64 cells, the float64 copy, the result
MAX_LINE_CHARS = 1 << 20  # a longer line is not a CSV row (2048 numbers take about 50 kB)
HEAD_BYTES = 1 << 20  # what csv_columns reads, and what the delimiter and size estimates look at
MAX_SAMPLE_PIXELS = 40_000_000  # pictures loaded as a sample (a 48 MP phone photo is refused)
SAMPLE_PICTURE_SIDE = 1024  # larger pictures are shrunk to this before they are read as a sample
SNAPSHOT_BUDGET_BYTES = 1 << 30  # the most a run's kept snapshots may take
YIELD_EVERY_S = 0.05  # progress (a chance to cancel) at least this often while reading


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MB"


def _too_big(name: str, rows: int, width: int, at_least: bool = False) -> SOMDataError:
    need = rows * width * BYTES_PER_CELL
    about = "at least" if at_least else "about"
    return SOMDataError(f"{name} is too big to load: {about} {rows:,} rows x {width} columns would need "
                        f"{about} {_gb(need)} of memory, and the limit is {_gb(MEMORY_BUDGET_BYTES)}. "
                        f"Use a file with fewer rows or columns.")


def _too_wide(name: str, width: int) -> SOMDataError:
    return SOMDataError(f"{name} has {width} columns; a SOM can use at most {MAX_FEATURES} features "
                        f"(plus one label column). Remove columns you do not need.")


def snapshot_bytes(rows: int, cols: int, dim: int, snapshots: int, samples: int = 0) -> int:
    """Memory that a run's snapshots take: ``snapshots`` (the config's count) plus the final one,
    each a float32 (rows, cols, dim) copy of the weights and, when QE and TE were measured on
    all ``samples``, their BMUs as int64 (see :func:`playground.ml.som.train`)."""
    kept = max(0, int(snapshots)) + 1
    return kept * (int(rows) * int(cols) * int(dim) * 4 + int(samples) * 8)


def check_snapshot_budget(rows: int, cols: int, dim: int, snapshots: int, samples: int = 0,
                          budget: int | None = None) -> None:
    """Raise :class:`SOMDataError` when a map's snapshots would take more than ``budget`` bytes
    (default :data:`SNAPSHOT_BUDGET_BYTES`), saying how many snapshots would fit, so that the
    panel can refuse before training."""
    budget = SNAPSHOT_BUDGET_BYTES if budget is None else budget
    need = snapshot_bytes(rows, cols, dim, snapshots, samples)
    if need <= budget:
        return
    one = snapshot_bytes(rows, cols, dim, 0, samples)
    fit = budget // one - 1
    advice = (f"Keep at most {fit} snapshots, or use a smaller map." if fit >= 0
              else "Use a smaller map or fewer features.")
    raise SOMDataError(f"A {rows}x{cols} map of {dim} features with {snapshots} snapshots would keep "
                       f"{_gb(need)} of snapshots; the limit is {_gb(budget)}. {advice}")


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


def _file_size(path: Path) -> int:
    """The size of a file the user named, or a message saying why it cannot be read."""
    if not path.exists():
        raise SOMDataError(f"File not found: {path}")
    if path.is_dir():
        raise SOMDataError(f"{path} is a folder, not a CSV file.")
    try:
        return path.stat().st_size
    except OSError as e:
        raise SOMDataError(f"Could not read {path}: {e.strerror or e}") from e


def _head(path: Path) -> tuple[bytes, bool]:
    """The first HEAD_BYTES of a file and whether that is all of it."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES + 1)
    except OSError as e:
        raise SOMDataError(f"Could not read {path}: {e.strerror or e}") from e
    return head[:HEAD_BYTES], len(head) <= HEAD_BYTES


def _text_head(path: Path, what: str = "CSV text file") -> tuple[str, str, bool]:
    """(the head decoded, the encoding to read the file with, whether the head is the whole file)."""
    _file_size(path)
    head, whole = _head(path)
    if b"\x00" in head[:65536]:
        raise SOMDataError(f"{path.name} does not look like a {what} (it contains binary data).")
    try:  # a character cut at the end of the head is no reason to doubt UTF-8
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole)
        encoding = "utf-8-sig"
    except UnicodeDecodeError:
        text, encoding = head.decode("latin-1"), "latin-1"
    if whole and not text.strip():
        raise SOMDataError(f"{path.name} is empty.")
    return text, encoding, whole


def _sniff(text: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        return csv.excel  # one column, or nothing to go on: plain commas


class _Lines:
    """A text file's lines in bounded pieces (a line over MAX_LINE_CHARS is refused before it
    fills memory), with how far into the file they have come. Closes with its ``with``."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.name = path.name
        self._raw = open(path, "rb")
        self._size = max(1, os.fstat(self._raw.fileno()).st_size)
        self._text = io.TextIOWrapper(self._raw, encoding=encoding, newline="")
        self.count = 0

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc) -> None:
        self._text.close()

    def __iter__(self):
        while True:
            line = self._text.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            self.count += 1
            if len(line) > MAX_LINE_CHARS:
                raise SOMDataError(f"{self.name}, line {self.count} is longer than {MAX_LINE_CHARS // 2**20} MB: "
                                   f"this is not a table of numbers that a SOM can use.")
            yield line

    def fraction(self) -> float:
        return min(1.0, self._raw.tell() / self._size)


def _records(lines, dialect, name: str):
    """(line number, stripped cells) per non-blank CSV record of an iterable of lines."""
    reader = csv.reader(lines, dialect)
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, [c.strip() for c in cells]
    except csv.Error as e:
        raise SOMDataError(f"{name} is not a readable CSV file (line {reader.line_num}: {e}).") from e


def _head_records(text: str, whole: bool, dialect, name: str) -> list[tuple[int, list[str]]]:
    """The complete records of a file's head (the last one may be cut short unless it is all)."""
    lines = io.StringIO(text, newline="")
    records = []
    try:
        for record in _records(lines, dialect, name):
            records.append(record)
    except SOMDataError:
        if whole:
            raise
        whole = False  # an error in a torn record at the end of the head: judge by what came before
    if not whole and records:
        records.pop()
    return records


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


def _column_names(rows: list[tuple[int, list[str]]]) -> tuple[bool, list[str]]:
    header = _has_header(rows)
    first = rows[0][1] if header else [""] * len(rows[0][1])
    return header, [c or f"column {j + 1}" for j, c in enumerate(first)]


def csv_columns(path) -> list[str]:
    """The column names :func:`load_csv` would see (header names, or "column N"); [] if unreadable.

    Quick enough for the GUI thread whatever the file's size: only its first HEAD_BYTES are
    read, and at most MAX_FEATURES + 1 names are returned (a wider file is refused on loading).
    """
    try:
        path = Path(path)
        text, _, whole = _text_head(path)
        rows = _head_records(text, whole, _sniff(text), path.name)[:2]
    except (SOMDataError, OSError):
        return []
    if not rows:
        return []
    return _column_names(rows)[1][:MAX_FEATURES + 1]


def read_csv(path, label_column: str | int | None = None,
             standardize: bool = True) -> Generator[Progress, None, SOMData]:
    """Read a CSV file as :func:`load_csv` does, as a generator: it yields :class:`Progress`
    (the fraction of the file's bytes read) at least every ~0.1 s, so that a job can show it
    and cancel by closing the generator, and returns the :class:`SOMData`.

    Before any row is kept, the first line must have at most MAX_FEATURES (+1 for a label)
    columns, and the rows the file's size suggests must fit MEMORY_BUDGET_BYTES; the budget
    is checked again as rows come, in case the first lines were not typical.
    """
    path = Path(path)
    name = path.name
    size = _file_size(path)
    text, encoding, whole = _text_head(path)
    yield Progress(0.0, f"Reading {name}")
    dialect = _sniff(text)
    head = _head_records(text, whole, dialect, name)
    if not head:
        if whole:
            raise SOMDataError(f"{name} is empty.")
        raise SOMDataError(f"{name} has no complete line in its first {HEAD_BYTES // 2**20} MB: "
                           f"this is not a table of numbers that a SOM can use.")
    width = len(head[0][1])
    if width > MAX_FEATURES + 1:
        raise _too_wide(name, width)
    if not whole:  # estimate the rows from the bytes a record takes in the head
        per_record = len(text.encode(encoding, errors="replace")) / max(1, len(head))
        rows_guess = int(size / per_record)
        if rows_guess * width * BYTES_PER_CELL > MEMORY_BUDGET_BYTES:
            raise _too_big(name, rows_guess, width)
    header, names = _column_names(head[:2])
    label_j = None if label_column is None else _label_index(label_column, names, header, name)
    encodings = [encoding] if encoding == "latin-1" else [encoding, "latin-1"]
    for k, enc in enumerate(encodings):
        try:
            return (yield from _parse_csv(path, enc, dialect, header, names, label_j, standardize))
        except UnicodeDecodeError:  # not UTF-8 after all, past the head: read it again as Latin-1
            if k + 1 == len(encodings):
                raise SOMDataError(f"{name} is not a readable text file.") from None
            yield Progress(0.0, f"Reading {name} again (it is not UTF-8)")
    raise AssertionError("unreachable")


def _parse_csv(path: Path, encoding: str, dialect, header: bool, names: list[str], label_j: int | None,
               standardize: bool) -> Generator[Progress, None, SOMData]:
    """The one pass over the rows: numbers go straight into a float64 buffer (text cells and
    the label column as NaN), so memory is 8 bytes a cell, not a Python string each."""
    name, width = path.name, len(names)
    cells_buffer = array("d")
    is_text = [False] * width  # a column with a cell that is neither a number nor missing
    first_bad: list[tuple[int, int, str] | None] = [None] * width  # (data row, line, what), first one
    raw_labels: list[str] = []
    missing_label: tuple[int, int] | None = None
    nan = float("nan")
    rows, seen_header = 0, not header
    last = time.perf_counter()
    with _Lines(path, encoding) as lines:
        for line, cells in _records(lines, dialect, name):
            if len(cells) != width:
                raise SOMDataError(f"{name}, line {line}: {len(cells)} fields where the first line has {width}.")
            if not seen_header:
                seen_header = True
                continue
            for j, cell in enumerate(cells):
                if j == label_j:
                    if missing_label is None and _is_missing(cell):
                        missing_label = (rows, line)
                    raw_labels.append(cell)
                    cells_buffer.append(nan)
                    continue
                if is_text[j]:
                    cells_buffer.append(nan)
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    value = nan
                    if not _is_missing(cell):
                        is_text[j] = True
                    elif first_bad[j] is None:
                        first_bad[j] = (rows, line, "is missing")
                else:
                    if not math.isfinite(value) and first_bad[j] is None:
                        what = "is missing" if _is_missing(cell) else f"is not a finite number ({cell})"
                        first_bad[j] = (rows, line, what)
                cells_buffer.append(value)
            rows += 1
            now = time.perf_counter()
            if now - last > YIELD_EVERY_S:
                if rows * width * BYTES_PER_CELL > MEMORY_BUDGET_BYTES:
                    raise _too_big(name, rows, width, at_least=True)
                yield Progress(lines.fraction(), f"Reading {name}: {rows:,} rows")
                last = now
    if rows * width * BYTES_PER_CELL > MEMORY_BUDGET_BYTES:
        raise _too_big(name, rows, width, at_least=True)
    if rows == 0:
        raise SOMDataError(f"{name} has a header line but no data.")

    features = [j for j in range(width) if j != label_j and not is_text[j]]
    skipped = [names[j] for j in range(width) if j != label_j and is_text[j]]
    if not features:
        raise SOMDataError(f"{name} has no numeric columns to use as features"
                           + (f" (left out as text: {', '.join(skipped)})." if skipped else "."))
    if len(features) > MAX_FEATURES:
        raise _too_wide(name, len(features))
    bad = [(first_bad[j][0], c, j) for c, j in enumerate(features) if first_bad[j] is not None]
    if bad:
        r, _, j = min(bad)  # the first in reading order, as a person would look for it
        _, line, what = first_bad[j]
        raise SOMDataError(f"{name}: the value in column '{names[j]}' at data row {r + 1} "
                           f"(line {line}) {what}. Fill it in or remove the row.")

    labels, label_names = None, []
    if label_j is not None:
        if missing_label is not None:
            r, line = missing_label
            raise SOMDataError(f"{name}: the label in column '{names[label_j]}' at data row {r + 1} "
                               f"(line {line}) is missing.")
        numeric = all(_number(v) is not None for v in raw_labels)
        values = sorted(set(raw_labels), key=(lambda v: float(v)) if numeric else str)
        index = {v: i for i, v in enumerate(values)}
        labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
        label_names = values

    x = np.frombuffer(cells_buffer, dtype=np.float64).reshape(rows, width)[:, features]
    del cells_buffer
    notes = f"Left out (not numeric): {', '.join(skipped)}." if skipped else ""
    yield Progress(1.0, f"Read {name}: {rows:,} rows")
    return _finish(path.stem, x, labels, label_names, [names[j] for j in features], standardize, notes=notes)


def _drain(gen: Generator):
    """Run a generator to its end and return its value (the blocking form of a reader)."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def load_csv(path, label_column: str | int | None = None, standardize: bool = True) -> SOMData:
    """Read a CSV file: numeric columns become features, ``label_column`` the labels.

    The delimiter (, ; tab |) and a header line are detected. Without a header the
    columns are called "column 1", "column 2", ... The label column may be given by
    name or by 0-based number; its values (words or numbers) become 0, 1, 2, ... in
    sorted order, with the values themselves as ``label_names``. Columns that are not
    all numbers are left out (and listed in ``notes``). Missing values ("", NA, NaN,
    ?, ...) and infinities are an error naming the column and the line, as is a file
    that is missing, binary, empty, without numeric columns or beyond the size limits:
    all raise :class:`SOMDataError` with a message meant for the user. This blocks until
    the file is read; a job should use :func:`read_csv`, which yields progress.
    """
    return _drain(read_csv(path, label_column=label_column, standardize=standardize))


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


def _picture_grey(path: Path) -> np.ndarray:
    """A picture as grey levels (transparent parts as white paper), its size checked from the
    header before a pixel is decoded; a large one is shrunk while it is decoded."""
    from PIL import Image, UnidentifiedImageError

    _file_size(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_SAMPLE_PIXELS:
                raise SOMDataError(f"{path.name} is {w} x {h} pixels; a sample picture may have at most "
                                   f"{MAX_SAMPLE_PIXELS:,} pixels ({MAX_SAMPLE_PIXELS / 1e6:g} million).")
            if max(w, h) > SAMPLE_PICTURE_SIDE:  # a digit needs no more; decoding shrinks JPEGs cheaply
                im.draft("RGB", (SAMPLE_PICTURE_SIDE, SAMPLE_PICTURE_SIDE))
                im.thumbnail((SAMPLE_PICTURE_SIDE, SAMPLE_PICTURE_SIDE))
            im = im.convert("RGBA")  # transparent parts become white paper, not black
            page = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(page, im).convert("L"))
    except Image.DecompressionBombError as e:  # PIL's own guard, at open: claims far too many pixels
        raise SOMDataError(f"{path.name} claims to be a picture of more than {MAX_SAMPLE_PIXELS:,} pixels "
                           f"({MAX_SAMPLE_PIXELS / 1e6:g} million), too many to load as a sample.") from e
    except (UnidentifiedImageError, OSError) as e:
        raise SOMDataError(f"{path.name} is not a readable picture.") from e


def _split_loose(line: str, delimiter: str | None) -> list[str]:
    cells = next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split()
    return [c.strip() for c in cells]


def read_samples(path, n_features: int, data: SOMData | None = None
                 ) -> Generator[Progress, None, tuple[np.ndarray, list[str]]]:
    """:func:`load_samples` as a generator that yields :class:`Progress` at least every ~0.1 s
    (so a job can show it and cancel), returning ``(samples, names)``.

    Limits, checked before memory is spent: at most MAX_FEATURES numbers per sample, a
    picture of at most MAX_SAMPLE_PIXELS (read from its header), a text file whose size
    suggests it fits MEMORY_BUDGET_BYTES (and the budget is checked as lines come).
    """
    path = Path(path)
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise SOMDataError(f"A sample must have a whole number of features, not {n_features!r}.")
    if n_features > MAX_FEATURES:
        raise SOMDataError(f"This map has {n_features} features; samples can be loaded for maps of at most "
                           f"{MAX_FEATURES} features.")
    yield Progress(0.0, f"Reading {path.name}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        shape = getattr(data, "image_shape", None)
        if shape is None or int(np.prod(shape)) != n_features:
            raise SOMDataError(f"{path.name} is a picture, but this map was not trained on images; "
                               f"load a text file with {n_features} numbers per line.")
        x = image_to_sample(_picture_grey(path), shape)[None, :]
        names = [path.name]
    else:
        x, names = yield from _read_text_samples(path, n_features, data)
        if data is not None and data.mean is not None:
            x = (x - data.mean) / data.scale
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise SOMDataError(f"{path.name} has numbers too large for a sample (beyond ±3.4e38).")
    return x, names


def _read_text_samples(path: Path, n_features: int, data: SOMData | None
                       ) -> Generator[Progress, None, tuple[np.ndarray, list[str]]]:
    """Every line with exactly ``n_features`` numbers, split at the delimiter the start suggests
    (, ; tab |) or else at white space; when the first line names all of ``data``'s features,
    the columns are taken by name."""
    name = path.name
    size = _file_size(path)
    text, encoding, whole = _text_head(path)
    if not whole:
        per_line = len(text.encode(encoding, errors="replace")) / max(1, text.count("\n"))
        lines_guess = int(size / per_line)
        if lines_guess * n_features * BYTES_PER_CELL > MEMORY_BUDGET_BYTES:
            raise _too_big(name, lines_guess, n_features)
    try:
        delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = None
    wanted = list(getattr(data, "feature_names", None) or [])
    values = array("d")
    names: list[str] = []
    columns: list[int] | None = None
    first = True
    last = time.perf_counter()
    with _Lines(path, encoding) as lines:
        for line in lines:
            if not line.strip():
                continue
            cells = _split_loose(line, delimiter)
            if first:
                first = False
                if len(wanted) == n_features and all(w in cells for w in wanted):  # pick the columns by name
                    columns = [cells.index(w) for w in wanted]
                    continue
            if columns is not None:
                row = [_number(cells[j]) if j < len(cells) else None for j in columns]
            else:
                row = [v for v in map(_number, cells) if v is not None]
            if len(row) == n_features and all(v is not None and math.isfinite(v) for v in row):
                values.extend(row)
                names.append(f"{name}, line {lines.count}")
            now = time.perf_counter()
            if now - last > YIELD_EVERY_S:
                if len(names) * n_features * BYTES_PER_CELL > MEMORY_BUDGET_BYTES:
                    raise _too_big(name, len(names), n_features, at_least=True)
                yield Progress(lines.fraction(), f"Reading {name}: {len(names):,} samples")
                last = now
    if not names:
        raise SOMDataError(f"{name} has no line with exactly {n_features} numbers, "
                           f"which is what this map's samples have.")
    return np.frombuffer(values, dtype=np.float64).reshape(len(names), n_features).copy(), names


def load_samples(path, n_features: int, data: SOMData | None = None) -> tuple[np.ndarray, list[str]]:
    """Samples from a file, in the units of ``data`` (its standardisation applied), and a name each.

    A picture (PNG, JPEG, ...) is read as one image sample when ``data`` has images (the
    digits). Anything else is read as text: every line with exactly ``n_features`` numbers
    (in the file's original units) is a sample; other lines (a header, a label column of
    words) are skipped. Raises :class:`SOMDataError` with a message for the user, also for
    a file beyond the limits of :func:`read_samples` (the form to use from a job).
    """
    return _drain(read_samples(path, n_features, data))


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
