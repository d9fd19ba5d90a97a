"""Binary classification losses: cross-entropy on probabilities, on logits (sigmoid), and the sigmoid focal loss."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import broadcast_args, check_range, float_input, is_concrete, is_number
from funcnet.ops.numerics import LOG_FLOOR, add_tangents, log_add_exp, widen
from funcnet.ops.binding import Op, with_array_hypers
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import float_labels, pair_of_shapes

declare = declarer("losses", twins=twin, upstream=optax.losses)


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
    out = add_tangents(None if tp is None else widen(tp) * dp, None if tt is None else widen(tt) * dt)
    return out.astype(probs.dtype)


_BCE = Op("binary_cross_entropy", value=_bce_value, vjp=_bce_vjp, jvp=_bce_jvp)


def _probs_and_labels(rng, case):
    a, b = pair_of_shapes(case)
    return rng.uniform(0.05, 0.95, a), rng.uniform(0.0, 1.0, b)


@declare(forms=_BCE, saves="both inputs", diff_argnums=(0, 1),
         kink=f"each log is clamped at LOG_FLOOR = {LOG_FLOOR} (finite loss at p = 0 or 1); the derivative " "of a clamped log is taken as 0",
         checks=Checks(sample=_probs_and_labels, cases=((), (5,), (4, 3), ((4, 3), (3,))),
                       extreme=lambda: (np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5])),
                       kinks=(Kink("p = 0 and p = 1 (clamped logs)", (np.array([1.0, 0.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0, 0.0, 0.5])), np.array([-1.0, 1.0, 0.0, 0.0, 0.5])),)))
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
    Where a log meets its clamp (u = e⁻¹⁰⁰, in practice u = 0) the clamped
    branch is taken: that term's gradient in p is 0.
    """
    op = "funcnet.losses.binary_cross_entropy"
    probs = float_input(op, "probs", probs)
    labels = float_labels(op, labels, probs)
    for name, v in (("probs", probs), ("labels", labels)):
        if is_concrete(v) and v.size:  # values known here (not traced): check them
            values = np.asarray(v, np.float64)
            if np.any(values < 0) or np.any(values > 1):
                raise ValueError(f"{op}: `{name}` must lie in [0, 1], got values from {np.nanmin(values):g} "
                                 f"to {np.nanmax(values):g}")
    return _BCE(*broadcast_args(op, probs=probs, labels=labels))


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
    out = add_tangents(None if tx is None else widen(tx) * (lax.logistic(x) - t), None if tt is None else -widen(tt) * x)
    return None if out is None else out.astype(logits.dtype)


_SIGMOID_BCE = Op("sigmoid_binary_cross_entropy", value=_sigmoid_bce_value, vjp=_sigmoid_bce_vjp,
                    jvp=_sigmoid_bce_jvp)


def _logits_and_soft_labels(rng, case):
    a, b = pair_of_shapes(case)
    return S.normal(rng, a, 2.0), rng.uniform(0.0, 1.0, b)


@declare(forms=_SIGMOID_BCE, saves="both inputs", diff_argnums=(0, 1),
         differs="integer logits are promoted to float (optax raises)",
         checks=Checks(sample=_logits_and_soft_labels, cases=((), (5,), (4, 3), ((4, 3), (3,)), ((3,), (2, 3))),
                       extreme=lambda: (S.extreme_activation()[0], np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0]))))
def sigmoid_binary_cross_entropy(logits, labels):
    """Sigmoid cross-entropy on logits, as ``optax.losses.sigmoid_binary_cross_entropy``.

    ``L = -t log σ(x) - (1 - t) log(1 - σ(x)) = softplus(x) - t·x``, computed
    without overflow for any finite x. ``labels`` (0/1 or soft targets) are cast
    to the dtype of ``logits`` and broadcast against them, as in Optax; the
    result has the broadcast shape. At x = ±∞ with the matching hard label the
    value is NaN (0·∞), as in Optax.

    Derivative: d/dx = σ(x) - t, d/dt = -x; the forward rule is
    ``(σ(x) - t)ẋ - x ṫ``.
    """
    op = "funcnet.losses.sigmoid_binary_cross_entropy"
    logits = float_input(op, "logits", logits)
    labels = float_labels(op, labels, logits)
    return _SIGMOID_BCE(*broadcast_args(op, logits=logits, labels=labels))


# -------------------------------------------------------------- sigmoid focal loss
def _focal_base(x, t, gamma):
    """(CE, log q, w = q^γ, softplus(x), softplus(-x)) with q = 1 - p_t, finite for any finite logit."""
    sp_pos, sp_neg = jnp.logaddexp(0.0, x), jnp.logaddexp(0.0, -x)  # -log σ(-x), -log σ(x)
    ce = t * sp_neg + (1 - t) * sp_pos
    # log(1 - p_t) = log((1 - t)σ(x) + tσ(-x)), in logs so that it stays finite when σ underflows
    log_q = log_add_exp(jnp.log1p(-t) - sp_neg, jnp.log(t) - sp_pos)
    return ce, log_q, jnp.exp(gamma * log_q), sp_pos, sp_neg


def _focal_parts(logits, labels, alpha, gamma):
    """(loss, d/dx, d/dt) of the focal loss, all in at least float32 and finite for any finite logit."""
    x, t = widen(logits), widen(labels)
    ce, log_q, w, sp_pos, sp_neg = _focal_base(x, t, gamma)
    sig = lax.logistic(x)
    # γ q^(γ-1) · dq/dx and · dq/dt, with dq/dx = (1 - 2t)σ(x)σ(-x) and dq/dt = σ(-x) - σ(x); at γ = 0 the
    # weight is constant and these are 0 (q^(-1) overflows where q underflows: 0·inf would be NaN)
    flat = gamma == 0
    power = jnp.where(flat, 0.0, (gamma - 1) * log_q)
    dw_dx = gamma * (1 - 2 * t) * jnp.exp(power - sp_neg - sp_pos)
    dw_dt = gamma * jnp.exp(power) * (1 - 2 * sig)
    # σ(x) - t as (1 - t)σ(x) - tσ(-x): no cancellation when σ(x) is close to a hard label
    dx, dt = ((1 - t) * sig - t * lax.logistic(-x)) * w + ce * dw_dx, -x * w + ce * dw_dt
    loss = ce * w
    if alpha is not None:
        a = alpha * t + (1 - alpha) * (1 - t)
        loss, dx, dt = a * loss, a * dx, a * dt + (2 * alpha - 1) * ce * w
    return loss, dx, dt


def _focal_vjp(res, g, alpha, gamma):
    logits, labels = res
    _, dx, dt = _focal_parts(logits, labels, alpha, gamma)
    gw = widen(g)
    return (gw * dx).astype(logits.dtype), (gw * dt).astype(labels.dtype)


def _focal_jvp(res, tx, tt, alpha, gamma):
    logits, labels = res
    _, dx, dt = _focal_parts(logits, labels, alpha, gamma)
    out = add_tangents(None if tx is None else widen(tx) * dx, None if tt is None else widen(tt) * dt)
    return None if out is None else out.astype(logits.dtype)


_FOCAL = Op("sigmoid_focal_loss", value=lambda x, t, **s: _focal_parts(x, t, **s)[0].astype(x.dtype),
              vjp=_focal_vjp, jvp=_focal_jvp)


def _focal_dhypers(res, alpha, gamma):
    """(d/dα, d/dγ) of the focal loss: (2t - 1)·CE·w and a_t·CE·w·log q (0 where q = 0)."""
    t = widen(res[1])
    ce, log_q, w, _, _ = _focal_base(widen(res[0]), t, gamma)
    d_gamma = jnp.where(w > 0, ce * w * log_q, 0.0)
    if alpha is None:
        return (d_gamma,)
    return (2 * t - 1) * ce * w, (alpha * t + (1 - alpha) * (1 - t)) * d_gamma


#: Array hyper-parameters: gamma alone (alpha a number or None), and alpha with gamma.
_FOCAL_GAMMA = with_array_hypers(_FOCAL, ("gamma",), lambda res, alpha, gamma: _focal_dhypers(res, alpha, gamma)[-1:])
_FOCAL_BOTH = with_array_hypers(_FOCAL, ("alpha", "gamma"), _focal_dhypers)


@declare(forms=(_FOCAL, _FOCAL_GAMMA, _FOCAL_BOTH), saves="both inputs", diff_argnums=(0, 1),
         differs="integer logits are promoted to float (optax raises); the labels' gradient is exact at hard "
                 "labels 0 and 1, where optax's (through a logsumexp with a zero weight) drops the focal weight's "
                 "term; a concrete alpha outside [0, 1] raises (optax returns a negative loss)",
         checks=Checks(sample=_logits_and_soft_labels, cases=((), (4, 3), ((4, 3), (3,))),
                       extreme=lambda: (np.array([-1e4, 1e4, -1e4, 1e4, 50.0, -50.0]), np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5]))))
def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0):
    """Sigmoid focal loss (Lin et al., 2017), as ``optax.losses.sigmoid_focal_loss``.

    ``L = a_t · CE(x, t) · (1 - p_t)^γ`` with CE the sigmoid cross-entropy,
    ``1 - p_t = (1 - t)σ(x) + tσ(-x)`` and ``a_t = αt + (1 - α)(1 - t)`` (1 when
    ``alpha`` is None). ``(1 - p_t)^γ`` is computed as ``exp(γ log(1 - p_t))``
    with ``log(1 - p_t)`` from log-sigmoids, so the loss and both derivatives
    stay finite at any finite logit. Labels (0/1 or soft, in [0, 1]) broadcast
    against the logits.

    Derivative, with q = 1 - p_t and w = q^γ: d/dx = a_t[(σ(x) - t)w +
    CE·γq^(γ-1)(1 - 2t)σ(x)σ(-x)], d/dt = a_t[-x·w + CE·γq^(γ-1)(σ(-x) - σ(x))]
    + (2α - 1)·CE·w, d/dα = (2t - 1)·CE·w, d/dγ = a_t·CE·w·log q.
    ``alpha`` and ``gamma`` are numbers, or arrays (traced too) that broadcast
    against the loss and get their gradients.
    """
    op = "funcnet.losses.sigmoid_focal_loss"
    logits = float_input(op, "logits", logits)
    labels = float_labels(op, labels, logits)
    args = broadcast_args(op, logits=logits, labels=labels)
    check_range(op, "alpha", alpha, 0, 1, meaning="the weight of the positive class")
    if is_number(gamma) and (alpha is None or is_number(alpha)):
        return _FOCAL(*args, alpha=None if alpha is None else float(alpha), gamma=float(gamma))
    gamma = float_input(op, "gamma", gamma)
    if alpha is None or is_number(alpha):
        return _FOCAL_GAMMA(*args, gamma, alpha=None if alpha is None else float(alpha))
    return _FOCAL_BOTH(*args, float_input(op, "alpha", alpha), gamma)


__all__ = names("losses", __name__)
