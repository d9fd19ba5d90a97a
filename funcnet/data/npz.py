"""The NumPy ``.npz`` file format: load_npz, which checks each array's ``.npy`` header before reading it."""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from pathlib import Path

try:
    import lzma
except ImportError:  # Python built without it: zipfile cannot read lzma members either
    lzma = None

import numpy as np

from funcnet.data.files import _DEFLATE_RATIO, _MAX_DIMS, _as_split, _open, _read_bytes, _read_head
from funcnet.data.types import DataError, PathLike, Split, _fail

#: Longest ``.npy`` header read from an ``.npz`` archive, in bytes (NumPy writes a few hundred).
_NPY_HEADER_LIMIT = 2**16


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
        data, found, more = _read_bytes(path, member, says, expected)
        if found != expected or more:
            raise _fail(path, f"{says}, the archive member holds {'fewer' if found < expected else 'more'}")
    order = "F" if fortran_order else "C"
    return data.view(dtype).reshape(shape, order=order)
