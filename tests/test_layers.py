"""Layers and combinators: parameter names, shapes, errors, and manual == autodiff for a whole MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import layers
from funcnet.layers import ACTIVATIONS, Dense, Dropout, Flatten, Relu, branches, mlp, serial


def test_serial_parameter_names_and_shapes():
    net = serial(Dense(8), Relu(), Dense(4), layers.PReLU(), Dense(2))
    out_shape, params = net.init(jax.random.key(0), (-1, 3))
    assert out_shape == (-1, 2)
    assert set(params) == {"dense_0", "dense_1", "prelu_0", "dense_2"}
    assert params["dense_0"]["w"].shape == (3, 8) and params["dense_0"]["b"].shape == (8,)
    assert params["prelu_0"]["alpha"].shape == (4,)
    assert net.apply(params, jnp.ones((5, 3))).shape == (5, 2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_manual_and_reference_agree(activation):
    """Same key, same network built on manual rules and on autodiff twins: same outputs and gradients."""
    kw = {"output_activation": None}
    manual = mlp([5, 7, 6, 3], activation, **kw)
    reference = mlp([5, 7, 6, 3], activation, ops=funcnet.reference, **kw)
    _, p_manual = manual.init(jax.random.key(3))
    _, p_reference = reference.init(jax.random.key(3))
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), p_manual, p_reference)
    assert all(jax.tree.leaves(chex_equal))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p_manual)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((11, 5)))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 3, 11))

    def loss(net, ops):
        return lambda p: ops.losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), labels).mean() \
            + 1e-2 * ops.losses.l2_penalty(p)

    y_manual, y_reference, g_manual, g_reference = jax.jit(lambda p: (  # one program
        manual.apply(p, x), reference.apply(p, x), jax.grad(loss(manual, funcnet))(p),
        jax.grad(loss(reference, funcnet.reference))(p)))(params)
    np.testing.assert_allclose(y_manual, y_reference, rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(g_manual), jax.tree.leaves(g_reference)):
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= 1e-10 * max(scale, 1e-30), activation


def test_shape_errors_name_the_layer_and_shapes():
    net = serial(Dense(4), Relu(), Dense(2))
    _, params = net.init(jax.random.key(0), (-1, 3))
    with pytest.raises(ValueError, match=r"Dense\(4\).*last axis is 3.*\(5, 7\)"):
        net.apply(params, jnp.ones((5, 7)))
    with pytest.raises(ValueError, match=r"mlp\(3, 4, 2\).*input width is 3.*\(-1, 5\)"):
        mlp([3, 4, 2]).init(jax.random.key(0), (-1, 5))
    with pytest.raises(ValueError, match=r"Dense\(4\).*known last axis.*\(\)"):
        Dense(4).init(jax.random.key(0), ())
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        mlp([3, 4, 2], "swish")


def test_dropout():
    layer = Dropout(0.25)
    x = jnp.ones((200, 50))
    assert layer.apply({}, x) is x  # identity outside training
    y = layer.apply({}, x, key=jax.random.key(0), train=True)
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - 0.25) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.75)  # inverted dropout keeps the mean
    with pytest.raises(ValueError, match="needs a PRNG key"):
        layer.apply({}, x, train=True)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        Dropout(1.0)


def test_dropout_in_serial_gets_distinct_keys_and_gradients_flow():
    net = mlp([4, 16, 2], dropout=0.5)
    _, params = net.init(jax.random.key(0))
    x = jnp.ones((3, 4))
    a = net.apply(params, x, key=jax.random.key(1), train=True)
    b = net.apply(params, x, key=jax.random.key(2), train=True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(net.apply(params, x), net.apply(params, x, train=False))
    g = jax.grad(lambda p: net.apply(p, x, key=jax.random.key(1), train=True).sum())(params)
    assert np.any(np.asarray(g["dense_0"]["w"]) != 0)


def test_flatten_and_branches():
    net = serial(Flatten(), Dense(3))
    shape, params = net.init(jax.random.key(0), (-1, 2, 4))
    assert shape == (-1, 3) and params["dense_0"]["w"].shape == (8, 3)
    assert net.apply(params, jnp.ones((5, 2, 4))).shape == (5, 3)
    par = branches(Dense(2), Dense(3))
    shapes, params = par.init(jax.random.key(0), ((-1, 4), (-1, 5)))
    assert shapes == ((-1, 2), (-1, 3)) and set(params) == {"branch_0", "branch_1"}
    a, b = par.apply(params, (jnp.ones((1, 4)), jnp.ones((1, 5))))
    assert a.shape == (1, 2) and b.shape == (1, 3)
    with pytest.raises(ValueError, match="2 branches but 1 input"):
        par.apply(params, (jnp.ones((1, 4)),))


@pytest.mark.parametrize("old, new, args", [
    ("parallel", "branches", lambda: (Dense(2), Dense(3))),
    ("ActivationDense", "ActivationThenDense", lambda: ("tanh", 3)),
])
def test_deprecated_names_build_the_same_layer_with_a_warning(old, new, args):
    with pytest.warns(DeprecationWarning, match=f"layers.{old} is deprecated: use layers.{new}") as caught:
        before = getattr(layers, old)(*args())
    assert caught[0].filename == __file__  # the warning points at the caller
    after = getattr(layers, new)(*args())
    assert (before.name, before.description) == (after.name, after.description)
    shape = ((-1, 4), (-1, 5)) if new == "branches" else (-1, 4)
    (s1, p1), (s2, p2) = before.init(jax.random.key(0), shape), after.init(jax.random.key(0), shape)
    assert s1 == s2 and jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), p1, p2))


def test_activation_then_dense_applies_the_activation_first():
    layer = layers.ActivationThenDense("relu", 2)
    _, params = layer.init(jax.random.key(0), (-1, 3))
    x = jnp.asarray([[-1.0, 2.0, -3.0]])
    np.testing.assert_allclose(layer.apply(params, x), jnp.maximum(x, 0) @ params["w"] + params["b"], rtol=1e-6)


def test_layers_jit_and_vmap():
    net = mlp([3, 5, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    x = jnp.ones((4, 3))
    np.testing.assert_allclose(jax.jit(net.apply)(params, x), net.apply(params, x), rtol=1e-6)
    per_example = jax.vmap(net.apply, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(per_example, net.apply(params, x), rtol=1e-6)
