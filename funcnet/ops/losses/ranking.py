"""Ranking losses: the listwise softmax loss over the last axis (each leading index is one list)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops import _samples as S
from funcnet.ops.binding import with_optional
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.ops.inputs import as_array, broadcast_with_mask, float_input
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.reductions import log_softmax_core
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import float_labels

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ------------------------------------------------------------------ ranking softmax loss
def _log_probs(s, where):
    """The list's log-softmax, 0 (not -inf) at masked-out items and all through a list with no item left."""
    shifted, log_sum = log_softmax_core(s, where, -1)
    logp = shifted - log_sum
    return logp if where is None else jnp.where(where, logp, 0.0)


def _gains(y, where, w):
    """The effective labels ``c = [where]·w·y`` (labels zeroed at masked items, then weighted, as Optax)."""
    c = y if w is None else y * w
    return c if where is None else jnp.where(where, c, 0.0)


def _probs(logp, where):
    p = jnp.exp(logp)
    return p if where is None else jnp.where(where, p, 0.0)


def _save(logits, labels, where, weights):
    # The residuals are the inputs alone: the rules recompute the log-softmax (one pass over the logits, which
    # the backward pass reads anyway) instead of keeping a logits-sized array alive between the passes.
    logp = _log_probs(widen(logits), where)
    c = _gains(widen(labels), where, None if weights is None else widen(weights))
    return (-jnp.sum(c * logp, axis=-1)).astype(logits.dtype), (logits, labels, where, weights)


def _vjp(res, g):
    logits, labels, where, weights = res
    logp = _log_probs(widen(logits), where)
    y, w = widen(labels), None if weights is None else widen(weights)
    gw = widen(g)[..., None]
    gc = gw * _gains(y, where, w)
    gs = _probs(logp, where) * jnp.sum(gc, axis=-1, keepdims=True) - gc
    glogp = -gw * logp  # d/dc, 0 at masked items (logp is 0 there)
    gy = glogp if w is None else glogp * w
    gy = gy if where is None else jnp.where(where, gy, 0.0)
    gweights = None
    if weights is not None:
        gweights = glogp * y if where is None else jnp.where(where, glogp * y, 0.0)
        gweights = gweights.astype(weights.dtype)
    return gs.astype(labels.dtype), gy.astype(labels.dtype), None, gweights


def _jvp(res, ts, ty, _, tw):
    logits, labels, where, weights = res
    logp = _log_probs(widen(logits), where)
    y, w = widen(labels), None if weights is None else widen(weights)
    out = None
    if ts is not None:
        c = _gains(y, where, w)
        tsw = widen(ts) if where is None else jnp.where(where, widen(ts), 0.0)
        out = jnp.sum(c, axis=-1) * jnp.sum(_probs(logp, where) * tsw, axis=-1) - jnp.sum(c * tsw, axis=-1)
    # the gains' tangent: [where]·(ẏ w + y ẇ)
    tc = add_tangents(None if ty is None else (widen(ty) if w is None else widen(ty) * w),
                      None if tw is None else y * widen(tw))
    if tc is not None:
        tc = tc if where is None else jnp.where(where, tc, 0.0)
        out = add_tangents(out, -jnp.sum(tc * logp, axis=-1))
    return None if out is None else out.astype(labels.dtype)


#: One form per combination of the optional arguments given: (where, weights).
_RANKING = {(masked, weighted): with_optional("ranking_softmax_loss", _save, _vjp, _jvp,
                                               (True, True, masked, weighted))
            for masked in (False, True) for weighted in (False, True)}


def _safe_reduce(loss, where, reduce_fn):
    """Optax's reduction of per-list values (plain jnp: its derivative is JAX's).

    ``reduce_fn(loss, where=where)``; for ``jnp.mean`` a NaN from an empty
    selection (no list with an item left) becomes 0 unless the losses themselves
    hold a NaN; without ``reduce_fn`` lists with no item left are 0.
    """
    out = reduce_fn(loss, where=where) if reduce_fn is not None else loss
    if reduce_fn is jnp.mean:
        valid = jnp.logical_not(jnp.any(jnp.isnan(loss)))
        out = jnp.where(jnp.isnan(out) & valid, 0.0, out)
    if reduce_fn is None and where is not None:
        out = jnp.where(where, out, 0.0)
    return out


def _lists(rng, case):
    """Scores and graded relevance labels in [0, 2) (one list per leading index)."""
    return S.normal(rng, case, 2.0), rng.uniform(0.0, 2.0, case)


def _extreme():
    return (np.array([[1e4, -1e4, 0.0, 3.0], [-1e30, 1e30, 5.0, -5.0]]),
            np.array([[1.0, 0.0, 2.0, 0.5], [0.0, 1.0, 3.0, 0.0]]))


@declare(forms=tuple(_RANKING.values()),
         saves="its inputs only (the logits, the labels, and the mask and the weights if given): both rules "
               "recompute the log-softmax from the logits rather than keep a logits-sized array between the passes",
         diff_argnums=(0, 1),
         differs="integer logits are promoted to float (optax raises); with `where`, the weights' gradient at "
                 "masked-out items is 0 (optax: NaN, from 0·log 0)",
         checks=Checks(sample=_lists, cases=((5,), (3, 4)), extreme=_extreme))
def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduce_fn=jnp.mean):
    """Listwise softmax cross-entropy ``-Σ_i c_i log softmax(s)_i`` per list, as ``optax.losses.ranking_softmax_loss``.

    The lists run along the last axis; ``c = [where]·weights·labels`` are the
    labels (relevance grades, not normalised) with masked-out items zeroed, times
    the per-item ``weights``. ``where`` (boolean, broadcasting against the
    logits) leaves items out of the softmax and the sum; a list with no item left
    has loss 0 and gradient 0, and a list with no positive label has loss 0.
    ``reduce_fn(per_list_loss, where=any(where, -1))`` reduces the per-list values
    (Optax's default ``jnp.mean``, whose NaN over an empty selection becomes 0;
    ``None`` returns them, with the empty lists at 0). The rules are the per-list
    loss's; the reduction is plain ``jax.numpy`` outside them, differentiated by JAX.

    Derivative (per list, C = Σ_i c_i, p = softmax over the items kept):
    d/ds = C·p - c, d/dlabels = -[where]·weights·log p, d/dweights =
    -[where]·labels·log p; the forward rule is
    ``C Σ_i p_i ṡ_i - Σ_i c_i ṡ_i - Σ_i ċ_i log p_i``.
    """
    op = "funcnet.losses.ranking_softmax_loss"
    logits = float_input(op, "logits", logits)
    if weights is not None:
        weights = as_array(op, "weights", weights)
        if jnp.issubdtype(weights.dtype, jnp.floating):  # float weights set the dtype, as labels * weights does
            dtype = jnp.result_type(logits.dtype, weights.dtype)
            logits, weights = logits.astype(dtype), weights.astype(dtype)
        else:
            weights = float_labels(op, weights, logits, name="weights")
    labels = float_labels(op, labels, logits)
    arrays = {"logits": logits, "labels": labels}
    if weights is not None:
        arrays["weights"] = weights
    args, shape = broadcast_with_mask(op, where, **arrays)
    if not shape:
        raise ValueError(f"{op}: `logits` must have a list axis (the last), got a scalar")
    masked = where is not None
    if masked:  # the mask goes last in broadcast_with_mask, before the weights in the rule
        args = args[:2] + args[3:] + args[2:3] if weights is not None else args
    loss = _RANKING[masked, weights is not None](*args)
    lists = jnp.any(args[2], axis=-1) if masked else None
    return _safe_reduce(loss, lists, reduce_fn)


__all__ = names("losses", __name__)
