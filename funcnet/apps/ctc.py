"""funcnet's CTC loss against Optax's: temporary memory and step time of ``value_and_grad``.

One gradient step, with respect to the logits, of the summed per-sequence loss
``ctc_loss(logits, logit_paddings, labels, label_paddings).sum()`` over a batch
of ``B`` sequences of ``T`` frames and ``K`` classes with ``N`` labels each
(random logits, no padding, labels drawn from the non-blank classes):

* funcnet: ``funcnet.losses.ctc_loss`` (hand-written forward–backward rule,
  saving the log-probabilities and the forward variables);
* optax: ``optax.losses.ctc_loss`` (autodiff through its ``lax.scan``).

Memory is XLA's ``temp_size_in_bytes`` of the compiled program (compiled, not
run); time is the median over rounds in which the two run in turn, with the
median of the per-round ratios.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.apps.compare import two_programs
from funcnet import losses

__all__ = ["SIZES", "measure", "default_rows", "markdown_lines"]

#: (B, T, K, N) of the table: the issue's target size.
SIZES = ((32, 500, 100, 100),)


def _steps() -> dict[str, Any]:
    def step(ctc):
        return jax.jit(jax.value_and_grad(lambda x, xp, y, yp: ctc(x, xp, y, yp).sum()))

    return {"funcnet": step(losses.ctc_loss), "optax": step(optax.losses.ctc_loss)}


def measure(batch: int = 32, frames: int = 500, classes: int = 100, labels: int = 100, dtype: Any = jnp.float32,
            rounds: int = 3, seed: int = 0) -> dict:
    """``{"funcnet": {...}, "optax": {...}}`` with ``temp_bytes`` and, if ``rounds``, ``median_s``; and ratios."""
    steps = _steps()
    shapes = [jax.ShapeDtypeStruct((batch, frames, classes), dtype), jax.ShapeDtypeStruct((batch, frames), dtype),
              jax.ShapeDtypeStruct((batch, labels), jnp.int32), jax.ShapeDtypeStruct((batch, labels), dtype)]
    out: dict = {"batch": batch, "frames": frames, "classes": classes, "labels": labels,
                 "dtype": jnp.dtype(dtype).name, "rounds": rounds, "device": jax.devices()[0].device_kind}

    def make_args():
        rng = np.random.default_rng(seed)
        return (jnp.asarray(rng.standard_normal((batch, frames, classes)), dtype), jnp.zeros((batch, frames), dtype),
                jnp.asarray(rng.integers(1, classes, (batch, labels)), jnp.int32), jnp.zeros((batch, labels), dtype))

    out.update(two_programs(steps, shapes, rounds, make_args))
    return out


def default_rows(rounds: int = 3, log=print) -> list[dict]:
    """The rows of ``funcnet bench --tables ctc``: the issue's size, timed over ``rounds``."""
    rows = []
    for size in SIZES:
        log(f"[ctc] B, T, K, N = {size}: funcnet against optax ...")
        rows.append(measure(*size, rounds=rounds))
    return rows


def markdown_lines(rows: list[dict]) -> list[str]:
    """A section for ``docs/benchmarks.md`` from :func:`measure` rows."""
    lines = [f"## CTC loss ({rows[0]['dtype']}, {rows[0]['device']})", "",
             "`value_and_grad` with respect to the logits of `ctc_loss(logits, logit_paddings, labels, "
             "label_paddings).sum()`: funcnet's `losses.ctc_loss` (hand-written forward–backward rule) against "
             "`optax.losses.ctc_loss` (autodiff through its scan). Memory: XLA's temporary memory of the compiled "
             "program; time: median over rounds that run the two in turn, and the median of the per-round ratios.",
             "",
             "| B × T × K, N labels | funcnet (MiB) | optax (MiB) | funcnet / optax | funcnet step | optax step "
             "| time ratio |",
             "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        timed = "median_s" in r["funcnet"]
        cells = [f"{r['batch']} × {r['frames']} × {r['classes']}, N = {r['labels']}",
                 f"{r['funcnet']['temp_bytes'] / 2**20:,.1f}", f"{r['optax']['temp_bytes'] / 2**20:,.1f}",
                 f"{r['memory_ratio']:.3f}",
                 f"{r['funcnet']['median_s'] * 1e3:.0f} ms" if timed else "-",
                 f"{r['optax']['median_s'] * 1e3:.0f} ms" if timed else "-",
                 f"{r['time_ratio']:.2f} ({r['rounds']} rounds)" if timed else "not timed"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
