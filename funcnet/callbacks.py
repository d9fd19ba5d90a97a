"""Deprecated: the hooks of ``fit`` live in :mod:`funcnet.train.hooks` (this module re-exports them for one release).

``Checkpointer`` and ``ProgressBar`` are :class:`funcnet.train.Hook` objects
now (``on_start``, ``on_epoch``, ``on_end``); calling one as
``hook(epoch, state, stopper, history)`` and ``hook.close()``, as before,
still works.
"""

import warnings

from funcnet.train.hooks import Checkpointer as Checkpointer
from funcnet.train.hooks import ProgressBar as ProgressBar

warnings.warn("funcnet.callbacks is deprecated; use funcnet.train.hooks (Checkpointer, ProgressBar, Hook)",
              DeprecationWarning, stacklevel=2)

__all__ = ["Checkpointer", "ProgressBar"]
