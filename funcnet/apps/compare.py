"""Two compiled programs on the same inputs, side by side: their temporary memory and their time.

Used by the head, CTC and attention tables of ``funcnet bench`` (ours first, the baseline second).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import jax

__all__ = ["two_programs"]


def two_programs(steps: dict[str, Callable], shapes: Sequence, rounds: int, make_args: Callable[[], tuple]) -> dict:
    """``{name: {"temp_bytes", "output_bytes", "median_s"}, "memory_ratio", "time_ratio"}`` of two jitted programs.

    Memory is XLA's ``temp_size_in_bytes`` (and ``output_size_in_bytes``) of each program compiled for
    ``shapes`` (not run); ``memory_ratio`` compares the temporaries.
    With ``rounds``, each runs once to warm up on ``make_args()``, then once per round, the
    order alternating; the times are the medians, the ratio the median of the per-round ratios
    (the first program's over the second's).
    """
    (ours, theirs) = steps
    compiled = {name: step.lower(*shapes).compile() for name, step in steps.items()}
    out: dict = {name: {"temp_bytes": int(c.memory_analysis().temp_size_in_bytes),
                        "output_bytes": int(c.memory_analysis().output_size_in_bytes)} for name, c in compiled.items()}
    out["memory_ratio"] = out[ours]["temp_bytes"] / out[theirs]["temp_bytes"]
    if rounds:
        args = make_args()
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for c in compiled.values():
            jax.block_until_ready(c(*args))
        for r in range(rounds):
            for name in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[name](*args))
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            out[name]["median_s"] = statistics.median(ts)
        out["time_ratio"] = statistics.median(a / b for a, b in zip(times[ours], times[theirs]))
    return out
