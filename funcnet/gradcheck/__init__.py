"""Gradient checking: manual rules vs autodiff vs centred finite differences.

* :func:`check_gradients` compares the gradients of any function of pytrees
  (a whole model's loss) leaf by leaf and returns a :class:`GradientReport`.
* :func:`check_op` and :func:`check_registry` check the registry's ops, one
  row per op (the table of ``funcnet gradcheck``).
"""

from funcnet.gradcheck.model import (
    GradientCheckError,
    GradientReport,
    LeafReport,
    PairError,
    check_gradients,
)
from funcnet.gradcheck.ops import (
    FD_STEP,
    THRESHOLDS,
    OpCheck,
    check_op,
    check_registry,
    finite_difference_grads,
    format_table,
    random_cotangent,
    relative_error,
    three_gradients,
    vjp_grads,
)

__all__ = [
    "check_gradients", "GradientReport", "LeafReport", "PairError", "GradientCheckError",
    "check_op", "check_registry", "format_table", "OpCheck", "THRESHOLDS", "FD_STEP", "relative_error",
    "vjp_grads", "finite_difference_grads", "three_gradients", "random_cotangent",
]
