"""More out of one backward pass: per-example quantities and curvature, from the hand-written rules.

Every function here takes a model (a :class:`funcnet.layers.Layer`), its
parameters and a batch ``(x, y)``, and works under ``jit``. The objective is the
mean data loss over the batch, ``L(θ) = (1/B) Σᵢ ℓ(f(θ, xᵢ), yᵢ)`` (no penalty);
per-example quantities are those of ``ℓᵢ`` (as ``vmap(grad(ℓᵢ))`` gives them),
matrices (Hessian, generalized Gauss–Newton, Fisher) those of ``L``.
"""

from funcnet.curvature.first_order import Moments as Moments
from funcnet.curvature.first_order import clipped_gradient as clipped_gradient
from funcnet.curvature.first_order import gradient_moments as gradient_moments
from funcnet.curvature.first_order import per_example_gradient_norms as per_example_gradient_norms
from funcnet.curvature.first_order import per_example_gradients as per_example_gradients
from funcnet.curvature.ggn import ggn_diagonal as ggn_diagonal
from funcnet.curvature.ggn import mc_ggn_diagonal as mc_ggn_diagonal
from funcnet.curvature.kronecker import KFACState as KFACState
from funcnet.curvature.kronecker import KroneckerFactors as KroneckerFactors
from funcnet.curvature.kronecker import kfac as kfac
from funcnet.curvature.kronecker import kfac_factors as kfac_factors
from funcnet.curvature.loss_hessians import loss_hessian as loss_hessian
from funcnet.curvature.loss_hessians import loss_hessian_sqrt as loss_hessian_sqrt
from funcnet.curvature.loss_hessians import sample_targets as sample_targets
from funcnet.curvature.loss_hessians import sampled_gradients as sampled_gradients
from funcnet.curvature.taps import tap as tap

from funcnet.curvature.monitor import CURVATURE_FIELDS as CURVATURE_FIELDS, CurvatureMonitor as CurvatureMonitor
from funcnet.curvature.products import (MATRICES as MATRICES, Lanczos as Lanczos, SpectralDensity as SpectralDensity,
                                        ggn_vp as ggn_vp, hutchinson_diagonal as hutchinson_diagonal,
                                        hutchinson_trace as hutchinson_trace, hvp as hvp, lanczos as lanczos,
                                        spectral_density as spectral_density, top_eigenvalues as top_eigenvalues)


__all__ = ["tap", "per_example_gradients", "per_example_gradient_norms", "gradient_moments", "Moments",
           "clipped_gradient", "loss_hessian", "loss_hessian_sqrt", "sample_targets", "sampled_gradients",
           "ggn_diagonal", "mc_ggn_diagonal", "kfac_factors", "KroneckerFactors", "kfac", "KFACState",
           "MATRICES", "hvp", "ggn_vp", "hutchinson_diagonal", "hutchinson_trace", "Lanczos", "lanczos",
           "top_eigenvalues", "SpectralDensity", "spectral_density", "CurvatureMonitor", "CURVATURE_FIELDS"]
