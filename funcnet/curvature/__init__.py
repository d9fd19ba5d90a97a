"""More out of one backward pass: per-example quantities and curvature, from the hand-written rules.

Every function here takes a model (a :class:`funcnet.layers.Layer`), its
parameters and a batch ``(x, y)``, and works under ``jit``. The objective is the
mean data loss over the batch, ``L(θ) = (1/B) Σᵢ ℓ(f(θ, xᵢ), yᵢ)`` (no penalty);
per-example quantities are those of ``ℓᵢ`` (as ``vmap(grad(ℓᵢ))`` gives them),
matrices (Hessian, generalized Gauss–Newton, Fisher) those of ``L``.
"""
