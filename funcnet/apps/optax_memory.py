"""Temporary memory of ``value_and_grad`` of funcnet's losses against optax's, on the same inputs (``funcnet bench``).

For each loss of the table, ``jax.jit(jax.value_and_grad(Σ loss))`` with respect to its
floating-point inputs is compiled for funcnet's function and for optax's, on inputs of a
size such a loss meets in practice, and XLA's ``temp_size_in_bytes`` of the two programs
is compared (compiled, not run: deterministic, and it needs no memory). CTC has a table of
its own (:mod:`funcnet.apps.ctc`), with its time.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from funcnet import losses

__all__ = ["CASES", "measure", "markdown_lines"]


def _floats(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _ints(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.int32)


def _fenchel_young(namespace):
    return namespace.make_fenchel_young_loss(jax.nn.logsumexp)


#: name -> (what the inputs are, the inputs, how many leading inputs are differentiated, the function of a
#: namespace (funcnet.losses or optax.losses) to compare).
CASES: dict[str, tuple[str, tuple, int, Callable]] = {
    "dice_loss": ("8 × 64 × 64 pixels, 4 classes", (_floats(8, 64, 64, 4), _floats(8, 64, 64, 4)), 1,
                  lambda ns: ns.dice_loss),
    "binary_dice_loss": ("8 × 64 × 64 pixels", (_floats(8, 64 * 64), _floats(8, 64 * 64)), 1,
                         lambda ns: ns.binary_dice_loss),
    "multiclass_generalized_dice_loss": ("8 × 64 × 64 pixels, 4 classes", (_floats(8, 64, 64, 4),
                                                                           _floats(8, 64, 64, 4)), 1,
                                         lambda ns: ns.multiclass_generalized_dice_loss),
    "ntxent": ("512 embeddings of 128, 256 pairs", (_floats(512, 128), _ints(512)), 1, lambda ns: ns.ntxent),
    "triplet_margin_loss": ("1024 triplets of 128", (_floats(1024, 128),) * 3, 3,
                            lambda ns: ns.triplet_margin_loss),
    "ranking_softmax_loss": ("256 lists of 200 items", (_floats(256, 200), _floats(256, 200)), 1,
                             lambda ns: ns.ranking_softmax_loss),
    "make_fenchel_young_loss(logsumexp)": ("256 × 1000 scores", (_floats(256, 1000), _floats(256, 1000)), 1,
                                           _fenchel_young),
}


def _temp_bytes(f: Callable, inputs: tuple, n_diff: int) -> int:
    def total(*diff_and_rest):
        return jnp.sum(f(*diff_and_rest))

    step = jax.jit(jax.value_and_grad(total, argnums=tuple(range(n_diff))))
    return int(step.lower(*inputs).compile().memory_analysis().temp_size_in_bytes)


def measure(names=None, log=print) -> list[dict]:
    """One row per loss that funcnet has (all of :data:`CASES` by default)."""
    rows = []
    for name, (what, inputs, n_diff, pick) in CASES.items():
        if names is not None and name not in names:
            continue
        try:
            ours = pick(losses)
        except AttributeError:  # not in funcnet (yet)
            continue
        log(f"[optax memory] {name} ...")
        row = {"name": name, "inputs": what, "funcnet_bytes": _temp_bytes(ours, inputs, n_diff),
               "optax_bytes": _temp_bytes(pick(optax.losses), inputs, n_diff)}
        row["ratio"] = row["funcnet_bytes"] / row["optax_bytes"] if row["optax_bytes"] else float(
            "nan" if row["funcnet_bytes"] else 1.0)
        rows.append(row)
    return rows


def markdown_lines(rows: list[dict]) -> list[str]:
    mib = lambda b: f"{b / 2**20:,.2f} MiB"  # noqa: E731
    lines = ["## Losses against optax: temporary memory of `value_and_grad`", "",
             "XLA's `temp_size_in_bytes` of `jax.jit(jax.value_and_grad(Σ loss))` with respect to the "
             "floating-point inputs, funcnet's loss and optax's on the same inputs (float32; compiled, not run; "
             "`funcnet.apps.optax_memory`).", "",
             "| loss | inputs | funcnet | optax | funcnet / optax |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| `{r['name']}` | {r['inputs']} | {mib(r['funcnet_bytes'])} | {mib(r['optax_bytes'])} | "
              f"{r['ratio']:.2f} |" for r in rows]
    return lines + [""] if rows else []


if __name__ == "__main__":  # python -m funcnet.apps.optax_memory
    print("\n".join(markdown_lines(measure(log=lambda m: None))) or "none of the losses is in funcnet yet")
