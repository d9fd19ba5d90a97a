"""Sequence losses: connectionist temporal classification (CTC), with its forward variables.

The value is Optax's forward recursion, the same arithmetic in the same order.
The reverse rule is the forward–backward algorithm: it saves the
log-probabilities and the forward variables (log α) of every frame and runs the
adjoint recursion backwards (a ``lax.scan``), whose adjoints are the posteriors
``γ_t(s) = α_t(s) β_t(s) / p``; the gradient row of frame ``t`` is
``softmax(x_t) Σ_s γ_t(s) - Σ_{s emits k} γ_t(s)``. The forward rule runs the
tangent recursion forwards over the same residuals with the same weights
(``e^{u - logaddexp(u, v)}``), so the two rules are each other's transpose.
Autodiff of Optax's scan instead keeps every intermediate of every step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops.binding import Op, varying_like
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.ops.inputs import as_array, as_integer_array, float_input, static_int
from funcnet.ops.numerics import compute_dtype, widen
from funcnet.reference import losses as twin

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ------------------------------------------------------------------ the recursion, its weights and its adjoint
def _lae(a, b):
    """``(log(eᵃ + eᵇ), e^{a - out}, e^{b - out})``: ``jnp.logaddexp`` and its two partial derivatives."""
    out = jnp.logaddexp(a, b)
    return out, jnp.exp(a - out), jnp.exp(b - out)


def _repeats(labels, dtype):
    """1 where a label equals the next one (the skip transition is closed there), 0 elsewhere and at the end."""
    same = (labels[:, :-1] == labels[:, 1:]).astype(dtype)
    return jnp.concatenate([same, jnp.zeros((labels.shape[0], 1), dtype)], axis=1)[:, :labels.shape[1]]


def _emissions(lp_t, labels, blank_id):
    """Frame ``t``'s log-probabilities of each label (0 for a label outside ``[0, K)``, as Optax's one-hot) and of
    the blank."""
    k = lp_t.shape[-1]
    inside = (labels >= 0) & (labels < k)
    emit = jnp.take_along_axis(lp_t, jnp.where(inside, labels, 0), axis=-1)
    return jnp.where(inside, emit, 0.0), lp_t[:, blank_id:blank_id + 1]


def _init(batch, n, eps, dtype):
    phi = jnp.full((batch, n + 1), eps, dtype).at[:, 0].set(0.0)
    return phi, jnp.full((batch, n), eps, dtype)


def _weights(phi, emit, le, lb, rep, eps):
    """One frame of Optax's recursion from the previous forward variables, with every logaddexp's weights.

    States: ``phi[n]``, blank after n labels (N+1 of them); ``emit[n]``, label n just emitted. ``phi1`` is
    ``phi`` after the frame-free move label n → blank-or-label n+1 (closed, by ``eps``, before a repeat).
    """
    tail, w_c, w_d = _lae(phi[:, 1:], emit + eps * rep)
    phi1 = jnp.concatenate([phi[:, :1], tail], axis=1)
    new_emit, w_a, w_b = _lae(phi1[:, :-1] + le, emit + le)
    head = phi1 + lb
    new_tail, w_p, w_q = _lae(head[:, 1:], emit + lb + eps * (1.0 - rep))
    new_phi = jnp.concatenate([head[:, :1], new_tail], axis=1)
    return new_phi, new_emit, (w_a, w_b, w_c, w_d, w_p, w_q)


def _blend(pad, old, new):
    """Optax's padding: a padded frame keeps the previous variables (``pad·old + (1 - pad)·new``)."""
    return pad * old + (1.0 - pad) * new


def _final(phi, emit):
    """The last frame's blank variables after the closing frame-free move (any label → the blank after it)."""
    tail, w_f, w_g = _lae(phi[:, 1:], emit)
    return jnp.concatenate([phi[:, :1], tail], axis=1), w_f, w_g


def _at_length(phi_last, lengths):
    """``phi_last[b, L_b]``, 0 where ``L_b`` is outside ``[0, N]`` (as Optax's one-hot)."""
    inside = (lengths >= 0) & (lengths < phi_last.shape[1])
    picked = jnp.take_along_axis(phi_last, jnp.where(inside, lengths, 0)[:, None], axis=1)[:, 0]
    return jnp.where(inside, picked, 0.0)


def _forward(lp, pads, labels, eps, blank_id, stack):
    """The forward variables: the last ones, or (``stack``) every frame's ``[T, B, N+1]`` and ``[T, B, N]``."""
    batch, frames, _ = lp.shape
    rep = _repeats(labels, lp.dtype)

    def step(carry, t):
        phi, emit = carry
        le, lb = _emissions(jax.lax.dynamic_index_in_dim(lp, t, axis=1, keepdims=False), labels, blank_id)
        new_phi, new_emit, _ = _weights(phi, emit, le, lb, rep, eps)
        pad = jax.lax.dynamic_index_in_dim(pads, t, axis=1)
        carry = _blend(pad, phi, new_phi), _blend(pad, emit, new_emit)
        return carry, (carry if stack else None)

    init = tuple(varying_like(a, lp, pads) for a in _init(batch, labels.shape[1], eps, lp.dtype))
    return jax.lax.scan(step, init, jnp.arange(frames))


def _previous(stacked, t, init):
    """The forward variables before frame ``t``: frame ``t - 1``'s, or the initial ones at ``t = 0``."""
    return jnp.where(t > 0, jax.lax.dynamic_index_in_dim(stacked, jnp.maximum(t - 1, 0), keepdims=False), init)


def _save(logits, pads, labels, lengths, eps, *, blank_id, probs):
    lp = jax.nn.log_softmax(widen(logits))
    pads, eps = pads.astype(lp.dtype), eps.astype(lp.dtype)
    (phi_t, emit_t), (phis, emits) = _forward(lp, pads, labels, eps, blank_id, stack=True)
    phi_last = _final(phi_t, emit_t)[0]
    loss = -_at_length(phi_last, lengths)
    y = _pack(loss, phis.at[-1].set(phi_last), emits) if probs else loss
    return y.astype(logits.dtype), (lp, phis, emits, pads, labels, lengths, eps)


def _value(logits, pads, labels, lengths, eps, *, blank_id, probs):
    if probs:
        return _save(logits, pads, labels, lengths, eps, blank_id=blank_id, probs=True)[0]
    lp = jax.nn.log_softmax(widen(logits))
    (phi_t, emit_t), _ = _forward(lp, pads.astype(lp.dtype), labels, eps.astype(lp.dtype), blank_id, stack=False)
    return (-_at_length(_final(phi_t, emit_t)[0], lengths)).astype(logits.dtype)


def _pack(loss, phis, emits):
    """The three outputs of ``ctc_loss_with_forward_probs`` as one flat array (a rule has one output)."""
    return jnp.concatenate([loss, phis.reshape(-1), emits.reshape(-1)])


def _unpack(flat, batch, frames, n):
    a, b = batch, batch + frames * batch * (n + 1)
    return flat[:a], flat[a:b].reshape(frames, batch, n + 1), flat[b:].reshape(frames, batch, n)


def _vjp(res, g, *, blank_id, probs):
    lp, phis, emits, pads, labels, lengths, eps = res
    batch, frames, classes = lp.shape
    n = labels.shape[1]
    g = widen(g)
    if probs:
        g_loss, g_phi, g_emit = _unpack(g, batch, frames, n)
    else:
        g_loss, g_phi, g_emit = g, None, None
    rep = _repeats(labels, lp.dtype)
    init_phi, init_emit = _init(batch, n, eps, lp.dtype)
    # the loss picks -phi_last[L]; phi_last is the closing move on the last frame's variables
    a_last = -g_loss[:, None] * jax.nn.one_hot(lengths, n + 1, dtype=lp.dtype)
    if g_phi is not None:
        a_last = a_last + g_phi[-1]
    _, w_f, w_g = _final(phis[-1], emits[-1])
    a_phi = jnp.concatenate([a_last[:, :1], a_last[:, 1:] * w_f], axis=1)
    a_emit = a_last[:, 1:] * w_g
    one_hot = jax.nn.one_hot(labels, classes, dtype=lp.dtype)  # [B, N, K]; zero rows for labels outside [0, K)

    def step(carry, t):
        a_phi, a_emit = carry  # adjoints of frame t's forward variables
        if g_phi is not None:  # the cotangents of the outputs at frame t (the last phi row is phi_last's)
            a_phi = a_phi + jnp.where(t < frames - 1, g_phi[t], 0.0)
            a_emit = a_emit + g_emit[t]
        phi, emit = _previous(phis, t, init_phi), _previous(emits, t, init_emit)
        le, lb = _emissions(jax.lax.dynamic_index_in_dim(lp, t, axis=1, keepdims=False), labels, blank_id)
        _, _, (w_a, w_b, w_c, w_d, w_p, w_q) = _weights(phi, emit, le, lb, rep, eps)
        pad = jax.lax.dynamic_index_in_dim(pads, t, axis=1)
        new_phi, new_emit = (1.0 - pad) * a_phi, (1.0 - pad) * a_emit
        # through the frame's two logaddexps, then the frame-free move before them
        a_phi1 = jnp.concatenate([new_phi[:, :1], new_phi[:, 1:] * w_p], axis=1)
        a_phi1 = a_phi1 + jnp.pad(new_emit * w_a, ((0, 0), (0, 1)))
        prev_emit = pad * a_emit + new_emit * w_b + new_phi[:, 1:] * w_q + a_phi1[:, 1:] * w_d
        prev_phi = pad * a_phi + jnp.concatenate([a_phi1[:, :1], a_phi1[:, 1:] * w_c], axis=1)
        return (prev_phi, prev_emit), (new_emit, jnp.sum(new_phi, axis=1))

    carry = tuple(varying_like(a, lp, pads, g) for a in (a_phi, a_emit))
    _, (a_le, a_lb) = jax.lax.scan(step, carry, jnp.arange(frames), reverse=True)
    # d/d log-probabilities: each label's adjoint at its class (one batched product for all frames, faster on CPU
    # than a scatter per frame), the blank adjoints at blank_id; then through the log-softmax
    a_lp = jnp.einsum("tbn,bnk->btk", a_le, one_hot)
    a_lp = a_lp + a_lb.T[:, :, None] * jax.nn.one_hot(blank_id, classes, dtype=lp.dtype)
    total = jnp.einsum("tbn,bn->bt", a_le, jnp.sum(one_hot, axis=2)) + a_lb.T  # Σ_k a_lp: in-range labels only
    return a_lp - jnp.exp(lp) * total[:, :, None], None, None, None, None


def _jvp(res, dx, *unused, blank_id, probs):
    lp, phis, emits, pads, labels, lengths, eps = res
    if dx is None:
        return None
    batch, frames, _ = lp.shape
    n = labels.shape[1]
    dx = widen(dx)
    rep = _repeats(labels, lp.dtype)
    init_phi, init_emit = _init(batch, n, eps, lp.dtype)

    def step(carry, t):
        d_phi, d_emit = carry
        phi, emit = _previous(phis, t, init_phi), _previous(emits, t, init_emit)
        lp_t = jax.lax.dynamic_index_in_dim(lp, t, axis=1, keepdims=False)
        dx_t = jax.lax.dynamic_index_in_dim(dx, t, axis=1, keepdims=False)
        le, lb = _emissions(lp_t, labels, blank_id)
        _, _, (w_a, w_b, w_c, w_d, w_p, w_q) = _weights(phi, emit, le, lb, rep, eps)
        d_lp = dx_t - jnp.sum(jnp.exp(lp_t) * dx_t, axis=1, keepdims=True)
        d_le, d_lb = _emissions(d_lp, labels, blank_id)
        d_phi1 = jnp.concatenate([d_phi[:, :1], w_c * d_phi[:, 1:] + w_d * d_emit], axis=1)
        new_emit = w_a * d_phi1[:, :-1] + w_b * d_emit + d_le
        new_phi = jnp.concatenate([d_phi1[:, :1], w_p * d_phi1[:, 1:] + w_q * d_emit], axis=1) + d_lb
        pad = jax.lax.dynamic_index_in_dim(pads, t, axis=1)
        carry = _blend(pad, d_phi, new_phi), _blend(pad, d_emit, new_emit)
        return carry, (carry if probs else None)

    zeros = tuple(varying_like(jnp.zeros(shape, lp.dtype), lp, pads, dx) for shape in ((batch, n + 1), (batch, n)))
    (d_phi, d_emit), stacked = jax.lax.scan(step, zeros, jnp.arange(frames))
    _, w_f, w_g = _final(phis[-1], emits[-1])
    d_last = jnp.concatenate([d_phi[:, :1], w_f * d_phi[:, 1:] + w_g * d_emit], axis=1)
    d_loss = -_at_length(d_last, lengths)
    if not probs:
        return d_loss
    return _pack(d_loss, stacked[0].at[-1].set(d_last), stacked[1])


_CTC, _CTC_PROBS = (Op(name, value=lambda *a, _p=p, **s: _value(*a, probs=_p, **s),
                       save=lambda *a, _p=p, **s: _save(*a, probs=_p, **s),
                       vjp=lambda r, g, _p=p, **s: _vjp(r, g, probs=_p, **s),
                       jvp=lambda r, *t, _p=p, **s: _jvp(r, *t, probs=_p, **s))
                    for name, p in (("ctc_loss", False), ("ctc_loss_with_forward_probs", True)))


# ------------------------------------------------------------------ the public functions
def _arguments(op: str, logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
    """Checked arguments of the rule: logits, logit paddings, labels, label lengths and log ε, and blank_id."""
    logits = float_input(op, "logits", logits)
    labels = as_integer_array(op, "labels", labels)
    logit_paddings = float_input(op, "logit_paddings", logit_paddings)
    label_paddings = float_input(op, "label_paddings", label_paddings)
    if logits.ndim != 3:
        raise ValueError(f"{op}: `logits` must have shape [batch, frames, classes], got {tuple(logits.shape)}")
    if labels.ndim != 2:
        raise ValueError(f"{op}: `labels` must have shape [batch, max label length], got {tuple(labels.shape)}")
    batch, frames, classes = logits.shape
    if logit_paddings.shape != (batch, frames):
        raise ValueError(f"{op}: `logit_paddings` must have the logits' shape [batch, frames] = {(batch, frames)}, "
                         f"got {tuple(logit_paddings.shape)}")
    if label_paddings.shape != labels.shape:
        raise ValueError(f"{op}: `label_paddings` must have the labels' shape {tuple(labels.shape)}, "
                         f"got {tuple(label_paddings.shape)}")
    if labels.shape[0] != batch:
        raise ValueError(f"{op}: `labels` must have the logits' batch size {batch}, got {labels.shape[0]} "
                         f"(labels of shape {tuple(labels.shape)})")
    if frames == 0:
        raise ValueError(f"{op}: `logits` must have at least one frame, got shape {tuple(logits.shape)}")
    blank_id = static_int(op, "blank_id", blank_id, low=0)
    if blank_id >= classes:
        raise ValueError(f"{op}: `blank_id` must be a class index in [0, {classes}), got {blank_id}")
    log_epsilon = as_array(op, "log_epsilon", log_epsilon)
    if log_epsilon.ndim != 0 or not jnp.issubdtype(log_epsilon.dtype, jnp.number):
        raise ValueError(f"{op}: `log_epsilon` must be a real number, got {log_epsilon!r:.60}")
    # as Optax: a fractional padding sum is truncated; paddings, labels and log ε get no gradient
    lengths = labels.shape[1] - jnp.sum(label_paddings, axis=1).astype(jnp.int32)
    stop = jax.lax.stop_gradient
    return (logits, stop(logit_paddings), labels, stop(lengths), stop(log_epsilon.astype(compute_dtype(logits.dtype)))), blank_id


def _alignments(rng, case):
    """Logits, paddings and labels of ``case = (B, T, K, N)``: random lengths (some padded frames, an empty label
    sequence), repeated labels, every sequence feasible (length plus repeats within its frames)."""
    batch, frames, classes, n = case
    logits = rng.normal(0.0, 1.5, (batch, frames, classes))
    labels = rng.integers(1, min(classes, 3), (batch, n))
    labels[0, :2] = labels[0, 0]  # a repeat
    label_lengths = rng.integers(0, n + 1, batch)
    label_lengths[0], label_lengths[-1] = n, 0
    needed = lambda b, k: k + int(np.sum(labels[b, 1:k] == labels[b, :max(k - 1, 0)]))  # noqa: E731
    for b in range(batch):
        while needed(b, label_lengths[b]) > frames:
            label_lengths[b] -= 1
    logit_lengths = np.array([rng.integers(max(needed(b, k), 1), frames + 1) for b, k in enumerate(label_lengths)])
    logit_lengths[0] = max(needed(0, label_lengths[0]), frames - 1)  # a padded frame
    pads = lambda lengths, size: (np.arange(size)[None, :] >= lengths[:, None]).astype(float)  # noqa: E731
    return logits, pads(logit_lengths, frames), labels.astype(np.int32), pads(label_lengths, n)


def _extreme():
    """Peaked logits (one alignment carries nearly all the probability), a fully padded row and an empty label."""
    logits = np.array([[[30.0, -30.0, 0.0], [-30.0, 30.0, 0.0], [30.0, 0.0, -30.0], [0.0, -30.0, 30.0]],
                       [[-30.0, 30.0, 0.0], [30.0, 0.0, -30.0], [0.0, 30.0, -30.0], [30.0, -30.0, 0.0]],
                       [[5.0, -5.0, 0.0], [0.0, 5.0, -5.0], [-5.0, 0.0, 5.0], [5.0, 5.0, 5.0]]])
    logit_paddings = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    labels = np.array([[1, 2], [1, 1], [2, 1]], np.int32)
    label_paddings = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return logits, logit_paddings, labels, label_paddings


_checks = Checks(sample=_alignments, cases=((2, 6, 4, 3), (3, 5, 5, 2)), extreme=_extreme)
# The forward variables of unreachable states sit near k·log_epsilon: at -1e5 float32 keeps 3 digits of their
# derivatives and float16 cannot hold them, so the registry checks them with log ε = -10 (which also gives the
# ε-weighted transitions a visible share of every gradient); tests/test_dropin.py compares the default with optax.
_probs_checks = dataclasses.replace(_checks, variants=({"log_epsilon": -10.0},))
_saves = ("the log-probabilities [B, T, K] and the forward variables log α of every frame ([T, B, N+1] and "
          "[T, B, N]), with the labels, paddings and label lengths")
_differs = ("logit_paddings, label_paddings and log_epsilon get no gradient (optax's autodiff gives the float "
            "paddings one through its blend pad·α_prev + (1 - pad)·α_new, meaningful only for 0/1 paddings); the "
            "outputs have the logits' dtype (optax's forward variables start in the default float dtype and take "
            "the paddings' dtype, so under x64 its float32 losses come out float64); blank_id must be an int in "
            "[0, K) and there must be at least one frame (optax fails obscurely)")


@declare(forms=_CTC, saves=_saves, differs=_differs, checks=_checks)
def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5):
    """Connectionist temporal classification loss ``-log p(labels | logits)``, as ``optax.losses.ctc_loss``.

    ``logits`` [B, T, K] (class ``blank_id`` is the blank), ``logit_paddings``
    [B, T] (1.0 marks a padded frame, which is skipped), ``labels`` [B, N]
    integer and ``label_paddings`` [B, N] (right-padded: ``L_b = N - Σ_n
    label_paddings[b, n]`` labels are used). ``p`` sums ``Π_t softmax(x_t)[π_t]``
    over the alignments π of the unpadded frames that collapse to the labels
    (merge repeats, drop blanks; two equal consecutive labels need a blank
    between them). Impossible transitions have log-weight ``log_epsilon`` rather
    than -∞, so an infeasible target (too few frames) has a large finite loss,
    as in Optax. Returns the per-sequence loss [B].

    Derivative (forward–backward): ``d/dx[b, t, k] = softmax(x_t)_k - Σ_{s:
    label(s) = k} α_t(s) β_t(s) / p`` on unpadded frames, 0 on padded ones; the
    labels and paddings get none.
    """
    args, blank_id = _arguments("funcnet.losses.ctc_loss", logits, logit_paddings, labels, label_paddings,
                                blank_id, log_epsilon)
    return _CTC(*args, blank_id=blank_id)


@declare(forms=_CTC_PROBS, saves=_saves, differs=_differs, checks=_probs_checks)
def ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5):
    """CTC loss and the forward variables, as ``optax.losses.ctc_loss_with_forward_probs``.

    Arguments as :func:`ctc_loss`. Returns ``(per_seq_loss, logalpha_blank,
    logalpha_emit)``: the loss [B], and [T, B, N+1] and [T, B, N] arrays holding
    after each frame t the log-probability of having emitted n labels and being
    at a blank (``logalpha_blank[t, b, n]``; the last frame's includes the
    closing move from the last label), or of having just emitted label n
    (``logalpha_emit[t, b, n]``); padded frames repeat the previous frame's.

    Derivative: each output's is the forward–backward adjoint of the recursion
    (the loss's as in :func:`ctc_loss`); the labels and paddings get none.
    """
    args, blank_id = _arguments("funcnet.losses.ctc_loss_with_forward_probs", logits, logit_paddings, labels,
                                label_paddings, blank_id, log_epsilon)
    batch, frames, _ = args[0].shape
    return _unpack(_CTC_PROBS(*args, blank_id=blank_id), batch, frames, args[2].shape[1])


__all__ = names("losses", __name__)
