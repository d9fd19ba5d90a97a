"""Functions over an axis with hand-written rules (``funcnet.nn``): softmax, log_softmax, glu, logsumexp, logmeanexp; and one_hot.

Names, signatures, values and edge cases follow ``jax.nn``. The masked
log-softmax core (:func:`log_softmax_core`) is written once here and used by the
softmax losses too. ``one_hot`` is not an op (its input is a class index) but
lives with the class-axis functions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import (
    bool_mask,
    broadcast_with_mask,
    canonical_axis,
    check_broadcast_to,
    float_input,
    promote_floats,
    single_axis,
)
from funcnet.ops.numerics import widen
from funcnet.ops.binding import Op, with_optional
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.reference import nn as twin

declare = declarer("nn", twins=twin, upstream=jax.nn)




# ----------------------------------------------------------------------- softmax
def log_softmax_core(xw, where, axes, *, finite_max: bool = False):
    """``(x - m, log Σ exp(x - m))`` over ``axes``: the log-softmax is their difference.

    The sum runs over the entries ``where`` keeps (keepdims); ``m`` is their
    maximum, held constant (``stop_gradient``), as ``jax.nn.log_softmax`` does.
    Masked entries keep their value in ``x - m`` (callers that want -inf there
    mask it). With a mask, or ``finite_max`` (``jax.nn.logsumexp``'s
    convention), a non-finite maximum is replaced by 0; a fully masked row sums
    to 1, so no NaN arises on the way and autodiff of the rules (second order)
    stays finite there. Used by ``softmax``, ``log_softmax`` and the softmax
    cross-entropy losses.
    """
    shifted, _, s = _exponentials(xw, where, axes, finite_max)
    return shifted, jnp.log(s)


def _exponentials(xw, where, axes, finite_max=False):
    """``(x - m, e, s)`` of :func:`log_softmax_core`: ``e = exp(x - m)`` (0 where masked), ``s = Σ e`` (keepdims)."""
    m = jnp.max(xw, axis=axes, where=where, initial=-jnp.inf, keepdims=True)
    if where is not None or finite_max:
        m = jnp.where(jnp.isfinite(m), m, 0.0)
    m = lax.stop_gradient(m)
    e = jnp.exp((xw if where is None else jnp.where(where, xw, -jnp.inf)) - m)
    s = jnp.sum(e, axis=axes, keepdims=True)
    if where is not None:
        s = jnp.where(jnp.any(where, axis=axes, keepdims=True), s, 1.0)
    return xw - m, e, s


def _softmax_value(x, where, axis):
    _, e, s = _exponentials(widen(x), where, axis)  # one exp and one sum, as jax.nn.softmax
    y = e / s
    return (y if where is None else jnp.where(where, y, 0.0)).astype(x.dtype)


def _softmax_vjp(res, g, axis):
    y, _ = res
    y, gw = widen(y), widen(g)
    return (y * (gw - jnp.sum(gw * y, axis=axis, keepdims=True))).astype(g.dtype), None


def _softmax_jvp(res, t, _, axis):
    y, _ = res
    y, tw = widen(y), widen(t)
    return (y * (tw - jnp.sum(tw * y, axis=axis, keepdims=True))).astype(t.dtype)


def _softmax_save(x, where, axis):
    y = _softmax_value(x, where, axis)
    return y, (y, None)


_SOFTMAX = Op("softmax", value=_softmax_value, save=_softmax_save, vjp=_softmax_vjp, jvp=_softmax_jvp)


def _log_softmax_value(x, where, axis):
    shifted, log_sum = log_softmax_core(widen(x), where, axis)
    y = shifted - log_sum
    return (y if where is None else jnp.where(where, y, -jnp.inf)).astype(x.dtype)


def _log_softmax_vjp(res, g, axis):
    y, where = res
    gw = widen(g) if where is None else jnp.where(where, widen(g), 0.0)
    gx = gw - jnp.exp(widen(y)) * jnp.sum(gw, axis=axis, keepdims=True)
    return (gx if where is None else jnp.where(where, gx, 0.0)).astype(g.dtype), None


def _log_softmax_jvp(res, t, _, axis):
    y, where = res
    p = jnp.exp(widen(y))
    tw = widen(t) if where is None else jnp.where(where, widen(t), 0.0)
    out = tw - jnp.sum(p * tw, axis=axis, keepdims=True)
    return (out if where is None else jnp.where(where, out, 0.0)).astype(t.dtype)


def _log_softmax_save(x, where, axis):
    y = _log_softmax_value(x, where, axis)
    return y, (y, where)


_LOG_SOFTMAX = Op("log_softmax", value=_log_softmax_value, save=_log_softmax_save,
                    vjp=_log_softmax_vjp, jvp=_log_softmax_jvp)


def _normalize(op: str, rule: Op, x, axis, where):
    name = f"funcnet.nn.{op}"
    x = float_input(f"funcnet.nn.{op}", "x", x)
    axes = canonical_axis(name, axis, x.ndim)
    if where is not None:
        where = bool_mask(name, where)
        check_broadcast_to(name, ("where", "x"), where.shape, x.shape)
        where = jnp.broadcast_to(where, x.shape)
        return rule(x, where, axis=axes)
    return _UNMASKED[rule.name](x, axis=axes)


def _unmasked(rule: Op) -> Op:
    """The rule with ``where=None`` bound (``None`` is not an array argument)."""
    return with_optional(rule.name, rule.save, rule.vjp, rule.jvp, (True, False))


_UNMASKED = {r.name: _unmasked(r) for r in (_SOFTMAX, _LOG_SOFTMAX)}

_softmax_like = dict(checks=Checks(sample=S.unary(), cases=S.SOFTMAX_SHAPES, extreme=lambda: (S.extreme_logits(),),
                                  variants=({}, {"axis": 0}, {"axis": None})))


@declare(forms=(_UNMASKED["softmax"], _SOFTMAX), saves="the output only", **_softmax_like)
def softmax(x, axis=-1, where=None):
    """Softmax ``y_i = exp(x_i) / Σ_j exp(x_j)`` along ``axis`` (an int, a tuple, or None for all).

    Derivative: ∂y_i/∂x_j = y_i(δ_ij - y_j), so the reverse rule is
    ``y ⊙ (g - Σ_j g_j y_j)`` and the forward rule ``y ⊙ (ẋ - Σ_j ẋ_j y_j)``.
    The maximum is subtracted first, so large logits do not overflow.
    ``where`` (a boolean mask broadcasting to ``x``) leaves entries out: they
    get probability 0 and gradient 0, as in ``jax.nn.softmax``.
    """
    return _normalize("softmax", _SOFTMAX, x, axis, where)


@declare(forms=(_UNMASKED["log_softmax"], _LOG_SOFTMAX),
         saves="the output only (softmax is exp(y)), and the mask if given", **_softmax_like)
def log_softmax(x, axis=-1, where=None):
    """Log-softmax ``y_i = x_i - log Σ_j exp(x_j)`` along ``axis`` (an int, a tuple, or None).

    Derivative: ∂y_i/∂x_j = δ_ij - softmax(x)_j, so the reverse rule is
    ``g - exp(y) Σ_j g_j`` and the forward rule ``ẋ - Σ_j exp(y_j) ẋ_j``.
    ``where`` leaves entries out: they get -inf and gradient 0, as in
    ``jax.nn.log_softmax``.
    """
    return _normalize("log_softmax", _LOG_SOFTMAX, x, axis, where)


# ------------------------------------------------------------------------------ glu
def _glu_halves(x, axis):
    a, b = jnp.split(widen(x), 2, axis=axis)
    return a, b, lax.logistic(b)


def _glu_vjp(x, g, axis):
    a, _, s = _glu_halves(x, axis)
    gw = widen(g)
    return (jnp.concatenate([gw * s, gw * a * s * (1 - s)], axis=axis).astype(g.dtype),)


def _glu_jvp(x, t, axis):
    if t is None:
        return None
    a, _, s = _glu_halves(x, axis)
    ta, tb = jnp.split(widen(t), 2, axis=axis)
    return (ta * s + a * s * (1 - s) * tb).astype(t.dtype)


_GLU = Op("glu", value=lambda x, axis: (lambda a, _, s: a * s)(*_glu_halves(x, axis)).astype(x.dtype),
            save=lambda x, axis: ((lambda a, _, s: a * s)(*_glu_halves(x, axis)).astype(x.dtype), x),
            vjp=_glu_vjp, jvp=_glu_jvp)


@declare(forms=_GLU, saves="the input", activation=False,
         differs="an axis of odd size raises a ValueError naming the axis (jax.nn.glu: an AssertionError)",
         checks=Checks(sample=S.unary(), cases=((4,), (2, 4), (2, 3, 4)),
                       extreme=lambda: (S.np.array([-1e4, 50.0, 1e4, -1.0, 1e4, -1e4, -50.0, 50.0]),)))
def glu(x, axis=-1):
    """Gated linear unit ``a ⊙ σ(b)``, where ``a, b`` are the two halves of x along ``axis``, as ``jax.nn.glu``.

    The output has half the size of x along ``axis``, so it is not an
    activation for ``mlp``.

    Derivative: d/da = σ(b), d/db = a σ(b)(1 - σ(b)).
    """
    op = "funcnet.nn.glu"
    x = float_input("funcnet.nn.glu", "x", x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one dimension, got a scalar")
    ax = single_axis(op, axis, x.ndim, "glu splits one axis in halves")
    if x.shape[ax] % 2:
        raise ValueError(f"{op}: the size of axis {axis} must be even, got {x.shape[ax]} (x of shape {tuple(x.shape)})")
    return _GLU(x, axis=ax)


# --------------------------------------------------------------- logsumexp, logmeanexp
def _lse_save(a, b, where, axes, keepdims, mean, nan_negative):
    """log |Σ b e^a| over ``axes`` (minus log n for the mean), the entries outside ``where`` or with b = 0 left out.

    Residuals: the inputs, and per reduced row the maximum and the (signed) sum of b e^{a - max}.
    """
    aw = widen(a)
    keep = None
    if where is not None:
        keep = where
    if b is not None:
        keep = (b != 0) if keep is None else keep & (b != 0)
    masked = aw if keep is None else jnp.where(keep, aw, -jnp.inf)
    m = jnp.max(masked, axis=axes, keepdims=True, initial=-jnp.inf)  # an empty row: -inf, as jax.nn
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(masked - m)
    if b is not None:
        e = e * widen(b)
    total = jnp.sum(e, axis=axes, keepdims=True)
    sign = jnp.sign(total)
    lse = jnp.log(jnp.abs(total)) + m
    out = lse
    if mean:
        count = math.prod(a.shape[i] for i in axes) if where is None else jnp.sum(where, axis=axes, keepdims=True)
        out = lse - jnp.log(jnp.asarray(count, lse.dtype))
    if nan_negative:
        out = jnp.where(sign < 0, jnp.nan, out)
    if not keepdims:
        out = jnp.squeeze(out, axes)
    return out.astype(a.dtype), (a, b, where, m, total)


def _lse_weights(res):
    """e^{a - m} / Σ b e^{a - m}: the softmax weights of the sum (b = 0 entries keep theirs: d/db there is e^a/Σ).

    Divided by the saved sum rather than taken as e^{a - L}: L is rounded to the precision of a (an ulp of
    1e4 in float32 moves e^{a - L} by 1e-4).
    """
    a, b, where, m, total = res
    w = jnp.exp(widen(a) - m) / total
    return w if where is None else jnp.where(where, w, 0.0)


def _lse_vjp(res, g, axes, keepdims, mean, nan_negative):
    a, b, where, m, total = res
    gw = widen(g) if keepdims else jnp.expand_dims(widen(g), axes)
    if nan_negative:
        gw = jnp.where(total < 0, jnp.nan, gw)
    w = gw * _lse_weights(res)
    ga = w if b is None else jnp.where(b != 0, w * widen(b), 0.0)
    gb = None if b is None else (w * 1).astype(b.dtype)
    return ga.astype(a.dtype), gb, None


def _lse_jvp(res, ta, tb, _, axes, keepdims, mean, nan_negative):
    a, b, where, m, total = res
    w = _lse_weights(res)
    dot = None
    if ta is not None:
        dot = widen(ta) * (w if b is None else jnp.where(b != 0, w * widen(b), 0.0))
    if tb is not None:
        dot = (0 if dot is None else dot) + widen(tb) * w
    if dot is None:
        return None
    out = jnp.sum(dot, axis=axes, keepdims=True)
    if nan_negative:
        out = jnp.where(total < 0, jnp.nan, out)
    return (out if keepdims else jnp.squeeze(out, axes)).astype(a.dtype)


#: one rule per combination of the optional arrays (b, where)
_LSE = {(has_b, has_where): with_optional("logsumexp", _lse_save, _lse_vjp, _lse_jvp, (True, has_b, has_where))
        for has_b in (False, True) for has_where in (False, True)}


def _reduce_exp(op: str, a, axis, b, keepdims, where, mean: bool, return_sign: bool = False):
    a = float_input(op, "x", a)
    arrays = {"a": a}
    if b is not None:
        a, b = promote_floats(op, a=a, b=b)
        arrays = {"a": a, "b": b}
    args, shape = broadcast_with_mask(op, where, **arrays)
    axes = canonical_axis(op, axis, len(shape))
    static = dict(axes=axes, keepdims=bool(keepdims), mean=mean, nan_negative=b is not None and not return_sign)
    out = _LSE[b is not None, where is not None](*args, **static)
    if not return_sign:
        return out
    # the sign of Σ b e^a, outside the rule (no gradient), only when asked for
    a = args[0]
    b = args[1] if b is not None else jnp.ones_like(a)
    keep = b != 0 if where is None else (b != 0) & args[-1]
    m = lax.stop_gradient(jnp.max(jnp.where(keep, a, -jnp.inf), axis=axes, keepdims=True, initial=-jnp.inf))
    total = jnp.sum(jnp.where(keep, jnp.exp(a - jnp.where(jnp.isfinite(m), m, 0.0)) * b, 0.0), axis=axes,
                    keepdims=keepdims)
    return out, lax.stop_gradient(jnp.sign(total))


@declare(forms=tuple(_LSE.values()), saves="the inputs, and per reduced row the maximum and the sum of b e^{a - max}",
         activation=False,
         differs="the gradient in b at an entry with b = 0 is e^a / Σ b e^a, the true slope (jax.nn: 0); where the "
                 "sum is negative (b given, return_sign=False) the value and the gradient are NaN (jax.nn: NaN "
                 "value, gradient 0); a row that `where` leaves empty has tangent 0, as its gradient (jax.nn: NaN "
                 "tangent)",
         checks=Checks(sample=S.unary(), cases=S.SOFTMAX_SHAPES[:2], extreme=lambda: (S.extreme_logits(),)))
def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    """``log Σ_i b_i e^{a_i}`` over ``axis`` (int, tuple or None for all), as ``jax.nn.logsumexp``.

    The maximum is subtracted first, so large inputs do not overflow; a row
    of -∞ gives -∞. ``b`` (weights broadcasting against ``a``; entries with
    b = 0 are left out, even at a = ∞) and ``where`` (a boolean mask) as in
    ``jax.nn.logsumexp``; with ``return_sign=True`` the result is
    ``(log |Σ b e^a|, sign of the sum)``.

    Derivative: d/da_i = b_i e^{a_i - L}·s and d/db_i = e^{a_i - L}·s, with
    L = log |Σ b e^a| and s its sign (the softmax of a for b = 1).
    """
    return _reduce_exp("funcnet.nn.logsumexp", a, axis, b, keepdims, where, mean=False, return_sign=return_sign)


@declare(forms=tuple(_LSE.values()), saves="the input, and per reduced row the maximum and the sum of e^{x - max}",
         activation=False,
         differs="a row that `where` leaves empty has tangent 0, as its gradient (jax.nn: NaN tangent)",
         checks=Checks(sample=S.unary(), cases=S.SOFTMAX_SHAPES[:2], extreme=lambda: (S.extreme_logits(),)))
def logmeanexp(x, axis=None, where=None, keepdims=False):
    """``log((1/n) Σ_i e^{x_i}) = logsumexp(x) - log n`` over ``axis``, as ``jax.nn.logmeanexp``.

    n counts the entries reduced (those where ``where`` is True).

    Derivative: d/dx_i = e^{x_i - logsumexp(x)} (the softmax).
    """
    return _reduce_exp("funcnet.nn.logmeanexp", x, axis, None, keepdims, where, mean=True)


# ------------------------------------------------------------------------- one_hot
#: jax.nn's function object, taken at import: code that puts funcnet's one_hot in place of jax.nn's (as
#: tests/test_upstream_jax.py does with jax's own tests) must not make it call itself.
_jax_one_hot = jax.nn.one_hot


def one_hot(x, num_classes, *, dtype=None, axis=-1):
    """One-hot encoding of integer class indices, as ``jax.nn.one_hot`` (which it calls).

    An index outside ``[0, num_classes)`` gives a row of zeros, as in jax.nn.
    Not an op: it has no gradient (its input is a class index), so it has no
    rule. ``num_classes`` must be a non-negative Python int, checked here with
    an error that names it.
    """
    op = "funcnet.nn.one_hot"
    if isinstance(num_classes, jax.core.Tracer):  # jax.nn's error type, naming this function and argument
        num_classes = jax.extend.core.concrete_or_error(
            None, num_classes, f"The error arose in {op} argument `num_classes`: it must be a Python int.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, S.np.integer)):
        raise TypeError(f"{op}: `num_classes` must be a Python int, got {num_classes!r}")
    if num_classes < 0:
        raise ValueError(f"{op}: `num_classes` must be non-negative, got {num_classes}")
    try:
        x = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{op}: `x` must be an array of class indices, got {type(x).__name__}") from err
    return _jax_one_hot(x, int(num_classes), dtype=dtype, axis=axis)


__all__ = names("nn", __name__) + ["one_hot"]
