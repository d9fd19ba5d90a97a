"""funcnet.data under attack (issue 13): hostile or broken files give one-line DataErrors, never tracebacks from
numpy, csv, gzip or zipfile internals, never wrapped-around labels, and never memory beyond what a header honestly
describes.

Each attack is one row of ATTACKS: ``make(tmp_path)`` writes the file(s) and returns the path, ``call(path)`` loads
it, and the DataError's message must contain every fragment (the file's name among them). ``max_mb``, where given,
bounds the peak of traced memory while loading.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import threading
import time
import tracemalloc
import zipfile
from typing import Callable, NamedTuple

import numpy as np
import pytest

from funcnet import data
from funcnet.data import DataError, files
from funcnet.data import csv as csv_format
from funcnet.data import idx as idx_format

posix_only = pytest.mark.skipif(os.name != "posix", reason="devices, links and named pipes are POSIX")


def raises(*fragments):
    """pytest.raises(DataError) whose one-line message must contain every fragment."""
    return pytest.raises(DataError, match="^(?=[^\n]*$)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ---------------------------------------------------------------- file builders


def text(name: str, content: str) -> Callable:
    def make(tmp_path):
        path = tmp_path / name
        path.write_text(content)
        return path

    return make


def raw(name: str, content: bytes | Callable[[], bytes], sparse_tail: int = 0) -> Callable:
    """A file of ``content`` (or of what it returns, made only when the case runs) followed by ``sparse_tail``
    zero bytes (a hole: costs no disk)."""

    def make(tmp_path):
        path = tmp_path / name
        blob = content() if callable(content) else content
        with open(path, "wb") as f:
            f.write(blob)
            f.truncate(len(blob) + sparse_tail)
        return path

    return make


def npz(name: str, arrays: dict, method: int = zipfile.ZIP_STORED) -> Callable:
    def make(tmp_path):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", method) as archive:
            for key, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
                archive.writestr(f"{key}.npy", buffer.getvalue())
        return path

    return make


def npy_claiming(shape, descr="<f8", payload=b"\0" * 64) -> bytes:
    """A .npy member whose header claims ``shape`` but which holds only ``payload``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def zip_members(name: str, members: dict, method: int = zipfile.ZIP_STORED, forge_size: dict | None = None):
    """A zip of raw members; ``forge_size`` rewrites a member's uncompressed size in the central directory."""

    def make(tmp_path):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", method) as archive:
            for key, content in members.items():
                archive.writestr(key, content)
        blob = bytearray(path.read_bytes())
        for key, size in (forge_size or {}).items():
            at = blob.find(b"PK\x01\x02")  # central directory entries: size at +24, name length at +28, name at +46
            while at >= 0:
                length = struct.unpack_from("<H", blob, at + 28)[0]
                if blob[at + 46 : at + 46 + length] == key.encode():
                    struct.pack_into("<I", blob, at + 24, size)
                at = blob.find(b"PK\x01\x02", at + 4)
        path.write_bytes(bytes(blob))
        return path

    return make


def idx(array: np.ndarray) -> bytes:
    """An IDX file holding a uint8 ``array``."""
    assert array.dtype == np.uint8
    return idx_header(array.shape) + array.tobytes()


def idx_header(dims, code=0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gz(name: str, content: Callable[[], bytes]) -> Callable:
    return raw(name, lambda: gzip.compress(content(), 6))


def mnist(images: bytes, labels: bytes, link_images_to: str | None = None) -> Callable:
    def make(tmp_path):
        folder = tmp_path / "mnist"
        folder.mkdir()
        if link_images_to:
            (folder / "train-images-idx3-ubyte").symlink_to(link_images_to)
        else:
            (folder / "train-images-idx3-ubyte").write_bytes(images)
        (folder / "train-labels-idx1-ubyte").write_bytes(labels)
        return folder

    return make


def link(name: str, target: str) -> Callable:
    def make(tmp_path):
        path = tmp_path / name
        path.symlink_to(target)
        return path

    return make


_WRITERS: list[tuple[str, threading.Thread]] = []


def fifo(name: str, content: bytes) -> Callable:
    """A named pipe that a thread fills with ``content`` once a reader opens it (released after the test)."""

    def make(tmp_path):
        path = tmp_path / name
        os.mkfifo(path)

        def write():
            try:
                with open(path, "wb") as f:
                    f.write(content)
            except OSError:  # the reader went away early (EPIPE)
                pass

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        _WRITERS.append((str(path), thread))
        return path

    return make


@pytest.fixture(autouse=True)
def _release_fifo_writers():
    yield
    while _WRITERS:
        path, thread = _WRITERS.pop()
        thread.join(0.5)
        if thread.is_alive():  # still waiting for a reader: be one, and drain what it writes, so that it ends
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            deadline = time.monotonic() + 10
            try:
                while thread.is_alive() and time.monotonic() < deadline:
                    try:
                        os.read(fd, 2**16)
                    except BlockingIOError:
                        thread.join(0.01)
            finally:
                os.close(fd)


def patched(module, name: str, value, load: Callable) -> Callable:
    """``load`` with the limit ``name`` set to ``value`` (small, to test it cheaply) in ``module``, the one of
    funcnet.data's modules where the loader looks it up."""

    def call(path):
        old = getattr(module, name)  # no default: patching a name the module lacks would test nothing
        setattr(module, name, value)
        try:
            return load(path)
        finally:
            setattr(module, name, old)

    return call


def finishes(call: Callable, path, seconds: float = 60.0):
    """``call(path)``'s result or exception, failing (not hanging) if it is still running after ``seconds``.

    A loader stuck opening or reading a pipe would otherwise hold the test worker forever; here the
    stuck reader is given a writer that closes at once (so that it sees the end) and the test fails.
    """
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call(path)
        except BaseException as err:  # handed to the test's thread below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"loading {path} did not finish within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def special(load: Callable) -> Callable:
    return lambda path: load(path, allow_special_files=True)


# ---------------------------------------------------------------- the table


class Attack(NamedTuple):
    make: Callable  # tmp_path -> the path to load
    call: Callable  # path -> loads it
    fragments: tuple  # the message holds each, and the file's name
    max_mb: float | None  # bound on the peak of traced memory while loading
    marks: tuple


def A(make, call, *fragments, max_mb=None, posix=False) -> Attack:
    return Attack(make, call, fragments, max_mb, (posix_only,) if posix else ())


CSV, NPZ, IDX, MNIST, LOAD = data.load_csv, data.load_npz, data.load_idx, data.load_mnist_dir, data.load
STORED, DEFLATED, BZIP2 = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2
MB20 = 20 * 10**6


def csv(content: str) -> Callable:
    return text("a.csv", content)


def xy(y, x=None) -> Callable:
    """An .npz of features ``x`` (ones by default) and labels ``y``."""
    y = np.asarray(y)
    return npz("a.npz", {"x": np.ones((len(y), 1)) if x is None else np.asarray(x), "y": y})


def claims(shape, method=STORED, forge_size=None, y_rows=8) -> Callable:
    """An .npz whose ``x`` header claims ``shape`` float64 but holds 64 bytes."""
    members = {"x.npy": npy_claiming(shape), "y.npy": npy_claiming((y_rows,), "<i8", b"\0" * 8 * y_rows)}
    return zip_members("a.npz", members, method, forge_size)


def pipe(content: bytes, name: str = "a.csv") -> Callable:
    return fifo(name, content)


NO_IMAGES = mnist(idx_header((0, 28, 28)), idx_header((0,)))


ATTACKS = {
    # 1. class labels past int32 must not wrap around
    "csv-label-2**31": A(csv("1,2147483648\n2,0\n"), CSV, "line 1, column 2", "2147483648", "2**31"),
    "csv-label-2**63": A(csv("1,0\n2,9223372036854775808\n"), CSV, "line 2, column 2", "2**31"),
    "npz-int64-label-2**31": A(xy([2**31, 0]), NPZ, "< 2**31", "2147483648"),
    "npz-uint64-label-2**63": A(xy(np.array([2**63, 1], np.uint64)), NPZ, "< 2**31", "9223372036854775808"),
    "npz-uint32-label-2**32-1": A(xy(np.array([0, 2**32 - 1], np.uint32)), NPZ, "< 2**31", "4294967295"),
    "load-npz-label-2**31": A(xy(np.r_[np.zeros(8, int), 2**31]), LOAD, "< 2**31"),
    "npz-timedelta-labels": A(xy(np.array([0, 1], "m8[s]")), NPZ, "`y` must be integer class labels", "timedelta64"),
    # 2. CSV fields the csv module or int() choke on, values float32 cannot hold
    "csv-field-over-limit": A(csv("1," + "9" * 200_000 + "\n"), CSV, "line 1", "field larger than field limit"),
    "csv-label-10**20": A(csv("1,100000000000000000000\n2,1\n"), CSV, "line 1, column 2", "class label '1000", "2**31"),
    "csv-feature-beyond-float32": A(csv("1,0\n1e39,1\n"), CSV, "line 2, column 1", "'1e39'", "float32 range"),
    "csv-target-beyond-float32": A(csv("1,0.5\n2,-1e39\n"), CSV, "line 2, column 2", "'-1e39'", "float32 range"),
    "csv-quoted-newline-not-joined": A(csv('"1\n2",0\n3,1\n'), CSV, "line 2, column 1", "'1\\n2' is not a finite number"),
    "csv-line-over-limit": A(csv("1," * 600 + "0\n"), patched(csv_format, "_CSV_LINE_LIMIT", 1000, CSV),
                             "line 1 is longer than"),
    # 3. .npz headers that claim more than the archive holds: refused before allocating
    "npz-header-claims-745GiB": A(claims((10**11,)), NPZ, "`x`", "header says shape (100000000000,) float64", max_mb=5),
    "npz-header-claims-16PB": A(claims((2, 10**15)), NPZ, "`x`", "header says shape (2, 1000000000000000)", max_mb=5),
    "npz-forged-zip-size": A(claims((4 * 10**8,), DEFLATED, {"x.npy": 128 + 32 * 10**8}), NPZ, "more than deflate can"),
    "npz-past-memory": A(xy([0, 1], np.ones((2, 200))), patched(files, "_memory_limit", lambda: 1000, NPZ),
                         "3200 bytes", "more than this machine's"),
    "npz-bzip2-claims-745GiB": A(claims((10**11,), BZIP2), NPZ, "`x` is compressed with zip method 12", max_mb=5),
    # 4. shapes NumPy cannot make, and nothing to train on
    "idx-65-dims": A(raw("a.idx", idx_header((1,) * 65) + b"\0"), IDX, "65 dimensions, more than the"),
    "idx-255-dims": A(raw("a.idx", idx_header((1,) * 255) + b"\0"), IDX, "255 dimensions, more than the"),
    "mnist-0-images": A(NO_IMAGES, MNIST, "train-images-idx3-ubyte", "no images", "0x28x28"),
    "mnist-0-pixels": A(mnist(idx_header((5, 0, 4)), idx(np.zeros(5, np.uint8))), MNIST, "0x4 pixels are empty"),
    "load-mnist-0-images": A(NO_IMAGES, LOAD, "train-images-idx3-ubyte", "no images"),
    "npz-0-rows": A(xy(np.zeros(0, int), np.ones((0, 3))), NPZ, "no examples", "`x` has 0 rows", "(0, 3)"),
    "load-npz-0-rows": A(xy(np.zeros(0, int), np.ones((0, 3))), LOAD, "no examples"),
    "npz-0-features": A(xy(np.zeros(3, int), np.ones((3, 0))), NPZ, "`x` has no features", "(3, 0)"),
    "npz-0-targets": A(xy(np.zeros((3, 0))), NPZ, "`y` has no targets", "(3, 0)"),
    # 5. IDX: the header is checked first, then exactly the bytes it describes are read, never more
    "idx-gz-20MB-after-10-bytes": A(gz("a.gz", lambda: idx(np.zeros(10, np.uint8)) + bytes(MB20)), IDX,
                                    "trailing bytes", "header says 10 ubyte", "more than 10", max_mb=2),
    "idx-gz-bad-magic-then-20MB": A(gz("a.gz", lambda: b"\1\2\10\1" + bytes(MB20)), IDX, "bad magic number", max_mb=2),
    "idx-gz-header-claims-10GB": A(gz("a.gz", lambda: idx_header((10**5, 10**5)) + bytes(100)), IDX,
                                   "100000x100000 ubyte", "a gzip file of", "decompresses to at most", max_mb=2),
    "idx-past-memory": A(raw("a.idx", idx(np.zeros((4, 500), np.uint8))),
                         patched(files, "_memory_limit", lambda: 1000, IDX),
                         "4x500 ubyte = 2000 bytes", "more than this machine's"),
    "idx-plain-20MB-after-10-bytes": A(raw("a.idx", idx(np.zeros(10, np.uint8)), sparse_tail=MB20), IDX,
                                       "trailing bytes", "file has 20000010 after the 8-byte header", max_mb=2),
    # 6. devices and pipes: refused unless asked for, and even then read only as far as the format allows
    "load-csv-link-to-dev-zero": A(link("a.csv", "/dev/zero"), LOAD, "character device", "/dev/zero",
                                   "allow_special_files=True", posix=True),
    "idx-link-to-dev-urandom": A(link("a.idx", "/dev/urandom"), IDX, "is a character device", posix=True),
    "npz-link-to-dev-zero": A(link("a.npz", "/dev/zero"), NPZ, "is a character device", posix=True),
    "mnist-link-to-dev-urandom": A(mnist(b"", idx(np.zeros(3, np.uint8)), link_images_to="/dev/urandom"), MNIST,
                                   "train-images-idx3-ubyte", "is a character device", posix=True),
    "csv-named-pipe": A(pipe(b"1,0\n2,1\n"), CSV, "is a named pipe (FIFO)", "allow_special_files=True", posix=True),
    "csv-endless-pipe-allowed": A(pipe(b"1,0\n" * 100_000),
                                  patched(csv_format, "_SPECIAL_FILE_LIMIT", 10**5, special(CSV)),
                                  "more than 100000 bytes", "not regular", posix=True),
    "idx-dev-zero-allowed": A(link("a.idx", "/dev/zero"), special(IDX), "unknown dtype code 0x00", posix=True),
    "idx-pipe-claims-past-limit": A(pipe(idx_header((2000, 1000)), "a.idx"),
                                    patched(idx_format, "_SPECIAL_FILE_LIMIT", 10**6, special(IDX)),
                                    "2000x1000 ubyte", "more than the 1000000 bytes", posix=True),
    # 7. values that would reach training as NaN or inf, whatever the message said
    "npz-feature-beyond-float32": A(xy([0, 1], [[1.0], [1e39]]), NPZ, "`x` holds 1e+39", "row 1", "float32 range"),
    "npz-target-beyond-float32": A(xy([1.0, -1e300]), NPZ, "`y` holds -1e+300", "float32 range"),
    "npz-nan-feature-row-named": A(xy([0, 1, 2], [[1.0], [np.nan], [np.inf]]), NPZ, "NaN or infinity",
                                   "2 values, the first in row 1"),
}


@pytest.mark.parametrize("case", [pytest.param(k, marks=v.marks) for k, v in ATTACKS.items()])
def test_attack_is_a_clear_error(tmp_path, case):
    attack = ATTACKS[case]
    path = attack.make(tmp_path)
    tracemalloc.start()
    try:
        with raises(path.name, *attack.fragments):
            finishes(attack.call, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if attack.max_mb is not None:
        assert peak < attack.max_mb * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"


# Rejected before issue 13 already, kept here so that they stay rejected (these rows do not fail on the old code).
ALREADY_REJECTED = {
    "npz-nan-feature": (xy([0, 1], [[np.nan], [1.0]]), NPZ, "NaN or infinity"),
    "npz-inf-target": (xy([0.5, np.inf]), NPZ, "NaN or infinity"),
    "csv-nan-feature": (csv("1,0\nnan,1\n"), CSV, "line 2, column 1", "not a finite number"),
    "csv-inf-target": (csv("1,0.5\n2,-inf\n"), CSV, "line 2, column 2", "not a finite number"),
    "npz-negative-label": (xy([0, -1]), NPZ, "must be >= 0"),
    "csv-negative-label": (csv("1,0\n2,-1\n"), CSV, "-1"),
}


@pytest.mark.parametrize("case", list(ALREADY_REJECTED))
def test_non_finite_values_and_negative_labels_stay_rejected(tmp_path, case):
    make, call, *fragments = ALREADY_REJECTED[case]
    path = make(tmp_path)
    with raises(path.name, *fragments):
        call(path)


# ---------------------------------------------------------------- what must keep working


@posix_only
def test_special_files_load_when_allowed(tmp_path):
    path = pipe(b"a,b\n1.5,0\n2.5,1\n", "pipe.csv")(tmp_path)
    x, y = finishes(special(data.load_csv), path)
    np.testing.assert_array_equal(x, [[1.5], [2.5]])
    np.testing.assert_array_equal(y, [0, 1])
    path = pipe(gzip.compress(idx(np.arange(6, dtype=np.uint8).reshape(2, 3))), "pipe.idx.gz")(tmp_path)
    np.testing.assert_array_equal(finishes(special(data.load_idx), path), [[0, 1, 2], [3, 4, 5]])


def test_labels_at_the_int32_edge_and_wide_label_types_still_load(tmp_path):
    path = tmp_path / "edge.npz"
    np.savez(path, x=np.ones((2, 1)), y=np.array([0, 2**31 - 1], np.uint64))
    assert data.load_npz(path).y.tolist() == [0, 2**31 - 1]
    (tmp_path / "edge.csv").write_text(f"1,{2**31 - 1}\n2,0\n")
    assert data.load_csv(tmp_path / "edge.csv").y.tolist() == [2**31 - 1, 0]


def test_npz_compressed_fortran_and_big_endian_arrays_read_back_exactly(tmp_path):
    x = np.asfortranarray(np.arange(12, dtype=">f8").reshape(4, 3))
    y = np.array([3, 0, 1, 2], ">u2")
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    got = data.load_npz(tmp_path / "c.npz")
    np.testing.assert_array_equal(got.x, x)
    np.testing.assert_array_equal(got.y, y)


def test_csv_streaming_keeps_line_numbers_bom_and_crlf(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,0\r\n\r\n2,x\r\n")
    with raises("crlf.csv", "line 4, column 2", "'x'"):
        data.load_csv(path)
    path.write_bytes(b"1,0\n2,\xff\n")
    with raises("crlf.csv", "not UTF-8", "at byte 6"):
        data.load_csv(path)


@posix_only
def test_a_pipe_whose_writer_finishes_at_once_loads(tmp_path, monkeypatch):
    # The loader once opened an allowed pipe twice (non-blocking to check it, then blocking): a writer that wrote
    # everything and closed in between left the second open waiting forever. A reader slowed down after its
    # first open (as a busy machine may do) made that certain; one blocking open has no such window.
    fstat = os.fstat

    def slow_fstat(fd):
        time.sleep(0.2)
        return fstat(fd)

    monkeypatch.setattr(os, "fstat", slow_fstat)
    path = pipe(b"1,0\n2,1\n", "quick.csv")(tmp_path)
    x, _ = finishes(special(data.load_csv), path, seconds=10)
    np.testing.assert_array_equal(x, [[1.0], [2.0]])
