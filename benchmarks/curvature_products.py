"""Matrix-free curvature products against one gradient, side by side in one process (docs/curvature.md).

For ``funcnet bench``'s medium (784-1024-1024-10 ReLU) and deep (784-512×8-10 tanh) networks at batch 256,
float32, softmax cross-entropy: one ``value_and_grad`` of the mean loss, one :func:`funcnet.curvature.hvp`, one
:func:`funcnet.curvature.ggn_vp`, and (with ``--all``) 10 Hutchinson probes and 20 Lanczos steps. Each is one
jitted program; the rounds interleave them and the medians are reported, with the ratio to the gradient and
XLA's temporary memory of each compiled program::

    python benchmarks/curvature_products.py            # hvp and ggn_vp
    python benchmarks/curvature_products.py --all      # also Hutchinson (10 probes) and Lanczos (20 steps)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import curvature, layers
from funcnet.train.steps import loss_function

CONFIGS = {"medium": ([784, 1024, 1024, 10], "relu"), "deep": ([784] + [512] * 8 + [10], "tanh")}
LOSS = "softmax_cross_entropy_with_integer_labels"


def programs(sizes, activation, batch, every):
    model = layers.mlp(sizes, activation)
    params = model.init(jax.random.key(0), (-1, sizes[0]))[1]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, sizes[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, sizes[-1], batch))
    v = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
    loss_fn = loss_function(LOSS, model)
    key = jax.random.key(1)
    found = {
        "value_and_grad": lambda p: jax.value_and_grad(lambda q: jnp.mean(loss_fn(model.apply(q, x), y)))(p),
        "hvp": lambda p: curvature.hvp(model, p, x, y, v),
        "ggn_vp": lambda p: curvature.ggn_vp(model, p, x, y, v),
    }
    if every:
        found["hutchinson_trace(10)"] = lambda p: curvature.hutchinson_trace(model, p, x, y, key, samples=10)
        found["top_eigenvalues(20)"] = lambda p: curvature.top_eigenvalues(model, p, x, y, key, iterations=20)
    compiled = {name: jax.jit(f).lower(params).compile() for name, f in found.items()}
    return params, compiled


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--all", action="store_true", help="also Hutchinson's trace and Lanczos")
    args = p.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}; "
          f"batch {args.batch}, float32, median of {args.rounds} interleaved rounds")
    results = {}
    for config, (sizes, activation) in CONFIGS.items():
        params, compiled = programs(sizes, activation, args.batch, args.all)
        times = {name: [] for name in compiled}
        for name, fn in compiled.items():
            jax.block_until_ready(fn(params))  # warm
        for _ in range(args.rounds):
            for name, fn in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(params))
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["value_and_grad"])
        base_memory = compiled["value_and_grad"].memory_analysis().temp_size_in_bytes
        print(f"\n{config}: {'-'.join(map(str, sizes))} {activation}")
        print(f"| {'quantity':<22} | time (ms) | × gradient | temp memory (MiB) | × gradient |")
        print(f"| {'-' * 22} | --- | --- | --- | --- |")
        for name, ts in times.items():
            median, memory = statistics.median(ts), compiled[name].memory_analysis().temp_size_in_bytes
            results[config, name] = (median / base, memory / base_memory)
            print(f"| {name:<22} | {1e3 * median:9.2f} | {median / base:10.2f} | {memory / 2**20:17.2f} | "
                  f"{memory / base_memory:10.2f} |")
    return results


if __name__ == "__main__":
    main()
