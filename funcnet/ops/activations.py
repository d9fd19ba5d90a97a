"""Elementwise activation functions with hand-written rules in both directions (``funcnet.nn``).

Names, signatures, values and edge cases follow ``jax.nn``. Each activation is
one :class:`~funcnet.ops.binding.Op` (value, residuals, reverse rule, forward
rule) and one public function, declared together. A rule keeps the smallest
residual it needs: the output alone wherever the derivative can be written in
terms of the output (sigmoid, tanh, ReLU, leaky ReLU, ELU, softplus); the next
layer keeps the output anyway.

Float16 and bfloat16 inputs are computed in float32 and rounded back, so the
output and both derivatives keep the input dtype without half-precision
overflow. Integer inputs are promoted to the default float dtype, as ``jax.nn``
does, except where ``jax.nn`` keeps them integer (``identity``, ``relu``,
``hard_tanh``: the plain value, which has no gradient).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import broadcast_shapes, check_broadcast_to, float_input, is_number, promote_floats
from funcnet.ops.numerics import sum_to_shape, widen
from funcnet.ops.binding import Op, with_array_hypers
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import nn as twin

declare = declarer("nn", twins=twin, upstream=jax.nn)




def _elementwise(name, value, local, save=None):
    """A rule for ``y = f(x)`` whose derivative ``local(res)`` depends on the residual alone.

    Reverse: ``g · f'``; forward: ``ẋ · f'``; both computed in at least float32.
    """
    if save is None:
        def save(x, **static):
            y = value(x, **static)
            return y, y

    def vjp(res, g, **static):
        return ((widen(g) * local(res, **static)).astype(g.dtype),)

    def jvp(res, t, **static):
        return None if t is None else (widen(t) * local(res, **static)).astype(t.dtype)

    return Op(name, value=value, save=save, vjp=vjp, jvp=jvp)


def _saves_input(value):
    return lambda x, **static: (value(x, **static), x)


def _unary(name: str, x, *, keep_int: bool = False):
    """``x`` as a float array; ``None`` for an integer input that ``jax.nn`` keeps integer."""
    return float_input(f"funcnet.nn.{name}", "x", x, keep_int=keep_int)


def _kink_free(**more) -> dict:
    return dict(checks=Checks(sample=S.unary(), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation, **more))


# ---------------------------------------------------------------------- identity
_IDENTITY = Op(
    "identity",
    value=lambda x: x,
    save=lambda x: (x, None),
    vjp=lambda _, g: (g,),
    jvp=lambda _, t: t,
)


@declare(forms=_IDENTITY, saves="nothing", **_kink_free())
def identity(x):
    """Identity activation ``f(x) = x``: the linear output unit.

    Derivative: f'(x) = 1.
    """
    xf = _unary("identity", x, keep_int=True)
    return jnp.asarray(x) if xf is None else _IDENTITY(xf)


# ----------------------------------------------------------------------- sigmoid
def _sigmoid_value(x):
    return lax.logistic(widen(x)).astype(x.dtype)


_SIGMOID = _elementwise("sigmoid", _sigmoid_value, lambda y: widen(y) * (1 - widen(y)))


@declare(forms=_SIGMOID, saves="the output σ(x)",
         differs="integer inputs are promoted to float (jax.nn.sigmoid raises)", **_kink_free())
def sigmoid(x):
    """Logistic sigmoid ``σ(x) = 1 / (1 + exp(-x))``.

    Derivative: σ'(x) = σ(x)(1 - σ(x)). Computed with ``lax.logistic``, which
    does not overflow for large negative ``x``.
    """
    return _SIGMOID(_unary("sigmoid", x))


# -------------------------------------------------------------------------- tanh
def _tanh_value(x):
    return jnp.tanh(widen(x)).astype(x.dtype)


_TANH = _elementwise("tanh", _tanh_value, lambda y: 1 - widen(y) ** 2)


@declare(forms=_TANH, saves="the output", **_kink_free())
def tanh(x):
    """Hyperbolic tangent ``tanh(x) = (eˣ - e⁻ˣ)/(eˣ + e⁻ˣ) = 2σ(2x) - 1``.

    Derivative: tanh'(x) = 1 - tanh(x)².
    """
    return _TANH(_unary("tanh", x))


# --------------------------------------------------------------------- hard_tanh
_HARD_TANH = _elementwise(
    "hard_tanh",
    lambda x: jnp.clip(x, -1, 1),
    lambda inside: inside.astype(jnp.float32),
    save=lambda x: (jnp.clip(x, -1, 1), (x >= -1) & (x <= 1)),
)


@declare(forms=_HARD_TANH, saves="a boolean mask of -1 <= x <= 1 (the output cannot tell x = 1 from x > 1)",
         kink="gradient 1 at x = ±1 (the closed interval), as jax.nn.hard_tanh",
         checks=Checks(sample=S.unary((-1.0, 1.0)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = ±1", (S.np.array([-1.0, 1.0]),), S.np.array([1.0, 1.0])),)))
def hard_tanh(x):
    """Hard tanh: ``-1`` for x < -1, ``x`` for -1 ≤ x ≤ 1, ``1`` for x > 1.

    Derivative: 1 on [-1, 1], 0 outside.
    """
    xf = _unary("hard_tanh", x, keep_int=True)
    return jnp.clip(jnp.asarray(x), -1, 1) if xf is None else _HARD_TANH(xf)


# -------------------------------------------------------------------------- relu
_RELU = _elementwise(
    "relu",
    lambda x: jnp.maximum(x, 0),
    lambda y: (y > 0).astype(jnp.float32),
)


@declare(forms=_RELU, saves="the output (y > 0 exactly when x > 0)", kink="gradient 0 at x = 0, as jax.nn.relu",
         checks=Checks(sample=S.unary((0.0,)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = 0", (S.np.array([0.0]),), S.np.array([0.0])),)))
def relu(x):
    """Rectified linear unit ``relu(x) = max(x, 0)``.

    Derivative: 1 for x > 0, 0 for x < 0.
    """
    xf = _unary("relu", x, keep_int=True)
    return jnp.maximum(jnp.asarray(x), 0) if xf is None else _RELU(xf)


# -------------------------------------------------------------------- leaky_relu
def _nonnegative(v):
    """``v >= 0`` with ``-0.0`` counted as negative: the sign bit, read without arithmetic.

    ``negative_slope · x`` for a tiny negative x underflows to ``-0.0`` (XLA flushes
    subnormals), so an output-based rule cannot tell it from x = -0.0; both take the
    negative slope. NaN counts as negative, as in ``x >= 0``.
    """
    return (v > 0) | ((v == 0) & ~jnp.signbit(v))


def _leaky_value(x, negative_slope):
    return jnp.where(_nonnegative(x), x, negative_slope * x)


_LEAKY_RELU = _elementwise(
    "leaky_relu",
    _leaky_value,
    # For a positive slope the output has the sign (bit) of the input, so it is enough.
    lambda y_or_x, negative_slope: jnp.where(_nonnegative(y_or_x), 1.0, negative_slope),
    save=lambda x, negative_slope: (
        _leaky_value(x, negative_slope),
        _leaky_value(x, negative_slope) if negative_slope > 0 else x,
    ),
)


def _prelu_vjp(res, g):
    x, alpha = res
    positive = _nonnegative(x)
    return jnp.where(positive, g, alpha * g), sum_to_shape(jnp.where(positive, jnp.zeros_like(g), g * x), alpha.shape)


def _prelu_jvp(res, tx, talpha):
    x, alpha = res
    out = jnp.zeros(x.shape, x.dtype)
    if tx is not None:
        out = out + jnp.where(_nonnegative(x), tx, alpha * tx)
    if talpha is not None:
        out = out + jnp.where(_nonnegative(x), 0.0, talpha * x).astype(x.dtype)
    return out


_PRELU = Op("prelu", value=_leaky_value, vjp=_prelu_vjp, jvp=_prelu_jvp)


def _slope_as_array(op: str, x, value):
    """``(x, slope)`` as float arrays of the broadcast shape of x (the slope may be smaller)."""
    x, value = promote_floats(op, x=x, negative_slope=value)
    shape = jnp.broadcast_shapes(x.shape, value.shape)
    return jnp.broadcast_to(x, shape), value


@declare(forms=(_LEAKY_RELU, _PRELU),
         saves="the output when negative_slope is a positive number; x and the slope when it is an array",
         kink="gradient 1 at x = +0, as jax.nn.leaky_relu; negative_slope at x = -0.0",
         differs="x = -0.0 counts as negative (gradient negative_slope; jax.nn.leaky_relu's is 1), so that the "
                 "gradient read from the output is right for tiny negative x whose output underflows to -0.0",
         checks=Checks(sample=S.unary((0.0,)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       variants=({}, {"negative_slope": 0.2}),
                       kinks=(Kink("x = +0", (S.np.array([0.0]),), S.np.array([1.0])),
                              Kink("x = -0.0", (S.np.array([-0.0]),), S.np.array([0.01]), {"negative_slope": 0.01},
                                   namesake=False))))
def leaky_relu(x, negative_slope=1e-2):
    """Leaky ReLU: ``x`` for x ≥ 0 and ``negative_slope · x`` for x < 0.

    Derivative: 1 for x > 0, ``negative_slope`` for x < 0; d/d negative_slope
    = x for x < 0 and 0 otherwise. ``negative_slope`` may be a Python number
    (the rule then saves only the output) or an array, traced or not, that
    broadcasts with ``x`` (it then gets its gradient, as in ``jax.nn``).
    XLA flushes ``0.01 · -1e-308`` to -0.0, keeping the sign bit, which is why
    -0.0 counts as negative.
    """
    op = "funcnet.nn.leaky_relu"
    if is_number(negative_slope):
        return _LEAKY_RELU(_unary("leaky_relu", x), negative_slope=float(negative_slope))
    return _PRELU(*_slope_as_array(op, _unary("leaky_relu", x), negative_slope))


# --------------------------------------------------------------------------- elu
def _elu_value(x, alpha):
    xw = widen(x)
    return jnp.where(xw > 0, xw, alpha * jnp.expm1(jnp.minimum(xw, 0))).astype(x.dtype)


def _slope_from_output(dtype, alpha: float) -> bool:
    """Whether ELU and CELU read their slope from the output (saved anyway) rather than from the input.

    Below zero the output lies in (-α, 0]. While α is at least the dtype's
    smallest normal number it is rounded to the dtype's relative precision, so
    the slope rebuilt from it is good to about eps·α (ELU) or eps (CELU). For a
    smaller α (float16 below 6.1e-5) the output is subnormal, its rounding
    dwarfs α, and the slope is taken from the input instead: celu(-1, α = 1e-7)
    in float16 gave the slope -0.19 (true ≈ 0).
    """
    return alpha >= jnp.finfo(dtype).tiny


def _output_or_input(value):
    """The ``save`` of a rule that reads its slope as :func:`_slope_from_output` says."""
    def save(x, alpha):
        y = value(x, alpha)
        return y, y if _slope_from_output(x.dtype, alpha) else x
    return save


def _elu_local(y_or_x, alpha):
    v = widen(y_or_x)
    if _slope_from_output(y_or_x.dtype, alpha):
        # α·eˣ = y + α below zero; never below 0, where a y rounded past -α would put it
        return jnp.where(v > 0, 1.0, jnp.maximum(v + alpha, 0.0))
    return jnp.where(v > 0, 1.0, alpha * jnp.exp(jnp.minimum(v, 0)))


_ELU = _elementwise("elu", _elu_value, _elu_local, save=_output_or_input(_elu_value))


def _elu_array_value(x, alpha):
    xw, aw = widen(x), widen(alpha)
    return jnp.where(xw > 0, xw, aw * jnp.expm1(jnp.minimum(xw, 0))).astype(x.dtype)


def _elu_array_vjp(res, g):
    x, alpha = res
    xw, aw, gw = widen(x), widen(alpha), widen(g)
    negative = xw <= 0
    em1 = jnp.expm1(jnp.minimum(xw, 0))
    gx = gw * jnp.where(negative, aw * (em1 + 1), 1.0)
    galpha = jnp.where(negative, gw * em1, 0.0)
    return gx.astype(x.dtype), sum_to_shape(galpha, alpha.shape).astype(alpha.dtype)


def _elu_array_jvp(res, tx, talpha):
    x, alpha = res
    xw, aw = widen(x), widen(alpha)
    negative = xw <= 0
    em1 = jnp.expm1(jnp.minimum(xw, 0))
    out = jnp.zeros(xw.shape, xw.dtype)
    if tx is not None:
        out = out + widen(tx) * jnp.where(negative, aw * (em1 + 1), 1.0)
    if talpha is not None:
        out = out + jnp.where(negative, widen(talpha) * em1, 0.0)
    return out.astype(x.dtype)


_ELU_ARRAY = Op("elu", value=_elu_array_value, vjp=_elu_array_vjp, jvp=_elu_array_jvp)


@declare(forms=(_ELU, _ELU_ARRAY),
         saves="the output when alpha is a number at least the dtype's smallest normal (no exponential in the "
               "rule); x otherwise, and alpha when it is an array",
         kink="gradient alpha at x = 0 (the left branch), as jax.nn.elu",
         checks=Checks(sample=S.unary((0.0,)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       variants=({}, {"alpha": 0.5}),
                       kinks=(Kink("x = 0, alpha = 2", (S.np.array([0.0]),), S.np.array([2.0]), {"alpha": 2.0}),)))
def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` for x > 0, ``α(eˣ - 1)`` for x ≤ 0.

    Derivative: 1 for x > 0, α·eˣ = elu(x) + α for x ≤ 0; d/dα = eˣ - 1 for
    x ≤ 0 and 0 otherwise. ``alpha`` may be a Python number (for α > 0 the rule
    then saves only the output and reads the slope as elu(x) + α) or an array,
    traced or not, that broadcasts to ``x`` (it then gets its gradient). For an
    α below the dtype's smallest normal number (float16: 6.1e-5) or negative,
    the rule saves x and computes αeˣ instead: the output would be subnormal.

    Precision: read from the output, the slope αeˣ is the rounding of elu(x) + α,
    so at large negative x it keeps an absolute accuracy of α times the dtype's
    epsilon, not a relative one: in float32 it is 5.96e-8 at x = -17 (true 4.1e-8)
    and 0 from x = -18 on, as ``jax.nn.elu``'s; float64 keeps it to x ≈ -36. The
    same holds for ``selu`` and ``celu``.
    """
    op = "funcnet.nn.elu"
    x = _unary("elu", x)
    if is_number(alpha):
        return _ELU(x, alpha=float(alpha))
    x, alpha = promote_floats(op, x=x, alpha=alpha)
    x = jnp.broadcast_to(x, jnp.broadcast_shapes(x.shape, alpha.shape))
    return _ELU_ARRAY(x, alpha)


# ------------------------------------------------------------------------- prelu
@declare(forms=_PRELU, saves="x and alpha", diff_argnums=(0, 1),
         kink="at x = +0 the gradient is 1 in x and 0 in alpha, at x = -0.0 alpha and 0 (as leaky_relu)",
         checks=Checks(sample=S.with_slope, cases=(((), ()), ((5,), ()), ((3, 4), (4,)), ((2, 3, 4), (3, 1))),
                       extreme=lambda: (S.extreme_activation()[0], S.np.array(0.25)),
                       kinks=(Kink("x = +0", (S.np.array([0.0]), S.np.array(0.3)), S.np.array([1.0])), Kink("x = -0.0", (S.np.array([-0.0]), S.np.array(0.3)), S.np.array([0.3])))))
def prelu(x, alpha):
    """Parametric ReLU: ``x`` for x ≥ 0 and ``α · x`` for x < 0, α trainable.

    ``alpha`` is an array that broadcasts to ``x`` (a scalar, or one slope per
    channel, e.g. shape ``(features,)``) and gets its own gradient.

    Derivative: d/dx = 1 for x > 0 and α for x < 0; d/dα = x for x < 0 and 0
    otherwise (summed over the axes α is broadcast along).
    """
    op = "funcnet.nn.prelu"
    x, alpha = promote_floats(op, x=x, alpha=alpha)
    check_broadcast_to(op, ("alpha", "x"), alpha.shape, x.shape)
    return _PRELU(x, alpha)


# ---------------------------------------------------------------------- softplus
def _softplus_value(x):
    return jnp.logaddexp(widen(x), 0).astype(x.dtype)


# σ(x) = 1 - e^{-softplus(x)}; expm1 keeps it exact when y is tiny.
_SOFTPLUS = _elementwise("softplus", _softplus_value, lambda y: -jnp.expm1(-widen(y)))


@declare(forms=_SOFTPLUS, saves="the output; the derivative -expm1(-y) is accurate for large |x| of either sign",
         **_kink_free())
def softplus(x):
    """Softplus ``log(1 + eˣ)``, a smooth ReLU.

    Derivative: σ(x) = 1 - exp(-softplus(x)).
    """
    return _SOFTPLUS(_unary("softplus", x))


# -------------------------------------------------------------------------- silu
def _silu_value(x):
    xw = widen(x)
    return (xw * lax.logistic(xw)).astype(x.dtype)


def _silu_local(x):
    xw = widen(x)
    s = lax.logistic(xw)
    return s * (1 + xw * (1 - s))


_SILU = _elementwise("silu", _silu_value, _silu_local, save=_saves_input(_silu_value))


@declare(forms=_SILU, saves="the input (σ is recomputed rather than stored)",
         differs="integer inputs are promoted to float (jax.nn.silu raises)", **_kink_free())
def silu(x):
    """SiLU (swish) ``x · σ(x)``.

    Derivative: σ(x)(1 + x(1 - σ(x))).
    """
    return _SILU(_unary("silu", x))


# -------------------------------------------------------------------------- gelu
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


def _gelu_value(x, approximate):
    xw = widen(x)
    if approximate:
        y = 0.5 * xw * (1 + jnp.tanh(_SQRT_2_OVER_PI * (xw + _GELU_C * xw**3)))
    else:
        y = 0.5 * xw * lax.erfc(-xw / math.sqrt(2))
    return y.astype(x.dtype)


def _gelu_local(x, approximate):
    xw = widen(x)
    if approximate:
        # Beyond |x| = 10 tanh is ±1 to float32 precision; clamping keeps x³ finite.
        xc = jnp.clip(xw, -10, 10)
        t = jnp.tanh(_SQRT_2_OVER_PI * (xc + _GELU_C * xc**3))
        return 0.5 * (1 + t) + 0.5 * xc * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * xc**2)
    cdf = 0.5 * lax.erfc(-xw / math.sqrt(2))
    pdf = jnp.exp(-0.5 * xw * xw) / math.sqrt(2 * math.pi)
    return cdf + xw * pdf


_GELU = _elementwise("gelu", _gelu_value, _gelu_local, save=_saves_input(_gelu_value))


@declare(forms=_GELU, saves="the input", **_kink_free(variants=({}, {"approximate": False})))
def gelu(x, approximate=True):
    """Gaussian error linear unit ``x · Φ(x)``.

    Exact form (``approximate=False``): ``x Φ(x)`` with Φ the standard normal
    CDF. Tanh form (``approximate=True``, the ``jax.nn`` default):
    ``½x(1 + tanh(u))`` with ``u = √(2/π)(x + 0.044715x³)``.

    Derivative: exact form ``Φ(x) + x φ(x)`` (φ the normal density); tanh form
    ``½(1 + tanh u) + ½x(1 - tanh²u)·√(2/π)(1 + 3·0.044715x²)``.
    """
    return _GELU(_unary("gelu", x), approximate=bool(approximate))


# ------------------------------------------------------------ piecewise linear: relu6, hard_silu
def _relu6_value(x):
    return jnp.clip(x, 0, 6)


def _relu6_save(x):
    # the output selected by the very mask the rules keep (as autodiff's select does), so that XLA keeps that
    # one-byte mask; a mask recomputed from the output let it keep the pre-activation as well
    inside = (x > 0) & (x < 6)
    return jnp.where(inside, x, jnp.where(x >= 6, 6, 0).astype(x.dtype)), inside


_RELU6 = _elementwise("relu6", _relu6_value, lambda inside: inside.astype(jnp.float32), save=_relu6_save)


@declare(forms=_RELU6, saves="a boolean mask of 0 < x < 6", kink="gradient 0 at x = 0 and at x = 6, as jax.nn.relu6",
         checks=Checks(sample=S.unary((0.0, 6.0), scale=4.0), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = 0, 6", (S.np.array([0.0, 6.0]),), S.np.array([0.0, 0.0])),)))
def relu6(x):
    """ReLU capped at 6: ``min(max(x, 0), 6)``.

    Derivative: 1 for 0 < x < 6, 0 elsewhere (0 at both corners).
    """
    return _RELU6(_unary("relu6", x))


def _hard_silu_value(x):
    xw = widen(x)
    return (xw * jnp.clip(xw + 3, 0, 6) / 6).astype(x.dtype)


def _hard_silu_local(x):
    xw = widen(x)
    return jnp.clip(xw + 3, 0, 6) / 6 + jnp.where((xw > -3) & (xw < 3), xw / 6, 0.0)


_HARD_SILU = _elementwise("hard_silu", _hard_silu_value, _hard_silu_local, save=_saves_input(_hard_silu_value))


@declare(forms=_HARD_SILU, saves="the input",
         kink="gradient 0 at x = -3 and 1 at x = 3 (hard_sigmoid's slope is taken as 0 there), as jax.nn.hard_silu",
         checks=Checks(sample=S.unary((-3.0, 3.0), scale=3.0), cases=S.ACTIVATION_SHAPES,
                       extreme=S.extreme_activation,
                       kinks=(Kink("x = ±3", (S.np.array([-3.0, 3.0]),), S.np.array([0.0, 1.0])),)))
def hard_silu(x):
    """Hard SiLU (hard swish) ``x · relu6(x + 3) / 6``; ``hard_swish`` is the same function.

    Derivative: relu6(x + 3)/6 + x/6 for -3 < x < 3; 0 below, 1 above.
    """
    return _HARD_SILU(_unary("hard_silu", x))


hard_swish = hard_silu


@declare(forms=_RELU6, saves="a boolean mask of -3 < x < 3 (relu6's rule at x + 3)",
         kink="gradient 0 at x = -3 and at x = 3, as jax.nn.hard_sigmoid",
         checks=Checks(sample=S.unary((-3.0, 3.0), scale=3.0), cases=S.ACTIVATION_SHAPES,
                       extreme=S.extreme_activation,
                       kinks=(Kink("x = ±3", (S.np.array([-3.0, 3.0]),), S.np.array([0.0, 0.0])),)))
def hard_sigmoid(x):
    """Hard sigmoid ``relu6(x + 3) / 6``, as ``jax.nn.hard_sigmoid``.

    Derivative: 1/6 for -3 < x < 3, 0 elsewhere (0 at both corners). Its
    hand-written rule is relu6's, at x + 3; the shift and the scale are
    linear. (A rule of its own measured twice autodiff's temporary memory on
    the deep network: XLA's CPU fusion then kept the input next to the mask.)
    """
    xf = _unary("hard_sigmoid", x)
    return _RELU6(xf + jnp.asarray(3, xf.dtype)) / jnp.asarray(6, xf.dtype)



# ------------------------------------------------------------------ log_sigmoid
def _log_sigmoid_value(x):
    return (-jnp.logaddexp(-widen(x), 0)).astype(x.dtype)


_LOG_SIGMOID = _elementwise("log_sigmoid", _log_sigmoid_value, lambda x: lax.logistic(-widen(x)),
                            save=_saves_input(_log_sigmoid_value))


@declare(forms=_LOG_SIGMOID, saves="the input", **_kink_free())
def log_sigmoid(x):
    """Log-sigmoid ``log σ(x) = -softplus(-x)``, finite for every finite x.

    Derivative: σ(-x) = 1 - σ(x).
    """
    return _LOG_SIGMOID(_unary("log_sigmoid", x))


# -------------------------------------------------------------------- soft_sign
def _soft_sign_value(x):
    xw = widen(x)
    return (xw / (jnp.abs(xw) + 1)).astype(x.dtype)


_SOFT_SIGN = _elementwise("soft_sign", _soft_sign_value, lambda x: 1 / (jnp.abs(widen(x)) + 1) ** 2,
                          save=_saves_input(_soft_sign_value))


@declare(forms=_SOFT_SIGN, saves="the input", **_kink_free())
def soft_sign(x):
    """Soft sign ``x / (|x| + 1)``.

    Derivative: 1 / (|x| + 1)² (continuous at 0, where it is 1).
    """
    return _SOFT_SIGN(_unary("soft_sign", x))


# ----------------------------------------------------- sparse_plus, sparse_sigmoid
def _sparse_plus_value(x):
    xw = widen(x)
    return jnp.where(xw <= -1, 0.0, jnp.where(xw >= 1, xw, (xw + 1) ** 2 / 4)).astype(x.dtype)


def _sparse_plus_local(x):
    xw = widen(x)
    return jnp.where(xw <= -1, 0.0, jnp.where(xw >= 1, 1.0, (xw + 1) / 2))


_SPARSE_PLUS = _elementwise("sparse_plus", _sparse_plus_value, _sparse_plus_local,
                            save=_saves_input(_sparse_plus_value))


@declare(forms=_SPARSE_PLUS, saves="the input",
         kink="none: the derivative is continuous (0 at x = -1, 1 at x = 1, from both sides)",
         checks=Checks(sample=S.unary((-1.0, 1.0)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = ±1", (S.np.array([-1.0, 1.0]),), S.np.array([0.0, 1.0])),)))
def sparse_plus(x):
    """Sparse plus: 0 for x ≤ -1, ``(x + 1)² / 4`` for -1 < x < 1, ``x`` for x ≥ 1.

    Derivative: 0, (x + 1)/2, 1 on the three pieces: ``sparse_sigmoid(x)``.
    """
    return _SPARSE_PLUS(_unary("sparse_plus", x))


# x + 1 is rounded in the input's dtype, as jax.nn.sparse_sigmoid does, so the corners fall where its do
def _sparse_sigmoid_value(x):
    return 0.5 * jnp.clip(x + 1, 0, 2)


def _sparse_sigmoid_local(x):
    t = x + 1
    return jnp.where((t > 0) & (t < 2), 0.5, jnp.where((t == 0) | (t == 2), 0.25, 0.0))


_SPARSE_SIGMOID = _elementwise("sparse_sigmoid", _sparse_sigmoid_value, _sparse_sigmoid_local,
                               save=_saves_input(_sparse_sigmoid_value))


@declare(forms=_SPARSE_SIGMOID, saves="the input",
         kink="gradient 1/4 at x = ±1 (the mean of the one-sided slopes 0 and 1/2), as jax.nn.sparse_sigmoid",
         checks=Checks(sample=S.unary((-1.0, 1.0)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = ±1", (S.np.array([-1.0, 1.0]),), S.np.array([0.25, 0.25])),)))
def sparse_sigmoid(x):
    """Sparse sigmoid ``clip(x + 1, 0, 2) / 2``: 0 below -1, 1 above 1, linear between.

    Derivative: 1/2 for -1 < x < 1, 0 outside.
    """
    return _SPARSE_SIGMOID(_unary("sparse_sigmoid", x))


# ----------------------------------------------------------------- selu, celu
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu_value(x):
    xw = widen(x)
    return (_SELU_SCALE * jnp.where(xw > 0, xw, _SELU_ALPHA * jnp.expm1(jnp.minimum(xw, 0)))).astype(x.dtype)


# below zero y = λα(eˣ - 1), so the slope λαeˣ is y + λα: no exponential in the rule
_SELU = _elementwise("selu", _selu_value, lambda y: jnp.where(
    widen(y) > 0, _SELU_SCALE, jnp.maximum(widen(y) + _SELU_SCALE * _SELU_ALPHA, 0.0)))  # ≥ 0: see _elu_local


@declare(forms=_SELU, saves="the output", kink="gradient λα at x = 0 (the left branch), as jax.nn.selu",
         checks=Checks(sample=S.unary((0.0,)), cases=S.ACTIVATION_SHAPES, extreme=S.extreme_activation,
                       kinks=(Kink("x = 0", (S.np.array([0.0]),), S.np.array([_SELU_SCALE * _SELU_ALPHA])),)))
def selu(x):
    """Scaled ELU ``λ·x`` for x > 0 and ``λα(eˣ - 1)`` for x ≤ 0, with λ ≈ 1.0507 and α ≈ 1.6733.

    Derivative: λ for x > 0, λαeˣ = selu(x) + λα for x ≤ 0.
    """
    return _SELU(_unary("selu", x))


def _celu_value(x, alpha):
    xw = widen(x)
    return (jnp.maximum(xw, 0) + alpha * jnp.expm1(jnp.minimum(xw, 0) / alpha)).astype(x.dtype)


def _celu_local(y_or_x, alpha):
    v = widen(y_or_x)
    if _slope_from_output(y_or_x.dtype, alpha):
        return jnp.where(v > 0, 1.0, jnp.maximum(v / alpha + 1, 0.0))  # e^{x/α} = y/α + 1 below zero
    return jnp.where(v > 0, 1.0, jnp.exp(jnp.minimum(v, 0) / alpha))


_CELU = _elementwise("celu", _celu_value, _celu_local, save=_output_or_input(_celu_value))


def _celu_dalpha(res, alpha):
    """d celu/dα = e^u - 1 - u·e^u with u = min(x, 0)/α (0 for x ≥ 0)."""
    u = jnp.minimum(widen(res), 0) / alpha
    return (jnp.expm1(u) - u * jnp.exp(u),)


# an array alpha: the rule saves x and alpha, and the slope is e^{min(x, 0)/α} (no comparison with α)
_CELU_ARRAY = with_array_hypers(
    _elementwise("celu", _celu_value, lambda x, alpha: jnp.where(widen(x) > 0, 1.0, jnp.exp(
        jnp.minimum(widen(x), 0) / alpha)), save=_saves_input(_celu_value)), ("alpha",), _celu_dalpha)


@declare(forms=(_CELU, _CELU_ARRAY),
         saves="the output when alpha is a number at least the dtype's smallest normal; x otherwise, and alpha "
               "when it is an array",
         differs="a concrete alpha ≤ 0 raises (jax.nn.celu computes with it)",
         **_kink_free(variants=({}, {"alpha": 0.5})))
def celu(x, alpha=1.0):
    """Continuously differentiable ELU ``max(x, 0) + α(e^{min(x, 0)/α} - 1)``.

    Derivative: 1 for x > 0, e^{x/α} = celu(x)/α + 1 for x ≤ 0 (continuous at 0),
    read from the output; for an α below the dtype's smallest normal number
    (float16: 6.1e-5) the output is subnormal, and the rule saves x instead.
    d/dα = e^u - 1 - u·e^u with u = min(x, 0)/α.

    ``alpha`` may be a Python number or an array, traced or not, that broadcasts
    to ``x`` (it then gets its gradient, as in ``jax.nn``).
    """
    op = "funcnet.nn.celu"
    x = _unary("celu", x)
    if not is_number(alpha):
        x, alpha = promote_floats(op, x=x, alpha=alpha)
    if not isinstance(alpha, jax.core.Tracer) and not np.all(np.asarray(alpha, dtype=float) > 0):
        raise ValueError(f"{op}: alpha must be > 0, got {alpha!r:.60}")
    if is_number(alpha):
        return _CELU(x, alpha=float(alpha))
    return _CELU_ARRAY(jnp.broadcast_to(x, jnp.broadcast_shapes(x.shape, alpha.shape)), alpha)


# ------------------------------------------------------------------------ mish
def _mish_value(x):
    xw = widen(x)
    return (xw * jnp.tanh(jnp.logaddexp(xw, 0))).astype(x.dtype)


def _mish_local(x):
    xw = widen(x)
    t = jnp.tanh(jnp.logaddexp(xw, 0))
    return t + xw * lax.logistic(xw) * (1 - t * t)


_MISH = _elementwise("mish", _mish_value, _mish_local, save=_saves_input(_mish_value))


@declare(forms=_MISH, saves="the input", **_kink_free())
def mish(x):
    """Mish ``x · tanh(softplus(x))``.

    Derivative: tanh(softplus(x)) + x σ(x) (1 - tanh²(softplus(x))).
    """
    return _MISH(_unary("mish", x))


# --------------------------------------------------------------------- log1mexp
_LOG2 = math.log(2.0)


def _log1mexp_value(x):
    xw = widen(x)
    return jnp.where(xw < _LOG2, jnp.log(-jnp.expm1(-xw)), jnp.log1p(-jnp.exp(-xw))).astype(x.dtype)


_LOG1MEXP = _elementwise("log1mexp", _log1mexp_value, lambda x: 1 / jnp.expm1(widen(x)),
                         save=_saves_input(_log1mexp_value))


def _positive(rng, shape):
    return (S.np.abs(S.normal(rng, shape)) + 0.1,)


@declare(forms=_LOG1MEXP, saves="the input", activation=False,
         differs="the gradient is finite for tiny x > 0, where jax.nn.log1mexp's is NaN",
         checks=Checks(sample=_positive, cases=S.ACTIVATION_SHAPES,
                       extreme=lambda: (S.np.array([1e-6, 0.5, _LOG2, 50.0, 1e4]),)))
def log1mexp(x):
    """``log(1 - e^{-x})`` for x > 0, accurate at both ends (``log(-expm1(-x))`` below log 2, ``log1p(-e^{-x})``
    above), as jax.nn.log1mexp; NaN for x < 0 and -inf at 0.

    Derivative: e^{-x} / (1 - e^{-x}) = 1 / expm1(x), finite for every x > 0 (the autodiff gradient of
    jax.nn.log1mexp is NaN for x below about 1e-16, from its untaken branch). Not an activation for ``mlp``
    (its domain is x > 0).
    """
    return _LOG1MEXP(_unary("log1mexp", x))


# ----------------------------------------------------------------------- squareplus
def _squareplus_parts(x, b):
    """(y, r) with r = sqrt(x² + b) (as a hypot: no overflow) and y = (x + r)/2, as b/(2(r - x)) for x < 0."""
    xw, bw = widen(x), widen(b)
    r = jnp.hypot(xw, jnp.sqrt(bw))
    y = jnp.where(xw < 0, bw / (2 * (r - xw)), (xw + r) / 2)
    return y, r


def _squareplus_locals(x, b):
    """(dy/dx, dy/db) = ((1 + x/r)/2, 1/(4r)); dy/dx as y/r for x < 0, where 1 + x/r cancels."""
    y, r = _squareplus_parts(x, b)
    xw = widen(x)
    ratio = jnp.where(jnp.isinf(xw), jnp.sign(xw), xw / r)
    return jnp.where(xw < 0, y / r, (1 + ratio) / 2), 1 / (4 * r)


def _squareplus_vjp(res, g):
    x, b = res
    dx, db = _squareplus_locals(x, b)
    gw = widen(g)
    return (gw * dx).astype(x.dtype), sum_to_shape(gw * db, b.shape).astype(b.dtype)


def _squareplus_jvp(res, tx, tb):
    x, b = res
    dx, db = _squareplus_locals(x, b)
    out = None if tx is None else widen(tx) * dx
    if tb is not None:
        tb_term = jnp.broadcast_to(widen(tb), x.shape) * db
        out = tb_term if out is None else out + tb_term
    return None if out is None else out.astype(x.dtype)


_SQUAREPLUS = Op("squareplus", value=lambda x, b: _squareplus_parts(x, b)[0].astype(x.dtype),
                   vjp=_squareplus_vjp, jvp=_squareplus_jvp)


def _x_and_smoothness(rng, shape):
    return S.normal(rng, shape, 3.0), rng.uniform(0.5, 5.0, ())


@declare(forms=_SQUAREPLUS, saves="x and b", diff_argnums=(0, 1),
         differs="accurate for large negative x (about b/(4|x|)), where jax.nn's (x + sqrt(x² + b))/2 cancels to "
                 "0, or to inf once x² overflows, and is NaN at -inf (funcnet: 0, the limit)",
         checks=Checks(sample=_x_and_smoothness, cases=S.ACTIVATION_SHAPES[1:],
                       extreme=lambda: (S.np.array([-1e30, -1e4, -1.0, 0.5, 1e4, 1e30]), S.np.array(4.0))))
def squareplus(x, b=4):
    """Squareplus ``(x + sqrt(x² + b)) / 2`` (Barron, 2021), as ``jax.nn.squareplus``.

    Computed as ``b / (2(sqrt(x² + b) - x))`` for x < 0 and with a hypot for
    the root, so it keeps its digits for large negative x (where the textbook
    form cancels) and does not overflow for large |x|. ``b`` (> 0) is an array
    or a number broadcasting against x, and gets its gradient.

    Derivative: d/dx = (1 + x/r)/2 with r = sqrt(x² + b) (y/r for x < 0), and
    d/db = 1/(4r).
    """
    op = "funcnet.nn.squareplus"
    x, b = promote_floats(op, x=_unary("squareplus", x), b=b)
    return _SQUAREPLUS(jnp.broadcast_to(x, broadcast_shapes(op, x=x.shape, b=b.shape)), b)


swish = silu


#: The declared activations, and the aliases jax.nn has for two of them (the same function objects).
__all__ = names("nn", __name__) + ["hard_swish", "swish"]
