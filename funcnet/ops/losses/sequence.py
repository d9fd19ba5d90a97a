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
    """``(log(eᵃ + eᵇ), e^{a - out}, e^{b - out})``: ``jnp.logaddexp`` and its two partial derivatives.

    The derivatives are ``1/(1 + e)`` and ``e/(1 + e)`` with ``e = e^{-|a - b|}``: one exponential for both
    (the rules only need the weights of two of each frame's three logaddexps, so this halves their work).
    ``-|a - b|`` is written as a select, whose derivative is right at a tie (``abs``'s is 0 there).
    """
    d = a - b
    ahead = d >= 0
    e = jnp.exp(jnp.where(ahead, -d, d))
    w_hi = 1.0 / (1.0 + e)
    w_lo = e * w_hi
    return jnp.logaddexp(a, b), jnp.where(ahead, w_hi, w_lo), jnp.where(ahead, w_lo, w_hi)


def _repeats(labels, dtype):
    """1 where a label equals the next one (the skip transition is closed there), 0 elsewhere and at the end."""
    same = (labels[:, :-1] == labels[:, 1:]).astype(dtype)
    return jnp.concatenate([same, jnp.zeros((labels.shape[0], 1), dtype)], axis=1)[:, :labels.shape[1]]


def _emissions(lp, labels, blank_id):
    """Every frame's log-probabilities of each label, [T, B, N] (0 for a label outside ``[0, K)``, as Optax's
    one-hot reads), and of the blank, [T, B, 1]."""
    batch, frames, k = lp.shape
    inside = (labels >= 0) & (labels < k)
    index = jnp.broadcast_to(jnp.where(inside, labels, 0)[:, None, :], (batch, frames, labels.shape[1]))
    emit = jnp.where(inside[:, None, :], jnp.take_along_axis(lp, index, axis=2), 0.0)
    return emit.transpose(1, 0, 2), lp[:, :, blank_id].T[:, :, None]


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


def _blend_blank(pad, old, new):
    """:func:`_blend` of the blank variables, column 0 and the rest apart, joined last: ``new`` is a
    concatenation, and XLA's CPU loop body ran 2.5× slower with the blend applied to the joined array
    (CTC's forward 57 ms against 23 ms at B = 32, T = 500, N = 100)."""
    return jnp.concatenate([_blend(pad, old[:, :1], new[:, :1]), _blend(pad, old[:, 1:], new[:, 1:])], axis=1)


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
    """The last frame's forward variables, and (``stack``) those before each frame, [T, B, N+1] and [T, B, N]."""
    rep = _repeats(labels, lp.dtype)

    def step(carry, frame):
        le, lb, pad = frame
        new_phi, new_emit, _ = _weights(*carry, le, lb, rep, eps)
        phi, emit = carry
        return (_blend_blank(pad, phi, new_phi), _blend(pad, emit, new_emit)), (carry if stack else None)

    init = tuple(varying_like(a, lp, pads) for a in _init(lp.shape[0], labels.shape[1], eps, lp.dtype))
    return jax.lax.scan(step, init, (*_emissions(lp, labels, blank_id), pads.T[:, :, None]))


def _save(logits, pads, labels, lengths, eps, *, blank_id, probs):
    lp = jax.nn.log_softmax(widen(logits))
    pads, eps = pads.astype(lp.dtype), eps.astype(lp.dtype)
    (phi_t, emit_t), (phis, emits) = _forward(lp, pads, labels, eps, blank_id, stack=True)
    phi_last = _final(phi_t, emit_t)[0]
    loss = -_at_length(phi_last, lengths)
    if probs:  # after each frame: the next frame's inputs, then the last frame's (with the closing move)
        loss = _pack(loss, jnp.concatenate([phis[1:], phi_last[None]]), jnp.concatenate([emits[1:], emit_t[None]]))
    return loss.astype(logits.dtype), (lp, phis, emits, phi_t, emit_t, pads, labels, lengths, eps)


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
    lp, phis, emits, phi_t, emit_t, pads, labels, lengths, eps = res
    batch, frames, classes = lp.shape
    n = labels.shape[1]
    g = widen(g)
    if probs:  # the last frame's blank row is phi_last's: its cotangent enters with the loss's
        g_loss, g_phi, g_emit = _unpack(g, batch, frames, n)
        g_last, g_phi = g_phi[-1], g_phi.at[-1].set(0.0)
    else:
        g_loss, g_last = g, 0.0
    rep = _repeats(labels, lp.dtype)
    # the loss picks -phi_last[L]; phi_last is the closing move on the last frame's variables
    a_last = g_last - g_loss[:, None] * jax.nn.one_hot(lengths, n + 1, dtype=lp.dtype)
    _, w_f, w_g = _final(phi_t, emit_t)
    a_phi = jnp.concatenate([a_last[:, :1], a_last[:, 1:] * w_f], axis=1)
    a_emit = a_last[:, 1:] * w_g

    def step(carry, frame):
        a_phi, a_emit = carry  # adjoints of the variables after this frame
        phi, emit, le, lb, pad, *cts = frame  # the variables before it
        if cts:  # the cotangents of the outputs after this frame
            a_phi, a_emit = a_phi + cts[0], a_emit + cts[1]
        _, _, (w_a, w_b, w_c, w_d, w_p, w_q) = _weights(phi, emit, le, lb, rep, eps)
        # column 0 of the blank variables and the rest apart, joined last (see _blend_blank)
        head, tail, new_emit = (1.0 - pad) * a_phi[:, :1], (1.0 - pad) * a_phi[:, 1:], (1.0 - pad) * a_emit
        # through the frame's two logaddexps, then the frame-free move before them
        via_a = new_emit * w_a  # into columns 0 … N-1 of the blank variables before the move
        head1 = head + via_a[:, :1]
        tail1 = tail * w_p + jnp.pad(via_a[:, 1:], ((0, 0), (0, 1)))
        prev_emit = pad * a_emit + new_emit * w_b + tail * w_q + tail1 * w_d
        prev_phi = jnp.concatenate([pad * a_phi[:, :1] + head1, pad * a_phi[:, 1:] + tail1 * w_c], axis=1)
        return (prev_phi, prev_emit), (new_emit, jnp.sum(head, axis=1) + jnp.sum(tail, axis=1))

    frames_in = (phis, emits, *_emissions(lp, labels, blank_id), pads.T[:, :, None])
    if probs:
        frames_in += (g_phi, g_emit)
    carry = tuple(varying_like(a, lp, pads, g) for a in (a_phi, a_emit))
    _, (a_le, a_lb) = jax.lax.scan(step, carry, frames_in, reverse=True)
    # d/d log-probabilities: each label's adjoint at its class (one batched product for all frames, faster on CPU
    # than a scatter per frame), the blank adjoints at blank_id; then through the log-softmax
    one_hot = jax.nn.one_hot(labels, classes, dtype=lp.dtype)  # [B, N, K]; zero rows for labels outside [0, K)
    a_lp = jnp.einsum("tbn,bnk->btk", a_le, one_hot)
    a_lp = a_lp + a_lb.T[:, :, None] * jax.nn.one_hot(blank_id, classes, dtype=lp.dtype)
    total = jnp.einsum("tbn,bn->bt", a_le, jnp.sum(one_hot, axis=2)) + a_lb.T  # Σ_k a_lp: in-range labels only
    return a_lp - jnp.exp(lp) * total[:, :, None], None, None, None, None


def _jvp(res, dx, *unused, blank_id, probs):
    lp, phis, emits, phi_t, emit_t, pads, labels, lengths, eps = res
    if dx is None:
        return None
    dx = widen(dx)
    rep = _repeats(labels, lp.dtype)

    def step(carry, frame):
        d_phi, d_emit = carry
        phi, emit, le, lb, pad, d_le, d_lb = frame
        _, _, (w_a, w_b, w_c, w_d, w_p, w_q) = _weights(phi, emit, le, lb, rep, eps)
        d_phi1 = jnp.concatenate([d_phi[:, :1], w_c * d_phi[:, 1:] + w_d * d_emit], axis=1)
        new_emit = w_a * d_phi1[:, :-1] + w_b * d_emit + d_le
        new_phi = jnp.concatenate([d_phi1[:, :1], w_p * d_phi1[:, 1:] + w_q * d_emit], axis=1) + d_lb
        carry = _blend_blank(pad, d_phi, new_phi), _blend(pad, d_emit, new_emit)
        return carry, (carry if probs else None)

    d_lp = dx - jnp.sum(jnp.exp(lp) * dx, axis=2, keepdims=True)
    frames_in = (phis, emits, *_emissions(lp, labels, blank_id), pads.T[:, :, None], *_emissions(d_lp, labels, blank_id))
    zeros = tuple(varying_like(jnp.zeros_like(a), lp, pads, dx) for a in (phi_t, emit_t))
    (d_phi, d_emit), stacked = jax.lax.scan(step, zeros, frames_in)
    _, w_f, w_g = _final(phi_t, emit_t)
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
