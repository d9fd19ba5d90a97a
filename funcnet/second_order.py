"""Second derivatives through the manual rules, by reverse-over-reverse.

``jax.hessian`` (forward-over-reverse) works on funcnet's ops as well, since
every op has a hand-written forward rule; the functions here take the other
route, a second reverse pass, which differentiates the reverse rules themselves
(plain ``jnp`` code). That route also works where the ops are built in their
plain ``jax.custom_vjp`` form (:func:`funcnet.custom_vjp_form`), which
has no forward mode, for parameters of any pytree shape.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["hessian", "hessian_matrix", "hvp"]


def hessian(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """Hessian of a scalar ``fun`` by reverse-over-reverse: ``jax.jacrev(jax.jacrev(fun))``.

    Same arguments and output structure as ``jax.hessian``: for a parameter
    pytree ``p`` the result is a nested pytree, ``H[a][b]`` holding
    ∂²f/∂p_a∂p_b with shape ``a.shape + b.shape``. See :func:`hessian_matrix`
    for the flattened matrix.
    """
    return jax.jacrev(jax.jacrev(fun, argnums, has_aux=has_aux), argnums, has_aux=has_aux)


def hessian_matrix(fun: Callable) -> Callable:
    """``params -> H``: the Hessian of ``fun(params)`` as an ``(n, n)`` matrix over ``ravel_pytree(params)``.

    The ordering of rows and columns is that of ``jax.flatten_util.ravel_pytree``.
    """

    def matrix(params):
        flat, unravel = ravel_pytree(params)
        return hessian(lambda v: fun(unravel(v)))(flat)

    return matrix


def hvp(fun: Callable, params: Any, vector: Any) -> Any:
    """Hessian-vector product ``H v`` of a scalar ``fun`` at ``params``, without forming ``H``.

    Reverse-over-reverse: the gradient of ``⟨∇f(params), v⟩``. ``vector`` has the
    structure of ``params``, and so has the result. Costs about two gradient
    evaluations.
    """

    def directional(p):
        g = jax.grad(fun)(p)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(vector)))

    return jax.grad(directional)(params)
