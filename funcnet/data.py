"""Datasets for the training examples: bundled, synthetic, and read from files.

Everything here is NumPy: features come back as ``float32`` arrays of shape
``(n, features)``, class labels as ``int32`` arrays of shape ``(n,)`` and
regression targets as ``float32`` arrays of shape ``(n, targets)``.

- :func:`load_digits`: the 8x8 handwritten digits bundled with scikit-learn.
- :func:`xor`, :func:`spiral`, :func:`sine`: small synthetic sets, deterministic
  given ``seed``.
- :func:`load_idx`, :func:`load_mnist_dir`, :func:`load_npz`, :func:`load_csv`:
  file loaders that check what they read and say what is wrong.
- :func:`split` and :func:`standardize`: a shuffled train/val/test split and
  per-feature normalisation with the training split's statistics.
- :func:`load`: all of the above in one call, by name or path, returning a
  :class:`Dataset`.

Every bad file or argument raises :class:`DataError`, a ``ValueError`` whose
one-line message starts with the file (or the function) and says what is wrong,
e.g. ``images.idx: truncated: header says 60000x28x28 ubyte = 47040000 bytes of
data, file has 1000 after the 16-byte header``.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DataError", "Split", "Dataset", "NAMES",
    "load_digits", "xor", "spiral", "sine",
    "load_idx", "load_mnist_dir", "load_npz", "load_csv",
    "split", "standardize", "load",
]

PathLike = str | os.PathLike


class DataError(ValueError):
    """A bad data file or argument; the message names the file or function and the problem."""


class Split(NamedTuple):
    """One split of a dataset.

    Attributes:
      x: ``float32`` features, shape ``(n, features)``.
      y: ``int32`` class labels of shape ``(n,)``, or ``float32`` regression
        targets of shape ``(n, targets)``.
    """

    x: np.ndarray
    y: np.ndarray


class Dataset(NamedTuple):
    """A dataset ready for training, as returned by :func:`load`.

    Attributes:
      train: the training split, standardized with its own statistics.
      val: the validation split, standardized with the training statistics.
      test: the test split, standardized with the training statistics.
      num_classes: ``max label + 1`` for classification; ``None`` for regression.
      name: the dataset's name, or the file or directory name it was read from.
      mean: per-feature mean of the raw training features, shape ``(features,)``.
      std: per-feature divisor used (the training standard deviation, with 1
        for constant features), shape ``(features,)``. New raw inputs are
        normalised as ``(x - mean) / std``.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int | None
    name: str
    mean: np.ndarray
    std: np.ndarray


def _fail(where: object, what: str) -> DataError:
    """A DataError whose message is ``"<where>: <what>"`` on one line."""
    return DataError(f"{where}: {what}".replace("\n", " "))


# ---------------------------------------------------------------- arguments


def _positive_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise _fail(f"funcnet.data.{fn}", f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def _noise(fn: str, value: object) -> float:
    try:
        noise = float(value)
    except (TypeError, ValueError):
        noise = float("nan")
    if not (math.isfinite(noise) and noise >= 0):
        raise _fail(f"funcnet.data.{fn}", f"`noise` must be a finite number >= 0, got {value!r}")
    return noise


# ---------------------------------------------------------------- bundled and synthetic


def load_digits() -> Split:
    """The 8x8 handwritten digits bundled with scikit-learn (nothing is downloaded).

    1,797 grey-scale images of the digits 0 to 9, flattened to 64 features and
    scaled from the original 0..16 intensities to [0, 1].

    Returns:
      ``Split(x, y)`` with ``x`` float32 of shape ``(1797, 64)`` and ``y``
      int32 of shape ``(1797,)`` holding the classes 0..9.

    Raises:
      DataError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise _fail(
            "funcnet.data.load_digits",
            "needs scikit-learn, which bundles the digits data: pip install scikit-learn",
        ) from None
    bunch = sklearn_digits()
    return Split(np.asarray(bunch.data, np.float32) / 16.0, np.asarray(bunch.target, np.int32))


def xor(n: int = 200, noise: float = 0.1, seed: int = 0) -> Split:
    """2-D points around the four corners (+-1, +-1), labelled by XOR of the signs.

    Example ``i`` sits near corner ``i % 4``, so the four corners (and the two
    classes) are as balanced as ``n`` allows. The label is XOR of the signs of
    the corner, not of the noisy point: with a large ``noise`` some points
    cross into a neighbouring quadrant and carry their corner's label.

    Args:
      n: number of points.
      noise: standard deviation of the Gaussian noise added to each coordinate.
      seed: seed of the NumPy generator; equal seeds give equal data.

    Returns:
      ``Split(x, y)``: x float32 ``(n, 2)``, y int32 ``(n,)`` in {0, 1}.
    """
    n = _positive_int("xor", "n", n)
    noise = _noise("xor", noise)
    rng = np.random.default_rng(seed)
    corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], np.float64)
    which = np.arange(n) % 4
    x = corners[which] + noise * rng.standard_normal((n, 2))
    y = (corners[which, 0] > 0) ^ (corners[which, 1] > 0)
    return Split(x.astype(np.float32), y.astype(np.int32))


def spiral(n_per_class: int = 100, arms: int = 2, noise: float = 0.2, seed: int = 0) -> Split:
    """Two or three interleaved spiral arms; the class is the arm index.

    Arm ``k`` runs from the centre out to radius 1 while its angle makes one
    full turn from ``2 pi k / arms``; Gaussian noise of standard deviation
    ``noise`` is added to the angle (as in the CS231n spiral). No line
    separates the arms, a small MLP does. Points come out ordered by class;
    :func:`split` shuffles them.

    Args:
      n_per_class: points on each arm.
      arms: number of arms (and classes): 2 or 3.
      noise: standard deviation of the angular noise, in radians.
      seed: seed of the NumPy generator; equal seeds give equal data.

    Returns:
      ``Split(x, y)``: x float32 ``(arms * n_per_class, 2)``, y int32 in 0..arms-1.
    """
    n = _positive_int("spiral", "n_per_class", n_per_class)
    if isinstance(arms, bool) or arms not in (2, 3):
        raise _fail("funcnet.data.spiral", f"`arms` must be 2 or 3, got {arms!r}")
    noise = _noise("spiral", noise)
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, n), arms)
    arm = np.repeat(np.arange(arms), n)
    angle = 2 * np.pi * (arm / arms + radius) + noise * rng.standard_normal(arms * n)
    x = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return Split(x.astype(np.float32), arm.astype(np.int32))


def sine(n: int = 200, noise: float = 0.05, seed: int = 0) -> Split:
    """Regression: ``y = sin(x) + noise`` with ``x`` uniform in [-pi, pi].

    Args:
      n: number of points.
      noise: standard deviation of the Gaussian noise added to ``sin(x)``.
      seed: seed of the NumPy generator; equal seeds give equal data.

    Returns:
      ``Split(x, y)``: x and y both float32 of shape ``(n, 1)``.
    """
    n = _positive_int("sine", "n", n)
    noise = _noise("sine", noise)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, (n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return Split(x.astype(np.float32), y.astype(np.float32))


# ---------------------------------------------------------------- files

#: IDX dtype code -> (name in messages, big-endian NumPy dtype).
_IDX_DTYPES = {
    0x08: ("ubyte", ">u1"),
    0x09: ("byte", ">i1"),
    0x0B: ("short", ">i2"),
    0x0C: ("int", ">i4"),
    0x0D: ("float", ">f4"),
    0x0E: ("double", ">f8"),
}
_IDX_CODES = ", ".join(f"0x{code:02X} {name}" for code, (name, _) in _IDX_DTYPES.items())


def _read_bytes(path: Path, size: int = -1) -> bytes:
    """The file's bytes (the first ``size`` only, if given), or a DataError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a file") from None
    except OSError as err:
        raise _fail(path, f"cannot read: {err.strerror or err}") from None


def load_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or gzip-compressed.

    An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the
    number of dimensions), one big-endian uint32 per dimension, then the
    values, big-endian, row-major. Gzip is recognised by its magic bytes
    (``1f 8b``), whatever the file is called.

    Args:
      path: the file.

    Returns:
      The array, with the file's shape and dtype (uint8, int8, int16, int32,
      float32 or float64) in native byte order.

    Raises:
      DataError: the file is missing, empty, not IDX (bad magic number or dtype
        code), has a truncated header, has fewer or more data bytes than its
        dimensions say, or is a corrupt gzip stream.
    """
    path = Path(path)
    raw = _read_bytes(path)
    compressed = raw[:2] == b"\x1f\x8b"
    if compressed:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(path, f"corrupt gzip stream: {err}") from None
    if not raw:
        after = " (after decompression)" if compressed else ""
        raise _fail(path, f"empty file{after}, expected an IDX header")
    if len(raw) < 4:
        raise _fail(path, f"truncated header: {len(raw)} bytes, an IDX file starts with a 4-byte magic number")
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0:
        hint = "; the name ends in .gz but the content is not gzip either" if path.suffix == ".gz" else ""
        raise _fail(
            path, f"not an IDX file: bad magic number 0x{magic.hex()}, the first two bytes must be zero{hint}"
        )
    if magic[2] not in _IDX_DTYPES:
        raise _fail(
            path,
            f"bad magic number 0x{magic.hex()}: unknown dtype code 0x{magic[2]:02X}, expected one of {_IDX_CODES}",
        )
    ndim = magic[3]
    if ndim == 0:
        raise _fail(path, f"bad magic number 0x{magic.hex()}: zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _fail(path, f"truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    name, dtype = _IDX_DTYPES[magic[2]]
    dtype = np.dtype(dtype)
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else "trailing bytes"
        each = f" ({dtype.itemsize} bytes each)" if dtype.itemsize > 1 else ""
        raise _fail(
            path,
            f"{problem}: header says {'x'.join(map(str, dims))} {name}{each} = {expected} bytes of data, "
            f"file has {found} after the {header}-byte header",
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str, kind: str) -> Path | None:
    """The first existing ``<stem>-<kind>`` file, also trying ``.`` for ``-`` and ``.gz``."""
    for name in (f"{stem}-{kind}", f"{stem}-{kind.replace('-', '.', 1)}"):
        for suffix in ("", ".gz"):
            candidate = directory / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


def _mnist_pair(directory: Path, stem: str, required: bool) -> Split | None:
    """The ``<stem>-images`` / ``<stem>-labels`` pair as a Split; None if both are absent and not required."""
    paths = {kind: _find(directory, stem, kind) for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    images_path, labels_path = paths.values()
    if images_path is None and labels_path is None and not required:
        return None
    if images_path is None or labels_path is None:
        found = images_path or labels_path
        missing = " and no ".join(f"{stem}-{kind}[.gz]" for kind, path in paths.items() if path is None)
        raise _fail(directory, f"has {found.name} but no {missing}" if found else f"has no {missing}")
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise _fail(
            images_path,
            f"expected ubyte images of shape (n, rows, cols), got {images.dtype} of shape {images.shape}",
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise _fail(labels_path, f"expected integer labels of shape (n,), got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise _fail(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.size and labels.min() < 0:
        raise _fail(labels_path, f"negative label {labels.min()}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return Split(x, labels.astype(np.int32))


def load_mnist_dir(directory: PathLike) -> tuple[Split, Split | None]:
    """Read MNIST-format IDX files from a directory.

    The training pair ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
    must be there; the test pair ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` is optional. Each file may be gzip-compressed
    with a ``.gz`` suffix, and the ``.idx3-ubyte`` spelling (a dot instead of
    the dash) is accepted too.

    Args:
      directory: the directory holding the files.

    Returns:
      ``(train, test)``, with ``test`` ``None`` when there is no t10k pair.
      Images are flattened to float32 ``(n, rows * cols)`` in [0, 1]
      (divided by 255); labels are int32 ``(n,)``.

    Raises:
      DataError: the directory or a file of a pair is missing, a file is not
        valid IDX (see :func:`load_idx`), images are not 3-D ubyte, or the
        image and label counts (or the train and test image sizes) differ.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise _fail(directory, "no such directory" if not directory.exists() else "is not a directory")
    train = _mnist_pair(directory, "train", required=True)
    test = _mnist_pair(directory, "t10k", required=False)
    if test is not None and test.x.shape[1] != train.x.shape[1]:
        raise _fail(directory, f"t10k images have {test.x.shape[1]} pixels but train images have {train.x.shape[1]}")
    return train, test


def _as_split(where: object, x: np.ndarray, y: np.ndarray, x_name: str = "x", y_name: str = "y") -> Split:
    """Check and convert raw arrays to a Split (see load_npz for the rules)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise _fail(
            where, f"`{x_name}` and `{y_name}` must have one row per example, got shapes {x.shape} and {y.shape}"
        )
    if len(x) != len(y):
        raise _fail(where, f"`{x_name}` has {len(x)} rows but `{y_name}` has {len(y)}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(x.dtype, np.complexfloating):
        raise _fail(where, f"`{x_name}` must be real numbers, got dtype {x.dtype}")
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(x).all():
        raise _fail(where, f"`{x_name}` contains NaN or infinity")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise _fail(where, f"integer `{y_name}` holds class labels and must have shape (n,), got {y.shape}")
        if y.size and y.min() < 0:
            raise _fail(where, f"class labels in `{y_name}` must be >= 0, found {y.min()}")
        return Split(x, y.astype(np.int32))
    if np.issubdtype(y.dtype, np.floating):
        y = y.reshape(len(y), -1).astype(np.float32)
        if not np.isfinite(y).all():
            raise _fail(where, f"`{y_name}` contains NaN or infinity")
        return Split(x, y)
    raise _fail(where, f"`{y_name}` must be integer class labels or float targets, got dtype {y.dtype}")


def load_npz(path: PathLike, x_key: str = "x", y_key: str = "y") -> Split:
    """Read features and labels from a NumPy ``.npz`` archive (never unpickling).

    Features with more than two dimensions (images) are flattened to
    ``(n, features)``. An integer (or bool) ``y`` holds class labels and comes
    back int32 ``(n,)``; a float ``y`` holds regression targets and comes back
    float32 ``(n, targets)``.

    Args:
      path: the ``.npz`` file.
      x_key: the archive's name for the features.
      y_key: the archive's name for the labels or targets.

    Returns:
      ``Split(x, y)``.

    Raises:
      DataError: the file is missing or not an npz archive, a key is missing
        (the message lists the keys present), an array holds Python objects,
        the row counts differ, or the values are not finite numbers.
    """
    path = Path(path)
    head = _read_bytes(path, 6)
    if not head:
        raise _fail(path, "empty file, expected an .npz archive")
    if head == b"\x93NUMPY":
        raise _fail(path, "is a single .npy array, expected an .npz archive of named arrays")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise _fail(path, f"not an .npz archive: it does not start with a zip signature (starts with {head!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (x_key, y_key) if k not in archive.files]
            if missing:
                raise _fail(
                    path,
                    f"no array named {' or '.join(map(repr, missing))}; "
                    f"the archive has {', '.join(map(repr, archive.files)) or 'no arrays'}",
                )
            x, y = archive[x_key], archive[y_key]
    except DataError:
        raise
    except ValueError as err:
        if "pickle" in str(err):
            raise _fail(path, "holds Python objects (pickled arrays), which are never loaded") from None
        raise _fail(path, f"not a valid .npz archive: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise _fail(path, f"not a valid .npz archive: {err}") from None
    return _as_split(path, x, y, x_key, y_key)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(path: PathLike, label_column: int = -1) -> Split:
    """Read a numeric CSV file: one example per row, one column of labels.

    The first row is a header, and skipped, when none of its fields is a
    number. Blank lines are skipped. If every label is written as an integer
    (``3``, not ``3.0``) the labels are class indices (int32 ``(n,)``);
    otherwise they are regression targets (float32 ``(n, 1)``).

    Args:
      path: the ``.csv`` file, comma-separated.
      label_column: index of the label column; negative counts from the end.

    Returns:
      ``Split(x, y)`` with the other columns as float32 features.

    Raises:
      DataError: the file is missing or has no data rows, a row has a different
        number of fields than the first, a value is not a finite number (both
        name the line number), ``label_column`` is out of range, or a class
        label is negative.
    """
    path = Path(path)
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _fail(path, f"not UTF-8 text: {err.reason} at byte {err.start}") from None
    rows: list[tuple[int, list[str]]] = []
    width = None
    reader = csv.reader(text.splitlines())
    for fields in reader:
        fields = [f.strip() for f in fields]
        if not any(fields):
            continue
        if width is None:
            width = (reader.line_num, len(fields))
            if not any(_is_number(f) for f in fields):
                continue  # header of column names
        elif len(fields) != width[1]:
            raise _fail(
                path, f"line {reader.line_num} has {len(fields)} fields, expected {width[1]} as on line {width[0]}"
            )
        rows.append((reader.line_num, fields))
    if not rows:
        raise _fail(path, "no data rows")
    columns = width[1]
    if columns < 2:
        raise _fail(path, f"needs at least 2 columns (features and a label), found {columns}")
    is_int = isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool)
    if not (is_int and -columns <= label_column < columns):
        raise _fail(path, f"label_column={label_column!r} is out of range for {columns} columns")
    label_column = int(label_column) % columns

    values = np.empty((len(rows), columns), np.float64)
    for i, (line, fields) in enumerate(rows):
        for j, field in enumerate(fields):
            try:
                values[i, j] = float(field)
            except ValueError:
                values[i, j] = np.nan
            if not math.isfinite(values[i, j]):
                raise _fail(path, f"line {line}, column {j + 1}: {field!r} is not a finite number")
    x = np.delete(values, label_column, axis=1)
    labels = [fields[label_column] for _, fields in rows]
    try:
        y = np.array([int(v) for v in labels], np.int64)
    except ValueError:
        y = values[:, label_column]
    return _as_split(path, x, y, "features", f"column {label_column + 1}")


# ---------------------------------------------------------------- split and normalise


def _fraction(name: str, value: object) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0 <= f < 1:
        raise _fail("funcnet.data.split", f"`{name}` must be a number in [0, 1), got {value!r}")
    return f


def split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[Split, Split, Split]:
    """Shuffle the examples and cut them into train, validation and test splits.

    A split gets ``round(n * fraction)`` examples, but at least one when its
    fraction is above zero; the training split gets the rest and must not be
    empty. A zero fraction gives an empty split (zero rows, same columns).

    Args:
      x: features, one row per example.
      y: labels or targets, one row per example.
      val_fraction: share of the examples for validation, in [0, 1).
      test_fraction: share of the examples for testing, in [0, 1).
      seed: seed of the shuffle; equal seeds give equal splits.

    Returns:
      ``(train, val, test)``, three :class:`Split` with disjoint examples.

    Raises:
      DataError: the row counts differ, a fraction is outside [0, 1), the
        fractions sum to 1 or more, or too few examples are left for training.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise _fail(
            "funcnet.data.split", f"x and y must have the same number of rows, got shapes {x.shape} and {y.shape}"
        )
    val_f, test_f = _fraction("val_fraction", val_fraction), _fraction("test_fraction", test_fraction)
    if val_f + test_f >= 1:
        raise _fail(
            "funcnet.data.split", f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    n = len(x)

    def count(f: float) -> int:
        return max(1, math.floor(n * f + 0.5)) if f > 0 else 0

    n_val, n_test = count(val_f), count(test_f)
    if n - n_val - n_test < 1:
        raise _fail(
            "funcnet.data.split",
            f"{n} examples leave none for training "
            f"with val_fraction={val_fraction} and test_fraction={test_fraction}",
        )
    order = np.random.default_rng(seed).permutation(n)
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test])


def standardize(train: Split, *others: Split, eps: float = 1e-8) -> tuple:
    """Zero mean and unit variance per feature, with the training split's statistics.

    The mean and standard deviation come from ``train.x`` alone and are
    applied unchanged to every split, so nothing about the validation or test
    data leaks into the features. A feature whose training standard deviation
    is below ``eps`` (a constant, such as the always-blank corner pixels of
    the digits) is only centred: its divisor is 1, not 0. Labels and targets
    are left as they are.

    Args:
      train: the training split.
      *others: more splits (validation, test) to normalise the same way.
      eps: standard deviations below this count as zero.

    Returns:
      ``(train, *others, mean, std)``: the normalised splits, then the float32
      mean and divisor of shape ``(features,)``.

    Raises:
      DataError: the training split is empty or the splits' feature counts differ.
    """
    x = np.asarray(train.x, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise _fail(
            "funcnet.data.standardize",
            f"the training features must be a non-empty (n, features) array, got shape {x.shape}",
        )
    for i, other in enumerate(others):
        shape = np.shape(other.x)
        if len(shape) != 2 or shape[1] != x.shape[1]:
            raise _fail(
                "funcnet.data.standardize",
                f"split {i + 1} of *others has features of shape {shape}, "
                f"expected (n, {x.shape[1]}) like the training split",
            )
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < eps, 1.0, std)

    def apply(s: Split) -> Split:
        return Split(((np.asarray(s.x, np.float64) - mean) / std).astype(np.float32), s.y)

    return (*(apply(s) for s in (train, *others)), mean.astype(np.float32), std.astype(np.float32))


# ---------------------------------------------------------------- by name or path

_BUILTIN = {
    "digits": lambda seed: load_digits(),
    "xor": lambda seed: xor(seed=seed),
    "spiral": lambda seed: spiral(arms=2, seed=seed),
    "spiral3": lambda seed: spiral(arms=3, seed=seed),
    "sine": lambda seed: sine(seed=seed),
}
#: The names :func:`load` knows, besides paths.
NAMES = tuple(_BUILTIN)


def load(
    name_or_path: PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Dataset:
    """Load a dataset by name or path, split it and standardize its features.

    Names: ``"digits"``, ``"xor"``, ``"spiral"`` (2 arms), ``"spiral3"``
    (3 arms), ``"sine"`` (regression); a name wins over a file of the same
    name. Paths: an ``.npz`` file (arrays ``x`` and ``y``, see
    :func:`load_npz`), a ``.csv`` file (label in the last column, see
    :func:`load_csv`), or a directory of MNIST IDX files (see
    :func:`load_mnist_dir`). When the directory has a t10k pair, that is the
    test split, ``test_fraction`` is ignored and the validation split comes
    out of the training files.

    The features are standardized with the training split's statistics
    (:func:`standardize`); regression targets are left untouched.

    Args:
      name_or_path: a known name or a path.
      seed: seed of the synthetic data and of the shuffle in :func:`split`.
      val_fraction: share of the examples for validation.
      test_fraction: share of the examples for testing.

    Returns:
      A :class:`Dataset`; ``num_classes`` is ``max label + 1`` for integer
      labels and ``None`` for float (regression) targets.

    Raises:
      DataError: an unknown name (the message lists the known ones), a path of
        an unsupported kind, or any error of the loaders and :func:`split`.
    """
    test = None
    key = name_or_path if isinstance(name_or_path, str) else None
    if key in _BUILTIN:
        name, data = key, _BUILTIN[key](seed)
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise _fail(
                "funcnet.data.load",
                f"unknown dataset {str(name_or_path)!r}: not one of {', '.join(NAMES)}, and no file or directory "
                "of that name (give an .npz file, a .csv file or a directory of MNIST IDX files)",
            )
        if path.is_dir():
            name = path.resolve().name
            data, test = load_mnist_dir(path)
        elif path.suffix.lower() == ".npz":
            name, data = path.stem, load_npz(path)
        elif path.suffix.lower() == ".csv":
            name, data = path.stem, load_csv(path)
        else:
            raise _fail(path, "unsupported kind of file: expected .npz, .csv, or a directory of MNIST IDX files")

    if test is None:
        train, val, test = split(data.x, data.y, val_fraction, test_fraction, seed)
    else:
        train, val, _ = split(data.x, data.y, val_fraction, 0.0, seed)
    train, val, test, mean, std = standardize(train, val, test)

    num_classes = None
    if np.issubdtype(data.y.dtype, np.integer):
        num_classes = int(max(data.y.max(initial=-1), test.y.max(initial=-1))) + 1
    return Dataset(train, val, test, num_classes, name, mean, std)
