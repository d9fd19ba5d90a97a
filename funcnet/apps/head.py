"""The fused classifier head against the unfused one: temporary memory and step time (``funcnet bench``).

One gradient step of a linear + softmax cross-entropy head over ``V`` classes:
``value_and_grad`` with respect to the features, the weight and the bias of

* fused: ``funcnet.losses.linear_softmax_cross_entropy(x, w, labels, b).mean()``
  (blocks streamed, the N × V logits never held);
* unfused: ``optax.losses.softmax_cross_entropy_with_integer_labels(x @ w + b, labels).mean()``.

Memory is XLA's ``temp_size_in_bytes`` of the compiled program (compiled, not
run: it needs no memory); time is the median over rounds in which the two run
in turn, with the median of the per-round ratios.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.apps.compare import two_programs
from funcnet import losses

__all__ = ["VOCABS", "measure", "markdown_lines"]

#: Class counts of the table; rows of N = 8192 examples of D = 1024 features.
VOCABS = (8192, 32768, 131072)


def _steps(dtype) -> dict[str, Any]:
    def fused(x, w, b, y):
        return losses.linear_softmax_cross_entropy(x, w, y, b).mean()

    def unfused(x, w, b, y):
        logits = (x @ w + b).astype(jnp.float32)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))) for name, f in
            (("fused", fused), ("unfused", unfused))}


def measure(vocab: int, n: int = 8192, d: int = 1024, dtype: Any = jnp.float32, rounds: int = 3,
            seed: int = 0) -> dict:
    """``{"fused": {...}, "unfused": {...}}`` with ``temp_bytes`` and, if ``rounds``, ``median_s``; and ``ratio``."""
    steps = _steps(dtype)
    shapes = [jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((d, vocab), dtype),
              jax.ShapeDtypeStruct((vocab,), dtype), jax.ShapeDtypeStruct((n,), jnp.int32)]
    out: dict = {"vocab": vocab, "n": n, "d": d, "dtype": jnp.dtype(dtype).name, "rounds": rounds}

    def make_args():
        rng = np.random.default_rng(seed)
        return (jnp.asarray(rng.standard_normal((n, d)) / np.sqrt(d), dtype),
                jnp.asarray(rng.standard_normal((d, vocab)) / np.sqrt(d), dtype),
                jnp.zeros((vocab,), dtype), jnp.asarray(rng.integers(0, vocab, n), jnp.int32))

    out.update(two_programs(steps, shapes, rounds, make_args))
    return out


def markdown_lines(rows: list[dict], blocks: str = "1024 rows × 4096 classes") -> list[str]:
    """The section of ``docs/benchmarks.md`` for :func:`measure` rows."""
    first = rows[0]
    lines = [f"## Fused classifier head (N = {first['n']}, D = {first['d']}, {first['dtype']})", "",
             "`value_and_grad` with respect to features, weight and bias of the mean softmax cross-entropy of "
             "`x @ w + b`: fused, `losses.linear_softmax_cross_entropy` (default blocks of " + blocks + "), "
             "against unfused, `optax.losses.softmax_cross_entropy_with_integer_labels(x @ w + b, labels)`. "
             "Memory: XLA's temporary memory of the compiled program; time: median over rounds that run the two "
             "in turn, and the median of the per-round ratios.", "",
             "| classes V | fused (MiB) | unfused (MiB) | fused / unfused | fused step | unfused step | time ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        timed = "median_s" in r["fused"]
        cells = [f"{r['vocab']:,}", f"{r['fused']['temp_bytes'] / 2**20:,.1f}",
                 f"{r['unfused']['temp_bytes'] / 2**20:,.1f}", f"{r['memory_ratio']:.3f}",
                 f"{r['fused']['median_s']:.2f} s" if timed else "-",
                 f"{r['unfused']['median_s']:.2f} s" if timed else "-",
                 f"{r['time_ratio']:.2f} ({r['rounds']} rounds)" if timed else "not timed"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
