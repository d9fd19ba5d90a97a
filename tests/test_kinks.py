"""Conventions at the non-differentiable points beyond the declared kink points.

The declared kinks (``Kink`` data in each declaration) are checked by
``funcnet.check_op`` in tests/test_registry_ops.py; here: the namesake's
gradient at each of them, and hand-computed cases with more than one input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import gates, losses, nn
from funcnet import reference as ref
from funcnet.registry import OPS


@pytest.mark.parametrize("spec", [s for s in OPS if s.upstream is not None and s.kinks], ids=lambda s: s.name)
def test_the_namesake_gives_the_declared_kink_gradient_or_the_difference_is_documented(spec):
    """Each declared kink (funcnet's own gradient there: check_op, tests/test_registry_ops.py) against jax.nn/optax."""
    for kink in spec.kinks:
        args = tuple(jax.tree.map(jnp.asarray, kink.args))
        kw = {**spec.kwargs, **kink.kwargs}
        theirs = np.asarray(jax.grad(lambda x: jnp.sum(spec.upstream(x, *args[1:], **kw)))(args[0]))
        if kink.namesake:
            np.testing.assert_array_equal(theirs, kink.grad, err_msg=f"{spec.name} at {kink.where}")
        else:
            assert not np.array_equal(theirs, kink.grad), f"{spec.name} at {kink.where}: now the same as upstream"
            assert spec.differs, f"{spec.name}: a kink that differs from its namesake, undocumented"


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

    checked = set()
    for spec in [s for s in OPS if s.family == "nn" or s.name == "l1_penalty"]:
        for kink in spec.kinks:
            kw = {**spec.kwargs, **kink.kwargs}
            args = tuple(jax.tree.map(jnp.asarray, kink.args))
            twin = jax.grad(lambda x: jnp.sum(spec.twin(x, *args[1:], **kw)))(args[0])
            np.testing.assert_allclose(twin, kink.grad, rtol=1e-12, atol=1e-12, err_msg=f"{spec.name} {kink.where}")
            checked.add(spec.name)
    assert "l1_penalty" in checked and "relu" in checked
