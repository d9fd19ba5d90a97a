"""funcnet.curvature's first-order quantities against their autodiff definitions (``vmap(grad)``), and planted faults.

One compiled program per network computes every quantity; one more computes the
definitions. The networks cover the fused Dense layer with several activations,
the norms, PReLU, inputs with several positions per example (the Gram and the
formed ghost-norm routes) and every loss of ``train.LOSSES``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from funcnet import curvature, layers
from funcnet.curvature import taps
from funcnet.train import LOSSES
from funcnet.train.steps import loss_function


def _networks():
    return {
        "mlp_gelu": (layers.mlp([5, 7, 6, 3], "gelu"), (6, 5)),
        "mlp_tanh_layer_norm": (layers.mlp([5, 7, 6, 3], "tanh", norm="layer_norm"), (6, 5)),
        "prelu_rms_norm": (layers.serial(layers.Dense(6), layers.PReLU(), layers.Dense(6), layers.RMSNorm(),
                                         layers.Dense(3)), (6, 5)),
        # four positions per example: the Gram route (dense_0: 4² <= 5·6) and the formed route (dense_1: 4² > 6·2)
        "positions": (layers.serial(layers.Dense(6), layers.Tanh(), layers.Dense(2), layers.Flatten(),
                                    layers.Dense(3)), (6, 4, 5)),
    }


def _setup(name, loss, dtype):
    net, shape = _networks()[name]
    _, params = net.init(jax.random.key(0), (-1,) + shape[1:])
    params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape, dtype) * 0.7, params)
    x = jax.random.normal(jax.random.key(1), shape, dtype)
    if LOSSES[loss][1]:
        y = jnp.array([0, 2, 1, 2, 0, 1])
    else:
        y = jax.random.normal(jax.random.key(2), (shape[0], 3), dtype)
    return net, params, x, y


def _quantities(net, loss):
    def all_of(params, x, y):
        moments = curvature.gradient_moments(net, params, x, y, loss=loss)
        return (curvature.per_example_gradients(net, params, x, y, loss=loss),
                curvature.per_example_gradient_norms(net, params, x, y, loss=loss), moments,
                curvature.clipped_gradient(net, params, x, y, 0.3, loss=loss))
    return jax.jit(all_of)


def _definitions(net, loss):
    loss_fn = loss_function(loss, net)

    def one(params, x, y):
        return jnp.mean(loss_fn(net.apply(params, x[None]), y[None]))

    def all_of(params, x, y):
        per = jax.vmap(jax.grad(one), (None, 0, 0))(params, x, y)
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(len(x), -1) ** 2, 1) for g in jax.tree.leaves(per)))
        mean = jax.tree.map(lambda g: jnp.mean(g, 0), per)
        squares = jax.tree.map(lambda g: jnp.sum(g ** 2, 0), per)
        variance = jax.tree.map(lambda g: jnp.var(g, 0), per)
        weight = jnp.minimum(1.0, 0.3 / norms)
        clipped = jax.tree.map(lambda g: jnp.mean(g * weight.reshape((-1,) + (1,) * (g.ndim - 1)), 0), per)
        loss_value = jnp.mean(jax.vmap(one, (None, 0, 0))(params, x, y))
        return per, norms, curvature.Moments(loss_value, mean, squares, variance), (clipped, norms)
    return jax.jit(all_of)


def _worst(got, want) -> float:
    """The largest error relative to the largest value of its leaf."""
    errors = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-300)), got, want)
    return max(jax.tree.leaves(errors))


def _error(name, loss, dtype):
    net, params, x, y = _setup(name, loss, dtype)
    return _worst(_quantities(net, loss)(params, x, y), _definitions(net, loss)(params, x, y))


@pytest.mark.parametrize("name", list(_networks()))
def test_every_quantity_equals_its_definition_in_float64(name):
    losses = list(LOSSES) if name == "mlp_gelu" else ["softmax_cross_entropy_with_integer_labels"]
    for loss in losses:
        assert _error(name, loss, jnp.float64) < 1e-10, (name, loss)


def test_float32_within_its_rounding():
    assert _error("mlp_tanh_layer_norm", "softmax_cross_entropy_with_integer_labels", jnp.float32) < 1e-5


def _plant(monkeypatch, fault):
    if fault == "activation left out of a fused layer's input":
        original = taps.features

        def features(site):
            out = original(site)
            if site.kind == "dense" and site.spec["activation"] is not None:
                out["w"] = ("outer", site.inputs)
            return out
        monkeypatch.setattr(taps, "features", features)
    elif fault == "ghost norm without the bias":
        original_norms = taps.squared_norms

        def squared_norms(site, g):
            drop = _scalar_sum(g) if site.kind == "dense" else 0.0
            return original_norms(site, g) - drop
        monkeypatch.setattr(taps, "squared_norms", squared_norms)
    elif fault == "positions misaligned between input and cotangent":
        for fname in ("squared_norms", "per_example", "sum_of_squares", "weighted_sum"):
            def misaligned(site, g, *rest, original=getattr(taps, fname)):
                return original(site, g[:, ::-1] if g.ndim == 3 else g, *rest)
            monkeypatch.setattr(taps, fname, misaligned)
    elif fault == "loss cotangent averaged over the batch":
        original_tap = taps.tap

        def tap(*args, **kwargs):
            t = original_tap(*args, **kwargs)
            return t._replace(pullback=lambda ct: t.pullback(ct / ct.shape[0]))
        monkeypatch.setattr(taps, "tap", tap)
    elif fault == "sum of squares from the squared sum":
        def sum_of_squares(site, g):
            return {k: jnp.sum(v, 0) ** 2 for k, v in taps.per_example(site, g).items()}
        monkeypatch.setattr(taps, "sum_of_squares", sum_of_squares)


def _scalar_sum(g):
    d = g.reshape(g.shape[0], -1, g.shape[-1])
    return jnp.sum(jnp.sum(d, 1) ** 2, -1)


@pytest.mark.parametrize("fault, name", [
    ("activation left out of a fused layer's input", "mlp_gelu"),
    ("ghost norm without the bias", "mlp_gelu"),
    ("positions misaligned between input and cotangent", "positions"),
    ("loss cotangent averaged over the batch", "prelu_rms_norm"),
    ("sum of squares from the squared sum", "mlp_tanh_layer_norm"),
])
def test_a_planted_fault_fails_the_check(monkeypatch, fault, name):
    _plant(monkeypatch, fault)
    assert _error(name, "softmax_cross_entropy_with_integer_labels", jnp.float64) > 1e-3


def test_per_example_norms_take_no_more_temporary_memory_than_a_gradient():
    """The ghost route forms no per-example gradient, and no weight gradient either (the fused layer's rule
    skips dw when nothing differentiates w): its compiled program's temporaries are those of one
    ``value_and_grad`` (XLA's memory analysis, deterministic). Forming dw anyway took 4x."""
    net = layers.mlp([256, 512, 512, 10], "relu")
    params = jax.tree.map(lambda a: a.astype(jnp.float32), net.init(jax.random.key(0), (-1, 256))[1])
    x, y = jnp.zeros((64, 256), jnp.float32), jnp.zeros((64,), jnp.int32)
    loss_fn = loss_function("softmax_cross_entropy_with_integer_labels", net)

    def temp(f):
        return jax.jit(f).lower(params, x, y).compile().memory_analysis().temp_size_in_bytes

    ghost = temp(lambda p, x, y: curvature.per_example_gradient_norms(net, p, x, y))
    plain = temp(lambda p, x, y: jax.value_and_grad(lambda p: jnp.mean(loss_fn(net.apply(p, x), y)))(p))
    assert ghost <= 1.1 * plain, (ghost, plain)


def test_a_layer_it_cannot_tap_is_named():
    own = layers.Layer(lambda key, shape: (shape, {"v": jnp.ones(3)}), lambda p, x, **kw: x * p["v"], "scale",
                       "Scale()")
    net = layers.serial(layers.Dense(3), own)
    _, params = net.init(jax.random.key(0), (-1, 2))
    with pytest.raises(ValueError, match="'scale_0/v' belong to no layer"):
        curvature.per_example_gradient_norms(net, params, jnp.ones((2, 2)), jnp.array([0, 1]))


def test_a_loss_that_gives_no_value_per_example_is_refused():
    net = layers.mlp([2, 3])
    _, params = net.init(jax.random.key(0), (-1, 2))
    with pytest.raises(ValueError, match=r"per_example_gradients: the loss must give a value per example "
                                         r"\(a leading axis of 4\), got shape \(\)"):
        curvature.per_example_gradients(net, params, jnp.ones((4, 2)), jnp.zeros((4, 3)),
                                        loss=lambda out, y: jnp.sum((out - y) ** 2))


def test_clip_norm_may_be_traced():
    net, params, x, y = _setup("mlp_gelu", "softmax_cross_entropy_with_integer_labels", jnp.float64)

    @jax.jit
    def clipped(small, large):
        mean = curvature.gradient_moments(net, params, x, y).gradient
        return curvature.clipped_gradient(net, params, x, y, small)[0], \
            curvature.clipped_gradient(net, params, x, y, large)[0], mean

    small, large, mean = clipped(1e-3, 1e6)
    assert _worst(large, mean) < 1e-12  # nothing clipped
    # every example clipped to norm 1e-3: the clipped mean's norm is at most 1e-3
    assert float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(small)))) <= 1e-3 * (1 + 1e-12)
    assert _worst(small, mean) > 0.5
