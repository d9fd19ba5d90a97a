"""Property tests (hypothesis) over shapes and values."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from funcnet import gates, losses, nn
from funcnet import reference as ref
from funcnet.ops.numerics import sum_to_shape

SETTINGS = settings(max_examples=30, deadline=None)
finite = st.floats(-30, 30, allow_nan=False, width=64)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       st.sampled_from(["add", "multiply", "maximum"]), st.integers(0, 2**31 - 1))
def test_broadcast_gradients_are_reduced_to_each_input_shape(shapes, name, seed):
    rng = np.random.default_rng(seed)
    x, y = (jnp.asarray(rng.standard_normal(s)) for s in shapes.input_shapes)
    ct = jnp.asarray(rng.standard_normal(shapes.result_shape))
    _, manual = jax.vjp(getattr(gates, name), x, y)
    _, auto = jax.vjp(getattr(ref.gates, name), x, y)
    for m, a, s in zip(manual(ct), auto(ct), shapes.input_shapes):
        assert m.shape == tuple(s)
        np.testing.assert_allclose(m, a, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=1, min_dims=0, max_dims=4, max_side=3), st.integers(0, 99))
def test_sum_to_shape_is_the_transpose_of_broadcast(shapes, seed):
    (shape,) = shapes.input_shapes
    big = shapes.result_shape
    g = jnp.asarray(np.random.default_rng(seed).standard_normal(big))
    _, pullback = jax.vjp(lambda x: jnp.broadcast_to(x, big), jnp.zeros(shape))
    np.testing.assert_allclose(sum_to_shape(g, shape), pullback(g)[0], rtol=1e-12, atol=1e-12)


#: The ops of one array argument (prelu's slope, attention's keys and values are arguments of their own;
#: one_hot is an encoding, with no gradient).
_ACT = [n for n in nn.__all__ if n not in ("prelu", "one_hot", "dot_product_attention")]
_jitted = {}


def _grads(name):
    if name not in _jitted:
        def both(x, g):  # g fills the output's shape (glu halves the input, logsumexp reduces it)
            out = jax.eval_shape(getattr(nn, name), x)
            g = g[:out.size].reshape(out.shape)
            return jax.vjp(getattr(nn, name), x)[1](g)[0], jax.vjp(getattr(ref.nn, name), x)[1](g)[0]

        _jitted[name] = jax.jit(both)
    return _jitted[name]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_ACT), hnp.arrays(np.float64, (8,), elements=finite), hnp.arrays(np.float64, (8,), elements=finite))
def test_activation_vjp_equals_autodiff_at_random_values(name, x, g):
    # values land on kinks only by chance (e.g. x == 0.0 exactly); both sides share the convention there
    manual, auto = _grads(name)(jnp.asarray(x), jnp.asarray(g))
    # the absolute floor scales with the cotangent: at a constant row standardize's true gradient is 0, which the
    # rule gives exactly and autodiff within rounding (1.8e-12 at g = 24)
    np.testing.assert_allclose(manual, auto, rtol=1e-10, atol=1e-12 * (1 + np.max(np.abs(g))), err_msg=name)


@SETTINGS
@given(hnp.arrays(np.float64, (2, 5), elements=finite), st.floats(-1e3, 1e3), hnp.arrays(np.float64, (2, 5), elements=finite))
def test_softmax_is_shift_invariant_and_its_vjp_sums_to_zero(x, c, g):
    x, g = jnp.asarray(x), jnp.asarray(g)
    np.testing.assert_allclose(nn.softmax(x + c), nn.softmax(x), rtol=1e-9, atol=1e-15)
    _, pullback = jax.vjp(nn.softmax, x)
    np.testing.assert_allclose(pullback(g)[0].sum(-1), 0.0, atol=1e-10 * (1 + np.abs(g).max()))
    np.testing.assert_allclose(jnp.exp(nn.log_softmax(x)), nn.softmax(x), rtol=1e-9, atol=1e-15)


@SETTINGS
@given(hnp.arrays(np.float64, (6,), elements=st.floats(-20, 20)), hnp.arrays(np.float64, (6,), elements=st.floats(0, 1)))
def test_sigmoid_cross_entropy_equals_cross_entropy_of_the_sigmoid(logits, labels):
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    direct = losses.sigmoid_binary_cross_entropy(logits, labels)
    composed = losses.binary_cross_entropy(nn.sigmoid(logits), labels)
    np.testing.assert_allclose(direct, composed, rtol=1e-6, atol=1e-9)
    gd = jax.grad(lambda z: losses.sigmoid_binary_cross_entropy(z, labels).sum())(logits)
    gc = jax.grad(lambda z: losses.binary_cross_entropy(nn.sigmoid(z), labels).sum())(logits)
    np.testing.assert_allclose(gd, gc, rtol=1e-6, atol=1e-9)


@SETTINGS
@given(hnp.arrays(np.float64, (4, 3), elements=finite), st.lists(st.integers(0, 2), min_size=4, max_size=4))
def test_integer_and_one_hot_cross_entropy_agree(logits, labels):
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    a = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    b = losses.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 3, dtype=logits.dtype))
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    ga = jax.grad(lambda z: losses.softmax_cross_entropy_with_integer_labels(z, labels).sum())(logits)
    gb = jax.grad(lambda z: losses.softmax_cross_entropy(z, jax.nn.one_hot(labels, 3, dtype=z.dtype)).sum())(logits)
    np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-12)
