"""Gates with hand-written rules in both directions: ``add``, ``multiply``, ``maximum``, ``matmul``, ``affine``."""

from funcnet.ops import gates as _gates
from funcnet.ops.gates import *  # noqa: F401,F403  (the declared gates)

__all__ = list(_gates.__all__)
