"""Plots without a display (matplotlib is in the ``train`` extra, imported only when a plot is made)."""

from __future__ import annotations

import threading

_preloading: threading.Thread | None = None


def preload() -> None:
    """Start importing matplotlib in a background thread, so that it overlaps work that releases the GIL
    (XLA compiling and running); :func:`figure` then finds it imported."""
    global _preloading
    if _preloading is None:
        _preloading = threading.Thread(target=_import_figure, name="funcnet-matplotlib-import", daemon=True)
        _preloading.start()


def _import_figure():
    from matplotlib.figure import Figure

    return Figure


def figure(**kwargs):
    """A ``matplotlib.figure.Figure`` that saves without pyplot or a display (Agg for PNG)."""
    if _preloading is not None:
        _preloading.join()
    return _import_figure()(**kwargs)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported only when a plot is made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
