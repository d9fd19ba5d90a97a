"""Each named loss's Hessian with respect to the model's outputs, a square root of it, and its sampler.

The generalized Gauss–Newton (GGN) of ``L(θ) = (1/B) Σᵢ ℓᵢ`` is
``G = (1/B) Σᵢ Jᵢᵀ Hᵢ Jᵢ``, with ``Jᵢ = ∂f(θ, xᵢ)/∂θ`` and ``Hᵢ = ∂²ℓᵢ/∂fᵢ²`` the
loss's Hessian with respect to example ``i``'s outputs. Each loss of
:data:`funcnet.train.LOSSES` knows its ``H`` in closed form:

| loss (per example; ``f`` the ``C`` outputs) | ``H`` | square root ``S`` (``S Sᵀ = H``) | sampled targets (``E[∇ℓ(ŷ) ∇ℓ(ŷ)ᵀ] = H``) |
| --- | --- | --- | --- |
| ``softmax_cross_entropy_with_integer_labels`` | ``diag(p) − p pᵀ`` | ``diag(√p) − p √pᵀ`` | labels ``ŷ ~ Categorical(p)`` |
| ``squared_error``: ``(1/C) Σₖ (fₖ − yₖ)²`` | ``(2/C) I`` | ``√(2/C) I`` | ``ŷ ~ N(f, (C/2) I)`` |
| ``l2_loss``: ``(1/C) Σₖ ½(fₖ − yₖ)²`` | ``(1/C) I`` | ``√(1/C) I`` | ``ŷ ~ N(f, C I)`` |
| ``multiclass_svm`` | ``0`` (almost everywhere) | no columns | none (no likelihood) |

(``p = softmax(f)``.) The per-example loss ``ℓᵢ`` is the mean of the loss's
values over example ``i``'s entries, so that ``(1/B) Σᵢ ℓᵢ`` is exactly the data
term :func:`funcnet.train.make_objective` minimises: the regression losses are
elementwise and the objective averages them over the batch *and* the ``C``
outputs (for one output, as in the bundled ``sine`` set, ``ℓᵢ`` is the loss
itself). Column ``k`` of the cross-entropy's root is ``√pₖ (eₖ − p)``, the
negated gradient at label ``k`` scaled by ``√pₖ``, so the root needs ``C``
columns and never a matrix factorisation.

The sampled targets are those of the Fisher: each loss above is, up to a
constant and the scale of ``ℓ``, a negative log-likelihood (a categorical, a
Gaussian), and the gradient ``∇_f ℓ(f, ŷ)`` at a target ``ŷ`` drawn from that
likelihood has second moment ``H`` (the Gaussians' variances are chosen so,
given the ``1/C`` and ``½`` of the losses). The multiclass SVM's Hessian is zero
wherever it is defined (the loss is piecewise linear in ``f``; at the kinks it
has none), so its GGN is zero and it has no sampler: :func:`sample_targets`
refuses it.

All three functions take outputs of shape ``(B, C)`` (one output vector per
example, as :func:`funcnet.layers.mlp` gives) and are values only (nothing is
differentiated through them).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnet.curvature.first_order import per_example_losses
from funcnet.train.steps import Loss, canonical_loss, loss_function

__all__ = ["CURVATURE_LOSSES", "loss_hessian", "loss_hessian_sqrt", "sample_targets", "sampled_gradients"]

CE, SE, L2, SVM = "softmax_cross_entropy_with_integer_labels", "squared_error", "l2_loss", "multiclass_svm"
#: The losses whose output Hessian, square root and sampler this module knows: every name of ``train.LOSSES``.
CURVATURE_LOSSES = (CE, SE, L2, SVM)
#: Losses whose output Hessian is zero (almost everywhere): no square-root columns and no sampler.
ZERO_HESSIAN = (SVM,)


def loss_name(fn: str, loss: str | Loss) -> str:
    """The loss's name in :data:`CURVATURE_LOSSES` (a deprecated name replaced), or an error naming them."""
    loss = canonical_loss(loss, stacklevel=3)
    if isinstance(loss, str) and loss in CURVATURE_LOSSES:
        return loss
    what = f"the callable {getattr(loss, '__name__', type(loss).__name__)}" if callable(loss) else repr(loss)
    raise ValueError(f"{fn}: the loss must be one of {', '.join(CURVATURE_LOSSES)} (whose output Hessians are "
                     f"known in closed form), got {what}")


def check_outputs(fn: str, outputs, targets=None) -> None:
    """``outputs`` is ``(B, C)`` and ``targets`` (if given) has one row per example, or an error naming ``fn``."""
    if jnp.ndim(outputs) != 2:
        raise ValueError(f"{fn}: the model's outputs must have shape (batch, outputs), one vector per example, "
                         f"got shape {tuple(jnp.shape(outputs))}")
    if targets is not None and jnp.shape(targets)[:1] != jnp.shape(outputs)[:1]:
        raise ValueError(f"{fn}: the outputs have {jnp.shape(outputs)[0]} rows but the targets have shape "
                         f"{tuple(jnp.shape(targets))}; give one target (or label) per example")


def per_example_loss(loss: str, model=None, fn: str = "curvature") -> Callable:
    """``ℓ(outputs, targets) -> (B,)``: the loss of each example, the mean over its entries (see the module)."""
    values = loss_function(loss, model)
    return lambda outputs, targets: per_example_losses(values, outputs, targets, fn)


def _softmax(outputs):
    return jax.nn.softmax(jax.lax.stop_gradient(outputs).astype(jnp.promote_types(outputs.dtype, jnp.float32)),
                          axis=-1).astype(outputs.dtype)


def loss_hessian(loss: str | Loss, outputs, targets) -> Any:
    """``(B, C, C)``: each example's ``Hᵢ = ∂²ℓᵢ/∂fᵢ²`` (the table in the module docstring).

    Args:
      loss: a name of :data:`funcnet.train.LOSSES`.
      outputs: the model's outputs ``f``, ``(B, C)``.
      targets: the labels ``(B,)`` or regression targets ``(B, C)`` (the Hessians above do not depend on them).
    """
    fn = "loss_hessian"
    name = loss_name(fn, loss)
    check_outputs(fn, outputs, targets)
    b, c = outputs.shape
    if name == CE:
        p = _softmax(outputs)
        return jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
    scale = {SE: 2.0 / c, L2: 1.0 / c, SVM: 0.0}[name]
    return jnp.broadcast_to(scale * jnp.eye(c, dtype=outputs.dtype), (b, c, c))


def loss_hessian_sqrt(loss: str | Loss, outputs, targets) -> Any:
    """``(B, C, K)``: a square root ``Sᵢ`` of each ``Hᵢ`` (``Sᵢ Sᵢᵀ = Hᵢ``), ``K = C`` columns (``0`` for the SVM).

    The cross-entropy's ``S = diag(√p) − p √pᵀ`` (column ``k``: ``√pₖ (eₖ − p)``):
    ``S Sᵀ = diag(p) − 2 p pᵀ + (Σₖ pₖ) p pᵀ = diag(p) − p pᵀ``. The regression
    losses' roots are multiples of the identity. Backpropagating the ``K``
    columns gives the exact GGN diagonal (:func:`funcnet.curvature.ggn_diagonal`).
    """
    fn = "loss_hessian_sqrt"
    name = loss_name(fn, loss)
    check_outputs(fn, outputs, targets)
    b, c = outputs.shape
    if name == CE:
        p = _softmax(outputs)
        q = jnp.sqrt(p)
        return jax.vmap(jnp.diag)(q) - p[:, :, None] * q[:, None, :]
    if name == SVM:
        return jnp.zeros((b, c, 0), outputs.dtype)
    scale = {SE: 2.0 / c, L2: 1.0 / c}[name]
    return jnp.broadcast_to(jnp.sqrt(jnp.asarray(scale, outputs.dtype)) * jnp.eye(c, dtype=outputs.dtype), (b, c, c))


def sample_targets(loss: str | Loss, key, outputs) -> Any:
    """Targets drawn from the model's predictive distribution at ``outputs`` ``(B, C)`` (the Fisher's labels).

    Cross-entropy: integer labels ``(B,)`` from ``Categorical(softmax(f))``;
    ``squared_error``/``l2_loss``: ``f + σ ε`` with ``ε ~ N(0, I)`` and ``σ² = C/2`` or
    ``C`` (so that the sampled gradient's second moment is the Hessian; see the
    module docstring). The multiclass SVM has no likelihood: a ValueError.
    """
    fn = "sample_targets"
    name = loss_name(fn, loss)
    check_outputs(fn, outputs)
    f = jax.lax.stop_gradient(outputs)
    if name == CE:
        return jax.random.categorical(key, f.astype(jnp.promote_types(f.dtype, jnp.float32)), axis=-1)
    if name == SVM:
        raise ValueError(f"{fn}: the multiclass SVM loss is no negative log-likelihood, so there are no labels to "
                         "sample; its output Hessian is zero almost everywhere (its GGN and Fisher are zero)")
    c = f.shape[-1]
    variance = {SE: c / 2.0, L2: float(c)}[name]
    return f + jnp.sqrt(jnp.asarray(variance, f.dtype)) * jax.random.normal(key, f.shape, f.dtype)


def sampled_gradients(loss: str | Loss, key, outputs, *, samples: int = 1, model=None) -> Any:
    """``(samples, B, C)``: ``∇_fᵢ ℓᵢ(f, ŷ)`` at targets ``ŷ`` from :func:`sample_targets`, one set per sample.

    Sample ``s`` draws with ``jax.random.split(key, samples)[s]``; the
    gradient goes through the loss's own reverse rule (the model's ``ops``).
    ``E[gᵢ gᵢᵀ] = Hᵢ`` for each example: backpropagated, these give the
    Monte-Carlo GGN (the Fisher) and K-FAC's second factor.
    """
    name = loss_name("sampled_gradients", loss)
    f = jax.lax.stop_gradient(outputs)
    ell = per_example_loss(name, model)

    def one(k):
        y_hat = jax.lax.stop_gradient(sample_targets(name, k, f))
        values, vjp = jax.vjp(lambda out: ell(out, y_hat), f)
        return vjp(jnp.ones_like(values))[0]

    return jax.vmap(one)(jax.random.split(key, samples))

