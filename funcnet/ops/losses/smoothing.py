"""Label smoothing (a linear map of the labels, with no rule of its own)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from funcnet.ops.inputs import bool_mask, canonical_axis, check_range


# ------------------------------------------------------------------- label smoothing
def smooth_labels(labels, alpha, *, axis=-1, where=None):
    """Label smoothing ``(1 - α)·t + α/K``, as ``optax.losses.smooth_labels``.

    K is the number of classes along ``axis`` (or of unmasked classes per row
    when ``where`` is given). A linear map of the labels, written in plain
    ``jnp`` with no rule of its own: autodiff of it is exact and costs nothing.
    Unlike Optax, a concrete ``alpha`` outside [0, 1] raises (it would give
    negative labels); a traced one is the caller's to keep there.
    """
    op = "funcnet.losses.smooth_labels"
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"{op}: `labels` must be floating-point (as in optax), got {labels.dtype}{list(labels.shape)}")
    check_range(op, "alpha", alpha, 0, 1, meaning="the share of the uniform distribution")
    axes = canonical_axis(op, axis, labels.ndim)
    if where is None:
        count = math.prod(labels.shape[a] for a in axes)
    else:
        count = jnp.sum(bool_mask(op, where), axis=axes, keepdims=True)
    return (1.0 - alpha) * labels + alpha / count


__all__ = ["smooth_labels"]
