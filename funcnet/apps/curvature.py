"""What :mod:`funcnet.curvature` costs: each quantity against one ``value_and_grad`` of the same network.

For a network of ``funcnet bench`` (``CONFIGS``: the ReLU ``medium`` and the
tanh ``deep`` one, batch 256, softmax cross-entropy on integer labels), each
quantity is compiled beside ``jax.value_and_grad`` of the mean loss and both
are run in turn (:func:`funcnet.apps.compare.two_programs`): the memory of each
compiled program and the median of the per-round time ratios. Per-example
gradients are compared with ``vmap(grad)``, the usual way, instead.

Memory is XLA's temporary memory plus the outputs' (``temp_size_in_bytes +
output_size_in_bytes``): XLA places temporaries in output buffers that are not
yet written, so the temporaries alone of ``value_and_grad`` (whose outputs are
the parameters' size) undercount what it needs. The deep network's gradient
takes 1.5 MiB of temporaries with the gradients as outputs, 6.0 MiB when only
their norm is returned: the same computation.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import curvature, layers
from funcnet.apps.bench.steps import CONFIGS
from funcnet.apps.compare import two_programs
from funcnet.train.steps import DEFAULT_LOSS, loss_function

__all__ = ["QUANTITIES", "BASELINES", "TARGETS", "measure", "default_rows", "markdown_lines"]

Quantity = Callable[[layers.Layer, Any, Any, Any], Any]


def _vmap_grad(net, params, x, y):
    loss_fn = loss_function(DEFAULT_LOSS, net)
    return jax.vmap(jax.grad(lambda p, x, y: loss_fn(net.apply(p, x[None]), y[None])[0]), (None, 0, 0))(params, x, y)


#: The quantities of the table: ``(model, params, x, y) -> quantity``.
QUANTITIES: dict[str, Quantity] = {
    "per-example gradient norms": curvature.per_example_gradient_norms,
    "per-example gradients": curvature.per_example_gradients,
    "sum of squared gradients and variance": curvature.gradient_moments,
    "GGN diagonal, Monte-Carlo (1 sample)": lambda net, p, x, y: curvature.mc_ggn_diagonal(net, p, x, y,
                                                                                           jax.random.key(0)),
    "GGN diagonal, exact": curvature.ggn_diagonal,
    "K-FAC factors (1 sample)": lambda net, p, x, y: curvature.kfac_factors(net, p, x, jax.random.key(0)),
    "Hessian-vector product": lambda net, p, x, y: curvature.hvp(net, p, x, y, p),
    "GGN-vector product": lambda net, p, x, y: curvature.ggn_vp(net, p, x, y, p),
}
#: What a quantity is compared with, when not one ``value_and_grad`` of the mean loss.
BASELINES: dict[str, tuple[str, Quantity]] = {"per-example gradients": ("vmap(grad)", _vmap_grad)}
#: The issue's targets: the most time (and memory), relative to the baseline, each quantity should take.
TARGETS = {"per-example gradient norms": "time ≤ 1.3, memory ≤ 1.1", "per-example gradients": "time ≤ 1.0",
           "sum of squared gradients and variance": "time ≤ 1.3", "GGN diagonal, Monte-Carlo (1 sample)": "time ≤ 2",
           "GGN diagonal, exact": "time ≤ C + 1 = 11", "K-FAC factors (1 sample)": "time ≤ 1.5",
           "Hessian-vector product": "time ≤ 2.5"}


def _baseline(net):
    loss_fn = loss_function(DEFAULT_LOSS, net)
    return lambda p, x, y: jax.value_and_grad(lambda p: jnp.mean(loss_fn(net.apply(p, x), y)))(p)


def measure(configs=("medium", "deep"), quantities=None, rounds: int = 5, log=print) -> list[dict]:
    """One row per (configuration, quantity): temporary bytes and, with ``rounds``, median times and ratios."""
    rows = []
    for name in configs:
        cfg = CONFIGS[name]
        net = layers.mlp(cfg["sizes"], cfg["activation"])
        params = net.init(jax.random.key(0))[1]
        shapes = [jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params),
                  jax.ShapeDtypeStruct((cfg["batch"], cfg["sizes"][0]), jnp.float32),
                  jax.ShapeDtypeStruct((cfg["batch"],), jnp.int32)]

        def make_args(cfg=cfg, params=params):
            rng = np.random.default_rng(0)
            return (params, jnp.asarray(rng.standard_normal((cfg["batch"], cfg["sizes"][0])), jnp.float32),
                    jnp.asarray(rng.integers(0, cfg["sizes"][-1], cfg["batch"]), jnp.int32))

        for quantity, fn in (QUANTITIES if quantities is None else {q: QUANTITIES[q] for q in quantities}).items():
            base_name, base = BASELINES.get(quantity, ("value_and_grad", lambda net, p, x, y: _baseline(net)(p, x, y)))
            log(f"[curvature, {name}] {quantity} against {base_name} ...")
            programs = {quantity: jax.jit(lambda p, x, y, fn=fn: fn(net, p, x, y)),
                        "baseline": jax.jit(lambda p, x, y, base=base: base(net, p, x, y))}
            row = {"config": name, "sizes": cfg["sizes"], "batch": cfg["batch"], "quantity": quantity,
                   "baseline_name": base_name,
                   "rounds": rounds, "device": jax.devices()[0].device_kind}
            row.update(two_programs(programs, shapes, rounds, make_args))
            total = {k: row[k]["temp_bytes"] + row[k]["output_bytes"] for k in programs}
            row["memory_ratio"] = total[quantity] / total["baseline"]
            rows.append(row)
    return rows


def default_rows(rounds: int = 3, log=print) -> list[dict]:
    """The rows of ``funcnet bench --tables curvature``: every quantity on the medium and deep networks."""
    return measure(rounds=rounds, log=log)


def markdown_lines(rows: list[dict]) -> list[str]:
    """A section for ``docs/benchmarks.md`` from :func:`measure` rows."""
    lines = [f"## Curvature and per-example quantities against one gradient ({rows[0]['device']})", "",
             "Each quantity of `funcnet.curvature` compiled beside `jax.value_and_grad` of the mean loss of the same "
             "network (softmax cross-entropy, integer labels; per-example gradients beside `vmap(grad)`) and run "
             "in turn. Memory: XLA's temporary plus output memory of each compiled program (XLA places "
             "temporaries in output buffers not yet written, so temporaries alone undercount a program that "
             "returns gradients); time: the median of the per-round ratios.", "",
             "| network | quantity | MiB | baseline | baseline MiB | memory ratio | time | baseline time "
             "| time ratio | target |",
             "| :--- | :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: | :--- |"]
    for r in rows:
        q, timed = r["quantity"], "median_s" in r[r["quantity"]]

        def mib(k):
            return f"{(r[k]['temp_bytes'] + r[k]['output_bytes']) / 2**20:,.2f}"

        cells = [f"{r['config']} ({'-'.join(map(str, r['sizes']))}, batch {r['batch']})", q, mib(q),
                 r["baseline_name"], mib("baseline"), f"{r['memory_ratio']:.2f}",
                 f"{r[q]['median_s'] * 1e3:.2f} ms" if timed else "-",
                 f"{r['baseline']['median_s'] * 1e3:.2f} ms" if timed else "-",
                 f"{r['time_ratio']:.2f}" if timed else "not timed", TARGETS.get(q, "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
