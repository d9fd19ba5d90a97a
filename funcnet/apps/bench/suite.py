"""Every measurement of ``funcnet bench`` in turn: :func:`run`, its arguments checked before anything is measured."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import layers
from funcnet.apps import dispatch as dispatch_table
from funcnet.apps import attention, ctc, head, optax_memory, remat
from funcnet.apps import curvature as curvature_table
from funcnet.apps.bench.measure import (BASELINE, compiled_ratio, fused_step_times, loss_memory, machine,
                                        matmul_rate, precision_steps, scan_vs_loop, temp_memory, time_steps)
from funcnet.apps.bench.scaling import default_meshes, scaling, scaling_in_subprocess
from funcnet.apps.bench.steps import CONFIGS, FRAMEWORKS, missing_packages, param_count

#: The tables ``funcnet bench --tables`` adds, each a module with ``default_rows(rounds, log)`` and
#: ``markdown_lines(rows)``: the CTC loss against optax's, streaming attention against jax.nn's, and the
#: quantities of :mod:`funcnet.curvature` against one gradient.
TABLES = {"ctc": ctc, "attention": attention, "curvature": curvature_table}

#: Activations whose fused and unfused steps are timed against each other (output-, input- and mask-based rules).
FUSED_TIMING = ("relu", "tanh", "silu", "gelu")


def default_configs() -> tuple[str, ...]:
    """small, medium and deep everywhere; the wide configuration only on an accelerator (minutes per step on a CPU)."""
    return ("small", "medium", "deep") + (() if jax.default_backend() == "cpu" else ("wide",))


def _check_args(configs, frameworks, rounds, steps, scaling_devices, sweep_batch) -> None:
    """Errors naming the bad argument, raised before anything is measured."""
    for name, value, low in (("rounds", rounds, 1), ("steps", steps, 1), ("scaling_devices", scaling_devices, 0),
                             ("sweep_batch", sweep_batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"bench.run: {name} must be an integer >= {low}, got {value!r}")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"bench.run: unknown configuration {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(CONFIGS)}")
    frameworks = tuple(frameworks)
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if not frameworks or unknown:
        what = f"unknown framework {', '.join(map(repr, unknown))}" if unknown else "frameworks is empty"
        raise ValueError(f"bench.run: {what}; known: {', '.join(FRAMEWORKS)}")
    missing = missing_packages(frameworks)
    if configs and len(missing) == len(frameworks):  # nothing left to time
        raise ModuleNotFoundError(f"bench.run: {', '.join(f'{f} needs {p}' for f, p in missing.items())}, not "
                                  "installed; install the peer frameworks with pip install '.[bench]'",
                                  name=next(iter(missing.values())))


def run(configs=None, frameworks=FRAMEWORKS, rounds: int = 10, steps: int = 10,
        memory: bool = True, activations_sweep: bool = True, scan: bool = True, sweep_batch: int = 4096,
        scaling_devices: int = 8, roofline: bool = True, head_vocabs: tuple[int, ...] = (),
        head_rounds: int = 3, dispatch: bool = True, tables: tuple[str, ...] = (), table_rounds: int = 3,
        log=print) -> dict:
    """Run the benchmark and return every number (also the input of :func:`funcnet.apps.bench.report.markdown`).

    ``configs`` defaults to :func:`default_configs`.
    """
    configs = default_configs() if configs is None else tuple(configs)
    _check_args(configs, frameworks, rounds, steps, scaling_devices, sweep_batch)
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"bench.run: unknown table {', '.join(map(repr, unknown))}; known: {', '.join(TABLES)}")
    notes: list[str] = []
    result = {"machine": machine(), "configs": {}, "notes": notes}
    if dispatch:
        result["dispatch"] = dispatch_table.measure(rounds=max(5, rounds), log=log)
    if roofline:
        log("matmul rate (float32, bfloat16) ...")
        result["matmul"] = {"float32": matmul_rate(jnp.float32), "bfloat16": matmul_rate(jnp.bfloat16)}
    for name in configs:
        cfg = CONFIGS[name]
        log(f"[{name}] timing {', '.join(frameworks)} ...")
        entry = {"config": cfg, "params": param_count(cfg["sizes"]),
                 "timing": time_steps(cfg, frameworks, rounds, steps, notes)}
        if "funcnet" in frameworks and BASELINE in frameworks:
            log(f"[{name}] compiled programs, funcnet vs plain JAX ...")
            entry["compiled_ratio"] = compiled_ratio(cfg, rounds=2 * rounds, steps=steps)
        if memory:
            entry["memory"] = temp_memory(cfg)
        if roofline:
            log(f"[{name}] float32 vs bfloat16 compute ...")
            entry["mixed_precision"] = precision_steps(cfg, rounds, steps)
        result["configs"][name] = entry
    if activations_sweep:
        deep = {**CONFIGS["deep"], "batch": sweep_batch}
        log(f"[deep, batch {sweep_batch}] memory per activation ...")
        result["activation_memory"] = {a: temp_memory(deep, a) for a in layers.ACTIVATIONS if a != "prelu"}
        result["activation_memory_batch"] = sweep_batch
        if rounds:
            # at the timing tables' batch and at the sweep's (where the memory is compared); one step per
            # round at the large batch, whose steps are long enough to time alone
            result["fused_times"] = {}
            for batch, n in ((CONFIGS["deep"]["batch"], steps), (sweep_batch, 1)):
                log(f"[deep, batch {batch}] fused vs unfused step time ({', '.join(FUSED_TIMING)}) ...")
                result["fused_times"][batch] = fused_step_times({**CONFIGS["deep"], "batch": batch}, FUSED_TIMING,
                                                                rounds=rounds, steps=n)
        result["remat_memory"] = remat.measure(deep["sizes"], sweep_batch, log=log)
        wide_head = {**deep, "sizes": deep["sizes"][:-1] + [1000]}
        log(f"[deep with 1000 classes, batch {sweep_batch}] memory per loss ...")
        result["loss_memory"] = loss_memory(wide_head)
        result["loss_memory_config"] = wide_head
        result["optax_memory"] = optax_memory.measure(log=log)
    if head_vocabs:
        result["heads"] = []
        for vocab in head_vocabs:
            log(f"[fused head, V = {vocab}] memory{' and time' if head_rounds else ''} ...")
            result["heads"].append(head.measure(vocab, rounds=head_rounds))
    for table in tables:
        result.setdefault("tables", {})[table] = TABLES[table].default_rows(rounds=table_rounds, log=log)
    if scan:
        log("[small] scan vs step-at-a-time ...")
        result["scan"] = scan_vs_loop(CONFIGS["small"])
    if scaling_devices:
        log(f"[medium] data- and model-parallel throughput on up to {scaling_devices} devices ...")
        if jax.default_backend() == "cpu":
            result["scaling"] = scaling_in_subprocess("medium", scaling_devices)
        else:
            result["scaling"] = scaling(CONFIGS["medium"], default_meshes(min(scaling_devices, len(jax.devices()))))
    return result

