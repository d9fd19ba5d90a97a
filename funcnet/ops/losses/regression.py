"""Regression losses of the error p - t (squared, l2, huber, log-cosh) and the cosine similarity and distance."""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import (
    broadcast_args,
    broadcast_with_mask,
    canonical_axis,
    check_per_row,
    check_range,
    float_input,
    is_number,
    promote_floats,
)
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.binding import Op, with_array_hypers
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import (
    check_same_shape,
    mask_optional,
    normal_pair,
    pair_of_shapes,
)

declare = declarer("losses", twins=twin, upstream=optax.losses)


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
        dot = add_tangents(None if tp is None else widen(tp), None if tt is None else -widen(tt))
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
        predictions, targets = broadcast_args(op, predictions=predictions, targets=targets)
    else:
        check_same_shape(op, ("predictions", "targets"), predictions, targets)
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
        a, b = pair_of_shapes(case)
        targets = S.normal(rng, b)
        return np.broadcast_to(targets, a) + S.away_from(rng, a, points), targets
    return sample


_error_cases = ((), (4, 3), ((4, 3), (3,)))


@declare(forms=_HUBER + _HUBER_ARRAY, saves="both inputs (only the predictions when targets is None)",
         diff_argnums=(0, 1),
         kink="none in the gradient (Huber is once differentiable); the second derivative jumps from 1 to 0 at |p "
              "- t| = delta", differs="integer predictions are promoted to float (optax raises); a concrete delta < 0 "
                                     "or NaN raises (optax returns a negative loss)",
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
    check_range(op, "delta", delta, low=0, meaning="the half-width of the quadratic zone")
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


# -------------------------------------------------------------- cosine similarity
def _cosine_save(a, b, where, axes, epsilon, distance):
    A, B = widen(a), widen(b)
    if where is not None:
        A, B = jnp.where(where, A, 0.0), jnp.where(where, B, 0.0)
    a2, b2 = jnp.sum(A * A, axis=axes, keepdims=True), jnp.sum(B * B, axis=axes, keepdims=True)
    if not isinstance(epsilon, float):  # an array, in the loss's shape
        epsilon = jnp.expand_dims(epsilon, axes)
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
    dot = add_tangents(None if ta is None else widen(ta) * da, None if tb is None else widen(tb) * db)
    return None if dot is None else jnp.sum(dot, axis=axes).astype(res[0].dtype)


def _cosine_depsilon(res, axes, epsilon, distance):
    """ds/dε = -s/2 (c_a/|a|² + c_b/|b|²), with c = 1 where that norm is clipped (|a|² ≤ ε), else 0."""
    _, _, _, na, nb, free_a, free_b, s = res
    ds = -0.5 * s * (jnp.where(free_a, 0.0, 1 / (na * na)) + jnp.where(free_b, 0.0, 1 / (nb * nb)))
    return (jnp.squeeze(-ds if distance else ds, axes),)


_COSINE = mask_optional("cosine_similarity", _cosine_save, _cosine_vjp, _cosine_jvp)
_COSINE_ARRAY = tuple(with_array_hypers(rule, ("epsilon",), _cosine_depsilon) for rule in _COSINE)


def _cosine(op: str, predictions, targets, epsilon, axis, where, distance: bool):
    number = is_number(epsilon)
    named = dict(predictions=predictions, targets=targets) | ({} if number else dict(epsilon=epsilon))
    predictions, targets, *hypers = promote_floats(op, **named)
    args, full = broadcast_with_mask(op, where, predictions=predictions, targets=targets)
    static = dict(axes=canonical_axis(op, axis, len(full)), distance=distance)
    masked = where is not None
    if number:
        return _COSINE[masked](*args, epsilon=float(epsilon), **static)
    # optax clips the keepdims |a|² at ε; the rule takes ε in the loss's shape
    check_per_row(op, "epsilon", hypers[0], full, static["axes"])
    rows = jnp.reshape(hypers[0], (1,) * (len(full) - hypers[0].ndim) + hypers[0].shape)
    return _COSINE_ARRAY[masked](*args, jnp.squeeze(rows, static["axes"]), **static)


_cosine_common = dict(
    forms=_COSINE + _COSINE_ARRAY, diff_argnums=(0, 1),
    saves="both inputs, and per row the two norms and the similarity (and epsilon when it is an array)",
    checks=Checks(sample=normal_pair, cases=((5,), (4, 3), ((4, 3), (3,))),
                  extreme=lambda: (np.array([[1e4, -1e4, 3.0], [1e-4, 2.0, -1.0]]),
                                   np.array([[1.0, 2.0, 1e4], [1e4, 1e-4, 1.0]]))),
    kink="where |a|² ≤ epsilon the norm is the constant √epsilon (no gradient in a through it); a zero vector with "
         "epsilon = 0 gives NaN, as in optax",
    differs="integer inputs are promoted to float (optax raises); an array `epsilon` must broadcast to the "
            "norms' keepdims shape (optax also takes one that varies along `axis`: a norm per entry); at |a|² = "
            "epsilon exactly the norm counts as clipped (optax: half of each side); the inputs are broadcast first "
            "and then normalised along `axis` (optax normalises each in its own shape, which differs only where "
            "broadcasting stretches a reduced axis)",
)


@declare(**_cosine_common)
def cosine_similarity(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """Cosine similarity ``⟨a, b⟩ / (|a| |b|)`` along ``axis``, as ``optax.losses.cosine_similarity``.

    Each norm is ``sqrt(max(|a|², ε))``. ``axis`` (int, tuple or None) and
    ``where`` (a boolean mask broadcasting against the inputs) as in Optax;
    the inputs broadcast against each other. ``epsilon`` is a number, or an
    array (traced too) that broadcasts against the norms kept with ``keepdims``
    and gets its gradient.

    Derivative: d/da = b/(|a||b|) - s·a/|a|² (without the last term where |a|²
    ≤ ε), and symmetrically for b; s is the similarity. d/dε = -s/2 (c_a/ε +
    c_b/ε), c_a = 1 where |a|² ≤ ε (the norm is clipped) and 0 otherwise.
    """
    return _cosine("funcnet.losses.cosine_similarity", predictions, targets, epsilon, axis, where, False)


@declare(**_cosine_common)
def cosine_distance(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """Cosine distance ``1 - cosine_similarity``, as ``optax.losses.cosine_distance``.

    Derivative: minus that of :func:`cosine_similarity`.
    """
    return _cosine("funcnet.losses.cosine_distance", predictions, targets, epsilon, axis, where, True)


__all__ = names("losses", __name__)
