"""The fused classifier head ``linear_softmax_cross_entropy``: never holds the N × V logits.

``x @ w + b`` followed by the integer-label softmax cross-entropy, as one op:
the forward pass streams over blocks of rows and classes with a running
maximum and sum of exponentials and saves only its inputs and the per-row
log-sum-exp; the reverse rule recomputes each block of logits and accumulates
the gradients of ``x``, ``w`` and ``b`` block by block; the forward rule streams
the same way.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import (as_integer_array, bool_mask, check_broadcast_to, check_class_labels, check_range,
                                float_input, promote_floats, static_float, static_int)
from funcnet.ops.binding import Op, varying_like
from funcnet.ops.declaration import Checks, declarer
from funcnet.reference import losses as twin

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ------------------------------------------------------------ the fused head


def _acc(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _block(start, size, total):
    """Clamp a block ``[start, start + size)`` into ``[0, total)``; returns (clamped start, fresh mask).

    The last block is shifted left so that it stays inside the array; the
    entries it shares with the block before it are masked out (not fresh).
    """
    clamped = jnp.minimum(start, total - size)
    return clamped, clamped + jnp.arange(size) >= start


def _logits(x_blk, w, b, c0, nc):
    w_blk = lax.dynamic_slice_in_dim(w, c0, nc, axis=1)
    b_blk = lax.dynamic_slice_in_dim(b, c0, nc)
    z = jnp.dot(x_blk, w_blk, preferred_element_type=_acc(x_blk.dtype))
    return z + b_blk.astype(z.dtype), w_blk


def _sizes(x, w, block_rows, block_classes):
    n, v = x.shape[0], w.shape[1]
    nr, nc = min(block_rows, n), min(block_classes, v)
    return n, v, nr, nc, math.ceil(n / nr), math.ceil(v / nc)


def _stream(x, w, b, labels, block_rows, block_classes, lse=None, tx=None, tw=None, tb=None):
    """One pass over (rows × classes) blocks of ``z = x @ w + b``; returns per-row sums.

    Without ``lse``: ``(lse(z), z_y, Σ_j z_j)``, the log-sum-exp by a running
    maximum and sum of exponentials. With ``lse`` and tangents: ``(Σ_j p_j ż_j,
    ż_y, Σ_j ż_j)`` with p = exp(z - lse) and ż = ẋ w + x ẇ + ḃ. No N × V array
    and no gather of w's columns is formed.
    """
    n, v, nr, nc, n_row_blocks, n_class_blocks = _sizes(x, w, block_rows, block_classes)
    acc = _acc(x.dtype)
    tangent = lse is not None
    inputs = [a for a in (x, w, b, labels, lse, tx, tw, tb) if a is not None]

    def rows(j, out):
        r0, _ = _block(j * nr, nr, n)
        x_blk = lax.dynamic_slice_in_dim(x, r0, nr)
        y_blk = lax.dynamic_slice_in_dim(labels, r0, nr)

        def classes(i, carry):
            c0, fresh = _block(i * nc, nc, v)
            z, _ = _logits(x_blk, w, b, c0, nc)
            at_label = (c0 + jnp.arange(nc))[None, :] == y_blk[:, None]
            if tangent:
                lse_blk = lax.dynamic_slice_in_dim(lse, r0, nr)
                tz = _logits(lax.dynamic_slice_in_dim(tx, r0, nr), w, jnp.zeros_like(b), c0, nc)[0] \
                    + _logits(x_blk, tw, tb, c0, nc)[0]
                tz = jnp.where(fresh, tz, 0.0)
                e, t_y, t_sum = carry
                return (e + (jnp.exp(z - lse_blk[:, None]) * tz).sum(axis=1),
                        t_y + jnp.where(at_label, tz, 0.0).sum(axis=1), t_sum + tz.sum(axis=1))
            m, s, z_y, z_sum = carry
            z = jnp.where(fresh, z, -jnp.inf)
            m_new = jnp.maximum(m, z.max(axis=1))
            # a row whose classes so far are all -inf (a bias of -inf masks a class) keeps s = 0: exp(-inf - -inf)
            # would be NaN
            shift = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
            s = s * jnp.exp(m - shift) + jnp.exp(z - shift[:, None]).sum(axis=1)
            z_y = z_y + jnp.where(at_label & fresh, z, 0.0).sum(axis=1)
            return m_new, s, z_y, z_sum + jnp.where(fresh, z, 0.0).sum(axis=1)

        zeros = varying_like(jnp.zeros((nr,), acc), *inputs)
        init = (zeros, zeros, zeros) if tangent else (zeros - jnp.inf, zeros, zeros, zeros)
        sums = lax.fori_loop(0, n_class_blocks, classes, init)
        if not tangent:
            m, s, z_y, z_sum = sums
            sums = (m + jnp.log(s), z_y, z_sum)
        return tuple(lax.dynamic_update_slice_in_dim(o, r, r0, axis=0) for o, r in zip(out, sums))

    return lax.fori_loop(0, n_row_blocks, rows, (varying_like(jnp.zeros((n,), acc), *inputs),) * 3)


def _value_parts(x, w, b, labels, where, smoothing, z_loss, block_rows, block_classes):
    lse, z_y, z_sum = _stream(x, w, b, labels, block_rows, block_classes)
    valid = (labels >= 0) & (labels < w.shape[1])
    z_y = jnp.where(valid, z_y, jnp.nan)  # an invalid label gives NaN
    # the smoothing and z-loss terms only where asked for: 0 · inf is NaN (a -inf bias makes z_sum -inf, a logit of
    # 1e30 makes lse² overflow)
    loss = (1 - smoothing) * (lse - z_y)
    if smoothing:
        loss = loss + smoothing * (lse - z_sum / w.shape[1])
    if z_loss:
        loss = loss + z_loss * lse**2
    return jnp.where(where, loss, 0.0).astype(x.dtype), lse


def _save(x, w, b, labels, where, **static):
    loss, lse = _value_parts(x, w, b, labels, where, **static)
    return loss, (x, w, b, labels, where, lse)


def _vjp(res, g, smoothing, z_loss, block_rows, block_classes):
    x, w, b, labels, where, lse = res
    n, v, nr, nc, n_row_blocks, n_class_blocks = _sizes(x, w, block_rows, block_classes)
    acc = _acc(x.dtype)
    valid = (labels >= 0) & (labels < v)
    g = jnp.where(where, jnp.where(valid, g.astype(acc), jnp.nan), 0.0)
    p_scale = g * (1 + 2 * z_loss * lse)  # d/dz of (lse + λ lse²) is (1 + 2λ lse) softmax(z)

    # dz = p_scale · softmax(z) - (1 - ε) g · onehot(y) - ε g / V, one block at a time
    def classes(i, carry):
        gx, gw, gb = carry
        c0, fresh_c = _block(i * nc, nc, v)

        def rows(j, inner):
            gx, gw_blk, gb_blk = inner
            r0, fresh_r = _block(j * nr, nr, n)
            x_blk = lax.dynamic_slice_in_dim(x, r0, nr)
            g_blk = lax.dynamic_slice_in_dim(g, r0, nr)[:, None]
            z, w_blk = _logits(x_blk, w, b, c0, nc)
            p = jnp.exp(z - lax.dynamic_slice_in_dim(lse, r0, nr)[:, None])
            at_label = (c0 + jnp.arange(nc))[None, :] == lax.dynamic_slice_in_dim(labels, r0, nr)[:, None]
            dz = p * lax.dynamic_slice_in_dim(p_scale, r0, nr)[:, None] \
                - jnp.where(at_label, (1 - smoothing) * g_blk, 0.0) - (smoothing / v) * g_blk
            dz = jnp.where(fresh_r[:, None] & fresh_c[None, :], dz, 0.0)
            gx_blk = lax.dynamic_slice_in_dim(gx, r0, nr) + jnp.dot(dz, w_blk.T.astype(acc))
            gx = lax.dynamic_update_slice_in_dim(gx, gx_blk, r0, axis=0)
            return gx, gw_blk + jnp.dot(x_blk.T.astype(acc), dz), gb_blk + dz.sum(axis=0)

        blk = (jnp.zeros((w.shape[0], nc), acc), jnp.zeros((nc,), acc))
        gx, gw_blk, gb_blk = lax.fori_loop(0, n_row_blocks, rows, (gx, *(varying_like(a, *res) for a in blk)))
        gw = lax.dynamic_update_slice_in_dim(gw, lax.dynamic_slice_in_dim(gw, c0, nc, axis=1) + gw_blk, c0, axis=1)
        gb = lax.dynamic_update_slice_in_dim(gb, lax.dynamic_slice_in_dim(gb, c0, nc) + gb_blk, c0, axis=0)
        return gx, gw, gb

    init = (jnp.zeros(x.shape, acc), jnp.zeros(w.shape, acc), jnp.zeros(b.shape, acc))
    gx, gw, gb = lax.fori_loop(0, n_class_blocks, classes, tuple(varying_like(a, *res) for a in init))
    return gx.astype(x.dtype), gw.astype(w.dtype), gb.astype(b.dtype), None, None


def _jvp(res, tx, tw, tb, _labels, _where, smoothing, z_loss, block_rows, block_classes):
    x, w, b, labels, where, lse = res
    tx = jnp.zeros_like(x) if tx is None else tx
    tw = jnp.zeros_like(w) if tw is None else tw
    tb = jnp.zeros_like(b) if tb is None else tb
    expected, tz_y, tz_sum = _stream(x, w, b, labels, block_rows, block_classes, lse, tx, tw, tb)
    valid = (labels >= 0) & (labels < w.shape[1])
    t = (1 + 2 * z_loss * lse) * expected - (1 - smoothing) * tz_y - smoothing * tz_sum / w.shape[1]
    t = jnp.where(valid, t, jnp.nan)
    return jnp.where(where, t, 0.0).astype(x.dtype)


_LINEAR_CE = Op(
    "linear_softmax_cross_entropy",
    value=lambda *a, **s: _value_parts(*a, **s)[0],
    save=_save, vjp=_vjp, jvp=_jvp,
)


def _sample(rng, case):
    n, d, v = case
    return (S.normal(rng, (n, d)), S.normal(rng, (d, v), 0.5), rng.integers(0, v, (n,)), S.normal(rng, (v,)))


def _extreme():
    x = np.array([[1e2, -1e2], [3.0, 1.0], [-50.0, 50.0]])
    w = np.array([[1e2, -1e2, 0.0], [0.0, 1e2, -1e2]])
    return x, w, np.array([0, 2, 1]), np.array([0.0, 1e3, -1e3])


_DEFAULT_ROWS, _DEFAULT_CLASSES = 1024, 4096


@declare(forms=_LINEAR_CE, saves="the inputs and the per-row log-sum-exp (N numbers), never the N × V logits",
         diff_argnums=(0, 1, 3),
         checks=Checks(sample=_sample, cases=((3, 4, 5), (7, 3, 11)), extreme=_extreme,
                       variants=({"block_rows": 3, "block_classes": 3, "label_smoothing": 0.1, "z_loss": 1e-2}, {})))
def linear_softmax_cross_entropy(features, weight, labels, bias=None, *, where=None, label_smoothing=0.0,
                                 z_loss=0.0, block_rows=_DEFAULT_ROWS, block_classes=_DEFAULT_CLASSES):
    """Softmax cross-entropy of ``z = features @ weight + bias`` against integer labels, fused.

    Per example (rows of ``features``, shape ``(N, D)``; ``weight`` ``(D, V)``;
    ``labels`` ``(N,)`` integers in ``[0, V)``; ``bias`` ``(V,)`` or None)::

        L = (1 - ε)(lse(z) - z_y) + ε(lse(z) - mean_j z_j) + λ·lse(z)²

    with ε = ``label_smoothing`` and λ = ``z_loss``. Equal to
    ``softmax_cross_entropy_with_integer_labels(features @ weight + bias, labels)``
    (for ε = λ = 0) in value and gradient, but the N × V logits are never held:
    the forward pass streams over ``block_rows`` × ``block_classes`` blocks with
    a running maximum and sum of exponentials; the reverse rule recomputes each
    block. The default blocks (1024 rows × 4096 classes) keep the temporary
    memory of ``value_and_grad`` at N = 8192, D = 1024, V = 32768 (float32) to
    72 MiB, 3.5% of the unfused head's 2048 MiB (``tests/test_fused.py``); a
    block of logits is ``block_rows × block_classes`` numbers.
    ``where`` (a boolean ``(N,)`` mask) gives 0 and no gradient for the
    rows it leaves out. bfloat16/float16 inputs are accumulated in float32.
    ``label_smoothing`` (in [0, 1]) and ``z_loss`` (>= 0) are static Python
    numbers: a traced one raises (pass it through ``functools.partial`` or
    ``jax.jit``'s ``static_argnames``). No rows give an empty loss.

    Derivative: with p = softmax(z) and g the upstream gradient of each row,
    dz = g((1 + 2λ lse) p - (1 - ε) onehot(y) - ε/V); then dx = dz wᵀ,
    dw = xᵀ dz, db = Σ_rows dz, accumulated block by block. Forward rule:
    L̇ = (1 + 2λ lse) Σ_j p_j ż_j - (1 - ε) ż_y - ε mean_j ż_j with
    ż = ẋ w + x ẇ + ḃ, streamed the same way. Labels outside [0, V) raise outside
    ``jit`` and give NaN (value and gradient) under it.
    """
    op = "funcnet.losses.linear_softmax_cross_entropy"
    x = float_input(op, "features", features)
    if bias is None:
        bias = jnp.zeros((jnp.shape(weight)[-1] if jnp.ndim(weight) == 2 else 0,), x.dtype)
    x, w, b = promote_floats(op, features=x, weight=weight, bias=bias)
    labels = as_integer_array(op, "labels", labels)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"{op}: expected features (N, D) and weight (D, V), got {tuple(x.shape)} and {tuple(w.shape)}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"{op}: `bias` must have shape ({w.shape[1]},), got {tuple(b.shape)}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"{op}: `labels` must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    block_rows, block_classes = (static_int(op, "block_rows", block_rows), static_int(op, "block_classes",
                                                                                       block_classes))
    smoothing, z_loss = static_float(op, "label_smoothing", label_smoothing), static_float(op, "z_loss", z_loss)
    check_range(op, "label_smoothing", smoothing, 0, 1, meaning="the weight of the uniform target")
    check_range(op, "z_loss", z_loss, 0, meaning="the weight of lse(z)²")
    check_class_labels(op, labels, w.shape[1])
    if where is not None:
        where = bool_mask(op, where)
        check_broadcast_to(op, ("where", "labels"), where.shape, labels.shape)
    if x.shape[0] == 0:  # no rows: no blocks to stream over
        return jnp.zeros((0,), x.dtype)
    where = jnp.ones(x.shape[0], bool) if where is None else jnp.broadcast_to(where, labels.shape)
    return _LINEAR_CE(x, w, b, labels, where, smoothing=smoothing, z_loss=z_loss, block_rows=block_rows,
                      block_classes=block_classes)


__all__ = ["linear_softmax_cross_entropy"]
