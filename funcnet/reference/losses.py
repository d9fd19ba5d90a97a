"""Autodiff twins of :mod:`funcnet.losses`: the same values in plain ``jax.numpy``."""

import jax
import jax.numpy as jnp

from funcnet.ops.losses import LOG_FLOOR, weight_leaves
from funcnet.reference.nn import log_softmax

__all__ = [
    "squared_error", "l2_loss", "binary_cross_entropy", "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
    "multiclass_svm_loss", "l1_penalty", "l2_penalty",
]


def squared_error(predictions, targets=None):
    d = predictions if targets is None else predictions - targets
    return d * d


def l2_loss(predictions, targets=None):
    return 0.5 * squared_error(predictions, targets)


def _clamped_log(u):
    # Double `where` so that the clamped branch passes a zero gradient, not 0 * inf.
    ok = u > jnp.exp(jnp.asarray(LOG_FLOOR, u.dtype))
    return jnp.where(ok, jnp.log(jnp.where(ok, u, 1.0)), LOG_FLOOR)


def binary_cross_entropy(probs, labels):
    labels = jnp.asarray(labels).astype(probs.dtype)
    return -(labels * _clamped_log(probs) + (1 - labels) * _clamped_log(1 - probs))


def sigmoid_binary_cross_entropy(logits, labels):
    labels = jnp.asarray(labels).astype(logits.dtype)
    return labels * jnp.logaddexp(0.0, -logits) + (1 - labels) * jnp.logaddexp(0.0, logits)


def softmax_cross_entropy(logits, labels, axis=-1):
    return -jnp.sum(labels * log_softmax(logits, axis=axis), axis=axis)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1):
    logp = log_softmax(logits, axis=axis)
    return -jnp.take_along_axis(logp, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis)


def multiclass_svm_loss(scores, labels, margin=1.0):
    correct = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    margins = scores - correct + margin
    wrong = ~jax.nn.one_hot(labels, scores.shape[-1], dtype=jnp.bool_)
    return jnp.sum(jnp.where(wrong & (margins > 0), margins, 0.0), axis=-1)


def _total(terms):
    terms = list(terms)
    return sum(terms) if terms else jnp.zeros((), jnp.float32)


def l1_penalty(params, is_weight=None):
    return _total(jnp.sum(jnp.abs(w)) for w in weight_leaves(params, is_weight))


def l2_penalty(params, is_weight=None):
    return _total(jnp.sum(w * w) for w in weight_leaves(params, is_weight))
