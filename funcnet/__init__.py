"""funcnet: functional neural networks in JAX with hand-written, verified backward rules.

Every op carries a hand-written reverse rule (``jax.grad``) and a hand-written
forward rule (``jax.jvp``, ``jax.jacfwd``), declared once in ``funcnet/ops``; its
autodiff twin lives under the same name in :mod:`funcnet.reference`.
"""

from funcnet import (checkpoint, data, gates, gradcheck, init, layers, losses, manual, nn, parallel, reference,
                     schedules, train)
from funcnet.custom import CustomOp, Kink, custom_op, custom_vjp_form
from funcnet.gradcheck import check_gradients, check_op
from funcnet.second_order import hessian, hessian_matrix, hvp

__version__ = "0.1.0"

__all__ = [
    "gates", "nn", "losses", "reference", "hessian", "hessian_matrix", "hvp", "gradcheck", "check_gradients",
    "custom_op", "CustomOp", "Kink", "check_op", "custom_vjp_form",
    "init", "layers", "parallel", "schedules", "data", "train", "checkpoint", "manual", "__version__",
]


def __getattr__(name: str):
    if name == "callbacks":  # deprecated for one release: funcnet.train.hooks (imported on first use, with the warning)
        import importlib

        return importlib.import_module("funcnet.callbacks")
    raise AttributeError(f"module 'funcnet' has no attribute {name!r}")
