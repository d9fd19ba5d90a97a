"""The types of funcnet.data (DataError, Split, Dataset) and the argument checks every part of it shares."""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np

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


def _integer(fn: str, name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (1 or 0): not a bool, not a float that NumPy would refuse with its own
    words; otherwise a DataError naming ``funcnet.data.<fn>`` and the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise _fail(f"funcnet.data.{fn}", f"`{name}` must be a {kind} integer, got {value!r}")
    return int(value)


def _seed(fn: str, value: object) -> int:
    """A NumPy seed: a non-negative integer."""
    return _integer(fn, "seed", value, minimum=0)


def _real(fn: str, name: str, value: object, ok: Callable[[float], bool], must: str) -> float:
    """``float(value)`` if ``ok`` accepts it (a value float() refuses counts as NaN), otherwise a DataError saying
    that ``name`` must be ``must``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not ok(number):
        raise _fail(f"funcnet.data.{fn}", f"`{name}` must be {must}, got {value!r}")
    return number
