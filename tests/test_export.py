"""Deployment: ``jax.export`` of a trained network's ``apply`` and of its gradient, and AOT compilation.

The serialized programs are loaded in a fresh process that never imports funcnet (a
program that still needed funcnet's Python rules could not run there), and give
the same outputs as the live functions.
"""

from __future__ import annotations

import pytest
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import export

from funcnet import layers, losses, train

LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    from jax import export
    folder = sys.argv[1]
    data = dict(np.load(folder + "/inputs.npz"))
    leaves = [data[f"leaf_{i}"] for i in range(int(data["n_leaves"]))]
    for name in ("apply", "grad"):
        fn = export.deserialize(bytearray(open(f"{folder}/{name}.bin", "rb").read()))
        flat = jax.tree.leaves(fn.call(*([leaves, data["x"]] if name == "apply" else [leaves, data["x"], data["y"]])))
        np.savez(f"{folder}/{name}_out.npz", *flat)
    assert "funcnet" not in sys.modules
""")


@pytest.mark.slow
def test_exported_apply_and_gradient_run_in_a_fresh_process(tmp_path):
    net = layers.mlp([6, 16, 16, 3], "gelu", norm="layer_norm")
    _, params = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5).astype(np.int32)
    optimizer = optax.sgd(0.1)  # a few real steps: a trained network
    state = train.TrainState.create(params, optimizer)
    step = jax.jit(train.make_step(train.make_objective(net), optimizer))
    for _ in range(3):
        state, _ = step(state, x, y)
    params = state.params
    leaves, tree = jax.tree.flatten(params)

    def apply(leaves, x):
        return net.apply(jax.tree.unflatten(tree, leaves), x)

    def grad(leaves, x, y):
        return jax.grad(lambda l: losses.softmax_cross_entropy_with_integer_labels(apply(l, x), y).mean())(leaves)

    for name, fn, args in (("apply", apply, (leaves, x)), ("grad", grad, (leaves, x, y))):
        (tmp_path / f"{name}.bin").write_bytes(export.export(jax.jit(fn))(*args).serialize())
    np.savez(tmp_path / "inputs.npz", x=x, y=y, n_leaves=len(leaves), **{f"leaf_{i}": v for i, v in enumerate(leaves)})
    proc = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, want in (("apply", [apply(leaves, x)]), ("grad", grad(leaves, x, y))):
        got = np.load(tmp_path / f"{name}_out.npz")
        assert len(got.files) == len(jax.tree.leaves(want))
        for k, w in enumerate(jax.tree.leaves(want)):
            np.testing.assert_allclose(got[f"arr_{k}"], np.asarray(w), rtol=1e-6, atol=1e-7, err_msg=name)


def test_ahead_of_time_compilation_and_cost_analysis():
    net = layers.mlp([8, 32, 4])
    _, params = net.init(jax.random.key(1))
    x = jnp.ones((16, 8), jnp.float32)
    compiled = jax.jit(net.apply).lower(params, x).compile()
    np.testing.assert_allclose(compiled(params, x), net.apply(params, x), rtol=1e-6)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # two dense layers of 16 x 8 x 32 and 16 x 32 x 4 multiply-adds at least
    assert cost["flops"] >= 2 * 16 * (8 * 32 + 32 * 4)
