"""Softmax cross-entropy losses: soft labels, integer labels, the safe and the poly-1 variants."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import (
    broadcast_args,
    as_integer_array,
    bool_mask,
    canonical_axis,
    check_broadcast_to,
    float_input,
    is_number,
    promote_floats,
)
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.binding import Op, with_array_hypers
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.ops.reductions import log_softmax_core
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import (
    at_labels,
    class_axis_labels,
    expand_mask,
    label_index,
    mask_optional,
    pair_of_shapes,
    take,
)

declare = declarer("losses", twins=twin, upstream=optax.losses)


# --------------------------------------------------------- softmax cross-entropy
def _log_softmax(xw, where, axes):
    """Log-softmax over ``axes``, masked entries -inf (a fully masked row all -inf, with no NaN on the way)."""
    shifted, log_sum = log_softmax_core(xw, where, axes)
    y = shifted - log_sum
    return y if where is None else jnp.where(where, y, -jnp.inf)


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
        terms = add_tangents(terms, widen(tt) * _finite_logp(logp, where))
    if terms is None:
        return None
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (-jnp.sum(terms, axis=sum_axes)).astype(labels.dtype)


_SCE_UNMASKED, _SCE = mask_optional("softmax_cross_entropy", _sce_save, _sce_vjp, _sce_jvp)


def _logits_and_targets(rng, case):
    """Logits and soft targets in [0, 1]; 2-D targets are distributions (one-hot-like: rows sum to 1)."""
    a, b = pair_of_shapes(case)
    labels = rng.uniform(0.1, 1.0, b) if len(b) == 2 else rng.uniform(0.0, 1.0, b)
    if len(b) == 2:
        labels = labels / labels.sum(-1, keepdims=True)
    return S.normal(rng, a, 2.0), labels


@declare(forms=(_SCE_UNMASKED, _SCE),
         saves="the log-probabilities (one array the size of the logits), the labels, and the mask if given",
         diff_argnums=(0, 1),
         differs="integer logits are promoted to float (optax raises); with `where`, the labels' gradient at "
                 "masked-out entries is 0 (optax: NaN, from 0·log 0)",
         checks=Checks(sample=_logits_and_targets, cases=S.CLASS_SHAPES + (((4, 3), (3,)), ((3,), (2, 3))),
                       variants=({}, {"axis": 0}), extreme=lambda: (S.extreme_logits(), np.eye(3))))
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
    Stable for large logits (the log-softmax subtracts the maximum); a -∞
    logit with label 0 gives NaN without a mask, as in Optax.
    """
    op = "funcnet.losses.softmax_cross_entropy"
    logits, labels = promote_floats(op, logits=logits, labels=labels)
    args, sm_axes, sum_axes = _class_axes(op, logits, labels, axis, where)
    rule = _SCE if where is not None else _SCE_UNMASKED
    return rule(*args, sm_axes=sm_axes, sum_axes=sum_axes)


# ------------------------------------------- softmax cross-entropy, integer labels
def _normalised(xw, where, axis):
    """``x - logsumexp(x)`` at every entry, masked ones included (the sum over unmasked entries), as Optax normalises.

    A non-finite maximum is replaced by 0, as in ``jax.nn.logsumexp``; a fully
    masked row gets a normaliser of 0 (its loss is replaced by 0 anyway).
    """
    shifted, log_sum = log_softmax_core(xw, where, axis, finite_max=True)
    return shifted - log_sum


def _int_ce_save(logits, labels, where, axis):
    # one log-softmax serves both the loss and the residual (log_softmax, then take: stable)
    logp = _normalised(widen(logits), where, axis)
    loss = -take(logp, labels, axis)
    any_row = None
    if where is not None:
        any_row = jnp.any(where, axis=axis)
        loss = jnp.where(any_row, loss, 0.0)
        logp = jnp.where(where, logp, -jnp.inf)
    return loss.astype(logits.dtype), (logp, labels, any_row)


def _int_ce_vjp(res, g, axis):
    logp, labels, any_row = res
    gw = widen(g)
    wide = label_index(labels, logp.shape[axis])
    valid = wide < logp.shape[axis]
    # An out-of-range label: the value is NaN, so is the whole gradient row (batch-sized where, cheap).
    gp = jnp.where(valid, gw, jnp.nan)
    if any_row is not None:  # a fully masked row: value 0, gradient 0
        gp, gw = jnp.where(any_row, gp, 0.0), jnp.where(any_row, gw, 0.0)
    gx = jnp.expand_dims(gp, axis) * jnp.exp(logp) + at_labels(-gw, labels, logp.shape, axis)
    return gx.astype(g.dtype), None, None


def _int_ce_jvp(res, tx, _labels, _where, axis):
    if tx is None:
        return None
    logp, labels, any_row = res
    txw = widen(tx)
    out = jnp.sum(jnp.exp(logp) * txw, axis=axis) - take(txw, labels, axis)  # NaN for an out-of-range label
    if any_row is not None:
        out = jnp.where(any_row, out, 0.0)
    return out.astype(tx.dtype)


_INT_CE_UNMASKED, _INT_CE = mask_optional("softmax_cross_entropy_with_integer_labels", _int_ce_save,
                                           _int_ce_vjp, _int_ce_jvp)


def _flatten_class_axes(logits, where, axes):
    """Optax's tuple ``axis``: the class axes moved last (in order) and flattened into one."""
    batch = tuple(a for a in range(logits.ndim) if a not in axes)
    order = batch + axes
    logits = logits.transpose(order)
    logits = logits.reshape(logits.shape[:len(batch)] + (-1,))
    if where is not None:
        where = where.transpose(order).reshape(logits.shape)
    return logits, where, len(batch)


@declare(forms=(_INT_CE_UNMASKED, _INT_CE),
         saves="the log-probabilities and the labels (and one flag per example, whether its mask is non-empty)",
         diff_argnums=(0,),
         differs="integer logits are promoted to float (optax raises); an out-of-range label under jit gives a NaN "
                 "loss and a NaN gradient row (optax wraps -1 to the last class, and gives a NaN loss but a finite "
                 "gradient for labels >= classes); the value is log_softmax-then-take, exact where optax's "
                 "logsumexp(x) - x_y loses float32 digits at large logits",
         checks=Checks(sample=S.logits_and_classes, cases=S.CLASS_SHAPES,
                       extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2]))))
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
        where = expand_mask(op, bool_mask(op, where), axis, logits.ndim)
        check_broadcast_to(op, ("where", "logits"), where.shape, logits.shape)
        where = jnp.broadcast_to(where, logits.shape)
    if isinstance(axis, tuple):
        canonical_axis(op, axis, logits.ndim)  # range and repeat checks; the order given is kept, as in optax
        axes = tuple(int(a) % logits.ndim for a in axis)
        logits, where, axis = _flatten_class_axes(logits, where, axes)
    logits, labels, where, axis = class_axis_labels(op, logits, labels, axis, where)
    if where is None:
        return _INT_CE_UNMASKED(logits, labels, axis=axis)
    return _INT_CE(logits, labels, where, axis=axis)


# ------------------------------------------------------ safe and poly-loss cross-entropy
def _safe_sce_save(logits, labels, sm_axes, sum_axes):
    """Softmax cross-entropy with the terms of zero labels dropped (0·log 0 = 0, even at a -∞ logit)."""
    logp = _log_softmax(widen(logits), None, sm_axes)
    terms = jnp.where(widen(labels) != 0, widen(labels) * logp, 0.0)
    return (-jnp.sum(terms, axis=sum_axes)).astype(logits.dtype), (logp, labels, None)


_SAFE_SCE = Op("safe_softmax_cross_entropy", value=lambda *a, **s: _safe_sce_save(*a, **s)[0], save=_safe_sce_save,
                 vjp=lambda res, g, **s: _sce_vjp(res, g, **s)[:2],
                 jvp=lambda res, tx, tt, **s: _sce_jvp(res, tx, tt, None, **s))


def _class_axes(op: str, logits, labels, axis, where=None):
    """Optax's broadcasting of (logits, labels, mask) for the soft-label losses: the arrays and both axis sets.

    The softmax runs over the logits' axes, the sum over the broadcast result's (the two differ only for a
    non-negative axis when the labels have more dimensions than the logits).
    """
    arrays = dict(logits=logits, labels=labels)
    if where is not None:
        arrays["where"] = expand_mask(op, bool_mask(op, where), axis, logits.ndim)
    args = broadcast_args(op, **arrays)
    full = args[0].shape
    lead = len(full) - logits.ndim
    sm_axes = tuple(a + lead for a in canonical_axis(op, axis, logits.ndim))
    sum_axes = canonical_axis(op, axis, len(full))
    return args, sm_axes, sum_axes


@declare(forms=_SAFE_SCE, saves="the log-probabilities and the labels", diff_argnums=(0, 1),
         differs="integer logits are promoted to float (optax raises); forward mode through a -inf logit with "
                 "label 0 is finite (optax: NaN)", checks=Checks(sample=_logits_and_targets, cases=((5,), (4, 3)),
                       extreme=lambda: (S.extreme_logits(), np.eye(3))))
def safe_softmax_cross_entropy(logits, labels):
    """Softmax cross-entropy over the last axis with ``0·log 0 = 0``, as Optax's function of that name.

    ``L = -Σ_{i: t_i ≠ 0} t_i log softmax(x)_i``: a class with label 0 adds
    nothing, even where its logit is -∞ (where
    :func:`softmax_cross_entropy` gives NaN). Labels broadcast against the
    logits, as in Optax.

    Derivative: d/dx = softmax(x)·Σ_i t_i - t, d/dt = -log softmax(x) (which is
    +∞ at a -∞ logit: the true slope there).
    """
    op = "funcnet.losses.safe_softmax_cross_entropy"
    logits, labels = promote_floats(op, logits=logits, labels=labels)
    args, sm_axes, sum_axes = _class_axes(op, logits, labels, -1)
    return _SAFE_SCE(*args, sm_axes=sm_axes, sum_axes=sum_axes)


def _poly_term(logp, labels, where, sum_axes):
    """Σ_i t_i (1 - p_i) (masked entries left out): the poly-1 term, and its derivative in ε."""
    extra = widen(labels) * (1 - jnp.exp(logp))
    return jnp.sum(extra if where is None else jnp.where(where, extra, 0.0), axis=sum_axes)


def _poly_save(logits, labels, where, sm_axes, sum_axes, epsilon):
    ce, (logp, _, _) = _sce_save(logits, labels, where, sm_axes, sum_axes)
    value = widen(ce) + epsilon * _poly_term(logp, labels, where, sum_axes)
    return value.astype(logits.dtype), (logp, labels, where)


def _poly_vjp(res, g, sm_axes, sum_axes, epsilon):
    gx, gt, _ = _sce_vjp(res, g, sm_axes, sum_axes)
    logp, labels, where = res
    p = jnp.exp(logp)
    gw = epsilon * jnp.expand_dims(widen(g), sum_axes)
    u = gw * widen(labels)
    if where is not None:
        u = jnp.where(where, u, 0.0)
    # d/dx_k of -ε Σ_i u_i p_i = ε p_k (Σ_i u_i p_i - u_k); d/dt = ε(1 - p)
    gx = widen(gx) + p * (jnp.sum(u * p, axis=sm_axes, keepdims=True) - u)
    dt = gw * (1 - p)
    if where is not None:
        dt = jnp.where(where, dt, 0.0)
    return gx.astype(gt.dtype), (widen(gt) + dt).astype(gt.dtype), None


def _poly_jvp(res, tx, tt, _, sm_axes, sum_axes, epsilon):
    out = _sce_jvp(res, tx, tt, None, sm_axes, sum_axes)
    logp, labels, where = res
    p = jnp.exp(logp)
    terms = None
    if tx is not None:
        txw = widen(tx) if where is None else jnp.where(where, widen(tx), 0.0)
        terms = -widen(labels) * p * (txw - jnp.sum(p * txw, axis=sm_axes, keepdims=True))
    if tt is not None:
        terms = add_tangents(terms, widen(tt) * (1 - p))
    if terms is None:
        return out
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (widen(out) + epsilon * jnp.sum(terms, axis=sum_axes)).astype(out.dtype)


_POLY_UNMASKED, _POLY = mask_optional("poly_loss_cross_entropy", _poly_save, _poly_vjp, _poly_jvp)


def _poly_depsilon(res, sm_axes, sum_axes, epsilon):
    """d/dε of the poly-1 loss: its poly-1 term."""
    return (_poly_term(*res, sum_axes),)


_POLY_ARRAY = tuple(with_array_hypers(r, ("epsilon",), _poly_depsilon) for r in (_POLY_UNMASKED, _POLY))


@declare(forms=(_POLY_UNMASKED, _POLY) + _POLY_ARRAY, saves="the log-probabilities, the labels and the mask if given",
         diff_argnums=(0, 1),
         differs="integer logits or labels are promoted to float (optax raises); with `where`, the labels' "
                 "gradient at masked-out entries is 0",
         checks=Checks(sample=_logits_and_targets, cases=((5,), (4, 3), ((4, 3), (3,))),
                       extreme=lambda: (S.extreme_logits(), np.eye(3))))
def poly_loss_cross_entropy(logits, labels, *, epsilon=2.0, axis=-1, where=None):
    """Poly-1 cross-entropy (Leng et al., 2022), as ``optax.losses.poly_loss_cross_entropy``.

    ``L = CE(x, t) + ε Σ_i t_i (1 - p_i)`` with p = softmax(x) and CE the
    :func:`softmax_cross_entropy`; ``axis`` and ``where`` as there.

    ``epsilon`` is a number, or an array (traced too) that broadcasts against the
    loss and gets its gradient.

    Derivative: d/dx = p·Σt - t + ε p ⊙ (⟨t, p⟩ - t), d/dt = -log p + ε(1 - p),
    d/dε = Σ_i t_i (1 - p_i).
    """
    op = "funcnet.losses.poly_loss_cross_entropy"
    logits, labels = promote_floats(op, logits=logits, labels=labels)
    args, sm_axes, sum_axes = _class_axes(op, logits, labels, axis, where)
    masked = where is not None
    if is_number(epsilon):
        return (_POLY if masked else _POLY_UNMASKED)(*args, sm_axes=sm_axes, sum_axes=sum_axes, epsilon=float(epsilon))
    return _POLY_ARRAY[masked](*args, float_input(op, "epsilon", epsilon), sm_axes=sm_axes, sum_axes=sum_axes)


__all__ = names("losses", __name__)
