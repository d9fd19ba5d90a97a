"""The lecture's learning-rate decay schedules, as Optax schedules (``step -> learning rate``).

Pass one as ``learning_rate`` to any Optax optimizer, e.g.
``optax.sgd(inverse_time_decay(0.1, 1e-3), momentum=0.9)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

__all__ = ["inverse_time_decay", "power_decay"]


def inverse_time_decay(init_value: float, decay_rate: float) -> optax.Schedule:
    """``α_t = α / (1 + δ t)``: halves after ``1/δ`` steps, then keeps falling like 1/t.

    Args:
      init_value: α, the learning rate at step 0.
      decay_rate: δ ≥ 0.
    """
    if decay_rate < 0:
        raise ValueError(f"inverse_time_decay: decay_rate must be >= 0, got {decay_rate}")

    def schedule(count):
        return init_value / (1.0 + decay_rate * jnp.asarray(count, jnp.float32))

    return schedule


def power_decay(init_value: float, exponent: float, warmup_steps: int = 1) -> optax.Schedule:
    """``α_t = α`` for ``t < τ``, then ``α (τ / t)^δ``: constant, then decaying like ``1/t^δ``.

    The two pieces meet at ``t = τ``. With ``0.5 < δ ≤ 1`` the step sizes satisfy
    the classic conditions Σα_t = ∞ and Σα_t² < ∞.

    Args:
      init_value: α.
      exponent: δ ≥ 0.
      warmup_steps: τ ≥ 1, the length of the constant phase.
    """
    if exponent < 0 or warmup_steps < 1:
        raise ValueError(f"power_decay: need exponent >= 0 and warmup_steps >= 1, got {exponent}, {warmup_steps}")

    def schedule(count):
        t = jnp.maximum(jnp.asarray(count, jnp.float32), warmup_steps)
        return init_value * (warmup_steps / t) ** exponent

    return schedule
