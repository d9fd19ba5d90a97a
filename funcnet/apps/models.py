"""Whole-model checks for ``funcnet gradcheck``: an MLP (or a small transformer) per activation, manual vs
reference-built twin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import funcnet
from funcnet.gradcheck.model import GradientReport, check_gradients

MODELS = ("mlp", "digits", "transformer")

#: The transformer's sizes: vocabulary, features, heads, context (a character model in miniature).
TRANSFORMER = {"vocab": 11, "features": 8, "heads": 2, "context": 5}


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


def transformer_loss_pair(activation: str, lam: float = 1e-3):
    """``(init, manual_loss, twin_loss)`` for a one-block causal transformer language model with ``activation`` in
    its MLP: token and position embeddings, a pre-norm :func:`~funcnet.layers.TransformerBlock`, a final
    LayerNorm, and the fused head ``losses.linear_softmax_cross_entropy`` against the next token; + λ·L2.

    The loss is ``f(params, ids, targets)`` with ``params = {"trunk": ..., "head": {"w", "b"}}``.
    """
    from funcnet import layers

    c = TRANSFORMER

    def trunk(ops):
        return layers.serial(layers.Embedding(c["vocab"], c["features"], ops=ops),
                             layers.PositionalEmbedding(c["context"], ops=ops),
                             layers.TransformerBlock(c["heads"], 2, causal=True, activation=activation, ops=ops),
                             layers.LayerNorm(ops=ops))

    manual, twin = trunk(funcnet), trunk(funcnet.reference)

    def init(key):
        k_trunk, k_head = jax.random.split(key)
        shape, params = manual.init(k_trunk, (-1, c["context"]))
        w = funcnet.init.glorot_uniform()(k_head, (c["features"], c["vocab"]))
        return shape[:-1] + (c["vocab"],), {"trunk": params, "head": {"w": w, "b": jnp.zeros((c["vocab"],))}}

    def loss(net, ops):
        def f(params, ids, targets):
            h = net.apply(params["trunk"], ids)
            head = params["head"]
            per_token = ops.losses.linear_softmax_cross_entropy(h.reshape(-1, h.shape[-1]), head["w"],
                                                                targets.reshape(-1), head["b"])
            return per_token.mean() + lam * ops.losses.l2_penalty(params)

        return f

    return init, loss(manual, funcnet), loss(twin, funcnet.reference)


def check_mlp(activation: str, model: str = "mlp", seed: int = 0, precision: str = "float64",
              probes: int = 16, modes=("rev",), order: int = 1) -> GradientReport:
    """Check every parameter leaf of an MLP with ``activation``.

    ``modes`` and ``order`` are those of :func:`check_gradients`.

    ``model="mlp"``: a 10-16-16-4 network on 32 random examples (no data set
    needed). ``model="digits"``: the 64-256-10 network of ``funcnet train`` on
    256 real digits (needs scikit-learn). ``model="transformer"``: the
    character model of ``examples/char_lm.py`` in miniature
    (:func:`transformer_loss_pair`) on 3 random sequences; ``activation`` is
    its MLP's (any but ``prelu``, which has a parameter).
    """
    rng = np.random.default_rng(seed)
    if model == "transformer":
        init, manual, twin = transformer_loss_pair(activation)
        _, params = init(jax.random.key(seed))
        tokens = jnp.asarray(rng.integers(0, TRANSFORMER["vocab"], (3, TRANSFORMER["context"] + 1)))
        return check_gradients(manual, params, tokens[:, :-1], tokens[:, 1:], twin=twin, precision=precision,
                               probes=probes, seed=seed, modes=modes, order=order)
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
