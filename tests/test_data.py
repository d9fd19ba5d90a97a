"""funcnet.data: bundled and synthetic sets, file loaders that name what is wrong, split and standardize."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from funcnet import data
from funcnet.data import DataError, Split

# IDX dtype codes, written out here independently of funcnet.data.
IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def raises(*fragments):
    """pytest.raises(DataError) whose one-line message must contain every fragment."""
    return pytest.raises(DataError, match="^(?=[^\n]*$)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file holding ``array``: magic number, big-endian uint32 dims, big-endian data."""
    array = np.asarray(array)
    magic = bytes([0, 0, IDX_CODES[array.dtype.name], array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return magic + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, compress=False):
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(directory, n_train=12, n_test=None, rows=4, cols=3, gz=False, seed=0):
    """A tiny MNIST-layout directory; returns the images and labels written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(exist_ok=True)
    written = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        if n is None:
            continue
        images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{stem}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(directory / f"{stem}-labels-idx1-ubyte{suffix}", labels, gz)
        written[stem] = (images, labels)
    return written


# ---------------------------------------------------------------- bundled and synthetic


def test_digits_shape_and_classes():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert set(np.unique(y)) == set(range(10))
    assert x.min() == 0.0 and x.max() == 1.0


def test_bundled_digits_are_scikit_learns_digits_without_importing_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)  # any import of scikit-learn would fail
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)
    x, y = data.load_digits()
    monkeypatch.undo()
    datasets = pytest.importorskip("sklearn.datasets")
    theirs = datasets.load_digits()
    np.testing.assert_array_equal(x, np.asarray(theirs.data, np.float32) / 16.0)
    np.testing.assert_array_equal(y, theirs.target)


@pytest.mark.parametrize(
    "make, n, classes",
    [
        (lambda seed: data.xor(seed=seed), 200, 2),
        (lambda seed: data.spiral(seed=seed), 200, 2),
        (lambda seed: data.spiral(n_per_class=50, arms=3, seed=seed), 150, 3),
    ],
    ids=["xor", "spiral", "spiral3"],
)
def test_synthetic_classification_is_deterministic_and_balanced(make, n, classes):
    a, b, other = make(0), make(0), make(1)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, other.x)
    assert a.x.shape == (n, 2) and a.x.dtype == np.float32 and a.y.dtype == np.int32
    assert np.bincount(a.y).tolist() == [n // classes] * classes


def test_xor_labels_are_xor_of_the_quadrant_signs():
    x, y = data.xor(n=400, noise=0.1, seed=3)
    np.testing.assert_array_equal(y, (x[:, 0] > 0) ^ (x[:, 1] > 0))


def test_spiral_arms_are_interleaved_not_linearly_separable():
    x, y = data.spiral(n_per_class=200, arms=2, noise=0.0)
    # Least-squares linear classifier on the raw coordinates is near chance.
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, 2.0 * y - 1, rcond=None)[0]
    assert ((a @ w > 0) == y).mean() < 0.75
    assert np.abs(x).max() <= 1.0 + 1e-6


def test_sine_is_regression_of_shape_n_by_1():
    x, y = data.sine(n=50, noise=0.0, seed=2)
    assert x.shape == y.shape == (50, 1) and y.dtype == np.float32
    assert x.min() >= -np.pi and x.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    np.testing.assert_array_equal(data.sine(seed=4).x, data.sine(seed=4).x)


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: data.spiral(arms=4), ("funcnet.data.spiral", "`arms` must be 2 or 3", "4")),
        (lambda: data.xor(n=0), ("funcnet.data.xor", "`n` must be a positive integer", "0")),
        (lambda: data.sine(noise=-1), ("funcnet.data.sine", "`noise`", "-1")),
        (lambda: data.spiral(n_per_class=2.5), ("funcnet.data.spiral", "`n_per_class`", "2.5")),
    ],
)
def test_synthetic_bad_arguments(call, fragments):
    with raises(*fragments):
        call()


# ---------------------------------------------------------------- split and standardize


def test_split_sizes_disjoint_and_deterministic():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    y = np.arange(100, dtype=np.int32)
    train, val, test = data.split(x, y, val_fraction=0.2, test_fraction=0.1, seed=5)
    assert (len(train.x), len(val.x), len(test.x)) == (70, 20, 10)
    ids = np.concatenate([train.y, val.y, test.y])
    assert sorted(ids.tolist()) == list(range(100))  # disjoint and complete
    for s in (train, val, test):
        np.testing.assert_array_equal(s.x[:, 0], s.y)  # rows stay paired
    again = data.split(x, y, 0.2, 0.1, seed=5)
    for s, t in zip((train, val, test), again):
        np.testing.assert_array_equal(s.y, t.y)
    assert not np.array_equal(data.split(x, y, 0.2, 0.1, seed=6)[0].y, train.y)
    assert not np.array_equal(train.y, np.sort(train.y))  # shuffled


def test_split_zero_fraction_gives_empty_split_and_small_fraction_at_least_one():
    x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int32)
    train, val, test = data.split(x, y, val_fraction=0.0, test_fraction=0.01)
    assert val.x.shape == (0, 3) and len(test.x) == 1 and len(train.x) == 9


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(val_fraction=1.2), ("funcnet.data.split", "`val_fraction`", "[0, 1)", "1.2")),
        (dict(test_fraction=-0.1), ("funcnet.data.split", "`test_fraction`", "-0.1")),
        (dict(val_fraction=0.5, test_fraction=0.5), ("funcnet.data.split", "must be < 1", "0.5 + 0.5")),
    ],
)
def test_split_rejects_bad_fractions(kwargs, fragments):
    with raises(*fragments):
        data.split(np.zeros((10, 2)), np.zeros(10), **kwargs)


def test_split_rejects_mismatched_rows_and_too_few_examples():
    with raises("funcnet.data.split", "same number of rows", "(10, 2)", "(9,)"):
        data.split(np.zeros((10, 2)), np.zeros(9))
    with raises("funcnet.data.split", "2 examples leave none for training"):
        data.split(np.zeros((2, 2)), np.zeros(2), 0.3, 0.3)


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = Split((rng.normal(3.0, 2.0, (500, 4))).astype(np.float32), np.zeros(500, np.int32))
    shifted = Split(train.x[:100] + 10.0, np.zeros(100, np.int32))
    train_s, test_s, mean, std = data.standardize(train, shifted)
    np.testing.assert_allclose(train_s.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train_s.x.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(mean, train.x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, train.x.std(0), rtol=1e-5)
    # The shifted test split keeps its shift, in units of the training std: not re-centred.
    np.testing.assert_allclose(test_s.x, (shifted.x - mean) / std, rtol=1e-5, atol=1e-5)
    assert np.all(test_s.x.mean(0) > 3.0)
    assert test_s.y is shifted.y


def test_standardize_constant_feature_is_divided_by_one():
    x = np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0]], np.float32)
    (train, other, mean, std) = data.standardize(Split(x, None), Split(x + 1, None))
    np.testing.assert_array_equal(std, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(mean, [0.0, 2.0, 5.0])
    np.testing.assert_array_equal(train.x, [[0, -1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(other.x[:, 0], [1, 1])  # a constant shifted by 1 stays 1, not inf
    assert np.isfinite(other.x).all()


def test_standardize_digits_blank_corner_pixels_stay_finite():
    train, test, mean, std = data.standardize(*data.split(*data.load_digits())[::2])
    assert np.isfinite(train.x).all() and np.isfinite(test.x).all()
    assert std[0] == 1.0 and mean[0] == 0.0  # pixel (0, 0) is always blank


def test_standardize_rejects_mismatched_features():
    with raises("funcnet.data.standardize", "(3, 2)", "(n, 4)"):
        data.standardize(Split(np.zeros((5, 4)), None), Split(np.zeros((3, 2)), None))


def test_standardize_epsilon_is_a_threshold_on_the_training_std():
    x = np.array([[0.0, 0.0], [0.2, 2.0]], np.float32)  # training stds 0.1 and 1
    *_, std = data.standardize(Split(x, None), epsilon=0.5)
    np.testing.assert_allclose(std, [1.0, 1.0])  # 0.1 < epsilon: divided by 1
    *_, std = data.standardize(Split(x, None), epsilon=0.05)
    np.testing.assert_allclose(std, [0.1, 1.0], rtol=1e-6)


def test_standardize_eps_is_a_deprecated_alias_of_epsilon():
    x = np.array([[0.0, 0.0], [0.2, 2.0]], np.float32)
    with pytest.warns(DeprecationWarning, match="funcnet.data.standardize: `eps` is deprecated, use `epsilon`") as w:
        old = data.standardize(Split(x, None), eps=0.5)
    assert len(w) == 1 and w[0].filename == __file__  # points at the caller
    new = data.standardize(Split(x, None), epsilon=0.5)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a.x if isinstance(a, Split) else a, b.x if isinstance(b, Split) else b)
    with pytest.warns(DeprecationWarning), raises("funcnet.data.standardize", "`epsilon`", "got 0"):
        data.standardize(Split(x, None), eps=0)  # the alias's value is checked as epsilon's
    with raises("funcnet.data.standardize", "got both `epsilon` and `eps`", "pass `epsilon` only"):
        data.standardize(Split(x, None), epsilon=0.5, eps=0.5)
    with raises("funcnet.data.standardize", "got both"):
        data.standardize(Split(x, None), epsilon=1e-8, eps=0.5)  # even epsilon's default, given explicitly
    with pytest.raises(TypeError, match="unexpected keyword argument 'epsilom'"):
        data.standardize(Split(x, None), epsilom=0.5)


# ---------------------------------------------------------------- IDX


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(list(IDX_CODES)),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    compress=st.booleans(),
    name=st.sampled_from(["a.idx", "a.idx.gz", "noext"]),
)
def test_idx_round_trip(tmp_path, array, compress, name):
    path = write_idx(tmp_path / name, array, compress)
    back = data.load_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.dtype.isnative
    assert back.tobytes() == array.tobytes()  # bit-exact, NaNs included


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_ubyte_and_float_files_read_back_exactly(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    floats = np.array([[1.5, -2.25], [np.pi, 1e30]], np.float32)
    np.testing.assert_array_equal(data.load_idx(write_idx(tmp_path / "u.idx", images, compress)), images)
    np.testing.assert_array_equal(data.load_idx(write_idx(tmp_path / "f.idx", floats, compress)), floats)


def test_idx_gzip_detected_by_magic_bytes_not_name(tmp_path):
    labels = np.array([7, 2, 1], np.uint8)
    path = tmp_path / "labels.idx"  # gzip content, no .gz in the name
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(data.load_idx(path), labels)


def test_idx_header_bytes_are_exactly_as_documented(tmp_path):
    # 0x00 0x00 0x08 0x01, dim 3 as big-endian uint32, then the bytes 1 2 3.
    path = tmp_path / "hand.idx"
    path.write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x01\x02\x03")
    np.testing.assert_array_equal(data.load_idx(path), [1, 2, 3])
    path.write_bytes(b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x01\x00\xff\xfe")  # int16, big-endian
    np.testing.assert_array_equal(data.load_idx(path), [256, -2])


GOOD = idx_bytes(np.zeros((6, 2, 2), np.uint8))  # 4 + 12 header bytes + 24 data bytes
BROKEN_IDX = {
    "empty": (b"", ["empty file"]),
    "short_magic": (b"\x00\x00", ["truncated header", "2 bytes"]),
    "bad_magic": (b"\x01\x02\x08\x01" + GOOD[4:], ["bad magic number", "0x01020801", "first two bytes must be zero"]),
    "bad_dtype": (b"\x00\x00\x07\x03" + GOOD[4:], ["bad magic number", "unknown dtype code 0x07", "0x08 ubyte"]),
    "zero_dims": (b"\x00\x00\x08\x00", ["zero dimensions"]),
    "truncated_header": (GOOD[:10], ["truncated header", "3 dimensions need 16 bytes", "file has 10"]),
    "truncated_data": (GOOD[:-5], ["truncated", "header says 6x2x2 ubyte = 24 bytes of data", "file has 19"]),
    "trailing_bytes": (GOOD + b"\x00\x01", ["trailing bytes", "24 bytes of data", "file has 26"]),
    "corrupt_gzip": (gzip.compress(GOOD)[:-12], ["corrupt gzip stream"]),
}


@pytest.mark.parametrize("case", list(BROKEN_IDX))
def test_broken_idx_files_name_the_file_and_the_problem(tmp_path, case):
    content, fragments = BROKEN_IDX[case]
    path = tmp_path / f"{case}.idx"
    path.write_bytes(content)
    with raises(f"{case}.idx", *fragments):
        data.load_idx(path)


def test_idx_truncated_float_data_states_item_size(tmp_path):
    path = tmp_path / "weights.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.float32))[:-4])
    with raises("weights.idx", "truncated", "2x3 float (4 bytes each) = 24 bytes", "file has 20"):
        data.load_idx(path)


def test_idx_flipped_bytes_inside_gzip_are_a_corrupt_stream(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    blob[-6] ^= 0xFF  # inside the CRC32/size trailer
    path = tmp_path / "crc.idx.gz"
    path.write_bytes(bytes(blob))
    with raises("crc.idx.gz", "corrupt gzip stream"):
        data.load_idx(path)


def test_idx_missing_file_and_gz_name_without_gzip(tmp_path):
    with raises("nothing-here.idx", "no such file"):
        data.load_idx(tmp_path / "nothing-here.idx")
    with raises(str(tmp_path), "is a directory"):
        data.load_idx(tmp_path)
    (tmp_path / "fake.idx.gz").write_bytes(b"hello world")
    with raises("fake.idx.gz", "bad magic number", "not gzip either"):
        data.load_idx(tmp_path / "fake.idx.gz")


# ---------------------------------------------------------------- MNIST directory


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_mnist_dir_reads_train_and_test(tmp_path, gz):
    written = write_mnist(tmp_path / "mnist", n_train=12, n_test=5, gz=gz)
    train, test = data.load_mnist_dir(tmp_path / "mnist")
    images, labels = written["train"]
    assert train.x.shape == (12, 12) and train.x.dtype == np.float32
    np.testing.assert_allclose(train.x, images.reshape(12, 12) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(train.y, labels)
    assert train.y.dtype == np.int32
    assert test.x.shape == (5, 12) and 0 <= test.x.min() and test.x.max() <= 1


def test_mnist_dir_without_test_pair(tmp_path):
    write_mnist(tmp_path, n_train=7)
    train, test = data.load_mnist_dir(tmp_path)
    assert test is None and len(train.y) == 7


def test_mnist_dir_accepts_dotted_names(tmp_path):
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([0, 1, 2], np.uint8))
    assert len(data.load_mnist_dir(tmp_path)[0].y) == 3


def test_mnist_dir_count_mismatch_names_the_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with raises("train-labels-idx1-ubyte", "4 labels for 5 images", "train-images-idx3-ubyte"):
        data.load_mnist_dir(tmp_path)


def test_mnist_dir_missing_files(tmp_path):
    with raises("no-dir", "no such directory"):
        data.load_mnist_dir(tmp_path / "no-dir")
    with raises(str(tmp_path), "no train-images-idx3-ubyte[.gz]", "no train-labels-idx1-ubyte[.gz]"):
        data.load_mnist_dir(tmp_path)
    write_mnist(tmp_path, n_train=4)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 4, 3), np.uint8), compress=True)
    with raises("has t10k-images-idx3-ubyte.gz but no t10k-labels-idx1-ubyte[.gz]"):
        data.load_mnist_dir(tmp_path)


def test_mnist_dir_rejects_non_image_files_and_broken_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with raises("train-images-idx3-ubyte", "expected ubyte images of shape (n, rows, cols)", "(3, 4)"):
        data.load_mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1])
    with raises("train-images-idx3-ubyte", "truncated", "3x2x2"):
        data.load_mnist_dir(tmp_path)


# ---------------------------------------------------------------- npz and csv


def test_npz_reads_and_flattens(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.arange(24).reshape(4, 3, 2), y=np.array([0, 1, 1, 0], np.int64))
    x, y = data.load_npz(path)
    assert x.shape == (4, 6) and x.dtype == np.float32 and y.dtype == np.int32
    np.savez(path, features=np.ones((3, 2)), target=np.array([0.5, 1.5, 2.5]))
    x, y = data.load_npz(path, x_key="features", y_key="target")
    assert y.shape == (3, 1) and y.dtype == np.float32


def test_npz_missing_key_lists_the_keys_present(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, inputs=np.ones((3, 2)), y=np.zeros(3))
    with raises("keys.npz", "no array named 'x'", "'inputs', 'y'"):
        data.load_npz(path)


def test_npz_never_unpickles_and_rejects_non_npz(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with raises("objects.npz", "Python objects", "never loaded"):
        data.load_npz(path)
    (tmp_path / "text.npz").write_text("not a zip")
    with raises("text.npz", "not an .npz archive"):
        data.load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with raises("single.npy", "single .npy array"):
        data.load_npz(tmp_path / "single.npy")
    with raises("absent.npz", "no such file"):
        data.load_npz(tmp_path / "absent.npz")


def test_npz_row_mismatch_and_negative_labels(tmp_path):
    path = tmp_path / "rows.npz"
    np.savez(path, x=np.ones((3, 2)), y=np.zeros(4, np.int32))
    with raises("rows.npz", "`x` has 3 rows but `y` has 4"):
        data.load_npz(path)
    np.savez(path, x=np.ones((2, 2)), y=np.array([0, -1]))
    with raises("rows.npz", "must be >= 0", "-1"):
        data.load_npz(path)


def test_csv_with_header_and_integer_labels(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("a, b, label\n1.0, 2.0, 0\n\n3.5, -4, 2\n")
    x, y = data.load_csv(path)
    np.testing.assert_array_equal(x, [[1.0, 2.0], [3.5, -4.0]])
    np.testing.assert_array_equal(y, [0, 2])
    assert y.dtype == np.int32
    x, y = data.load_csv(path, label_column=0)
    np.testing.assert_array_equal(y, [[1.0], [3.5]])  # float labels: regression targets
    assert y.dtype == np.float32


def test_csv_ragged_row_names_the_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("x1,x2,y\n1,2,0\n3,4,1\n5,6\n")
    with raises("ragged.csv", "line 4 has 2 fields, expected 3 as on line 1"):
        data.load_csv(path)


def test_csv_non_numeric_value_names_the_line_and_column(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("1,2,0\n3,four,1\n")
    with raises("words.csv", "line 2, column 2", "'four' is not a finite number"):
        data.load_csv(path)


def test_csv_other_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n")
    with raises("bad.csv", "no data rows"):
        data.load_csv(path)
    path.write_text("1,2\n3,4\n")
    with raises("bad.csv", "label_column=5", "2 columns"):
        data.load_csv(path, label_column=5)
    with raises("missing.csv", "no such file"):
        data.load_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------- load


@pytest.mark.parametrize(
    "name, features, classes, n",
    [
        ("digits", 64, 10, 1797),
        ("xor", 2, 2, 200),
        ("spiral", 2, 2, 200),
        ("spiral3", 2, 3, 300),
        ("sine", 1, None, 200),
    ],
)
def test_load_each_name(name, features, classes, n):
    ds = data.load(name, seed=1)
    assert ds.name == name and ds.num_classes == classes
    assert sum(len(s.x) for s in (ds.train, ds.val, ds.test)) == n
    assert len(ds.test.x) == round(0.15 * n)
    assert ds.train.x.shape[1] == features and ds.mean.shape == ds.std.shape == (features,)
    np.testing.assert_allclose(ds.train.x.mean(0), 0, atol=1e-4)
    assert all(s.x.dtype == np.float32 for s in ds[:3])
    if classes is None:
        raw = data.sine(seed=1)
        np.testing.assert_allclose(ds.train.y, np.sin(ds.train.x * ds.std + ds.mean), atol=0.3)  # targets untouched
        assert set(ds.train.y[:, 0].tolist()) <= set(raw.y[:, 0].tolist())
    else:
        assert ds.train.y.dtype == np.int32
    again = data.load(name, seed=1)
    np.testing.assert_array_equal(ds.val.x, again.val.x)


def test_load_files(tmp_path):
    np.savez(tmp_path / "blobs.npz", x=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 4)
    ds = data.load(tmp_path / "blobs.npz", val_fraction=0.25, test_fraction=0.25)
    assert ds.name == "blobs" and ds.num_classes == 4
    assert (len(ds.train.x), len(ds.val.x), len(ds.test.x)) == (20, 10, 10)

    (tmp_path / "line.csv").write_text("x,y\n" + "".join(f"{i},{0.5 * i}\n" for i in range(20)))
    ds = data.load(str(tmp_path / "line.csv"))
    assert ds.num_classes is None and ds.train.y.shape[1] == 1
    np.testing.assert_allclose(ds.train.y[:, 0], 0.5 * (ds.train.x[:, 0] * ds.std[0] + ds.mean[0]), atol=1e-4)


def test_load_mnist_dir_uses_t10k_as_test_and_val_from_train(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10, gz=True)
    ds = data.load(tmp_path / "mnist", val_fraction=0.25)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert (len(ds.train.x), len(ds.val.x), len(ds.test.x)) == (30, 10, 10)
    _, test = data.load_mnist_dir(tmp_path / "mnist")
    np.testing.assert_array_equal(ds.test.y, test.y)  # the t10k files, in order
    np.testing.assert_allclose(ds.test.x, (test.x - ds.mean) / ds.std, atol=1e-5)

    write_mnist(tmp_path / "trainonly", n_train=20)
    ds = data.load(tmp_path / "trainonly")
    assert (len(ds.train.x), len(ds.val.x), len(ds.test.x)) == (14, 3, 3)


def test_load_unknown_name_lists_known_names(tmp_path):
    with raises("funcnet.data.load", "unknown dataset 'mnist-fashion'", "digits, xor, spiral, spiral3, sine"):
        data.load("mnist-fashion")
    (tmp_path / "notes.txt").write_text("1,2\n")
    with raises("notes.txt", "unsupported kind of file", ".npz", ".csv"):
        data.load(tmp_path / "notes.txt")
