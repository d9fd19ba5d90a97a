"""Arithmetic shared by the rules: precision, broadcasting sums, optional tangents, the log floor."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Reverse a broadcast: sum ``g`` over the axes that broadcasting added or stretched."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    axes = tuple(range(lead)) + stretched
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)

def compute_dtype(dtype: Any) -> Any:
    """The dtype a rule computes in: float16/bfloat16 are widened to float32.

    Half-precision exponentials and cubes overflow at modest inputs (GELU's x^3
    is inf at |x| > 40 in float16), so the elementwise math runs in float32 and
    only the stored result is rounded back to the input dtype.
    """
    return jnp.promote_types(dtype, jnp.float32)


def widen(x: jax.Array) -> jax.Array:
    return x.astype(compute_dtype(x.dtype))


def log_add_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log(eᵃ + eᵇ)`` whose derivatives of every order are 0 along an argument that is ``-inf``.

    ``jnp.logaddexp`` replaces a ``-inf`` argument by 0 in its derivative, which gives a
    NaN second derivative (the focal loss's Hessian at hard labels). Written as
    ``hi + log1p(e^(lo - hi))``, every derivative along ``lo`` carries the factor
    ``e^(lo - hi)``, exactly 0 where ``lo = -inf``. At most one argument may be ``-inf``.
    """
    hi, lo = jnp.maximum(a, b), jnp.minimum(a, b)
    return hi + jnp.log1p(jnp.exp(lo - hi))


def add_tangents(*terms: Any, shape: tuple[int, ...] | None = None) -> Any:
    """The sum of the terms that are not ``None`` (a ``None`` tangent is zero), broadcast to ``shape`` if given.

    ``None`` if every term is ``None``: the tangent is symbolically zero.
    """
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out if shape is None else jnp.broadcast_to(out, shape)


#: ``binary_cross_entropy`` clamps each log term at this value (PyTorch's
#: ``BCELoss`` convention), so a probability of exactly 0 or 1 gives a finite loss.
LOG_FLOOR = -100.0
