"""Memory of the deep network's training step under ``jax.checkpoint``, one remat block per layer (``funcnet bench``).

Each layer (its activation and the Dense layer after it) is wrapped in
``jax.checkpoint`` with the default policy, the standard way to train deep networks
in less memory: the backward pass recomputes each layer's inside from the layer's
input. Under the primitive binding (:mod:`funcnet.ops.binding`) the hand-written
reverse rules are what runs there (``tests/test_binding.py``), so these figures
describe those rules. XLA's temporary memory of the compiled step
(``memory_analysis().temp_size_in_bytes``), for: funcnet's fused layers
(``gates.activation_affine``), funcnet unfused (activation op, then ``affine``),
the autodiff twins, and plain ``jax.nn``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnet
from funcnet import gates, losses

__all__ = ["ACTIVATIONS", "measure"]

#: The activations measured: output-based (tanh), mask-based (relu) and input-based (silu, gelu) rules.
ACTIVATIONS = ("tanh", "relu", "silu", "gelu")


def _layers(kind: str, activation: str):
    """``(first(x, w, b), layer(z, w, b), loss(logits, y))`` for one kind of network."""
    if kind == "funcnet":
        return gates.affine, lambda z, w, b: gates.activation_affine(z, w, b, activation), \
            losses.softmax_cross_entropy_with_integer_labels
    if kind in ("funcnet.unfused", "funcnet.reference"):
        ops = funcnet if kind == "funcnet.unfused" else funcnet.reference
        act = getattr(ops.nn, activation)
        return ops.gates.affine, lambda z, w, b: ops.gates.affine(act(z), w, b), \
            ops.losses.softmax_cross_entropy_with_integer_labels
    act = getattr(jax.nn, activation)
    return (lambda x, w, b: x @ w + b), (lambda z, w, b: act(z) @ w + b), \
        optax.losses.softmax_cross_entropy_with_integer_labels


def step_temp_bytes(sizes, batch: int, activation: str, kind: str, remat: bool = True) -> int:
    """Temporary bytes of one compiled SGD step of the MLP ``sizes`` (float32), each layer a remat block."""
    first, layer, loss_fn = _layers(kind, activation)
    if remat:
        layer = jax.checkpoint(layer)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params = [(jax.random.normal(k, (m, n), jnp.float32) / np.sqrt(m), jnp.zeros(n, jnp.float32))
              for k, m, n in zip(keys, sizes[:-1], sizes[1:])]

    def loss(params, x, y):
        z = first(x, *params[0])
        for w, b in params[1:]:
            z = layer(z, w, b)
        return loss_fn(z, y).mean()

    def step(params, x, y):
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, jax.grad(loss)(params, x, y))

    x = jax.ShapeDtypeStruct((batch, sizes[0]), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    compiled = jax.jit(step).lower(params, x, y).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


KINDS = ("funcnet", "funcnet.unfused", "funcnet.reference", "plain_jax")


def measure(sizes, batch: int, activations=ACTIVATIONS, log=print) -> dict[str, dict[str, dict[str, int]]]:
    """``{activation: {"remat": {kind: bytes}, "plain": {kind: bytes}}}``."""
    out = {}
    for act in activations:
        log(f"[deep, batch {batch}] memory under jax.checkpoint, {act} ...")
        out[act] = {mode: {kind: step_temp_bytes(sizes, batch, act, kind, remat=mode == "remat") for kind in KINDS}
                    for mode in ("remat", "plain")}
    return out


def markdown_lines(result: dict, sizes, batch: int) -> list[str]:
    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    lines = [f"## Memory under `jax.checkpoint` (deep network {'-'.join(map(str, sizes))}, batch {batch})", "",
             "Each layer (activation, then Dense) is one `jax.checkpoint` block with the default policy; the "
             "reverse rules that run there are the hand-written ones. XLA's temporary memory of the compiled SGD "
             "step in MiB, with the same step without checkpoint in parentheses (`funcnet.apps.remat`).", "",
             "| activation | funcnet fused | funcnet unfused | autodiff twin | plain JAX |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for act, r in result.items():
        cells = [f"{mib(r['remat'][k])} ({mib(r['plain'][k])})" for k in KINDS]
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    return lines + [""]
