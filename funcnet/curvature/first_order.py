"""First-order quantities beyond the mean gradient, from one backward pass (BackPACK's first-order extensions).

With ``ℓᵢ`` the loss of example ``i`` and ``gᵢ = ∇_θ ℓᵢ`` its gradient:

- :func:`per_example_gradients`: every ``gᵢ`` (``B`` copies of the parameters);
- :func:`per_example_gradient_norms`: ``‖gᵢ‖₂``, without forming ``gᵢ`` for a Dense
  weight (the ghost-norm identity ``‖aᵢ δᵢᵀ‖² = ‖aᵢ‖² ‖δᵢ‖²``);
- :func:`gradient_moments`: the mean gradient ``ḡ = (1/B) Σᵢ gᵢ``, the sum of
  squares ``Σᵢ gᵢ²`` (``(a²)ᵀ(δ²)`` for a Dense weight: one matrix product) and
  the variance ``(1/B) Σᵢ gᵢ² − ḡ²``, elementwise;
- :func:`clipped_gradient`: ``(1/B) Σᵢ min(1, C/‖gᵢ‖) gᵢ`` (DP-SGD's clipped
  sum), the norms and the weighted sum both from the same pass.

Each costs one forward and one backward pass of the model plus contractions of
each layer's input ``a`` and output cotangent ``δ`` (:mod:`funcnet.curvature.taps`).
They assume each example's loss depends on that example's outputs alone (every
loss of :data:`funcnet.train.LOSSES`; no batch statistics in the model).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.curvature import taps as _taps
from funcnet.layers import Layer
from funcnet.train.steps import DEFAULT_LOSS, Loss, canonical_loss, loss_function

__all__ = ["per_example_gradients", "per_example_gradient_norms", "gradient_moments", "Moments",
           "clipped_gradient"]


def per_example_losses(loss_fn, outputs, y, fn: str):
    """``ℓᵢ``: the loss's values averaged over every axis but the batch axis, so that their mean over the
    batch is the training objective (:func:`funcnet.train.make_objective` averages every value): a
    regression loss such as ``squared_error`` gives one value per output."""
    values = loss_fn(outputs, y)
    if values.ndim < 1 or values.shape[0] != outputs.shape[0]:
        raise ValueError(f"{fn}: the loss must give a value per example (a leading axis of {outputs.shape[0]}), "
                         f"got shape {tuple(values.shape)}")
    return values.reshape(values.shape[0], -1).mean(axis=1)


def backward(model: Layer, params, x, y, loss: str | Loss, fn: str, parameter_gradients: bool = False):
    """``(per-example losses, Σᵢ gᵢ or None, taps, δ of each site)``: one forward and one backward pass.

    The backward pass starts from each example's own ``∂ℓᵢ/∂f(xᵢ)`` (not divided
    by ``B``), so each site's ``δ`` holds per-example cotangents.
    """
    loss_fn = loss_function(canonical_loss(loss), model)
    t = _taps.tap(model, params, x, parameter_gradients=parameter_gradients, fn=fn)
    losses, loss_vjp = jax.vjp(lambda out: per_example_losses(loss_fn, out, y, fn), t.outputs)
    (d_out,) = loss_vjp(jnp.ones_like(losses))
    grads, deltas = t.pullback(d_out)
    return losses, grads, t, deltas


def per_example_gradients(model: Layer, params, x, y, *, loss: str | Loss = DEFAULT_LOSS) -> Any:
    """``gᵢ = ∇_θ ℓ(f(θ, xᵢ), yᵢ)`` for every example: the parameters' pytree with a leading batch axis.

    Equal to ``jax.vmap(jax.grad(ℓ), (None, 0, 0))(params, x, y)``, from one
    batched backward pass: for a Dense layer ``gᵢ = Σₜ aᵢₜ δᵢₜᵀ`` (``a`` its
    input, ``δ`` its output cotangent, ``t`` the positions of example ``i``).
    Memory: ``B`` times the parameters.
    """
    _, _, t, deltas = backward(model, params, x, y, loss, "per_example_gradients")
    return _taps.gather(params, t.sites, [_taps.per_example(s, d) for s, d in zip(t.sites, deltas)])


def _norms(fn: str, t, deltas):
    """``‖gᵢ‖₂`` over all parameters: ghost norms per site, or the formed gradients of a shared (tied) entry."""
    paths = [s.path for s in t.sites]
    total = 0.0
    tied: dict = {}
    for site, delta in zip(t.sites, deltas):
        if paths.count(site.path) == 1:
            total = total + _taps.squared_norms(site, delta)
        else:  # a weight used by several layers: its gradient is the sum of theirs, so form it
            for name, value in _taps.per_example(site, delta).items():
                key = site.path + (name,)
                tied[key] = value if key not in tied else tied[key] + value
    for value in tied.values():
        total = total + jnp.sum(value.reshape(value.shape[0], -1) ** 2, -1)
    return jnp.sqrt(total)


def per_example_gradient_norms(model: Layer, params, x, y, *, loss: str | Loss = DEFAULT_LOSS):
    """``(B,)``: ``‖gᵢ‖₂``, the L2 norm of each example's gradient over all parameters.

    Ghost norms (Goodfellow 2015; Opacus' ghost clipping): a Dense weight's
    contribution is ``‖aᵢ‖² ‖δᵢ‖²`` with one position per example (``Σₜₛ (aₜ·aₛ)(δₜ·δₛ)``
    with several, or the formed gradient where that is cheaper), so the
    per-example weight gradients are never formed. Cost: one backward pass and
    ``O(B·(n_in + n_out))`` per Dense layer.
    """
    _, _, t, deltas = backward(model, params, x, y, loss, "per_example_gradient_norms")
    return _norms("per_example_gradient_norms", t, deltas)


class Moments(NamedTuple):
    """What :func:`gradient_moments` returns (pytrees shaped like the parameters, but ``loss``).

    Attributes:
      loss: the mean loss ``(1/B) Σᵢ ℓᵢ``.
      gradient: the mean gradient ``ḡ = (1/B) Σᵢ gᵢ``.
      sum_of_squares: ``Σᵢ gᵢ²`` elementwise (BackPACK's ``SumGradSquared``, here of the unscaled ``ℓᵢ``).
      variance: ``(1/B) Σᵢ gᵢ² − ḡ²`` elementwise (BackPACK's ``Variance``), clipped at 0 against rounding.
    """

    loss: Any
    gradient: Any
    sum_of_squares: Any
    variance: Any


def gradient_moments(model: Layer, params, x, y, *, loss: str | Loss = DEFAULT_LOSS) -> Moments:
    """The mean loss and gradient, the sum of squared per-example gradients and their variance, in one pass.

    For a Dense weight with one position per example ``Σᵢ gᵢ² = (a²)ᵀ (δ²)``, one
    matrix product the size of the weight gradient's, so this costs about one
    more weight-gradient product per Dense layer than ``value_and_grad``.
    """
    losses, grads, t, deltas = backward(model, params, x, y, loss, "gradient_moments", True)
    b = x.shape[0]
    mean = jax.tree.map(lambda g: g / b, grads)
    squares = _taps.gather(params, t.sites, [_taps.sum_of_squares(s, d) for s, d in zip(t.sites, deltas)])
    variance = jax.tree.map(lambda s, m: jnp.maximum(s / b - m * m, 0), squares, mean)
    return Moments(jnp.mean(losses), mean, squares, variance)


def clipped_gradient(model: Layer, params, x, y, clip_norm, *, loss: str | Loss = DEFAULT_LOSS):
    """``(ḡ_C, norms)``: ``ḡ_C = (1/B) Σᵢ min(1, C / ‖gᵢ‖) gᵢ`` and the norms ``‖gᵢ‖``, from one backward pass.

    DP-SGD's clipped mean (Abadi et al. 2016) without forming per-example
    gradients: the norms are ghost norms (:func:`per_example_gradient_norms`)
    and the weighted sum of a Dense weight is ``aᵀ diag(c) δ``, from the same
    pass's ``a`` and ``δ``. ``clip_norm`` may be traced; an example with a zero
    gradient gets weight 1.
    """
    _, _, t, deltas = backward(model, params, x, y, loss, "clipped_gradient")
    norms = _norms("clipped_gradient", t, deltas)
    c = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny)).astype(norms.dtype)
    total = _taps.gather(params, t.sites, [_taps.weighted_sum(s, d, c) for s, d in zip(t.sites, deltas)])
    return jax.tree.map(lambda g: g / x.shape[0], total), norms
