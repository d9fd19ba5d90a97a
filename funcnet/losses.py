"""Losses with hand-written rules in both directions; a drop-in for the same names in ``optax.losses``."""

from funcnet.ops import losses as _losses
from funcnet.ops.losses import *  # noqa: F401,F403  (the declared losses, default_is_weight, weight_leaves, LOG_FLOOR)

__all__ = list(_losses.__all__)
