"""Argument checks, mask expansion and input samplers shared by the loss families."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.ops import _samples as S
from funcnet.ops.binding import Op, with_optional
from funcnet.ops.inputs import (as_array, as_integer_array, canonical_axis, check_class_labels, float_input,
                                single_axis)


def check_same_shape(op: str, names_: tuple[str, str], a, b) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: `{names_[0]}` and `{names_[1]}` must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def float_labels(op: str, labels, like, name: str = "labels") -> jax.Array:
    """Labels as floats in ``like``'s dtype (as Optax casts them); integer and boolean labels get no gradient."""
    labels = as_array(op, name, labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        return labels.astype(like.dtype)
    return float_input(op, name, labels).astype(like.dtype)


def class_scores_and_labels(op: str, scores, labels):
    """Float ``scores`` with a class axis (the last) and integer ``labels`` checked and broadcast against them."""
    scores = float_input(op, "scores", scores)
    labels = as_integer_array(op, "labels", labels)
    if scores.ndim < 1:
        raise ValueError(f"{op}: `scores` must have a class axis, got a scalar")
    scores, labels, _, _ = class_axis_labels(op, scores, labels, -1, name="scores")
    return scores, labels


def expand_mask(op: str, where, axis, ndim: int) -> jax.Array:
    """Optax's rule: a mask with fewer dimensions than the logits gets the class axis (or axes) inserted."""
    if where.ndim == ndim:
        return where
    if axis is None:
        raise ValueError(
            f"{op}: with axis=None, `where` must have the logits' {ndim} dimensions, "
            f"got a mask of shape {tuple(where.shape)}"
        )
    try:
        return jnp.expand_dims(where, axis)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{op}: cannot insert the class axis {axis!r} into `where` of shape "
                         f"{tuple(where.shape)}: {err}") from None


def pair_of_shapes(case) -> tuple[tuple, tuple]:
    """A sampler case is one shape (both arguments) or a pair of shapes that broadcast."""
    if len(case) == 2 and all(isinstance(c, tuple) for c in case):
        return case
    return case, case


def normal_pair(rng, case):
    a, b = pair_of_shapes(case)
    return S.normal(rng, a), S.normal(rng, b)


def mask_optional(name: str, save: Callable, vjp: Callable, jvp: Callable) -> tuple[Op, Op]:
    """The rules without and with the optional boolean mask, ``save``'s last argument (two arrays before it)."""
    return tuple(with_optional(name, save, vjp, jvp, (True, True, masked)) for masked in (False, True))


def label_index(labels, classes):
    """Labels with negative values moved out of range, so that a gather reads NaN there, not x[-1].

    Narrow label dtypes (int8, uint8, ...) are widened to int32 first, so that ``classes`` fits.
    """
    labels = labels.astype(jnp.promote_types(labels.dtype, jnp.int32))
    return jnp.where(labels < 0, classes, labels)


def take(values, labels, axis):
    """``values`` at each example's label along ``axis``; NaN for a label outside ``[0, classes)``."""
    idx = jnp.expand_dims(label_index(labels, values.shape[axis]), axis)
    return jnp.take_along_axis(values, idx, axis=axis, mode="fill", fill_value=jnp.nan).squeeze(axis)


def at_labels(values, labels, shape, axis):
    """``values·onehot(labels)``: zeros of ``shape`` with each example's value at its label along ``axis``.

    Written as one scatter into zeros, added to ``g·softmax(x)`` afterwards,
    rather than as a dense one-hot product or a scatter into ``g·softmax(x)``
    itself. All three are the same arithmetic, but XLA's CPU scheduler orders
    the rest of a training step differently around each: on the benchmark MLPs
    the dense one-hot made the step 5-10% slower than autodiff, and the scatter
    into the product raised the step's temporary memory by 8 MiB (deep ReLU
    network, batch 4096). This form matches autodiff in both (``funcnet bench``).
    Labels outside ``[0, classes)`` add nothing here (negative labels do not
    wrap around); the caller makes their rows NaN.
    """
    moved = shape[:axis] + shape[axis + 1:] + (shape[axis],)
    classes = shape[axis]
    cols = label_index(labels.reshape(-1), classes)
    flat = jnp.zeros((cols.shape[0], classes), values.dtype)
    flat = flat.at[jnp.arange(cols.shape[0]), cols].set(values.reshape(-1), mode="drop")
    return jnp.moveaxis(flat.reshape(moved), -1, axis)


def class_axis_labels(op: str, logits, labels, axis: int, where=None, name: str = "logits"):
    """Check (logits, integer labels) along ``axis`` and broadcast them (and the mask) together.

    As in Optax (``take_along_axis``), the labels have the logits' dimensions
    less the class axis, and broadcast against the logits' other dimensions.
    """
    axis = single_axis(op, axis, logits.ndim, "the class axis is one axis here (optax also takes a tuple: "
                                                  "reshape those axes into one)")
    batch = logits.shape[:axis] + logits.shape[axis + 1:]
    try:
        if labels.ndim != len(batch):
            raise ValueError
        full = tuple(np.broadcast_shapes(batch, labels.shape))
    except ValueError:
        raise ValueError(
            f"{op}: labels of shape {tuple(labels.shape)} do not match {name} of shape "
            f"{tuple(logits.shape)}: expected labels of shape {tuple(batch)} "
            f"(the {name}' shape without class axis {axis}), or one that broadcasts with it"
        ) from None
    check_class_labels(op, labels, logits.shape[axis])
    if full != batch:
        shape = full[:axis] + (logits.shape[axis],) + full[axis:]
        logits = jnp.broadcast_to(logits, shape)
        where = None if where is None else jnp.broadcast_to(where, shape)
    return logits, jnp.broadcast_to(labels, full), where, axis
