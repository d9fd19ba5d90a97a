"""Curvature during training: a :class:`funcnet.train.Hook` that records the Hessian's top eigenvalue and trace."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from funcnet.curvature.products import hutchinson_trace, top_eigenvalues
from funcnet.layers import Layer
from funcnet.ops.inputs import static_int
from funcnet.train.hooks import Hook
from funcnet.train.state import History, finite_or_none
from funcnet.train.steps import DEFAULT_LOSS, Loss

__all__ = ["CurvatureMonitor", "CURVATURE_FIELDS"]

#: The :class:`~funcnet.train.History` fields the monitor fills, one value per epoch.
CURVATURE_FIELDS = ("hessian_top_eigenvalue", "hessian_trace")


class CurvatureMonitor(Hook):
    """After every epoch, the top Hessian eigenvalue and the Hutchinson trace of the data loss on a fixed subset.

    Pass it to ``fit(..., hooks=[monitor])`` (``funcnet train --curvature``
    does). After each epoch it computes, for the mean data loss (no penalty) on
    ``rows`` training rows,

    * the largest Hessian eigenvalue, by :func:`~funcnet.curvature.top_eigenvalues`
      (``iterations`` Lanczos steps), and
    * the trace of the Hessian, by :func:`~funcnet.curvature.hutchinson_trace`
      (``samples`` Rademacher probes),

    and appends them to ``history.hessian_top_eigenvalue`` and
    ``history.hessian_trace`` (``None`` for a non-finite value, as JSON has none;
    epochs trained before the monitor was added are ``None`` too).

    The subset (the first ``rows`` of a permutation of the rows drawn with
    ``seed``, in their original order) and the random vectors (from
    ``jax.random.key(seed)``) are the same every epoch, so the curves change with
    the parameters alone. One compiled program, compiled at the first epoch.
    Cost per epoch: ``iterations + samples`` Hessian-vector products on ``rows``
    rows, each about 2–3 gradients: 30 products on 512 rows, about 60–90
    gradients' worth of 512 rows. Memory: one backward pass on ``rows`` rows and
    its tangent, plus ``iterations`` parameter vectors (the Lanczos basis).

    Args:
      model: the trained :class:`~funcnet.layers.Layer`.
      x: the training inputs.
      y: their labels (or targets).
      loss: the training loss (a name of :data:`funcnet.train.LOSSES` or a callable).
      rows: how many training rows (all of them if fewer).
      iterations: Lanczos steps for the top eigenvalue.
      samples: Hutchinson probes for the trace.
      seed: seeds the subset and the random vectors.
    """

    def __init__(self, model: Layer, x: Any, y: Any, *, loss: str | Loss = DEFAULT_LOSS, rows: int = 512,
                 iterations: int = 20, samples: int = 10, seed: int = 0):
        fn = "CurvatureMonitor"
        rows = static_int(fn, "rows", rows)
        self.iterations = static_int(fn, "iterations", iterations)
        self.samples = static_int(fn, "samples", samples)
        seed = static_int(fn, "seed", seed, 0)
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or len(x) < 1 or y.shape[:1] != x.shape[:1]:
            raise ValueError(f"{fn}: x and y must hold the same number of rows (at least one), got shapes "
                             f"{x.shape} and {y.shape}")
        chosen = np.sort(np.random.default_rng(seed).permutation(len(x))[:rows])
        # NumPy, not committed to a device: under a data-parallel mesh jit places them beside the parameters
        self.x, self.y = x[chosen], y[chosen]
        self.key = jax.random.key(seed)
        self.model, self.loss = model, loss
        self._estimate = jax.jit(self._compute)

    def _compute(self, params, x, y, key):
        k_top, k_trace = jax.random.split(key)
        top = top_eigenvalues(self.model, params, x, y, k_top, iterations=self.iterations, loss=self.loss)[0]
        trace = hutchinson_trace(self.model, params, x, y, k_trace, samples=self.samples, loss=self.loss)
        return top, trace

    def estimate(self, params) -> tuple[float, float]:
        """``(top eigenvalue, trace)`` of the Hessian of the mean data loss on the subset, at ``params``."""
        top, trace = jax.device_get(self._estimate(params, self.x, self.y, self.key))
        return float(top), float(trace)

    def on_epoch(self, epoch: int, state, stopper, history: History) -> None:
        top, trace = self.estimate(state.params)
        for field, value in zip(CURVATURE_FIELDS, (top, trace)):
            values = getattr(history, field)
            values.extend([None] * (epoch - 1 - len(values)))
            values.append(finite_or_none(value))
