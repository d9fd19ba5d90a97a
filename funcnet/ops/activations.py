"""Activation functions with hand-written backward rules (``funcnet.nn``).

Names, signatures and forward values follow ``jax.nn``. Each function is a
``jax.custom_vjp`` whose rule keeps the smallest residual it needs: the output
alone wherever the derivative can be written in terms of the output (sigmoid,
tanh, ReLU, leaky ReLU, ELU, softplus, softmax, log-softmax). The output is
kept by the next layer anyway, so such a rule adds no memory of its own.

Float16 and bfloat16 inputs are computed in float32 and rounded back, so the
output and the gradient keep the input dtype without half-precision overflow.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops._common import (
    as_float_array,
    canonical_axis,
    check_broadcast_to,
    promote_floats,
    saves_inputs,
    saves_output,
    static_float,
    sum_to_shape,
    widen,
    with_forward_mode_hint,
)

__all__ = [
    "identity",
    "sigmoid",
    "tanh",
    "hard_tanh",
    "relu",
    "leaky_relu",
    "elu",
    "prelu",
    "softplus",
    "silu",
    "gelu",
    "softmax",
    "log_softmax",
]


def _x(op: str, x):
    return as_float_array(f"funcnet.nn.{op}", "x", x)


# ---------------------------------------------------------------------- identity
def _identity_value(x):
    return x


_identity = jax.custom_vjp(_identity_value)


_identity.defvjp(lambda x: (x, None), lambda _, g: (g,))


@with_forward_mode_hint
def identity(x):
    """Identity activation ``f(x) = x``: the linear output unit.

    Derivative: f'(x) = 1. Saves: nothing. Kinks: none.
    """
    return _identity(_x("identity", x))


# ----------------------------------------------------------------------- sigmoid
def _sigmoid_value(x):
    return jax.nn.sigmoid(widen(x)).astype(x.dtype)


_sigmoid = jax.custom_vjp(_sigmoid_value)


def _sigmoid_bwd(y, g):
    y = widen(y)
    return ((widen(g) * y * (1 - y)).astype(g.dtype),)


_sigmoid.defvjp(saves_output(_sigmoid_value), _sigmoid_bwd)


@with_forward_mode_hint
def sigmoid(x):
    """Logistic sigmoid ``σ(x) = 1 / (1 + exp(-x))``.

    Derivative: σ'(x) = σ(x)(1 - σ(x)).
    Saves: the output σ(x) only. Kinks: none. Computed with ``lax.logistic``,
    which does not overflow for large negative ``x``.
    """
    return _sigmoid(_x("sigmoid", x))


# -------------------------------------------------------------------------- tanh
def _tanh_value(x):
    return jnp.tanh(widen(x)).astype(x.dtype)


_tanh = jax.custom_vjp(_tanh_value)


def _tanh_bwd(y, g):
    y = widen(y)
    return ((widen(g) * (1 - y * y)).astype(g.dtype),)


_tanh.defvjp(saves_output(_tanh_value), _tanh_bwd)


@with_forward_mode_hint
def tanh(x):
    """Hyperbolic tangent ``tanh(x) = (eˣ - e⁻ˣ)/(eˣ + e⁻ˣ) = 2σ(2x) - 1``.

    Derivative: tanh'(x) = 1 - tanh(x)².
    Saves: the output only. Kinks: none.
    """
    return _tanh(_x("tanh", x))


# --------------------------------------------------------------------- hard_tanh
def _hard_tanh_value(x):
    return jnp.clip(x, -1, 1)


_hard_tanh = jax.custom_vjp(_hard_tanh_value)


def _hard_tanh_fwd(x):
    return jnp.clip(x, -1, 1), (x >= -1) & (x <= 1)


def _hard_tanh_bwd(inside, g):
    return (jnp.where(inside, g, jnp.zeros_like(g)),)


_hard_tanh.defvjp(_hard_tanh_fwd, _hard_tanh_bwd)


@with_forward_mode_hint
def hard_tanh(x):
    """Hard tanh: ``-1`` for x < -1, ``x`` for -1 ≤ x ≤ 1, ``1`` for x > 1.

    Derivative: 1 on [-1, 1], 0 outside.
    Kink convention: at x = ±1 the gradient is 1 (the closed interval), as in
    ``jax.nn.hard_tanh``.
    Saves: a boolean mask of -1 ≤ x ≤ 1 (one byte per element; the output alone
    cannot tell x = 1 from x > 1).
    """
    return _hard_tanh(_x("hard_tanh", x))


# -------------------------------------------------------------------------- relu
def _relu_value(x):
    return jnp.maximum(x, 0)


_relu = jax.custom_vjp(_relu_value)


def _relu_fwd(x):
    y = jnp.maximum(x, 0)
    return y, y


def _relu_bwd(y, g):
    return (jnp.where(y > 0, g, jnp.zeros_like(g)),)


_relu.defvjp(_relu_fwd, _relu_bwd)


@with_forward_mode_hint
def relu(x):
    """Rectified linear unit ``relu(x) = max(x, 0)``.

    Derivative: 1 for x > 0, 0 for x < 0.
    Kink convention: the gradient at x = 0 is 0, as in ``jax.nn.relu``.
    Saves: the output only (y > 0 exactly when x > 0).
    """
    return _relu(_x("relu", x))


# -------------------------------------------------------------------- leaky_relu
def _leaky_relu_value(x, negative_slope):
    return jnp.where(x >= 0, x, negative_slope * x)


_leaky_relu = jax.custom_vjp(_leaky_relu_value, nondiff_argnums=(1,))


def _leaky_relu_fwd(x, negative_slope):
    y = _leaky_relu_value(x, negative_slope)
    # For a positive slope the output has the sign of the input, so it is enough.
    return y, (y if negative_slope > 0 else x)


def _leaky_relu_bwd(negative_slope, y_or_x, g):
    return (jnp.where(y_or_x >= 0, g, negative_slope * g),)


_leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


@with_forward_mode_hint
def leaky_relu(x, negative_slope=1e-2):
    """Leaky ReLU: ``x`` for x ≥ 0 and ``negative_slope · x`` for x < 0.

    Derivative: 1 for x > 0, ``negative_slope`` for x < 0.
    Kink convention: the gradient at x = 0 is 1, as in ``jax.nn.leaky_relu``.
    Saves: the output only when ``negative_slope > 0`` (it then has the sign of
    x), the input otherwise. ``negative_slope`` is a fixed number; use
    :func:`prelu` for a trainable one.
    """
    slope = static_float("funcnet.nn.leaky_relu", "negative_slope", negative_slope)
    return _leaky_relu(_x("leaky_relu", x), slope)


# --------------------------------------------------------------------------- elu
def _elu_value(x, alpha):
    xw = widen(x)
    negative = alpha * jnp.expm1(jnp.minimum(xw, 0))
    return jnp.where(xw > 0, xw, negative).astype(x.dtype)


_elu = jax.custom_vjp(_elu_value, nondiff_argnums=(1,))


def _elu_fwd(x, alpha):
    y = _elu_value(x, alpha)
    return y, (y if alpha > 0 else x)


def _elu_bwd(alpha, y_or_x, g):
    if alpha > 0:
        y = widen(y_or_x)
        local = jnp.where(y > 0, 1.0, y + alpha)  # α·eˣ = y + α below zero
    else:
        x = widen(y_or_x)
        local = jnp.where(x > 0, 1.0, alpha * jnp.exp(jnp.minimum(x, 0)))
    return ((widen(g) * local).astype(g.dtype),)


_elu.defvjp(_elu_fwd, _elu_bwd)


@with_forward_mode_hint
def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` for x > 0, ``α(eˣ - 1)`` for x ≤ 0.

    Derivative: 1 for x > 0, α·eˣ = elu(x) + α for x ≤ 0.
    Kink convention: at x = 0 the gradient is α (the left branch), as in
    ``jax.nn.elu``; for α = 1 both sides agree.
    Saves: the output only (for α > 0), so the rule needs no exponential and is
    exact for any large negative x, where ``elu(x) + α`` is 0.
    """
    a = static_float("funcnet.nn.elu", "alpha", alpha)
    return _elu(_x("elu", x), a)


# ------------------------------------------------------------------------- prelu
def _prelu_value(x, alpha):
    return jnp.where(x >= 0, x, alpha * x)


_prelu = jax.custom_vjp(_prelu_value)


def _prelu_bwd(res, g):
    x, alpha = res
    positive = x >= 0
    gx = jnp.where(positive, g, alpha * g)
    galpha = jnp.where(positive, jnp.zeros_like(g), g * x)
    return gx, sum_to_shape(galpha, alpha.shape)


_prelu.defvjp(saves_inputs(_prelu_value), _prelu_bwd)


@with_forward_mode_hint
def prelu(x, alpha):
    """Parametric ReLU: ``x`` for x ≥ 0 and ``α · x`` for x < 0, α trainable.

    ``alpha`` is an array that broadcasts to ``x`` (a scalar, or one slope per
    channel, e.g. shape ``(features,)``) and gets its own gradient.

    Derivative: d/dx = 1 for x > 0 and α for x < 0; d/dα = x for x < 0 and 0
    otherwise (summed over the axes α is broadcast along).
    Kink convention: at x = 0 the gradient in x is 1 and in α is 0, so
    ``prelu(x, c)`` equals ``leaky_relu(x, c)`` in value and gradient.
    Saves: x and α.
    """
    op = "funcnet.nn.prelu"
    x, alpha = promote_floats(op, x=x, alpha=alpha)
    check_broadcast_to(op, ("alpha", "x"), alpha.shape, x.shape)
    return _prelu(x, alpha)


# ---------------------------------------------------------------------- softplus
def _softplus_value(x):
    return jnp.logaddexp(widen(x), 0).astype(x.dtype)


_softplus = jax.custom_vjp(_softplus_value)


def _softplus_bwd(y, g):
    # σ(x) = 1 - e^{-softplus(x)}; expm1 keeps it exact when y is tiny.
    return ((widen(g) * -jnp.expm1(-widen(y))).astype(g.dtype),)


_softplus.defvjp(saves_output(_softplus_value), _softplus_bwd)


@with_forward_mode_hint
def softplus(x):
    """Softplus ``log(1 + eˣ)``, a smooth ReLU.

    Derivative: σ(x) = 1 - exp(-softplus(x)).
    Saves: the output only; the derivative ``-expm1(-y)`` is accurate both for
    large positive x (y ≈ x, derivative 1) and large negative x (y ≈ eˣ).
    Kinks: none.
    """
    return _softplus(_x("softplus", x))


# -------------------------------------------------------------------------- silu
def _silu_value(x):
    xw = widen(x)
    return (xw * jax.nn.sigmoid(xw)).astype(x.dtype)


_silu = jax.custom_vjp(_silu_value)


def _silu_fwd(x):
    return _silu_value(x), x


def _silu_bwd(x, g):
    xw = widen(x)
    s = jax.nn.sigmoid(xw)
    return ((widen(g) * s * (1 + xw * (1 - s))).astype(g.dtype),)


_silu.defvjp(_silu_fwd, _silu_bwd)


@with_forward_mode_hint
def silu(x):
    """SiLU (swish) ``x · σ(x)``.

    Derivative: σ(x)(1 + x(1 - σ(x))).
    Saves: the input only (σ is recomputed in the backward pass instead of
    being stored). Kinks: none.
    """
    return _silu(_x("silu", x))


# -------------------------------------------------------------------------- gelu
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


def _gelu_value(x, approximate):
    return jax.nn.gelu(widen(x), approximate=approximate).astype(x.dtype)


_gelu = jax.custom_vjp(_gelu_value, nondiff_argnums=(1,))


def _gelu_fwd(x, approximate):
    return _gelu_value(x, approximate), x


def _gelu_bwd(approximate, x, g):
    xw = widen(x)
    if approximate:
        # Beyond |x| = 10 tanh is ±1 to float32 precision; clamping keeps x³ finite.
        xc = jnp.clip(xw, -10, 10)
        t = jnp.tanh(_SQRT_2_OVER_PI * (xc + _GELU_C * xc**3))
        sech2 = 1 - t * t
        local = 0.5 * (1 + t) + 0.5 * xc * sech2 * _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * xc**2)
    else:
        cdf = 0.5 * lax.erfc(-xw / math.sqrt(2))
        pdf = jnp.exp(-0.5 * xw * xw) / math.sqrt(2 * math.pi)
        local = cdf + xw * pdf
    return ((widen(g) * local).astype(g.dtype),)


_gelu.defvjp(_gelu_fwd, _gelu_bwd)


@with_forward_mode_hint
def gelu(x, approximate=True):
    """Gaussian error linear unit ``x · Φ(x)``.

    Exact form (``approximate=False``): ``x Φ(x)`` with Φ the standard normal
    CDF. Tanh form (``approximate=True``, the ``jax.nn`` default):
    ``½x(1 + tanh(u))`` with ``u = √(2/π)(x + 0.044715x³)``.

    Derivative: exact form ``Φ(x) + x φ(x)`` (φ the normal density); tanh form
    ``½(1 + tanh u) + ½x(1 - tanh²u)·√(2/π)(1 + 3·0.044715x²)``.
    Saves: the input only. Kinks: none.
    """
    return _gelu(_x("gelu", x), bool(approximate))


# ----------------------------------------------------------------------- softmax
def _softmax_value(x, axis):
    return jax.nn.softmax(widen(x), axis=axis).astype(x.dtype)


_softmax = jax.custom_vjp(_softmax_value, nondiff_argnums=(1,))


def _softmax_bwd(axis, y, g):
    y, gw = widen(y), widen(g)
    return ((y * (gw - jnp.sum(gw * y, axis=axis, keepdims=True))).astype(g.dtype),)


_softmax.defvjp(saves_output(_softmax_value), _softmax_bwd)


@with_forward_mode_hint
def softmax(x, axis=-1):
    """Softmax ``y_i = exp(x_i) / Σ_j exp(x_j)`` along ``axis``.

    Derivative: ∂y_i/∂x_j = y_i(δ_ij - y_j), so the vector-Jacobian product is
    ``y ⊙ (g - Σ_j g_j y_j)``.
    Saves: the output only. The forward pass subtracts the maximum, so large
    logits do not overflow. Kinks: none.
    """
    x = _x("softmax", x)
    return _softmax(x, canonical_axis("funcnet.nn.softmax", axis, x.ndim))


# ------------------------------------------------------------------- log_softmax
def _log_softmax_value(x, axis):
    return jax.nn.log_softmax(widen(x), axis=axis).astype(x.dtype)


_log_softmax = jax.custom_vjp(_log_softmax_value, nondiff_argnums=(1,))


def _log_softmax_bwd(axis, y, g):
    gw = widen(g)
    return ((gw - jnp.exp(widen(y)) * jnp.sum(gw, axis=axis, keepdims=True)).astype(g.dtype),)


_log_softmax.defvjp(saves_output(_log_softmax_value), _log_softmax_bwd)


@with_forward_mode_hint
def log_softmax(x, axis=-1):
    """Log-softmax ``y_i = x_i - log Σ_j exp(x_j)`` along ``axis``.

    Derivative: ∂y_i/∂x_j = δ_ij - softmax(x)_j, so the vector-Jacobian product
    is ``g - exp(y) Σ_j g_j``.
    Saves: the output only (softmax is ``exp(y)``). Kinks: none.
    """
    x = _x("log_softmax", x)
    return _log_softmax(x, canonical_axis("funcnet.nn.log_softmax", axis, x.ndim))
