"""``fit``: the pure pieces assembled into one compiled program per epoch, with hooks between epochs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.data import Dataset
from funcnet.layers import Layer
from funcnet.ops.inputs import static_int
from funcnet.train.hooks import Callback, Checkpointer, Hook, ProgressBar, as_hooks
from funcnet.train.state import EarlyStopping, History, TrainState, check_float_params, check_optimizer, restore_state
from funcnet.train.steps import (DEFAULT_LOSS, Loss, canonical_loss, check_lam, check_splits, make_epoch,
                                 make_metrics, make_objective, make_step)

__all__ = ["FitResult", "fit", "SEED_LIMIT"]


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the final (or best) parameters, the optimizer state and the :class:`History`."""

    params: Any
    opt_state: Any
    history: History


#: Seeds of ``jax.random.key`` keep 32 bits: seeds that differ above them give the same key.
SEED_LIMIT = 2**32


def _check_seed(fn: str, seed: Any) -> int:
    seed = static_int(fn, "seed", seed, 0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{fn}: seed must be below 2**32 = {SEED_LIMIT} (JAX keeps 32 bits of it, so larger "
                         f"seeds repeat smaller ones), got {seed}")
    return seed


def _check_data(fn: str, model: Layer, params, data) -> None:
    """``data`` is a Dataset whose splits pass :func:`~funcnet.train.steps.check_splits`."""
    if not all(hasattr(data, s) for s in ("train", "val")) or not hasattr(data.train, "x"):
        raise TypeError(f"{fn}: data must be a funcnet.data.Dataset (train, val and test splits), got "
                        f"{type(data).__name__}; load one with funcnet.data.load(...), or build "
                        "Dataset(train, val, test, ...) from the Splits of funcnet.data.split(x, y)")
    splits = {"training": data.train, "validation": data.val, **({"test": data.test} if hasattr(data, "test")
                                                                   else {})}
    check_splits(fn, model, params, splits)


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


def _mark_stopped(history: History, epoch: int) -> None:
    history.stopped_early, history.stopped_epoch = True, epoch


def fit(model: Layer, params, data: Dataset, *, loss: str | Loss = DEFAULT_LOSS,
        optimizer: optax.GradientTransformation | None = None, epochs: int = 30, batch_size: int = 32,
        penalty: str | None = "l2", lam: float = 0.0, patience: int | None = None, seed: int = 0,
        progress: bool = True, checkpoint: str | None = None, resume: str | None = None,
        config: Mapping | None = None, mesh: jax.sharding.Mesh | str | None = None, compute_dtype: Any = None,
        callback: Callable[[int, Any, History], bool | None] | None = None,
        hooks: Sequence[Hook] | None = None) -> FitResult:
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
        count from 1); returning True stops training. It runs as the first hook.
      hooks: :class:`~funcnet.train.Hook` objects (``on_start``, ``on_epoch``,
        ``on_end``) called between epochs, in order, after ``callback`` and
        before the progress bar and the checkpoint; an ``on_epoch`` that
        returns True stops training.

    Returns:
      A :class:`FitResult` with the final (or best) parameters, the optimizer
      state and the :class:`History`.
    """
    epochs = static_int("fit", "epochs", epochs, 1)
    batch_size = static_int("fit", "batch_size", batch_size, 1)
    check_lam("fit", lam)
    if patience is not None:
        patience = static_int("fit", "patience", patience, 1)
    seed = _check_seed("fit", seed)
    _check_data("fit", model, params, data)
    loss = canonical_loss(loss)
    check_float_params("fit", params)
    given_hooks = [*([Callback(callback, fn="fit")] if callback is not None else []), *as_hooks("fit", hooks)]
    saver = Checkpointer(checkpoint, resume, config, fn="fit") if checkpoint is not None else None
    optimizer = optax.sgd(0.1, momentum=0.9) if optimizer is None else optimizer
    check_optimizer("fit", optimizer)
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
        state, stopper, history = restore_state(resume, state, stopper)
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

    run_hooks = [*given_hooks, *([ProgressBar()] if progress else []), *([saver] if saver is not None else [])]
    key = jax.random.key(seed)
    started = []
    try:
        for hook in run_hooks:
            hook.on_start(start, epochs)
            started.append(hook)
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
            for hook in run_hooks:  # each sees a stop asked for before it
                if stop:
                    _mark_stopped(history, epoch + 1)
                stop = bool(hook.on_epoch(epoch + 1, state, stopper, history)) or stop
            if stop:
                _mark_stopped(history, epoch + 1)
                break
    finally:
        for hook in started:
            hook.on_end(history)
    params = state.params
    if patience is not None and history.best_epoch is not None:
        params, history.restored_epoch = stopper.best_params, history.best_epoch
    return FitResult(params, state.opt_state, history)
