"""Step times and XLA's temporary memory of the training steps, the matmul roofline and the machine they ran on."""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import funcnet
from funcnet import layers
from funcnet.apps.bench.steps import (BUILDERS, FRAMEWORKS, LOSS_HEADS, JaxStep, _data, funcnet_step, param_count,
                                      plain_jax_step)

#: The framework the others' step times are divided by.
BASELINE = "plain_jax"


def _interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every ``run`` (which returns seconds per step) once per round; the times of each.

    The order rotates every round, so no run always follows the same neighbour
    (a framework timed right after PyTorch, or after a cache-thrashing run,
    would otherwise pay for it every round).
    """
    order = list(runs)
    times: dict[str, list[float]] = {name: [] for name in order}
    for k in range(rounds):
        for name in order[k % len(order):] + order[: k % len(order)]:
            times[name].append(runs[name]())
    return times


def time_steps(config: dict, frameworks=FRAMEWORKS, rounds: int = 10, steps: int = 10,
               notes: list | None = None) -> dict[str, dict]:
    """Median seconds per training step of each framework, interleaved round by round."""
    sizes, batch, activation = config["sizes"], config["batch"], config["activation"]
    x, y = _data(sizes, batch)
    runners, skipped = {}, []
    for name in frameworks:
        try:
            runners[name] = BUILDERS[name](sizes, activation)
        except ImportError as err:
            skipped.append(f"{name} needs {err.name or err}")
            if notes is not None:
                notes.append(f"{name} skipped: {err.name or err} is not installed (pip install 'funcnet[bench]')")
    if not frameworks:
        raise ValueError(f"bench.time_steps: no frameworks given; known: {', '.join(FRAMEWORKS)}")
    if not runners:  # every requested framework was skipped: nothing to time
        raise ModuleNotFoundError(f"bench: {', '.join(skipped)}, not installed; install the peer frameworks with "
                                  "pip install '.[bench]'")
    for r in runners.values():
        r.run(x, y, 2)  # compile and warm up
    times = _interleaved({name: functools.partial(r.run, x, y, steps) for name, r in runners.items()}, rounds)
    flops = 6 * batch * param_count(sizes)
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"median_s": med, "tflops": flops / med / 1e12}
        if BASELINE in times:
            # paired with the baseline's time in the same round, so slow drifts of the machine cancel
            q1, q2, q3 = np.quantile([t / b for t, b in zip(ts, times[BASELINE])], [0.25, 0.5, 0.75])
            out[name] |= {"ratio": float(q2), "ratio_iqr": [float(q1), float(q3)]}
        else:
            out[name] |= {"ratio": float("nan"), "ratio_iqr": [float("nan")] * 2}
    return out


def compiled_ratio(config: dict, rounds: int = 60, steps: int = 10, seed: int = 0) -> dict[str, float]:
    """funcnet / plain JAX step time of the compiled programs alone, with a 95% bootstrap interval.

    Both steps are lowered and compiled once and the executables are called on
    the same inputs, so Python dispatch is left out and only what the manual
    rules change in the program is timed. Rounds alternate the order; the ratio
    is the median over rounds of the paired ratio.
    """
    sizes = config["sizes"]
    x, y = _data(sizes, config["batch"])

    def timer(s: JaxStep) -> Callable[[], float]:
        program = s.step.lower(s.state, x, y).compile()
        jax.block_until_ready(program(s.state, x, y))

        def run():
            t0 = time.perf_counter()
            for _ in range(steps):
                out = program(s.state, x, y)
            jax.block_until_ready(out)
            return (time.perf_counter() - t0) / steps

        return run

    times = _interleaved({"funcnet": timer(funcnet_step(sizes, config["activation"])),
                          "plain_jax": timer(plain_jax_step(sizes, config["activation"]))}, rounds)
    ratios = np.array(times["funcnet"]) / np.array(times["plain_jax"])
    boot = np.median(np.random.default_rng(seed).choice(ratios, (2000, len(ratios))), axis=1)
    return {"ratio": float(np.median(ratios)), "rounds": rounds,
            "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]}


def temp_memory(config: dict, activation: str | None = None) -> dict[str, int]:
    """XLA's temporary memory of the compiled step (bytes): manual rules (fused layers, the default, and
    ``funcnet.unfused``), autodiff twins and plain JAX."""
    sizes, batch = config["sizes"], config["batch"]
    activation = activation or config["activation"]
    x, y = _data(sizes, batch)
    out = {"funcnet": funcnet_step(sizes, activation).temp_bytes(x, y),
           "funcnet.unfused": funcnet_step(sizes, activation, fused=False).temp_bytes(x, y),
           "funcnet.reference": funcnet_step(sizes, activation, funcnet.reference).temp_bytes(x, y)}
    if hasattr(jax.nn, activation):
        out["plain_jax"] = plain_jax_step(sizes, activation).temp_bytes(x, y)
    return out


def fused_step_times(config: dict, activations: Sequence[str], rounds: int = 10, steps: int = 5) -> dict[str, dict]:
    """Step time of the fused MLP (``layers.mlp``'s default) against the unfused one and plain JAX, per activation.

    Interleaved in one process (:func:`_interleaved`); medians over rounds, and the median of the per-round
    ratios fused / unfused and fused / plain JAX.
    """
    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    out = {}
    for act in activations:
        steps_ = {"fused": funcnet_step(sizes, act), "unfused": funcnet_step(sizes, act, fused=False)}
        if hasattr(jax.nn, act):
            steps_["plain_jax"] = plain_jax_step(sizes, act)
        for s in steps_.values():
            s.run(x, y, 2)  # compile and warm up
        times = _interleaved({k: (lambda s=s: s.run(x, y, steps)) for k, s in steps_.items()}, rounds)
        row = {f"{k}_s": float(np.median(v)) for k, v in times.items()}
        for other in ("unfused", "plain_jax"):
            if other in times:
                row[f"fused/{other}"] = float(np.median(np.array(times["fused"]) / np.array(times[other])))
        out[act] = row
    return out


def norm_memory(config: dict) -> dict[str, dict[str, int]]:
    """Temporary memory (bytes) of the compiled step with each norm of ``layers.NORMS`` after every hidden layer,
    manual rules against autodiff twins."""
    sizes, activation = config["sizes"], config["activation"]
    x, y = _data(sizes, config["batch"])
    return {norm: {label: funcnet_step(sizes, activation, ops, norm=norm).temp_bytes(x, y)
                   for label, ops in (("funcnet", funcnet), ("funcnet.reference", funcnet.reference))}
            for norm in layers.NORMS}


def loss_memory(config: dict) -> dict[str, dict[str, int]]:
    """Temporary memory (bytes) of the compiled step with each loss of :data:`LOSS_HEADS` as the output head:
    the manual rules with fused layers (``layers.mlp``'s default) and without, and the autodiff twin."""
    sizes, activation = config["sizes"], config["activation"]
    x, y = _data(sizes, config["batch"])
    return {loss: {label: funcnet_step(sizes, activation, ops, loss=loss, fused=fused).temp_bytes(x, y)
                   for label, ops, fused in (("funcnet", funcnet, True), ("funcnet.unfused", funcnet, False),
                                             ("funcnet.reference", funcnet.reference, True))}
            for loss in LOSS_HEADS}


def scan_vs_loop(config: dict, n_steps: int = 500, rounds: int = 5) -> dict[str, float]:
    """Seconds per step: one jitted step at a time vs ``n_steps`` steps fused in one ``lax.scan``."""
    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    s = funcnet_step(sizes, config["activation"])

    @jax.jit
    def many(state, x, y):
        return jax.lax.scan(lambda st, _: (s.step(st, x, y), None), state, None, length=n_steps)[0]

    jax.block_until_ready(many(s.state, x, y))
    s.run(x, y, 5)

    def fused():
        t0 = time.perf_counter()
        jax.block_until_ready(many(s.state, x, y))
        return (time.perf_counter() - t0) / n_steps

    times = _interleaved({"loop": functools.partial(s.run, x, y, n_steps), "scan": fused}, rounds)
    return {"loop_s": statistics.median(times["loop"]), "scan_s": statistics.median(times["scan"]),
            "n_steps": n_steps}


def matmul_rate(dtype=jnp.float32, n: int | None = None, rounds: int = 10) -> dict[str, float]:
    """Measured TFLOP/s of one ``n × n × n`` matmul (2n³ flops) in ``dtype``: the roofline the MLPs are held to.

    ``n`` defaults to 8192 on an accelerator and 2048 on a CPU. Float32 uses
    JAX's default precision (TF32 on recent NVIDIA GPUs), as the training steps do.
    """
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"n": n, "median_s": med, "tflops": 2 * n**3 / med / 1e12}


def precision_steps(config: dict, rounds: int = 10, steps: int = 10) -> dict[str, dict]:
    """The funcnet step in float32 and with bfloat16 compute (float32 master weights), interleaved."""
    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    runners = {"float32": funcnet_step(sizes, config["activation"]),
               "bfloat16": funcnet_step(sizes, config["activation"], compute_dtype=jnp.bfloat16)}
    for r in runners.values():
        r.run(x, y, 2)
    times = _interleaved({k: functools.partial(r.run, x, y, steps) for k, r in runners.items()}, rounds)
    flops = 6 * batch * param_count(sizes)
    return {k: {"median_s": statistics.median(ts), "tflops": flops / statistics.median(ts) / 1e12}
            for k, ts in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return (f"{dev.platform.upper()} {getattr(dev, 'device_kind', '')}; host {cpu}, {os.cpu_count()} cores; "
            f"jax {jax.__version__}, python {platform.python_version()}")

