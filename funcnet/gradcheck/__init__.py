"""Gradient checking: manual rules vs autodiff vs centred finite differences.

* :func:`check_gradients` compares the derivatives of any function of pytrees
  (a whole model's loss) leaf by leaf, in reverse and forward mode and at
  second order, and returns a :class:`GradientReport`.
* :func:`check_op` and :func:`check_registry` check the registry's ops, one
  row per op (printed as a table by ``funcnet gradcheck``): reverse rule, forward rule,
  their adjointness and the documented kink conventions.

Both take their pass limits from the one table, :mod:`funcnet.tolerances`.
"""

from funcnet.gradcheck.model import (
    GradientCheckError,
    GradientReport,
    LeafReport,
    PairError,
    check_gradients,
    leaf_step,
    limits,
)
from funcnet.gradcheck.ops import (
    FD_STEP,
    KinkCheck,
    OpCheck,
    adjoint_error,
    check_kinks,
    check_op,
    check_registry,
    finite_difference_grads,
    jvp_tangents,
    random_cotangent,
    relative_error,
    three_gradients,
    vjp_grads,
)

__all__ = [
    "check_gradients", "GradientReport", "LeafReport", "PairError", "GradientCheckError", "limits", "leaf_step",
    "check_op", "check_registry", "check_kinks", "OpCheck", "KinkCheck", "FD_STEP",
    "relative_error", "adjoint_error", "vjp_grads", "jvp_tangents", "finite_difference_grads", "three_gradients",
    "random_cotangent",
]


def __getattr__(name: str):
    if name == "THRESHOLDS":  # deprecated: funcnet.tolerances is the one table
        from funcnet.gradcheck import ops
        return ops.THRESHOLDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
