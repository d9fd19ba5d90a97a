"""Gates with hand-written rules in both directions: ``add``, ``multiply``, ``maximum``, ``matmul``, ``affine``.

Plus the fused :func:`activation_affine`, ``f(z) @ w + b`` keeping only ``z`` (``funcnet/ops/fused_dense.py``).
"""

from funcnet.ops import gates as _gates
from funcnet.ops.fused_dense import activation_affine  # noqa: F401  (the fused dense layer)
from funcnet.ops.gates import *  # noqa: F401,F403  (the declared gates)

__all__ = list(_gates.__all__) + ["activation_affine"]
