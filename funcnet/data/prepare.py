"""Preparing data for training: split (shuffled train/val/test) and standardize (the training statistics)."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

import numpy as np

from funcnet.data.types import Split, _fail, _real, _seed


def _fraction(name: str, value: object) -> float:
    return _real("split", name, value, lambda f: 0 <= f < 1, "a number in [0, 1)")


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


def _renamed(old: str, new: str) -> Callable:
    """A decorator: the function takes its keyword ``new`` also as ``old``, its deprecated name, for one release;
    ``old`` warns with a DeprecationWarning naming ``new``, and both at once are refused."""

    def wrap(fn: Callable) -> Callable:
        where = f"funcnet.data.{fn.__name__}"

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise _fail(where, f"got both `{new}` and `{old}`, its deprecated name; pass `{new}` only")
                warnings.warn(f"{where}: `{old}` is deprecated, use `{new}` (`{old}` goes in the next release)",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call

    return wrap


@_renamed("eps", "epsilon")
def standardize(train: Split, *others: Split, epsilon: float = 1e-8) -> tuple:
    """Zero mean and unit variance per feature, with the training split's statistics.

    The mean and standard deviation come from ``train.x`` alone and are
    applied unchanged to every split, so nothing about the validation or test
    data leaks into the features. A feature whose training standard deviation
    is below ``epsilon`` (a constant, such as the always-blank corner pixels
    of the digits) is only centred: its divisor is 1, not 0. Labels and
    targets are left as they are.

    ``epsilon`` is named as in :func:`funcnet.nn.standardize`; its old name,
    ``eps``, still works for one release and warns with a ``DeprecationWarning``.

    Args:
      train: the training split.
      *others: more splits (validation, test) to normalise the same way.
      epsilon: standard deviations below this count as zero.

    Returns:
      ``(train, *others, mean, std)``: the normalised splits, then the float32
      mean and divisor of shape ``(features,)``.

    Raises:
      DataError: the training split is empty, the splits' feature counts differ,
        a feature is NaN or infinite, ``epsilon`` is not a finite number > 0, or
        both ``epsilon`` and ``eps`` are given.
    """
    fn = "funcnet.data.standardize"
    ok = isinstance(epsilon, (int, float, np.integer, np.floating)) and not isinstance(epsilon, (bool, np.bool_))
    if not (ok and math.isfinite(epsilon) and epsilon > 0):  # <= 0 or NaN divides constant features by 0
        raise _fail(fn, f"`epsilon` must be a finite number > 0, got {epsilon!r}")
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
            fn,
            f"the training features must be a non-empty (n, features) array, got shape {x.shape}",
        )
    for i, other in enumerate(others):
        shape = np.shape(other.x)
        if len(shape) != 2 or shape[1] != x.shape[1]:
            raise _fail(
                fn,
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
    std = np.where(std < epsilon, 1.0, std)

    def apply(s: Split, a: np.ndarray) -> Split:
        return Split(((a - mean) / std).astype(np.float32), s.y)

    return (*map(apply, (train, *others), xs), mean.astype(np.float32), std.astype(np.float32))
