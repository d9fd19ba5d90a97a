"""Second derivatives through the manual rules, by reverse-over-reverse."""

from __future__ import annotations

from typing import Callable, Sequence

import jax


def hessian(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """Hessian of ``fun`` by reverse-over-reverse: ``jax.jacrev(jax.jacrev(fun))``.

    ``jax.hessian`` is forward-over-reverse; forward mode through a
    ``jax.custom_vjp`` is not allowed by JAX, so funcnet computes second
    derivatives by differentiating the hand-written backward rules (plain
    ``jnp`` code) in reverse mode a second time. Same arguments and output
    structure as ``jax.hessian``.
    """
    return jax.jacrev(jax.jacrev(fun, argnums, has_aux=has_aux), argnums, has_aux=has_aux)
