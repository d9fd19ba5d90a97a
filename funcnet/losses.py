"""Losses with hand-written backward rules; a drop-in for the same names in ``optax.losses``."""

from funcnet.ops.losses import (
    LOG_FLOOR,
    binary_cross_entropy,
    default_is_weight,
    l1_penalty,
    l2_loss,
    l2_penalty,
    multiclass_svm_loss,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
    weight_leaves,
)

__all__ = [
    "squared_error", "l2_loss", "binary_cross_entropy", "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
    "multiclass_svm_loss", "l1_penalty", "l2_penalty", "default_is_weight",
    "weight_leaves", "LOG_FLOOR",
]
