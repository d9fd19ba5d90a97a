"""Worked examples of the lecture material, expected values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, losses, nn


def test_add_then_multiply_graph():
    # f = (x + y) z at x=-2, y=5, z=-4: q = x + y = 3, f = q z = -12.
    # df/dz = q = 3; df/dq = z = -4, and the add gate hands -4 to both x and y.
    def f(x, y, z):
        return gates.multiply(gates.add(x, y), z)

    x, y, z = jnp.float64(-2.0), jnp.float64(5.0), jnp.float64(-4.0)
    assert f(x, y, z) == -12.0
    dx, dy, dz = jax.grad(f, argnums=(0, 1, 2))(x, y, z)
    assert (float(dx), float(dy), float(dz)) == (-4.0, -4.0, 3.0)


def test_gate_patterns_distribute_route_swap():
    g = jnp.float64(2.0)  # upstream gradient
    _, add_vjp = jax.vjp(gates.add, jnp.float64(3.0), jnp.float64(-1.0))
    _, max_vjp = jax.vjp(gates.maximum, jnp.float64(3.0), jnp.float64(-1.0))
    _, mul_vjp = jax.vjp(gates.multiply, jnp.float64(3.0), jnp.float64(-1.0))
    assert [float(v) for v in add_vjp(g)] == [2.0, 2.0]      # distributes
    assert [float(v) for v in max_vjp(g)] == [2.0, 0.0]      # routes to the larger input
    assert [float(v) for v in mul_vjp(g)] == [-2.0, 6.0]     # swaps: g*y, g*x


@pytest.mark.parametrize("build", ["gates", "affine"])
def test_sigmoid_neuron(build):
    # f = σ(w0 x0 + w1 x1 + w2) at w = (2, -3, -3), x = (-1, -2):
    # z = -2 + 6 - 3 = 1, σ(1) = 0.7311, σ'(1) = σ(1 - σ) = 0.1966.
    w = jnp.array([2.0, -3.0, -3.0], jnp.float64)
    x = jnp.array([-1.0, -2.0], jnp.float64)

    def neuron(w, x):
        if build == "gates":
            z = gates.add(gates.add(gates.multiply(w[0], x[0]), gates.multiply(w[1], x[1])), w[2])
        else:
            z = gates.affine(x, w[:2, None], w[2:])[0]
        return nn.sigmoid(z)

    s = 1 / (1 + math.exp(-1.0))
    ds = s * (1 - s)
    assert abs(float(neuron(w, x)) - 0.73) < 0.005
    assert abs(float(neuron(w, x)) - s) < 1e-12
    dw, dx = jax.grad(neuron, argnums=(0, 1))(w, x)
    np.testing.assert_allclose(dw, [-0.20, -0.39, 0.20], atol=0.006)
    np.testing.assert_allclose(dx, [0.39, -0.59], atol=0.006)
    np.testing.assert_allclose(dw, [-ds, -2 * ds, ds], rtol=1e-12)
    np.testing.assert_allclose(dx, [2 * ds, -3 * ds], rtol=1e-12)


SCORES = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # (cat, car, frog)
LABELS = np.array([0, 1, 2])  # cat, car, frog


def test_multiclass_svm_loss_worked_example():
    # cat: max(0, 5.1-3.2+1) + max(0, -1.7-3.2+1) = 2.9 + 0
    # car: max(0, 1.3-4.9+1) + max(0, 2.0-4.9+1) = 0 + 0
    # frog: max(0, 2.2+3.1+1) + max(0, 2.5+3.1+1) = 6.3 + 6.6 = 12.9 (the slide's 10.9 drops the +1s)
    out = losses.multiclass_svm_loss(jnp.asarray(SCORES), jnp.asarray(LABELS))
    np.testing.assert_allclose(out, [2.9, 0.0, 12.9], atol=1e-12)
    assert abs(float(out.mean()) - (2.9 + 0 + 12.9) / 3) < 1e-12
    # gradient of the first example: car is active (+1), frog is not, cat gets -1
    g = jax.grad(lambda s: losses.multiclass_svm_loss(s, jnp.asarray(LABELS))[0])(jnp.asarray(SCORES))
    np.testing.assert_array_equal(g[0], [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(g[1:], 0.0)


def test_softmax_cross_entropy_worked_example():
    # exp(3.2) = 24.53, exp(5.1) = 164.0, exp(-1.7) = 0.18; sum 188.7
    # p = (0.13, 0.87, 0.00); L = -ln 0.13 = 2.04 (natural log; the slide's 0.89 is log10)
    scores = jnp.asarray(SCORES[0])
    p = nn.softmax(scores)
    np.testing.assert_allclose(p, [0.13, 0.87, 0.00], atol=0.005)
    loss = losses.softmax_cross_entropy_with_integer_labels(scores, jnp.asarray(0))
    e = [math.exp(v) for v in SCORES[0]]
    assert abs(float(loss) - 2.04) < 0.005
    assert abs(float(loss) + math.log(e[0] / sum(e))) < 1e-12
    onehot = losses.softmax_cross_entropy(scores, jnp.array([1.0, 0.0, 0.0]))
    assert abs(float(onehot) - float(loss)) < 1e-12
    # dL/ds = p - onehot(cat)
    g = jax.grad(lambda s: losses.softmax_cross_entropy_with_integer_labels(s, jnp.asarray(0)))(scores)
    np.testing.assert_allclose(g, [e[0] / sum(e) - 1, e[1] / sum(e), e[2] / sum(e)], rtol=1e-12)


def test_regularised_penalties_by_hand():
    params = {"dense_0": {"w": jnp.array([[1.0, -2.0], [0.0, 3.0]]), "b": jnp.array([5.0, 5.0])}}
    assert float(losses.l2_penalty(params)) == 1 + 4 + 0 + 9
    assert float(losses.l1_penalty(params)) == 1 + 2 + 0 + 3
    g2 = jax.grad(losses.l2_penalty)(params)
    g1 = jax.grad(losses.l1_penalty)(params)
    np.testing.assert_array_equal(g2["dense_0"]["w"], [[2.0, -4.0], [0.0, 6.0]])
    np.testing.assert_array_equal(g1["dense_0"]["w"], [[1.0, -1.0], [0.0, 1.0]])  # sign(0) = 0
    np.testing.assert_array_equal(g2["dense_0"]["b"], 0.0)  # biases are not penalised
    np.testing.assert_array_equal(g1["dense_0"]["b"], 0.0)


def test_hessian_of_a_tiny_network_by_hand():
    # f(w) = ½ (tanh(w x) - t)² at w = 0: f'' = x² (tanh'(0)² + (tanh(0) - t) tanh''(0)) = x².
    x, t = 3.0, 0.5
    f = lambda w: losses.l2_loss(nn.tanh(w * x), jnp.float64(t))
    assert abs(float(funcnet.hessian(f)(jnp.float64(0.0))) - x * x) < 1e-12
