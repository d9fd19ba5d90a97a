"""Activations with hand-written backward rules; a drop-in for the same names in ``jax.nn``."""

from funcnet.ops.activations import (
    elu,
    gelu,
    hard_tanh,
    identity,
    leaky_relu,
    log_softmax,
    prelu,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)

__all__ = [
    "identity", "sigmoid", "tanh", "hard_tanh", "relu", "leaky_relu", "elu", "prelu",
    "softplus", "silu", "gelu", "softmax", "log_softmax",
]
