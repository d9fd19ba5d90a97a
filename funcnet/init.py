"""Parameter initializers with the call shape of ``jax.nn.initializers``: ``init(key, shape, dtype)``.

The variance-scaling families are factories, as in JAX (``glorot_uniform()``
returns an initializer); ``zeros`` and ``ones`` are initializers themselves and
``constant(value)`` builds one.

For a weight of shape ``(fan_in, fan_out)`` (a Dense kernel; for more axes the
leading axes count into ``fan_in`` like a receptive field):

============== ================================ =================================
family          uniform on [-a, a]               normal, variance s²
============== ================================ =================================
Glorot/Xavier   a = √(6 / (fan_in + fan_out))    s = √(2 / (fan_in + fan_out))
He/Kaiming      a = √(6 / fan_in)                s = √(2 / fan_in)
LeCun           a = √(3 / fan_in)                s = √(1 / fan_in)
============== ================================ =================================

The normal families draw, as ``jax.nn.initializers`` does, from a normal
truncated at ±2 standard deviations and rescaled (by 1/0.8796...) so that the
variance is exactly s²; for the same key, shape and dtype every initializer
here returns the same array as its ``jax.nn.initializers`` namesake. Fans
follow JAX too: for a kernel of shape ``(..., n_in, n_out)`` the leading axes
are a receptive field that multiplies both fans. Unlike JAX, a 1-D shape
``(n,)`` is accepted, with fan_in = fan_out = n.

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
    "TRUNCATED_STD",
]


#: The standard deviation of a standard normal truncated to [-2, 2]; dividing by it
#: restores unit variance (the constant of ``jax.nn.initializers``).
TRUNCATED_STD = 0.87962566103423978


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight ``(..., n_in, n_out)``: ``n_in`` and ``n_out`` times the receptive field."""
    shape = tuple(shape)
    if len(shape) < 1:
        raise ValueError(f"funcnet.init: cannot compute fans of a scalar shape {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _variance_scaling(scale: float, mode: str, distribution: str, name: str) -> Callable[..., Initializer]:
    def factory(dtype: Any = jnp.float32) -> Initializer:
        def init(key, shape, dtype=dtype):
            fan_in, fan_out = fans(shape)
            denominator = {"fan_in": fan_in, "fan_avg": (fan_in + fan_out) / 2}[mode]
            variance = jnp.array(scale / denominator, dtype=dtype)
            # drawn flat and reshaped: the same numbers as drawing in `shape` (JAX's bits follow the flat index,
            # partitionable or not), but XLA's CPU compiler takes ~3x longer on a narrow last axis (e.g. 256x10)
            flat = (math.prod(shape),)
            if distribution == "uniform":  # Var(U[-a, a]) = a²/3
                return (jax.random.uniform(key, flat, dtype, -1) * jnp.sqrt(3 * variance)).reshape(shape)
            stddev = jnp.sqrt(variance) / jnp.array(TRUNCATED_STD, dtype)
            return (jax.random.truncated_normal(key, -2, 2, flat, dtype) * stddev).reshape(shape)

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
glorot_normal.__doc__ = "Glorot/Xavier normal: truncated at ±2σ, variance 2 / (fan_in + fan_out)."
he_uniform.__doc__ = "He/Kaiming uniform: U[-a, a] with a = √(6 / fan_in) (for ReLU networks)."
he_normal.__doc__ = "He/Kaiming normal: truncated at ±2σ, variance 2 / fan_in (for ReLU networks)."
lecun_uniform.__doc__ = "LeCun uniform: U[-a, a] with a = √(3 / fan_in)."
lecun_normal.__doc__ = "LeCun normal: truncated at ±2σ, variance 1 / fan_in."


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
