"""Data-parallel training on 8 simulated CPU devices, in a subprocess (device count is fixed at start-up)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import numpy as np, optax
    from funcnet import data, layers, parallel, train

    assert len(jax.devices()) == 8
    ds = data.load("spiral", seed=0)
    net = layers.mlp([2, 16, 2], "tanh", dropout=0.1)
    _, params = net.init(jax.random.key(0))
    kw = dict(optimizer=optax.sgd(0.1, momentum=0.9), epochs=1, batch_size=32, progress=False, seed=0, lam=1e-3)
    one = train.fit(net, params, ds, mesh=parallel.data_mesh(1), **kw)
    eight = train.fit(net, params, ds, mesh=parallel.data_mesh(8), **kw)
    plain = train.fit(net, params, ds, **kw)
    def rel(p, q):
        return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))
                   for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)))

    wide = layers.mlp([2, 16, 16, 2], "tanh")
    _, wparams = wide.init(jax.random.key(1))
    w_one = train.fit(wide, wparams, ds, mesh=parallel.data_mesh(1), **kw)
    w_2d = train.fit(wide, wparams, ds, mesh=parallel.mesh_2d(4, 2), **kw)
    w0 = w_2d.params["dense_0"]["w"]
    out = {"rel": rel(eight.params, one.params), "rel_plain": rel(one.params, plain.params),
           "rel_2d": rel(w_2d.params, w_one.params), "w0_spec": list(w0.sharding.spec),
           "w0_shard": list(w0.addressable_shards[0].data.shape),
           "devices": len(next(iter(jax.tree.leaves(eight.params))).sharding.device_set)}
    from funcnet import curvature  # K-FAC's factors sum over the split batch; its state is replicated

    kfac = {**kw, "optimizer": curvature.kfac(net, learning_rate=0.1)}
    out["rel_kfac"] = rel(train.fit(net, params, ds, mesh=parallel.data_mesh(8), **kfac).params,
                          train.fit(net, params, ds, **kfac).params)
    auto = train.fit(net, params, ds, mesh="auto", **kw)
    out["rel_auto"] = rel(auto.params, eight.params)
    out["auto_devices"] = len(next(iter(jax.tree.leaves(auto.params))).sharding.device_set)
    try:
        train.fit(net, params, ds, mesh=parallel.data_mesh(8), **{**kw, "batch_size": 30})
    except ValueError as err:
        out["error"] = str(err)
    try:
        train.fit(net, params, ds, mesh=jax.sharding.Mesh(np.array(jax.devices()), ("x",)), **kw)
    except ValueError as err:
        out["axis_error"] = str(err)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_epoch_on_8_devices_equals_1_device(result):
    assert result["devices"] == 8
    assert result["rel"] <= 1e-5
    assert result["rel_plain"] <= 1e-5


@pytest.mark.slow
def test_kfac_on_8_devices_equals_1_device(result):
    assert result["rel_kfac"] <= 1e-5


@pytest.mark.slow
def test_data_and_model_parallel_mesh_equals_1_device(result):
    # a (4 data x 2 model) mesh: each device holds half of every hidden layer's units
    assert result["rel_2d"] <= 1e-5
    assert result["w0_spec"] == [None, "model"] and result["w0_shard"] == [2, 8]


@pytest.mark.slow
def test_batch_that_does_not_split_over_the_devices_is_a_clear_error(result):
    assert "batch_size 30 does not split over the 8 devices" in result["error"]
    assert "multiple of 8" in result["error"]


@pytest.mark.slow
def test_auto_mesh_spans_every_visible_device(result):
    assert result["auto_devices"] == 8 and result["rel_auto"] == 0.0


@pytest.mark.slow
def test_mesh_without_a_data_axis_is_a_clear_error(result):
    assert "fit: the mesh needs a 'data' axis" in result["axis_error"] and "('x',)" in result["axis_error"]
