"""Autodiff twins of :mod:`funcnet.losses`: the same values in plain ``jax.numpy``.

Same signatures and semantics as the manual losses (and Optax's where Optax has
the loss): labels broadcast against logits, ``where=`` masks, tuple axes. The
masked terms use a double ``where``, so that autodiff gives the manual rules'
0 (not 0·inf = NaN) at masked-out entries.
"""

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops.numerics import LOG_FLOOR
from funcnet.reference.nn import log_softmax, sparse_plus

__all__ = [
    "squared_error", "l2_loss", "binary_cross_entropy", "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
    "multiclass_svm_loss", "l1_penalty", "l2_penalty", "linear_softmax_cross_entropy",
    "huber_loss", "log_cosh", "hinge_loss", "perceptron_loss", "sparsemax_loss", "sigmoid_focal_loss",
    "safe_softmax_cross_entropy", "poly_loss_cross_entropy", "multiclass_hinge_loss", "multiclass_perceptron_loss",
    "multiclass_sparsemax_loss", "kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence",
    "convex_kl_divergence", "cosine_similarity", "cosine_distance",
    "dice_loss", "binary_dice_loss", "multiclass_generalized_dice_loss",
    "ranking_softmax_loss",
    "ntxent", "triplet_margin_loss",
    "ctc_loss", "ctc_loss_with_forward_probs",
]


def squared_error(predictions, targets=None):
    d = predictions if targets is None else predictions - targets
    return d * d


def l2_loss(predictions, targets=None):
    return 0.5 * squared_error(predictions, targets)


def _clamped_log(u):
    # Double `where` so that the clamped branch passes a zero gradient, not 0 * inf.
    # A negative u (a probability outside [0, 1]) gives NaN, as max(log u, LOG_FLOOR) does.
    ok = u > jnp.exp(jnp.asarray(LOG_FLOOR, u.dtype))
    return jnp.where(ok, jnp.log(jnp.where(ok, u, 1.0)), jnp.where(u < 0, jnp.nan, LOG_FLOOR))


def binary_cross_entropy(probs, labels):
    labels = jnp.asarray(labels).astype(probs.dtype)
    return -(labels * _clamped_log(probs) + (1 - labels) * _clamped_log(1 - probs))


def sigmoid_binary_cross_entropy(logits, labels):
    labels = jnp.asarray(labels).astype(logits.dtype)
    return labels * jnp.logaddexp(0.0, -logits) + (1 - labels) * jnp.logaddexp(0.0, logits)


def softmax_cross_entropy(logits, labels, axis=-1, where=None):
    # optax's code, with the masked terms zeroed before the product (double where)
    if where is not None and where.ndim != logits.ndim:
        where = jnp.expand_dims(where, axis)
    logp = log_softmax(logits, axis=axis, where=where)
    if where is not None:
        logp = jnp.where(where, logp, 0.0)
    return -jnp.sum(labels * logp, axis=axis, where=where)


def _normalised(x, axis, where):
    """``x - logsumexp(x)`` at every entry, the sum over unmasked entries (0 for an empty row)."""
    m = jnp.max(x, axis=axis, where=where, initial=-jnp.inf, keepdims=True)
    z = x - lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    s = jnp.sum(jnp.exp(z), axis=axis, where=where, keepdims=True)
    if where is not None:
        s = jnp.where(jnp.any(where, axis=axis, keepdims=True), s, 1.0)
    return z - jnp.log(s)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    if where is not None and where.ndim != logits.ndim:
        where = jnp.expand_dims(where, axis)
    if isinstance(axis, tuple):  # optax: the class axes moved last, in order, and flattened
        axes = tuple(a % logits.ndim for a in axis)
        batch = tuple(a for a in range(logits.ndim) if a not in axes)
        if where is not None:
            where = jnp.broadcast_to(where, logits.shape).transpose(batch + axes)
            where = where.reshape(where.shape[:len(batch)] + (-1,))
        logits = logits.transpose(batch + axes)
        logits = logits.reshape(logits.shape[:len(batch)] + (-1,))
        axis = len(batch)
    logp = _normalised(logits, axis, where)
    out = -jnp.take_along_axis(logp, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis)
    if where is not None:
        out = jnp.where(jnp.any(where, axis=axis), out, 0.0)
    return out


def multiclass_svm_loss(scores, labels, margin=1.0):
    correct = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    margins = scores - correct + margin
    wrong = labels[..., None] != jnp.arange(scores.shape[-1])
    return jnp.sum(jnp.where(wrong & (margins > 0), margins, 0.0), axis=-1)


def _weights(params, is_weight):
    """The penalised leaves, selected here independently of the op's own filter (floating, ndim ≥ 2 by default)."""
    if is_weight is None:
        return [w for w in jax.tree.leaves(params) if jnp.ndim(w) >= 2 and jnp.issubdtype(jnp.result_type(w), jnp.floating)]
    return [w for path, w in jax.tree_util.tree_flatten_with_path(params)[0] if is_weight(path, w)]


def _total(terms):
    terms = list(terms)
    return sum(terms) if terms else jnp.zeros((), jnp.float32)


def l1_penalty(params, is_weight=None):
    # |w| with the manual rule's subgradient 0 at w = 0 (autodiff of jnp.abs takes +1 there), so that a
    # zero-initialised model's manual and autodiff gradients agree
    return _total(jnp.sum(jnp.where(w == 0, 0, jnp.abs(w))) for w in _weights(params, is_weight))


def l2_penalty(params, is_weight=None):
    return _total(jnp.sum(w * w) for w in _weights(params, is_weight))


def linear_softmax_cross_entropy(features, weight, labels, bias=None, *, where=None, label_smoothing=0.0,
                                 z_loss=0.0, block_rows=None, block_classes=None):
    """The unfused head: the N × V logits, then the (smoothed, z-regularised) cross-entropy."""
    del block_rows, block_classes  # the twin holds every logit at once
    acc = jnp.promote_types(features.dtype, jnp.float32)
    z = jnp.dot(features, weight, preferred_element_type=acc)
    if bias is not None:
        z = z + bias.astype(acc)
    m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    lse = (m + jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True)))[:, 0]
    z_y = jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0]
    loss = (1 - label_smoothing) * (lse - z_y) + label_smoothing * (lse - z.mean(axis=-1)) + z_loss * lse**2
    if where is not None:
        loss = jnp.where(where, loss, 0.0)
    return loss.astype(features.dtype)


def _error(predictions, targets):
    return predictions if targets is None else predictions - targets


def huber_loss(predictions, targets=None, *, delta=1.0):
    a = jnp.abs(_error(predictions, targets))
    quadratic = jnp.minimum(a, delta)
    return 0.5 * quadratic**2 + delta * (a - quadratic)


def log_cosh(predictions, targets=None):
    d = _error(predictions, targets)
    return jnp.logaddexp(d, -d) - jnp.log(2.0).astype(d.dtype)


def hinge_loss(predictor_outputs, targets):
    return jnp.maximum(0, 1 - predictor_outputs * targets)


def perceptron_loss(predictor_outputs, targets):
    return jnp.maximum(0, -predictor_outputs * targets)


def sparsemax_loss(logits, labels):
    return sparse_plus(jnp.where(labels, -logits, logits))


def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0):
    # optax's formula with 1 - p_t in linear space: differentiable in the labels at 0 and 1 (its log is not)
    labels = jnp.asarray(labels).astype(logits.dtype)
    ce = sigmoid_binary_cross_entropy(logits, labels)
    q = (1 - labels) * lax.logistic(logits) + labels * lax.logistic(-logits)
    loss = ce * q**gamma
    if alpha is None:
        return loss
    return (alpha * labels + (1 - alpha) * (1 - labels)) * loss


def safe_softmax_cross_entropy(logits, labels):
    logp = log_softmax(logits, axis=-1)
    # 0·log 0 = 0 where a zero label meets a -inf logit; elsewhere t·log p, smooth in t (also at t = 0)
    return -jnp.sum(labels * jnp.where((labels == 0) & (logp == -jnp.inf), 0.0, logp), axis=-1)


def poly_loss_cross_entropy(logits, labels, *, epsilon=2.0, axis=-1, where=None):
    if where is not None and where.ndim != logits.ndim:
        where = jnp.expand_dims(where, axis)
    p = jnp.exp(log_softmax(logits, axis=axis, where=where))
    one_minus_pt = jnp.sum(labels * (1 - p), axis=axis, where=where)
    return softmax_cross_entropy(logits, labels, axis=axis, where=where) + epsilon * one_minus_pt


def _one_hot(labels, classes, dtype):
    return (labels[..., None] == jnp.arange(classes)).astype(dtype)


def multiclass_hinge_loss(scores, labels):
    one_hot = _one_hot(labels, scores.shape[-1], scores.dtype)
    return jnp.max(scores + 1.0 - one_hot, axis=-1) - jnp.sum(scores * one_hot, axis=-1)


def multiclass_perceptron_loss(scores, labels):
    one_hot = _one_hot(labels, scores.shape[-1], scores.dtype)
    return jnp.max(scores, axis=-1) - jnp.sum(scores * one_hot, axis=-1)


def _sparsemax(z):
    # The Euclidean projection onto the simplex, without sorting (the op sorts): z_j is in the support
    # iff 1 + k_j z_j > S_j, with k_j the number of entries >= z_j and S_j their sum.
    ge = z[..., None, :] >= z[..., :, None]
    k = jnp.sum(ge, axis=-1)
    s = jnp.sum(jnp.where(ge, z[..., None, :], 0.0), axis=-1)
    support = 1 + k * z > s
    tau = (jnp.sum(jnp.where(support, z, 0.0), axis=-1, keepdims=True) - 1) / jnp.sum(support, axis=-1, keepdims=True)
    return jnp.maximum(z - tau, 0.0)


def multiclass_sparsemax_loss(scores, labels):
    # optax's formula: <p, s - s_y> over the support, plus the Gini term
    p = _sparsemax(scores)
    correct = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    shifted = jnp.where(p > 0, scores - correct, 0.0)
    return jnp.sum(p * shifted, axis=-1) + 0.5 * (1.0 - jnp.sum(p * p, axis=-1))


def _xlogx_over(targets, log_predictions):
    """t(log t - log q), 0 where t = 0 (double where: gradient 0 there, not 0·∞)."""
    zero = targets == 0
    safe = jnp.where(zero, 1.0, targets)
    return jnp.where(zero, 0.0, safe * (jnp.log(safe) - log_predictions))


def kl_divergence(log_predictions, targets, axis=-1, where=None):
    return jnp.sum(_xlogx_over(targets, log_predictions), axis=axis, where=where)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None):
    none = log_targets == -jnp.inf
    safe = jnp.where(none, 0.0, log_targets)
    loss = jnp.where(none, 0.0, jnp.exp(safe) * (safe - log_predictions))
    return jnp.sum(loss, axis=axis, where=where)


def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None):
    loss = _xlogx_over(targets, log_predictions) + jnp.exp(log_predictions) - targets
    return jnp.sum(loss, axis=axis, where=where)


convex_kl_divergence = generalized_kl_divergence


def cosine_similarity(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    a_norm = jnp.sqrt(jnp.sum(predictions**2, axis=axis, where=where, keepdims=True).clip(epsilon))
    b_norm = jnp.sqrt(jnp.sum(targets**2, axis=axis, where=where, keepdims=True).clip(epsilon))
    return jnp.sum((predictions / a_norm) * (targets / b_norm), axis=axis, where=where)


def cosine_distance(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    return 1.0 - cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis, where=where)


# ---- segmentation
def dice_loss(predictions, targets, *, class_weights=None, smooth=1., alpha=0.5, beta=0.5, apply_softmax=True,
              reduction="mean", ignore_background=False, axis=None):
    # optax's arithmetic, without its concrete check of apply_softmax=False
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.ndim == targets.ndim - 1:
        predictions = predictions[..., None]
    if targets.ndim == predictions.ndim - 1:
        targets = targets[..., None]
    probs = predictions
    if apply_softmax:
        probs = jax.nn.sigmoid(predictions) if predictions.shape[-1] == 1 else jax.nn.softmax(predictions, axis=-1)
    axis = tuple(range(1, probs.ndim - 1)) if axis is None else axis
    intersection = jnp.sum(probs * targets, axis=axis)
    pred_sum, target_sum = jnp.sum(probs, axis=axis), jnp.sum(targets, axis=axis)
    numerator = intersection + smooth
    denominator = intersection + alpha * (pred_sum - intersection) + beta * (target_sum - intersection) + smooth
    loss = 1.0 - numerator / denominator
    if class_weights is not None:
        loss = loss * class_weights
    if ignore_background and probs.shape[-1] > 1:
        loss = loss[..., 1:]
    return {"mean": jnp.mean, "sum": jnp.sum}[reduction](loss, axis=-1) if reduction != "none" else loss


def binary_dice_loss(predictions, targets, *, smooth=1., apply_sigmoid=True):
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.ndim == targets.ndim and predictions.shape[-1] != 1:
        predictions, targets = predictions[..., None], targets[..., None]
    return dice_loss(predictions, targets, smooth=smooth, apply_softmax=apply_sigmoid)


def multiclass_generalized_dice_loss(predictions, targets, *, smooth=1., apply_softmax=True, ignore_background=False):
    targets = jnp.asarray(targets)
    frequencies = jnp.sum(targets, axis=tuple(range(targets.ndim - 1)))
    weights = 1.0 / (frequencies**2 + 1e-7)
    weights = weights / jnp.sum(weights) * len(weights)
    return jnp.mean(dice_loss(predictions, targets, class_weights=weights, smooth=smooth, apply_softmax=apply_softmax,
                              reduction="none", ignore_background=ignore_background))
# ---- ranking
def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduce_fn=jnp.mean):
    # optax's code, with the masked log-probabilities set to 0 before the product (double where)
    labels = jnp.asarray(labels).astype(logits.dtype)
    if where is not None:
        labels = jnp.where(where, labels, 0.0)
    if weights is not None:
        labels = labels * weights
    logp = log_softmax(logits, axis=-1, where=where)
    if where is not None:
        logp = jnp.where(where, logp, 0.0)
    loss = -jnp.sum(labels * logp, axis=-1, where=where)
    if where is not None:
        where = jnp.any(where, axis=-1)
    out = reduce_fn(loss, where=where) if reduce_fn is not None else loss
    if reduce_fn is jnp.mean:
        out = jnp.where(jnp.isnan(out) & ~jnp.any(jnp.isnan(loss)), 0.0, out)
    if reduce_fn is None and where is not None:
        out = jnp.where(where, out, 0.0)
    return out
# ---- self_supervised
def ntxent(embeddings, labels, temperature=0.07):
    # optax's formula, with the similarities as a product of unit rows
    eps = jnp.finfo(embeddings.dtype).eps
    norm = jnp.sqrt(jnp.maximum(jnp.sum(embeddings * embeddings, axis=-1, keepdims=True), eps))
    u = embeddings / norm
    x = u @ u.T / temperature
    same = labels[:, None] == labels[None, :]
    pos, neg = same & ~jnp.eye(labels.shape[0], dtype=bool), ~same
    m = lax.stop_gradient(jnp.max(jnp.where(pos | neg, x, -jnp.inf), axis=1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    a = jnp.exp(jnp.where(pos | neg, x - m, -jnp.inf))
    d = jnp.sum(jnp.where(neg, a, 0.0), axis=1, keepdims=True) + a
    terms = jnp.where(pos, jnp.log(jnp.where(pos, d, 1.0)) - (x - m), 0.0)
    return jnp.sum(terms) / jnp.sum(pos)


def _triplet_distance(d, axis, q, eps):
    p = d ** int(q) if float(q).is_integer() else jnp.power(d, q)
    z = jnp.sum(p, axis=axis) + eps
    if q > 1:  # the convention at a zero distance (eps = 0): gradient 0, not 0·inf
        return jnp.where(z == 0, 0.0, jnp.power(jnp.where(z == 0, 1.0, z), 1 / q))
    return jnp.power(z, 1 / q)


def triplet_margin_loss(anchors, positives, negatives, axis=-1, norm_degree=2, margin=1.0, eps=1e-6):
    dp = _triplet_distance(anchors - positives, axis, norm_degree, eps)
    dn = _triplet_distance(anchors - negatives, axis, norm_degree, eps)
    return jnp.maximum(dp - dn + margin, 0.0)
# ---- sequence
def ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5):
    """Optax's CTC recursion, autodiff through the scan; outputs in the logits' dtype, no gradient to paddings."""
    dtype = logits.dtype
    logp = jax.nn.log_softmax(logits)
    pad_t = jax.lax.stop_gradient(logit_paddings).astype(dtype).T[:, :, None]  # [T, B, 1]
    eps = jax.lax.stop_gradient(jnp.asarray(log_epsilon, dtype))
    batch, n = labels.shape
    same = jnp.zeros((batch, n), dtype).at[:, :-1].set(labels[:, :-1] == labels[:, 1:])
    blank = jnp.moveaxis(logp[:, :, blank_id:blank_id + 1], 1, 0)  # [T, B, 1]
    emit_lp = jnp.moveaxis(jnp.sum(logp[:, :, None, :] * jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)[:, None],
                                   axis=-1), 1, 0)  # [T, B, N]
    lengths = n - jnp.sum(label_paddings, axis=1).astype(jnp.int32)

    def join(phi, other):  # phi[:, 1:] ⊕ other
        return phi.at[:, 1:].set(jnp.logaddexp(phi[:, 1:], other))

    def frame(state, inputs):
        phi, emit = state
        e, b, pad = inputs
        moved = join(phi, emit + eps * same)
        new_emit = jnp.logaddexp(moved[:, :-1] + e, emit + e)
        new_phi = join(moved + b, emit + b + eps * (1.0 - same))
        state = (pad * phi + (1.0 - pad) * new_phi, pad * emit + (1.0 - pad) * new_emit)
        return state, state

    start = (jnp.full((batch, n + 1), eps, dtype).at[:, 0].set(0.0), jnp.full((batch, n), eps, dtype))
    (phi, emit), (phis, emits) = jax.lax.scan(frame, start, (emit_lp, blank, pad_t))
    last = join(phi, emit)
    loss = -jnp.sum(last * jax.nn.one_hot(lengths, n + 1, dtype=dtype), axis=1)
    return loss, phis.at[-1].set(last), emits


def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5):
    return ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, blank_id=blank_id,
                                       log_epsilon=log_epsilon)[0]
