"""The training API in pieces: TrainState, make_step, make_epoch, EarlyStopping, callable losses, model ops."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet
from funcnet import data, layers, train


@pytest.fixture(scope="module")
def spiral():
    return data.load("spiral", seed=0)


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_loop_of_your_own_from_the_pieces_is_fit_exactly(spiral):
    net = layers.mlp([2, 16, 2], "tanh", dropout=0.1)
    _, params = net.init(jax.random.key(0))
    optimizer = optax.adam(0.01)
    fitted = train.fit(net, params, spiral, optimizer=optimizer, epochs=3, batch_size=16, lam=1e-3, seed=5,
                       progress=False)
    # the same three epochs, written by hand from the public pieces
    step = train.make_step(train.make_objective(net, "softmax_cross_entropy", lam=1e-3), optimizer)
    epoch = jax.jit(train.make_epoch(step, 16))
    state = train.TrainState.create(params, optimizer)
    x, y = jnp.asarray(spiral.train.x), jnp.asarray(spiral.train.y)
    for e in range(3):
        state, _ = epoch(state, x, y, jax.random.fold_in(jax.random.key(5), e))
    assert leaves_equal(state.params, fitted.params)
    assert int(state.step) == 3 * (len(x) // 16)


def test_make_step_takes_any_objective_with_or_without_aux():
    optimizer = optax.sgd(0.5)
    quadratic = lambda p, x, y, key: jnp.sum((p["w"] - x) ** 2)  # noqa: E731
    step = jax.jit(train.make_step(quadratic, optimizer, has_aux=False))
    state = train.TrainState.create({"w": jnp.zeros(3)}, optimizer)
    state, j = step(state, jnp.ones(3), None)
    assert float(j) == 3.0
    np.testing.assert_allclose(state.params["w"], 1.0)  # w - 0.5 * 2 (w - 1)
    with_aux = train.make_step(lambda p, x, y, key: (quadratic(p, x, y, key), "aux"), optimizer)
    assert float(with_aux(train.TrainState.create({"w": jnp.zeros(3)}, optimizer), jnp.ones(3), None)[1]) == 3.0


def test_a_callable_loss_trains_like_the_named_one(spiral):
    net = layers.mlp([2, 16, 2], "tanh")
    _, params = net.init(jax.random.key(1))
    kw = dict(optimizer=optax.sgd(0.1), epochs=2, progress=False)
    named = train.fit(net, params, spiral, loss="softmax_cross_entropy", **kw)
    mine = train.fit(net, params, spiral, loss=optax.softmax_cross_entropy_with_integer_labels, **kw)
    for a, b in zip(jax.tree.leaves(named.params), jax.tree.leaves(mine.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert mine.history.val_accuracy[-1] == pytest.approx(named.history.val_accuracy[-1])
    with pytest.raises(ValueError, match="unknown loss 'nope'.*callable"):
        train.fit(net, params, spiral, loss="nope", **kw)


def test_the_model_carries_its_ops_so_model_and_loss_cannot_disagree():
    manual, twin = layers.mlp([2, 4, 2]), layers.mlp([2, 4, 2], ops=funcnet.reference)
    assert manual.ops is funcnet and twin.ops is funcnet.reference
    assert train.loss_function("softmax_cross_entropy", twin) is \
        funcnet.reference.losses.softmax_cross_entropy_with_integer_labels
    assert train.loss_function("softmax_cross_entropy", manual) is \
        funcnet.losses.softmax_cross_entropy_with_integer_labels
    assert layers.serial(layers.Flatten(), layers.Dense(3, ops=funcnet.reference)).ops is funcnet.reference
    with pytest.raises(ValueError, match="different op namespaces"):
        layers.serial(layers.Dense(3), layers.Relu(ops=funcnet.reference))
    with pytest.raises(TypeError, match="ops"):
        train.fit(manual, {}, None, ops=funcnet.reference)  # no way to pass a second namespace


def test_early_stopping_update_is_pure_and_never_prefers_nan():
    stopper = train.EarlyStopping.create({"w": jnp.zeros(2)})
    stopper = stopper.update({"w": jnp.ones(2)}, jnp.float32(0.5), 1)
    stopper = stopper.update({"w": jnp.full(2, 2.0)}, jnp.float32(0.7), 2)
    stopper = stopper.update({"w": jnp.full(2, 3.0)}, jnp.float32(jnp.nan), 3)
    assert (int(stopper.best_epoch), int(stopper.bad_epochs), float(stopper.best_loss)) == (1, 2, 0.5)
    np.testing.assert_array_equal(stopper.best_params["w"], [1.0, 1.0])
    jitted = jax.jit(lambda s, p, l: s.update(p, l, 4))(stopper, {"w": jnp.full(2, 4.0)}, jnp.float32(0.1))
    assert (int(jitted.best_epoch), int(jitted.bad_epochs)) == (4, 0)


def test_regression_history_is_strict_json_with_null_accuracies():
    ds = data.load("sine", seed=0)
    net = layers.mlp([1, 8, 1], "tanh")
    _, params = net.init(jax.random.key(0))
    result = train.fit(net, params, ds, loss="squared_error", optimizer=optax.adam(0.01), epochs=2, progress=False)
    assert result.history.val_accuracy == [None, None]
    text = json.dumps(result.history.to_dict(), allow_nan=False)  # raises on NaN or inf
    assert json.loads(text)["train_accuracy"] == [None, None]


def test_evaluate_many_splits_in_one_program_equals_one_at_a_time(spiral):
    net = layers.mlp([2, 8, 2])
    _, params = net.init(jax.random.key(0))
    together = train.evaluate(net, params, {"train": spiral.train, "val": spiral.val})
    assert list(together) == ["train", "val"]
    for name in together:
        alone = train.evaluate(net, params, getattr(spiral, name))
        assert math.isclose(together[name]["loss"], alone["loss"], rel_tol=1e-6)
        assert together[name]["accuracy"] == alone["accuracy"]


def test_early_stop_records_the_stopped_and_restored_epochs(spiral):
    net = layers.mlp([2, 16, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    res = train.fit(net, params, spiral, optimizer=optax.sgd(3.0, momentum=0.9), epochs=60, patience=3,
                    progress=False)
    h = res.history
    assert h.stopped_early and h.stopped_epoch == h.epoch[-1] == h.best_epoch + 3
    assert h.restored_epoch == h.best_epoch


def test_resuming_a_run_that_is_already_done_is_refused(spiral, tmp_path):
    net = layers.mlp([2, 4, 2])
    _, params = net.init(jax.random.key(0))
    path = str(tmp_path / "c.safetensors")
    train.fit(net, params, spiral, epochs=2, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="trained 2 epochs already; ask for epochs > 2"):
        train.fit(net, params, spiral, epochs=2, resume=path, progress=False)


@pytest.mark.parametrize("y_rows", [32, 65])
def test_make_epoch_refuses_targets_that_do_not_match_the_examples(y_rows):
    """x of 64 rows with y of 32 trained the missing rows on y's last label (the gather clamps); now refused,
    at trace time, naming both shapes."""
    step = train.make_step(lambda p, x, y, key: jnp.sum((p - x.mean()) ** 2), optax.sgd(0.1), has_aux=False)
    epoch = jax.jit(train.make_epoch(step, 8))
    state = train.TrainState.create(jnp.zeros(()), optax.sgd(0.1))
    with pytest.raises(ValueError, match=rf"x has 64 rows but y has shape \({y_rows},\)"):
        epoch(state, jnp.ones((64, 2)), jnp.zeros((y_rows,), jnp.int32), jax.random.key(0))
