"""Plots without a display: ``matplotlib.pyplot`` on the Agg backend (matplotlib is in the ``train`` extra)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported only when a plot is made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
