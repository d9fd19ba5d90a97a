"""Divergences between distributions: Kullback-Leibler (probability or log targets) and generalized KL."""

from __future__ import annotations

import warnings
from typing import Callable

import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops.inputs import broadcast_with_mask, canonical_axis, float_input, promote_floats
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.binding import Op
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import mask_optional, pair_of_shapes

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ------------------------------------------------------------------ KL divergences
def _reduced_rules(name: str, parts: Callable) -> tuple[Op, Op]:
    """Rules for ``Σ_axes term(a, b)`` over an optional mask, from ``parts(a, b) -> (term, d/da, d/db)``."""

    def save(a, b, where, axes):
        term = parts(widen(a), widen(b))[0]
        if where is not None:
            term = jnp.where(where, term, 0.0)
        return jnp.sum(term, axis=axes).astype(a.dtype), (a, b, where)

    def vjp(res, g, axes):
        a, b, where = res
        _, da, db = parts(widen(a), widen(b))
        gw = jnp.expand_dims(widen(g), axes)
        ga, gb = gw * da, gw * db
        if where is not None:
            ga, gb = jnp.where(where, ga, 0.0), jnp.where(where, gb, 0.0)
        return ga.astype(a.dtype), gb.astype(b.dtype), None

    def jvp(res, ta, tb, _, axes):
        a, b, where = res
        _, da, db = parts(widen(a), widen(b))
        dot = add_tangents(None if ta is None else widen(ta) * da, None if tb is None else widen(tb) * db)
        if dot is None:
            return None
        if where is not None:
            dot = jnp.where(where, dot, 0.0)
        return jnp.sum(dot, axis=axes).astype(a.dtype)

    return mask_optional(name, save, vjp, jvp)


def _kl_parts(log_predictions, targets):
    """t(log t - log q): 0 where t = 0, with gradient 0 in t there (its true slope is -∞)."""
    zero = targets == 0
    log_t = jnp.log(jnp.where(zero, 1.0, targets))
    term = jnp.where(zero, 0.0, targets * (log_t - log_predictions))
    return term, -targets, jnp.where(zero, 0.0, log_t + 1 - log_predictions)


def _kl_log_parts(log_predictions, log_targets):
    """e^{log t}(log t - log q): 0 where log t = -∞, with gradient 0 there."""
    none = log_targets == -jnp.inf
    t = jnp.exp(log_targets)
    gap = jnp.where(none, 0.0, log_targets - log_predictions)
    return t * gap, -t, t * (gap + 1)


def _generalized_kl_parts(log_predictions, targets):
    term, d_lp, d_t = _kl_parts(log_predictions, targets)
    q = jnp.exp(log_predictions)
    return term + q - targets, d_lp + q, d_t - 1


_KL = _reduced_rules("kl_divergence", _kl_parts)
_KL_LOG = _reduced_rules("kl_divergence_with_log_targets", _kl_log_parts)
_GENERALIZED_KL = _reduced_rules("generalized_kl_divergence", _generalized_kl_parts)


def _divergence(op: str, rules: tuple[Op, Op], log_predictions, targets, axis, where, names_=("targets",)):
    log_predictions = float_input(op, "log_predictions", log_predictions)
    targets = float_input(op, names_[0], targets)
    log_predictions, targets = promote_floats(op, log_predictions=log_predictions, targets=targets)
    args, full = broadcast_with_mask(op, where, log_predictions=log_predictions, targets=targets)
    axes = canonical_axis(op, axis, len(full))
    return (rules[1] if where is not None else rules[0])(*args, axes=axes)


def _log_distributions(rng, case):
    """Log-predictions and targets: two distributions along the last axis (the first as logs)."""
    a, b = pair_of_shapes(case)
    q, t = rng.uniform(0.1, 1.0, a), rng.uniform(0.1, 1.0, b)
    return np.log(q / q.sum(-1, keepdims=True)), t / t.sum(-1, keepdims=True)


def _log_log_distributions(rng, case):
    log_q, t = _log_distributions(rng, case)
    return log_q, np.log(t)


_kl_cases = ((5,), (4, 3), ((4, 3), (3,)))
_kl_extreme = lambda: (np.array([[-1e4, -1e-8, -50.0], [-3.0, -1e4, -1e-8]]),  # noqa: E731
                       np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
_kl_differs = ("integer inputs are promoted to float (optax raises); a zero target adds 0 and has gradient 0 "
               "even where log_predictions is -inf (optax: NaN)")


@declare(forms=_KL, saves="both inputs (and the mask if given)", diff_argnums=(0, 1), differs=_kl_differs,
         kink="t = 0: the term is 0 (0·log 0 = 0) and its gradient in t is taken as 0 (the one-sided slope is -∞); "
              "its gradient in log_predictions is -t = 0",
         checks=Checks(sample=_log_distributions, cases=_kl_cases, extreme=_kl_extreme,
                       kinks=(Kink("t = 0 at one class", (np.array([-1.0, -0.5, -2.0]), np.array([0.0, 0.5, 0.5])), np.array([0.0, -0.5, -0.5])),)))
def kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Kullback–Leibler divergence ``Σ_i t_i (log t_i - log q_i)``, as ``optax.losses.kl_divergence``.

    ``log_predictions`` are log-probabilities log q (e.g. a log-softmax) and
    ``targets`` probabilities t; they broadcast against each other. ``axis``
    (int, tuple or None) and ``where`` (a boolean mask broadcasting against the
    inputs) select what is summed, as in Optax. A zero target adds 0 (0·log 0 =
    0), also where log q = -∞, where Optax gives NaN.

    Derivative: d/d(log q) = -t, d/dt = log t + 1 - log q (0 where t = 0).
    """
    return _divergence("funcnet.losses.kl_divergence", _KL, log_predictions, targets, axis, where)


@declare(forms=_KL_LOG, saves="both inputs (and the mask if given)", diff_argnums=(0, 1),
         differs="integer inputs are promoted to float (optax raises); a target of log 0 = -inf adds 0 with "
                 "gradient 0 (optax: NaN)", checks=Checks(sample=_log_log_distributions, cases=_kl_cases,
                       extreme=lambda: (np.array([[-1e4, -1e-8, -50.0]]), np.array([[-1e4, -1e-8, -60.0]]))))
def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None):
    """KL divergence with both arguments as logs: ``Σ_i e^{log t_i}(log t_i - log q_i)``, as Optax's.

    A target of log 0 = -∞ adds 0 (Optax: NaN from 0·∞). ``axis`` and
    ``where`` as in :func:`kl_divergence`.

    Derivative: d/d(log q) = -t, d/d(log t) = t(log t - log q + 1), with t = e^{log t}.
    """
    return _divergence("funcnet.losses.kl_divergence_with_log_targets", _KL_LOG, log_predictions, log_targets,
                       axis, where, names_=("log_targets",))


@declare(forms=_GENERALIZED_KL, saves="both inputs (and the mask if given)", diff_argnums=(0, 1),
         differs=_kl_differs + "; convex_kl_divergence is the same function, with optax's deprecation warning",
         kink="t = 0: as kl_divergence (the KL term's gradient in t is taken as 0, so the total is -1)",
         checks=Checks(sample=_log_distributions, cases=_kl_cases, extreme=_kl_extreme,
                       kinks=(Kink("t = 0 at one class (q = 1)", (np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.5])), np.array([1.0, 0.5, 0.5])),)))
def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Generalized KL divergence ``Σ_i [t_i (log t_i - log q_i) + q_i - t_i]``, as Optax's.

    For unnormalised non-negative measures; it equals :func:`kl_divergence`
    when both sum to 1. ``convex_kl_divergence`` is the same function under
    Optax's deprecated name (it warns, as Optax's does). ``axis`` and ``where``
    as in :func:`kl_divergence`.

    Derivative: d/d(log q) = q - t, d/dt = log t - log q (-1 where t = 0).
    """
    return _divergence("funcnet.losses.generalized_kl_divergence", _GENERALIZED_KL, log_predictions, targets,
                       axis, where)


def convex_kl_divergence(log_predictions, targets, axis=-1, where=None):
    """Deprecated name of :func:`generalized_kl_divergence` (warns, as Optax's does)."""
    warnings.warn("The function convex_kl_divergence is deprecated. Please use generalized_kl_divergence instead.",
                  DeprecationWarning, stacklevel=2)
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)


__all__ = names("losses", __name__) + ["convex_kl_divergence"]
