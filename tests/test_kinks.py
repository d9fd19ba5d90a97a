"""Conventions at the non-differentiable points, stated in the docstrings, with hand values.

Each row: the op, an input on its kink, and the gradient funcnet promises there.
Where jax.nn has the op, its gradient must agree (funcnet is a drop-in).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import gates, losses, nn
from funcnet import reference as ref


def grad_at(f, x):
    return float(jax.grad(f)(jnp.float64(x)))


@pytest.mark.parametrize(
    "name, f, jax_f, x, expected",
    [
        ("relu at 0", nn.relu, jax.nn.relu, 0.0, 0.0),
        ("leaky_relu at 0", nn.leaky_relu, jax.nn.leaky_relu, 0.0, 1.0),
        ("elu(alpha=2) at 0", lambda x: nn.elu(x, 2.0), lambda x: jax.nn.elu(x, 2.0), 0.0, 2.0),
        ("hard_tanh at 1", nn.hard_tanh, jax.nn.hard_tanh, 1.0, 1.0),
        ("hard_tanh at -1", nn.hard_tanh, jax.nn.hard_tanh, -1.0, 1.0),
        ("prelu at 0", lambda x: nn.prelu(x, jnp.float64(0.3)), None, 0.0, 1.0),
    ],
)
def test_activation_kinks(name, f, jax_f, x, expected):
    assert grad_at(f, x) == expected, name
    if jax_f is not None:
        assert grad_at(jax_f, x) == expected, f"jax.nn disagrees at {name}"


def test_prelu_alpha_gradient_at_zero_is_zero_and_matches_leaky_relu():
    x = jnp.array([-1.0, 0.0, 2.0])
    ga = jax.grad(lambda a: nn.prelu(x, a).sum())(jnp.float64(0.2))
    assert float(ga) == -1.0  # only x < 0 contributes its x
    gx_p = jax.grad(lambda x: nn.prelu(x, jnp.float64(0.2)).sum())(x)
    gx_l = jax.grad(lambda x: nn.leaky_relu(x, 0.2).sum())(x)
    np.testing.assert_array_equal(gx_p, gx_l)
    np.testing.assert_array_equal(gx_p, [0.2, 1.0, 1.0])


def test_maximum_tie_splits_the_gradient():
    gx, gy = jax.grad(lambda x, y: gates.maximum(x, y), argnums=(0, 1))(jnp.float64(2.0), jnp.float64(2.0))
    assert (float(gx), float(gy)) == (0.5, 0.5)
    # same as autodiff of jnp.maximum
    tx, ty = jax.grad(jnp.maximum, argnums=(0, 1))(jnp.float64(2.0), jnp.float64(2.0))
    assert (float(tx), float(ty)) == (0.5, 0.5)
    # broadcast tie: a scalar y tied with two of three x entries collects 1/2 from each
    gy = jax.grad(lambda y: gates.maximum(jnp.array([1.0, 1.0, 0.0]), y).sum())(jnp.float64(1.0))
    assert float(gy) == 0.5 + 0.5 + 1.0


def test_svm_margin_kink_is_inactive():
    # scores (1, 0, 3), label 0, margin 1: class 1 sits exactly at the margin (0 - 1 + 1 = 0)
    s = jnp.array([1.0, 0.0, 3.0])
    loss = losses.multiclass_svm_loss(s, jnp.asarray(0))
    assert float(loss) == 3.0  # only class 2: 3 - 1 + 1
    g = jax.grad(lambda s: losses.multiclass_svm_loss(s, jnp.asarray(0)))(s)
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(jax.grad(lambda s: ref.losses.multiclass_svm_loss(s, jnp.asarray(0)))(s), g)


def test_l1_penalty_sign_of_zero_is_zero():
    g = jax.grad(losses.l1_penalty)({"w": jnp.array([[0.0, -0.5], [2.0, 0.0]])})
    np.testing.assert_array_equal(g["w"], [[0.0, -1.0], [1.0, 0.0]])


def test_binary_cross_entropy_at_saturated_probabilities():
    # correct and saturated: -log p at p = 1 has slope -1; -log(1-p) at p = 0 has slope +1
    p = jnp.array([1.0, 0.0, 0.0, 1.0, 0.0])
    t = jnp.array([1.0, 0.0, 1.0, 0.0, 0.5])
    loss = losses.binary_cross_entropy(p, t)
    np.testing.assert_array_equal(loss, [0.0, 0.0, 100.0, 100.0, 50.0])  # logs clamped at -100
    gp, gt = jax.grad(lambda p, t: losses.binary_cross_entropy(p, t).sum(), argnums=(0, 1))(p, t)
    np.testing.assert_array_equal(gp, [-1.0, 1.0, 0.0, 0.0, 0.5])
    np.testing.assert_array_equal(gt, [-100.0, 100.0, 100.0, -100.0, 100.0])


def test_twins_share_the_kink_conventions_of_the_manual_rules():
    # the hypothesis test found selu's twin splitting the gradient at 0 (jnp.minimum) while the rule gives λα;
    # l1_penalty's twin once took autodiff's +1 at w = 0 where the rule takes 0
    from funcnet.registry import OPS

    checked = set()
    for spec in [s for s in OPS if s.family == "nn" or s.name == "l1_penalty"]:
        for kink in spec.kinks:
            kw = {**spec.kwargs, **kink.kwargs}
            args = tuple(jax.tree.map(jnp.asarray, kink.args))
            twin = jax.grad(lambda x: jnp.sum(spec.twin(x, *args[1:], **kw)))(args[0])
            np.testing.assert_allclose(twin, kink.grad, rtol=1e-12, atol=1e-12, err_msg=f"{spec.name} {kink.where}")
            checked.add(spec.name)
    assert "l1_penalty" in checked and "relu" in checked
