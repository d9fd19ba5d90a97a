"""The training API in pieces: TrainState, make_step, make_epoch, EarlyStopping, callable losses, model ops, hooks."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet
from funcnet import checkpoint, data, layers, train
from funcnet.train.steps import loss_function


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
    step = train.make_step(train.make_objective(net, "softmax_cross_entropy_with_integer_labels", lam=1e-3), optimizer)
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
    named = train.fit(net, params, spiral, loss="softmax_cross_entropy_with_integer_labels", **kw)
    mine = train.fit(net, params, spiral, loss=optax.softmax_cross_entropy_with_integer_labels, **kw)
    for a, b in zip(jax.tree.leaves(named.params), jax.tree.leaves(mine.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert mine.history.val_accuracy[-1] == pytest.approx(named.history.val_accuracy[-1])
    with pytest.raises(ValueError, match="unknown loss 'nope'.*callable"):
        train.fit(net, params, spiral, loss="nope", **kw)


def test_the_model_carries_its_ops_so_model_and_loss_cannot_disagree():
    manual, twin = layers.mlp([2, 4, 2]), layers.mlp([2, 4, 2], ops=funcnet.reference)
    assert manual.ops is layers.MANUAL and twin.ops is funcnet.reference
    assert loss_function("softmax_cross_entropy_with_integer_labels", twin) is \
        funcnet.reference.losses.softmax_cross_entropy_with_integer_labels
    assert loss_function("softmax_cross_entropy_with_integer_labels", manual) is \
        funcnet.losses.softmax_cross_entropy_with_integer_labels
    # ops=funcnet names the same ops as the default: they mix, and mlp fuses on them as on the default
    assert layers.serial(layers.Dense(3), layers.Relu(ops=funcnet)).ops is layers.MANUAL
    fused = layers.mlp([2, 4, 4, 2], ops=funcnet)
    _, params = fused.init(jax.random.key(0))
    assert "activation_affine" in str(jax.make_jaxpr(lambda p: fused.apply(p, jnp.ones((1, 2))))(params))
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


def test_the_old_name_of_the_integer_label_loss_still_works_with_a_warning(spiral):
    net = layers.mlp([2, 4, 2])
    with pytest.warns(DeprecationWarning, match="'softmax_cross_entropy_with_integer_labels'"):
        old = loss_function("softmax_cross_entropy", net)
    assert old is loss_function("softmax_cross_entropy_with_integer_labels", net) is \
        funcnet.losses.softmax_cross_entropy_with_integer_labels
    assert "softmax_cross_entropy" not in train.LOSSES  # the CLI offers the new name only
    _, params = net.init(jax.random.key(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the default loss is the new name: no warning
        assert train.evaluate(net, params, spiral.val) == train.evaluate(
            net, params, spiral.val, "softmax_cross_entropy_with_integer_labels")
        assert not [w for w in caught if "loss name" in str(w.message)]
        old_fit = train.fit(net, params, spiral, loss="softmax_cross_entropy", epochs=1, progress=False)
    ours = [w for w in caught if "loss name" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is DeprecationWarning and ours[0].filename == __file__
    assert old_fit.history == train.fit(net, params, spiral, epochs=1, progress=False).history


# ------------------------------------------------------------------------ hooks
class Recorder:
    """A hook by shape alone (no base class): records each call, and asks to stop after epoch ``stop_at``."""

    def __init__(self, name, log, stop_at=None):
        self.name, self.log, self.stop_at = name, log, stop_at

    def on_start(self, start, epochs):
        self.log.append((self.name, "start", start, epochs))

    def on_epoch(self, epoch, state, stopper, history):
        self.log.append((self.name, "epoch", epoch, history.train_loss[-1], history.val_loss[-1],
                         history.val_accuracy[-1], history.stopped_epoch, state.params))
        return epoch == self.stop_at

    def on_end(self, history):
        self.log.append((self.name, "end", len(history.epoch)))


def test_a_hook_receives_its_calls_in_order_with_each_epochs_metrics(spiral):
    net = layers.mlp([2, 8, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    log = []
    hook = Recorder("hook", log)
    assert isinstance(hook, train.Hook)
    res = train.fit(net, params, spiral, epochs=3, progress=False, hooks=[hook],
                    callback=lambda epoch, p, history: log.append(("callback", epoch)))
    h = res.history
    assert [entry[:3] if entry[1:2] == ("epoch",) else entry for entry in log] == [
        ("hook", "start", 0, 3),
        ("callback", 1), ("hook", "epoch", 1), ("callback", 2), ("hook", "epoch", 2),
        ("callback", 3), ("hook", "epoch", 3),
        ("hook", "end", 3)]
    epochs = [entry for entry in log if entry[:2] == ("hook", "epoch")]
    assert [e[3:6] for e in epochs] == list(zip(h.train_loss, h.val_loss, h.val_accuracy))
    assert leaves_equal(epochs[-1][7], res.params)  # the state after the epoch


def test_a_hook_that_asks_to_stop_stops_fit_as_the_callback_does(spiral, tmp_path):
    net = layers.mlp([2, 8, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    log = []
    path = tmp_path / "run.safetensors"
    res = train.fit(net, params, spiral, epochs=10, progress=False, checkpoint=str(path),
                    hooks=[Recorder("first", log, stop_at=2), Recorder("second", log)])
    by_callback = train.fit(net, params, spiral, epochs=10, progress=False, callback=lambda e, p, h: e == 2)
    assert res.history == by_callback.history
    assert (res.history.epoch, res.history.stopped_early, res.history.stopped_epoch) == ([1, 2], True, 2)
    assert leaves_equal(res.params, by_callback.params)
    # every hook sees the last epoch, the later ones with the stop already recorded, and every hook ends
    assert [(e[0], e[2], e[6]) for e in log if e[1] == "epoch"] == [
        ("first", 1, None), ("second", 1, None), ("first", 2, None), ("second", 2, 2)]
    assert [e for e in log if e[1] == "end"] == [("first", "end", 2), ("second", "end", 2)]
    # fit's own checkpoint runs after the hooks given, so it records the stop
    assert checkpoint.read_config(path)[1]["history"]["stopped_epoch"] == 2


def test_every_started_hook_ends_when_a_hook_fails(spiral):
    net = layers.mlp([2, 4, 2])
    _, params = net.init(jax.random.key(0))
    log = []

    class Failing(train.Hook):  # a subclass inherits the methods it leaves out
        def on_epoch(self, epoch, state, stopper, history):
            raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        train.fit(net, params, spiral, epochs=3, progress=False, hooks=[Recorder("before", log), Failing(),
                                                                         Recorder("after", log)])
    assert [e[:2] for e in log] == [("before", "start"), ("after", "start"), ("before", "epoch"),
                                    ("before", "end"), ("after", "end")]


@pytest.mark.parametrize("hooks, fragment", [
    ([object()], "has no on_start, on_epoch, on_end method"),
    ([Recorder("one", []), type("OnlyEpoch", (), {"on_epoch": lambda *a: None})()], "has no on_start, on_end"),
    (Recorder("alone", []), "hooks must be a list"),
    ("progress", "hooks must be a list"),
])
def test_hooks_are_checked_before_training(spiral, hooks, fragment):
    net = layers.mlp([2, 4, 2])
    _, params = net.init(jax.random.key(0))
    with pytest.raises(TypeError, match=fragment):
        train.fit(net, params, spiral, epochs=1, progress=False, hooks=hooks)


def test_the_deprecated_callbacks_module_reexports_the_hooks_with_their_old_calls(spiral, tmp_path):
    import importlib
    import sys

    sys.modules.pop("funcnet.callbacks", None)
    with pytest.warns(DeprecationWarning, match="funcnet.callbacks is deprecated"):
        callbacks = importlib.import_module("funcnet.callbacks")
    from funcnet.train import hooks

    assert callbacks.Checkpointer is hooks.Checkpointer and callbacks.ProgressBar is hooks.ProgressBar
    net = layers.mlp([2, 4, 2])
    _, params = net.init(jax.random.key(0))
    optimizer = optax.sgd(0.1)
    state, stopper = train.TrainState.create(params, optimizer), train.EarlyStopping.create(params)
    history = train.History()
    history.record(1, 0.5, 0.75, 0.6, 0.5)
    saver = callbacks.Checkpointer(tmp_path / "c.safetensors")
    saver(1, state, stopper, history)  # hook(epoch, state, stopper, history) and close(), as before
    saver.close()
    restored = callbacks.Checkpointer.restore(tmp_path / "c.safetensors", state, stopper)
    assert restored[2] == history and leaves_equal(restored[0].params, params)
