"""The host side of ``fit``: the :class:`Hook` protocol it calls between compiled epochs, and its own hooks."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from funcnet import checkpoint as ckpt
from funcnet.train.state import CHECKPOINT_KEYS, EarlyStopping, History, TrainState, checkpoint_state, restore_state

__all__ = ["Hook", "Callback", "as_hooks", "ProgressBar", "Checkpointer"]


@runtime_checkable
class Hook(Protocol):
    """What ``fit(..., hooks=[...])`` calls on the host, between its compiled epochs.

    Any object with these three methods is a hook; subclass :class:`Hook` to
    inherit the ones you leave out (they do nothing). In each run ``fit`` calls
    them on every hook, in the order of the list:

    1. ``on_start(start, epochs)`` once, before the first epoch: the run trains
       epochs ``start + 1`` to ``epochs`` (``start`` is 0, or the epoch a resumed
       run was saved at).
    2. ``on_epoch(epoch, state, stopper, history)`` after every epoch (epochs
       count from 1), with the :class:`~funcnet.train.TrainState` after it, the
       :class:`~funcnet.train.EarlyStopping` state, and the
       :class:`~funcnet.train.History` whose last entries are this epoch's
       metrics (``history.train_loss[-1]``, ``history.val_accuracy[-1]``, ...).
       Returning True asks ``fit`` to stop after this epoch, as early stopping
       does: ``history.stopped_early`` and ``history.stopped_epoch`` are set
       before the next hook runs, and every hook still sees this epoch.
    3. ``on_end(history)`` once when the run ends, however it ends (an error or
       an interrupt included).

    ``fit``'s own hooks (:class:`ProgressBar`, :class:`Checkpointer`) run after
    the ones passed in, so a checkpoint records a stop that a hook asked for.
    Like Optax's ``GradientTransformation``, the protocol is only these
    functions; what a hook keeps between calls is its own business.
    """

    def on_start(self, start: int, epochs: int) -> None:
        """Before the first epoch: the run trains epochs ``start + 1`` to ``epochs``."""

    def on_epoch(self, epoch: int, state: TrainState, stopper: EarlyStopping, history: History) -> bool | None:
        """After epoch ``epoch`` (from 1); True asks ``fit`` to stop."""

    def on_end(self, history: History) -> None:
        """Once, when the run ends (after the last epoch, an error or an interrupt)."""


#: The methods of the protocol, in the order ``fit`` calls them.
HOOK_METHODS = tuple(name for name in vars(Hook) if name.startswith("on_"))


class Callback(Hook):
    """``fit``'s ``callback=``: ``callback(epoch, params, history)`` after every epoch as a :class:`Hook`."""

    def __init__(self, callback: Callable[[int, Any, History], bool | None], *, fn: str = "Callback"):
        if not callable(callback):
            raise TypeError(f"{fn}: callback must be a function callback(epoch, params, history), got "
                            f"{callback!r:.60}")
        self.callback = callback

    def on_epoch(self, epoch, state, stopper, history):
        return self.callback(epoch, state.params, history)


def as_hooks(fn: str, hooks: Any) -> list:
    """``hooks`` (a sequence of :class:`Hook`, or None) as a list, or a TypeError naming ``fn`` and what is missing."""
    if hooks is None:
        return []
    if isinstance(hooks, (str, bytes)) or not hasattr(hooks, "__iter__") or isinstance(hooks, Hook):
        raise TypeError(f"{fn}: hooks must be a list of hooks (objects with {', '.join(HOOK_METHODS)}), got "
                        f"{hooks!r:.60}")
    hooks = list(hooks)
    for hook in hooks:
        missing = [m for m in HOOK_METHODS if not callable(getattr(hook, m, None))]
        if missing:
            raise TypeError(f"{fn}: the hook {hook!r:.60} has no {', '.join(missing)} method; a hook has "
                            f"{', '.join(HOOK_METHODS)} (subclass funcnet.train.Hook to inherit the ones you skip)")
    return hooks


class _PlainCalls:
    """``hook(epoch, state, stopper, history)`` and ``hook.close()``: how :mod:`funcnet.callbacks` was called."""

    def __call__(self, epoch: int, state, stopper, history):
        return self.on_epoch(epoch, state, stopper, history)

    def close(self) -> None:
        self.on_end(None)


class Checkpointer(_PlainCalls, Hook):
    """Save the training state to ``path`` after every epoch, so that ``fit(resume=path)`` continues the run.

    Each save is complete or absent (see :func:`funcnet.checkpoint.save`). The
    file must not exist yet, unless it is the ``resume`` file itself (the run then
    continues in place): a checkpoint replaces only a file it wrote.
    """

    def __init__(self, path: str | os.PathLike, resume: str | os.PathLike | None = None,
                 config: Mapping | None = None, *, fn: str = "Checkpointer"):
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ckpt.CheckpointError(f"{fn}: checkpoint must be a file path (a str or os.PathLike), got "
                                       f"{path!r:.60}")
        if config is not None and not isinstance(config, Mapping):
            raise ckpt.CheckpointError(f"{fn}: config must be a dict of JSON-able settings, e.g. "
                                       f"{{'lr': 1e-3}}, got {config!r:.60}")
        self.path = os.fspath(path)
        self.config = dict(config or {})
        clash = sorted(set(self.config) & set(CHECKPOINT_KEYS))
        if clash:  # they would replace the run's own entries, and the checkpoint could not be resumed
            raise ckpt.CheckpointError(f"{fn}: config key {clash[0]!r} is reserved for the training state "
                                       f"({', '.join(CHECKPOINT_KEYS)}); rename it")
        ckpt._check_json(pathlib.Path(self.path), self.config, "config")  # now, not after the first epoch
        self._replace = (resume is not None and os.path.exists(self.path) and os.path.exists(resume)
                         and os.path.samefile(self.path, resume))
        if os.path.lexists(self.path) and not self._replace:
            raise ckpt.CheckpointError(
                f"{fn}: checkpoint={self.path!r} already exists and a checkpoint does not replace a file it did "
                f"not write; choose a new path, or pass resume={self.path!r} as well to continue it in place")

    def on_epoch(self, epoch: int, state, stopper, history) -> None:
        params, opt_state, config = checkpoint_state(state, stopper, history)
        ckpt.save(self.path, params, opt_state, step=epoch, config={**config, **self.config},
                  overwrite=self._replace)
        self._replace = True  # from now on the file is this run's own

    #: ``(state, stopper, history)`` saved at ``path``, shaped like the given ``state`` and ``stopper``.
    restore = staticmethod(restore_state)


class ProgressBar(_PlainCalls, Hook):
    """A ``tqdm`` bar over the epochs, with the latest training and validation loss (and accuracy)."""

    def __init__(self, start: int | None = None, epochs: int | None = None):
        self._bar = None
        if start is not None and epochs is not None:  # the bar at once, as before the Hook protocol
            self.on_start(start, epochs)

    def on_start(self, start: int, epochs: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(range(start, epochs), desc="epochs", unit="epoch", leave=True, initial=start,
                         total=epochs)

    def on_epoch(self, epoch: int, state, stopper, history) -> None:
        shown = {"loss": history.train_loss[-1], "val_loss": history.val_loss[-1],
                 "val_acc": history.val_accuracy[-1]}
        self._bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items() if v is not None}, refresh=False)
        self._bar.update(1)

    def on_end(self, history=None) -> None:
        if self._bar is not None:
            self._bar.close()
