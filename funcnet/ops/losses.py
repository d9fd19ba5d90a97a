"""Losses with hand-written rules in both directions (``funcnet.losses``).

Like ``optax.losses``, every loss returns per-example values with no reduction:
take ``.mean()`` (or a weighted sum) yourself. Names, signatures (keywords and
defaults included), broadcasting and values follow ``optax.losses`` where Optax
has the loss; each declaration's ``differs`` says where funcnet deliberately
departs from it. Every floating-point argument gets a gradient, the targets
included (soft labels are allowed wherever Optax allows them); integer labels
and boolean masks get none.

Each loss is one :class:`~funcnet.ops._rule.Rule` (value, residuals, reverse
rule, forward rule) and one public function, declared together with
:func:`declare`. Argument checks, promotion and broadcasting happen in the
public function, outside the rule, so that a label broadcast against the logits
gets its gradient summed back to its own shape by the broadcast's transpose.

Integer and boolean inputs are promoted to the default float dtype (Optax
raises on integer logits or predictions). Half-precision inputs are computed in
float32 and the result rounded back.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops._common import (
    LOG_FLOOR,
    as_integer_array,
    broadcast_shapes,
    canonical_axis,
    check_broadcast_to,
    check_class_labels,
    compute_dtype,
    default_is_weight,  # noqa: F401  (re-exported)
    float_input,
    is_concrete,
    promote_floats,
    static_float,
    weight_leaves,
    widen,
)
from funcnet.ops._declare import Kink, declare, names
from funcnet.ops._rule import Rule
from funcnet.reference import losses as twin


# ----------------------------------------------------------------------- helpers
def _same_shape(op: str, names_: tuple[str, str], a, b) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: `{names_[0]}` and `{names_[1]}` must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _float_labels(op: str, labels, like) -> jax.Array:
    """Labels as floats in ``like``'s dtype (as Optax casts them); integer and boolean labels get no gradient."""
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        return labels.astype(like.dtype)
    return float_input(op, "labels", labels).astype(like.dtype)


def _broadcast(op: str, **arrays) -> list[jax.Array]:
    """The arrays broadcast to their common shape, or a ValueError naming the shapes."""
    shape = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    return [jnp.broadcast_to(v, shape) for v in arrays.values()]


def _bool_mask(op: str, where) -> jax.Array:
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{op}: `where` must be a boolean mask, got {where.dtype}{list(where.shape)}")
    return where


def _expand_mask(op: str, where, axis, ndim: int) -> jax.Array:
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


def _pair_of_shapes(case) -> tuple[tuple, tuple]:
    """A sampler case is one shape (both arguments) or a pair of shapes that broadcast."""
    if len(case) == 2 and all(isinstance(c, tuple) for c in case):
        return case
    return case, case


def _add(a, b):
    """``a + b`` where ``None`` stands for zero (``None`` if both are)."""
    if a is None:
        return b
    return a if b is None else a + b


# ------------------------------------------------------------ squared error / l2
def _sq_value(predictions, targets, scale):
    d = widen(predictions) - widen(targets)
    return (scale * d * d).astype(predictions.dtype)


def _sq_vjp(res, g, scale):
    predictions, targets = res
    gp = 2 * scale * widen(g) * (widen(predictions) - widen(targets))
    return gp.astype(predictions.dtype), (-gp).astype(targets.dtype)


def _sq_jvp(res, tp, tt, scale):
    predictions, targets = res
    dot = _add(None if tp is None else widen(tp), None if tt is None else -widen(tt))
    if dot is None:
        return None
    return (2 * scale * (widen(predictions) - widen(targets)) * dot).astype(predictions.dtype)


_SQUARED = Rule("squared_error", value=_sq_value, vjp=_sq_vjp, jvp=_sq_jvp)


def _sq0_value(predictions, scale):
    p = widen(predictions)
    return (scale * p * p).astype(predictions.dtype)


_SQUARED_NO_TARGETS = Rule(
    "squared_error",
    value=_sq0_value,
    vjp=lambda res, g, scale: ((2 * scale * widen(g) * widen(res[0])).astype(g.dtype),),
    jvp=lambda res, tp, scale: None if tp is None else (2 * scale * widen(res[0]) * widen(tp)).astype(tp.dtype),
)


def _squared(op: str, scale: float, predictions, targets):
    predictions = float_input(op, "predictions", predictions)
    if targets is None:
        return _SQUARED_NO_TARGETS(predictions, scale=scale)
    predictions, targets = promote_floats(op, predictions=predictions, targets=targets)
    _same_shape(op, ("predictions", "targets"), predictions, targets)
    return _SQUARED(predictions, targets, scale=scale)


_squared_common = dict(
    rules=(_SQUARED, _SQUARED_NO_TARGETS), saves="both inputs (only the predictions when targets is None)",
    sample=S.pair, cases=S.SAME_SHAPE_PAIRS, diff_argnums=(0, 1), extreme=S.extreme_pair,
    differs="integer predictions are promoted to float (optax raises)",
)


@declare(family="losses", twin=twin.squared_error, upstream=optax.losses.squared_error, **_squared_common)
def squared_error(predictions, targets=None):
    """Elementwise squared error ``(p - t)²``, as ``optax.losses.squared_error``.

    ``targets`` must have the shape of ``predictions`` (as in Optax, no
    broadcasting); ``targets=None`` means zeros.

    Derivative: d/dp = 2(p - t), d/dt = -2(p - t); the forward rule is
    ``2(p - t)(ṗ - ṫ)``.
    Saves: both inputs. Kinks: none.
    """
    return _squared("funcnet.losses.squared_error", 1.0, predictions, targets)


@declare(family="losses", twin=twin.l2_loss, upstream=optax.losses.l2_loss, **_squared_common)
def l2_loss(predictions, targets=None):
    """Half the squared error ``½(p - t)²``, as ``optax.losses.l2_loss``.

    Derivative: d/dp = p - t, d/dt = -(p - t); the forward rule is ``(p - t)(ṗ - ṫ)``.
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


def _bce_local(probs, labels):
    """(∂L/∂p, ∂L/∂t), each 1/u taken as 0 where its log is clamped."""
    p, t = widen(probs), widen(labels)
    return -t * _clamped_log_grad(p) + (1 - t) * _clamped_log_grad(1 - p), _clamped_log(1 - p) - _clamped_log(p)


def _bce_vjp(res, g):
    probs, labels = res
    dp, dt = _bce_local(probs, labels)
    gw = widen(g)
    return (gw * dp).astype(probs.dtype), (gw * dt).astype(labels.dtype)


def _bce_jvp(res, tp, tt):
    probs, labels = res
    if tp is None and tt is None:
        return None
    dp, dt = _bce_local(probs, labels)
    out = _add(None if tp is None else widen(tp) * dp, None if tt is None else widen(tt) * dt)
    return out.astype(probs.dtype)


_BCE = Rule("binary_cross_entropy", value=_bce_value, vjp=_bce_vjp, jvp=_bce_jvp)


def _probs_and_labels(rng, case):
    a, b = _pair_of_shapes(case)
    return rng.uniform(0.05, 0.95, a), rng.uniform(0.0, 1.0, b)


@declare(family="losses", twin=twin.binary_cross_entropy, rules=_BCE, saves="both inputs",
         sample=_probs_and_labels, cases=((), (5,), (4, 3), ((4, 3), (3,))), diff_argnums=(0, 1),
         extreme=lambda: (np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5])),
         kink=f"each log is clamped at LOG_FLOOR = {LOG_FLOOR} (finite loss at p = 0 or 1); the derivative "
              "of a clamped log is taken as 0",
         kinks=(Kink("p = 0 and p = 1 (clamped logs)",
                     (np.array([1.0, 0.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0, 0.0, 0.5])),
                     np.array([-1.0, 1.0, 0.0, 0.0, 0.5])),))
def binary_cross_entropy(probs, labels):
    """Binary cross-entropy on probabilities: ``-(t log p + (1 - t) log(1 - p))``.

    ``probs`` are probabilities in [0, 1] (e.g. a sigmoid output) and ``labels``
    targets in [0, 1]; the two broadcast against each other, as in
    :func:`sigmoid_binary_cross_entropy` (labels are cast to the dtype of
    ``probs``; integer or boolean 0/1 labels are accepted and get no gradient).
    Prefer :func:`sigmoid_binary_cross_entropy` on logits: it is exact where
    this one has to clamp. Optax has no namesake.

    Each log is clamped at ``LOG_FLOOR = -100`` (PyTorch's convention), so p = 0
    or p = 1 gives a finite loss; a term whose coefficient is 0 contributes 0.
    Concrete ``probs`` or ``labels`` outside [0, 1] raise a ValueError. Under
    ``jit`` (traced values) the range is the caller's responsibility: a
    probability outside [0, 1] gives NaN (the log of a negative number) and a
    label outside it a finite but meaningless loss.

    Derivative: d/dp = -t/p + (1 - t)/(1 - p), d/dt = log(1 - p) - log p, each
    1/u taken as 0 where its log is clamped (the clamped function is flat there).
    At the saturated correct answers the gradient is exact: d/dp = -1 at
    (p, t) = (1, 1) and +1 at (0, 0).
    Kink convention: where a log meets its clamp (u = e⁻¹⁰⁰, in practice u = 0)
    the clamped branch is taken: that term's gradient in p is 0.
    Saves: both inputs.
    """
    op = "funcnet.losses.binary_cross_entropy"
    probs = float_input(op, "probs", probs)
    labels = _float_labels(op, labels, probs)
    for name, v in (("probs", probs), ("labels", labels)):
        if is_concrete(v) and v.size:  # values known here (not traced): check them
            values = np.asarray(v, np.float64)
            if np.any(values < 0) or np.any(values > 1):
                raise ValueError(f"{op}: `{name}` must lie in [0, 1], got values from {np.nanmin(values):g} "
                                 f"to {np.nanmax(values):g}")
    return _BCE(*_broadcast(op, probs=probs, labels=labels))


# -------------------------------------------------- sigmoid binary cross-entropy
def _sigmoid_bce_value(logits, labels):
    x, t = widen(logits), widen(labels)
    # -t log σ(x) - (1 - t) log σ(-x), with -log σ(x) = softplus(-x).
    return (t * jnp.logaddexp(0, -x) + (1 - t) * jnp.logaddexp(0, x)).astype(logits.dtype)


def _sigmoid_bce_vjp(res, g):
    logits, labels = res
    x, t, gw = widen(logits), widen(labels), widen(g)
    return (gw * (lax.logistic(x) - t)).astype(logits.dtype), (-gw * x).astype(labels.dtype)


def _sigmoid_bce_jvp(res, tx, tt):
    logits, labels = res
    x, t = widen(logits), widen(labels)
    out = _add(None if tx is None else widen(tx) * (lax.logistic(x) - t), None if tt is None else -widen(tt) * x)
    return None if out is None else out.astype(logits.dtype)


_SIGMOID_BCE = Rule("sigmoid_binary_cross_entropy", value=_sigmoid_bce_value, vjp=_sigmoid_bce_vjp,
                    jvp=_sigmoid_bce_jvp)


def _logits_and_soft_labels(rng, case):
    a, b = _pair_of_shapes(case)
    return S.normal(rng, a, 2.0), rng.uniform(0.0, 1.0, b)


@declare(family="losses", twin=twin.sigmoid_binary_cross_entropy, rules=_SIGMOID_BCE, saves="both inputs",
         sample=_logits_and_soft_labels, cases=((), (5,), (4, 3), ((4, 3), (3,)), ((3,), (2, 3))),
         diff_argnums=(0, 1), upstream=optax.losses.sigmoid_binary_cross_entropy,
         extreme=lambda: (S.extreme_activation()[0], np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0])),
         differs="integer logits are promoted to float (optax raises)")
def sigmoid_binary_cross_entropy(logits, labels):
    """Sigmoid cross-entropy on logits, as ``optax.losses.sigmoid_binary_cross_entropy``.

    ``L = -t log σ(x) - (1 - t) log(1 - σ(x)) = softplus(x) - t·x``, computed
    without overflow for any finite x. ``labels`` (0/1 or soft targets) are cast
    to the dtype of ``logits`` and broadcast against them, as in Optax; the
    result has the broadcast shape. At x = ±∞ with the matching hard label the
    value is NaN (0·∞), as in Optax.

    Derivative: d/dx = σ(x) - t, d/dt = -x; the forward rule is
    ``(σ(x) - t)ẋ - x ṫ``.
    Saves: both inputs. Kinks: none.
    """
    op = "funcnet.losses.sigmoid_binary_cross_entropy"
    logits = float_input(op, "logits", logits)
    labels = _float_labels(op, labels, logits)
    return _SIGMOID_BCE(*_broadcast(op, logits=logits, labels=labels))


# --------------------------------------------------------- softmax cross-entropy
def _log_softmax(xw, where, axes):
    """Log-softmax over ``axes`` (masked entries -inf), as ``jax.nn.log_softmax``.

    A fully masked row is all -inf, with no NaN on the way (its maximum and sum
    are replaced by 0 and 1), so that autodiff of the rules (second order)
    stays finite there too.
    """
    if where is None:
        m = lax.stop_gradient(jnp.max(xw, axis=axes, keepdims=True))
        shifted = xw - m
        return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axes, keepdims=True))
    m = jnp.max(xw, axis=axes, where=where, initial=-jnp.inf, keepdims=True)
    shifted = jnp.where(where, xw, -jnp.inf) - lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    s = jnp.sum(jnp.exp(shifted), axis=axes, where=where, keepdims=True)
    y = shifted - jnp.log(jnp.where(jnp.any(where, axis=axes, keepdims=True), s, 1.0))
    return jnp.where(where, y, -jnp.inf)


def _sce_save(logits, labels, where, sm_axes, sum_axes):
    logp = _log_softmax(widen(logits), where, sm_axes)
    terms = widen(labels) * _finite_logp(logp, where)
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (-jnp.sum(terms, axis=sum_axes)).astype(logits.dtype), (logp, labels, where)


def _sce_vjp(res, g, sm_axes, sum_axes):
    logp, labels, where = res
    gw = jnp.expand_dims(widen(g), sum_axes)
    gt = gw * widen(labels)
    if where is not None:
        gt = jnp.where(where, gt, 0.0)
    gx = jnp.exp(logp) * jnp.sum(gt, axis=sm_axes, keepdims=True) - gt
    glabels = -gw * _finite_logp(logp, where)
    return gx.astype(labels.dtype), glabels.astype(labels.dtype), None


def _finite_logp(logp, where):
    """``logp`` with masked-out entries at 0 instead of -inf (their labels get 0, not 0·inf, in both rules
    and in autodiff of the rules)."""
    return logp if where is None else jnp.where(where, logp, 0.0)


def _sce_jvp(res, tx, tt, _, sm_axes, sum_axes):
    logp, labels, where = res
    terms = None
    if tx is not None:
        txw = widen(tx) if where is None else jnp.where(where, widen(tx), 0.0)
        dlogp = txw - jnp.sum(jnp.exp(logp) * txw, axis=sm_axes, keepdims=True)
        terms = widen(labels) * dlogp
    if tt is not None:
        terms = _add(terms, widen(tt) * _finite_logp(logp, where))
    if terms is None:
        return None
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (-jnp.sum(terms, axis=sum_axes)).astype(labels.dtype)


_SCE = Rule("softmax_cross_entropy", value=lambda *a, **s: _sce_save(*a, **s)[0], save=_sce_save,
            vjp=_sce_vjp, jvp=_sce_jvp)
_SCE_UNMASKED = Rule(
    "softmax_cross_entropy",
    value=lambda x, t, **s: _sce_save(x, t, None, **s)[0],
    save=lambda x, t, **s: _sce_save(x, t, None, **s),
    vjp=lambda res, g, **s: _sce_vjp(res, g, **s)[:2],
    jvp=lambda res, tx, tt, **s: _sce_jvp(res, tx, tt, None, **s),
)


def _logits_and_targets(rng, case):
    """Logits and soft targets in [0, 1]; 2-D targets are distributions (one-hot-like: rows sum to 1)."""
    a, b = _pair_of_shapes(case)
    labels = rng.uniform(0.1, 1.0, b) if len(b) == 2 else rng.uniform(0.0, 1.0, b)
    if len(b) == 2:
        labels = labels / labels.sum(-1, keepdims=True)
    return S.normal(rng, a, 2.0), labels


@declare(family="losses", twin=twin.softmax_cross_entropy, rules=(_SCE_UNMASKED, _SCE),
         saves="the log-probabilities (one array the size of the logits), the labels, and the mask if given",
         sample=_logits_and_targets, cases=S.CLASS_SHAPES + (((4, 3), (3,)), ((3,), (2, 3))),
         diff_argnums=(0, 1), variants=({}, {"axis": 0}), upstream=optax.losses.softmax_cross_entropy,
         extreme=lambda: (S.extreme_logits(), np.eye(3)),
         differs="integer logits are promoted to float (optax raises); with `where`, the labels' gradient at "
                 "masked-out entries is 0 (optax: NaN, from 0·log 0)")
def softmax_cross_entropy(logits, labels, axis=-1, where=None):
    """Softmax cross-entropy ``-Σ_i t_i log softmax(x)_i``, as ``optax.losses.softmax_cross_entropy``.

    ``labels`` are one-hot vectors or any soft targets; they broadcast against
    ``logits`` as in Optax (the result has the broadcast shape less ``axis``).
    ``axis`` is an int, a tuple of ints or None (all axes). ``where`` (a boolean
    mask of the logits' shape, or of the batch shape, which gets the class axis
    inserted as in Optax) leaves entries out of both the softmax and the sum; a
    row with no entry left has loss 0 and gradient 0.

    Derivative: d/dx = softmax(x)·Σ_i t_i - t (which is ``p - t`` for targets
    that sum to 1), d/dt = -log softmax(x) (0 at masked-out entries, where
    Optax's autodiff gives NaN); the forward rule is
    ``-Σ_i (ṫ_i log p_i + t_i (ẋ_i - Σ_j p_j ẋ_j))``.
    Saves: the log-probabilities (one array the size of the logits) and the
    labels (and the mask). Stable for large logits (the log-softmax subtracts
    the maximum); a -∞ logit with label 0 gives NaN without a mask, as in Optax.
    Kinks: none.
    """
    op = "funcnet.losses.softmax_cross_entropy"
    logits, labels = promote_floats(op, logits=logits, labels=labels)
    arrays = dict(logits=logits, labels=labels)
    if where is not None:
        arrays["where"] = _expand_mask(op, _bool_mask(op, where), axis, logits.ndim)
    full = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    # The softmax runs over the logits' axes, the sum over the broadcast result's (as in Optax; the
    # two differ only for a non-negative axis when the labels have more dimensions than the logits).
    lead = len(full) - logits.ndim
    sm_axes = tuple(a + lead for a in canonical_axis(op, axis, logits.ndim))
    sum_axes = canonical_axis(op, axis, len(full))
    args = [jnp.broadcast_to(v, full) for v in arrays.values()]
    rule = _SCE if where is not None else _SCE_UNMASKED
    return rule(*args, sm_axes=sm_axes, sum_axes=sum_axes)


# ------------------------------------------- softmax cross-entropy, integer labels
def _normalised(xw, where, axis):
    """``x - logsumexp(x)`` at every entry (the sum over unmasked entries only), as Optax normalises.

    A non-finite maximum is replaced by 0, as in ``jax.nn.logsumexp``; a fully
    masked row gets a normaliser of 0 (its loss is replaced by 0 anyway).
    """
    m = jnp.max(xw, axis=axis, where=where, initial=-jnp.inf, keepdims=True)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    shifted = xw - m
    s = jnp.sum(jnp.exp(shifted), axis=axis, where=where, keepdims=True)
    if where is not None:  # a fully masked row: sum 1, so no log(0) for autodiff of the rules to meet
        s = jnp.where(jnp.any(where, axis=axis, keepdims=True), s, 1.0)
    return shifted - jnp.log(s)


def _label_index(labels, classes):
    """Labels with negative values moved out of range, so that a gather reads NaN there, not x[-1].

    Narrow label dtypes (int8, uint8, ...) are widened to int32 first, so that ``classes`` fits.
    """
    labels = labels.astype(jnp.promote_types(labels.dtype, jnp.int32))
    return jnp.where(labels < 0, classes, labels)


def _take(values, labels, axis):
    """``values`` at each example's label along ``axis``; NaN for a label outside ``[0, classes)``."""
    idx = jnp.expand_dims(_label_index(labels, values.shape[axis]), axis)
    return jnp.take_along_axis(values, idx, axis=axis, mode="fill", fill_value=jnp.nan).squeeze(axis)


def _int_ce_save(logits, labels, where, axis):
    # one log-softmax serves both the loss and the residual (log_softmax, then take: stable)
    logp = _normalised(widen(logits), where, axis)
    loss = -_take(logp, labels, axis)
    any_row = None
    if where is not None:
        any_row = jnp.any(where, axis=axis)
        loss = jnp.where(any_row, loss, 0.0)
        logp = jnp.where(where, logp, -jnp.inf)
    return loss.astype(logits.dtype), (logp, labels, any_row)


def _int_ce_vjp(res, g, axis):
    logp, labels, any_row = res
    gw = widen(g)
    wide = _label_index(labels, logp.shape[axis])
    valid = wide < logp.shape[axis]
    # An out-of-range label: the value is NaN, so is the whole gradient row (batch-sized where, cheap).
    gp = jnp.where(valid, gw, jnp.nan)
    if any_row is not None:  # a fully masked row: value 0, gradient 0
        gp, gw = jnp.where(any_row, gp, 0.0), jnp.where(any_row, gw, 0.0)
    gx = jnp.expand_dims(gp, axis) * jnp.exp(logp) + _at_labels(-gw, labels, logp.shape, axis)
    return gx.astype(g.dtype), None, None


def _at_labels(values, labels, shape, axis):
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
    cols = _label_index(labels.reshape(-1), classes)
    flat = jnp.zeros((cols.shape[0], classes), values.dtype)
    flat = flat.at[jnp.arange(cols.shape[0]), cols].set(values.reshape(-1), mode="drop")
    return jnp.moveaxis(flat.reshape(moved), -1, axis)


def _int_ce_jvp(res, tx, _labels, _where, axis):
    if tx is None:
        return None
    logp, labels, any_row = res
    txw = widen(tx)
    out = jnp.sum(jnp.exp(logp) * txw, axis=axis) - _take(txw, labels, axis)  # NaN for an out-of-range label
    if any_row is not None:
        out = jnp.where(any_row, out, 0.0)
    return out.astype(tx.dtype)


_INT_CE = Rule("softmax_cross_entropy_with_integer_labels", value=lambda *a, **s: _int_ce_save(*a, **s)[0],
               save=_int_ce_save, vjp=_int_ce_vjp, jvp=_int_ce_jvp)
_INT_CE_UNMASKED = Rule(
    "softmax_cross_entropy_with_integer_labels",
    value=lambda x, y, axis: _int_ce_save(x, y, None, axis)[0],
    save=lambda x, y, axis: _int_ce_save(x, y, None, axis),
    vjp=lambda res, g, axis: _int_ce_vjp(res, g, axis)[:2],
    jvp=lambda res, tx, ty, axis: _int_ce_jvp(res, tx, ty, None, axis),
)


def _class_axis_labels(op: str, logits, labels, axis: int, where=None, name: str = "logits"):
    """Check (logits, integer labels) along ``axis`` and broadcast them (and the mask) together.

    As in Optax (``take_along_axis``), the labels have the logits' dimensions
    less the class axis, and broadcast against the logits' other dimensions.
    """
    (axis,) = canonical_axis(op, axis, logits.ndim)
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


def _flatten_class_axes(logits, where, axes):
    """Optax's tuple ``axis``: the class axes moved last (in order) and flattened into one."""
    batch = tuple(a for a in range(logits.ndim) if a not in axes)
    order = batch + axes
    logits = logits.transpose(order)
    logits = logits.reshape(logits.shape[:len(batch)] + (-1,))
    if where is not None:
        where = where.transpose(order).reshape(logits.shape)
    return logits, where, len(batch)


@declare(family="losses", twin=twin.softmax_cross_entropy_with_integer_labels,
         rules=(_INT_CE_UNMASKED, _INT_CE),
         saves="the log-probabilities and the labels (and one flag per example, whether its mask is non-empty)",
         sample=S.logits_and_classes, cases=S.CLASS_SHAPES, diff_argnums=(0,),
         upstream=optax.losses.softmax_cross_entropy_with_integer_labels,
         extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])),
         differs="integer logits are promoted to float (optax raises); an out-of-range label under jit "
                 "gives a NaN loss and a NaN gradient row (optax wraps -1 to the last class, and gives a NaN "
                 "loss but a finite gradient for labels >= classes); the value is log_softmax-then-take, "
                 "exact where optax's logsumexp(x) - x_y loses float32 digits at large logits")
def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    """Softmax cross-entropy with class indices, as Optax's function of that name.

    ``L = logsumexp(x) - x_y`` with ``y = labels``, per example, computed as
    ``-log_softmax(x)[y]`` (the maximum is subtracted first, so large logits
    lose no digits). ``axis`` is an int or a tuple of ints; for a tuple the
    label is a flat index into the class axes, as in Optax (``axis=None`` is
    rejected, as in Optax). ``where`` (a boolean mask of the logits' shape or of
    the batch shape) leaves classes out of the normaliser, as in Optax; a row
    with no class left has loss 0 and gradient 0, so ``where=keep`` (batch
    shape) is the way to ignore examples.

    Derivative: d/dx = softmax(x) - onehot(y); integer labels get no gradient.
    The forward rule is ``Σ_j p_j ẋ_j - ẋ_y``.
    Saves: the log-probabilities and the labels (the reverse rule
    exponentiates them again). Kinks: none.
    Labels are range-checked when their values are known at trace time (a
    ValueError). Under ``jit`` an out-of-range label (negative ones included,
    which do not wrap around) gives a NaN loss, and consistently a NaN gradient
    row and a NaN tangent, for that example.
    """
    op = "funcnet.losses.softmax_cross_entropy_with_integer_labels"
    logits = float_input(op, "logits", logits)
    labels = as_integer_array(op, "labels", labels)
    if isinstance(axis, np.integer):
        axis = int(axis)
    if not (isinstance(axis, int) or (isinstance(axis, tuple) and axis)):
        raise ValueError(f"{op}: `axis` must be an int or a non-empty tuple of ints, got {axis!r} "
                         "(as in optax, None is not accepted: the label indexes one class axis)")
    if where is not None:
        where = _expand_mask(op, _bool_mask(op, where), axis, logits.ndim)
        check_broadcast_to(op, ("where", "logits"), where.shape, logits.shape)
        where = jnp.broadcast_to(where, logits.shape)
    if isinstance(axis, tuple):
        canonical_axis(op, axis, logits.ndim)  # range and repeat checks; the order given is kept, as in optax
        axes = tuple(int(a) % logits.ndim for a in axis)
        logits, where, axis = _flatten_class_axes(logits, where, axes)
    logits, labels, where, axis = _class_axis_labels(op, logits, labels, axis, where)
    if where is None:
        return _INT_CE_UNMASKED(logits, labels, axis=axis)
    return _INT_CE(logits, labels, where, axis=axis)


# ----------------------------------------------------------- multiclass SVM loss
def _svm_save(scores, labels, margin):
    s = widen(scores)
    is_label = labels[..., None] == jnp.arange(s.shape[-1])  # all False for an out-of-range label
    correct = _take(s, labels, -1)[..., None]
    m = s - correct + margin
    active = (m > 0) & ~is_label
    loss = jnp.sum(jnp.where(active, m, 0.0), axis=-1)
    loss = jnp.where(jnp.any(is_label, axis=-1), loss, jnp.nan)
    return loss.astype(scores.dtype), (active, is_label)


def _svm_vjp(res, g, margin):
    active, is_label = res
    count = jnp.sum(active, axis=-1, keepdims=True)
    local = active.astype(jnp.float32) - is_label * count
    gw = jnp.where(jnp.any(is_label, axis=-1), widen(g), jnp.nan)  # NaN row for an out-of-range label
    return (gw[..., None] * local).astype(g.dtype), None


def _svm_jvp(res, ts, _, margin):
    if ts is None:
        return None
    active, is_label = res
    tw = widen(ts)
    count = jnp.sum(active, axis=-1)
    out = jnp.sum(jnp.where(active, tw, 0.0), axis=-1) - count * jnp.sum(jnp.where(is_label, tw, 0.0), axis=-1)
    return jnp.where(jnp.any(is_label, axis=-1), out, jnp.nan).astype(ts.dtype)


_SVM = Rule("multiclass_svm_loss", value=lambda *a, **s: _svm_save(*a, **s)[0], save=_svm_save,
            vjp=_svm_vjp, jvp=_svm_jvp)


def _svm_scores(rng, shape):
    """Scores and labels with every s_j - s_y at least 0.05 away from -1 and -2 (the margins of both rows)."""
    scores, labels = S.logits_and_classes(rng, shape)
    correct = np.take_along_axis(scores, labels[..., None], -1)
    if any(np.any(np.abs(scores - correct + margin) < 0.05) for margin in (1.0, 2.0)):
        return _svm_scores(rng, shape)
    return scores, labels


@declare(family="losses", twin=twin.multiclass_svm_loss, rules=_SVM,
         saves="boolean masks of the active classes and of the label",
         sample=_svm_scores, cases=S.CLASS_SHAPES, diff_argnums=(0,), variants=({}, {"margin": 2.0}),
         extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])),
         kink="a class exactly at the margin (s_j - s_y + margin == 0) is inactive: gradient 0, like ReLU at 0",
         kinks=(Kink("class 1 at the margin (scores 1, 0, 3; label 0; margin 1)",
                     (np.array([1.0, 0.0, 3.0]), np.array(0)), np.array([-1.0, 0.0, 1.0]), {"margin": 1.0}),))
def multiclass_svm_loss(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss ``Σ_{j≠y} max(0, s_j - s_y + Δ)``, per example.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)`` (or one that broadcasts with it); ``margin`` is Δ, a
    number. This is the lecture's (Weston–Watkins) form, which *sums* over the
    wrong classes; ``optax.losses.multiclass_hinge_loss`` takes the *max*
    instead, hence the different name.

    Derivative: d/ds_j = 1[s_j - s_y + Δ > 0] for j ≠ y, and d/ds_y = -(number
    of such active classes); the forward rule is ``Σ_{active j} ṡ_j - (count)·ṡ_y``.
    Kink convention: a class exactly at the margin (s_j - s_y + Δ = 0) is
    inactive: its gradient is 0, like ReLU at 0.
    Saves: two boolean masks (active classes, label position).
    Labels are range-checked when known at trace time; under ``jit`` an
    out-of-range label gives a NaN loss and a NaN gradient row and tangent.
    """
    op = "funcnet.losses.multiclass_svm_loss"
    scores = float_input(op, "scores", scores)
    labels = as_integer_array(op, "labels", labels)
    if scores.ndim < 1:
        raise ValueError(f"{op}: `scores` must have a class axis, got a scalar")
    scores, labels, _, _ = _class_axis_labels(op, scores, labels, -1, name="scores")
    return _SVM(scores, labels, margin=static_float(op, "margin", margin))


# --------------------------------------------------------------------- penalties
def _penalty_rule(name: str, elementwise: Callable, derivative: Callable) -> Rule:
    """``Σ_leaves Σ elementwise(w)`` over the leaves passed as separate arguments, in at least float32."""

    def value(*leaves):
        dtype = jnp.result_type(*leaves)
        total = jnp.zeros((), compute_dtype(dtype))
        for w in leaves:
            total = total + jnp.sum(elementwise(widen(w)))
        return total.astype(dtype)

    def vjp(leaves, g):
        gw = widen(g)
        return tuple((gw * derivative(widen(w))).astype(w.dtype) for w in leaves)

    def jvp(leaves, *tangents):
        out = None
        for w, t in zip(leaves, tangents):
            if t is not None:
                out = _add(out, jnp.sum(derivative(widen(w)) * widen(t)))
        return None if out is None else out.astype(jnp.result_type(*leaves))

    return Rule(name, value=value, save=lambda *leaves: (value(*leaves), leaves), vjp=vjp, jvp=jvp)


_L1 = _penalty_rule("l1_penalty", jnp.abs, jnp.sign)
_L2 = _penalty_rule("l2_penalty", jnp.square, lambda w: 2 * w)


def _penalty(rule: Rule, params, is_weight):
    leaves = [float_input(f"funcnet.losses.{rule.name}", "params", w) for w in weight_leaves(params, is_weight)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return rule(*leaves)


_params_extreme = lambda: ({"w": np.array([[1e4, -1e4], [0.5, -0.5]]), "b": np.array([1e4, 1.0])},)  # noqa: E731


@declare(family="losses", twin=twin.l1_penalty, rules=_L1, saves="the weight leaves",
         sample=S.params, cases=S.LAYOUTS, diff_argnums=(0,), extreme=_params_extreme,
         kink="sign(0) = 0: a weight at exactly 0 gets gradient 0",
         kinks=(Kink("weights at 0", (np.array([[0.0, -0.5], [2.0, 0.0]]),),
                     np.array([[0.0, -1.0], [1.0, 0.0]])),))
def l1_penalty(params, is_weight=None):
    """L1 penalty ``Σ |W_ij|`` over the weight leaves of a parameter pytree.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded, as in weight decay. Returns a scalar (float32 zero
    when there is no weight leaf). Optax has no namesake.

    Derivative: sign(W), with the convention sign(0) = 0 at the kink; the
    forward rule is ``Σ sign(W) ⊙ Ẇ``.
    Saves: the weight leaves.
    """
    return _penalty(_L1, params, is_weight)


@declare(family="losses", twin=twin.l2_penalty, rules=_L2, saves="the weight leaves",
         sample=S.params, cases=S.LAYOUTS, diff_argnums=(0,), extreme=_params_extreme)
def l2_penalty(params, is_weight=None):
    """L2 penalty ``Σ W_ij²`` (squared Frobenius norms) over the weight leaves.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded. Returns a scalar; note there is no ½ factor.

    Derivative: 2W; the forward rule is ``Σ 2W ⊙ Ẇ``. Saves: the weight leaves. Kinks: none.
    """
    return _penalty(_L2, params, is_weight)


__all__ = names("losses", __name__) + ["default_is_weight", "weight_leaves", "LOG_FLOOR"]
