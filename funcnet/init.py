"""Parameter initializers with the call shape of ``jax.nn.initializers``: ``init(key, shape, dtype)``.

The variance-scaling families are factories, as in JAX (``glorot_uniform()``
returns an initializer); ``zeros`` and ``ones`` are initializers themselves and
``constant(value)`` builds one.

For a weight of shape ``(fan_in, fan_out)`` (a Dense kernel; for more axes the
leading axes count into ``fan_in`` like a receptive field):

============== ================================ =================================
family          uniform on [-a, a]               normal N(0, s²)
============== ================================ =================================
Glorot/Xavier   a = √(6 / (fan_in + fan_out))    s = √(2 / (fan_in + fan_out))
He/Kaiming      a = √(6 / fan_in)                s = √(2 / fan_in)
LeCun           a = √(3 / fan_in)                s = √(1 / fan_in)
============== ================================ =================================

Every row keeps the variance of the forward signal (Glorot: of forward and
backward) roughly constant from layer to layer. Never start all weights equal
(e.g. ``zeros`` for a hidden layer): every hidden unit then computes the same
function and receives the same gradient, so in exact arithmetic they stay
identical forever (see ``examples/zero_init_trap.py``). In floating point a
compiler may sum the units' gradients in different orders: at some widths XLA's
CPU backend separates them by one unit in the last place, and training slowly
amplifies that (a symmetry broken by round-off, not a fix).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, Sequence[int], Any], jax.Array]

__all__ = [
    "Initializer",
    "glorot_uniform",
    "glorot_normal",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_uniform",
    "lecun_normal",
    "zeros",
    "ones",
    "constant",
    "fans",
]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: the last axis is the output, the others the input."""
    shape = tuple(shape)
    if len(shape) < 1:
        raise ValueError(f"funcnet.init: cannot compute fans of a scalar shape {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    return math.prod(shape[:-1]), shape[-1]


def _variance_scaling(scale: float, mode: str, distribution: str, name: str) -> Callable[..., Initializer]:
    def factory(dtype: Any = jnp.float32) -> Initializer:
        def init(key, shape, dtype=dtype):
            fan_in, fan_out = fans(shape)
            denominator = {"fan_in": fan_in, "fan_avg": (fan_in + fan_out) / 2}[mode]
            variance = scale / denominator
            if distribution == "uniform":
                bound = math.sqrt(3 * variance)  # Var(U[-a, a]) = a²/3
                return jax.random.uniform(key, shape, dtype, -bound, bound)
            return math.sqrt(variance) * jax.random.normal(key, shape, dtype)

        init.__name__ = name
        return init

    factory.__name__ = name
    return factory


glorot_uniform = _variance_scaling(1.0, "fan_avg", "uniform", "glorot_uniform")
glorot_normal = _variance_scaling(1.0, "fan_avg", "normal", "glorot_normal")
he_uniform = _variance_scaling(2.0, "fan_in", "uniform", "he_uniform")
he_normal = _variance_scaling(2.0, "fan_in", "normal", "he_normal")
lecun_uniform = _variance_scaling(1.0, "fan_in", "uniform", "lecun_uniform")
lecun_normal = _variance_scaling(1.0, "fan_in", "normal", "lecun_normal")
xavier_uniform, xavier_normal = glorot_uniform, glorot_normal
kaiming_uniform, kaiming_normal = he_uniform, he_normal

glorot_uniform.__doc__ = "Glorot/Xavier uniform: U[-a, a] with a = √(6 / (fan_in + fan_out))."
glorot_normal.__doc__ = "Glorot/Xavier normal: N(0, 2 / (fan_in + fan_out))."
he_uniform.__doc__ = "He/Kaiming uniform: U[-a, a] with a = √(6 / fan_in) (for ReLU networks)."
he_normal.__doc__ = "He/Kaiming normal: N(0, 2 / fan_in) (for ReLU networks)."
lecun_uniform.__doc__ = "LeCun uniform: U[-a, a] with a = √(3 / fan_in)."
lecun_normal.__doc__ = "LeCun normal: N(0, 1 / fan_in)."


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (for biases; for hidden weights it is the symmetry trap)."""
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype=jnp.float32):
    """All ones."""
    return jnp.ones(shape, dtype)


def constant(value: float, dtype: Any = jnp.float32) -> Initializer:
    """An initializer filling every entry with ``value``."""

    def init(key, shape, dtype=dtype):
        return jnp.full(shape, value, dtype)

    return init
