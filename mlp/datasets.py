"""Datasets as host NumPy arrays: bundled, read from standard files, or generated.

    >>> from mlp import datasets
    >>> data = datasets.load("digits")      # 1,797 8x8 digits, shipped with mlp
    >>> data.x_train.shape, data.n_classes
    ((1437, 64), 10)

Names: ``digits`` (default), ``mnist-sample`` (both shipped in ``mlp/data``),
``mnist`` and ``fashion-mnist`` (the standard IDX files, read from ``data_dir``),
``spirals`` and ``xor`` (generated), ``csv:PATH`` and ``npz:PATH`` (your own data).
Inputs come as float32 in [0, 1], one flattened row per sample; labels as int64
class ids. The train/test split is a fixed, seeded permutation. Nothing is ever
downloaded: see docs/data.md for file layouts and attribution.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .errors import DataError

NAMES = ("digits", "mnist-sample", "mnist", "fashion-mnist", "spirals", "xor", "csv:PATH", "npz:PATH")
DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Dataset:
    """A train/test split. ``x_*`` are float32 ``[N x D]`` in [0, 1], ``y_*`` int64 ids.

    ``low`` and ``high`` are the raw values that became 0 and 1 (scalars or one
    per column): :meth:`scale` applies the same map to new raw rows.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple = ()
    image_shape: tuple | None = None
    low: object = 0.0
    high: object = 1.0
    source: str = field(default="", repr=False)

    @property
    def n_classes(self):
        return len(self.classes)

    @property
    def n_features(self):
        return self.x_train.shape[1]

    def scale(self, raw):
        """Raw rows (pixels 0..255, CSV columns as in the file ...) -> float32 in [0, 1]."""
        return scale(raw, self.low, self.high)

    def __repr__(self):
        image = f", images {self.image_shape[0]}x{self.image_shape[1]}" if self.image_shape else ""
        return (f"Dataset({self.name}: {len(self.y_train)} train + {len(self.y_test)} test, "
                f"{self.n_features} features, {self.n_classes} classes{image})")


def scale(raw, low, high):
    """``raw`` mapped from ``[low, high]`` (per feature) to ``[0, 1]`` as float32, clipped;
    a feature with ``high <= low`` is divided by 1."""
    raw = np.asarray(raw, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    span = np.where(high > low, high - low, 1.0)
    return np.clip((raw - low) / span, 0.0, 1.0).astype(np.float32)


def default_data_dir():
    """``MLP_DATA_DIR`` if set, else ``./data``."""
    return os.environ.get("MLP_DATA_DIR") or "data"


def split(n, test_size, seed):
    """Indices ``(train, test)``: a seeded permutation, the last ``test_size`` share as test."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_size)))
    if n_test >= n:
        raise DataError(f"{n} samples are too few to split off a test set of {test_size:.0%}")
    return np.sort(order[:-n_test]), np.sort(order[-n_test:])


def _from_arrays(name, x, y, classes, image_shape, low, high, seed, test_size, source=""):
    x = np.asarray(x).reshape(len(x), -1)
    train, test = split(len(y), test_size, seed)
    return Dataset(name, scale(x[train], low, high), y[train].astype(np.int64),
                   scale(x[test], low, high), y[test].astype(np.int64),
                   tuple(classes), image_shape, low, high, source)


def _bundled(name, file, seed, test_size):
    with resources.files("mlp").joinpath("data", file).open("rb") as f, np.load(f, allow_pickle=False) as z:
        x, y, top = z["x"], z["y"], float(z["max_value"])
    return _from_arrays(name, x, y, DIGITS, tuple(x.shape[1:]), 0.0, top, seed, test_size,
                        source=f"mlp/data/{file}")


# -- IDX files (MNIST, Fashion-MNIST) -----------------------------------------
def read_idx(path):
    """An IDX file (``.gz`` or not) as a NumPy array (uint8 images or labels)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header names {ndim} dimensions but ends after "
                        f"{len(data)} bytes")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise DataError(f"{path} is truncated: its header says {dims}, it holds {body.size} values")
    try:
        return body.reshape(dims)
    except ValueError as err:  # e.g. [0 x 2**31 x 2**31]: no values, but too big a shape
        raise DataError(f"{path}: its header's shape {dims} is impossible ({err})") from err


def _idx(name, data_dir, classes):
    data_dir = data_dir or default_data_dir()
    folders = [os.path.join(data_dir, name), data_dir]
    found, missing = {}, []
    for part, files in IDX_FILES.items():
        for base in files:
            hits = [os.path.join(d, base + ext) for d in folders for ext in (".gz", "")]
            hit = next((p for p in hits if os.path.isfile(p)), None)
            if hit is None:
                missing.append(base + ".gz")
            found[base] = hit
    if missing:
        where = os.path.join(data_dir, name)
        raise DataError(
            f"{name}: missing {', '.join(missing)} (looked in {' and '.join(f + os.sep for f in folders)}). "
            f"Put the standard IDX files, gzipped or not, in {where}{os.sep}, or point --data-dir "
            f"(or MLP_DATA_DIR) at the folder that holds {name}{os.sep}; mlp never downloads data."
        )
    arrays = {}
    for part, (images, labels) in IDX_FILES.items():
        x, y = read_idx(found[images]), read_idx(found[labels])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name} {part}: images {x.shape} and labels {y.shape} do not match")
        arrays[part] = (x, y)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return Dataset(name, scale(xtr.reshape(len(xtr), -1), 0.0, 255.0), ytr.astype(np.int64),
                   scale(xte.reshape(len(xte), -1), 0.0, 255.0), yte.astype(np.int64),
                   classes, tuple(xtr.shape[1:]), 0.0, 255.0, source=os.path.dirname(found[images]))


# -- generated ------------------------------------------------------------------
def spirals(n_per_class=300, n_classes=3, noise=0.2, seed=0):
    """Interleaved 2-D spirals (one arm per class), raw coordinates in about [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_per_class)
    xs, ys = [], []
    for k in range(n_classes):
        theta = t * 4.0 + k * 2.0 * np.pi / n_classes + rng.standard_normal(n_per_class) * noise
        xs.append(np.stack([t * np.sin(theta), t * np.cos(theta)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs), np.concatenate(ys)


def xor(n=1000, seed=0):
    """Points in the unit square; class 1 where exactly one coordinate is above 0.5."""
    x = np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, 2))
    return x, ((x[:, 0] > 0.5) ^ (x[:, 1] > 0.5)).astype(np.int64)


# -- user files -----------------------------------------------------------------
MAX_CLASS_ID = 65536  # larger integer labels are names (ids 0..K-1 in sorted order), not ids


def _labels(values, path):
    """Integer labels kept as they are (0..K-1), anything else mapped to sorted names."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"{path}: labels must be one per sample [N], got {list(values.shape)}")
    try:
        as_float = values.astype(np.float64)
        if (np.isfinite(as_float).all() and np.array_equal(as_float, np.round(as_float))
                and as_float.min() >= 0 and as_float.max() < MAX_CLASS_ID):
            ids = as_float.astype(np.int64)
            return ids, tuple(str(i) for i in range(int(ids.max()) + 1))
    except (ValueError, TypeError):
        pass
    names, ids = np.unique(values.astype(str), return_inverse=True)
    return ids.astype(np.int64), tuple(names.tolist())


def _min_max(x):
    return x.min(axis=0), x.max(axis=0)


def read_csv(path):
    """Rows of numbers; the last column is the label. A first row that is not all
    numbers is a header. Returns ``(x [N x D] float64, labels)``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} is not a UTF-8 CSV file: {err}") from err
    if rows and not is_numeric(rows[0][:-1]):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has no data rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or min(widths) < 2:
        raise DataError(f"{path}: every row needs the same number of columns (features, then the "
                        f"label), found rows of {sorted(widths)} columns")
    try:
        x = np.array([[float(c) for c in r[:-1]] for r in rows])
    except ValueError as err:
        raise DataError(f"{path}: feature columns must be numbers: {err}") from err
    return x, [r[-1].strip() for r in rows]


def is_numeric(cells):
    """Whether every cell (a string) reads as a number: a data row, not a header."""
    try:
        [float(c) for c in cells]
        return True
    except ValueError:
        return False


def _features(x, path, name="x"):
    """``x`` as float64 ``[N x ...]`` with finite values, or a DataError."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: {name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim < 2 or 0 in x.shape:
        raise DataError(f"{path}: {name} must be [N x D] with N, D > 0, got {list(x.shape)}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: {name} has NaN or infinite values; the first is in row {int(np.flatnonzero(bad)[0])}")
    if not np.isfinite(x.max(axis=0) - x.min(axis=0)).all():
        raise DataError(f"{path}: {name} has values too far apart to scale (beyond float64 range)")
    return x


def _user(name, x, labels, path, seed, test_size, x_test=None, labels_test=None):
    x = _features(x, path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(x) != len(labels):
        raise DataError(f"{path}: expected x [N x D] and N labels, got x {list(x.shape)} and labels "
                        f"{list(labels.shape)}")
    image_shape = tuple(x.shape[1:]) if x.ndim == 3 else None
    if x_test is not None:
        x_test, labels_test = _features(x_test, path, "x_test"), np.asarray(labels_test)
        if x_test.shape[1:] != x.shape[1:] or labels_test.ndim != 1 or len(x_test) != len(labels_test):
            raise DataError(f"{path}: x_test {list(x_test.shape)} and y_test {list(labels_test.shape)} must "
                            f"match x {list(x.shape)}: [M x D] and M labels")
    x = x.reshape(len(x), -1)
    if x_test is None:
        y, classes = _labels(labels, path)
        train, test = split(len(y), test_size, seed)
        low, high = _min_max(x[train])
        return Dataset(name, scale(x[train], low, high), y[train], scale(x[test], low, high), y[test],
                       classes, image_shape, low, high, source=str(path))
    x_test = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    y, classes = _labels(np.concatenate([np.asarray(labels), np.asarray(labels_test)]), path)
    low, high = _min_max(x)
    return Dataset(name, scale(x, low, high), y[: len(x)], scale(x_test, low, high), y[len(x):],
                   classes, image_shape, low, high, source=str(path))


def _npz(path, seed, test_size):
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise DataError(f"{path} is not an .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"{path} must hold arrays 'x' [N x D] and 'y' [N] (optionally 'x_test' and "
                                f"'y_test'); it holds {', '.join(sorted(keys)) or 'nothing'}")
            x, y = z["x"], z["y"]
            test = (z["x_test"], z["y_test"]) if {"x_test", "y_test"} <= keys else (None, None)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path} is not a readable .npz file: {err}") from err
    return _user(f"npz:{path}", x, y, path, seed, test_size, *test)


def load(name="digits", *, data_dir=None, seed=0, test_size=0.2):
    """The dataset ``name`` split into train and test (``seed`` fixes the split).

    ``mnist`` and ``fashion-mnist`` keep their official 60,000/10,000 split;
    ``npz:PATH`` with ``x_test``/``y_test`` keeps its own.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    kind, _, path = name.partition(":")
    if kind in ("csv", "npz") and path:
        if not os.path.isfile(path):
            raise DataError(f"{name}: no file at {path}")
        if kind == "csv":
            x, labels = read_csv(path)
            return _user(name, x, labels, path, seed, test_size)
        return _npz(path, seed, test_size)
    if name == "digits":
        return _bundled(name, "digits.npz", seed, test_size)
    if name == "mnist-sample":
        return _bundled(name, "mnist_sample.npz", seed, test_size)
    if name == "mnist":
        return _idx(name, data_dir, DIGITS)
    if name == "fashion-mnist":
        return _idx(name, data_dir, FASHION)
    if name == "spirals":
        x, y = spirals(seed=seed)
        return _from_arrays(name, x, y, ("0", "1", "2"), None, -1.0, 1.0, seed, test_size)
    if name == "xor":
        x, y = xor(seed=seed)
        return _from_arrays(name, x, y, ("0", "1"), None, 0.0, 1.0, seed, test_size)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(NAMES)}")
