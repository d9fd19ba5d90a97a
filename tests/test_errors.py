"""Bad input gets a clear error at trace time, naming the op and the offending shapes or values."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, losses, nn

f32 = jnp.float32


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (escaped)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.mark.parametrize("name", nn.__all__)
def test_activations_reject_non_numeric_input(name):
    f = getattr(nn, name)
    args = ("abc",) if name != "prelu" else ("abc", jnp.float32(0.1))
    with raises(TypeError, f"funcnet.nn.{name}", "`x`", "str"):
        f(*args)


def test_errors_are_raised_at_trace_time_under_jit():
    with raises(ValueError, "funcnet.gates.add", "(3,)", "(4,)"):
        jax.jit(gates.add)(jnp.ones(3), jnp.ones(4))
    with raises(ValueError, "softmax_cross_entropy_with_integer_labels", "(5,)", "(4, 3)"):
        jax.jit(losses.softmax_cross_entropy_with_integer_labels)(jnp.ones((4, 3)), jnp.zeros(5, jnp.int32))


@pytest.mark.parametrize("op", [gates.add, gates.multiply, gates.maximum])
def test_elementwise_gates_reject_shapes_that_do_not_broadcast(op):
    with raises(ValueError, f"funcnet.gates.{op.__name__}", "(2, 3)", "(4,)"):
        op(jnp.ones((2, 3)), jnp.ones(4))


def test_gates_promote_integer_arrays_and_reject_strings():
    assert gates.multiply(jnp.ones(3), jnp.arange(3)).dtype == jnp.multiply(jnp.ones(3), jnp.arange(3)).dtype
    with raises(TypeError, "funcnet.gates.multiply", "`y`", "str"):
        gates.multiply(jnp.ones(3), "abc")


def test_matmul_shapes():
    with raises(ValueError, "funcnet.gates.matmul", "a(3, 4)", "b(5, 2)"):
        gates.matmul(jnp.ones((3, 4)), jnp.ones((5, 2)))
    with raises(ValueError, "funcnet.gates.matmul", "at least 1 dimension"):
        gates.matmul(jnp.float32(1.0), jnp.ones(3))


def test_affine_shapes():
    with raises(ValueError, "funcnet.gates.affine", "x(8, 3)", "w(4, 2)"):
        gates.affine(jnp.ones((8, 3)), jnp.ones((4, 2)), jnp.ones(2))
    with raises(ValueError, "funcnet.gates.affine", "`b`", "(2,)", "(3,)"):
        gates.affine(jnp.ones((8, 4)), jnp.ones((4, 2)), jnp.ones(3))
    with raises(ValueError, "funcnet.gates.affine", "`w` must be 2-D", "(4,)"):
        gates.affine(jnp.ones((8, 4)), jnp.ones(4), jnp.ones(1))


@pytest.mark.parametrize("alpha_shape", [(3,), (2, 3, 4), (5, 1)])
def test_prelu_alpha_must_broadcast_to_x(alpha_shape):
    with raises(ValueError, "funcnet.nn.prelu", f"{alpha_shape}", "(3, 4)", "alpha"):
        nn.prelu(jnp.ones((3, 4)), jnp.ones(alpha_shape))


def test_hyperparameters_must_be_numbers():
    with raises(TypeError, "funcnet.nn.elu", "alpha", "str"):
        nn.elu(jnp.ones(3), "big")
    with raises(TypeError, "funcnet.nn.leaky_relu", "negative_slope", "str"):
        nn.leaky_relu(jnp.ones(3), "big")


def test_softmax_axis_out_of_range():
    with raises(ValueError, "funcnet.nn.softmax", "axis 2", "2 dimensions"):
        nn.softmax(jnp.ones((2, 3)), axis=2)


@pytest.mark.parametrize(
    "op",
    [losses.softmax_cross_entropy, losses.sigmoid_binary_cross_entropy, losses.binary_cross_entropy,
     losses.squared_error, losses.l2_loss],
)
def test_losses_reject_mismatched_shapes(op):
    logits = jnp.full((4, 3), 0.5)
    with raises(ValueError, f"funcnet.losses.{op.__name__}", "(4, 3)", "(5, 3)"):
        op(logits, jnp.full((5, 3), 0.5))


@pytest.mark.parametrize("op", [losses.softmax_cross_entropy_with_integer_labels, losses.multiclass_svm_loss])
def test_integer_label_losses(op):
    logits = jnp.zeros((4, 3))
    name = f"funcnet.losses.{op.__name__}"
    with raises(ValueError, name, "(4, 1)", "(4, 3)", "(4,)"):
        op(logits, jnp.zeros((4, 1), jnp.int32))
    with raises(ValueError, name, "[0, 3)", "from 0 to 3"):
        op(logits, jnp.array([0, 1, 2, 3]))
    with raises(ValueError, name, "from -1 to 2"):
        op(logits, jnp.array([0, -1, 2, 2]))
    with raises(TypeError, name, "labels", "integer", "float32[4]"):
        op(logits, jnp.zeros(4, f32))
    # integer logits are promoted, as in optax
    np.testing.assert_allclose(op(jnp.zeros((4, 3), jnp.int32), jnp.zeros(4, jnp.int32)),
                               op(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32)))


def test_out_of_range_labels_under_jit_give_nan_not_garbage():
    out = jax.jit(losses.softmax_cross_entropy_with_integer_labels)(jnp.zeros((2, 3)), jnp.array([1, 7]))
    assert not bool(jnp.isnan(out[0])) and bool(jnp.isnan(out[1]))


@pytest.mark.parametrize("op", [losses.softmax_cross_entropy_with_integer_labels, losses.multiclass_svm_loss])
def test_out_of_range_labels_under_jit_give_value_and_gradient_that_agree(op):
    """Labels 7 and -1 (traced, so not range-checked): NaN value and NaN gradient row, no wrap-around."""
    logits = jnp.array([[0.0, 1.0, 2.0], [0.5, -1.0, 0.0], [1.0, 1.0, -2.0]])
    labels = jnp.array([1, 7, -1])
    value = jax.jit(op)(logits, labels)
    g = jax.jit(jax.grad(lambda z, y: op(z, y).sum()))(logits, labels)
    assert bool(jnp.all(jnp.isfinite(value[0]))) and bool(jnp.all(jnp.isfinite(g[0])))
    assert bool(jnp.all(jnp.isnan(value[1:]))) and bool(jnp.all(jnp.isnan(g[1:])))
    # the valid row is exactly the twin's
    want = jax.grad(lambda z: getattr(funcnet.reference.losses, op.__name__)(z, labels[:1]).sum())(logits[:1])
    np.testing.assert_allclose(g[:1], want, rtol=1e-6)


def test_stable_value_is_the_same_plain_and_under_value_and_grad():
    logits, labels = jnp.array([[1e4, 1e4, -1e4]], jnp.float32), jnp.array([0])
    f = losses.softmax_cross_entropy_with_integer_labels
    plain = f(logits, labels)
    with_grad = jax.value_and_grad(lambda z: f(z, labels).sum())(logits)[0]
    assert float(plain[0]) == float(with_grad) == pytest.approx(np.log(2), rel=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_integer_label_gradient_along_any_class_axis(axis):
    rng = np.random.default_rng(axis % 3)
    logits = jnp.asarray(rng.standard_normal((4, 5, 6)))
    shape = list(logits.shape)
    classes = shape.pop(axis)
    labels = jnp.asarray(rng.integers(0, classes, shape))
    ct = jnp.asarray(rng.standard_normal(shape))
    grads = [jax.grad(lambda z, ns=ns: (ns.losses.softmax_cross_entropy_with_integer_labels(z, labels, axis) * ct)
                      .sum())(logits) for ns in (funcnet, funcnet.reference)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_integer_labels_get_no_gradient_and_float_labels_do():
    logits = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="integer"):
        jax.grad(lambda l: losses.softmax_cross_entropy_with_integer_labels(logits, l).sum())(jnp.array([0, 1]))
    g = jax.grad(lambda t: losses.softmax_cross_entropy(logits, t).sum())(jnp.eye(3)[:2])
    assert g.shape == (2, 3)
