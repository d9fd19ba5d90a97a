"""Normalisation ops with hand-written rules in both directions (``funcnet.nn``): standardize, layer_norm, rms_norm.

All three are one rule family: ``y = x̂ · scale + bias`` with ``x̂ = (x - μ)·r``
(``μ = 0`` for RMS normalisation), where μ and ``r = 1/sqrt(var + ε)`` are
per-row statistics over the normalised axes. The reverse rule keeps the input
(alive anyway: the layer before produced it), the scale, and per row only μ
and r, never the normalised activations; it rebuilds x̂ from them. With n the
number of entries in a row (those ``where`` keeps), g' = g·scale, and sums over
the row:

* ``dx = r [g' - w (Σg' + x̂ Σg'x̂)/n]`` (w = 1 for the entries that enter the
  statistics; for RMS normalisation the Σg' term is absent),
* ``d scale = Σ_rows g x̂``, ``d bias = Σ_rows g``;

the forward rule is ``ẏ = r [ẋ - w (Σwẋ + x̂ Σw x̂ẋ)/n]·scale + x̂·ṡ + ḃ``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.ops import _samples as S
from funcnet.ops.inputs import (bool_mask, broadcast_shapes, canonical_axis, check_per_row, check_range, float_input,
                                is_number, promote_floats, static_float)
from funcnet.ops.numerics import sum_to_shape, widen
from funcnet.ops.binding import with_array_hypers, with_optional
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.reference import nn as twin

declare = declarer("nn", twins=twin, upstream=jax.nn)


def epsilon_argument(op: str, epsilon) -> float:
    """``epsilon`` as a Python float >= 0 (0 keeps a constant row's 0/0 NaN, as jax.nn), or an error naming ``op``."""
    epsilon = static_float(op, "epsilon", epsilon)
    check_range(op, "epsilon", epsilon, low=0, meaning="added to the variance")
    return epsilon


def _epsilon(op: str, x, epsilon, axes):
    """``(x, ε)``: a number as :func:`epsilon_argument`; an array (traced too) promoted with x, one value per row."""
    if is_number(epsilon):
        return x, epsilon_argument(op, epsilon)
    check_range(op, "epsilon", epsilon, low=0, meaning="added to the variance")
    x, epsilon = promote_floats(op, x=x, epsilon=epsilon)
    check_per_row(op, "epsilon", epsilon, x.shape, axes)
    return x, epsilon


def _statistics(x, where, axes, epsilon, center, algorithm):
    """(x̂, μ, r, n) over ``axes`` (keepdims), in at least float32."""
    xw = widen(x)
    n = (math.prod(x.shape[a] for a in axes) if where is None
         else jnp.sum(where, axis=axes, keepdims=True).astype(xw.dtype))
    mean = (lambda v: jnp.sum(v if where is None else jnp.where(where, v, 0.0), axis=axes, keepdims=True) / n)
    mu = mean(xw) if center else jnp.zeros((), xw.dtype)
    if center and algorithm == "fast":
        var = jnp.maximum(mean(xw * xw) - mu * mu, 0.0)
    else:
        var = mean((xw - mu) ** 2)
    r = jax.lax.rsqrt(var + epsilon)
    return (xw - mu) * r, mu, r, n


def _save(x, scale, bias, where, axes, epsilon, center, algorithm):
    xhat, mu, r, _ = _statistics(x, where, axes, epsilon, center, algorithm)
    y = xhat if scale is None else xhat * widen(scale)
    if bias is not None:
        y = y + widen(bias)
    return y.astype(x.dtype), (x, scale, bias, where, mu, r)


def _xhat_and_count(res, axes):
    x, _, _, where, mu, r = res
    n = (math.prod(x.shape[a] for a in axes) if where is None
         else jnp.sum(where, axis=axes, keepdims=True).astype(r.dtype))
    return (widen(x) - mu) * r, n


def _project(v, xhat, r, where, axes, n, center):
    """r [v - w(Σv + x̂ Σv x̂)/n]: the derivative of x̂ applied to v (a cotangent, or a tangent with w folded in)."""
    keep = 1.0 if where is None else where
    total = jnp.sum(v, axis=axes, keepdims=True) if center else 0.0
    return r * (v - keep * (total + xhat * jnp.sum(v * xhat, axis=axes, keepdims=True)) / n)


def _vjp(res, g, axes, epsilon, center, algorithm):
    x, scale, bias, where, mu, r = res
    xhat, n = _xhat_and_count(res, axes)
    gw = widen(g)
    gs = gw if scale is None else gw * widen(scale)
    # G = Σ g' and H = Σ g'x̂ run over every entry (all outputs depend on μ and r); only the entries that
    # enter the statistics (where) get the w/n terms
    gx = _project(gs, xhat, r, where, axes, n, center)
    gscale = None if scale is None else sum_to_shape(gw * xhat, scale.shape).astype(scale.dtype)
    gbias = None if bias is None else sum_to_shape(gw, bias.shape).astype(bias.dtype)
    return gx.astype(x.dtype), gscale, gbias, None


def _jvp(res, tx, tscale, tbias, _, axes, epsilon, center, algorithm):
    x, scale, bias, where, mu, r = res
    xhat, n = _xhat_and_count(res, axes)
    out = None
    if tx is not None:
        txw = widen(tx)
        kept = txw if where is None else jnp.where(where, txw, 0.0)
        total = jnp.sum(kept, axis=axes, keepdims=True) if center else 0.0
        dxhat = r * (txw - (total + xhat * jnp.sum(kept * xhat, axis=axes, keepdims=True)) / n)
        out = dxhat if scale is None else dxhat * widen(scale)
    if tscale is not None:
        out = (0.0 if out is None else out) + xhat * widen(tscale)
    if tbias is not None:
        out = (0.0 if out is None else out) + jnp.broadcast_to(widen(tbias), x.shape)
    return None if out is None else out.astype(x.dtype)


def _rule(name: str, present: tuple[bool, bool, bool, bool]):
    return with_optional(name, _save, _vjp, _jvp, present)


def _depsilon(res, axes, epsilon, center, algorithm):
    """dy/dε = -scale·x̂·r²/2, as dr/dε = -r³/2."""
    x, scale, _, _, mu, r = res
    d = -0.5 * (widen(x) - mu) * r ** 3
    return (d if scale is None else d * widen(scale),)


#: one rule per combination of the optional arrays (scale, bias, where), with ε a number (False) or an array
_RULES = {(s, b, w, False): _rule("normalize", (True, s, b, w)) for s in (False, True) for b in (False, True)
          for w in (False, True)}
_RULES |= {(*k[:3], True): with_array_hypers(r, ("epsilon",), _depsilon) for k, r in _RULES.items()}


def _normalize(x, scale=None, bias=None, where=None, *, axes, epsilon, center, algorithm="stable"):
    args = [a for a in (x, scale, bias, where) if a is not None]
    rule = _RULES[scale is not None, bias is not None, where is not None, not is_number(epsilon)]
    static = dict(axes=axes, center=center, algorithm=algorithm)
    return rule(*args, epsilon=epsilon, **static) if is_number(epsilon) else rule(*args, epsilon, **static)


# --------------------------------------------------------------------- standardize
@declare(forms=tuple(r for (s, b, _, _), r in _RULES.items() if not s and not b), activation=False,
         saves="the input and, per row, the mean and 1/sqrt(var + epsilon) (not the standardized values), and "
               "epsilon when it is an array",
         kink="a constant row (variance 0) gives 0 with gradient r(g - mean(g)), r = 1/sqrt(epsilon)",
         differs="an array `epsilon` must broadcast to the statistics' keepdims shape (jax.nn also takes one that "
                 "varies along `axis`); when `mean` or `variance` is given, the given statistics are used in plain "
                 "jnp (autodiff), as in jax.nn",
         checks=Checks(sample=S.unary(), cases=S.SOFTMAX_SHAPES[:2],
                       extreme=lambda: (S.np.array([[1e4, -1e4, 0.5], [1e-4, -2e-4, 3e-4]]),)))
def standardize(x, axis=-1, mean=None, variance=None, epsilon=1e-05, where=None, *, algorithm="fast"):
    """Standardize ``(x - μ) / sqrt(var + ε)`` over ``axis``, as ``jax.nn.standardize``.

    μ and var are the mean and variance over ``axis`` (an int, a tuple or
    None), of the entries ``where`` keeps; every entry is standardized with
    them. ``algorithm="fast"`` computes var as E[x²] - μ² (clipped at 0) and
    ``"stable"`` as E[(x - μ)²]; both have the same derivative. Given ``mean``
    or ``variance`` arrays are used instead (and get their gradients through
    plain jnp). ``epsilon`` is a number, or an array (traced too) that
    broadcasts against the statistics kept with ``keepdims`` and gets its
    gradient.

    Derivative (μ and var from x): dx = r [g - w(Σg + x̂ Σg x̂)/n], with
    r = 1/sqrt(var + ε), x̂ the output, n the number of entries kept and w = 1
    on them; dε = -Σ g x̂ r²/2 (summed where ε is broadcast).

    Precision (as ``jax.nn.standardize``, whose formula this is; peers do no
    better): a constant row gives 0 only while x - μ is exact. The mean of
    equal entries c is rounded, so x - μ is of the order of c's spacing, and
    once that exceeds sqrt(ε) the output of ``"stable"`` is ±1 instead of 0
    (in most rows from |c| ≈ 1e4 on in float32, from about 1e12 in float64),
    and ``"fast"``'s cancellation in E[x²] - μ² gives anything (float32
    rows of 1e7 up to ±1.3e3, a float64 row of 1e30 -4.45e16). Entries beyond
    about 1.8e19 (the root of float32's largest number) overflow x² in the
    float32 statistics of float32 and bfloat16 rows: var = inf, and the row
    standardizes to 0 (NaN where inf - inf appears). Scale such features down
    (and drop constant ones) first, or compute in float64.
    """
    op = "funcnet.nn.standardize"
    x = float_input(op, "x", x)
    if algorithm not in ("fast", "stable"):
        raise ValueError(f"{op}: unknown algorithm {algorithm!r}; expected 'fast' or 'stable'")
    axes = canonical_axis(op, axis, x.ndim)
    x, epsilon = _epsilon(op, x, epsilon, axes)
    if where is not None:
        where = bool_mask(op, where)
        where = jnp.broadcast_to(where, broadcast_shapes(op, x=x.shape, where=where.shape))
    if mean is None and variance is None:
        return _normalize(x, where=where, axes=axes, epsilon=epsilon, center=True, algorithm=algorithm)
    return _with_statistics(x, axes, mean, variance, epsilon, where, algorithm)


def _with_statistics(x, axes, mean, variance, epsilon, where, algorithm):
    """Given statistics: ``(x - mean)·rsqrt(variance + ε)`` in plain jnp, as ``jax.nn.standardize``.

    The missing statistic comes from ``x`` (and the given one); autodiff of this elementwise code is exact.
    """
    if mean is None:
        mean = jnp.mean(x, axes, keepdims=True, where=where)
    if variance is None:
        second = (lambda v: jnp.mean(v, axes, keepdims=True, where=where))
        variance = (second(jnp.square(x - mean)) if algorithm == "stable"
                    else jnp.maximum(second(jnp.square(x)) - jnp.square(mean), 0))
    return (x - mean) * jax.lax.rsqrt(variance + epsilon)


# ------------------------------------------------------------- layer_norm, rms_norm
def _affine_args(op: str, x, scale, bias):
    x = float_input(op, "x", x)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have a feature axis (the last), got a scalar")
    named = {"x": x} | {k: v for k, v in (("scale", scale), ("bias", bias)) if v is not None}
    promoted = dict(zip(named, promote_floats(op, **named)))
    for k in ("scale", "bias"):
        if k in promoted:
            try:
                fits = np.broadcast_shapes(x.shape, promoted[k].shape) == tuple(x.shape)
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(f"{op}: `{k}` of shape {tuple(promoted[k].shape)} must broadcast to x's shape "
                                 f"{tuple(x.shape)} (typically ({x.shape[-1]},))")
    return promoted["x"], promoted.get("scale"), promoted.get("bias")


def _features(rng, case):
    """x of shape ``case``, scale and bias of its feature width."""
    return S.normal(rng, case), rng.uniform(0.5, 1.5, case[-1:]), S.normal(rng, case[-1:])


@declare(forms=tuple(r for (_, _, w, _), r in _RULES.items() if not w), activation=False,
         saves="x and scale, and per row the mean and 1/sqrt(var + epsilon) (not x̂); epsilon when it is an array",
         diff_argnums=(0, 1, 2),
         checks=Checks(sample=_features, cases=((5,), (4, 6)),
                       extreme=lambda: (S.np.array([[1e4, -1e4, 0.5], [1e-4, -2e-4, 3e-4]]), S.np.ones(3), S.np.zeros(3))))
def layer_norm(x, scale=None, bias=None, *, epsilon=1e-5):
    """Layer normalisation (Ba et al., 2016) over the last axis: ``x̂ · scale + bias``, x̂ = (x - μ)/sqrt(var + ε).

    μ and var are the mean and (biased) variance of each row. ``scale`` and
    ``bias`` (optional) broadcast against x, typically of shape (features,).
    ``epsilon`` is a number or an array, as in :func:`standardize`. There is
    no jax.nn namesake; the value is Flax's and Equinox's LayerNorm.

    Derivative, with g' = g·scale and r = 1/sqrt(var + ε): dx = r [g' -
    (Σg' + x̂ Σg'x̂)/n], d scale = Σ_rows g x̂, d bias = Σ_rows g, dε =
    -Σ g'x̂ r²/2.

    Precision: that of :func:`standardize` with ``algorithm="stable"`` (a
    constant row of float32 entries beyond about 1e4 gives ±1, not 0; entries
    beyond about 1.8e19 give 0 in float32 and bfloat16).
    """
    op = "funcnet.nn.layer_norm"
    x, scale, bias = _affine_args(op, x, scale, bias)
    x, epsilon = _epsilon(op, x, epsilon, (x.ndim - 1,))
    return _normalize(x, scale, bias, axes=(x.ndim - 1,), epsilon=epsilon, center=True)


def _features_no_bias(rng, case):
    return _features(rng, case)[:2]


@declare(forms=tuple(r for (_, b, w, _), r in _RULES.items() if not b and not w), activation=False,
         saves="x and scale, and per row 1/sqrt(mean(x²) + epsilon); epsilon when it is an array",
         diff_argnums=(0, 1),
         checks=Checks(sample=_features_no_bias, cases=((5,), (4, 6)),
                       extreme=lambda: (S.np.array([[1e4, -1e4, 0.5], [1e-4, -2e-4, 3e-4]]), S.np.ones(3))))
def rms_norm(x, scale=None, *, epsilon=1e-6):
    """RMS normalisation (Zhang & Sennrich, 2019) over the last axis: ``x / sqrt(mean(x²) + ε) · scale``.

    No centring and no bias. ``scale`` (optional) broadcasts against x;
    ``epsilon`` is a number or an array, as in :func:`standardize`.

    Derivative, with g' = g·scale, r = 1/sqrt(mean(x²) + ε) and x̂ = x·r:
    dx = r [g' - x̂ Σg'x̂ / n], d scale = Σ_rows g x̂, dε = -Σ g'x̂ r²/2.

    Precision: there is no mean to cancel, but as in :func:`standardize`,
    entries beyond about 1.8e19 overflow x² in the float32 statistics of
    float32 and bfloat16 rows, and the row normalizes to 0.
    """
    op = "funcnet.nn.rms_norm"
    x, scale, _ = _affine_args(op, x, scale, None)
    x, epsilon = _epsilon(op, x, epsilon, (x.ndim - 1,))
    return _normalize(x, scale, axes=(x.ndim - 1,), epsilon=epsilon, center=False)


__all__ = names("nn", __name__)
