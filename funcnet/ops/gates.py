"""Gates of a computational graph: add, multiply, maximum, matmul, affine.

Each gate is a ``jax.custom_vjp`` with a hand-written backward rule. The rules are
the three patterns of backpropagation on a graph:

* the **add** gate distributes the upstream gradient unchanged to both inputs;
* the **max** gate routes it to the larger input;
* the **multiply** gate swaps: each input receives the gradient times the other.

All gates broadcast like ``jax.numpy``; a gradient is summed back to the shape of
the input it belongs to. Inputs must be floating point; mixed float dtypes are
promoted like ``jnp`` does, and each gradient returns in its own input's dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from funcnet.ops._common import (
    broadcast_shapes,
    promote_floats,
    saves_inputs,
    sum_to_shape,
    with_forward_mode_hint,
)

__all__ = ["add", "multiply", "maximum", "matmul", "affine"]


# --------------------------------------------------------------------------- add
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _add(x_shape, y_shape, x, y):
    return x + y


def _add_fwd(x_shape, y_shape, x, y):
    return x + y, None


def _add_bwd(x_shape, y_shape, _, g):
    return sum_to_shape(g, x_shape), sum_to_shape(g, y_shape)


_add.defvjp(_add_fwd, _add_bwd)


@with_forward_mode_hint
def add(x, y):
    """Elementwise sum ``x + y`` with ``jnp`` broadcasting.

    Derivative: d(x+y)/dx = d(x+y)/dy = 1, so the rule hands the upstream
    gradient to both inputs (each summed back to its own shape).

    Saves: nothing (only the static input shapes).
    Kinks: none.
    """
    x, y = promote_floats("funcnet.gates.add", x=x, y=y)
    broadcast_shapes("funcnet.gates.add", x=x.shape, y=y.shape)
    return _add(x.shape, y.shape, x, y)


# ---------------------------------------------------------------------- multiply
def _multiply_value(x, y):
    return x * y


_multiply = jax.custom_vjp(_multiply_value)


def _multiply_bwd(res, g):
    x, y = res
    return sum_to_shape(g * y, x.shape), sum_to_shape(g * x, y.shape)


_multiply.defvjp(saves_inputs(_multiply_value), _multiply_bwd)


@with_forward_mode_hint
def multiply(x, y):
    """Elementwise product ``x * y`` with ``jnp`` broadcasting.

    Derivative: d(xy)/dx = y and d(xy)/dy = x: the gate swaps its inputs, so
    ``dx = g * y`` and ``dy = g * x``.

    Saves: both inputs.
    Kinks: none.
    """
    x, y = promote_floats("funcnet.gates.multiply", x=x, y=y)
    broadcast_shapes("funcnet.gates.multiply", x=x.shape, y=y.shape)
    return _multiply(x, y)


# ----------------------------------------------------------------------- maximum
def _maximum_value(x, y):
    return jnp.maximum(x, y)


_maximum = jax.custom_vjp(_maximum_value)


def _maximum_bwd(res, g):
    x, y = res
    # 1 where x wins, 0 where y wins, 1/2 at a tie.
    share_x = jnp.where(x > y, 1.0, jnp.where(x < y, 0.0, 0.5)).astype(g.dtype)
    gx = g * share_x
    return sum_to_shape(gx, x.shape), sum_to_shape(g - gx, y.shape)


_maximum.defvjp(saves_inputs(_maximum_value), _maximum_bwd)


@with_forward_mode_hint
def maximum(x, y):
    """Elementwise maximum ``max(x, y)`` with ``jnp`` broadcasting.

    Derivative: 1 for the larger input and 0 for the other: the gate routes the
    upstream gradient to whichever input won.

    Kink convention: at a tie ``x == y`` the gradient is split equally, ``g/2`` to
    each input. This is the value ``jax.grad(jnp.maximum)`` gives, it keeps
    ``maximum(x, y)`` and ``maximum(y, x)`` symmetric, and the two halves sum to
    the gradient of the common value (a valid subgradient).

    Saves: both inputs.
    """
    x, y = promote_floats("funcnet.gates.maximum", x=x, y=y)
    broadcast_shapes("funcnet.gates.maximum", x=x.shape, y=y.shape)
    return _maximum(x, y)


# ------------------------------------------------------------------------ matmul
def _as_matrices(a, b):
    """Promote 1-D operands the way ``jnp.matmul`` does."""
    return (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def _matmul_value(a, b):
    return jnp.matmul(a, b)


_matmul = jax.custom_vjp(_matmul_value)


def _matmul_bwd(res, g):
    a, b = res
    a2, b2 = _as_matrices(a, b)
    g2 = g
    if a.ndim == 1:
        g2 = jnp.expand_dims(g2, -2 if b.ndim > 1 else -1)
    if b.ndim == 1:
        g2 = g2[..., None]
    ga = sum_to_shape(jnp.matmul(g2, _swap(b2)), a2.shape)
    gb = sum_to_shape(jnp.matmul(_swap(a2), g2), b2.shape)
    return ga.reshape(a.shape), gb.reshape(b.shape)


_matmul.defvjp(saves_inputs(_matmul_value), _matmul_bwd)


@with_forward_mode_hint
def matmul(a, b):
    """Matrix product with the semantics of ``jnp.matmul``.

    ``a`` is ``(..., m, k)`` and ``b`` is ``(..., k, n)``; leading batch axes
    broadcast; a 1-D operand is treated as a row (``a``) or column (``b``) vector
    and that axis is dropped from the result.

    Derivative: for C = A B, dA = G Bᵀ and dB = Aᵀ G (summed over broadcast
    batch axes).

    Saves: both inputs.
    Kinks: none.
    """
    op = "funcnet.gates.matmul"
    a, b = promote_floats(op, a=a, b=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"{op}: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    a2, b2 = _as_matrices(a, b)
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(
            f"{op}: contraction dimensions differ: a{tuple(a.shape)} has {a2.shape[-1]} columns, "
            f"b{tuple(b.shape)} has {b2.shape[-2]} rows"
        )
    broadcast_shapes(op, a_batch=a2.shape[:-2], b_batch=b2.shape[:-2])
    return _matmul(a, b)


# ------------------------------------------------------------------------ affine
@jax.custom_vjp
def _affine(x, w, b):
    return jnp.matmul(x, w) + b


def _affine_fwd(x, w, b):
    return jnp.matmul(x, w) + b, (x, w)


def _affine_bwd(res, g):
    x, w = res
    lead = tuple(range(g.ndim - 1))
    gx = jnp.matmul(g, w.T)
    gw = jnp.tensordot(x, g, axes=(lead, lead))
    gb = g.sum(axis=lead)
    return gx, gw, gb


_affine.defvjp(_affine_fwd, _affine_bwd)


@with_forward_mode_hint
def affine(x, w, b):
    """Affine map ``x @ w + b``: the score function of a dense layer.

    ``x`` is ``(..., n_in)`` (any number of leading batch axes), ``w`` is
    ``(n_in, n_out)`` and ``b`` is ``(n_out,)``.

    Derivative: with G the upstream gradient, dx = G wᵀ, dw = xᵀ G and db = ΣG,
    the products and sums running over every leading batch axis.

    Saves: ``x`` and ``w`` (the bias is not needed by the rule).
    Kinks: none.
    """
    op = "funcnet.gates.affine"
    x, w, b = promote_floats(op, x=x, w=w, b=b)
    if w.ndim != 2:
        raise ValueError(f"{op}: `w` must be 2-D (n_in, n_out), got shape {tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{op}: the last axis of x{tuple(x.shape)} must equal the first axis of w{tuple(w.shape)}"
        )
    if b.shape != (w.shape[1],):
        raise ValueError(f"{op}: `b` must have shape ({w.shape[1]},) to match w{tuple(w.shape)}, got {tuple(b.shape)}")
    return _affine(x, w, b)
