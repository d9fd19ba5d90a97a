"""Gates with hand-written backward rules: ``add``, ``multiply``, ``maximum``, ``matmul``, ``affine``."""

from funcnet.ops.gates import add, affine, matmul, maximum, multiply

__all__ = ["add", "multiply", "maximum", "matmul", "affine"]
