"""Initializers: call shape of jax.nn.initializers, and the statistics of each on a large draw."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import init

SHAPE = (300, 500)  # fan_in 300, fan_out 500: 150,000 draws
FAN_IN, FAN_OUT = SHAPE


@pytest.mark.parametrize(
    "factory, bound",
    [(init.glorot_uniform, math.sqrt(6 / (FAN_IN + FAN_OUT))), (init.he_uniform, math.sqrt(6 / FAN_IN)),
     (init.lecun_uniform, math.sqrt(3 / FAN_IN))],
)
def test_uniform_initializers_bound_and_variance(factory, bound):
    w = np.asarray(factory()(jax.random.key(0), SHAPE, jnp.float32))
    assert w.shape == SHAPE and w.dtype == np.float32
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound  # the whole interval is used
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.02
    assert abs(w.mean()) < 0.01 * bound


@pytest.mark.parametrize(
    "factory, variance",
    [(init.glorot_normal, 2 / (FAN_IN + FAN_OUT)), (init.he_normal, 2 / FAN_IN), (init.lecun_normal, 1 / FAN_IN)],
)
def test_normal_initializers_variance(factory, variance):
    w = np.asarray(factory()(jax.random.key(1), SHAPE, jnp.float32))
    assert abs(w.var() / variance - 1) < 0.02
    assert abs(w.mean()) < 0.01 * math.sqrt(variance)


SHARED = [name for name in init.__all__ if name.endswith(("_uniform", "_normal"))]


@pytest.mark.parametrize("name", SHARED)
@pytest.mark.parametrize("shape, dtype", [((30, 50), jnp.float32), ((3, 3, 8, 16), jnp.float32),
                                          ((7, 5), jnp.bfloat16), ((4, 6), jnp.float64)])
def test_every_shared_initializer_draws_what_jax_draws(name, shape, dtype):
    """Same key, shape and dtype: the same array as the jax.nn.initializers namesake."""
    key = jax.random.key(2)
    ours = getattr(init, name)()(key, shape, dtype)
    theirs = getattr(jax.nn.initializers, name)()(key, shape, dtype)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float64), np.asarray(theirs, np.float64))


def test_normal_initializers_are_truncated_at_two_standard_deviations():
    w = np.asarray(init.glorot_normal()(jax.random.key(3), SHAPE, jnp.float64))
    s = math.sqrt(2 / (FAN_IN + FAN_OUT))
    assert np.abs(w).max() <= 2 * s / init.TRUNCATED_STD
    assert abs(w.std() / s - 1) < 0.01  # std 0.1458 untruncated vs the intended s


def test_constant_initializers_and_dtype():
    k = jax.random.key(0)
    assert np.all(np.asarray(init.zeros(k, (2, 3))) == 0)
    assert np.all(np.asarray(init.ones(k, (2, 3), jnp.float64)) == 1)
    c = init.constant(0.5)(k, (4,), jnp.bfloat16)
    assert c.dtype == jnp.bfloat16 and np.all(np.asarray(c, np.float32) == 0.5)
    assert init.glorot_uniform()(k, (3, 4), jnp.float16).dtype == jnp.float16


def test_fans_and_aliases():
    assert init.fans((3, 4)) == (3, 4)
    assert init.fans((2, 3, 4)) == (6, 8)  # the receptive field counts into both fans, as in jax
    assert init.xavier_uniform is init.glorot_uniform and init.kaiming_normal is init.he_normal
    with pytest.raises(ValueError, match="scalar"):
        init.glorot_uniform()(jax.random.key(0), ())
