"""Streaming attention against jax.nn's: temporary memory and step time (for ``funcnet bench``).

One gradient step of scaled dot-product attention: ``value_and_grad`` of
``sum(attention(q, k, v) * w)`` with respect to q, k and v, for

* funcnet: ``funcnet.nn.dot_product_attention`` (tiles of ``block_q × block_kv``
  streamed, the T × S logits never held);
* jax.nn: ``jax.nn.dot_product_attention(..., implementation="xla")`` (the whole
  B × N × T × S logits, probabilities and their gradients held).

Memory is XLA's ``temp_size_in_bytes`` of the compiled program (compiled, not
run: it needs no memory); time is the median over rounds in which the two run
in turn, with the median of the per-round ratios.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.apps.compare import two_programs
from funcnet import nn

__all__ = ["MEMORY_LENGTHS", "TIMED_LENGTHS", "measure", "default_rows", "markdown_lines"]

#: Sequence lengths T = S of the memory sweep (compiled, not run) and of the timed rows (B = 4, N = 8, H = 64).
MEMORY_LENGTHS = (512, 1024, 2048, 4096, 8192)
TIMED_LENGTHS = (512, 1024)


def _steps(is_causal: bool, blocks: dict) -> dict[str, Any]:
    def ours(q, k, v, w):
        return jnp.sum(nn.dot_product_attention(q, k, v, is_causal=is_causal, **blocks) * w)

    def theirs(q, k, v, w):
        return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation="xla") * w)

    return {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))) for name, f in
            (("funcnet", ours), ("jax.nn", theirs))}


def measure(b: int = 4, n: int = 8, t: int = 4096, s: int | None = None, h: int = 64, *, is_causal: bool = False,
            dtype: Any = jnp.float32, rounds: int = 0, seed: int = 0, **blocks) -> dict:
    """``{"funcnet": {...}, "jax.nn": {...}}`` with ``temp_bytes`` and, if ``rounds``, ``median_s``; and ratios.

    ``blocks`` (``block_q``, ``block_kv``) go to funcnet's op; their defaults otherwise.
    """
    s = t if s is None else s
    steps = _steps(is_causal, blocks)
    shapes = [jax.ShapeDtypeStruct((b, t, n, h), dtype), jax.ShapeDtypeStruct((b, s, n, h), dtype),
              jax.ShapeDtypeStruct((b, s, n, h), dtype), jax.ShapeDtypeStruct((b, t, n, h), dtype)]
    out: dict = {"b": b, "n": n, "t": t, "s": s, "h": h, "causal": is_causal, "dtype": jnp.dtype(dtype).name,
                 "rounds": rounds, "blocks": dict(blocks)}

    def make_args():
        rng = np.random.default_rng(seed)
        return tuple(jnp.asarray(rng.standard_normal(x.shape), dtype) for x in shapes)

    out.update(two_programs(steps, shapes, rounds, make_args))
    return out


def default_rows(rounds: int = 3, log=print) -> list[dict]:
    """The rows of ``funcnet bench --tables attention``: memory over :data:`MEMORY_LENGTHS`, causal and not,
    and time at :data:`TIMED_LENGTHS` (jax.nn's step at T = 4096 holds 8 GiB and takes seconds on a CPU)."""
    rows = []
    for t in MEMORY_LENGTHS:
        for causal in (False, True):
            timed = rounds if t in TIMED_LENGTHS else 0
            log(f"[attention] T = S = {t}{', causal' if causal else ''}: memory{' and time' if timed else ''} ...")
            rows.append(measure(t=t, is_causal=causal, rounds=timed))
    return rows


def markdown_lines(rows: list[dict]) -> list[str]:
    """A section of ``docs/benchmarks.md`` for :func:`measure` rows."""
    lines = ["## Streaming attention (`funcnet.nn.dot_product_attention` against `jax.nn`'s)", "",
             "`value_and_grad` with respect to q, k and v of `sum(attention(q, k, v) * w)`: funcnet's streaming "
             "rules (tiles of block_q × block_kv, the logits never held whole) against "
             "`jax.nn.dot_product_attention(..., implementation=\"xla\")`. Memory: XLA's temporary memory of the "
             "compiled program; time: median over rounds that run the two in turn, and the median of the "
             "per-round ratios.", "",
             "| B × N × T × S × H | dtype | causal | funcnet (MiB) | jax.nn (MiB) | funcnet / jax.nn | funcnet step "
             "| jax.nn step | time ratio |",
             "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        timed = "median_s" in r["funcnet"]
        cells = [f"{r['b']} × {r['n']} × {r['t']} × {r['s']} × {r['h']}", r["dtype"], "yes" if r["causal"] else "no",
                 f"{r['funcnet']['temp_bytes'] / 2**20:,.1f}", f"{r['jax.nn']['temp_bytes'] / 2**20:,.1f}",
                 f"{r['memory_ratio']:.3f}",
                 f"{r['funcnet']['median_s'] * 1e3:.1f} ms" if timed else "-",
                 f"{r['jax.nn']['median_s'] * 1e3:.1f} ms" if timed else "-",
                 f"{r['time_ratio']:.2f} ({r['rounds']} rounds)" if timed else "not timed"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
