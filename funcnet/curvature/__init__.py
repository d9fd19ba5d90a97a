"""More out of one backward pass: per-example quantities and curvature, from the hand-written rules.

Every function here takes a model (a :class:`funcnet.layers.Layer`), its
parameters and a batch ``(x, y)``, and works under ``jit``. The objective is the
mean data loss over the batch, ``L(θ) = (1/B) Σᵢ ℓ(f(θ, xᵢ), yᵢ)`` (no penalty);
per-example quantities are those of ``ℓᵢ`` (as ``vmap(grad(ℓᵢ))`` gives them),
matrices (Hessian, generalized Gauss–Newton, Fisher) those of ``L``.
"""

from funcnet.curvature.monitor import CURVATURE_FIELDS as CURVATURE_FIELDS, CurvatureMonitor as CurvatureMonitor
from funcnet.curvature.products import (MATRICES as MATRICES, Lanczos as Lanczos, SpectralDensity as SpectralDensity,
                                        ggn_vp as ggn_vp, hutchinson_diagonal as hutchinson_diagonal,
                                        hutchinson_trace as hutchinson_trace, hvp as hvp, lanczos as lanczos,
                                        spectral_density as spectral_density, top_eigenvalues as top_eigenvalues)

__all__ = ["MATRICES", "hvp", "ggn_vp", "hutchinson_diagonal", "hutchinson_trace", "Lanczos", "lanczos",
           "top_eigenvalues", "SpectralDensity", "spectral_density", "CurvatureMonitor", "CURVATURE_FIELDS"]
