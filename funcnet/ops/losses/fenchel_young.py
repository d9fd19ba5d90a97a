"""Fenchel–Young losses built from a regularised max function: :func:`make_fenchel_young_loss`.

Not a registry op: each ``max_fun`` gives its own :class:`~funcnet.ops.binding.Op` (cached per
``max_fun``), and each loss made carries a :class:`~funcnet.ops.declaration.Declaration` of its own (not
in ``DECLARED``), which :func:`funcnet.check_op` checks with the battery the declared ops get.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnet.ops.binding import Op
from funcnet.ops.declaration import Checks, Declaration
from funcnet.ops.inputs import broadcast_args, promote_floats
from funcnet.ops.numerics import widen


def _last_axis(max_fun: Callable, kwargs: dict) -> Callable:
    """``max_fun`` over the last axis (Optax's ``jnp.vectorize``), the keyword arguments passed to it."""
    return jnp.vectorize(functools.partial(max_fun, **kwargs), signature="(n)->()")


def _op(max_fun: Callable, grad_fun: Callable | None) -> tuple[Op, Callable]:
    """The op of ``max_fun`` and its autodiff twin ``max_fun(s) - ⟨s, t⟩``."""
    name = re.sub(r"\W", "_", f"fenchel_young_loss_{getattr(max_fun, '__name__', 'max_fun')}")
    if not name.isidentifier():
        name = "fenchel_young_loss"

    def max_and_argmax(s, kwargs):
        """``(max_fun(s), ŷ = ∇max_fun(s))`` per list (``grad_fun`` if given, else JAX's gradient of max_fun)."""
        f = _last_axis(max_fun, kwargs)
        if grad_fun is not None:
            return f(s), jnp.vectorize(functools.partial(grad_fun, **kwargs), signature="(n)->(n)")(s)
        m, pullback = jax.vjp(f, s)
        return m, pullback(jnp.ones_like(m))[0]

    def value(scores, targets, **kwargs):
        s = widen(scores)
        return (_last_axis(max_fun, kwargs)(s) - jnp.sum(widen(targets) * s, axis=-1)).astype(scores.dtype)

    def save(scores, targets, **kwargs):
        s, t = widen(scores), widen(targets)
        m, y_hat = max_and_argmax(s, kwargs)
        return (m - jnp.sum(t * s, axis=-1)).astype(scores.dtype), (y_hat - t, scores)

    def vjp(res, g, **kwargs):
        residual, scores = res
        gw = widen(g)[..., None]
        return (gw * residual).astype(scores.dtype), (-gw * widen(scores)).astype(scores.dtype)

    def jvp(res, ts, tt, **kwargs):
        residual, scores = res
        out = None if ts is None else jnp.sum(residual * widen(ts), axis=-1)
        if tt is not None:
            term = -jnp.sum(widen(scores) * widen(tt), axis=-1)
            out = term if out is None else out + term
        return None if out is None else out.astype(scores.dtype)

    def twin(scores, targets, **kwargs):
        return _last_axis(max_fun, kwargs)(scores) - jnp.sum(targets * scores, axis=-1)

    return Op(name, value=value, save=save, vjp=vjp, jvp=jvp), twin


def _scores_and_targets(rng, case):
    """Scores and targets on the simplex (the rows of the targets sum to 1)."""
    a, b = case
    t = rng.uniform(0.1, 1.0, b)
    return rng.standard_normal(a), t / t.sum(-1, keepdims=True)


@functools.lru_cache(maxsize=64)
def _cached_op(max_fun: Callable, grad_fun: Callable | None) -> tuple[Op, Callable]:
    return _op(max_fun, grad_fun)


def make_fenchel_young_loss(max_fun: Callable, *, grad_fun: Callable | None = None) -> Callable:
    """The Fenchel–Young loss of a regularised max function, as ``optax.losses.make_fenchel_young_loss``.

    ``loss(scores, targets, **kwargs) = max_fun(scores, **kwargs) - ⟨scores, targets⟩``
    along the last axis (leading axes are a batch; scores and targets broadcast
    against each other). ``max_fun`` maps one vector of scores to a number: the
    regularised max Ω*(θ) = max_{y ∈ dom Ω} ⟨θ, y⟩ - Ω(y), e.g.
    ``jax.scipy.special.logsumexp`` (giving the softmax cross-entropy) or the
    sparsemax one ``⟨θ, p⟩ - ½‖p‖²`` with p the projection of θ on the simplex.

    Derivative (the Fenchel–Young identity): d/dscores = ŷ - targets with
    ŷ = ∇max_fun(scores) the regularised prediction, d/dtargets = -scores; the
    forward rule is ``⟨ŷ - targets, ṡ⟩ - ⟨scores, ṫ⟩``. ŷ is JAX's gradient of
    ``max_fun``, or ``grad_fun(scores, **kwargs)`` where given (a closed form,
    such as ``jax.nn.softmax`` for logsumexp: then ``max_fun`` is never
    differentiated).

    Saves ŷ - targets and the scores (two arrays the size of the scores),
    computed once in the forward pass.

    Each ``(max_fun, grad_fun)`` pair builds one op (cached); the returned
    loss's ``declaration`` is what :func:`funcnet.check_op` checks, so
    ``funcnet.check_op(make_fenchel_young_loss(f))`` runs the battery the
    declared ops get (both rules against autodiff of
    ``max_fun(s) - ⟨s, t⟩`` and finite differences, the adjoint identity,
    second order).

    Differs from Optax: keyword arguments reach ``max_fun`` (Optax's
    ``jnp.vectorize`` drops them) and must be hashable (they are static);
    ``grad_fun`` is funcnet's; extra positional arguments are refused, with a
    TypeError as Optax's; integer inputs are promoted to float; half-precision
    inputs are computed in float32.
    """
    if not callable(max_fun):
        raise TypeError(f"funcnet.losses.make_fenchel_young_loss: `max_fun` must be callable, got {max_fun!r:.60}")
    if grad_fun is not None and not callable(grad_fun):
        raise TypeError(f"funcnet.losses.make_fenchel_young_loss: `grad_fun` must be callable, got {grad_fun!r:.60}")
    try:
        op, twin = _cached_op(max_fun, grad_fun)
    except TypeError:  # an unhashable max_fun: an op of its own
        op, twin = _op(max_fun, grad_fun)
    where = f"the Fenchel-Young loss of make_fenchel_young_loss({getattr(max_fun, '__name__', 'max_fun')})"

    def fenchel_young_loss(scores, targets, *args, **kwargs: Any):
        if args:
            raise TypeError(f"{where}: takes (scores, targets) and keyword arguments for max_fun, got "
                            f"{len(args)} extra positional argument(s); pass them by keyword")
        try:
            hash(tuple(kwargs.items()))
        except TypeError:
            raise TypeError(f"{where}: the keyword arguments for max_fun must be hashable (numbers, strings): "
                            f"they are static parameters of the op; got {sorted(kwargs)}") from None
        scores, targets = promote_floats(where, scores=scores, targets=targets)
        scores, targets = broadcast_args(where, scores=scores, targets=targets)
        if scores.ndim == 0:
            raise ValueError(f"{where}: `scores` must have a last axis to take the max over, got a scalar")
        return op(scores, targets, **kwargs)

    fenchel_young_loss.__doc__ = (f"max_fun(scores, **kwargs) - ⟨scores, targets⟩ along the last axis, for max_fun = "
                                  f"{getattr(max_fun, '__name__', max_fun)!s} (see make_fenchel_young_loss).")
    fenchel_young_loss.__name__ = op.name
    fenchel_young_loss.op = op
    fenchel_young_loss.declaration = Declaration(
        fn=fenchel_young_loss, family="losses", twin=twin, forms=(op,), diff_argnums=(0, 1),
        saves="ŷ - targets and the scores (two arrays the size of the scores)",
        checks=Checks(sample=_scores_and_targets, cases=(((5,), (5,)), ((3, 4), (3, 4)))))
    return fenchel_young_loss


__all__ = ["make_fenchel_young_loss"]
