"""Losses with hand-written backward rules (``funcnet.losses``).

Like ``optax.losses``, every loss returns per-example values with no reduction:
take ``.mean()`` (or a weighted sum) yourself. Names, signatures and values
follow Optax where Optax has the loss. Every floating-point argument gets a
gradient, the targets included (soft labels are allowed wherever Optax allows
them); integer labels get none.

Half-precision inputs are computed in float32 and the result rounded back.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.ops._common import (
    as_float_array,
    as_integer_array,
    canonical_axis,
    compute_dtype,
    is_concrete,
    promote_floats,
    saves_inputs,
    static_float,
    widen,
    with_forward_mode_hint,
)

__all__ = [
    "squared_error",
    "l2_loss",
    "binary_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "multiclass_svm_loss",
    "l1_penalty",
    "l2_penalty",
    "default_is_weight",
    "weight_leaves",
    "LOG_FLOOR",
]

#: ``binary_cross_entropy`` clamps each log term at this value (PyTorch's
#: ``BCELoss`` convention), so a probability of exactly 0 or 1 gives a finite loss.
LOG_FLOOR = -100.0


def _same_shape(op: str, names: tuple[str, str], a, b) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: `{names[0]}` and `{names[1]}` must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _float_labels(op: str, labels, like) -> jax.Array:
    """Labels as floats in ``like``'s dtype; integer labels are cast (and get no gradient)."""
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        return labels.astype(like.dtype)
    return promote_floats(op, labels=labels, like=like)[0].astype(like.dtype)


def _check_class_labels(op: str, labels, num_classes: int) -> None:
    """Range-check integer labels when their values are known at trace time.

    Under ``jit`` the values are not known; an out-of-range label then gives a
    NaN loss (``take_along_axis`` fills out-of-bounds reads with NaN).
    """
    if is_concrete(labels) and labels.size:
        values = np.asarray(labels)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{op}: labels must lie in [0, {num_classes}) for {num_classes} classes, "
                f"got values from {lo} to {hi}"
            )


# ------------------------------------------------------------ squared error / l2
def _scaled_squared_error_value(scale, predictions, targets):
    d = widen(predictions) - widen(targets)
    return (scale * d * d).astype(predictions.dtype)


_scaled_squared_error = jax.custom_vjp(_scaled_squared_error_value, nondiff_argnums=(0,))


def _sse_fwd(scale, predictions, targets):
    return _scaled_squared_error_value(scale, predictions, targets), (predictions, targets)


def _sse_bwd(scale, res, g):
    predictions, targets = res
    gp = 2 * scale * widen(g) * (widen(predictions) - widen(targets))
    return gp.astype(g.dtype), (-gp).astype(g.dtype)


_scaled_squared_error.defvjp(_sse_fwd, _sse_bwd)


def _squared(op: str, scale: float, predictions, targets):
    predictions = as_float_array(op, "predictions", predictions)
    if targets is None:
        targets = jnp.zeros_like(predictions)
    else:
        predictions, targets = promote_floats(op, predictions=predictions, targets=targets)
        _same_shape(op, ("predictions", "targets"), predictions, targets)
    return _scaled_squared_error(scale, predictions, targets)


@with_forward_mode_hint
def squared_error(predictions, targets=None):
    """Elementwise squared error ``(p - t)²``, as ``optax.losses.squared_error``.

    Derivative: d/dp = 2(p - t), d/dt = -2(p - t).
    Saves: both inputs. Kinks: none. ``targets=None`` means zeros.
    """
    return _squared("funcnet.losses.squared_error", 1.0, predictions, targets)


@with_forward_mode_hint
def l2_loss(predictions, targets=None):
    """Half the squared error ``½(p - t)²``, as ``optax.losses.l2_loss``.

    Derivative: d/dp = p - t, d/dt = -(p - t).
    Saves: both inputs. Kinks: none.
    """
    return _squared("funcnet.losses.l2_loss", 0.5, predictions, targets)


# ---------------------------------------------------------- binary cross-entropy
def _clamped_log(u):
    return jnp.maximum(jnp.log(u), LOG_FLOOR)


def _clamped_log_grad(u):
    # 1/u where the log is not clamped; the max() keeps float32 subnormals finite.
    tiny = jnp.finfo(u.dtype).tiny
    return jnp.where(jnp.log(u) > LOG_FLOOR, 1 / jnp.maximum(u, tiny), 0.0)


def _bce_value(probs, labels):
    p, t = widen(probs), widen(labels)
    return (-(t * _clamped_log(p) + (1 - t) * _clamped_log(1 - p))).astype(probs.dtype)


_bce = jax.custom_vjp(_bce_value)


def _bce_bwd(res, g):
    p, t = (widen(r) for r in res)
    gw = widen(g)
    gp = gw * (-t * _clamped_log_grad(p) + (1 - t) * _clamped_log_grad(1 - p))
    gt = gw * (_clamped_log(1 - p) - _clamped_log(p))
    return gp.astype(g.dtype), gt.astype(g.dtype)


_bce.defvjp(saves_inputs(_bce_value), _bce_bwd)


@with_forward_mode_hint
def binary_cross_entropy(probs, labels):
    """Binary cross-entropy on probabilities: ``-(t log p + (1 - t) log(1 - p))``.

    ``probs`` are probabilities in [0, 1] (e.g. a sigmoid output) and ``labels``
    are targets in [0, 1] of the same shape (integers 0/1 are accepted and get
    no gradient). Prefer :func:`sigmoid_binary_cross_entropy` on logits: it is
    exact where this one has to clamp.

    Each log is clamped at ``LOG_FLOOR = -100`` (PyTorch's convention), so p = 0
    or p = 1 gives a finite loss; a term whose coefficient is 0 contributes 0.

    Derivative: d/dp = -t/p + (1 - t)/(1 - p), d/dt = log(1 - p) - log p, each
    1/u taken as 0 where its log is clamped (the clamped function is flat there).
    At the saturated correct answers the gradient is exact: d/dp = -1 at
    (p, t) = (1, 1) and +1 at (0, 0).
    Kink convention: where a log meets its clamp (u = e⁻¹⁰⁰, in practice u = 0)
    the clamped branch is taken: that term's gradient in p is 0.
    Saves: both inputs.
    """
    op = "funcnet.losses.binary_cross_entropy"
    probs = as_float_array(op, "probs", probs)
    labels = _float_labels(op, labels, probs)
    _same_shape(op, ("probs", "labels"), probs, labels)
    return _bce(probs, labels)


def _sigmoid_bce_value(logits, labels):
    x, t = widen(logits), widen(labels)
    # -t log σ(x) - (1 - t) log σ(-x), with -log σ(x) = softplus(-x).
    return (t * jnp.logaddexp(0, -x) + (1 - t) * jnp.logaddexp(0, x)).astype(logits.dtype)


_sigmoid_bce = jax.custom_vjp(_sigmoid_bce_value)


def _sigmoid_bce_bwd(res, g):
    x, t = (widen(r) for r in res)
    gw = widen(g)
    return (gw * (jax.nn.sigmoid(x) - t)).astype(g.dtype), (-gw * x).astype(g.dtype)


_sigmoid_bce.defvjp(saves_inputs(_sigmoid_bce_value), _sigmoid_bce_bwd)


@with_forward_mode_hint
def sigmoid_binary_cross_entropy(logits, labels):
    """Sigmoid cross-entropy on logits, as ``optax.losses.sigmoid_binary_cross_entropy``.

    ``L = -t log σ(x) - (1 - t) log(1 - σ(x)) = softplus(x) - t·x``, computed
    without overflow for any |x|.

    Derivative: d/dx = σ(x) - t, d/dt = -x.
    Saves: both inputs. Kinks: none. ``labels`` must have the shape of ``logits``.
    """
    op = "funcnet.losses.sigmoid_binary_cross_entropy"
    logits = as_float_array(op, "logits", logits)
    labels = _float_labels(op, labels, logits)
    _same_shape(op, ("logits", "labels"), logits, labels)
    return _sigmoid_bce(logits, labels)


# --------------------------------------------------------- softmax cross-entropy
def _softmax_ce_value(axes, logits, labels):
    logp = jax.nn.log_softmax(widen(logits), axis=axes)
    return (-jnp.sum(widen(labels) * logp, axis=axes)).astype(logits.dtype)


_softmax_ce = jax.custom_vjp(_softmax_ce_value, nondiff_argnums=(0,))


def _softmax_ce_fwd(axes, logits, labels):
    logp = jax.nn.log_softmax(widen(logits), axis=axes)
    loss = (-jnp.sum(widen(labels) * logp, axis=axes)).astype(logits.dtype)
    return loss, (logp, labels)


def _softmax_ce_bwd(axes, res, g):
    logp, labels = res
    t = widen(labels)
    gw = jnp.expand_dims(widen(g), axes)
    gx = gw * (jnp.exp(logp) * jnp.sum(t, axis=axes, keepdims=True) - t)
    return gx.astype(g.dtype), (-gw * logp).astype(g.dtype)


_softmax_ce.defvjp(_softmax_ce_fwd, _softmax_ce_bwd)


@with_forward_mode_hint
def softmax_cross_entropy(logits, labels, axis=-1):
    """Softmax cross-entropy ``-Σ_i t_i log softmax(x)_i``, as Optax's.

    ``labels`` are one-hot vectors or any soft targets with the shape of
    ``logits``; the sum runs over ``axis`` (an int or a tuple of ints).

    Derivative: d/dx = softmax(x)·Σ_i t_i - t (which is ``p - t`` for targets
    that sum to 1), d/dt = -log softmax(x).
    Saves: the log-probabilities (one array the size of the logits) and the
    labels. Stable for large logits (the log-softmax subtracts the maximum).
    Kinks: none.
    """
    op = "funcnet.losses.softmax_cross_entropy"
    logits = as_float_array(op, "logits", logits)
    labels = _float_labels(op, labels, logits)
    _same_shape(op, ("logits", "labels"), logits, labels)
    return _softmax_ce(canonical_axis(op, axis, logits.ndim), logits, labels)


def _int_ce_value(axis, logits, labels):
    x = widen(logits)
    label_logits = jnp.take_along_axis(x, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis)
    return (jax.nn.logsumexp(x, axis=axis) - label_logits).astype(logits.dtype)


_int_ce = jax.custom_vjp(_int_ce_value, nondiff_argnums=(0,))


def _int_ce_fwd(axis, logits, labels):
    # one log-softmax serves both the loss and the residual
    logp = jax.nn.log_softmax(widen(logits), axis=axis)
    loss = -jnp.take_along_axis(logp, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis)
    return loss.astype(logits.dtype), (logp, labels)


def _int_ce_bwd(axis, res, g):
    logp, labels = res
    gw = widen(g)
    gx = jnp.expand_dims(gw, axis) * jnp.exp(logp) + _at_labels(-gw, labels, logp.shape, axis)
    return gx.astype(g.dtype), None


def _at_labels(values, labels, shape, axis):
    """``values·onehot(labels)``: zeros of ``shape`` with each example's value at its label along ``axis``.

    Written as one scatter into zeros, added to ``g·softmax(x)`` afterwards,
    rather than as a dense one-hot product or a scatter into ``g·softmax(x)``
    itself. All three are the same arithmetic, but XLA's CPU scheduler orders
    the rest of a training step differently around each: on the benchmark MLPs
    the dense one-hot made the step 5-10% slower than autodiff, and the scatter
    into the product raised the step's temporary memory by 8 MiB (deep ReLU
    network, batch 4096). This form matches autodiff in both (``funcnet bench``).
    Labels outside ``[0, classes)`` add nothing, as with a one-hot vector;
    negative labels do not wrap around.
    """
    moved = shape[:axis] + shape[axis + 1:] + (shape[axis],)
    classes = shape[axis]
    cols = labels.reshape(-1)
    cols = jnp.where(cols < 0, classes, cols)
    flat = jnp.zeros((cols.shape[0], classes), values.dtype)
    flat = flat.at[jnp.arange(cols.shape[0]), cols].set(values.reshape(-1), mode="drop")
    return jnp.moveaxis(flat.reshape(moved), -1, axis)


_int_ce.defvjp(_int_ce_fwd, _int_ce_bwd)


def _class_axis_shapes(op: str, logits, labels, axis: int) -> int:
    """Validate (logits, integer labels) and return the canonical class axis."""
    if not isinstance(axis, int):
        raise TypeError(f"{op}: `axis` must be an int, got {axis!r}")
    (axis,) = canonical_axis(op, axis, logits.ndim)
    expected = logits.shape[:axis] + logits.shape[axis + 1 :]
    if labels.shape != expected:
        raise ValueError(
            f"{op}: labels of shape {tuple(labels.shape)} do not match logits of shape "
            f"{tuple(logits.shape)}: expected labels of shape {tuple(expected)} "
            f"(the logits' shape without class axis {axis})"
        )
    _check_class_labels(op, labels, logits.shape[axis])
    return axis


@with_forward_mode_hint
def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1):
    """Softmax cross-entropy with class indices, as Optax's function of that name.

    ``L = logsumexp(x) - x_y`` with ``y = labels``, per example.

    Derivative: d/dx = softmax(x) - onehot(y); integer labels get no gradient.
    Saves: the log-probabilities and the labels (the backward rule
    exponentiates them again). Kinks: none.
    Labels are range-checked when their values are known at trace time; under
    ``jit`` an out-of-range label gives a NaN loss.
    """
    op = "funcnet.losses.softmax_cross_entropy_with_integer_labels"
    logits = as_float_array(op, "logits", logits)
    labels = as_integer_array(op, "labels", labels)
    axis = _class_axis_shapes(op, logits, labels, axis)
    return _int_ce(axis, logits, labels)


# ----------------------------------------------------------- multiclass SVM loss
def _svm_margins(scores, labels, margin):
    s = widen(scores)
    correct = jnp.take_along_axis(s, labels[..., None], axis=-1)
    is_label = jax.nn.one_hot(labels, s.shape[-1], dtype=jnp.bool_)
    return s - correct + margin, is_label


def _svm_value(margin, scores, labels):
    m, is_label = _svm_margins(scores, labels, margin)
    return jnp.sum(jnp.where(is_label | (m <= 0), 0.0, m), axis=-1).astype(scores.dtype)


_svm = jax.custom_vjp(_svm_value, nondiff_argnums=(0,))


def _svm_fwd(margin, scores, labels):
    m, is_label = _svm_margins(scores, labels, margin)
    active = (m > 0) & ~is_label
    loss = jnp.sum(jnp.where(active, m, 0.0), axis=-1).astype(scores.dtype)
    return loss, (active, is_label)


def _svm_bwd(margin, res, g):
    active, is_label = res
    count = jnp.sum(active, axis=-1, keepdims=True)
    local = active.astype(jnp.float32) - is_label * count
    return (g[..., None] * local).astype(g.dtype), None


_svm.defvjp(_svm_fwd, _svm_bwd)


@with_forward_mode_hint
def multiclass_svm_loss(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss ``Σ_{j≠y} max(0, s_j - s_y + Δ)``, per example.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)``; ``margin`` is Δ. This is the lecture's (Weston–Watkins)
    form, which *sums* over the wrong classes; ``optax.losses.multiclass_hinge_loss``
    takes the *max* instead, hence the different name.

    Derivative: d/ds_j = 1[s_j - s_y + Δ > 0] for j ≠ y, and d/ds_y = -(number
    of such active classes).
    Kink convention: a class exactly at the margin (s_j - s_y + Δ = 0) is
    inactive: its gradient is 0, like ReLU at 0.
    Saves: two boolean masks (active classes, label position).
    """
    op = "funcnet.losses.multiclass_svm_loss"
    scores = as_float_array(op, "scores", scores)
    labels = as_integer_array(op, "labels", labels)
    if scores.ndim < 1:
        raise ValueError(f"{op}: `scores` must have a class axis, got a scalar")
    _class_axis_shapes(op, scores, labels, -1)
    return _svm(static_float(op, "margin", margin), scores, labels)


# --------------------------------------------------------------------- penalties
def default_is_weight(path: tuple, leaf: Any) -> bool:
    """The default weight test of the penalties: a floating leaf with ndim ≥ 2.

    Dense kernels ``w`` of shape ``(n_in, n_out)`` are weights; biases ``b``
    (1-D), PReLU slopes and other scalars or vectors are not. Pass your own
    ``is_weight(path, leaf) -> bool`` to change the rule (``path`` is the leaf's
    key path as given by ``jax.tree_util.tree_flatten_with_path``).
    """
    leaf = jnp.asarray(leaf)
    return leaf.ndim >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating)


def weight_leaves(params, is_weight: Callable | None = None) -> list:
    """The leaves of ``params`` that the penalties act on, in tree order."""
    is_weight = default_is_weight if is_weight is None else is_weight
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [leaf for path, leaf in flat if is_weight(path, leaf)]


def _penalty_value(elementwise, leaves):
    """Σ over leaves of Σ elementwise(w), accumulated in at least float32."""
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    total = jnp.zeros((), compute_dtype(dtype))
    for w in leaves:
        total = total + jnp.sum(elementwise(widen(w)))
    return total.astype(dtype)


def _l1_value(leaves):
    return _penalty_value(jnp.abs, leaves)


def _l2_value(leaves):
    return _penalty_value(jnp.square, leaves)


def _l1_bwd(leaves, g):
    return ([(g * jnp.sign(w)).astype(w.dtype) for w in leaves],)


def _l2_bwd(leaves, g):
    return ([(2 * g * w).astype(w.dtype) for w in leaves],)


_l1 = jax.custom_vjp(_l1_value)
_l1.defvjp(lambda leaves: (_l1_value(leaves), leaves), _l1_bwd)
_l2 = jax.custom_vjp(_l2_value)
_l2.defvjp(lambda leaves: (_l2_value(leaves), leaves), _l2_bwd)


@with_forward_mode_hint
def l1_penalty(params, is_weight=None):
    """L1 penalty ``Σ |W_ij|`` over the weight leaves of a parameter pytree.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded, as in weight decay. Returns a scalar.

    Derivative: sign(W), with the convention sign(0) = 0 at the kink.
    Saves: the weight leaves.
    """
    return _l1(weight_leaves(params, is_weight))


@with_forward_mode_hint
def l2_penalty(params, is_weight=None):
    """L2 penalty ``Σ W_ij²`` (squared Frobenius norms) over the weight leaves.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded. Returns a scalar; note there is no ½ factor.

    Derivative: 2W. Saves: the weight leaves. Kinks: none.
    """
    return _l2(weight_leaves(params, is_weight))
