"""Activations with hand-written rules in both directions; a drop-in for the same names in ``jax.nn``."""

from funcnet.ops import activations as _activations
from funcnet.ops import norms as _norms
from funcnet.ops.activations import *  # noqa: F401,F403  (the declared activations)
from funcnet.ops.norms import *  # noqa: F401,F403  (standardize, layer_norm, rms_norm)

__all__ = list(_activations.__all__) + list(_norms.__all__)
