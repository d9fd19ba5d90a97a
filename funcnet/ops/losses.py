"""Losses with hand-written rules in both directions (``funcnet.losses``).

Like ``optax.losses``, every loss returns per-example values with no reduction:
take ``.mean()`` (or a weighted sum) yourself. Names, signatures (keywords and
defaults included), broadcasting and values follow ``optax.losses`` where Optax
has the loss; each declaration's ``differs`` says where funcnet deliberately
departs from it. Every floating-point argument gets a gradient, the targets
included (soft labels are allowed wherever Optax allows them); integer labels
and boolean masks get none.

Each loss is one :class:`~funcnet.ops.binding.Op` (value, residuals, reverse
rule, forward rule) and one public function, declared together with
:func:`declare`. Argument checks, promotion and broadcasting happen in the
public function, outside the rule, so that a label broadcast against the logits
gets its gradient summed back to its own shape by the broadcast's transpose.

Integer and boolean inputs are promoted to the default float dtype (Optax
raises on integer logits or predictions). Half-precision inputs are computed in
float32 and the result rounded back.
"""

from __future__ import annotations

import math
import warnings
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
    is_number,
    promote_floats,
    static_float,
    weight_leaves,
    widen,
)
from funcnet.ops.binding import Op, with_array_hypers, with_optional
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ----------------------------------------------------------------------- helpers
def _same_shape(op: str, names_: tuple[str, str], a, b) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: `{names_[0]}` and `{names_[1]}` must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _float_labels(op: str, labels, like, name: str = "labels") -> jax.Array:
    """Labels as floats in ``like``'s dtype (as Optax casts them); integer and boolean labels get no gradient."""
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        return labels.astype(like.dtype)
    return float_input(op, name, labels).astype(like.dtype)


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


def _normal_pair(rng, case):
    a, b = _pair_of_shapes(case)
    return S.normal(rng, a), S.normal(rng, b)


def _add(a, b):
    """``a + b`` where ``None`` stands for zero (``None`` if both are)."""
    if a is None:
        return b
    return a if b is None else a + b


def _mask_optional(name: str, save: Callable, vjp: Callable, jvp: Callable) -> tuple[Op, Op]:
    """The rules without and with the optional boolean mask, ``save``'s last argument (two arrays before it)."""
    return tuple(with_optional(name, save, vjp, jvp, (True, True, masked)) for masked in (False, True))


# ------------------------------------------- losses of the error p - t: squared, l2, huber, log-cosh
def _error_rules(name: str, f: Callable, df: Callable) -> tuple[Op, Op]:
    """The rules of a loss ``f(p - t)`` (targets given) and ``f(p)`` (``targets=None``).

    ``f(d, **static)`` is the loss of the error and ``df(d, **static)`` its
    derivative, both in at least float32; d/dp = f'(d), d/dt = -f'(d). Both
    rules save their inputs.
    """

    def value(predictions, targets, **static):
        return f(widen(predictions) - widen(targets), **static).astype(predictions.dtype)

    def vjp(res, g, **static):
        predictions, targets = res
        gp = widen(g) * df(widen(predictions) - widen(targets), **static)
        return gp.astype(predictions.dtype), (-gp).astype(targets.dtype)

    def jvp(res, tp, tt, **static):
        predictions, targets = res
        dot = _add(None if tp is None else widen(tp), None if tt is None else -widen(tt))
        if dot is None:
            return None
        return (df(widen(predictions) - widen(targets), **static) * dot).astype(predictions.dtype)

    def value0(predictions, **static):
        return f(widen(predictions), **static).astype(predictions.dtype)

    def vjp0(res, g, **static):
        return ((widen(g) * df(widen(res[0]), **static)).astype(g.dtype),)

    def jvp0(res, tp, **static):
        return None if tp is None else (df(widen(res[0]), **static) * widen(tp)).astype(tp.dtype)

    return Op(name, value=value, vjp=vjp, jvp=jvp), Op(name, value=value0, vjp=vjp0, jvp=jvp0)


def _error_loss(op: str, rules: tuple[Op, Op], predictions, targets, *, broadcast: bool, hypers=(), **static):
    """Check and promote (predictions, targets), then apply the rule (``targets=None`` means zeros).

    ``hypers``: array hyper-parameters, passed after the arrays (rules of :func:`with_array_hypers`)."""
    predictions = float_input(op, "predictions", predictions)
    if targets is None:
        return rules[1](predictions, *hypers, **static)
    predictions, targets = promote_floats(op, predictions=predictions, targets=targets)
    if broadcast:
        predictions, targets = _broadcast(op, predictions=predictions, targets=targets)
    else:
        _same_shape(op, ("predictions", "targets"), predictions, targets)
    return rules[0](predictions, targets, *hypers, **static)


_SQUARED = _error_rules("squared_error", lambda d, scale: scale * d * d, lambda d, scale: 2 * scale * d)

_squared_common = dict(
    forms=_SQUARED, saves="both inputs (only the predictions when targets is None)",
    checks=Checks(sample=S.pair, cases=S.SAME_SHAPE_PAIRS, extreme=S.extreme_pair), diff_argnums=(0, 1),
    differs="integer predictions are promoted to float (optax raises)",
)


@declare(**_squared_common)
def squared_error(predictions, targets=None):
    """Elementwise squared error ``(p - t)²``, as ``optax.losses.squared_error``.

    ``targets`` must have the shape of ``predictions`` (as in Optax, no
    broadcasting); ``targets=None`` means zeros.

    Derivative: d/dp = 2(p - t), d/dt = -2(p - t); the forward rule is
    ``2(p - t)(ṗ - ṫ)``.
    """
    return _error_loss("funcnet.losses.squared_error", _SQUARED, predictions, targets, broadcast=False, scale=1.0)


@declare(**_squared_common)
def l2_loss(predictions, targets=None):
    """Half the squared error ``½(p - t)²``, as ``optax.losses.l2_loss``.

    Derivative: d/dp = p - t, d/dt = -(p - t); the forward rule is ``(p - t)(ṗ - ṫ)``.
    """
    return _error_loss("funcnet.losses.l2_loss", _SQUARED, predictions, targets, broadcast=False, scale=0.5)


def _huber_value(d, delta):
    a = jnp.abs(d)
    quadratic = jnp.minimum(a, delta)
    return 0.5 * quadratic * quadratic + delta * (a - quadratic)


_HUBER = _error_rules("huber_loss", _huber_value, lambda d, delta: jnp.clip(d, -delta, delta))


def _huber_ddelta(res, delta):
    """d/dδ of the Huber loss: |d| - δ beyond δ, 0 within."""
    a = jnp.abs(widen(res[0]) - (widen(res[1]) if len(res) > 1 else 0))
    return (jnp.where(a > delta, a - delta, 0.0),)


_HUBER_ARRAY = tuple(with_array_hypers(rule, ("delta",), _huber_ddelta) for rule in _HUBER)


def _errors_away_from(*points):
    """(predictions, targets) whose errors p - t stay 0.05 away from ``points`` (where f'' jumps).

    A case is one shape, or (predictions' shape, targets' shape) with the targets broadcasting to it.
    """
    def sample(rng, case):
        a, b = _pair_of_shapes(case)
        targets = S.normal(rng, b)
        return np.broadcast_to(targets, a) + S.away_from(rng, a, points), targets
    return sample


_error_cases = ((), (4, 3), ((4, 3), (3,)))


@declare(forms=_HUBER + _HUBER_ARRAY, saves="both inputs (only the predictions when targets is None)",
         diff_argnums=(0, 1),
         kink="none in the gradient (Huber is once differentiable); the second derivative jumps from 1 to 0 at |p "
              "- t| = delta", differs="integer predictions are promoted to float (optax raises)",
         checks=Checks(sample=_errors_away_from(-1.0, 1.0), cases=_error_cases, extreme=S.extreme_pair,
                       kinks=(Kink("|p - t| = delta = 1", (np.array([1.0, -1.0, 0.0]), np.array([0.0, 0.0, 0.0])), np.array([1.0, -1.0, 0.0])),)))
def huber_loss(predictions, targets=None, *, delta=1.0):
    """Huber loss, as ``optax.losses.huber_loss``: quadratic near 0, linear beyond ``delta``.

    With d = p - t: ``L = ½d²`` for |d| ≤ δ, and ``δ(|d| - ½δ)`` beyond.
    ``predictions`` and ``targets`` broadcast against each other (as in Optax);
    ``targets=None`` means zeros.

    ``delta`` is a number, or an array (traced too, e.g. under ``jit`` or ``vmap``)
    that broadcasts against the loss and gets its gradient.

    Derivative: d/dp = clip(d, -δ, δ), d/dt = -clip(d, -δ, δ), d/dδ = |d| - δ
    beyond δ and 0 within; the forward rule is ``clip(d, -δ, δ)(ṗ - ṫ)`` (+ the
    δ term). The gradient is continuous (the second derivative jumps at |d| = δ).
    """
    op = "funcnet.losses.huber_loss"
    if is_number(delta):
        return _error_loss(op, _HUBER, predictions, targets, broadcast=True, delta=float(delta))
    return _error_loss(op, _HUBER_ARRAY, predictions, targets, broadcast=True,
                       hypers=(float_input(op, "delta", delta),))


_LOG2 = math.log(2.0)
_LOG_COSH = _error_rules("log_cosh", lambda d: jnp.logaddexp(d, -d) - _LOG2, lambda d: jnp.tanh(d))


@declare(forms=_LOG_COSH, saves="both inputs (only the predictions when targets is None)", diff_argnums=(0, 1),
         differs="integer predictions are promoted to float (optax raises)",
         checks=Checks(sample=_errors_away_from(), cases=_error_cases, extreme=S.extreme_pair))
def log_cosh(predictions, targets=None):
    """Log-cosh loss ``log cosh(p - t)``, as ``optax.losses.log_cosh``.

    Computed as ``logaddexp(d, -d) - log 2`` (no overflow at large |d|, where
    it grows like |d| - log 2). ``predictions`` and ``targets`` broadcast
    against each other (as in Optax); ``targets=None`` means zeros.

    Derivative: d/dp = tanh(p - t), d/dt = -tanh(p - t).
    """
    return _error_loss("funcnet.losses.log_cosh", _LOG_COSH, predictions, targets, broadcast=True)


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


_BCE = Op("binary_cross_entropy", value=_bce_value, vjp=_bce_vjp, jvp=_bce_jvp)


def _probs_and_labels(rng, case):
    a, b = _pair_of_shapes(case)
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


_SIGMOID_BCE = Op("sigmoid_binary_cross_entropy", value=_sigmoid_bce_value, vjp=_sigmoid_bce_vjp,
                    jvp=_sigmoid_bce_jvp)


def _logits_and_soft_labels(rng, case):
    a, b = _pair_of_shapes(case)
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
    labels = _float_labels(op, labels, logits)
    return _SIGMOID_BCE(*_broadcast(op, logits=logits, labels=labels))


# ----------------------------------------------------- margin losses: hinge, perceptron
def _margin_value(outputs, targets, margin):
    return jnp.maximum(0.0, margin - widen(outputs) * widen(targets)).astype(outputs.dtype)


def _margin_local(outputs, targets, margin):
    """1 where the hinge is active (margin - y·t > 0), ½ at the hinge (as jnp.maximum splits a tie), 0 beyond."""
    z = margin - widen(outputs) * widen(targets)
    return jnp.where(z > 0, 1.0, jnp.where(z == 0, 0.5, 0.0))


def _margin_vjp(res, g, margin):
    outputs, targets = res
    ga = -widen(g) * _margin_local(outputs, targets, margin)
    return (ga * widen(targets)).astype(outputs.dtype), (ga * widen(outputs)).astype(targets.dtype)


def _margin_jvp(res, ty, tt, margin):
    outputs, targets = res
    dot = _add(None if ty is None else widen(ty) * widen(targets), None if tt is None else widen(tt) * widen(outputs))
    return None if dot is None else (-_margin_local(outputs, targets, margin) * dot).astype(outputs.dtype)


_MARGIN = Op("hinge_loss", value=_margin_value, vjp=_margin_vjp, jvp=_margin_jvp)


def _margin_pairs(margin):
    """Outputs and targets (in [-1.5, 1.5]) whose products stay 0.05 away from the hinge at ``margin``."""
    def sample(rng, case):
        a, b = _pair_of_shapes(case)
        outputs, targets = S.normal(rng, a), rng.uniform(-1.5, 1.5, b)
        if np.any(np.abs(margin - outputs * targets) < 0.05):
            return sample(rng, case)
        return outputs, targets
    return sample


def _margin_loss(op: str, predictor_outputs, targets, margin: float, same_shape: bool):
    outputs = float_input(op, "predictor_outputs", predictor_outputs)
    targets = _float_labels(op, targets, outputs, name="targets")
    if same_shape:
        _same_shape(op, ("predictor_outputs", "targets"), outputs, targets)
    return _MARGIN(*_broadcast(op, outputs=outputs, targets=targets), margin=margin)


_margin_common = dict(forms=_MARGIN, saves="both inputs", diff_argnums=(0, 1))


def _margin_checks(margin: float, kink: Kink) -> Checks:
    return Checks(sample=_margin_pairs(margin), cases=((), (5,), (4, 3)), kinks=(kink,),
                  extreme=lambda: (np.array([-1e4, 1e4, 0.5]), np.array([1.0, 1.0, -1.0])))


@declare(kink="at the hinge (y·t = 1) half the active gradient, as optax's jnp.maximum gives",
         differs="integer outputs are promoted to float",
         checks=_margin_checks(1.0, Kink("y·t = 1 (first entry)", (np.array([1.0, 0.5, 2.0]), np.array([1.0, -1.0, 1.0])), np.array([-0.5, 1.0, 0.0]))),
         **_margin_common)
def hinge_loss(predictor_outputs, targets):
    """Binary hinge loss ``max(0, 1 - y·t)``, as ``optax.losses.hinge_loss``.

    ``predictor_outputs`` y are real scores and ``targets`` t are ±1 (soft
    values allowed); the two broadcast against each other, as in Optax.
    Integer targets get no gradient.

    Derivative: d/dy = -t·a, d/dt = -y·a with a = 1 where 1 - y·t > 0, a = ½ at
    1 - y·t = 0 (optax's jnp.maximum splits the tie) and a = 0 beyond.
    """
    return _margin_loss("funcnet.losses.hinge_loss", predictor_outputs, targets, 1.0, same_shape=False)


@declare(kink="at y·t = 0 half the active gradient, as optax's jnp.maximum gives",
         differs="integer outputs are promoted to float",
         checks=_margin_checks(0.0, Kink("y·t = 0 (first entry)", (np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 1.0])), np.array([-0.5, 0.0, -1.0]))),
         **_margin_common)
def perceptron_loss(predictor_outputs, targets):
    """Binary perceptron loss ``max(0, -y·t)``, as ``optax.losses.perceptron_loss``.

    ``targets`` t are ±1 and must have the shape of ``predictor_outputs`` y (as
    in Optax). Integer targets get no gradient.

    Derivative: d/dy = -t·a, d/dt = -y·a with a = 1 where y·t < 0, ½ at y·t = 0
    (optax's jnp.maximum splits the tie) and 0 where y·t > 0.
    """
    return _margin_loss("funcnet.losses.perceptron_loss", predictor_outputs, targets, 0.0, same_shape=True)


# -------------------------------------------------------------- binary sparsemax loss
def _sparse_plus(z):
    return jnp.where(z <= -1, 0.0, jnp.where(z >= 1, z, (z + 1) ** 2 / 4))


def _signed(logits, positive):
    return jnp.where(positive, -widen(logits), widen(logits))


def _sparsemax_bin_vjp(res, g):
    logits, positive = res
    slope = jnp.clip((_signed(logits, positive) + 1) / 2, 0.0, 1.0)
    return (widen(g) * jnp.where(positive, -slope, slope)).astype(logits.dtype), None


def _sparsemax_bin_jvp(res, tx, _):
    if tx is None:
        return None
    logits, positive = res
    slope = jnp.clip((_signed(logits, positive) + 1) / 2, 0.0, 1.0)
    return (widen(tx) * jnp.where(positive, -slope, slope)).astype(tx.dtype)


_SPARSEMAX_BIN = Op("sparsemax_loss", value=lambda x, p: _sparse_plus(_signed(x, p)).astype(x.dtype),
                      vjp=_sparsemax_bin_vjp, jvp=_sparsemax_bin_jvp)


def _logits_and_bits(rng, shape):
    return S.away_from(rng, shape, (-1.0, 1.0)), rng.integers(0, 2, shape)


@declare(forms=_SPARSEMAX_BIN, saves="the logits and a boolean mask of the positive labels", diff_argnums=(0,),
         kink="none in the gradient (sparse_plus is once differentiable); the second derivative jumps at z = ±1, "
              "where z is -x for a positive label and x otherwise", differs="integer logits are promoted to float",
         checks=Checks(sample=_logits_and_bits, cases=((), (5,), (4, 3)),
                       extreme=lambda: (np.array([-1e4, 1e4, -1e4, 1e4, 0.5]), np.array([0, 0, 1, 1, 1]))))
def sparsemax_loss(logits, labels):
    """Binary sparsemax loss, as ``optax.losses.sparsemax_loss``: ``sparse_plus(z)``, z = -x if t else x.

    ``labels`` are 0/1 (any dtype; a non-zero label counts as positive, as
    ``jnp.where`` reads it) and get no gradient; they broadcast against the
    logits. ``sparse_plus(z)`` is 0 for z ≤ -1, (z + 1)²/4 for |z| < 1 and z for
    z ≥ 1 (Martins & Astudillo, 2016).

    Derivative: d/dx = ±sparse_sigmoid(z) = ±clip((z + 1)/2, 0, 1), with the
    sign of z = ±x.
    """
    op = "funcnet.losses.sparsemax_loss"
    logits = float_input(op, "logits", logits)
    positive = jnp.asarray(labels) != 0
    return _SPARSEMAX_BIN(*_broadcast(op, logits=logits, labels=positive))


# -------------------------------------------------------------- sigmoid focal loss
def _focal_base(x, t, gamma):
    """(CE, log q, w = q^γ, softplus(x), softplus(-x)) with q = 1 - p_t, finite for any finite logit."""
    sp_pos, sp_neg = jnp.logaddexp(0.0, x), jnp.logaddexp(0.0, -x)  # -log σ(-x), -log σ(x)
    ce = t * sp_neg + (1 - t) * sp_pos
    # log(1 - p_t) = log((1 - t)σ(x) + tσ(-x)), in logs so that it stays finite when σ underflows
    log_q = jnp.logaddexp(jnp.log1p(-t) - sp_neg, jnp.log(t) - sp_pos)
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
    out = _add(None if tx is None else widen(tx) * dx, None if tt is None else widen(tt) * dt)
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
                 "term", checks=Checks(sample=_logits_and_soft_labels, cases=((), (4, 3), ((4, 3), (3,))),
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
    labels = _float_labels(op, labels, logits)
    args = _broadcast(op, logits=logits, labels=labels)
    if is_number(gamma) and (alpha is None or is_number(alpha)):
        return _FOCAL(*args, alpha=None if alpha is None else float(alpha), gamma=float(gamma))
    gamma = float_input(op, "gamma", gamma)
    if alpha is None or is_number(alpha):
        return _FOCAL_GAMMA(*args, gamma, alpha=None if alpha is None else float(alpha))
    return _FOCAL_BOTH(*args, float_input(op, "alpha", alpha), gamma)


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


_SCE_UNMASKED, _SCE = _mask_optional("softmax_cross_entropy", _sce_save, _sce_vjp, _sce_jvp)


def _logits_and_targets(rng, case):
    """Logits and soft targets in [0, 1]; 2-D targets are distributions (one-hot-like: rows sum to 1)."""
    a, b = _pair_of_shapes(case)
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


_INT_CE_UNMASKED, _INT_CE = _mask_optional("softmax_cross_entropy_with_integer_labels", _int_ce_save,
                                           _int_ce_vjp, _int_ce_jvp)


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


_SVM = Op("multiclass_svm_loss", value=lambda *a, **s: _svm_save(*a, **s)[0], save=_svm_save,
            vjp=_svm_vjp, jvp=_svm_jvp)


def _svm_scores(rng, shape):
    """Scores and labels with every s_j - s_y at least 0.05 away from -1 and -2 (the margins of both rows)."""
    scores, labels = S.logits_and_classes(rng, shape)
    correct = np.take_along_axis(scores, labels[..., None], -1)
    if any(np.any(np.abs(scores - correct + margin) < 0.05) for margin in (1.0, 2.0)):
        return _svm_scores(rng, shape)
    return scores, labels


@declare(forms=_SVM, saves="boolean masks of the active classes and of the label", diff_argnums=(0,),
         kink="a class exactly at the margin (s_j - s_y + margin == 0) is inactive: gradient 0, like ReLU at 0",
         checks=Checks(sample=_svm_scores, cases=S.CLASS_SHAPES, variants=({}, {"margin": 2.0}),
                       extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])),
                       kinks=(Kink("class 1 at the margin (scores 1, 0, 3; label 0; margin 1)", (np.array([1.0, 0.0, 3.0]), np.array(0)), np.array([-1.0, 0.0, 1.0]), {"margin": 1.0}),)))
def multiclass_svm_loss(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss ``Σ_{j≠y} max(0, s_j - s_y + Δ)``, per example.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)`` (or one that broadcasts with it); ``margin`` is Δ, a
    number. This is the lecture's (Weston–Watkins) form, which *sums* over the
    wrong classes; ``optax.losses.multiclass_hinge_loss`` takes the *max*
    instead, hence the different name.

    Derivative: d/ds_j = 1[s_j - s_y + Δ > 0] for j ≠ y, and d/ds_y = -(number
    of such active classes); the forward rule is ``Σ_{active j} ṡ_j - (count)·ṡ_y``.
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
        arrays["where"] = _expand_mask(op, _bool_mask(op, where), axis, logits.ndim)
    full = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    lead = len(full) - logits.ndim
    sm_axes = tuple(a + lead for a in canonical_axis(op, axis, logits.ndim))
    sum_axes = canonical_axis(op, axis, len(full))
    return [jnp.broadcast_to(v, full) for v in arrays.values()], sm_axes, sum_axes


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
        terms = _add(terms, widen(tt) * (1 - p))
    if terms is None:
        return out
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (widen(out) + epsilon * jnp.sum(terms, axis=sum_axes)).astype(out.dtype)


_POLY_UNMASKED, _POLY = _mask_optional("poly_loss_cross_entropy", _poly_save, _poly_vjp, _poly_jvp)


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


# ----------------------------------------- multiclass hinge (Crammer–Singer) and perceptron
def _cs_save(scores, labels, margin):
    s = widen(scores)
    is_label = labels[..., None] == jnp.arange(s.shape[-1])  # all False for an out-of-range label
    shifted = jnp.where(is_label, s, s + margin)
    top = jnp.max(shifted, axis=-1)
    loss = top - _take(s, labels, -1)  # NaN for an out-of-range label
    return loss.astype(scores.dtype), (shifted == top[..., None], is_label)


def _cs_local(res):
    """d loss / d scores: the maximisers share 1 equally (as jnp.max's gradient), minus the one-hot label."""
    winners, is_label = res
    share = winners / jnp.sum(winners, axis=-1, keepdims=True)
    valid = jnp.any(is_label, axis=-1, keepdims=True)
    return jnp.where(valid, share - is_label, jnp.nan)


_CRAMMER_SINGER = Op(
    "multiclass_hinge_loss", value=lambda *a, **s: _cs_save(*a, **s)[0], save=_cs_save,
    vjp=lambda res, g, margin: ((widen(g)[..., None] * _cs_local(res)).astype(g.dtype), None),
    jvp=lambda res, ts, _, margin: None if ts is None else jnp.sum(_cs_local(res) * widen(ts), axis=-1).astype(ts.dtype),
)


def _untied_scores(margin):
    """Scores and labels whose top two shifted scores (s_j + margin for j ≠ y) differ by at least 0.05."""
    def sample(rng, shape):
        scores, labels = S.logits_and_classes(rng, shape)
        shifted = np.where(np.arange(shape[-1]) == labels[..., None], scores, scores + margin)
        top2 = np.sort(shifted, axis=-1)[..., -2:]
        if np.any(top2[..., 1] - top2[..., 0] < 0.05):
            return sample(rng, shape)
        return scores, labels
    return sample


def _crammer_singer(op: str, scores, labels, margin: float):
    scores = float_input(op, "scores", scores)
    labels = as_integer_array(op, "labels", labels)
    if scores.ndim < 1:
        raise ValueError(f"{op}: `scores` must have a class axis, got a scalar")
    scores, labels, _, _ = _class_axis_labels(op, scores, labels, -1, name="scores")
    return _CRAMMER_SINGER(scores, labels, margin=margin)


_cs_common = dict(forms=_CRAMMER_SINGER, saves="boolean masks of the maximising classes and of the label",
                  kink="tied maximisers share the gradient equally, as jnp.max's gradient does")


def _cs_checks(margin: float, kink: Kink) -> Checks:
    return Checks(sample=_untied_scores(margin), cases=((3,), (4, 3)), kinks=(kink,),
                  extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])))
_cs_differs = ("integer scores are promoted to float; an out-of-range label gives a NaN loss and gradient row "
               "(optax's one-hot of it is all zeros: a finite, meaningless loss)")


@declare(differs=_cs_differs,
         checks=_cs_checks(1.0, Kink("classes 0 and 2 tie (scores 2, 0, 3; label 2)", (np.array([2.0, 0.0, 3.0]), np.array(2)), np.array([0.5, 0.0, -0.5]))),
         **_cs_common)
def multiclass_hinge_loss(scores, labels):
    """Crammer–Singer multiclass hinge loss ``max_j (s_j + 1 - [j = y]) - s_y``, as Optax's.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)``. This is the *max* over the classes (Crammer & Singer,
    2001): only the worst margin violation counts. :func:`multiclass_svm_loss`
    is the lecture's Weston–Watkins form, which *sums* ``max(0, s_j - s_y + 1)``
    over every wrong class; the two agree when at most one class violates the
    margin.

    Derivative: d/ds = onehot(argmax_j(s_j + 1 - [j = y])) - onehot(y).
    """
    return _crammer_singer("funcnet.losses.multiclass_hinge_loss", scores, labels, 1.0)


@declare(differs=_cs_differs,
         checks=_cs_checks(0.0, Kink("classes 0 and 2 tie (scores 3, 0, 3; label 2)", (np.array([3.0, 0.0, 3.0]), np.array(2)), np.array([0.5, 0.0, -0.5]))),
         **_cs_common)
def multiclass_perceptron_loss(scores, labels):
    """Multiclass perceptron loss ``max_j s_j - s_y``, as ``optax.losses.multiclass_perceptron_loss``.

    Derivative: d/ds = onehot(argmax s) - onehot(y); tied maximisers share the
    1 equally.
    """
    return _crammer_singer("funcnet.losses.multiclass_perceptron_loss", scores, labels, 0.0)


# ------------------------------------------------------------ multiclass sparsemax loss
def _sparsemax(z):
    """The Euclidean projection of each row of ``z`` onto the simplex (Martins & Astudillo, 2016)."""
    desc = -jnp.sort(-z, axis=-1)
    cumulative = jnp.cumsum(desc, axis=-1)
    k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = jnp.sum(1 + k * desc > cumulative, axis=-1, keepdims=True)  # the support is a prefix of desc
    tau = (jnp.take_along_axis(cumulative, support - 1, axis=-1) - 1) / support.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def _sparsemax_save(scores, labels):
    s = widen(scores)
    z = s - lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))  # shift-invariant; keeps cumsums small
    p = _sparsemax(z)
    loss = jnp.sum(p * z, axis=-1) - _take(z, labels, -1) + 0.5 * (1 - jnp.sum(p * p, axis=-1))
    return loss.astype(scores.dtype), (p, labels)


def _sparsemax_vjp(res, g):
    p, labels = res
    gw = jnp.where(_label_index(labels, p.shape[-1]) < p.shape[-1], widen(g), jnp.nan)
    return (gw[..., None] * p + _at_labels(-gw, labels, p.shape, p.ndim - 1)).astype(g.dtype), None


def _sparsemax_jvp(res, ts, _):
    if ts is None:
        return None
    p, labels = res
    tw = widen(ts)
    return (jnp.sum(p * tw, axis=-1) - _take(tw, labels, -1)).astype(ts.dtype)


_SPARSEMAX = Op("multiclass_sparsemax_loss", value=lambda *a: _sparsemax_save(*a)[0], save=_sparsemax_save,
                  vjp=_sparsemax_vjp, jvp=_sparsemax_jvp)


@declare(forms=_SPARSEMAX, saves="the sparsemax probabilities and the labels", diff_argnums=(0,),
         kink="none in the gradient (p - onehot(y) is continuous, ties included); the second derivative jumps "
              "where a class enters or leaves the support",
         differs="scores of any batch shape (..., classes) (optax: exactly (batch, classes)); integer scores are "
                 "promoted to float; an out-of-range label gives a NaN loss and gradient row",
         checks=Checks(sample=S.logits_and_classes, cases=((2, 3), (4, 5)),
                       extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2]))))
def multiclass_sparsemax_loss(scores, labels):
    """Multiclass sparsemax loss (Martins & Astudillo, 2016), as Optax's function of that name.

    With p = sparsemax(s), the Euclidean projection of s onto the simplex,
    ``L = ⟨p, s⟩ - s_y + ½(1 - ‖p‖²)``: zero when the label alone has
    probability 1 with a margin, and ≥ 0 always. The projection sorts each row
    (ties are harmless: p is unique) after subtracting the row's maximum.

    Derivative: d/ds = p - onehot(y) (the projection's own derivative cancels).
    Labels are range-checked when known at trace time; under ``jit`` an
    out-of-range label gives NaN.
    """
    op = "funcnet.losses.multiclass_sparsemax_loss"
    scores = float_input(op, "scores", scores)
    labels = as_integer_array(op, "labels", labels)
    if scores.ndim < 1:
        raise ValueError(f"{op}: `scores` must have a class axis, got a scalar")
    scores, labels, _, _ = _class_axis_labels(op, scores, labels, -1, name="scores")
    return _SPARSEMAX(scores, labels)


# ------------------------------------------------------------------ KL divergences
def _reduced_rules(name: str, parts: Callable) -> tuple[Op, Op]:
    """Rules for ``Σ_axes term(a, b)`` over an optional mask, from ``parts(a, b) -> (term, d/da, d/db)``."""

    def save(a, b, where, axes):
        term = parts(widen(a), widen(b))[0]
        if where is not None:
            term = jnp.where(where, term, 0.0)
        return jnp.sum(term, axis=axes).astype(a.dtype), (a, b, where)

    def vjp(res, g, axes):
        a, b, where = res
        _, da, db = parts(widen(a), widen(b))
        gw = jnp.expand_dims(widen(g), axes)
        ga, gb = gw * da, gw * db
        if where is not None:
            ga, gb = jnp.where(where, ga, 0.0), jnp.where(where, gb, 0.0)
        return ga.astype(a.dtype), gb.astype(b.dtype), None

    def jvp(res, ta, tb, _, axes):
        a, b, where = res
        _, da, db = parts(widen(a), widen(b))
        dot = _add(None if ta is None else widen(ta) * da, None if tb is None else widen(tb) * db)
        if dot is None:
            return None
        if where is not None:
            dot = jnp.where(where, dot, 0.0)
        return jnp.sum(dot, axis=axes).astype(a.dtype)

    return _mask_optional(name, save, vjp, jvp)


def _kl_parts(log_predictions, targets):
    """t(log t - log q): 0 where t = 0, with gradient 0 in t there (its true slope is -∞)."""
    zero = targets == 0
    log_t = jnp.log(jnp.where(zero, 1.0, targets))
    term = jnp.where(zero, 0.0, targets * (log_t - log_predictions))
    return term, -targets, jnp.where(zero, 0.0, log_t + 1 - log_predictions)


def _kl_log_parts(log_predictions, log_targets):
    """e^{log t}(log t - log q): 0 where log t = -∞, with gradient 0 there."""
    none = log_targets == -jnp.inf
    t = jnp.exp(log_targets)
    gap = jnp.where(none, 0.0, log_targets - log_predictions)
    return t * gap, -t, t * (gap + 1)


def _generalized_kl_parts(log_predictions, targets):
    term, d_lp, d_t = _kl_parts(log_predictions, targets)
    q = jnp.exp(log_predictions)
    return term + q - targets, d_lp + q, d_t - 1


_KL = _reduced_rules("kl_divergence", _kl_parts)
_KL_LOG = _reduced_rules("kl_divergence_with_log_targets", _kl_log_parts)
_GENERALIZED_KL = _reduced_rules("generalized_kl_divergence", _generalized_kl_parts)


def _divergence(op: str, rules: tuple[Op, Op], log_predictions, targets, axis, where, names_=("targets",)):
    log_predictions = float_input(op, "log_predictions", log_predictions)
    targets = float_input(op, names_[0], targets)
    log_predictions, targets = promote_floats(op, log_predictions=log_predictions, targets=targets)
    arrays = dict(log_predictions=log_predictions, targets=targets)
    if where is not None:
        arrays["where"] = _bool_mask(op, where)
    full = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    args = [jnp.broadcast_to(v, full) for v in arrays.values()]
    axes = canonical_axis(op, axis, len(full))
    return (rules[1] if where is not None else rules[0])(*args, axes=axes)


def _log_distributions(rng, case):
    """Log-predictions and targets: two distributions along the last axis (the first as logs)."""
    a, b = _pair_of_shapes(case)
    q, t = rng.uniform(0.1, 1.0, a), rng.uniform(0.1, 1.0, b)
    return np.log(q / q.sum(-1, keepdims=True)), t / t.sum(-1, keepdims=True)


def _log_log_distributions(rng, case):
    log_q, t = _log_distributions(rng, case)
    return log_q, np.log(t)


_kl_cases = ((5,), (4, 3), ((4, 3), (3,)))
_kl_extreme = lambda: (np.array([[-1e4, -1e-8, -50.0], [-3.0, -1e4, -1e-8]]),  # noqa: E731
                       np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
_kl_differs = ("integer inputs are promoted to float (optax raises); a zero target adds 0 and has gradient 0 "
               "even where log_predictions is -inf (optax: NaN)")


@declare(forms=_KL, saves="both inputs (and the mask if given)", diff_argnums=(0, 1), differs=_kl_differs,
         kink="t = 0: the term is 0 (0·log 0 = 0) and its gradient in t is taken as 0 (the one-sided slope is -∞); "
              "its gradient in log_predictions is -t = 0",
         checks=Checks(sample=_log_distributions, cases=_kl_cases, extreme=_kl_extreme,
                       kinks=(Kink("t = 0 at one class", (np.array([-1.0, -0.5, -2.0]), np.array([0.0, 0.5, 0.5])), np.array([0.0, -0.5, -0.5])),)))
def kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Kullback–Leibler divergence ``Σ_i t_i (log t_i - log q_i)``, as ``optax.losses.kl_divergence``.

    ``log_predictions`` are log-probabilities log q (e.g. a log-softmax) and
    ``targets`` probabilities t; they broadcast against each other. ``axis``
    (int, tuple or None) and ``where`` (a boolean mask broadcasting against the
    inputs) select what is summed, as in Optax. A zero target adds 0 (0·log 0 =
    0), also where log q = -∞, where Optax gives NaN.

    Derivative: d/d(log q) = -t, d/dt = log t + 1 - log q (0 where t = 0).
    """
    return _divergence("funcnet.losses.kl_divergence", _KL, log_predictions, targets, axis, where)


@declare(forms=_KL_LOG, saves="both inputs (and the mask if given)", diff_argnums=(0, 1),
         differs="integer inputs are promoted to float (optax raises); a target of log 0 = -inf adds 0 with "
                 "gradient 0 (optax: NaN)", checks=Checks(sample=_log_log_distributions, cases=_kl_cases,
                       extreme=lambda: (np.array([[-1e4, -1e-8, -50.0]]), np.array([[-1e4, -1e-8, -60.0]]))))
def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None):
    """KL divergence with both arguments as logs: ``Σ_i e^{log t_i}(log t_i - log q_i)``, as Optax's.

    A target of log 0 = -∞ adds 0 (Optax: NaN from 0·∞). ``axis`` and
    ``where`` as in :func:`kl_divergence`.

    Derivative: d/d(log q) = -t, d/d(log t) = t(log t - log q + 1), with t = e^{log t}.
    """
    return _divergence("funcnet.losses.kl_divergence_with_log_targets", _KL_LOG, log_predictions, log_targets,
                       axis, where, names_=("log_targets",))


@declare(forms=_GENERALIZED_KL, saves="both inputs (and the mask if given)", diff_argnums=(0, 1),
         differs=_kl_differs + "; convex_kl_divergence is the same function, with optax's deprecation warning",
         kink="t = 0: as kl_divergence (the KL term's gradient in t is taken as 0, so the total is -1)",
         checks=Checks(sample=_log_distributions, cases=_kl_cases, extreme=_kl_extreme,
                       kinks=(Kink("t = 0 at one class (q = 1)", (np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.5])), np.array([1.0, 0.5, 0.5])),)))
def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Generalized KL divergence ``Σ_i [t_i (log t_i - log q_i) + q_i - t_i]``, as Optax's.

    For unnormalised non-negative measures; it equals :func:`kl_divergence`
    when both sum to 1. ``convex_kl_divergence`` is the same function under
    Optax's deprecated name (it warns, as Optax's does). ``axis`` and ``where``
    as in :func:`kl_divergence`.

    Derivative: d/d(log q) = q - t, d/dt = log t - log q (-1 where t = 0).
    """
    return _divergence("funcnet.losses.generalized_kl_divergence", _GENERALIZED_KL, log_predictions, targets,
                       axis, where)


def convex_kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Deprecated name of :func:`generalized_kl_divergence` (warns, as Optax's does)."""
    warnings.warn("The function convex_kl_divergence is deprecated. Please use generalized_kl_divergence instead.",
                  DeprecationWarning, stacklevel=2)
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)


# -------------------------------------------------------------- cosine similarity
def _cosine_save(a, b, where, axes, epsilon, distance):
    A, B = widen(a), widen(b)
    if where is not None:
        A, B = jnp.where(where, A, 0.0), jnp.where(where, B, 0.0)
    a2, b2 = jnp.sum(A * A, axis=axes, keepdims=True), jnp.sum(B * B, axis=axes, keepdims=True)
    na, nb = jnp.sqrt(jnp.maximum(a2, epsilon)), jnp.sqrt(jnp.maximum(b2, epsilon))
    s = jnp.sum(A * B, axis=axes, keepdims=True) / (na * nb)
    value = jnp.squeeze(1 - s if distance else s, axes)
    return value.astype(a.dtype), (a, b, where, na, nb, a2 > epsilon, b2 > epsilon, s)


def _cosine_locals(res, distance):
    """(ds/da, ds/db): b/(|a||b|) - s·a/|a|² (the last term only where |a|² is not clipped), and alike."""
    a, b, where, na, nb, free_a, free_b, s = res
    A, B = widen(a), widen(b)
    da = B / (na * nb) - jnp.where(free_a, s * A / (na * na), 0.0)
    db = A / (na * nb) - jnp.where(free_b, s * B / (nb * nb), 0.0)
    if distance:
        da, db = -da, -db
    if where is not None:
        da, db = jnp.where(where, da, 0.0), jnp.where(where, db, 0.0)
    return da, db


def _cosine_vjp(res, g, axes, epsilon, distance):
    da, db = _cosine_locals(res, distance)
    gw = jnp.expand_dims(widen(g), axes)
    return (gw * da).astype(res[0].dtype), (gw * db).astype(res[1].dtype), None


def _cosine_jvp(res, ta, tb, _, axes, epsilon, distance):
    da, db = _cosine_locals(res, distance)
    dot = _add(None if ta is None else widen(ta) * da, None if tb is None else widen(tb) * db)
    return None if dot is None else jnp.sum(dot, axis=axes).astype(res[0].dtype)


_COSINE = _mask_optional("cosine_similarity", _cosine_save, _cosine_vjp, _cosine_jvp)


def _cosine(op: str, predictions, targets, epsilon, axis, where, distance: bool):
    predictions, targets = promote_floats(op, predictions=predictions, targets=targets)
    arrays = dict(predictions=predictions, targets=targets)
    if where is not None:
        arrays["where"] = _bool_mask(op, where)
    full = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    args = [jnp.broadcast_to(v, full) for v in arrays.values()]
    static = dict(axes=canonical_axis(op, axis, len(full)), epsilon=static_float(op, "epsilon", epsilon),
                  distance=distance)
    return (_COSINE[1] if where is not None else _COSINE[0])(*args, **static)


_cosine_common = dict(
    forms=_COSINE, saves="both inputs, and per row the two norms and the similarity", diff_argnums=(0, 1),
    checks=Checks(sample=_normal_pair, cases=((5,), (4, 3), ((4, 3), (3,))),
                  extreme=lambda: (np.array([[1e4, -1e4, 3.0], [1e-4, 2.0, -1.0]]),
                                   np.array([[1.0, 2.0, 1e4], [1e4, 1e-4, 1.0]]))),
    kink="where |a|² ≤ epsilon the norm is the constant √epsilon (no gradient through it); a zero vector with "
         "epsilon = 0 gives NaN, as in optax",
    differs="integer inputs are promoted to float (optax raises); `epsilon` must be a number (optax also "
            "takes an array); at |a|² = epsilon exactly the norm counts as clipped (optax: half of each side); "
            "the inputs are broadcast first and then normalised along `axis` (optax normalises each in its own "
            "shape, which differs only where broadcasting stretches a reduced axis)",
)


@declare(**_cosine_common)
def cosine_similarity(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """Cosine similarity ``⟨a, b⟩ / (|a| |b|)`` along ``axis``, as ``optax.losses.cosine_similarity``.

    Each norm is ``sqrt(max(|a|², ε))``. ``axis`` (int, tuple or None) and
    ``where`` (a boolean mask broadcasting against the inputs) as in Optax;
    the inputs broadcast against each other.

    Derivative: d/da = b/(|a||b|) - s·a/|a|² (without the last term where |a|²
    ≤ ε), and symmetrically for b; s is the similarity.
    """
    return _cosine("funcnet.losses.cosine_similarity", predictions, targets, epsilon, axis, where, False)


@declare(**_cosine_common)
def cosine_distance(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """Cosine distance ``1 - cosine_similarity``, as ``optax.losses.cosine_distance``.

    Derivative: minus that of :func:`cosine_similarity`.
    """
    return _cosine("funcnet.losses.cosine_distance", predictions, targets, epsilon, axis, where, True)


# ------------------------------------------------------------------- label smoothing
def smooth_labels(labels, alpha, *, axis=-1, where=None):
    """Label smoothing ``(1 - α)·t + α/K``, as ``optax.losses.smooth_labels``.

    K is the number of classes along ``axis`` (or of unmasked classes per row
    when ``where`` is given). A linear map of the labels, written in plain
    ``jnp`` with no rule of its own: autodiff of it is exact and costs nothing.
    """
    op = "funcnet.losses.smooth_labels"
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"{op}: `labels` must be floating-point (as in optax), got {labels.dtype}{list(labels.shape)}")
    axes = canonical_axis(op, axis, labels.ndim)
    if where is None:
        count = math.prod(labels.shape[a] for a in axes)
    else:
        count = jnp.sum(_bool_mask(op, where), axis=axes, keepdims=True)
    return (1.0 - alpha) * labels + alpha / count


# --------------------------------------------------------------------- penalties
def _penalty_rule(name: str, elementwise: Callable, derivative: Callable) -> Op:
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

    return Op(name, value=value, save=lambda *leaves: (value(*leaves), leaves), vjp=vjp, jvp=jvp)


_L1 = _penalty_rule("l1_penalty", jnp.abs, jnp.sign)
_L2 = _penalty_rule("l2_penalty", jnp.square, lambda w: 2 * w)


def _penalty(rule: Op, params, is_weight):
    leaves = [float_input(f"funcnet.losses.{rule.name}", "params", w) for w in weight_leaves(params, is_weight)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return rule(*leaves)


_params_extreme = lambda: ({"w": np.array([[1e4, -1e4], [0.5, -0.5]]), "b": np.array([1e4, 1.0])},)  # noqa: E731


@declare(forms=_L1, saves="the weight leaves", diff_argnums=(0,),
         kink="sign(0) = 0: a weight at exactly 0 gets gradient 0",
         checks=Checks(sample=S.params, cases=S.LAYOUTS, extreme=_params_extreme,
                       kinks=(Kink("weights at 0", (np.array([[0.0, -0.5], [2.0, 0.0]]),), np.array([[0.0, -1.0], [1.0, 0.0]])),)))
def l1_penalty(params, is_weight=None):
    """L1 penalty ``Σ |W_ij|`` over the weight leaves of a parameter pytree.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded, as in weight decay. Returns a scalar (float32 zero
    when there is no weight leaf). Optax has no namesake.

    Derivative: sign(W), with the convention sign(0) = 0 at the kink; the
    forward rule is ``Σ sign(W) ⊙ Ẇ``.
    """
    return _penalty(_L1, params, is_weight)


@declare(forms=_L2, saves="the weight leaves", diff_argnums=(0,),
         checks=Checks(sample=S.params, cases=S.LAYOUTS, extreme=_params_extreme))
def l2_penalty(params, is_weight=None):
    """L2 penalty ``Σ W_ij²`` (squared Frobenius norms) over the weight leaves.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded. Returns a scalar; note there is no ½ factor.

    Derivative: 2W; the forward rule is ``Σ 2W ⊙ Ẇ``.
    """
    return _penalty(_L2, params, is_weight)


__all__ = names("losses", __name__) + ["convex_kl_divergence", "smooth_labels", "default_is_weight", "weight_leaves",
                                       "LOG_FLOOR"]
