"""Losses with hand-written rules in both directions; a drop-in for the same names in ``optax.losses``.

Plus the fused classifier head :func:`linear_softmax_cross_entropy` (``funcnet/ops/fused_head.py``).
"""

from funcnet.ops import losses as _losses
from funcnet.ops.fused_head import linear_softmax_cross_entropy  # noqa: F401  (the fused head)
from funcnet.ops.losses import *  # noqa: F401,F403  (the declared losses, default_is_weight, weight_leaves, LOG_FLOOR)

__all__ = list(_losses.__all__) + ["linear_softmax_cross_entropy"]
