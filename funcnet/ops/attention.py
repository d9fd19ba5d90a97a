"""Scaled dot-product attention with streaming hand-written rules (``funcnet.nn.dot_product_attention``).

The value, the reverse rule and the forward rule all walk over blocks of
queries (``block_q`` rows) and, inside each, over blocks of keys/values
(``block_kv``), FlashAttention-style: the ``T × S`` matrix of logits is never
held, only one ``block_q × block_kv`` tile per head at a time.

* Value (online softmax): per query row a running maximum ``m``, a running sum
  ``l = Σ e^{s - m}`` and a running ``Σ e^{s - m} v``, rescaled by
  ``e^{m_old - m_new}`` when the maximum grows; ``o = acc / l`` and the row's
  log-sum-exp ``L = m + log l`` is the one residual beyond the inputs and ``o``.
* Reverse rule (FlashAttention-2): ``D = rowsum(dO ∘ O)``; per tile
  ``P = e^{s - L}``, ``dV += Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP - D)``,
  ``dQ += dS K·scale``, ``dK += dSᵀ Q·scale``, ``d(bias) = dS``.
* Forward rule: ``ȯ = Σ_j P_ij (v̇_j + ṡ_ij v_j) - (Σ_j P_ij ṡ_ij) o_i`` with
  ``ṡ = (q̇ kᵀ + q k̇ᵀ)·scale + ḃ``, one pass over the tiles.

Masking follows ``jax.nn`` exactly: a logit that the mask, causality, the local
window or the sequence lengths leave out is replaced by ``-0.7 · float32 max``
(not ``-inf``), so a row with every key masked averages all ``S`` values
uniformly, as ``jax.nn`` does; padding keys (the last block when ``block_kv``
does not divide ``S``) are ``PAD = -float32 max``, far enough below NEG to be
left out altogether.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet.ops.binding import varying_like, with_optional
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.ops.inputs import as_array, static_float, static_int
from funcnet.ops.numerics import compute_dtype, sum_to_shape, widen
from funcnet.reference import nn as twin

declare = declarer("nn", twins=twin, upstream=jax.nn)

#: jax.nn's masked logit (``_get_large_negative``): finite, so a fully masked row is a uniform average
NEG = -0.7 * float(np.finfo(np.float32).max)
#: a padding key's logit, and the running maximum's start: e^{PAD - NEG} = 0, and no inf anywhere
#: (``jax.debug_infs`` stays quiet)
PAD = -float(np.finfo(np.float32).max)


class _Plan(NamedTuple):
    """Static sizes: batch, query/key lengths, key/value heads, group size, head size, blocks."""

    B: int
    T: int
    S: int
    K: int
    G: int
    H: int
    cq: int
    nq: int
    ck: int
    nk: int


def _plan(q, k, block_q, block_kv) -> _Plan:
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    cq, ck = min(block_q, T), min(block_kv, S)
    return _Plan(B, T, S, K, N // K, H, cq, -(-T // cq), ck, -(-S // ck))


def _pad(x, axis, size, fill=0):
    """``x`` padded along ``axis`` to ``size`` (an axis of size 1, a broadcast one, is left alone)."""
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=fill)


def _take(x, axis, start, size):
    """The block ``[start, start + size)`` of ``x`` along ``axis`` (all of a broadcast axis of size 1)."""
    if x is None or x.shape[axis] == 1:
        return x
    return lax.dynamic_slice_in_dim(x, start, size, axis)


def _grouped(x, K, G):
    """A bias or mask broadcastable to (B, N, T, S) as (B, K, G, T, S)-broadcastable (heads n = k·G + g)."""
    if x is None:
        return None
    b, n, t, s = x.shape
    return x.reshape(b, 1, 1, t, s) if n == 1 else x.reshape(b, K, G, t, s)


def _join(blocks, axis, size):
    """Blocks stacked on a leading axis, concatenated along their ``axis`` and cut to ``size``."""
    x = jnp.moveaxis(blocks, 0, axis)
    x = x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2:])
    return lax.slice_in_dim(x, 0, size, axis=axis)


def _tile(p: _Plan, cfg, qb, kj, bias, mask, qlen, kvlen, t0, j0):
    """``(s, keep)`` of one tile: logits ``[B, K, G, cq, ck]`` (left-out ones NEG, padding PAD), kept entries."""
    scale, is_causal, window = cfg
    ct = compute_dtype(qb.dtype)
    s = jnp.einsum("btkgh,bjkh->bkgtj", qb, kj, preferred_element_type=ct) * scale
    if bias is not None:
        s = s + widen(_take(_take(bias, 3, t0, p.cq), 4, j0, p.ck))
    t = (t0 + jnp.arange(p.cq)).reshape(1, 1, 1, p.cq, 1)  # explicit ranks: jax_numpy_rank_promotion="raise"
    j = (j0 + jnp.arange(p.ck)).reshape(1, 1, 1, 1, p.ck)
    real = (j < p.S) & (t < p.T)
    keep = real
    if is_causal:
        keep = keep & (t >= j)
    if window is not None:
        keep = keep & (t <= j + window[0]) & (t >= j - window[1])
    if mask is not None:
        keep = keep & _take(_take(mask, 3, t0, p.cq), 4, j0, p.ck)
    if qlen is not None:
        keep = keep & (t < qlen[:, None, None, None, None])
    if kvlen is not None:
        keep = keep & (j < kvlen[:, None, None, None, None])
    s = jnp.where(keep, s, NEG)
    return jnp.where(j < p.S, s, PAD), keep


def _rows(p: _Plan, L):
    """Per-row probabilities from ``L``: ``P = e^{s - L}``, or 1/S on every real key of a row with all keys
    left out (its L = NEG + log S rounds to NEG)."""
    empty = (L < 0.5 * NEG)[..., None]

    def probs(s, j0):
        real = ((j0 + jnp.arange(p.ck)) < p.S).reshape(1, 1, 1, 1, p.ck)
        return jnp.where(empty, jnp.where(real, 1.0 / p.S, 0.0), jnp.exp(s - L[..., None]))

    return probs


def _layout_q(x, p: _Plan):
    """(B, T, N, H) → (B, T_padded, K, G, H)."""
    return _pad(x.reshape(p.B, p.T, p.K, p.G, p.H), 1, p.nq * p.cq)


def _unlayout(rows, p: _Plan, dtype):
    """Per-q-block rows ``[nq, B, K, G, cq, H]`` → (B, T, N, H)."""
    o = _join(rows, 3, p.T)
    return jnp.transpose(o, (0, 3, 1, 2, 4)).reshape(p.B, p.T, p.K * p.G, p.H).astype(dtype)


def _inputs(q, k, v, bias, mask, p: _Plan):
    Sp = p.nk * p.ck
    bias = _pad(_pad(_grouped(bias, p.K, p.G), 3, p.nq * p.cq), 4, Sp)
    mask = _pad(_pad(_grouped(mask, p.K, p.G), 3, p.nq * p.cq, False), 4, Sp, False)
    return _layout_q(q, p), _pad(k, 1, Sp), _pad(v, 1, Sp), bias, mask


def _save(q, k, v, bias, mask, qlen, kvlen, *, scale, is_causal, window, block_q, block_kv):
    p = _plan(q, k, block_q, block_kv)
    cfg = (scale, is_causal, window)
    ct = compute_dtype(q.dtype)
    qg, kp, vp, bg, mg = _inputs(q, k, v, bias, mask, p)

    def q_block(_, iq):
        t0 = iq * p.cq
        qb = lax.dynamic_slice_in_dim(qg, t0, p.cq, 1)

        def kv_block(carry, ik):
            m, l, acc = carry
            j0 = ik * p.ck
            vj = lax.dynamic_slice_in_dim(vp, j0, p.ck, 1)
            s, _ = _tile(p, cfg, qb, lax.dynamic_slice_in_dim(kp, j0, p.ck, 1), bg, mg, qlen, kvlen, t0, j0)
            m_new = lax.stop_gradient(jnp.maximum(m, jnp.max(s, axis=-1)))  # the value does not depend on it
            corr = jnp.exp(m - m_new)
            e = jnp.exp(s - m_new[..., None])
            pv = jnp.einsum("bkgtj,bjkh->bkgth", e.astype(v.dtype), vj, preferred_element_type=ct)
            return (m_new, l * corr + jnp.sum(e, axis=-1), acc * corr[..., None] + pv), None

        rows = (p.B, p.K, p.G, p.cq)
        init = tuple(varying_like(x, q, k, v) for x in
                     (jnp.full(rows, PAD, ct), jnp.zeros(rows, ct), jnp.zeros(rows + (p.H,), ct)))
        (m, l, acc), _ = lax.scan(kv_block, init, jnp.arange(p.nk))
        return None, (acc / l[..., None], m + jnp.log(l))

    _, (o, L) = lax.scan(q_block, None, jnp.arange(p.nq))
    o = _unlayout(o, p, q.dtype)
    if qlen is not None:
        o = jnp.where((jnp.arange(p.T)[None, :] < qlen[:, None])[:, :, None, None], o, 0).astype(q.dtype)
    return o, (q, k, v, bias, mask, qlen, kvlen, o, _join(L, 3, p.T))


def _vjp(res, g, *, scale, is_causal, window, block_q, block_kv):
    q, k, v, bias, mask, qlen, kvlen, o, L = res
    p = _plan(q, k, block_q, block_kv)
    cfg = (scale, is_causal, window)
    ct = compute_dtype(q.dtype)
    qg, kp, vp, bg, mg = _inputs(q, k, v, bias, mask, p)
    dO = _layout_q(widen(g), p)
    if qlen is not None:  # the output is 0 there whatever the inputs
        dO = jnp.where((jnp.arange(dO.shape[1])[None, :] < qlen[:, None])[:, :, None, None, None], dO, 0.0)
    D = jnp.einsum("btkgh,btkgh->bkgt", dO, _layout_q(widen(o), p))
    Lp = _pad(L, 3, p.nq * p.cq)
    b_rows = None if bg is None else bg.shape[:3] + (min(bg.shape[3], p.cq),)

    def q_block(carry, iq):
        dk, dv = carry
        t0 = iq * p.cq
        qb = lax.dynamic_slice_in_dim(qg, t0, p.cq, 1)
        gb = lax.dynamic_slice_in_dim(dO, t0, p.cq, 1)
        Db = lax.dynamic_slice_in_dim(D, t0, p.cq, 3)
        probs = _rows(p, lax.dynamic_slice_in_dim(Lp, t0, p.cq, 3))

        def kv_block(dq, ik):
            j0 = ik * p.ck
            kj = lax.dynamic_slice_in_dim(kp, j0, p.ck, 1)
            vj = lax.dynamic_slice_in_dim(vp, j0, p.ck, 1)
            s, keep = _tile(p, cfg, qb, kj, bg, mg, qlen, kvlen, t0, j0)
            P = probs(s, j0)
            dv_j = jnp.einsum("bkgtj,btkgh->bjkh", P, gb)
            dP = jnp.einsum("btkgh,bjkh->bkgtj", gb, widen(vj))
            dS = jnp.where(keep, P * (dP - Db[..., None]), 0.0)
            dq = dq + jnp.einsum("bkgtj,bjkh->btkgh", dS, widen(kj)) * scale
            dk_j = jnp.einsum("bkgtj,btkgh->bjkh", dS, widen(qb)) * scale
            db_j = None if bg is None else sum_to_shape(dS, b_rows + (min(bg.shape[4], p.ck),))
            return dq, (dk_j, dv_j, db_j)

        dq0 = varying_like(jnp.zeros(qb.shape, ct), q, k, v, g)
        dq, (dk_b, dv_b, db_b) = lax.scan(kv_block, dq0, jnp.arange(p.nk))
        dk, dv = dk + _join(dk_b, 1, dk.shape[1]), dv + _join(dv_b, 1, dv.shape[1])
        if db_b is not None:
            db_b = _join(db_b, 4, p.S) if bg.shape[4] > 1 else jnp.sum(db_b, axis=0)
        return (dk, dv), (dq, db_b)

    init = tuple(varying_like(jnp.zeros(x.shape, ct), q, k, v, g) for x in (kp, vp))
    (dk, dv), (dq, db) = lax.scan(q_block, init, jnp.arange(p.nq))
    dq = _join(dq, 1, p.T).reshape(q.shape)
    dbias = None
    if bias is not None:
        db = _join(db, 3, p.T) if bias.shape[2] > 1 else jnp.sum(db, axis=0)
        dbias = db.reshape(bias.shape).astype(bias.dtype)
    return (dq.astype(q.dtype), dk[:, :p.S].astype(k.dtype), dv[:, :p.S].astype(v.dtype), dbias, None, None, None)


def _jvp(res, tq, tk, tv, tb, _m, _ql, _kl, *, scale, is_causal, window, block_q, block_kv):
    if tq is None and tk is None and tv is None and tb is None:
        return None
    q, k, v, bias, mask, qlen, kvlen, o, L = res
    p = _plan(q, k, block_q, block_kv)
    cfg = (scale, is_causal, window)
    ct = compute_dtype(q.dtype)
    qg, kp, vp, bg, mg = _inputs(q, k, v, bias, mask, p)
    tq = None if tq is None else _layout_q(widen(tq), p)
    tk = None if tk is None else _pad(widen(tk), 1, p.nk * p.ck)
    tv = None if tv is None else _pad(widen(tv), 1, p.nk * p.ck)
    tb = None if tb is None else _pad(_pad(_grouped(widen(tb), p.K, p.G), 3, p.nq * p.cq), 4, p.nk * p.ck)
    Lp = _pad(L, 3, p.nq * p.cq)
    og = jnp.transpose(_layout_q(widen(o), p), (0, 2, 3, 1, 4))  # (B, K, G, T, H)

    def q_block(_, iq):
        t0 = iq * p.cq
        qb = lax.dynamic_slice_in_dim(qg, t0, p.cq, 1)
        probs = _rows(p, lax.dynamic_slice_in_dim(Lp, t0, p.cq, 3))

        def kv_block(carry, ik):
            r, acc = carry
            j0 = ik * p.ck
            kj = lax.dynamic_slice_in_dim(kp, j0, p.ck, 1)
            vj = lax.dynamic_slice_in_dim(vp, j0, p.ck, 1)
            s, keep = _tile(p, cfg, qb, kj, bg, mg, qlen, kvlen, t0, j0)
            P = probs(s, j0)
            ds = jnp.zeros((), ct)
            if tq is not None:
                ds = ds + jnp.einsum("btkgh,bjkh->bkgtj", lax.dynamic_slice_in_dim(tq, t0, p.cq, 1), widen(kj)) * scale
            if tk is not None:
                ds = ds + jnp.einsum("btkgh,bjkh->bkgtj", widen(qb), lax.dynamic_slice_in_dim(tk, j0, p.ck, 1)) * scale
            if tb is not None:
                ds = ds + _take(_take(tb, 3, t0, p.cq), 4, j0, p.ck)
            Pds = jnp.where(keep, P * ds, 0.0)
            acc = acc + jnp.einsum("bkgtj,bjkh->bkgth", Pds, widen(vj))
            if tv is not None:
                acc = acc + jnp.einsum("bkgtj,bjkh->bkgth", P, lax.dynamic_slice_in_dim(tv, j0, p.ck, 1))
            return (r + jnp.sum(Pds, axis=-1), acc), None

        rows = (p.B, p.K, p.G, p.cq)
        init = tuple(varying_like(jnp.zeros(s, ct), q, k, v, *(t for t in (tq, tk, tv, tb) if t is not None))
                     for s in (rows, rows + (p.H,)))
        (r, acc), _ = lax.scan(kv_block, init, jnp.arange(p.nk))
        return None, acc - r[..., None] * lax.dynamic_slice_in_dim(og, t0, p.cq, 3)

    _, rows = lax.scan(q_block, None, jnp.arange(p.nq))
    out = _unlayout(rows, p, ct)
    if qlen is not None:
        out = jnp.where((jnp.arange(p.T)[None, :] < qlen[:, None])[:, :, None, None], out, 0.0)
    return out.astype(q.dtype)


#: one rule per combination of the optional arrays (bias, mask, query_seq_lengths, key_value_seq_lengths)
_RULES = {given: with_optional("dot_product_attention", _save, _vjp, _jvp, (True, True, True) + given)
          for given in ((b, m, ql, kl) for b in (False, True) for m in (False, True)
                        for ql in (False, True) for kl in (False, True))}


def _four(op, name, x):
    """jax.nn's ``_ensure_4d``: leading axes of size 1 up to four."""
    x = as_array(op, name, x)
    if x.ndim > 4:
        raise ValueError(f"{op}: `{name}` must have at most 4 dimensions, got shape {tuple(x.shape)}")
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _sample(rng, case):
    (B, T, S, N, K, H), bias_shape = case
    q, k, v = (rng.standard_normal(s) for s in ((B, T, N, H), (B, S, K, H), (B, S, K, H)))
    bias = rng.standard_normal(bias_shape)
    mask = rng.random((B, 1, T, S)) < 0.7
    mask[0, 0, 1] = False  # a row with every key left out (jax.nn: the uniform average of the values)
    return q, k, v, bias, mask


def _extreme():
    rng = np.random.default_rng(0)
    q = 40.0 * rng.standard_normal((2, 3, 2, 4))  # logits in the hundreds: one-hot rows, no overflow
    k, v = rng.standard_normal((2, 5, 1, 4)), rng.standard_normal((2, 5, 1, 4))
    return q, k, v, 1e3 * rng.standard_normal((1, 1, 3, 5)), np.ones((2, 1, 3, 5), bool)


_LENGTHS = dict(query_seq_lengths=np.array([3, 2], np.int32), key_value_seq_lengths=np.array([4, 2], np.int32))


@declare(forms=tuple(_RULES.values()), activation=False, diff_argnums=(0, 1, 2, 3),
         saves="q, k, v (bias, mask and lengths if given), the output and one log-sum-exp per query row and head",
         differs="funcnet always runs its own streaming rule (`implementation` is accepted and checked, not "
                 "used); two keyword-only arguments of its own, `block_q` and `block_kv`, set the tile size; "
                 "`scale` must be a concrete number; float64 inputs are computed in float64 "
                 "(jax.nn takes the softmax in float32 whatever the input dtype)",
         checks=Checks(sample=_sample, cases=(((2, 3, 5, 2, 1, 4), (1, 2, 3, 5)), ((2, 4, 6, 4, 2, 3), (2, 1, 4, 6))),
                       extreme=_extreme,
                       # the causal mask, a window and both sequence lengths in one row (each has its own row
                       # against jax.nn in tests/test_dropin.py)
                       variants=({}, {"is_causal": True, "local_window_size": (2, 1), "block_q": 3, "block_kv": 2,
                                      **_LENGTHS})))
def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                          implementation=None, return_residual=False, block_q=512, block_kv=512):
    """Scaled dot-product attention ``softmax(q kᵀ·scale + bias, masked) v`` per head, as ``jax.nn.dot_product_attention``.

    Shapes as in ``jax.nn``: ``query`` (B, T, N, H), ``key`` and ``value``
    (B, S, K, H) with K dividing N (grouped-query attention: query head n reads
    key/value head n // (N/K)); the batch axis may be left out. ``bias`` and
    ``mask`` (boolean, True = attend) broadcast to (B, N, T, S); ``scale``
    defaults to 1/√H. ``is_causal`` keeps keys j ≤ t; ``local_window_size``
    (left, right) or an int keeps t - left ≤ j ≤ t + right; the sequence lengths
    (int32, shape (B,)) keep t < query length and j < key length, and rows
    past the query length are 0. A row with every key left out is the uniform
    average of the S values, as in ``jax.nn``. float16/bfloat16 inputs are
    computed with float32 logits and accumulation; the output has the query's
    dtype. ``return_residual=True`` also returns the log-sum-exp of each row
    (shape (B, T, N), no gradient), as ``jax.nn``.

    ``implementation`` may be None, ``"xla"`` or ``"cudnn"``; funcnet runs its
    own streaming rule for each. ``block_q`` and ``block_kv`` (funcnet's own,
    keyword-only) set the tile: the logits are computed ``block_q × block_kv``
    at a time per head and never held whole; lengths that the blocks do not
    divide are padded, the padding left out. Every tile is computed, the
    masked ones too (causal attention costs what full attention costs).

    Derivative: with P = softmax(s), s = q kᵀ·scale + bias (left-out logits
    constant), dO the output's cotangent and D_t = Σ_h dO_th o_th:
    dS = P ∘ (dO vᵀ - D), dq = dS k·scale, dk = dSᵀ q·scale, dv = Pᵀ dO,
    d(bias) = dS summed over its broadcast axes; forward,
    ȯ = P (v̇ + ṡ ∘ v) - (Σ_j P ṡ) o with ṡ = (q̇ kᵀ + q k̇ᵀ)·scale + ḃias.
    The mask and the lengths get no gradient.
    """
    op = "funcnet.nn.dot_product_attention"
    if implementation not in (None, "xla", "cudnn"):
        raise ValueError(f"{op}: unsupported `implementation` {implementation!r}; use None, 'xla' or 'cudnn'")
    out_shape = jnp.shape(query)
    q, k, v = (_four(op, n, x) for n, x in (("query", query), ("key", key), ("value", value)))
    B, S, K, H = k.shape
    if v.shape != k.shape or v.dtype != k.dtype:
        raise ValueError(f"{op}: `value` must have the shape and dtype of `key` {k.dtype}{list(k.shape)}, "
                         f"got {v.dtype}{list(v.shape)}")
    if q.shape[0] != B or q.shape[3] != H or q.dtype != k.dtype:
        raise ValueError(f"{op}: `query` must be (B={B}, T, N, H={H}) of dtype {k.dtype}, got {q.dtype}{list(q.shape)}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise TypeError(f"{op}: query, key and value must be floating-point arrays, got {q.dtype}")
    N = q.shape[2]
    if N % K:
        raise ValueError(f"{op}: the number of query heads must be a multiple of the key/value heads, got {N} vs {K}")
    T = q.shape[1]
    full = (B, N, T, S)
    if bias is not None:
        bias = _four(op, "bias", bias)
        if not jnp.issubdtype(bias.dtype, jnp.floating):
            bias = bias.astype(q.dtype)
        _check_broadcast(op, "bias", bias.shape, full)
    if mask is not None:
        mask = _four(op, "mask", mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(f"{op}: `mask` must be boolean, got {mask.dtype}")
        _check_broadcast(op, "mask", mask.shape, full)
    lengths = []
    for name, x in (("query_seq_lengths", query_seq_lengths), ("key_value_seq_lengths", key_value_seq_lengths)):
        if x is not None:
            x = as_array(op, name, x)
            if x.shape != (B,) or x.dtype != jnp.int32:
                raise ValueError(f"{op}: `{name}` must be int32 of shape ({B},), got {x.dtype}{list(x.shape)}")
        lengths.append(x)
    if local_window_size is not None:
        w = (local_window_size,) * 2 if isinstance(local_window_size, (int, np.integer)) else tuple(local_window_size)
        if len(w) != 2:
            raise ValueError(f"{op}: `local_window_size` must be an int or a pair (left, right), got {local_window_size!r}")
        local_window_size = tuple(static_int(op, "local_window_size", x, low=0) for x in w)
    static = dict(scale=1.0 / math.sqrt(H) if scale is None else static_float(op, "scale", scale),
                  is_causal=bool(is_causal), window=local_window_size,
                  block_q=static_int(op, "block_q", block_q), block_kv=static_int(op, "block_kv", block_kv))
    given = (bias is not None, mask is not None) + tuple(x is not None for x in lengths)
    arrays = [a for a in (q, k, v, bias, mask, *lengths) if a is not None]
    out = _RULES[given](*arrays, **static).reshape(out_shape)
    if not return_residual:
        return out
    stopped = [None if a is None else lax.stop_gradient(a) for a in (q, k, v, bias, mask, *lengths)]
    L = _save(*stopped, **static)[1][-1]  # (B, K, G, T)
    L = jnp.transpose(L.reshape(B, N, T), (0, 2, 1)).astype(k.dtype)
    return out, L.reshape(out_shape[:-1])


def _check_broadcast(op, name, shape, full):
    if any(a not in (1, b) for a, b in zip(shape, full)):
        raise ValueError(f"{op}: `{name}` of shape {tuple(shape)} must broadcast to (B, N, T, S) = {full}")


__all__ = names("nn", __name__)
