"""Autodiff twins of every manual op, under the same names as the manual namespaces.

``funcnet.reference.gates``, ``funcnet.reference.nn`` and ``funcnet.reference.losses``
mirror ``funcnet.gates``, ``funcnet.nn`` and ``funcnet.losses``: the same forward,
written in plain ``jax.numpy`` and differentiated by JAX, so every hand-written
rule can be compared against autodiff, and so forward mode (``jax.jvp``,
``jax.jacfwd``) is available when you need it.
"""

from funcnet.reference import gates, losses, nn

__all__ = ["gates", "nn", "losses"]
