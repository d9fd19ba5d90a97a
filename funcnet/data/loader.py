"""Loading a dataset by name or path in one call: load, and the NAMES it knows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from funcnet.data.csv import _read_csv
from funcnet.data.idx import load_mnist_dir
from funcnet.data.npz import load_npz
from funcnet.data.prepare import split, standardize
from funcnet.data.synthetic import load_digits, sine, spiral, xor
from funcnet.data.types import Dataset, PathLike, _fail, _seed

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
        an unsupported kind, a class label that would leave most classes
        without an example (more classes than examples and than twice the
        distinct labels; the message names its line or example), or any
        error of the loaders and :func:`split`.
    """
    if isinstance(name_or_path, bytes):
        name_or_path = os.fsdecode(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):  # "" would be the cwd
        raise _fail("funcnet.data.load", f"expected a dataset name ({', '.join(NAMES)}) or a path, "
                    f"got {name_or_path!r}")
    seed = _seed("load", seed)
    test = None
    place = lambda i: f"example {i}"  # noqa: E731 - where the i-th label is, for messages
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
            (data, lines), name = _read_csv(path, -1, allow_special_files), path.stem
            place = lambda i: f"line {lines[i]}"  # noqa: E731
        else:
            raise _fail(path, "unsupported kind of file: expected .npz, .csv, or a directory of MNIST IDX files")

    num_classes = None
    if np.issubdtype(data.y.dtype, np.integer):
        num_classes = _classes(name_or_path, data.y if test is None else np.concatenate([data.y, test.y]), place)
    if test is None:
        train, val, test = split(data.x, data.y, val_fraction, test_fraction, seed)
    else:
        train, val, _ = split(data.x, data.y, val_fraction, 0.0, seed)
    train, val, test, mean, std = standardize(train, val, test)
    return Dataset(train, val, test, num_classes, name, mean, std)


def _classes(where: PathLike, labels: np.ndarray, place) -> int:
    """The number of classes, ``max label + 1``, after refusing a label that leaves most classes without an
    example: more classes than examples and than twice the distinct labels is a typo (one label 999999 made a
    million-output network), not a classification."""
    num_classes = int(labels.max()) + 1
    distinct = len(np.unique(labels))
    if num_classes > max(len(labels), 2 * distinct):
        i = int(np.argmax(labels))
        raise _fail(where, f"{place(i)}: class label {labels[i]} makes {num_classes:,} classes for {len(labels)} "
                    f"examples with {distinct} distinct labels, so most classes would have no example; number the "
                    f"classes from 0 to {distinct - 1}, or write regression targets as floats ({labels[i]}.0)")
    return num_classes
