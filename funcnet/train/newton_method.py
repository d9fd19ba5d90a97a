"""Damped (saddle-free) Newton steps for small networks, with the Hessian through the manual rules."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from funcnet.second_order import hessian_matrix

__all__ = ["newton", "newton_step"]


def newton_step(loss: Callable, params, damping: float = 1e-4):
    """One damped Newton step ``θ ← θ - (|H| + μI)⁻¹ ∇J`` through the manual rules.

    The Hessian comes from :func:`funcnet.hessian_matrix` (reverse-over-reverse). Its
    eigenvalues are replaced by their absolute values plus ``damping`` (a
    saddle-free Newton step): on a convex loss near its optimum this is plain
    Newton; on a non-convex one it still moves downhill instead of towards a
    saddle or maximum.
    """
    flat, unravel = ravel_pytree(params)
    g, _ = ravel_pytree(jax.grad(loss)(params))
    h = hessian_matrix(loss)(params)
    eigvals, eigvecs = jnp.linalg.eigh((h + h.T) / 2)
    step = eigvecs @ ((eigvecs.T @ g) / (jnp.abs(eigvals) + damping))
    return unravel(flat - step)


def newton(loss: Callable, params, *, steps: int = 10, damping: float = 1e-4, tol: float = 0.0):
    """Run up to ``steps`` damped Newton steps; returns ``(params, losses)`` (losses[0] is the start).

    Stops early once the loss improves by less than ``tol``. For small networks
    only: the Hessian has (number of parameters)² entries.
    """
    step = jax.jit(lambda p: newton_step(loss, p, damping))
    value = jax.jit(loss)
    losses = [float(value(params))]
    for _ in range(steps):
        params = step(params)
        losses.append(float(value(params)))
        if losses[-2] - losses[-1] < tol:
            break
    return params, losses
