"""The state of a training run (TrainState, EarlyStopping, History) and its mapping to and from a checkpoint."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from funcnet import checkpoint as ckpt

__all__ = ["check_float_params", "check_optimizer", "check_same_tree", "TrainState", "EarlyStopping", "History", "CHECKPOINT_KEYS", "checkpoint_state", "restore_state"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """What one optimisation step changes: the parameters, the optimizer state and the number of steps taken."""

    params: Any
    opt_state: Any
    step: Any

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation) -> "TrainState":
        check_optimizer("TrainState.create", optimizer)
        return cls(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def check_optimizer(fn: str, optimizer: Any) -> None:
    """``optimizer`` has Optax's ``init`` and ``update``, or a TypeError naming ``fn`` (a name such as 'adam' is not one)."""
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got "
                        f"{optimizer!r:.60}")


def check_float_params(fn: str, params: Any) -> None:
    """Every leaf of ``params`` is a floating array (gradients need one), or a TypeError naming the first other."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"{fn}: params{jax.tree_util.keystr(path)} is {jnp.result_type(leaf)}, but trained "
                            "parameters must be floating; cast them, e.g. jax.tree.map(lambda p: "
                            "p.astype(jnp.float32), params)")


def check_same_tree(fn: str, names: tuple[str, str], a: Any, b: Any) -> None:
    """``a`` and ``b`` have the same tree structure and leaf shapes, or a ValueError naming the first difference."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise ValueError(f"{fn}: {names[0]} and {names[1]} are different trees ({jax.tree.structure(a)} vs "
                         f"{jax.tree.structure(b)})"[:400] + "; pass the parameters of the same model")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(f"{fn}: {names[0]}{jax.tree_util.keystr(path)} has shape {jnp.shape(x)}, but in "
                             f"{names[1]} {jnp.shape(y)}; pass the parameters of the same model")


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
        check_same_tree("EarlyStopping.update", ("params", "best_params"), params, self.best_params)
        better = loss < self.best_loss  # NaN is never better
        keep = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        return EarlyStopping(jax.tree.map(keep, params, self.best_params), keep(loss, self.best_loss),
                             keep(jnp.asarray(epoch, jnp.int32), self.best_epoch),
                             jnp.where(better, 0, self.bad_epochs + 1))


def finite_or_none(value) -> float | None:
    """``float(value)``, or None for NaN and infinities (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`~funcnet.train.fit` run (plain lists, ready for JSON and plotting).

    Accuracies are ``None`` for regression. ``stopped_epoch`` is the epoch after
    which early stopping (or a hook) ended the run, and ``restored_epoch`` the
    epoch whose parameters ``fit`` returned (the best one, with ``patience``).
    ``hessian_top_eigenvalue`` and ``hessian_trace`` stay empty unless a hook
    fills them (:class:`funcnet.curvature.CurvatureMonitor`, ``funcnet train
    --curvature``): then one value (or ``None``) per epoch. A history saved
    without them reads back with them empty.
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
    hessian_top_eigenvalue: list[float | None] = dataclasses.field(default_factory=list)
    hessian_trace: list[float | None] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def record(self, epoch: int, train_loss, train_accuracy, val_loss, val_accuracy) -> None:
        self.epoch.append(epoch)
        self.train_loss.append(float(train_loss))
        self.train_accuracy.append(finite_or_none(train_accuracy))
        self.val_loss.append(finite_or_none(val_loss))
        self.val_accuracy.append(finite_or_none(val_accuracy))


# ------------------------------------------------------------ checkpoint state
#: The config keys that :func:`checkpoint_state` writes (a run's own config must not use them).
CHECKPOINT_KEYS = ("best_loss", "bad_epochs", "steps", "history")


def checkpoint_state(state: TrainState, stopper: EarlyStopping, history: History) -> tuple[dict, Any, dict]:
    """``(params, opt_state, config)`` for :func:`funcnet.checkpoint.save`: the run's state as a checkpoint.

    ``params`` holds the current and the best parameters; ``config`` the
    counters and the history under :data:`CHECKPOINT_KEYS`.
    """
    best_loss = float(stopper.best_loss)
    config = {"best_loss": best_loss if math.isfinite(best_loss) else None, "bad_epochs": int(stopper.bad_epochs),
              "steps": int(state.step), "history": history.to_dict()}
    return {"params": state.params, "best": stopper.best_params}, state.opt_state, config


def restore_state(path: str | os.PathLike, state: TrainState,
                  stopper: EarlyStopping) -> tuple[TrainState, EarlyStopping, History]:
    """``(state, stopper, history)`` saved at ``path`` (by :func:`checkpoint_state`), shaped like the given ones."""
    saved = ckpt.restore(path, like={"params": {"params": state.params, "best": stopper.best_params},
                                     "opt_state": state.opt_state})
    history = History.from_dict(saved.config["history"])
    best_loss = saved.config["best_loss"]
    state = TrainState(saved.params["params"], saved.opt_state, jnp.asarray(saved.config.get("steps", 0), jnp.int32))
    stopper = EarlyStopping(saved.params["best"], jnp.asarray(math.inf if best_loss is None else best_loss,
                                                              jnp.float32),
                            jnp.asarray(history.best_epoch or 0, jnp.int32),
                            jnp.asarray(saved.config["bad_epochs"], jnp.int32))
    return state, stopper, history
