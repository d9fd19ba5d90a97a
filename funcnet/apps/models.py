"""Whole-model checks for ``funcnet gradcheck``: an MLP per activation, manual vs reference-built twin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import funcnet
from funcnet.gradcheck.model import GradientReport, check_gradients

MODELS = ("mlp", "digits")


def mlp_loss_pair(activation: str, sizes, lam: float = 1e-3):
    """``(init, manual_loss, twin_loss)`` for an MLP with ``activation``: cross-entropy + λ·L2."""
    from funcnet import layers

    manual = layers.mlp(sizes, activation)
    twin = layers.mlp(sizes, activation, ops=funcnet.reference)

    def loss(net, ops):
        def f(params, x, y):
            logits = net.apply(params, x)
            return ops.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean() \
                + lam * ops.losses.l2_penalty(params)

        return f

    return manual.init, loss(manual, funcnet), loss(twin, funcnet.reference)


def check_mlp(activation: str, model: str = "mlp", seed: int = 0, precision: str = "float64",
              probes: int = 16, modes=("rev",), order: int = 1) -> GradientReport:
    """Check every parameter leaf of an MLP with ``activation``.

    ``modes`` and ``order`` are those of :func:`check_gradients`.

    ``model="mlp"``: a 10-16-16-4 network on 32 random examples (no data set
    needed). ``model="digits"``: the 64-256-10 network of ``funcnet train`` on
    256 real digits (needs scikit-learn).
    """
    rng = np.random.default_rng(seed)
    if model == "mlp":
        sizes = [10, 16, 16, 4]
        x = rng.standard_normal((32, 10))
        y = rng.integers(0, 4, 32)
    elif model == "digits":
        from funcnet import data

        ds = data.load("digits", seed=seed)
        sizes = [64, 256, 10]
        x, y = ds.train.x[:256], ds.train.y[:256]
    else:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    init, manual, twin = mlp_loss_pair(activation, sizes)
    _, params = init(jax.random.key(seed))
    return check_gradients(manual, params, jnp.asarray(x, jnp.float32), jnp.asarray(y), twin=twin,
                           precision=precision, probes=probes, seed=seed, modes=modes, order=order)
