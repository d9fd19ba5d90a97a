"""The bundled and synthetic datasets: load_digits, xor, spiral and sine."""

from __future__ import annotations

import math

import numpy as np

from funcnet.data.types import Split, _fail, _integer, _real, _seed


def _noise(fn: str, value: object) -> float:
    return _real(fn, "noise", value, lambda noise: math.isfinite(noise) and noise >= 0, "a finite number >= 0")


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
    n = _integer("xor", "n", n)
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
    n = _integer("spiral", "n_per_class", n_per_class)
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
    n = _integer("sine", "n", n)
    noise = _noise("sine", noise)
    rng = np.random.default_rng(_seed("sine", seed))
    x = rng.uniform(-np.pi, np.pi, (n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return Split(x.astype(np.float32), y.astype(np.float32))
