"""Activations with hand-written rules in both directions; a drop-in for the same names in ``jax.nn``."""

from funcnet.ops import activations as _activations
from funcnet.ops import attention as _attention
from funcnet.ops import norms as _norms
from funcnet.ops import reductions as _reductions
from funcnet.ops.activations import *  # noqa: F401,F403  (the elementwise activations)
from funcnet.ops.attention import *  # noqa: F401,F403  (dot_product_attention)
from funcnet.ops.norms import *  # noqa: F401,F403  (standardize, layer_norm, rms_norm)
from funcnet.ops.reductions import *  # noqa: F401,F403  (softmax, log_softmax, glu, logsumexp, logmeanexp, one_hot)

__all__ = list(_activations.__all__) + list(_reductions.__all__) + list(_attention.__all__) + list(_norms.__all__)
