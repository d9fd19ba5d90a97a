"""funcnet: functional neural networks in JAX with hand-written, verified backward rules.

Every op carries a hand-written reverse rule (``jax.grad``) and a hand-written
forward rule (``jax.jvp``, ``jax.jacfwd``), declared once in ``funcnet/ops``; its
autodiff twin lives under the same name in :mod:`funcnet.reference`.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what __getattr__ gives, visible to type checkers and to the API reference's static reading
    from funcnet.custom import CustomOp, Kink, custom_op, custom_vjp_form  # noqa: F401
    from funcnet.gradcheck import check_gradients, check_op  # noqa: F401
    from funcnet.second_order import hessian, hessian_matrix, hvp  # noqa: F401

# Submodules and names are imported on first use (PEP 562): `import funcnet` is then quick, so that the
# command line can install its signal handlers before JAX imports (a Ctrl-C there was a traceback).
_SUBMODULES = ("checkpoint", "curvature", "data", "gates", "gradcheck", "init", "layers", "losses", "manual", "nn",
               "parallel", "reference", "schedules", "train")
_NAMES = {"CustomOp": "funcnet.custom", "Kink": "funcnet.custom", "custom_op": "funcnet.custom",
          "custom_vjp_form": "funcnet.custom", "check_gradients": "funcnet.gradcheck", "check_op": "funcnet.gradcheck",
          "hessian": "funcnet.second_order", "hessian_matrix": "funcnet.second_order", "hvp": "funcnet.second_order"}

__version__ = "0.1.0"

__all__ = [
    "gates", "nn", "losses", "reference", "hessian", "hessian_matrix", "hvp", "gradcheck", "check_gradients",
    "custom_op", "CustomOp", "Kink", "check_op", "custom_vjp_form",
    "init", "layers", "parallel", "schedules", "data", "train", "curvature", "checkpoint", "manual", "__version__",
]


def __getattr__(name: str):
    # callbacks: deprecated for one release (funcnet.train.hooks), imported on first use, with the warning
    if name in _SUBMODULES or name == "callbacks":
        return importlib.import_module(f"funcnet.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'funcnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
