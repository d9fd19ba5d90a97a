"""Gates of a computational graph: add, multiply, maximum, matmul, affine, embedding (``funcnet.gates``).

Each gate is one :class:`~funcnet.ops.binding.Op` (value, residuals, reverse
rule, forward rule) and one public function, declared together with
:func:`declare`. The reverse rules are the three patterns of backpropagation on
a graph:

* the **add** gate distributes the upstream gradient unchanged to both inputs;
* the **max** gate routes it to the larger input;
* the **multiply** gate swaps: each input receives the gradient times the other.

The forward rules are the same derivatives applied to input tangents: the add
gate sums them, the max gate passes on the winner's, the multiply gate weights
each by the other input (``ẋ y + x ẏ``).

The **embedding** gate (a table lookup) is a gather. Its reverse rule is a
scatter-add (every row of the table receives the sum of the gradients of the
positions that read it) and its forward rule gathers the tangent table.

The other gates broadcast like ``jax.numpy``; a gradient is summed back to the shape of
the input it belongs to, and a tangent is broadcast to the shape of the output.
Integer inputs are promoted to the default float dtype; mixed float dtypes are
promoted like ``jnp`` does, and each gradient returns in its own input's dtype.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from funcnet.ops import _samples as S
from funcnet.ops.inputs import as_array, broadcast_shapes, is_concrete, promote_floats
from funcnet.ops.numerics import add_tangents, sum_to_shape
from funcnet.ops.binding import Op
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import gates as twin

declare = declarer("gates", twins=twin)


# --------------------------------------------------------------------------- add
def _add_vjp(_, g, x_shape, y_shape):
    return sum_to_shape(g, x_shape), sum_to_shape(g, y_shape)


def _add_jvp(_, tx, ty, x_shape, y_shape):
    return add_tangents(tx, ty, shape=np.broadcast_shapes(x_shape, y_shape))


_ADD = Op(
    "add",
    value=lambda x, y, x_shape, y_shape: x + y,
    save=lambda x, y, x_shape, y_shape: (x + y, None),
    vjp=_add_vjp,
    jvp=_add_jvp,
)


@declare(forms=_ADD, saves="nothing (static shapes only)", diff_argnums=(0, 1),
         checks=Checks(sample=S.pair, cases=S.BROADCAST_PAIRS, extreme=S.extreme_pair))
def add(x, y):
    """Elementwise sum ``x + y`` with ``jnp`` broadcasting.

    Derivative: d(x+y)/dx = d(x+y)/dy = 1, so the reverse rule hands the
    upstream gradient to both inputs (each summed back to its own shape) and
    the forward rule is ``ẋ + ẏ`` (broadcast to the output's shape).
    """
    op = "funcnet.gates.add"
    x, y = promote_floats(op, x=x, y=y)
    broadcast_shapes(op, x=x.shape, y=y.shape)
    return _ADD(x, y, x_shape=tuple(x.shape), y_shape=tuple(y.shape))


# ---------------------------------------------------------------------- multiply
def _multiply_vjp(res, g):
    x, y = res
    return sum_to_shape(g * y, x.shape), sum_to_shape(g * x, y.shape)


def _multiply_jvp(res, tx, ty):
    x, y = res
    shape = np.broadcast_shapes(x.shape, y.shape)
    return add_tangents(None if tx is None else tx * y, None if ty is None else x * ty, shape=shape)


_MULTIPLY = Op("multiply", value=lambda x, y: x * y, vjp=_multiply_vjp, jvp=_multiply_jvp)


@declare(forms=_MULTIPLY, saves="both inputs", diff_argnums=(0, 1),
         checks=Checks(sample=S.pair, cases=S.BROADCAST_PAIRS, extreme=S.extreme_pair))
def multiply(x, y):
    """Elementwise product ``x * y`` with ``jnp`` broadcasting.

    Derivative: d(xy)/dx = y and d(xy)/dy = x: the gate swaps its inputs, so
    the reverse rule is ``dx = g * y``, ``dy = g * x`` and the forward rule
    ``ẋ y + x ẏ``.
    """
    op = "funcnet.gates.multiply"
    x, y = promote_floats(op, x=x, y=y)
    broadcast_shapes(op, x=x.shape, y=y.shape)
    return _MULTIPLY(x, y)


# ----------------------------------------------------------------------- maximum
def _share_x(x, y, dtype):
    """1 where x wins, 0 where y wins, 1/2 at a tie (in the broadcast shape)."""
    return jnp.where(x > y, 1.0, jnp.where(x < y, 0.0, 0.5)).astype(dtype)


def _maximum_vjp(res, g):
    x, y = res
    gx = g * _share_x(x, y, g.dtype)
    return sum_to_shape(gx, x.shape), sum_to_shape(g - gx, y.shape)


def _maximum_jvp(res, tx, ty):
    x, y = res
    shape = np.broadcast_shapes(x.shape, y.shape)
    if tx is None and ty is None:
        return None
    share = _share_x(x, y, (tx if tx is not None else ty).dtype)
    return add_tangents(None if tx is None else share * tx, None if ty is None else (1 - share) * ty, shape=shape)


_MAXIMUM = Op("maximum", value=jnp.maximum, vjp=_maximum_vjp, jvp=_maximum_jvp)


@declare(forms=_MAXIMUM, saves="both inputs", diff_argnums=(0, 1),
         kink="at a tie x == y the gradient is split equally, g/2 to each input (as jax.grad(jnp.maximum))",
         checks=Checks(sample=S.untied_pair, cases=S.BROADCAST_PAIRS, extreme=S.extreme_pair,
                       kinks=(Kink("x == y", (np.array([1.0]), np.array([1.0])), np.array([0.5])),)))
def maximum(x, y):
    """Elementwise maximum ``max(x, y)`` with ``jnp`` broadcasting.

    Derivative: 1 for the larger input and 0 for the other: the reverse rule
    routes the upstream gradient to whichever input won, and the forward rule
    passes on the winner's tangent.

    At a tie ``x == y`` the gradient is split equally, ``g/2`` to each input
    (and the forward rule gives ``(ẋ + ẏ)/2``). This is the value
    ``jax.grad(jnp.maximum)`` gives, it keeps ``maximum(x, y)`` and
    ``maximum(y, x)`` symmetric, and the two halves sum to the gradient of the
    common value (a valid subgradient).
    """
    op = "funcnet.gates.maximum"
    x, y = promote_floats(op, x=x, y=y)
    broadcast_shapes(op, x=x.shape, y=y.shape)
    return _MAXIMUM(x, y)


# ------------------------------------------------------------------------ matmul
def _as_matrices(a, b):
    """Promote 1-D operands the way ``jnp.matmul`` does."""
    return (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def _matmul_vjp(res, g):
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


def _matmul_jvp(res, ta, tb):
    a, b = res
    # jnp.matmul has the 1-D and batch-broadcast semantics of the value itself,
    # so each term already has the output's shape.
    terms = [t for t in (None if ta is None else jnp.matmul(ta, b), None if tb is None else jnp.matmul(a, tb))
             if t is not None]
    return None if not terms else sum(terms[1:], terms[0])


_MATMUL = Op("matmul", value=jnp.matmul, vjp=_matmul_vjp, jvp=_matmul_jvp)


@declare(forms=_MATMUL, saves="both inputs", diff_argnums=(0, 1), checks=Checks(sample=S.pair,
                       cases=(((3, 4), (4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))),
                       extreme=lambda: (np.array([[1e4, -1e4], [1.0, 2.0]]), np.array([[-1e4, 3.0], [1e4, 1.0]]))))
def matmul(a, b):
    """Matrix product with the semantics of ``jnp.matmul``.

    ``a`` is ``(..., m, k)`` and ``b`` is ``(..., k, n)``; leading batch axes
    broadcast; a 1-D operand is treated as a row (``a``) or column (``b``) vector
    and that axis is dropped from the result.

    Derivative: for C = A B, the reverse rule is dA = G Bᵀ and dB = Aᵀ G
    (summed over broadcast batch axes) and the forward rule Ċ = Ȧ B + A Ḃ.
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
    return _MATMUL(a, b)


# ------------------------------------------------------------------------ affine
def _affine_value(x, w, b):
    return jnp.matmul(x, w) + b


def _affine_vjp(res, g):
    x, w = res
    lead = tuple(range(g.ndim - 1))
    gx = jnp.matmul(g, w.T)
    gw = jnp.tensordot(x, g, axes=(lead, lead))
    gb = g.sum(axis=lead)
    return gx, gw, gb


def _affine_jvp(res, tx, tw, tb):
    x, w = res
    return add_tangents(None if tx is None else jnp.matmul(tx, w), None if tw is None else jnp.matmul(x, tw), tb,
                        shape=tuple(x.shape[:-1]) + (w.shape[1],))


_AFFINE = Op(
    "affine",
    value=_affine_value,
    save=lambda x, w, b: (_affine_value(x, w, b), (x, w)),
    vjp=_affine_vjp,
    jvp=_affine_jvp,
)


@declare(forms=_AFFINE, saves="x and w", diff_argnums=(0, 1, 2),
         checks=Checks(sample=S.pair, cases=(((5, 3), (3, 4), (4,)), ((3,), (3, 2), (2,)), ((2, 3, 4), (4, 2), (2,))),
                       extreme=lambda: (np.array([[1e4, -1e4]]), np.array([[-1e4, 3.0], [1e4, 1.0]]), np.array([1e4, 0.0]))))
def affine(x, w, b):
    """Affine map ``x @ w + b``: the score function of a dense layer.

    ``x`` is ``(..., n_in)`` (any number of leading batch axes), ``w`` is
    ``(n_in, n_out)`` and ``b`` is ``(n_out,)``.

    Derivative: with G the upstream gradient, the reverse rule is dx = G wᵀ,
    dw = xᵀ G and db = ΣG, the products and sums running over every leading
    batch axis; the forward rule is ẏ = ẋ w + x ẇ + ḃ.
    Neither rule needs the bias, so it is not saved.
    """
    op = "funcnet.gates.affine"
    x, w, b = promote_floats(op, x=x, w=w, b=b)
    check_affine_shapes(op, "x", x, w, b)
    return _AFFINE(x, w, b)


def check_affine_shapes(op: str, x_name: str, x, w, b) -> None:
    """``x @ w + b`` fits: w is 2-D, x's last axis is w's first, b is ``(n_out,)``; else a ValueError naming ``op``."""
    if w.ndim != 2:
        raise ValueError(f"{op}: `w` must be 2-D (n_in, n_out), got shape {tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{op}: the last axis of {x_name}{tuple(x.shape)} must equal the first axis of w{tuple(w.shape)}"
        )
    if b.shape != (w.shape[1],):
        raise ValueError(f"{op}: `b` must have shape ({w.shape[1]},) to match w{tuple(w.shape)}, got {tuple(b.shape)}")


# --------------------------------------------------------------------- embedding
def _lookup(ids, rows):
    """``(valid, safe)``: where ``0 <= id < rows``, and the ids with the others replaced by 0 (a row to read)."""
    valid = (ids >= 0) & (ids < rows)
    return valid, jnp.where(valid, ids, 0)


def _embedding_value(table, ids, rows):
    valid, safe = _lookup(ids, rows)
    return jnp.where(valid[..., None], table[safe], jnp.nan).astype(table.dtype)


def _embedding_vjp(ids, g, rows):
    valid, _ = _lookup(ids, rows)
    wide = jnp.promote_types(g.dtype, jnp.float32)  # the sum of many float16 rows, accumulated in float32
    # an out-of-range id scatters to row `rows`, past the end, which mode="drop" leaves out
    target = jnp.where(valid, ids, rows).reshape(-1)
    dtable = jnp.zeros((rows, g.shape[-1]), wide).at[target].add(g.reshape(-1, g.shape[-1]).astype(wide), mode="drop")
    return dtable.astype(g.dtype), None


def _embedding_jvp(ids, t_table, _t_ids, rows):
    if t_table is None:
        return None
    valid, safe = _lookup(ids, rows)
    return jnp.where(valid[..., None], t_table[safe], 0).astype(t_table.dtype)


_EMBEDDING = Op(
    "embedding",
    value=_embedding_value,
    save=lambda table, ids, rows: (_embedding_value(table, ids, rows), ids),
    vjp=_embedding_vjp,
    jvp=_embedding_jvp,
)


def _embedding_sample(rng, shapes):
    (rows, width), ids_shape = shapes
    # more positions than rows: ids repeat, so the reverse rule must add (a scatter that overwrites fails)
    return rng.standard_normal((rows, width)), rng.integers(0, rows, ids_shape)


@declare(forms=_EMBEDDING, saves="the ids (the table's shape is static)", diff_argnums=(0,),
         checks=Checks(sample=_embedding_sample, cases=(((4, 3), (9,)), ((3, 2), ()), ((5, 4), (2, 6))),
                       extreme=lambda: (np.array([[1e30, -1e30], [3.0, -1e-30], [1e30, 1.0]]),
                                        np.array([[0, 2, 0], [1, 0, 2]]))))
def embedding(table, ids):
    """Table lookup ``y[..., :] = table[ids[...], :]``: row ``ids[i]`` of ``table`` for every position ``i``.

    ``table`` is ``(rows, features)``, ``ids`` an integer array of any shape;
    the result has shape ``ids.shape + (features,)`` and the table's dtype.
    The ids get no gradient.

    Derivative: ∂y_i/∂table_r = [ids_i = r], so the reverse rule is a
    scatter-add, ``dtable[r] = Σ_{i: ids_i = r} G_i`` (a row read several
    times receives the sum of its gradients; a row never read, zero), and the
    forward rule a gather of the tangent table, ``ẏ_i = ṫable[ids_i]``.
    float16/bfloat16 gradients are summed in float32.

    Ids are range-checked when their values are known at trace time (a
    ValueError naming the offending values). Under ``jit`` an id outside
    ``[0, rows)`` (negative ones included, which do not wrap around) gives a
    row of NaN, which is constant in the table: it sends no gradient to any row
    and has a zero tangent.
    """
    op = "funcnet.gates.embedding"
    (table,) = promote_floats(op, table=table)
    ids = as_array(op, "ids", ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{op}: `ids` must be an integer array of row indices, got {ids.dtype}{list(ids.shape)}")
    if table.ndim != 2:
        raise ValueError(f"{op}: `table` must be 2-D (rows, features), got shape {tuple(table.shape)}")
    rows = int(table.shape[0])
    if is_concrete(ids) and ids.size:
        values = np.asarray(ids)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{op}: ids must lie in [0, {rows}) for a table of {rows} rows, "
                             f"got values from {lo} to {hi}")
    return _EMBEDDING(table, ids, rows=rows)


__all__ = names("gates")
