"""The host side of :func:`funcnet.train.fit`: small parts that run between compiled epochs.

Each is called as ``hook(epoch, state, stopper, history)`` after an epoch
(epochs count from 1; ``state`` a :class:`~funcnet.train.TrainState`,
``stopper`` the :class:`~funcnet.train.EarlyStopping` state, ``history`` the
:class:`~funcnet.train.History` so far) and closed with ``hook.close()`` when
the run ends, however it ends.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Mapping

import jax.numpy as jnp

from funcnet import checkpoint as ckpt

__all__ = ["Checkpointer", "ProgressBar"]


#: Config keys that :class:`Checkpointer` writes itself.
_OWN_KEYS = ("best_loss", "bad_epochs", "steps", "history")


class Checkpointer:
    """Save the training state to ``path`` after every epoch, so that ``fit(resume=path)`` continues the run.

    Each save is complete or absent (see :func:`funcnet.checkpoint.save`). The
    file must not exist yet, unless it is the ``resume`` file itself (the run then
    continues in place): a checkpoint replaces only a file it wrote.
    """

    def __init__(self, path: str | os.PathLike, resume: str | os.PathLike | None = None,
                 config: Mapping | None = None, *, fn: str = "Checkpointer"):
        self.path = os.fspath(path)
        self.config = dict(config or {})
        clash = sorted(set(self.config) & set(_OWN_KEYS))
        if clash:  # they would replace the run's own entries, and the checkpoint could not be resumed
            raise ckpt.CheckpointError(f"{fn}: config key {clash[0]!r} is reserved for the training state "
                                       f"({', '.join(_OWN_KEYS)}); rename it")
        ckpt._check_json(pathlib.Path(self.path), self.config, "config")  # now, not after the first epoch
        self._replace = (resume is not None and os.path.exists(self.path) and os.path.exists(resume)
                         and os.path.samefile(self.path, resume))
        if os.path.lexists(self.path) and not self._replace:
            raise ckpt.CheckpointError(
                f"{fn}: checkpoint={self.path!r} already exists and a checkpoint does not replace a file it did "
                f"not write; choose a new path, or pass resume={self.path!r} as well to continue it in place")

    def __call__(self, epoch: int, state, stopper, history) -> None:
        best_loss = float(stopper.best_loss)
        ckpt.save(self.path, {"params": state.params, "best": stopper.best_params}, state.opt_state, step=epoch,
                  config={"best_loss": best_loss if math.isfinite(best_loss) else None,
                          "bad_epochs": int(stopper.bad_epochs), "steps": int(state.step),
                          "history": history.to_dict(), **self.config},
                  overwrite=self._replace)
        self._replace = True  # from now on the file is this run's own

    def close(self) -> None:
        pass

    @staticmethod
    def restore(path: str | os.PathLike, state, stopper) -> tuple[Any, Any, Any]:
        """``(state, stopper, history)`` saved at ``path``, shaped like the given ``state`` and ``stopper``."""
        from funcnet.train import EarlyStopping, History, TrainState

        saved = ckpt.restore(path, like={"params": {"params": state.params, "best": stopper.best_params},
                                         "opt_state": state.opt_state})
        history = History.from_dict(saved.config["history"])
        best_loss = saved.config["best_loss"]
        state = TrainState(saved.params["params"], saved.opt_state,
                           jnp.asarray(saved.config.get("steps", 0), jnp.int32))
        stopper = EarlyStopping(saved.params["best"], jnp.asarray(math.inf if best_loss is None else best_loss,
                                                                  jnp.float32),
                                jnp.asarray(history.best_epoch or 0, jnp.int32),
                                jnp.asarray(saved.config["bad_epochs"], jnp.int32))
        return state, stopper, history


class ProgressBar:
    """A ``tqdm`` bar over the epochs, with the latest training and validation loss (and accuracy)."""

    def __init__(self, start: int, epochs: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(range(start, epochs), desc="epochs", unit="epoch", leave=True, initial=start,
                         total=epochs)

    def __call__(self, epoch: int, state, stopper, history) -> None:
        shown = {"loss": history.train_loss[-1], "val_loss": history.val_loss[-1],
                 "val_acc": history.val_accuracy[-1]}
        self._bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items() if v is not None}, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

