"""Safe file access and the checks every file format shares: opening, bounded reads, arrays into a Split.

The loaders of :mod:`funcnet.data.idx`, :mod:`funcnet.data.npz` and :mod:`funcnet.data.csv` open files with
:func:`_open` (which refuses special files unless allowed), allocate what a header claims only through
:func:`_read_bytes` (checked against the machine's memory) and turn raw arrays into a checked :class:`Split` with
:func:`_as_split`; the limits they share are defined here.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np

from funcnet.data.types import DataError, Split, _fail

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


# ---------------------------------------------------------------- opening and reading

_SPECIAL_KINDS = (
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
)


def _unreadable(path: Path, err: OSError) -> DataError:
    """The DataError for an OSError while opening or reading ``path``."""
    return _fail(path, f"cannot read: {err.strerror or err}")


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
        raise _unreadable(path, err) from None
    try:
        info = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise _unreadable(path, err) from None
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


def _read_head(path: Path, f, n: int) -> bytes:
    """The first ``n`` bytes of an open data file (its magic number), or a DataError naming it."""
    try:
        return f.read(n)
    except OSError as err:
        raise _unreadable(path, err) from None


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


def _read_bytes(path: Path, stream: BinaryIO, says: str, nbytes: int) -> tuple[np.ndarray, int, bool]:
    """Read the ``nbytes`` bytes a header ``says`` there are, into a new uint8 array, after checking that they fit
    in memory: ``(array, bytes read, whether more follow)``; whether more follow is only asked when all came."""
    _check_memory(path, says, nbytes)
    data = np.empty(nbytes, np.uint8)
    found = _read_into(stream, memoryview(data))
    return data, found, found == nbytes and bool(stream.read(1))


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


# ---------------------------------------------------------------- arrays into a Split


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
