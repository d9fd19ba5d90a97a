"""Weight penalties over a parameter pytree (L1, L2) and the weight filter they use."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import float_input
from funcnet.ops.numerics import add_tangents, compute_dtype, widen
from funcnet.ops.binding import Op
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin

declare = declarer("losses", twins=twin, upstream=optax.losses)


# --------------------------------------------------------------------- penalties
def default_is_weight(path: tuple, leaf: Any) -> bool:
    """The default weight test of the penalties: a floating leaf with ndim ≥ 2.

    Dense kernels ``w`` of shape ``(n_in, n_out)`` are weights; biases ``b``
    (1-D), PReLU slopes and other scalars or vectors are not. Pass your own
    ``is_weight(path, leaf) -> bool`` to change the rule (``path`` is the leaf's
    key path as given by ``jax.tree_util.tree_flatten_with_path``).
    """
    leaf = jnp.asarray(leaf)
    return leaf.ndim >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating)


def weight_leaves(params, is_weight: Callable | None = None) -> list:
    """The leaves of ``params`` that the penalties act on, in tree order."""
    is_weight = default_is_weight if is_weight is None else is_weight
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [leaf for path, leaf in flat if is_weight(path, leaf)]


def _penalty_rule(name: str, elementwise: Callable, derivative: Callable) -> Op:
    """``Σ_leaves Σ elementwise(w)`` over the leaves passed as separate arguments, in at least float32."""

    def value(*leaves):
        dtype = jnp.result_type(*leaves)
        total = jnp.zeros((), compute_dtype(dtype))
        for w in leaves:
            total = total + jnp.sum(elementwise(widen(w)))
        return total.astype(dtype)

    def vjp(leaves, g):
        gw = widen(g)
        return tuple((gw * derivative(widen(w))).astype(w.dtype) for w in leaves)

    def jvp(leaves, *tangents):
        out = None
        for w, t in zip(leaves, tangents):
            if t is not None:
                out = add_tangents(out, jnp.sum(derivative(widen(w)) * widen(t)))
        return None if out is None else out.astype(jnp.result_type(*leaves))

    return Op(name, value=value, save=lambda *leaves: (value(*leaves), leaves), vjp=vjp, jvp=jvp)


_L1 = _penalty_rule("l1_penalty", jnp.abs, jnp.sign)
_L2 = _penalty_rule("l2_penalty", jnp.square, lambda w: 2 * w)


def _penalty(rule: Op, params, is_weight):
    leaves = [float_input(f"funcnet.losses.{rule.name}", "params", w) for w in weight_leaves(params, is_weight)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return rule(*leaves)


_params_extreme = lambda: ({"w": np.array([[1e4, -1e4], [0.5, -0.5]]), "b": np.array([1e4, 1.0])},)  # noqa: E731


@declare(forms=_L1, saves="the weight leaves", diff_argnums=(0,),
         kink="sign(0) = 0: a weight at exactly 0 gets gradient 0",
         checks=Checks(sample=S.params, cases=S.LAYOUTS, extreme=_params_extreme,
                       kinks=(Kink("weights at 0", (np.array([[0.0, -0.5], [2.0, 0.0]]),), np.array([[0.0, -1.0], [1.0, 0.0]])),)))
def l1_penalty(params, is_weight=None):
    """L1 penalty ``Σ |W_ij|`` over the weight leaves of a parameter pytree.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded, as in weight decay. Returns a scalar (float32 zero
    when there is no weight leaf). Optax has no namesake.

    Derivative: sign(W), with the convention sign(0) = 0 at the kink; the
    forward rule is ``Σ sign(W) ⊙ Ẇ``.
    """
    return _penalty(_L1, params, is_weight)


@declare(forms=_L2, saves="the weight leaves", diff_argnums=(0,),
         checks=Checks(sample=S.params, cases=S.LAYOUTS, extreme=_params_extreme))
def l2_penalty(params, is_weight=None):
    """L2 penalty ``Σ W_ij²`` (squared Frobenius norms) over the weight leaves.

    Weights are the floating leaves with ndim ≥ 2 (see :func:`default_is_weight`);
    biases are excluded. Returns a scalar; note there is no ½ factor.

    Derivative: 2W; the forward rule is ``Σ 2W ⊙ Ẇ``.
    """
    return _penalty(_L2, params, is_weight)


__all__ = names("losses", __name__) + ["default_is_weight", "weight_leaves"]
