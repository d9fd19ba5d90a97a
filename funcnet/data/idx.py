"""The IDX file format (MNIST's): load_idx for one file, load_mnist_dir for a directory of MNIST files."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from funcnet.data.files import (
    _DEFLATE_RATIO,
    _MAX_DIMS,
    _SPECIAL_FILE_LIMIT,
    _Prefixed,
    _open,
    _read_bytes,
    _read_head,
    _unreadable,
)
from funcnet.data.types import DataError, PathLike, Split, _fail

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
                raise _unreadable(path, err) from None
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
    data, found, more = _read_bytes(path, stream, says, expected)
    if found < expected:
        raise wrong(found)
    if more:
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
