"""Datasets for the training examples: bundled, synthetic, and read from files.

Everything here is NumPy: features come back as ``float32`` arrays of shape
``(n, features)``, class labels as ``int32`` arrays of shape ``(n,)`` and
regression targets as ``float32`` arrays of shape ``(n, targets)``.

- :func:`load_digits`: the 8x8 handwritten digits, bundled with funcnet.
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

The file loaders treat files as untrusted: a header is checked (against the
file's size, what its compression can expand to, and the machine's memory)
before anything it describes is allocated, and no more than it describes is
read; class labels are range-checked before they become int32; NaN, infinite
and float32-overflowing values are refused. Paths that are not regular files
(named pipes, devices such as ``/dev/zero``, or links to them) are refused
unless ``allow_special_files=True`` is passed, and even then at most 1 GiB is
read from them.
"""

from __future__ import annotations

import array
import csv
import gzip
import io
import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple

try:
    import lzma
except ImportError:  # Python built without it: zipfile cannot read lzma members either
    lzma = None

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


def _seed(fn: str, value: object) -> int:
    """A NumPy seed: a non-negative integer (not a bool, not a float that NumPy would refuse with its own words)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise _fail(f"funcnet.data.{fn}", f"`seed` must be a non-negative integer, got {value!r}")
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
    """The 8x8 handwritten digits, bundled with funcnet (nothing is downloaded, nothing else is needed).

    1,797 grey-scale images of the digits 0 to 9, flattened to 64 features and
    scaled from the original 0..16 intensities to [0, 1]: the test set of UCI's
    *Optical Recognition of Handwritten Digits* (Alpaydin and Kaynak, 1998, CC BY
    4.0), in the order of ``sklearn.datasets.load_digits`` (see
    ``funcnet/_data/README.md``).

    Returns:
      ``Split(x, y)`` with ``x`` float32 of shape ``(1797, 64)`` and ``y``
      int32 of shape ``(1797,)`` holding the classes 0..9.
    """
    from importlib import resources

    with resources.files("funcnet").joinpath("_data/digits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as bundle:
        images, labels = bundle["images"], bundle["labels"]
    return Split(images.reshape(len(images), 64).astype(np.float32) / 16.0, labels.astype(np.int32))


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
    rng = np.random.default_rng(_seed("xor", seed))
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
    if isinstance(arms, bool) or not isinstance(arms, (int, np.integer)) or arms not in (2, 3):
        raise _fail("funcnet.data.spiral", f"`arms` must be 2 or 3, got {arms!r}")
    noise = _noise("spiral", noise)
    rng = np.random.default_rng(_seed("spiral", seed))
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
    rng = np.random.default_rng(_seed("sine", seed))
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

#: Class labels come back as int32: they must lie in [0, 2**31).
_MAX_LABEL = 2**31 - 1
#: float32's largest finite value: features and targets beyond it would become infinite.
_F32_MAX = float(np.finfo(np.float32).max)
#: Deflate (gzip, zip) expands its input at most about 1032-fold, so a compressed file of
#: ``n`` bytes honestly holds at most ``n * _DEFLATE_RATIO`` (plus a little) bytes.
_DEFLATE_RATIO = 1032
#: Most bytes read from a file that is not a regular file (a pipe or a device, read only
#: with ``allow_special_files=True``): its size is unknown, and a device may never end.
_SPECIAL_FILE_LIMIT = 2**30
#: Longest line of a CSV file, in bytes.
_CSV_LINE_LIMIT = 2**26
#: Longest ``.npy`` header read from an ``.npz`` archive, in bytes (NumPy writes a few hundred).
_NPY_HEADER_LIMIT = 2**16
_CHUNK = 2**20
_BEYOND_F32 = f"is beyond the float32 range of +-{_F32_MAX:.4g}; rescale the values"


def _numpy_max_dims() -> int:
    """The most dimensions a NumPy array can have here (64 in NumPy 2, 32 before)."""
    for n in (64, 32):
        try:
            np.empty((1,) * n, np.uint8)
            return n
        except ValueError:
            continue
    return 32


_MAX_DIMS = _numpy_max_dims()


def _memory_limit() -> int | None:
    """Bytes of physical memory, or None where the platform does not say: no array read may claim more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(path: Path, what: str, nbytes: int) -> None:
    memory = _memory_limit()
    if memory is not None and nbytes > memory:
        raise _fail(path, f"{what}, more than this machine's {memory / 2**30:.1f} GiB of memory")


def _show(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut short if long, for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


_SPECIAL_KINDS = (
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
)


def _open(path: Path, allow_special_files: bool) -> tuple[BinaryIO, int | None]:
    """Open ``path`` for binary reading: ``(file, size)``, ``size`` None for a pipe or device.

    A path that is not a regular file (or a link to one) is refused unless
    ``allow_special_files``: a device such as ``/dev/zero`` never ends, and a
    pipe may block. Unless allowed, it is opened non-blocking and checked with
    ``fstat`` on the open descriptor, so that neither a pipe without writer nor
    a swap of the file between check and open gets past.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    # Refusing: open non-blocking, so that a pipe without writer cannot hold us before the check. Allowed: open
    # once, blocking (a pipe waits for its writer). Opening twice would race: a writer that wrote everything and
    # closed between the two opens leaves the second one waiting for a writer that never comes.
    nonblock = 0 if allow_special_files else getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nonblock)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a file") from None
    except OSError as err:
        raise _fail(path, f"cannot read: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise _fail(path, f"cannot read: {err.strerror or err}") from None
    if stat.S_ISREG(info.st_mode):
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    if stat.S_ISDIR(info.st_mode) or not allow_special_files:
        os.close(fd)
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory, not a file")
    if not allow_special_files:
        kind = next((name for test, name in _SPECIAL_KINDS if test(info.st_mode)), "special file")
        target = os.path.realpath(path)
        link = f" (a link to {target})" if target != os.path.abspath(path) else ""
        raise _fail(
            path,
            f"is a {kind}{link}, not a regular file; pass allow_special_files=True to read it anyway",
        )
    return os.fdopen(fd, "rb"), None


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream`` in chunks; the number of bytes read (fewer only at the end)."""
    done = 0
    while done < len(buffer):
        chunk = stream.read(min(_CHUNK, len(buffer) - done))
        if not chunk:
            break
        buffer[done : done + len(chunk)] = chunk
        done += len(chunk)
    return done


class _Prefixed(io.RawIOBase):
    """A stream that yields ``prefix`` and then the rest of ``rest`` (to un-read bytes of a pipe)."""

    def __init__(self, prefix: bytes, rest: BinaryIO):
        self._prefix, self._rest = prefix, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        chunk = self._rest.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def _read_head(path: Path, f, n: int) -> bytes:
    """The first ``n`` bytes of an open data file (its magic number), or a DataError naming it."""
    try:
        return f.read(n)
    except OSError as err:
        raise _fail(path, f"cannot read: {err.strerror or err}") from None


def load_idx(path: PathLike, *, allow_special_files: bool = False) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or gzip-compressed.

    An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the
    number of dimensions), one big-endian uint32 per dimension, then the
    values, big-endian, row-major. Gzip is recognised by its magic bytes
    (``1f 8b``), whatever the file is called.

    The header is read and checked first, and then exactly the number of bytes
    it describes, never more: a gzip file is decompressed as a stream, and a
    header that claims more data than the file can hold (a plain file's size,
    about 1032 times a gzip file's size, the machine's memory) is refused
    before anything is allocated.

    Args:
      path: the file.
      allow_special_files: also read a path that is not a regular file (a
        named pipe or a device, or a link to one); off by default because a
        device such as ``/dev/zero`` never ends. Even then at most the bytes
        the header describes, and at most 1 GiB, are read.

    Returns:
      The array, with the file's shape and dtype (uint8, int8, int16, int32,
      float32 or float64) in native byte order.

    Raises:
      DataError: the file is missing, empty, not a regular file, not IDX (bad
        magic number or dtype code, more dimensions than NumPy allows), has a
        truncated header, has fewer or more data bytes than its dimensions
        say, claims more data than it can hold, or is a corrupt gzip stream.
    """
    path = Path(path)
    f, size = _open(path, allow_special_files)
    with f:
        head = _read_head(path, f, 2)
        compressed = head == b"\x1f\x8b"
        if f.seekable():
            f.seek(0)
            stream: BinaryIO = f
        else:
            stream = io.BufferedReader(_Prefixed(head, f))
        if not compressed:
            try:
                return _read_idx(path, stream, size, False)
            except OSError as err:
                raise _fail(path, f"cannot read: {err.strerror or err}") from None
        try:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                return _read_idx(path, unzipped, size, True)
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(path, f"corrupt gzip stream: {err}") from None


def _read_idx(path: Path, stream: BinaryIO, size: int | None, compressed: bool) -> np.ndarray:
    """The IDX array in ``stream`` (see load_idx); ``size`` is the file's size on disk, None if unknown."""
    after = " (after decompression)" if compressed else ""
    magic = stream.read(4)
    if not magic:
        raise _fail(path, f"empty file{after}, expected an IDX header")
    if len(magic) < 4:
        raise _fail(path, f"truncated header: {len(magic)} bytes, an IDX file starts with a 4-byte magic number")
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
    if ndim > _MAX_DIMS:
        raise _fail(
            path, f"bad magic number 0x{magic.hex()}: {ndim} dimensions, more than the {_MAX_DIMS} NumPy allows"
        )
    header = 4 + 4 * ndim
    dim_bytes = stream.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise _fail(
            path, f"truncated header: {ndim} dimensions need {header} bytes, file has {4 + len(dim_bytes)}{after}"
        )
    dims = struct.unpack(f">{ndim}I", dim_bytes)
    name, dtype = _IDX_DTYPES[magic[2]]
    dtype = np.dtype(dtype)
    expected = math.prod(dims) * dtype.itemsize
    each = f" ({dtype.itemsize} bytes each)" if dtype.itemsize > 1 else ""
    says = f"header says {'x'.join(map(str, dims))} {name}{each} = {expected} bytes of data"

    def wrong(found: int | None) -> DataError:
        problem = "truncated" if found is not None and found < expected else "trailing bytes"
        has = f"has {found}" if found is not None else f"has more than {expected}"
        return _fail(path, f"{problem}: {says}, file {has}{after} after the {header}-byte header")

    if size is not None and not compressed and size - header != expected:
        raise wrong(size - header)  # the file's size says so: nothing more is read
    if size is not None and compressed and header + expected > size * _DEFLATE_RATIO + 1024:
        raise _fail(
            path, f"{says}, but a gzip file of {size} bytes decompresses to at most about {size * _DEFLATE_RATIO}"
        )
    if size is None and header + expected > _SPECIAL_FILE_LIMIT:
        raise _fail(path, f"{says}, more than the {_SPECIAL_FILE_LIMIT} bytes read from a file that is not regular")
    _check_memory(path, says, expected)
    data = np.empty(expected, np.uint8)
    found = _read_into(stream, memoryview(data))
    if found < expected:
        raise wrong(found)
    if stream.read(1):
        raise wrong(None)
    return data.view(dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _find(directory: Path, stem: str, kind: str) -> Path | None:
    """The first present ``<stem>-<kind>`` file, also trying ``.`` for ``-`` and ``.gz``.

    Anything there but a directory counts (a link to a device, too), so that
    reading it names the problem rather than the file seeming absent.
    """
    for name in (f"{stem}-{kind}", f"{stem}-{kind.replace('-', '.', 1)}"):
        for suffix in ("", ".gz"):
            candidate = directory / (name + suffix)
            if os.path.lexists(candidate) and not candidate.is_dir():
                return candidate
    return None


def _mnist_pair(directory: Path, stem: str, required: bool, allow_special_files: bool) -> Split | None:
    """The ``<stem>-images`` / ``<stem>-labels`` pair as a Split; None if both are absent and not required."""
    paths = {kind: _find(directory, stem, kind) for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    images_path, labels_path = paths.values()
    if images_path is None and labels_path is None and not required:
        return None
    if images_path is None or labels_path is None:
        found = images_path or labels_path
        missing = " and no ".join(f"{stem}-{kind}[.gz]" for kind, path in paths.items() if path is None)
        raise _fail(directory, f"has {found.name} but no {missing}" if found else f"has no {missing}")
    images = load_idx(images_path, allow_special_files=allow_special_files)
    labels = load_idx(labels_path, allow_special_files=allow_special_files)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise _fail(
            images_path,
            f"expected ubyte images of shape (n, rows, cols), got {images.dtype} of shape {images.shape}",
        )
    if len(images) == 0:
        raise _fail(images_path, f"no images: the header says {'x'.join(map(str, images.shape))}")
    if images.shape[1] * images.shape[2] == 0:
        raise _fail(images_path, f"images of {images.shape[1]}x{images.shape[2]} pixels are empty")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise _fail(labels_path, f"expected integer labels of shape (n,), got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise _fail(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.min() < 0:
        raise _fail(labels_path, f"negative label {labels.min()}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return Split(x, labels.astype(np.int32))


def load_mnist_dir(directory: PathLike, *, allow_special_files: bool = False) -> tuple[Split, Split | None]:
    """Read MNIST-format IDX files from a directory.

    The training pair ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
    must be there; the test pair ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` is optional. Each file may be gzip-compressed
    with a ``.gz`` suffix, and the ``.idx3-ubyte`` spelling (a dot instead of
    the dash) is accepted too.

    Args:
      directory: the directory holding the files.
      allow_special_files: also read files that are pipes or devices (see
        :func:`load_idx`); off by default.

    Returns:
      ``(train, test)``, with ``test`` ``None`` when there is no t10k pair.
      Images are flattened to float32 ``(n, rows * cols)`` in [0, 1]
      (divided by 255); labels are int32 ``(n,)``.

    Raises:
      DataError: the directory or a file of a pair is missing, a file is not
        valid IDX (see :func:`load_idx`), images are not 3-D ubyte, there are
        no images (or no pixels), or the image and label counts (or the train
        and test image sizes) differ.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise _fail(directory, "no such directory" if not directory.exists() else "is not a directory")
    train = _mnist_pair(directory, "train", True, allow_special_files)
    test = _mnist_pair(directory, "t10k", False, allow_special_files)
    if test is not None and test.x.shape[1] != train.x.shape[1]:
        raise _fail(directory, f"t10k images have {test.x.shape[1]} pixels but train images have {train.x.shape[1]}")
    return train, test


def _finite_float32(where: object, name: str, a: np.ndarray) -> np.ndarray:
    """``a`` (2-D, real) as float32, or a DataError if a value is NaN, infinite or beyond float32's range."""
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            count = int(bad.sum())
            raise _fail(
                where, f"`{name}` contains NaN or infinity: {count} value{'s' * (count > 1)}, the first in row {row}"
            )
        if a.dtype.itemsize > 4 and a.size:
            big = np.abs(a) > _F32_MAX
            if big.any():
                row, col = np.unravel_index(int(np.argmax(big)), a.shape)
                raise _fail(where, f"`{name}` holds {a[row, col]} (row {row}), which {_BEYOND_F32}")
    return a.astype(np.float32)


def _as_split(where: object, x: np.ndarray, y: np.ndarray, x_name: str = "x", y_name: str = "y") -> Split:
    """Check and convert raw arrays to a Split (see load_npz for the rules)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise _fail(
            where, f"`{x_name}` and `{y_name}` must have one row per example, got shapes {x.shape} and {y.shape}"
        )
    if len(x) != len(y):
        raise _fail(where, f"`{x_name}` has {len(x)} rows but `{y_name}` has {len(y)}")
    if x.dtype.kind not in "biuf":
        raise _fail(where, f"`{x_name}` must be real numbers, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise _fail(where, f"`{y_name}` must be integer class labels or float targets, got dtype {y.dtype}")
    if len(x) == 0:
        raise _fail(where, f"no examples: `{x_name}` has 0 rows (shape {x.shape})")
    if x.size == 0:
        raise _fail(where, f"`{x_name}` has no features: shape {x.shape}")
    x = _finite_float32(where, x_name, x.reshape(len(x), -1))
    if y.dtype.kind == "f":
        if y.size == 0:
            raise _fail(where, f"`{y_name}` has no targets: shape {y.shape}")
        return Split(x, _finite_float32(where, y_name, y.reshape(len(y), -1)))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _fail(where, f"integer `{y_name}` holds class labels and must have shape (n,), got {y.shape}")
    # checked in the file's own (wide) type, before the cast to int32 could wrap them around
    if y.min() < 0:
        raise _fail(where, f"class labels in `{y_name}` must be >= 0, found {y.min()}")
    if y.max() > _MAX_LABEL:
        raise _fail(
            where,
            f"class labels in `{y_name}` must be < 2**31 (they are read as int32), found {y.max()}; "
            "store regression targets as floats",
        )
    return Split(x, y.astype(np.int32))


def load_npz(
    path: PathLike, x_key: str = "x", y_key: str = "y", *, allow_special_files: bool = False
) -> Split:
    """Read features and labels from a NumPy ``.npz`` archive (never unpickling).

    Features with more than two dimensions (images) are flattened to
    ``(n, features)``. An integer (or bool) ``y`` holds class labels and comes
    back int32 ``(n,)``; a float ``y`` holds regression targets and comes back
    float32 ``(n, targets)``.

    Each array's ``.npy`` header is read first and checked against the size
    the archive gives its member (and that against what the member's
    compressed size can expand to, and the machine's memory) before anything
    is allocated, so that a small archive whose header claims a huge shape is
    a clear error, not an attempt to allocate it. Arrays must be stored or
    deflate-compressed, as :func:`numpy.savez` and
    :func:`numpy.savez_compressed` write them (bzip2 and lzma members,
    whose expansion has no such bound, are refused).

    Args:
      path: the ``.npz`` file.
      x_key: the archive's name for the features.
      y_key: the archive's name for the labels or targets.
      allow_special_files: also read a path that is not a regular file (see
        :func:`load_idx`); off by default. A zip archive must be seekable, so
        in practice only a block device qualifies.

    Returns:
      ``Split(x, y)``.

    Raises:
      DataError: the file is missing, not a regular file or not an npz
        archive, a key is missing (the message lists the keys present), an
        array holds Python objects or non-numbers, its header claims more data
        than the archive holds, there are no rows or no features, the row
        counts differ, a value is not finite or beyond float32's range, or a
        class label is negative or does not fit int32.
    """
    path = Path(path)
    f, size = _open(path, allow_special_files)
    with f:
        head = _read_head(path, f, 6)
        if not head:
            raise _fail(path, "empty file, expected an .npz archive")
        if head == b"\x93NUMPY":
            raise _fail(path, "is a single .npy array, expected an .npz archive of named arrays")
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise _fail(path, f"not an .npz archive: it does not start with a zip signature (starts with {head!r})")
        try:
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                members = {info.filename: info for info in archive.infolist()}
                keys = [name[:-4] if name.endswith(".npy") else name for name in members]
                missing = [k for k in (x_key, y_key) if k not in keys]
                if missing:
                    raise _fail(
                        path,
                        f"no array named {' or '.join(map(repr, missing))}; "
                        f"the archive has {', '.join(map(repr, keys)) or 'no arrays'}",
                    )
                x = _read_npy(path, archive, members.get(f"{x_key}.npy") or members[x_key], x_key, size, True)
                y = _read_npy(path, archive, members.get(f"{y_key}.npy") or members[y_key], y_key, size, False)
        except DataError:
            raise
        except _ZIP_ERRORS as err:
            raise _fail(path, f"not a valid .npz archive: {err}") from None
    return _as_split(path, x, y, x_key, y_key)


_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
    NotImplementedError, RuntimeError, struct.error, *((lzma.LZMAError,) if lzma else ()),
)


def _read_npy(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, archive_size: int | None, features: bool
) -> np.ndarray:
    """One ``.npy`` member of an ``.npz`` archive, its header checked before its data is allocated."""
    where = f"`{key}`"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _fail(
            path, f"{where} is compressed with zip method {info.compress_type}; an .npz archive holds stored or "
            "deflate-compressed arrays (as numpy.savez and numpy.savez_compressed write them)",
        )
    if archive_size is not None and info.compress_size > archive_size:
        raise _fail(
            path, f"{where}: the zip directory says {info.compress_size} compressed bytes, "
            f"more than the whole file's {archive_size}",
        )
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise _fail(
            path, f"{where}: the zip directory says {info.file_size} bytes stored uncompressed "
            f"in {info.compress_size} bytes",
        )
    if info.file_size > info.compress_size * _DEFLATE_RATIO + 1024:
        raise _fail(
            path, f"{where}: the zip directory says {info.file_size} bytes compressed into {info.compress_size}, "
            f"more than deflate can expand to",
        )
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
        except ValueError as err:
            raise _fail(path, f"{where} is not a .npy array: {err}") from None
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise _fail(path, f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
        length_format = "<H" if version == (1, 0) else "<I"
        length_bytes = member.read(struct.calcsize(length_format))
        if len(length_bytes) < struct.calcsize(length_format):
            raise _fail(path, f"{where}: truncated .npy header")
        (length,) = struct.unpack(length_format, length_bytes)
        if length > _NPY_HEADER_LIMIT:
            raise _fail(path, f"{where}: the .npy header claims {length} bytes, more than {_NPY_HEADER_LIMIT}")
        text = member.read(length)
        if len(text) < length:
            raise _fail(path, f"{where}: truncated .npy header")
        try:
            text.decode("ascii")  # the header of a plain numeric array is ASCII in every version
            header = io.BytesIO(struct.pack("<I", length) + text)
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
        except Exception as err:  # any failure to parse a header of at most _NPY_HEADER_LIMIT bytes
            raise _fail(path, f"{where}: bad .npy header: {type(err).__name__}: {err}") from None
        if dtype.hasobject:
            raise _fail(path, "holds Python objects (pickled arrays), which are never loaded")
        if dtype.kind not in "biuf":
            wanted = "real numbers" if features else "integer class labels or float targets"
            raise _fail(path, f"{where} must be {wanted}, got dtype {dtype}")
        if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
            raise _fail(path, f"{where}: bad shape {shape} in the .npy header")
        expected = math.prod(shape) * dtype.itemsize
        says = f"{where}: its .npy header says shape {shape} {dtype} = {expected} bytes of data"
        available = info.file_size - (6 + 2 + len(length_bytes) + length)
        if available != expected:
            problem = "truncated" if available < expected else "trailing bytes"
            raise _fail(path, f"{problem}: {says}, the archive holds {available}")
        _check_memory(path, says, expected)
        data = np.empty(expected, np.uint8)
        found = _read_into(member, memoryview(data))
        if found != expected or member.read(1):
            raise _fail(path, f"{says}, the archive member holds {'fewer' if found < expected else 'more'}")
    order = "F" if fortran_order else "C"
    return data.view(dtype).reshape(shape, order=order)


def _to_float(text: str) -> float:
    """``float(text)``, or NaN for text that is not a number; Python's digit-group underscores ("1_0", which
    float() reads as 10) are not part of a number in a CSV file."""
    if "_" in text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _is_number(text: str) -> bool:
    """Whether ``text`` is a number (NaN and infinity included), as :func:`_to_float` reads numbers."""
    if "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_lines(path: Path, f: BinaryIO, size: int | None):
    """The text lines of a CSV file, read as a stream: each at most _CSV_LINE_LIMIT bytes, all at most the
    file's size (or _SPECIAL_FILE_LIMIT for a pipe or device), decoded as UTF-8 with an optional BOM."""
    limit = size if size is not None else _SPECIAL_FILE_LIMIT
    offset, lines = 0, 0
    while True:
        try:
            raw = f.readline(_CSV_LINE_LIMIT + 1)
        except OSError as err:
            raise _fail(path, f"cannot read: {err.strerror or err}") from None
        if not raw:
            return
        if len(raw) > _CSV_LINE_LIMIT:
            raise _fail(path, f"line {lines + 1} is longer than {_CSV_LINE_LIMIT} bytes")
        if offset + len(raw) > limit:
            if size is None:
                raise _fail(path, f"more than {limit} bytes: a file that is not regular is read up to {limit} bytes")
            raise _fail(path, f"grew while being read, past the {size} bytes it had when opened")
        start = 3 if offset == 0 and raw.startswith(b"\xef\xbb\xbf") else 0
        try:
            text = raw[start:].decode("utf-8")
        except UnicodeDecodeError as err:
            raise _fail(path, f"not UTF-8 text: {err.reason} at byte {offset + start + err.start}") from None
        offset += len(raw)
        # line ends are kept: without them, the csv module joins a quoted field that spans lines ("1<newline>2")
        # into "12", a wrong number instead of an error
        for line in text.splitlines(keepends=True):
            lines += 1
            yield line


def load_csv(path: PathLike, label_column: int = -1, *, allow_special_files: bool = False) -> Split:
    """Read a numeric CSV file: one example per row, one column of labels.

    The first row is a header, and skipped, when none of its fields is a
    number. Blank lines are skipped. If every label is written as an integer
    (``3``, not ``3.0``) the labels are class indices (int32 ``(n,)``), and
    must then lie in [0, 2**31); otherwise they are regression targets
    (float32 ``(n, 1)``). Every value must be finite and within float32's
    range. The file is parsed as a stream, one line at a time.

    Args:
      path: the ``.csv`` file, comma-separated.
      label_column: index of the label column; negative counts from the end.
      allow_special_files: also read a path that is not a regular file (a
        named pipe or a device, or a link to one); off by default because a
        device such as ``/dev/zero`` never ends. Even then at most 1 GiB is read.

    Returns:
      ``Split(x, y)`` with the other columns as float32 features.

    Raises:
      DataError: the file is missing, not a regular file, not UTF-8 or has
        no data rows, a row has a different number of fields than the first,
        a line or field is too long, a value is not a finite number or beyond
        float32's range, a class label is negative or too large (these name
        the line number), or ``label_column`` is out of range.
    """
    path = Path(path)
    f, size = _open(path, allow_special_files)
    with f:
        reader = csv.reader(_csv_lines(path, f, size))
        values = array.array("f")  # float32, row-major, every column (each value checked to fit)
        labels: array.array | None = array.array("i")  # int32, while every label is an integer
        bad_label = None  # (line, text) of the first integer label outside [0, 2**31)
        big_label = None  # (line, text) of the first label beyond float32's range
        width = col = None
        rows = 0
        try:
            for fields in reader:
                line = reader.line_num
                fields = [s.strip() for s in fields]
                if not any(fields):
                    continue
                if width is None:
                    width = (line, len(fields))
                    if not any(_is_number(s) for s in fields):
                        continue  # header of column names
                elif len(fields) != width[1]:
                    raise _fail(
                        path, f"line {line} has {len(fields)} fields, expected {width[1]} as on line {width[0]}"
                    )
                if col is None:
                    col = _label_column(path, label_column, width[1])
                for j, field in enumerate(fields):
                    value = _to_float(field)
                    if not math.isfinite(value):
                        raise _fail(path, f"line {line}, column {j + 1}: {_show(field)} is not a finite number")
                    if abs(value) > _F32_MAX:
                        if j != col:
                            raise _fail(path, f"line {line}, column {j + 1}: {_show(field)} {_BEYOND_F32}")
                        big_label = big_label or (line, field)  # an error unless the labels are integers
                        value = 0.0
                    values.append(value)
                rows += 1
                if labels is not None:
                    try:
                        label = int(fields[col])
                    except ValueError:
                        labels = None  # not all integers: regression targets
                    else:
                        if not 0 <= label <= _MAX_LABEL:
                            bad_label = bad_label or (line, fields[col])
                            label = 0
                        labels.append(label)
        except csv.Error as err:
            raise _fail(path, f"line {reader.line_num}: {err}") from None
    if not rows:
        raise _fail(path, "no data rows")
    table = np.frombuffer(values, np.float32).reshape(rows, width[1])
    x = np.delete(table, col, axis=1)
    y_name = f"column {col + 1}"
    if labels is not None:
        if bad_label is not None:
            line, text = bad_label
            raise _fail(
                path,
                f"line {line}, column {col + 1}: class label {_show(text)} is outside [0, 2**31): every label in "
                "the column is an integer, so they are class indices (write regression targets as 3.0, not 3)",
            )
        return _as_split(path, x, np.frombuffer(labels, np.int32), "features", y_name)
    if big_label is not None:
        raise _fail(path, f"line {big_label[0]}, column {col + 1}: {_show(big_label[1])} {_BEYOND_F32}")
    return _as_split(path, x, table[:, col], "features", y_name)


def _label_column(path: Path, label_column: object, columns: int) -> int:
    if columns < 2:
        raise _fail(path, f"needs at least 2 columns (features and a label), found {columns}")
    is_int = isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool)
    if not (is_int and -columns <= label_column < columns):
        raise _fail(path, f"label_column={label_column!r} is out of range for {columns} columns")
    return int(label_column) % columns


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
    order = np.random.default_rng(_seed("split", seed)).permutation(n)
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
      DataError: the training split is empty, the splits' feature counts differ,
        a feature is NaN or infinite, or ``eps`` is not a finite number > 0.
    """
    fn = "funcnet.data.standardize"
    ok = isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, (bool, np.bool_))
    if not (ok and math.isfinite(eps) and eps > 0):  # eps <= 0 or NaN divides constant features by 0
        raise _fail(fn, f"`eps` must be a finite number > 0, got {eps!r}")
    names = ["the training split", *(f"split {i + 1} of *others" for i in range(len(others)))]
    xs = []
    for name, s in zip(names, (train, *others)):
        if not hasattr(s, "x"):
            raise _fail(fn, f"{name} must be a Split(x, y), got {type(s).__name__}")
        try:
            xs.append(np.asarray(s.x, np.float64))
        except (TypeError, ValueError):
            raise _fail(fn, f"{name} has features that are not numbers (dtype {np.asarray(s.x).dtype})") from None
    x = xs[0]
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
    for name, a in zip(names, xs):  # one NaN would make a whole feature NaN, silently
        bad = ~np.isfinite(a)
        if bad.any():
            raise _fail(fn, f"{name} has {int(bad.sum())} NaN or infinite features, the first in row "
                        f"{int(np.argmax(bad.any(axis=1)))}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < eps, 1.0, std)

    def apply(s: Split, a: np.ndarray) -> Split:
        return Split(((a - mean) / std).astype(np.float32), s.y)

    return (*map(apply, (train, *others), xs), mean.astype(np.float32), std.astype(np.float32))


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
    allow_special_files: bool = False,
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
    (:func:`standardize`); regression targets are left untouched. The loaders
    refuse NaN and infinite values (and values beyond float32's range), so
    they never reach training; ``num_classes`` is derived from the labels, so
    every label is below it by construction.

    Args:
      name_or_path: a known name or a path.
      seed: seed of the synthetic data and of the shuffle in :func:`split`.
      val_fraction: share of the examples for validation.
      test_fraction: share of the examples for testing.
      allow_special_files: also read a path that is not a regular file (a
        named pipe or a device, or a link to one); off by default, because a
        device such as ``/dev/zero`` never ends (see :func:`load_idx`).

    Returns:
      A :class:`Dataset`; ``num_classes`` is ``max label + 1`` for integer
      labels and ``None`` for float (regression) targets.

    Raises:
      DataError: an unknown name (the message lists the known ones), a path of
        an unsupported kind, or any error of the loaders and :func:`split`.
    """
    if isinstance(name_or_path, bytes):
        name_or_path = os.fsdecode(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):  # "" would be the cwd
        raise _fail("funcnet.data.load", f"expected a dataset name ({', '.join(NAMES)}) or a path, "
                    f"got {name_or_path!r}")
    seed = _seed("load", seed)
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
            data, test = load_mnist_dir(path, allow_special_files=allow_special_files)
        elif path.suffix.lower() == ".npz":
            name, data = path.stem, load_npz(path, allow_special_files=allow_special_files)
        elif path.suffix.lower() == ".csv":
            name, data = path.stem, load_csv(path, allow_special_files=allow_special_files)
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
