"""Helpers shared by the examples: a headless pyplot and output files that never overwrite."""

from __future__ import annotations

import pathlib

from funcnet.apps.plotting import pyplot

__all__ = ["pyplot", "free_path", "save"]


def free_path(out_dir: str | pathlib.Path, name: str) -> pathlib.Path:
    """``out_dir/name``, or ``stem-1.suffix``, ``stem-2.suffix``, ... if that file exists.

    The chosen file is created empty (exclusively) before it is returned, so two
    runs at the same time cannot pick the same name.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = pathlib.Path(name).stem, pathlib.Path(name).suffix
    for i in range(10_000):
        path = out_dir / (name if i == 0 else f"{stem}-{i}{suffix}")
        try:
            path.open("xb").close()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{out_dir}: no free file name for {name}")


def save(fig, out_dir: str | pathlib.Path, name: str) -> pathlib.Path:
    """Save ``fig`` as ``out_dir/name`` (or the next free name), close it and return the path."""
    path = free_path(out_dir, name)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path
