"""Centred finite differences, shared by the op checker and the whole-model checker.

Both reduce what they check to a scalar function of one flat float64 vector
and evaluate it at ``x ± h·d`` for a batch of directions ``d`` (unit vectors of
every coordinate, or random unit directions of a large leaf).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def contract(cotangent: Any, out: Any) -> jax.Array:
    """``⟨c, out⟩``: the sum over leaves of ``vdot(c, out)``, ``c`` cast to each output leaf's dtype."""
    return sum(jnp.vdot(jnp.asarray(c, o.dtype), o) for c, o in zip(jax.tree.leaves(cotangent),
                                                                    jax.tree.leaves(out), strict=True))


def probe(scalar: Callable, flat: jax.Array, directions: jax.Array, step: float,
          batch_size: int = 64) -> jax.Array:
    """``[f(x + h d), f(x - h d)]`` for every row ``d`` of ``directions``: an ``(n, 2)`` array.

    The evaluations run as one ``lax.map`` over batches of ``batch_size``
    directions, so the whole probe set is one compiled program whose memory
    stays bounded for large leaves.
    """
    return jax.lax.map(lambda d: jnp.stack([scalar(flat + step * d), scalar(flat - step * d)]), directions,
                       batch_size=batch_size)


def centred(values: jax.Array, step: float) -> jax.Array:
    """``(f(x + h d) - f(x - h d)) / 2h`` from the output of :func:`probe`."""
    return (values[:, 0] - values[:, 1]) / (2 * step)
