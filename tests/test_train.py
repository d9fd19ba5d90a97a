"""Training: schedules, Newton's method, the fit loop, early stopping, resume, search."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet
from funcnet import data, init, layers, losses, train
from funcnet.schedules import inverse_time_decay, power_decay


@pytest.fixture(scope="module")
def spiral():
    return data.load("spiral", seed=0)


def small_net():
    return layers.mlp([2, 16, 2], "tanh")


def test_schedules_by_hand():
    s = inverse_time_decay(0.5, 0.1)
    assert [round(float(s(t)), 6) for t in (0, 10, 30)] == [0.5, 0.25, 0.125]
    p = power_decay(1.0, 0.5, warmup_steps=4)
    assert [float(p(t)) for t in (0, 3, 4, 16)] == [1.0, 1.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="warmup_steps"):
        power_decay(1.0, 0.5, warmup_steps=0)
    # usable as an optax learning rate
    opt = optax.sgd(inverse_time_decay(0.5, 0.1))
    state = opt.init({"w": jnp.ones(2)})
    updates, _ = opt.update({"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(updates["w"], -0.5)


def _logistic_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    true_w = np.array([1.5, -2.0, 0.5])
    y = (x @ true_w + 0.3 * rng.standard_normal(200) > 0).astype(np.float64)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        logits = funcnet.gates.affine(x, p["w"], p["b"])[:, 0]
        return losses.sigmoid_binary_cross_entropy(logits, y).mean() + 1e-2 * losses.l2_penalty(p)

    return loss, {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1,))}


def test_newton_reaches_the_optimum_in_a_handful_of_steps_where_gd_needs_hundreds():
    loss, p0 = _logistic_problem()
    p_newton, newton_losses = train.newton(loss, p0, steps=8, damping=1e-8)
    optimum = newton_losses[-1]
    g = jax.grad(loss)(p_newton)
    assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g)) < 1e-10  # stationary point
    steps_to_optimum = next(i for i, l in enumerate(newton_losses) if l - optimum < 1e-8)
    assert steps_to_optimum <= 6

    step = jax.jit(lambda p: jax.tree.map(lambda a, b: a - 0.5 * b, p, jax.grad(loss)(p)))
    p, gd_steps = p0, 0
    while float(loss(p)) - optimum >= 1e-8:
        p, gd_steps = step(p), gd_steps + 1
        assert gd_steps < 5000
    assert gd_steps > 100, gd_steps


def test_newton_is_damped_on_a_non_convex_loss():
    # f(w) = w⁴/4 - w²/2 has a maximum at 0; plain Newton from 0.1 jumps towards 0, saddle-free goes downhill
    loss = lambda p: jnp.sum(p["w"] ** 4 / 4 - p["w"] ** 2 / 2)
    p, ls = train.newton(loss, {"w": jnp.array([0.1])}, steps=20)
    assert all(b <= a + 1e-12 for a, b in zip(ls, ls[1:]))
    np.testing.assert_allclose(p["w"], [1.0], atol=1e-6)


def test_fit_learns_the_spiral_and_is_deterministic(spiral):
    net = small_net()
    _, params = net.init(jax.random.key(0))
    kw = dict(optimizer=optax.adam(0.02), epochs=40, batch_size=32, progress=False, seed=1)
    a = train.fit(net, params, spiral, **kw)
    b = train.fit(net, params, spiral, **kw)
    assert a.history.val_accuracy[-1] > 0.9
    assert a.history.train_loss[-1] < a.history.train_loss[0]
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert len(a.history.epoch) == 40 and a.history.to_dict()["epoch"][-1] == 40


def test_early_stopping_restores_the_best_parameters(spiral):
    net = small_net()
    _, params = net.init(jax.random.key(0))
    # a learning rate so large that validation loss soon stops improving
    res = train.fit(net, params, spiral, optimizer=optax.sgd(3.0, momentum=0.9), epochs=60, patience=3,
                    progress=False)
    h = res.history
    assert h.stopped_early and len(h.epoch) < 60
    best = int(np.argmin(h.val_loss))
    assert h.best_epoch == best + 1 and len(h.epoch) == h.best_epoch + 3
    restored = train.evaluate(net, res.params, spiral.val)
    assert math.isclose(restored["loss"], h.val_loss[best], rel_tol=1e-5)


def test_resume_from_checkpoint_is_bit_identical(spiral, tmp_path):
    net = layers.mlp([2, 8, 2], "relu", dropout=0.1)
    _, params = net.init(jax.random.key(0))
    kw = dict(optimizer=optax.sgd(0.05, momentum=0.9), batch_size=16, progress=False, seed=3, lam=1e-3)
    full = train.fit(net, params, spiral, epochs=6, **kw)
    ckpt = tmp_path / "state.safetensors"
    train.fit(net, params, spiral, epochs=3, checkpoint=str(ckpt), **kw)  # "interrupted" after 3 epochs
    resumed = train.fit(net, params, spiral, epochs=6, resume=str(ckpt), **kw)
    for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(x, y)
    assert resumed.history.val_loss == full.history.val_loss


def test_manual_and_reference_training_agree(spiral):
    kw = dict(optimizer=optax.sgd(0.1), epochs=2, batch_size=32, progress=False)
    net_m = small_net()
    net_r = layers.mlp([2, 16, 2], "tanh", ops=funcnet.reference)
    _, params = net_m.init(jax.random.key(0))
    a = train.fit(net_m, params, spiral, **kw)
    b = train.fit(net_r, params, spiral, **kw)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_fit_many_matches_separate_fits(spiral):
    net = small_net()
    lrs, lams, seeds = [0.05, 0.2], [0.0, 1e-3], [0, 1]
    many = train.fit_many(net, spiral, learning_rates=lrs, lams=lams, seeds=seeds, epochs=3, batch_size=32)
    assert many["val_loss"].shape == (2, 3)
    for k in range(2):
        _, params = net.init(jax.random.key(seeds[k]))
        one = train.fit(net, params, spiral, optimizer=optax.sgd(lrs[k]), lam=lams[k], seed=seeds[k], epochs=3,
                        batch_size=32, progress=False)
        np.testing.assert_allclose(many["val_loss"][k], one.history.val_loss, rtol=1e-4)


def test_grid_and_random_search_select_on_validation(spiral):
    def run(settings):
        net = layers.mlp([2, settings["width"], 2], "tanh")
        _, params = net.init(jax.random.key(0))
        res = train.fit(net, params, spiral, optimizer=optax.adam(settings["lr"]), epochs=5, progress=False)
        return {"val_loss": res.history.val_loss[-1]}

    grid = train.grid_search({"lr": [1e-4, 3e-2], "width": [4, 16]}, run)
    assert len(grid.trials) == 4
    assert grid.best["val_loss"] == min(t["val_loss"] for t in grid.trials)
    assert grid.best["settings"]["lr"] == 3e-2
    rand = train.random_search({"lr": lambda r: 10 ** r.uniform(-3, -1), "width": lambda r: int(r.choice([4, 8]))},
                               run, n_trials=3, seed=0)
    assert len(rand.trials) == 3 and rand.best in rand.trials


def test_zero_initialisation_trap():
    """All-equal hidden weights stay equal: every hidden unit gets the same gradient forever."""
    xor = data.load("xor", seed=0)
    for w_init in (init.zeros, init.constant(0.3)):
        net = layers.serial(layers.Dense(6, w_init), layers.Tanh(), layers.Dense(2, w_init))
        _, params = net.init(jax.random.key(0), (-1, 2))
        res = train.fit(net, params, xor, optimizer=optax.sgd(0.5, momentum=0.9), epochs=30, progress=False)
        w = np.asarray(res.params["dense_0"]["w"])
        assert np.all(w == w[:, :1]), "hidden units diverged although they started identical"
    net = layers.mlp([2, 6, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    res = train.fit(net, params, xor, optimizer=optax.sgd(0.5, momentum=0.9), epochs=30, progress=False)
    w = np.asarray(res.params["dense_0"]["w"])
    assert not np.all(w == w[:, :1])
    assert res.history.val_accuracy[-1] > 0.9


def test_fit_errors():
    net = small_net()
    _, params = net.init(jax.random.key(0))
    xor = data.load("xor")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        train.fit(net, params, xor, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="unknown penalty"):
        train.fit(net, params, xor, penalty="l3", progress=False)


def test_mixed_precision_keeps_float32_master_weights(spiral):
    net = small_net()
    _, params = net.init(jax.random.key(0))
    kw = dict(optimizer=optax.adam(0.02), epochs=30, batch_size=32, progress=False, seed=1)
    mixed = train.fit(net, params, spiral, compute_dtype=jnp.bfloat16, **kw)
    full = train.fit(net, params, spiral, **kw)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(mixed.params))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(mixed.opt_state)
               if jnp.issubdtype(leaf.dtype, jnp.floating))  # adam's step count is an int
    assert mixed.history.val_accuracy[-1] > 0.85
    assert abs(mixed.history.val_accuracy[-1] - full.history.val_accuracy[-1]) < 0.1
    # the bfloat16 run really computed in bfloat16: its parameters differ from the float32 run's
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(mixed.params), jax.tree.leaves(full.params)))


def test_callback_sees_every_epoch_and_can_stop(spiral):
    net = small_net()
    _, params = net.init(jax.random.key(0))
    seen = []

    def callback(epoch, p, history):
        seen.append((epoch, len(history.epoch)))
        return epoch == 3

    res = train.fit(net, params, spiral, epochs=10, progress=False, callback=callback)
    assert seen == [(1, 1), (2, 2), (3, 3)] and len(res.history.epoch) == 3
