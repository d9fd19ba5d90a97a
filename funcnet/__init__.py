"""funcnet: functional neural networks in JAX with hand-written, verified backward rules.

Every op carries a hand-written reverse rule (``jax.grad``) and a hand-written
forward rule (``jax.jvp``, ``jax.jacfwd``), declared once in ``funcnet/ops``; its
autodiff twin lives under the same name in :mod:`funcnet.reference`.
"""

from funcnet import gates, losses, nn, reference
from funcnet.second_order import hessian, hessian_matrix, hvp
from funcnet import init, layers, schedules  # noqa: E402  (layers build on the namespaces above)
from funcnet import checkpoint, data, train  # noqa: E402
from funcnet import gradcheck  # noqa: E402
from funcnet.gradcheck import check_gradients  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "gates", "nn", "losses", "reference", "hessian", "hessian_matrix", "hvp", "gradcheck", "check_gradients",
    "init", "layers", "schedules", "data", "train", "checkpoint", "__version__",
]
