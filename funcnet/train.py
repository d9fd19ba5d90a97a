"""Training: the objective, a compiled step and epoch, early stopping, and ``fit`` built from them.

The objective is the lecture's regularised empirical risk

    J(θ) = (1/N) Σ_n loss(f(x_n; θ), y_n) + λ Ω(θ)

with Ω the L1 or L2 penalty of the weights (biases excluded). Optimizers are
Optax's; :mod:`funcnet.schedules` adds the lecture's decay schedules.

Each piece is a pure function over pytrees, in the style of Optax, usable in a
loop of your own::

    objective = train.make_objective(model, "softmax_cross_entropy", lam=1e-4)
    step = jax.jit(train.make_step(objective, optax.adam(1e-3)))
    state = train.TrainState.create(params, optax.adam(1e-3))
    for x, y in batches:
        state, loss = step(state, x, y)

:func:`fit` assembles them: each epoch is one compiled program (the shuffled
minibatch steps as one ``lax.scan``, the evaluation on the training and
validation splits, and the early-stopping bookkeeping); between epochs the host
only records the metrics and runs the hooks of :mod:`funcnet.callbacks`
(progress bar, checkpoint, your callback).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from funcnet._trees import cast_floats
from funcnet.data import Dataset, Split
from funcnet.layers import MANUAL, Layer
from funcnet.second_order import hessian_matrix

__all__ = [
    "LOSSES", "make_objective", "mixed_precision", "TrainState", "make_step", "make_epoch", "make_metrics",
    "EarlyStopping", "History", "FitResult", "fit", "fit_many", "evaluate",
    "newton", "newton_step", "grid_search", "random_search", "SearchResult",
]

#: Loss names accepted wherever a loss is (the CLI's ``--loss``): the op in the model's ``ops.losses`` and
#: whether it classifies. Any callable ``loss(outputs, targets) -> per-example losses`` is accepted too.
LOSSES: Mapping[str, tuple[str, bool]] = {
    "softmax_cross_entropy": ("softmax_cross_entropy_with_integer_labels", True),
    "multiclass_svm": ("multiclass_svm_loss", True),
    "squared_error": ("squared_error", False),
    "l2_loss": ("l2_loss", False),
}
PENALTIES = ("l2", "l1")

Loss = Callable[[Any, Any], Any]


def loss_function(loss: str | Loss, model: Layer) -> Loss:
    """The per-example loss ``loss(outputs, targets)``: a name of :data:`LOSSES` (from the model's ops) or a callable."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}, or pass a callable "
                         "loss(outputs, targets) -> per-example losses")
    return getattr(_ops(model).losses, LOSSES[loss][0])


def _ops(model: Layer):
    return getattr(model, "ops", None) or MANUAL


def mixed_precision(apply: Callable, compute_dtype: Any = None) -> Callable:
    """``apply(params, x, **kw)`` run in ``compute_dtype``: float parameters and inputs are cast on the way in.

    The caller's parameters keep their own dtype (float32 master weights), and
    their gradients come back in it through the cast. ``None`` returns ``apply``.
    """
    if compute_dtype is None:
        return apply

    def cast_apply(params, x, **kwargs):
        return apply(cast_floats(params, compute_dtype), x.astype(compute_dtype), **kwargs)

    return cast_apply


def make_objective(model: Layer, loss: str | Loss = "softmax_cross_entropy", *, penalty: str | None = "l2",
                   lam: Any = 0.0, compute_dtype: Any = None) -> Callable:
    """``objective(params, x, y, key=None) -> (J, outputs)``: mean data loss + λ·penalty.

    The loss (a name of :data:`LOSSES` or any callable ``loss(outputs, targets)``)
    and the penalty (``"l2"``, ``"l1"`` or None) come from the model's op
    namespace (``model.ops``), so a model built on ``funcnet.reference`` trains
    on autodiff throughout. ``lam`` may be traced (``fit_many`` vmaps over it).
    With a ``key`` the model runs in training mode (dropout on). With a
    ``compute_dtype`` (e.g. ``jnp.bfloat16``) the parameters and inputs are cast
    to it for the forward and backward pass (mixed precision): the parameters
    themselves stay in their own dtype (float32 master weights), their
    gradients come back in it through the cast, and the loss is averaged in
    float32.
    """
    loss_fn = loss_function(loss, model)
    if penalty is not None and penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; known: {', '.join(PENALTIES)}")
    if isinstance(lam, (int, float, np.number)):  # arrays may be traced (fit_many); fit checks its own lam
        _check_lam("make_objective", lam)
    penalty_fn = None if penalty is None else getattr(_ops(model).losses, f"{penalty}_penalty")
    apply = mixed_precision(model.apply, compute_dtype)

    def objective(params, x, y, key=None):
        out = apply(params, x, key=key, train=key is not None)
        j = jnp.mean(loss_fn(out, y).astype(jnp.float32))
        if penalty_fn is not None:
            j = j + lam * penalty_fn(params)
        return j, out

    return objective


# ----------------------------------------------------------- the pure pieces
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """What one optimisation step changes: the parameters, the optimizer state and the number of steps taken."""

    params: Any
    opt_state: Any
    step: Any

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_step(objective: Callable, optimizer: optax.GradientTransformation, *, has_aux: bool = True) -> Callable:
    """``step(state, x, y, key=None) -> (state, J)``: one gradient step on one minibatch (pure; ``jit`` it).

    ``objective(params, x, y, key)`` returns ``(J, aux)`` (as from
    :func:`make_objective`), or ``J`` alone with ``has_aux=False``.
    """

    def step(state: TrainState, x, y, key=None):
        value, grads = jax.value_and_grad(objective, has_aux=has_aux)(state.params, x, y, key)
        j = value[0] if has_aux else value
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), j

    return step


def make_epoch(step: Callable, batch_size: int, *, batch_sharding: Any = None) -> Callable:
    """``epoch(state, x, y, key) -> (state, mean J)``: one shuffled pass of ``step`` as one ``lax.scan``.

    ``len(x) // batch_size`` steps (the remainder of the shuffle sits the epoch
    out); step ``i`` gets the key ``fold_in(key, i)``. With ``batch_sharding``
    each minibatch is split over the mesh's data axis.
    """

    def epoch(state: TrainState, x, y, key):
        n = x.shape[0]
        if jnp.shape(y)[:1] != (n,):  # a gather past y's end would clamp: the missing rows train on y's last row
            raise ValueError(f"train.make_epoch: x has {n} rows but y has shape {tuple(jnp.shape(y))}; give one "
                             "target (or label) per example")
        steps = n // batch_size
        order = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)

        def body(state, idx_and_i):
            idx, i = idx_and_i
            xb, yb = x[idx], y[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            return step(state, xb, yb, jax.random.fold_in(key, i))

        state, losses = jax.lax.scan(body, state, (order, jnp.arange(steps)))
        return state, jnp.mean(losses)

    return epoch


def make_metrics(model: Layer, loss: str | Loss = "softmax_cross_entropy") -> Callable:
    """``metrics(params, x, y) -> (mean loss, accuracy)``; accuracy is NaN unless ``y`` holds integer labels.

    For evaluation (differentiate :func:`make_objective` to train).
    """
    loss_fn = loss_function(loss, model)

    def metrics(params, x, y):
        out = model.apply(params, x)
        loss_value = jnp.mean(loss_fn(out, y).astype(jnp.float32))
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == y) if jnp.issubdtype(y.dtype, jnp.integer) else jnp.nan
        return loss_value, accuracy

    return metrics


def evaluate(model: Layer, params, splits: Split | Mapping[str, Split],
             loss: str | Loss = "softmax_cross_entropy") -> dict:
    """Mean data loss (no penalty) and accuracy of ``params`` on a split, or on a mapping of named splits.

    A mapping is evaluated in one compiled program: ``{"test": {"loss": ..., "accuracy": ...}, ...}``.
    Accuracy is ``None`` when the targets are not integer class labels.
    """
    metrics = make_metrics(model, loss)
    one = not isinstance(splits, Mapping)
    named = {"split": splits} if one else dict(splits)
    for name, split in named.items():
        what = "split" if one else f"split {name!r}"
        if not (hasattr(split, "x") and hasattr(split, "y")):
            raise TypeError(f"evaluate: the {what} must be a funcnet.data.Split (x, y), e.g. ds.test, got "
                            f"{split!r:.60}")
        if len(split.x) == 0:
            raise ValueError(f"evaluate: the {what} is empty; its loss and accuracy are undefined")
    arrays = {k: (jnp.asarray(s.x), jnp.asarray(s.y)) for k, s in named.items()}
    values = jax.device_get(jax.jit(lambda p, a: {k: metrics(p, *xy) for k, xy in a.items()})(params, arrays))
    out = {k: {"loss": float(values[k][0]), "accuracy": _finite_or_none(values[k][1])} for k in named}
    return out["split"] if one else out


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """The best parameters so far and the epochs since the monitored loss last fell (a pytree; pure updates).

    ``update`` runs inside the compiled epoch; whether to stop (``bad_epochs >=
    patience``) is the caller's decision.
    """

    best_params: Any
    best_loss: Any
    best_epoch: Any
    bad_epochs: Any

    @classmethod
    def create(cls, params) -> "EarlyStopping":
        return cls(params, jnp.asarray(jnp.inf, jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def update(self, params, loss, epoch) -> "EarlyStopping":
        better = loss < self.best_loss  # NaN is never better
        keep = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        return EarlyStopping(jax.tree.map(keep, params, self.best_params), keep(loss, self.best_loss),
                             keep(jnp.asarray(epoch, jnp.int32), self.best_epoch),
                             jnp.where(better, 0, self.bad_epochs + 1))


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run (plain lists, ready for JSON and plotting).

    Accuracies are ``None`` for regression. ``stopped_epoch`` is the epoch after
    which early stopping (or a callback) ended the run, and ``restored_epoch`` the
    epoch whose parameters ``fit`` returned (the best one, with ``patience``).
    """

    epoch: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float | None] = dataclasses.field(default_factory=list)
    val_loss: list[float | None] = dataclasses.field(default_factory=list)
    val_accuracy: list[float | None] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    stopped_epoch: int | None = None
    restored_epoch: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def record(self, epoch: int, train_loss, train_accuracy, val_loss, val_accuracy) -> None:
        self.epoch.append(epoch)
        self.train_loss.append(float(train_loss))
        self.train_accuracy.append(_finite_or_none(train_accuracy))
        self.val_loss.append(_finite_or_none(val_loss))
        self.val_accuracy.append(_finite_or_none(val_accuracy))


@dataclasses.dataclass
class FitResult:
    params: Any
    opt_state: Any
    history: History


def _count(fn: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, or an error naming ``fn``, ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_lam(fn: str, lam: Any) -> None:
    number = isinstance(lam, (int, float, np.number)) or (hasattr(lam, "shape") and np.shape(lam) == ()
                                                            and np.issubdtype(np.asarray(lam).dtype, np.number))
    if isinstance(lam, bool) or not number:
        raise TypeError(f"{fn}: lam must be a number, got {lam!r:.60}")
    value = float(lam)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: lam (the penalty strength) must be finite and >= 0, got {lam!r}")


#: Seeds of ``jax.random.key`` keep 32 bits: seeds that differ above them give the same key.
SEED_LIMIT = 2**32


def _check_seed(fn: str, seed: Any) -> int:
    seed = _count(fn, "seed", seed, 0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{fn}: seed must be below 2**32 = {SEED_LIMIT} (JAX keeps 32 bits of it, so larger "
                         f"seeds repeat smaller ones), got {seed}")
    return seed


def _check_data(fn: str, model: Layer, params, data) -> None:
    """Finite inputs (and regression targets), and class labels within the model's outputs, in every split.

    Inside the compiled epoch the values are traced and no longer checked: a NaN
    feature or a label past the last output would only show up as a NaN loss.
    """
    if not all(hasattr(data, s) for s in ("train", "val")) or not hasattr(data.train, "x"):
        raise TypeError(f"{fn}: data must be a funcnet.data.Dataset (train, val and test splits), got "
                        f"{type(data).__name__}; load one with funcnet.data.load(...), or build "
                        "Dataset(train, val, test, ...) from the Splits of funcnet.data.split(x, y)")
    splits = {"training": data.train, "validation": data.val, **({"test": data.test} if hasattr(data, "test")
                                                                   else {})}
    width = None
    for split_name, split in splits.items():
        for what, values in (("inputs", split.x), ("targets", split.y)):
            values = np.asarray(values)
            if values.size and np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                bad = ~np.isfinite(values.reshape(len(values), -1))
                raise ValueError(f"{fn}: the {split_name} {what} hold {int(bad.sum())} NaN or infinite values "
                                 f"(first in row {int(np.argmax(bad.any(axis=1)))}); remove or impute them")
        labels = np.asarray(split.y)
        if not labels.size or not np.issubdtype(labels.dtype, np.integer):
            continue
        if width is None:
            width = jax.eval_shape(model.apply, params, jnp.asarray(np.asarray(split.x)[:1])).shape[-1]
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= width:
            raise ValueError(f"{fn}: the {split_name} labels must lie in [0, {width}) for a model with {width} "
                             f"outputs, got values from {lo} to {hi}; give the output layer at least {hi + 1} "
                             "units, or fix the labels")


def _mesh(fn: str, mesh, batch_size: int):
    """``(mesh, batch sharding, replicated sharding)`` for ``mesh`` (a Mesh or ``"auto"``), checked."""
    from funcnet import parallel

    if isinstance(mesh, str) and mesh == "auto":
        mesh = parallel.data_mesh()
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh or 'auto', got {mesh!r}")
    if parallel.DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"{fn}: the mesh needs a '{parallel.DATA_AXIS}' axis to split the batch over; "
                         f"its axes are {mesh.axis_names}")
    n_dev = mesh.shape[parallel.DATA_AXIS]
    if batch_size % n_dev:
        raise ValueError(f"{fn}: batch_size {batch_size} does not split over the {n_dev} devices of the mesh's "
                         f"'{parallel.DATA_AXIS}' axis; use a multiple of {n_dev}")
    return mesh, parallel.batch_sharded(mesh), parallel.replicated(mesh)


def fit(model: Layer, params, data: Dataset, *, loss: str | Loss = "softmax_cross_entropy",
        optimizer: optax.GradientTransformation | None = None, epochs: int = 30, batch_size: int = 32,
        penalty: str | None = "l2", lam: float = 0.0, patience: int | None = None, seed: int = 0,
        progress: bool = True, checkpoint: str | None = None, resume: str | None = None,
        config: Mapping | None = None, mesh: jax.sharding.Mesh | str | None = None, compute_dtype: Any = None,
        callback: Callable[[int, Any, "History"], bool | None] | None = None) -> FitResult:
    """Train ``params`` of ``model`` on ``data`` by minibatch gradient descent.

    Each epoch is one pass over the training split in shuffled minibatches of
    ``batch_size`` (``len(train) // batch_size`` iterations; the remainder of a
    shuffle is left out of that epoch). The epoch, the evaluation of loss and
    accuracy on the training and validation splits, and the early-stopping
    bookkeeping are one compiled program, compiled once per run.

    Args:
      model: the network (``init``/``apply`` pair); its ``ops`` (``funcnet`` or
        ``funcnet.reference``) also supply the named losses and the penalty.
      params: initial parameters.
      data: train/val/test splits.
      loss: a name of :data:`LOSSES`, or a callable ``loss(outputs, targets)``
        returning per-example losses.
      optimizer: an Optax transformation (default: SGD with momentum 0.9, lr 0.1).
      epochs: the epoch to train up to (epochs count from 1; a resumed run goes on
        from its checkpoint's epoch).
      batch_size: examples per minibatch.
      penalty: ``"l2"``, ``"l1"`` or None, applied to the weights with weight ``lam``.
      lam: regularisation strength λ.
      patience: early stopping: stop after this many epochs without a lower
        validation loss and return the best parameters (None: no early stopping).
      seed: seeds shuffling and dropout; the run is deterministic given it.
      progress: show a progress bar.
      checkpoint: if given, the training state is saved there after every epoch
        (atomically), so an interrupted run can ``resume``. The file must not
        exist yet, unless it is the ``resume`` file itself (training then
        continues in place): fit replaces only the file it writes.
      resume: a checkpoint written by a previous ``fit`` with the same settings.
      config: extra JSON-able settings stored in the checkpoint.
      mesh: data-parallel training over a ``jax.sharding.Mesh`` with a
        ``"data"`` axis (see :mod:`funcnet.parallel`), or ``"auto"`` for a
        ``"data"`` mesh over all visible devices: each minibatch is split
        over the devices, parameters are replicated, and XLA reduces the
        gradients. ``batch_size`` must be a multiple of the number of devices
        on that axis. A second ``"model"`` axis (``parallel.mesh_2d``) also
        splits each Dense layer's units over its devices.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: forward and backward
        in that dtype, parameters (master weights), optimizer state and loss
        average in float32 (see :func:`make_objective`).
      callback: ``callback(epoch, params, history)`` after every epoch (epochs
        count from 1); returning True stops training.

    Returns:
      A :class:`FitResult` with the final (or best) parameters, the optimizer
      state and the :class:`History`.
    """
    from funcnet import callbacks

    epochs = _count("fit", "epochs", epochs, 1)
    batch_size = _count("fit", "batch_size", batch_size, 1)
    _check_lam("fit", lam)
    if patience is not None:
        patience = _count("fit", "patience", patience, 1)
    seed = _check_seed("fit", seed)
    _check_data("fit", model, params, data)
    saver = callbacks.Checkpointer(checkpoint, resume, config, fn="fit") if checkpoint is not None else None
    optimizer = optax.sgd(0.1, momentum=0.9) if optimizer is None else optimizer
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"fit: optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got "
                        f"{optimizer!r:.60}")
    train_xy = (jnp.asarray(data.train.x), jnp.asarray(data.train.y))
    if train_xy[0].shape[0] < 1:
        raise ValueError("fit: the training split is empty")
    batch_size = min(batch_size, train_xy[0].shape[0])
    has_val = data.val.x.shape[0] > 0
    val_xy = (jnp.asarray(data.val.x), jnp.asarray(data.val.y)) if has_val else None
    batch_sharding = None
    if mesh is not None:
        mesh, batch_sharding, replicated = _mesh("fit", mesh, batch_size)
        train_xy, val_xy = jax.device_put((train_xy, val_xy), replicated)

    objective = make_objective(model, loss, penalty=penalty, lam=lam, compute_dtype=compute_dtype)
    run_epoch = make_epoch(make_step(objective, optimizer), batch_size, batch_sharding=batch_sharding)
    metrics = make_metrics(model, loss)

    @jax.jit
    def train_epoch(state, stopper, epoch, key, train_xy, val_xy):
        """Epoch ``epoch + 1``: the steps, the metrics, and the early-stopping update."""
        state, _ = run_epoch(state, *train_xy, jax.random.fold_in(key, epoch))
        train_metrics = metrics(state.params, *train_xy)
        val_metrics = metrics(state.params, *val_xy) if val_xy is not None else (jnp.nan, jnp.nan)
        stopper = stopper.update(state.params, val_metrics[0] if val_xy is not None else train_metrics[0],
                                 epoch + 1)
        return state, stopper, (*train_metrics, *val_metrics)

    state = TrainState.create(params, optimizer)
    stopper = EarlyStopping.create(params)
    history = History()
    if resume is not None:
        state, stopper, history = callbacks.Checkpointer.restore(resume, state, stopper)
    if mesh is not None:  # parameters (and the best ones) split per parallel.param_shardings, the rest replicated
        from funcnet import parallel

        p_sh = parallel.param_shardings(state.params, mesh)
        # optimizer state that mirrors a parameter is split like it; counts and the like are replicated
        o_sh = optax.tree_map_params(optimizer, lambda _, sharding: sharding, jax.eval_shape(optimizer.init,
                                     state.params), p_sh, transform_non_params=lambda _: replicated)
        state = jax.device_put(state, TrainState(p_sh, o_sh, replicated))
        stopper = jax.device_put(stopper, EarlyStopping(p_sh, replicated, replicated, replicated))
    start = int(history.epoch[-1]) if history.epoch else 0
    if start >= epochs:
        raise ValueError(f"fit: the run to resume has trained {start} epochs already; ask for epochs > {start} "
                         "to train more")

    hooks = [h for h in (callbacks.ProgressBar(start, epochs) if progress else None, saver) if h is not None]
    key = jax.random.key(seed)
    try:
        for epoch in range(start, epochs):
            state, stopper, record = train_epoch(state, stopper, epoch, key, train_xy, val_xy)
            # one transfer per epoch: the record and the stopper's counters together
            record, (best_epoch, bad_epochs) = jax.device_get((record, (stopper.best_epoch, stopper.bad_epochs)))
            train_loss, train_acc, val_loss, val_acc = (float(v) for v in record)
            history.record(epoch + 1, train_loss, train_acc, val_loss, val_acc)
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"fit: the training loss became {train_loss} at epoch {epoch + 1}. The inputs, labels and lam "
                    "were checked before training, so likely causes are: a learning rate (or schedule) too high "
                    "for this problem, inputs of very large magnitude (standardize them), or a model or loss that "
                    "overflows in its dtype; try a lower learning rate first")
            history.best_epoch = int(best_epoch) or None
            stop = patience is not None and int(bad_epochs) >= patience
            if callback is not None and callback(epoch + 1, state.params, history):
                stop = True
            if stop:
                history.stopped_early, history.stopped_epoch = True, epoch + 1
            for hook in hooks:
                hook(epoch + 1, state, stopper, history)
            if stop:
                break
    finally:
        for hook in hooks:
            hook.close()
    params = state.params
    if patience is not None and history.best_epoch is not None:
        params, history.restored_epoch = stopper.best_params, history.best_epoch
    return FitResult(params, state.opt_state, history)


# -------------------------------------------------------------------- fit_many
def fit_many(model: Layer, data: Dataset, *, learning_rates: Sequence[float], lams: Sequence[float],
             seeds: Sequence[int], loss: str | Loss = "softmax_cross_entropy", penalty: str | None = "l2",
             make_optimizer: Callable[..., optax.GradientTransformation] = optax.sgd, epochs: int = 20,
             batch_size: int = 32) -> dict[str, np.ndarray]:
    """Train one candidate per (learning rate, λ, seed) triple *together*, vmapped in one program.

    Only continuous settings may differ between candidates (the network shape
    is shared), so the whole set trains as one compiled ``vmap`` of the epoch:
    ``K`` candidates cost about one larger batch, not ``K`` compilations.

    ``make_optimizer`` is called as ``make_optimizer(learning_rate=...)``; fix
    its other settings with ``functools.partial(optax.sgd, momentum=0.9)``.

    Returns per-candidate arrays (shape ``(K, epochs)`` for curves): ``val_loss``,
    ``val_accuracy``, ``train_loss``, and the final ``params`` stacked on a
    leading axis.
    """
    if not (len(learning_rates) == len(lams) == len(seeds)):
        raise ValueError("fit_many: learning_rates, lams and seeds must have the same length")
    optimizer = optax.inject_hyperparams(make_optimizer)(learning_rate=0.0)
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    val = (jnp.asarray(data.val.x), jnp.asarray(data.val.y))
    batch_size = min(int(batch_size), x.shape[0])
    metrics = make_metrics(model, loss)
    input_shape = (-1,) + tuple(data.train.x.shape[1:])

    def init_one(lr, seed):
        _, params = model.init(jax.random.key(seed), input_shape)
        state = TrainState.create(params, optimizer)
        state.opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        return state

    def epoch_one(state, lam, key):
        objective = make_objective(model, loss, penalty=penalty, lam=lam)
        state, _ = make_epoch(make_step(objective, optimizer), batch_size)(state, x, y, key)
        return state, metrics(state.params, x, y), metrics(state.params, *val)

    states = jax.vmap(init_one)(jnp.asarray(learning_rates, jnp.float32), jnp.asarray(seeds))
    lams_arr = jnp.asarray(lams, jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))

    @jax.jit
    def epoch_all(states, epoch):
        return jax.vmap(epoch_one)(states, lams_arr, jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys))

    curves = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(epochs):
        states, tr, va = epoch_all(states, epoch)
        curves["train_loss"].append(np.asarray(tr[0]))
        curves["val_loss"].append(np.asarray(va[0]))
        curves["val_accuracy"].append(np.asarray(va[1]))
    out = {k: np.stack(v, axis=1) for k, v in curves.items()}
    out["params"] = states.params
    return out


# ---------------------------------------------------------------------- search
@dataclasses.dataclass
class SearchResult:
    """All tried settings with their validation scores; ``best`` is the lowest validation loss."""

    trials: list[dict]
    best: dict


def _run_trials(settings: Iterable[dict], train: Callable[[dict], Mapping[str, float]]) -> SearchResult:
    trials = []
    for s in settings:
        scores = dict(train(dict(s)))
        if "val_loss" not in scores:
            raise ValueError("search: the train function must return a mapping with a 'val_loss' entry")
        trials.append({"settings": dict(s), **scores})
    finite = [t for t in trials if math.isfinite(t["val_loss"])]
    if not finite:
        raise ValueError("search: every trial diverged (no finite validation loss)")
    return SearchResult(trials, min(finite, key=lambda t: t["val_loss"]))


def grid_search(grid: Mapping[str, Sequence], train: Callable[[dict], Mapping[str, float]]) -> SearchResult:
    """Try every combination of ``grid`` (e.g. ``{"lr": [...], "width": [...]}``), select on validation loss.

    ``train(settings) -> {"val_loss": ..., ...}`` trains one model (any shape:
    width, depth and batch size may change) and scores it on the validation split.
    """
    names = list(grid)
    return _run_trials((dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))), train)


def random_search(space: Mapping[str, Callable[[np.random.Generator], Any]], train: Callable[[dict], Mapping],
                  n_trials: int, seed: int = 0) -> SearchResult:
    """Try ``n_trials`` settings drawn from ``space`` (name -> ``sampler(rng)``), select on validation loss.

    Draw scale parameters log-uniformly, e.g. ``"lr": lambda r: 10 ** r.uniform(-4, -1)``.
    """
    rng = np.random.default_rng(seed)
    return _run_trials(({k: sample(rng) for k, sample in space.items()} for _ in range(n_trials)), train)


# ---------------------------------------------------------------------- Newton
def newton_step(loss: Callable, params, damping: float = 1e-4):
    """One damped Newton step ``θ ← θ - (|H| + μI)⁻¹ ∇J`` through the manual rules.

    The Hessian comes from :func:`funcnet.hessian_matrix` (reverse-over-reverse). Its
    eigenvalues are replaced by their absolute values plus ``damping`` (a
    saddle-free Newton step): on a convex loss near its optimum this is plain
    Newton; on a non-convex one it still moves downhill instead of towards a
    saddle or maximum.
    """
    flat, unravel = ravel_pytree(params)
    g, _ = ravel_pytree(jax.grad(loss)(params))
    h = hessian_matrix(loss)(params)
    eigvals, eigvecs = jnp.linalg.eigh((h + h.T) / 2)
    step = eigvecs @ ((eigvecs.T @ g) / (jnp.abs(eigvals) + damping))
    return unravel(flat - step)


def newton(loss: Callable, params, *, steps: int = 10, damping: float = 1e-4, tol: float = 0.0):
    """Run up to ``steps`` damped Newton steps; returns ``(params, losses)`` (losses[0] is the start).

    Stops early once the loss improves by less than ``tol``. For small networks
    only: the Hessian has (number of parameters)² entries.
    """
    step = jax.jit(lambda p: newton_step(loss, p, damping))
    value = jax.jit(loss)
    losses = [float(value(params))]
    for _ in range(steps):
        params = step(params)
        losses.append(float(value(params)))
        if losses[-2] - losses[-1] < tol:
            break
    return params, losses
