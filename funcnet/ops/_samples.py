"""Input samplers for the op declarations: valid float64 inputs away from kinks, and extremes.

A sampler ``sample(rng, case) -> args`` draws NumPy arrays (integer labels stay
integer) for one registry case (a shape, or a tuple of shapes). Samples stay at
least ``gap`` away from every kink, so that centred finite differences see a
smooth function there; the conventions at the kinks are checked separately.
"""

from __future__ import annotations

import numpy as np

ACTIVATION_SHAPES = ((), (5,), (3, 4), (2, 3, 4))
SOFTMAX_SHAPES = ((5,), (3, 4), (2, 3, 4))
BROADCAST_PAIRS = (((), ()), ((5,), (5,)), ((3, 4), (4,)), ((4, 1), (1, 3)), ((), (2, 3)))
CLASS_SHAPES = ((3,), (4, 3), (2, 3, 5))
SAME_SHAPE_PAIRS = (((), ()), ((5,), (5,)), ((4, 3), (4, 3)))
LAYOUTS = ((((3, 4), (4,)),), (((3, 4), (4,)), ((4, 2), (2,))))


def normal(rng, shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def away_from(rng, shape, points=(0.0,), gap=0.05, scale=2.0):
    """Normal draws, each nudged at least ``gap`` away from every kink point."""
    x = normal(rng, shape, scale)
    for p in points:
        d = x - p
        x = np.where(np.abs(d) < gap, p + np.where(d >= 0, gap, -gap) + d, x)
    return x


def unary(points=None, scale=2.0):
    if points is None:
        return lambda rng, shape: (normal(rng, shape, scale),)
    return lambda rng, shape: (away_from(rng, shape, points, scale=scale),)


def pair(rng, shapes):
    return tuple(normal(rng, s) for s in shapes)


def untied_pair(rng, shapes):
    x = normal(rng, shapes[0])
    y = normal(rng, shapes[1])
    # keep |x - y| >= 0.05 everywhere after broadcasting, so no probe meets a tie
    d = np.broadcast_to(y, np.broadcast_shapes(x.shape, y.shape)) - x
    if np.any(np.abs(d) < 0.05):
        return untied_pair(rng, shapes)
    return x, y


def with_slope(rng, shapes):
    x_shape, alpha_shape = shapes
    return away_from(rng, x_shape), rng.uniform(0.05, 0.5, alpha_shape)


def probs_and_labels(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0.0, 1.0, shape)


def logits_and_soft_labels(rng, shape):
    return normal(rng, shape, 2.0), rng.uniform(0.0, 1.0, shape)


def logits_and_distribution(rng, shape):
    labels = rng.uniform(0.1, 1.0, shape)
    return normal(rng, shape, 2.0), labels / labels.sum(-1, keepdims=True)


def logits_and_classes(rng, shape):
    return normal(rng, shape, 2.0), rng.integers(0, shape[-1], shape[:-1])


def svm_scores(rng, shape, margin=1.0):
    scores, labels = logits_and_classes(rng, shape)
    correct = np.take_along_axis(scores, labels[..., None], -1)
    if np.any(np.abs(scores - correct + margin) < 0.05):
        return svm_scores(rng, shape, margin)
    return scores, labels


def params(rng, layout):
    """A parameter pytree ``{"dense_i": {"w": ..., "b": ...}}`` plus a PReLU slope."""
    tree = {f"dense_{i}": {"w": away_from(rng, w), "b": normal(rng, b)} for i, (w, b) in enumerate(layout)}
    tree["prelu"] = {"alpha": rng.uniform(0.05, 0.5, ())}
    return (tree,)


def extreme_activation():
    return (np.array([-1e4, -50.0, -1.0, 0.5, 50.0, 1e4]),)


def extreme_pair():
    return np.array([-1e4, 1e4, 3.0]), np.array([1e4, -1e4, -3.0])


def extreme_logits():
    return np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
