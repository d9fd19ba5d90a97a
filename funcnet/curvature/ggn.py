"""The diagonal of the generalized Gauss–Newton matrix, exact and Monte-Carlo (BackPACK's DiagGGN, DiagGGNMC).

For ``L(θ) = (1/B) Σᵢ ℓᵢ`` the GGN is ``G = (1/B) Σᵢ Jᵢᵀ Hᵢ Jᵢ`` (``Jᵢ = ∂fᵢ/∂θ``,
``Hᵢ = ∂²ℓᵢ/∂fᵢ²``, :mod:`funcnet.curvature.loss_hessians`). With a square root
``Hᵢ = Sᵢ Sᵢᵀ`` of ``K`` columns, ``G = (1/B) Σᵢ Σₖ (Jᵢᵀ sᵢₖ)(Jᵢᵀ sᵢₖ)ᵀ``: each
``Jᵢᵀ sᵢₖ`` is a per-example gradient whose output cotangent is ``sᵢₖ`` instead
of ``∇ℓᵢ``, so its diagonal is a sum of squared per-example gradients, which
one backward pass per column gives without forming them (for a Dense weight
with one position per example, ``Σₖ (a²)ᵀ(δₖ²)``: one matrix product):

- :func:`ggn_diagonal` backpropagates the ``K = C`` columns of ``S`` (one batched
  pullback, vmapped over the columns): exact, ``C`` backward passes;
- :func:`mc_ggn_diagonal` backpropagates the gradients at ``k`` sets of targets
  sampled from the model's predictive distribution, whose second moment is
  ``Hᵢ``: an unbiased estimate from ``k`` backward passes (the diagonal of the
  Fisher, which equals the GGN for these losses).

Both cost one forward pass, the backward passes above (the pullback's weight
gradients are unused and compiled away under ``jit``) and one product the
size of each weight per layer. They assume each example's outputs depend on
that example alone and outputs of shape ``(B, C)``; the multiclass SVM's GGN
is zero (its output Hessian is, almost everywhere).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.curvature import taps as _taps
from funcnet.curvature.loss_hessians import (ZERO_HESSIAN, check_outputs, loss_hessian_sqrt, loss_name,
                                             sampled_gradients)
from funcnet.layers import Layer
from funcnet.ops.inputs import static_int
from funcnet.train.steps import DEFAULT_LOSS, Loss

__all__ = ["ggn_diagonal", "mc_ggn_diagonal"]


def _tapped(fn: str, model: Layer, params, x, y, loss):
    name = loss_name(fn, loss)
    t = _taps.tap(model, params, x, fn=fn)
    check_outputs(fn, t.outputs, y)
    return name, t


def column_squares(params, t: _taps.Taps, cotangents) -> Any:
    """``Σₖ Σᵢ (∂/∂θ of column k, example i)²``, shaped like ``params``, for output cotangents ``(K, B, C)``.

    One pullback vmapped over the ``K`` columns; a weight that several layers
    share (tied) gets the square of the sum of their per-example gradients.
    """
    _, deltas = jax.vmap(t.pullback)(cotangents)
    paths = [s.path for s in t.sites]
    values: list[dict] = []
    tied: dict = {}
    for site, delta in zip(t.sites, deltas):
        if paths.count(site.path) == 1:
            values.append(_taps.column_sum_of_squares(site, delta))
            continue
        values.append({})
        for name, v in jax.vmap(lambda g, site=site: _taps.per_example(site, g))(delta).items():
            key = site.path + (name,)
            tied[key] = v if key not in tied else tied[key] + v
    for key, v in tied.items():  # the first site of each shared entry carries the whole sum
        first = next(i for i, s in enumerate(t.sites) if s.path == key[:-1])
        values[first][key[-1]] = jnp.sum(v * v, (0, 1))
    return _taps.gather(params, t.sites, values)


def ggn_diagonal(model: Layer, params, x, y, *, loss: str | Loss = DEFAULT_LOSS) -> Any:
    """The exact diagonal of the GGN ``G = (1/B) Σᵢ Jᵢᵀ Hᵢ Jᵢ`` of the mean loss, shaped like ``params``.

    Backpropagates the ``C`` columns of each example's Hessian root
    (:func:`~funcnet.curvature.loss_hessian_sqrt`) in one pullback vmapped over
    them, and sums the squared per-example contributions:
    ``diag G = (1/B) Σₖ Σᵢ (Jᵢᵀ sᵢₖ)²``. Cost: ``C`` backward passes (memory
    ``C`` times one backward pass's cotangents). ``loss`` is a name of
    :data:`funcnet.train.LOSSES`.
    """
    fn = "ggn_diagonal"
    name, t = _tapped(fn, model, params, x, y, loss)
    if name in ZERO_HESSIAN:
        return jax.tree.map(jnp.zeros_like, params)
    roots = loss_hessian_sqrt(name, t.outputs, y)
    total = column_squares(params, t, jnp.moveaxis(roots, -1, 0))
    return jax.tree.map(lambda v: v / x.shape[0], total)


def mc_ggn_diagonal(model: Layer, params, x, y, key, *, loss: str | Loss = DEFAULT_LOSS, samples: int = 1) -> Any:
    """A Monte-Carlo estimate of the GGN's diagonal from ``samples`` sets of sampled targets (BackPACK's DiagGGNMC).

    ``(1/(B k)) Σₛ Σᵢ (Jᵢᵀ gᵢₛ)²`` with ``gᵢₛ = ∇_fᵢ ℓᵢ(f, ŷₛ)`` at targets drawn from
    the model's predictive distribution (:func:`~funcnet.curvature.sample_targets`;
    sample ``s`` uses ``jax.random.split(key, samples)[s]``). Unbiased, since
    ``E[gᵢ gᵢᵀ] = Hᵢ``; its error falls like ``1/√samples``. Cost: ``samples``
    backward passes. ``y`` is not used but for its shape (the labels are
    sampled); the multiclass SVM's estimate is zero, as its GGN.
    """
    fn = "mc_ggn_diagonal"
    samples = static_int(fn, "samples", samples, 1)
    name, t = _tapped(fn, model, params, x, y, loss)
    if name in ZERO_HESSIAN:
        return jax.tree.map(jnp.zeros_like, params)
    cotangents = sampled_gradients(name, key, t.outputs, samples=samples, model=model)
    total = column_squares(params, t, cotangents)
    return jax.tree.map(lambda v: v / (x.shape[0] * samples), total)
