"""funcnet as a drop-in for jax.nn and optax.losses, compared with them directly.

Signature (parameter names, kinds, defaults), values and gradients at the edge
cases a researcher meets: integer inputs, ±inf and NaN, masks (including empty
ones), tuple and None axes, traced and array-valued hyper-parameters (with their
gradients), broadcast labels.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import losses, nn
from funcnet.registry import OPS

NAMESAKES = list({spec.fn: spec for spec in OPS if spec.upstream is not None}.values())


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("spec", NAMESAKES, ids=[s.fn.__name__ for s in NAMESAKES])
def test_same_signature_as_the_namesake(spec):
    ours, theirs = _params(spec.fn), _params(spec.upstream)
    assert [n for n, _, _ in ours] == [n for n, _, _ in theirs], spec.qualname
    assert [d for _, _, d in ours] == [d for _, _, d in theirs], spec.qualname


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **{"rtol": 1e-6, "atol": 1e-7, **kw})


UNARY = [n for n in nn.__all__ if n not in ("prelu",)]
EDGES = jnp.array([-jnp.inf, -1e30, -3.0, -0.0, 0.0, 2.5, 1e30, jnp.inf, jnp.nan])


@pytest.mark.parametrize("name", UNARY)
def test_activation_values_and_gradients_at_edges(name):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    axis = {"axis": 0} if "softmax" in name else {}
    finite = EDGES[:-1] if "softmax" in name else EDGES  # one NaN poisons a whole softmax
    close(ours(finite, **axis), theirs(finite, **axis), equal_nan=True)
    g_ours = jax.grad(lambda x: jnp.sum(jnp.where(jnp.isfinite(ours(x, **axis)), ours(x, **axis), 0.0)))
    g_theirs = jax.grad(lambda x: jnp.sum(jnp.where(jnp.isfinite(theirs(x, **axis)), theirs(x, **axis), 0.0)))
    mid = jnp.array([-3.0, -0.5, 0.5, 2.0, 20.0])
    close(g_ours(mid), g_theirs(mid))


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("x", [jnp.arange(-2, 3), 0, 1, np.array([1, 2])])
def test_integer_and_python_inputs_as_jax_nn(name, x):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    if "softmax" in name and np.ndim(x) == 0:
        x = np.array([x])
    try:
        want = theirs(x)
    except TypeError:  # jax.nn.sigmoid/silu raise for integers; funcnet promotes (documented)
        want = theirs(jnp.asarray(x, jnp.result_type(float)))
        assert "promoted" in (ours.__doc__ or ""), name
    got = ours(x)
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    close(got, want)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None, (1, 2)])
def test_softmax_axes_and_masks(name, axis):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 4)))
    masks = [None, jnp.asarray(rng.random((2, 3, 4)) > 0.3), jnp.asarray(rng.random((3, 4)) > 0.3)]
    for where in masks:
        close(ours(x, axis=axis, where=where), theirs(x, axis=axis, where=where), equal_nan=True)
        keep = jnp.ones_like(x, bool) if where is None else jnp.broadcast_to(where, x.shape)
        w = jnp.asarray(rng.normal(size=x.shape))

        def loss(f):
            return lambda x: jnp.sum(jnp.where(keep, f(x, axis=axis, where=where) * w, 0.0))

        close(jax.grad(loss(ours))(x), jax.grad(loss(theirs))(x), equal_nan=True)
        _, t_ours = jax.jvp(loss(ours), (x,), (w,))
        _, t_theirs = jax.jvp(loss(theirs), (x,), (w,))
        close(t_ours, t_theirs)


def test_empty_mask_matches_jax_nn():
    x = jnp.array([1.0, 2.0])
    none = jnp.zeros(2, bool)
    close(nn.softmax(x, where=none), jax.nn.softmax(x, where=none), equal_nan=True)
    close(nn.log_softmax(x, where=none), jax.nn.log_softmax(x, where=none), equal_nan=True)


@pytest.mark.parametrize("name, kw", [("leaky_relu", "negative_slope"), ("elu", "alpha")])
@pytest.mark.parametrize("value", [0.2, jnp.float64(0.2), jnp.array([0.1, 0.2, 0.3, 0.4])])
def test_traced_and_array_hyperparameters_with_gradients(name, kw, value):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    x = jnp.array([-2.0, -0.5, 0.5, 3.0])

    def total(f, v):
        return jnp.sum(f(x, **{kw: v}) * jnp.arange(1.0, 5.0))

    close(jax.jit(lambda v: ours(x, **{kw: v}))(value), theirs(x, **{kw: value}))
    if not isinstance(value, float):
        close(jax.grad(lambda v: total(ours, v))(value), jax.grad(lambda v: total(theirs, v))(value))
        close(jax.jvp(lambda v: total(ours, v), (value,), (jnp.ones_like(value),))[1],
              jax.jvp(lambda v: total(theirs, v), (value,), (jnp.ones_like(value),))[1])
    close(jax.grad(lambda x: jnp.sum(ours(x, **{kw: value})))(x), jax.grad(lambda x: jnp.sum(theirs(x, **{kw: value})))(x))
