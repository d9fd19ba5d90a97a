"""Dispatch, trace and compile cost of funcnet against the same programs on ``jax.nn`` + ``optax`` (``funcnet bench``).

Small jitted programs are dominated by what happens around the compiled code:
the per-call dispatch (JAX's C++ fast path, or a Python cache miss on every call
for programs it cannot cache), the time to trace a function to a jaxpr, and the
time to compile it the first time. Each row runs the same work on funcnet and
on plain JAX, interleaved in one process (the order alternates every round), and
reports the medians and the median of the per-round ratios.

* ``per call``: a jitted program called ``calls`` times on the same inputs after
  a warm-up call (``jax.jit(funcnet.nn.relu)`` on 128 x 256; ``mlp(...).apply``
  at batch 1 and 256; the small network's training step);
* ``trace``: ``jax.make_jaxpr(jax.grad(loss))`` of a fresh function;
* ``compile``: ``jax.jit(step).lower(...).compile()`` of a fresh function (the
  first call's compile; the in-memory caches hold nothing of a new function).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import layers, losses, nn
from funcnet.apps.bench.steps import _data, plain_jax_mlp, sgd_step

__all__ = ["measure", "markdown_lines"]

#: ``funcnet train``'s default network (digits: 64 inputs, one hidden layer of 256, 10 classes).
DEFAULT_NET = [64, 256, 10]
#: The network whose forward pass is timed at batch 1 and 256.
APPLY_NET = [256, 512, 512, 10]
#: The bench's small network, whose training step is timed.
SMALL = {"sizes": [64, 256, 256, 10], "batch": 128}


def _per_call(f: Callable, args: tuple, calls: int) -> Callable[[], float]:
    jax.block_until_ready(f(*args))

    def run():
        t0 = time.perf_counter()
        for _ in range(calls):
            out = f(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / calls

    return run


def _paired(ours: Callable[[], float], theirs: Callable[[], float], rounds: int) -> dict:
    a, b = [], []
    for k in range(rounds):
        for run, times in ((ours, a), (theirs, b))[:: 1 if k % 2 == 0 else -1]:
            times.append(run())
    ratios = [x / y for x, y in zip(a, b)]
    return {"funcnet_s": statistics.median(a), "jax_s": statistics.median(b), "ratio": statistics.median(ratios)}


def _losses(sizes):
    """(funcnet loss, params), (plain JAX loss, params): mean integer-label softmax cross-entropy of a relu MLP."""
    net = layers.mlp(sizes, "relu")
    _, ours = net.init(jax.random.key(0))

    def funcnet_loss(p, x, y):
        return losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    theirs, plain_apply = plain_jax_mlp(sizes, "relu")

    def jax_loss(p, x, y):
        return optax.losses.softmax_cross_entropy_with_integer_labels(plain_apply(p, x), y).mean()

    return (funcnet_loss, ours), (jax_loss, theirs)


def _fresh(f: Callable) -> Callable:
    """A new function object calling ``f``: JAX's caches hold nothing for it."""
    return lambda *args: f(*args)


def _timed(action: Callable[[], object]) -> Callable[[], float]:
    def run():
        t0 = time.perf_counter()
        jax.block_until_ready(action())
        return time.perf_counter() - t0

    return run


def measure(rounds: int = 15, calls: int = 200, log=print) -> list[dict]:
    """Every row of the dispatch table (see the module docstring)."""
    rows = []

    def row(name, ours, theirs, n=rounds):
        log(f"[dispatch] {name} ...")
        rows.append({"name": name, **_paired(ours, theirs, n)})

    a = jnp.asarray(np.random.default_rng(0).standard_normal((128, 256), dtype=np.float32))
    row("per call: jit(nn.relu), 128 x 256", _per_call(jax.jit(nn.relu), (a,), calls),
        _per_call(jax.jit(jax.nn.relu), (a,), calls))
    net = layers.mlp(APPLY_NET, "relu")
    _, params = net.init(jax.random.key(0))
    plain, plain_apply = plain_jax_mlp(APPLY_NET, "relu")
    for batch in (1, 256):
        x = _data(APPLY_NET, batch)[0]
        row(f"per call: jit(mlp({'-'.join(map(str, APPLY_NET))}).apply), batch {batch}",
            _per_call(jax.jit(net.apply), (params, x), calls // (1 if batch == 1 else 4)),
            _per_call(jax.jit(plain_apply), (plain, x), calls // (1 if batch == 1 else 4)))
    (f_loss, f_params), (j_loss, j_params) = _losses(SMALL["sizes"])
    x, y = _data(SMALL["sizes"], SMALL["batch"])
    (f_step, f_init), (j_step, j_init) = sgd_step(f_loss), sgd_step(j_loss)
    row(f"per call: jitted training step, {'-'.join(map(str, SMALL['sizes']))}, batch {SMALL['batch']}",
        _per_call(jax.jit(f_step), ((f_params, f_init(f_params)), x, y), calls // 4),
        _per_call(jax.jit(j_step), ((j_params, j_init(j_params)), x, y), calls // 4))
    (f_loss, f_params), (j_loss, j_params) = _losses(DEFAULT_NET)
    x, y = _data(DEFAULT_NET, 128)
    net_name = "-".join(map(str, DEFAULT_NET))
    row(f"trace: make_jaxpr(grad(loss)), {net_name}",
        _timed(lambda: jax.make_jaxpr(jax.grad(_fresh(f_loss)))(f_params, x, y)),
        _timed(lambda: jax.make_jaxpr(jax.grad(_fresh(j_loss)))(j_params, x, y)))
    (f_step, f_init), (j_step, j_init) = sgd_step(f_loss), sgd_step(j_loss)
    f_state, j_state = (f_params, f_init(f_params)), (j_params, j_init(j_params))
    row(f"compile: first call's lower + compile of the training step, {net_name}",
        _timed(lambda: jax.jit(_fresh(f_step)).lower(f_state, x, y).compile()),
        _timed(lambda: jax.jit(_fresh(j_step)).lower(j_state, x, y).compile()))
    return rows


def markdown_lines(rows: list[dict]) -> list[str]:
    lines = ["## Dispatch, trace and compile", "",
             "The same work on funcnet and on `jax.nn` + `optax`, interleaved in one process; medians over rounds "
             "and the median of the per-round ratios (`funcnet.apps.dispatch`).", "",
             "| program | funcnet | jax.nn + optax | ratio |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        unit, scale = ("ms", 1e3) if r["jax_s"] > 1e-3 else ("µs", 1e6)
        lines.append(f"| {r['name']} | {r['funcnet_s'] * scale:,.1f} {unit} | {r['jax_s'] * scale:,.1f} {unit} "
                     f"| {r['ratio']:.3f} |")
    return lines + [""]
