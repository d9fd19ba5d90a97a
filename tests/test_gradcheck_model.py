"""Whole-model gradient checks: correct models pass, planted wrong rules fail at exactly their leaves."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, layers, losses, nn
from funcnet.gradcheck import GradientCheckError, check_gradients
from funcnet.layers import ACTIVATIONS

X = jnp.asarray(np.random.default_rng(0).standard_normal((12, 5)))
Y = jnp.asarray(np.random.default_rng(1).integers(0, 3, 12))


def namespace(gates_=None, nn_=None, losses_=None):
    """An op namespace like `funcnet` with some ops replaced (to plant wrong rules)."""
    def ns(module, overrides):
        return types.SimpleNamespace(**{**{n: getattr(module, n) for n in module.__all__}, **(overrides or {})})

    return types.SimpleNamespace(gates=ns(gates, gates_), nn=ns(nn, nn_), losses=ns(losses, losses_))


def wrong(fwd, bwd):
    f = jax.custom_vjp(lambda *a: fwd(*a)[0])
    f.defvjp(fwd, bwd)
    return f


def model_and_twin(activation="tanh", ops=funcnet, hidden=(6,), lam=1e-2):
    def build(ops):
        net = layers.mlp([5, *hidden, 3], activation, ops=ops)

        def loss(p, x, y):
            return ops.losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean() \
                + lam * ops.losses.l2_penalty(p)

        return net, loss

    net, loss = build(ops)
    _, twin = build(funcnet.reference)
    _, params = net.init(jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params), loss, twin


def test_a_correct_model_passes_and_the_report_is_readable():
    params, loss, twin = model_and_twin()
    report = check_gradients(loss, params, X, Y, twin=twin)
    assert report.passed and report.failures == []
    assert [leaf.path for leaf in report.leaves] == ["dense_0/b", "dense_0/w", "dense_1/b", "dense_1/w"]
    text = str(report)
    assert "dense_1/w" in text and "4/4 leaves passed" in text
    d = report.to_dict()
    json.dumps(d)
    assert d["passed"] and d["leaves"][0]["pairs"]["manual vs autodiff"]["max_rel"] < 1e-9


PLANTED = {
    "sign flip in tanh": (
        dict(nn_={"tanh": wrong(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (-g * (1 - y * y),))}),
        "tanh", {"dense_0/b", "dense_0/w"}),
    "missing factor 2 in the L2 penalty": (
        dict(losses_={"l2_penalty": lambda p, is_weight=None: wrong(
            lambda ws: (sum(jnp.sum(w * w) for w in ws), ws), lambda ws, g: ([g * w for w in ws],))(
            losses.weight_leaves(p, is_weight))}),
        "tanh", {"dense_0/w", "dense_1/w"}),
    "bias gradient not summed over the batch": (
        dict(gates_={"affine": wrong(lambda x, w, b: (x @ w + b, (x, w)),
                                     lambda r, g: (g @ r[1].T, r[0].T @ g, g[0]))}),
        "tanh", {"dense_0/b", "dense_1/b"}),
    "prelu alpha gradient dropped": (
        dict(nn_={"prelu": wrong(lambda x, a: (jnp.where(x >= 0, x, a * x), (x, a)),
                                 lambda r, g: (jnp.where(r[0] >= 0, g, r[1] * g), jnp.zeros_like(r[1])))}),
        "prelu", {"prelu_0/alpha"}),
}


@pytest.mark.parametrize("what", PLANTED)
def test_planted_wrong_rule_fails_exactly_its_leaves(what):
    overrides, activation, expected = PLANTED[what]
    params, loss, twin = model_and_twin(activation, ops=namespace(**overrides))
    report = check_gradients(loss, params, X, Y, twin=twin)
    assert set(report.failures) == expected
    for leaf in expected:
        pairs = report[leaf].pairs
        assert not pairs["manual vs autodiff"].passed and not pairs["manual vs finite differences"].passed
        assert pairs["autodiff vs finite differences"].passed  # the twin is right: the checker localises
        assert pairs["manual vs finite differences"].kinks == 0


def test_max_routed_to_the_wrong_input_fails_both_inputs_only():
    bad_max = wrong(lambda x, y: (jnp.maximum(x, y), (x, y)), lambda r, g: (g * (r[0] < r[1]), g * (r[0] > r[1])))
    rng = np.random.default_rng(2)
    p = {"a": jnp.asarray(rng.standard_normal(6)), "b": jnp.asarray(rng.standard_normal(6)) + 0.1,
         "c": jnp.asarray(rng.standard_normal(6))}
    f = lambda mx: lambda p: jnp.sum(gates.multiply(mx(p["a"], p["b"]), p["c"]))  # noqa: E731
    report = check_gradients(f(bad_max), p, twin=f(jnp.maximum))
    assert set(report.failures) == {"a", "b"}
    assert check_gradients(f(gates.maximum), p, twin=f(jnp.maximum)).passed


def test_a_correct_rule_at_a_kink_is_reported_as_a_kink_not_a_failure():
    net = layers.mlp([5, 4, 3], "relu")
    twin_net = layers.mlp([5, 4, 3], "relu", ops=funcnet.reference)
    _, params = net.init(jax.random.key(0))
    # zero inputs: each hidden pre-activation equals its bias; bias 0 sits exactly on ReLU's kink
    params["dense_0"]["b"] = jnp.array([0.0, 0.5, -0.5, 0.0])
    x = jnp.zeros((4, 5))
    loss = lambda n, ops: lambda p: ops.losses.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        n.apply(p, x), Y[:4]).mean()
    report = check_gradients(loss(net, funcnet), params, twin=loss(twin_net, funcnet.reference))
    assert report.passed
    assert report["dense_0/b"].pairs["manual vs finite differences"].kinks == 2

    # the same point with a rule that returns a slope outside the one-sided ones fails
    def bwd(x, g):
        return (jnp.where(x > 0, g, jnp.where(x == 0, 3 * g, 0.0)),)

    bad_relu = wrong(lambda x: (jnp.maximum(x, 0), x), bwd)
    bad_net = layers.mlp([5, 4, 3], "relu", ops=namespace(nn_={"relu": bad_relu}))
    bad = check_gradients(loss(bad_net, funcnet), params)
    assert bad.failures == ["dense_0/b"]


def test_hinge_at_the_margin_is_a_kink():
    scores = jnp.array([[1.0, 0.0, 3.0], [2.0, 0.5, 0.0]])  # first row: class 1 exactly at the margin
    labels = jnp.array([0, 0])
    f = lambda s: losses.multiclass_svm_loss(s, labels).sum()  # noqa: E731
    report = check_gradients(f, scores, twin=lambda s: funcnet.reference.losses.multiclass_svm_loss(s, labels).sum())
    assert report.passed and report.leaves[0].kinks >= 1


def test_random_directions_for_large_leaves_catch_errors():
    params, loss, twin = model_and_twin(hidden=(40,))
    report = check_gradients(loss, params, X, Y, twin=twin, full_max=50, probes=5)
    assert report["dense_1/w"].probes == "5 random directions" and report["dense_0/b"].probes == "every coordinate"
    assert report.passed
    ops = namespace(nn_={"tanh": wrong(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (0.5 * g * (1 - y * y),))})
    params, loss, twin = model_and_twin(hidden=(40,), ops=ops)
    bad = check_gradients(loss, params, X, Y, twin=twin, full_max=50, probes=5)
    assert set(bad.failures) == {"dense_0/b", "dense_0/w"}
    assert str(bad["dense_0/w"].pairs["manual vs finite differences"].worst).startswith("direction")


def test_float32_model_native_precision_and_x64_setting_restored():
    params, loss, twin = model_and_twin()
    params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    with jax.enable_x64(False):
        report = check_gradients(loss, params32, jnp.asarray(X, jnp.float32), Y, twin=twin, precision="native")
        assert jax.config.jax_enable_x64 is False
        assert report.passed and {leaf.dtype for leaf in report.leaves} == {"float32"}
        full = check_gradients(loss, params32, jnp.asarray(X, jnp.float32), Y, twin=twin)
        assert jax.config.jax_enable_x64 is False
        assert full.passed and {leaf.dtype for leaf in full.leaves} == {"float64"}


def test_strict_mode_raises_with_the_report():
    overrides, activation, _ = PLANTED["sign flip in tanh"]
    params, loss, twin = model_and_twin(activation, ops=namespace(**overrides))
    with pytest.raises(GradientCheckError, match="dense_0/b, dense_0/w") as info:
        check_gradients(loss, params, X, Y, twin=twin, strict=True)
    assert not info.value.report.passed


def test_several_arguments_and_non_scalar_outputs():
    w = jnp.asarray(np.random.default_rng(3).standard_normal((5, 3)))
    f = lambda x, w: nn.softmax(gates.matmul(x, w))  # noqa: E731
    t = lambda x, w: funcnet.reference.nn.softmax(x @ w)  # noqa: E731
    report = check_gradients(f, X, w, twin=t, argnums=(0, 1))
    assert [leaf.path for leaf in report.leaves] == ["args[0]", "args[1]"] and report.passed
    with pytest.raises(ValueError, match="argnums"):
        check_gradients(f, X, w, argnums=2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hessian_of_an_mlp_loss_equals_the_twins(activation):
    params, loss, twin = model_and_twin(activation, hidden=(4,))
    h = jax.jit(funcnet.hessian(loss))(params, X, Y)
    h_twin = jax.jit(jax.hessian(twin))(params, X, Y)
    for a, b in zip(jax.tree.leaves(h), jax.tree.leaves(h_twin)):
        scale = max(float(np.abs(b).max()), 1e-12)
        assert float(np.abs(a - b).max()) <= 1e-8 * scale, activation


def test_hvp_and_hessian_matrix():
    params, loss, twin = model_and_twin("tanh", hidden=(4,))
    f = lambda p: loss(p, X, Y)  # noqa: E731
    v = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(4).standard_normal(a.shape)), params)
    hv = funcnet.hvp(f, params, v)
    flat_v, _ = jax.flatten_util.ravel_pytree(v)
    H = funcnet.hessian_matrix(f)(params)
    n = flat_v.size
    assert H.shape == (n, n)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(hv)[0], H @ flat_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, H.T, atol=1e-12)
