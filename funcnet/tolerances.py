"""The one tolerance table of funcnet's gradient checks.

Every comparison (registry tests, ``funcnet gradcheck``'s op rows, the whole-model
checker) passes when ``|a - b| <= atol + rtol * |b|`` elementwise, or, for the
relative-error summaries, when ``max|a - b| / max(|b|, floor) <= rtol``.

* ``autodiff``: a hand-written rule against autodiff of its twin, both in the
  same dtype; half precision is compared against the float32 twin, so its
  numbers bound rounding, not algorithm error.
* ``finite_diff``: a rule against centred finite differences, always evaluated
  in float64 (the dtype key is the dtype of the rule's inputs).
* ``adjoint``: ⟨v, J u⟩ against ⟨Jᵀ v, u⟩ (forward rule against reverse rule).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise."""

    rtol: float
    atol: float


AUTODIFF: Mapping[str, Tolerance] = {
    "float64": Tolerance(1e-9, 1e-12),
    "float32": Tolerance(2e-5, 1e-6),
    "bfloat16": Tolerance(4e-2, 2e-2),
    "float16": Tolerance(1e-2, 2e-3),
}

FINITE_DIFF: Mapping[str, Tolerance] = {
    "float64": Tolerance(1e-6, 1e-9),
    "float32": Tolerance(1e-3, 1e-5),
}

ADJOINT: Mapping[str, Tolerance] = {
    "float64": Tolerance(1e-10, 1e-12),
    "float32": Tolerance(1e-4, 1e-6),
}

TABLE: Mapping[str, Mapping[str, Tolerance]] = {"autodiff": AUTODIFF, "finite_diff": FINITE_DIFF, "adjoint": ADJOINT}


def tolerance(kind: str, dtype: Any) -> Tolerance:
    """The tolerance of one comparison (``autodiff``, ``finite_diff``, ``adjoint``) in one dtype."""
    return TABLE[kind][np.dtype(dtype).name]
