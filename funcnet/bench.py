"""The benchmark behind ``funcnet bench``: one training step of the same MLP in several frameworks.

One step is: forward, mean softmax cross-entropy, backward, SGD with momentum 0.9,
all in float32, on the same batch. Frameworks run interleaved in one process
(round after round, each framework in turn), and each reports the median step
time over rounds, its ratio to the plain-JAX baseline (``jax.nn`` + ``optax``,
differentiated by ``jax.grad``), and the achieved TFLOP/s counted as
``6 × batch × parameters`` per step.

Peers (Flax NNX, Equinox, PyTorch) are optional: install ``funcnet[bench]``;
a peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnet
from funcnet import layers

CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"sizes": [64, 256, 256, 10], "batch": 128, "activation": "relu"},
    "medium": {"sizes": [784, 1024, 1024, 10], "batch": 256, "activation": "relu"},
    "deep": {"sizes": [784] + [512] * 8 + [10], "batch": 256, "activation": "tanh"},
    "wide": {"sizes": [4096, 8192, 8192, 8192, 1024], "batch": 4096, "activation": "relu"},
}
FRAMEWORKS = ("funcnet", "funcnet.reference", "plain_jax", "flax_nnx", "equinox", "pytorch")
BASELINE = "plain_jax"
LR = 0.01


def param_count(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int32)
    return x, y


# ------------------------------------------------------------------ JAX steps
@dataclasses.dataclass
class JaxStep:
    """A jitted ``step(state, x, y) -> state`` with its initial state, for timing and memory analysis."""

    step: Callable
    state: Any

    def run(self, x, y, n: int) -> float:
        state = self.state
        t0 = time.perf_counter()
        for _ in range(n):
            state = self.step(state, x, y)
        jax.block_until_ready(state)
        self.state = state
        return (time.perf_counter() - t0) / n

    def temp_bytes(self, x, y) -> int:
        return int(self.step.lower(self.state, x, y).compile().memory_analysis().temp_size_in_bytes)


def _optax_step(loss, params) -> JaxStep:
    opt = optax.sgd(LR, momentum=0.9)

    @jax.jit
    def step(state, x, y):
        params, opt_state = state
        grads = jax.grad(loss)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return JaxStep(step, (params, opt.init(params)))


def funcnet_step(sizes, activation, ops=funcnet) -> JaxStep:
    net = layers.mlp(sizes, activation, ops=ops)
    _, params = net.init(jax.random.key(0))

    def loss(p, x, y):
        return ops.losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    return _optax_step(loss, params)


def plain_jax_step(sizes, activation) -> JaxStep:
    act = getattr(jax.nn, activation)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    init = jax.nn.initializers.glorot_uniform()
    params = [(init(k, (a, b)), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(p, x, y):
        for w, b in p[:-1]:
            x = act(x @ w + b)
        w, b = p[-1]
        return optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()

    return _optax_step(loss, params)


def flax_nnx_step(sizes, activation):
    from flax import nnx

    act = getattr(jax.nn, activation)

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]) \
                if hasattr(nnx, "List") else [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = act(layer(x))
            return self.layers[-1](x)

    model = MLP(nnx.Rngs(0))
    try:
        optimizer = nnx.Optimizer(model, optax.sgd(LR, momentum=0.9), wrt=nnx.Param)
    except TypeError:
        optimizer = nnx.Optimizer(model, optax.sgd(LR, momentum=0.9))

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        grads = nnx.grad(loss)(model)
        try:
            optimizer.update(model, grads)
        except TypeError:
            optimizer.update(grads)

    class Runner:
        def run(self, x, y, n):
            t0 = time.perf_counter()
            for _ in range(n):
                step(model, optimizer, x, y)
            jax.block_until_ready(nnx.state(model))
            return (time.perf_counter() - t0) / n

    return Runner()


def equinox_step(sizes, activation) -> JaxStep:
    import equinox as eqx

    act = getattr(jax.nn, activation)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    linears = [eqx.nn.Linear(a, b, key=k) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(model, x, y):
        for layer in model[:-1]:
            x = act(jax.vmap(layer)(x))
        return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model[-1])(x), y).mean()

    return _optax_step(loss, linears)


def pytorch_step(sizes, activation):
    # OpenMP threads that spin after each PyTorch op would steal the cores from the framework timed next
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.manual_seed(0)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(act())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    class Runner:
        def run(self, x, y, n):
            xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
            t0 = time.perf_counter()
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xt), yt).backward()
                opt.step()
            return (time.perf_counter() - t0) / n

    return Runner()


BUILDERS: dict[str, Callable] = {
    "funcnet": lambda s, a: funcnet_step(s, a),
    "funcnet.reference": lambda s, a: funcnet_step(s, a, funcnet.reference),
    "plain_jax": plain_jax_step,
    "flax_nnx": flax_nnx_step,
    "equinox": equinox_step,
    "pytorch": pytorch_step,
}


# ------------------------------------------------------------------ measurements
def time_steps(config: dict, frameworks=FRAMEWORKS, rounds: int = 10, steps: int = 10,
               notes: list | None = None) -> dict[str, dict]:
    """Median seconds per training step of each framework, interleaved round by round."""
    sizes, batch, activation = config["sizes"], config["batch"], config["activation"]
    x, y = _data(sizes, batch)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    runners = {}
    for name in frameworks:
        try:
            runners[name] = BUILDERS[name](sizes, activation)
        except ImportError as err:
            if notes is not None:
                notes.append(f"{name} skipped: {err.name or err} is not installed (pip install 'funcnet[bench]')")
    for r in runners.values():
        r.run(xj, yj, 2)  # compile and warm up
    times = {name: [] for name in runners}
    order = list(runners)
    for k in range(rounds):
        # rotate the order every round, so no framework always runs right after the same neighbour
        for name in order[k % len(order):] + order[: k % len(order)]:
            times[name].append(runners[name].run(xj, yj, steps))
    flops = 6 * batch * param_count(sizes)
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"median_s": med, "tflops": flops / med / 1e12}
    base = out.get(BASELINE, {}).get("median_s")
    for name in out:
        out[name]["ratio"] = out[name]["median_s"] / base if base else float("nan")
    return out


def temp_memory(config: dict, activation: str | None = None) -> dict[str, int]:
    """XLA's temporary memory of the compiled step (bytes) for manual rules, autodiff twins and plain JAX."""
    sizes, batch = config["sizes"], config["batch"]
    activation = activation or config["activation"]
    x, y = _data(sizes, batch)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    out = {"funcnet": funcnet_step(sizes, activation).temp_bytes(xj, yj),
           "funcnet.reference": funcnet_step(sizes, activation, funcnet.reference).temp_bytes(xj, yj)}
    if hasattr(jax.nn, activation):
        out["plain_jax"] = plain_jax_step(sizes, activation).temp_bytes(xj, yj)
    return out


def scan_vs_loop(config: dict, n_steps: int = 200, rounds: int = 5) -> dict[str, float]:
    """Seconds per step: one jitted step at a time vs ``n_steps`` steps fused in one ``lax.scan``."""
    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    s = funcnet_step(sizes, config["activation"])

    @jax.jit
    def many(state, x, y):
        return jax.lax.scan(lambda st, _: (s.step(st, x, y), None), state, None, length=n_steps)[0]

    jax.block_until_ready(many(s.state, xj, yj))
    s.run(xj, yj, 5)
    loop, fused = [], []
    for _ in range(rounds):
        loop.append(s.run(xj, yj, n_steps))
        t0 = time.perf_counter()
        jax.block_until_ready(many(s.state, xj, yj))
        fused.append((time.perf_counter() - t0) / n_steps)
    return {"loop_s": statistics.median(loop), "scan_s": statistics.median(fused)}


def scaling(config: dict, device_counts=(1, 2, 4, 8), rounds: int = 5, steps: int = 5) -> dict[int, dict]:
    """Data-parallel throughput of the funcnet step on 1, 2, 4, ... devices (the batch split over them).

    Needs ``max(device_counts)`` visible devices (on a CPU, see
    :func:`funcnet.parallel.use_cpu_devices`); efficiency is throughput on n
    devices / (n × throughput on 1).
    """
    from funcnet import parallel

    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    runners = {}
    for n in device_counts:
        mesh = parallel.data_mesh(n)
        s = funcnet_step(sizes, config["activation"])
        s.state = jax.device_put(s.state, parallel.replicated(mesh))
        data = jax.device_put((jnp.asarray(x), jnp.asarray(y)), parallel.batch_sharded(mesh))
        s.run(*data, 2)
        runners[n] = (s, data)
    times = {n: [] for n in runners}
    for _ in range(rounds):
        for n, (s, data) in runners.items():
            times[n].append(s.run(*data, steps))
    out = {}
    for n, ts in times.items():
        med = statistics.median(ts)
        out[n] = {"median_s": med, "examples_per_s": batch / med}
    for n in out:
        out[n]["efficiency"] = out[n]["examples_per_s"] / (n * out[device_counts[0]]["examples_per_s"])
    return out


def scaling_in_subprocess(config_name: str = "medium", max_devices: int = 8) -> dict[int, dict]:
    """:func:`scaling` in a fresh Python with ``max_devices`` simulated CPU devices (fixed at start-up)."""
    import subprocess
    import sys

    counts = tuple(n for n in (1, 2, 4, 8, 16) if n <= max_devices)
    code = (f"import json, jax; jax.config.update('jax_num_cpu_devices', {max_devices}); "
            f"from funcnet import bench; "
            f"print(json.dumps(bench.scaling(bench.CONFIGS[{config_name!r}], {counts!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


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


# ------------------------------------------------------------------ report
def run(configs=("small", "medium", "deep"), frameworks=FRAMEWORKS, rounds: int = 10, steps: int = 10,
        memory: bool = True, activations_sweep: bool = True, scan: bool = True, sweep_batch: int = 4096,
        scaling_devices: int = 8, log=print) -> dict:
    """Run the benchmark and return every number (also the input of :func:`markdown`)."""
    notes: list[str] = []
    result = {"machine": machine(), "configs": {}, "notes": notes}
    for name in configs:
        cfg = CONFIGS[name]
        log(f"[{name}] timing {', '.join(frameworks)} ...")
        entry = {"config": cfg, "params": param_count(cfg["sizes"]),
                 "timing": time_steps(cfg, frameworks, rounds, steps, notes)}
        if memory:
            entry["memory"] = temp_memory(cfg)
        result["configs"][name] = entry
    if activations_sweep:
        deep = {**CONFIGS["deep"], "batch": sweep_batch}
        log(f"[deep, batch {sweep_batch}] memory per activation ...")
        result["activation_memory"] = {a: temp_memory(deep, a) for a in layers.ACTIVATIONS if a != "prelu"}
        result["activation_memory_batch"] = sweep_batch
    if scan:
        log("[small] scan vs step-at-a-time ...")
        result["scan"] = scan_vs_loop(CONFIGS["small"])
    if scaling_devices:
        log(f"[medium] data-parallel throughput on up to {scaling_devices} devices ...")
        if jax.devices()[0].platform == "cpu":
            result["scaling"] = scaling_in_subprocess("medium", scaling_devices)
        else:
            counts = tuple(n for n in (1, 2, 4, 8, 16) if n <= min(scaling_devices, len(jax.devices())))
            result["scaling"] = scaling(CONFIGS["medium"], counts)
    return result


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}" if b >= 2**20 else f"{b / 2**20:.4f}"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else ("1.00" if a == b else "inf")


def markdown(result: dict, command: str) -> str:
    lines = ["# Benchmarks", "", f"Machine: {result['machine']}.", "", f"Command: `{command}`", "",
             "One training step (forward, softmax cross-entropy, backward, SGD with momentum 0.9, float32) of "
             "the same MLP on the same batch; frameworks interleaved in one process; median over rounds; "
             "ratio = step time / plain JAX (`jax.nn` + `optax`, `jax.grad`); TFLOP/s = 6 × batch × "
             "parameters / step time.", ""]
    for name, entry in result["configs"].items():
        cfg = entry["config"]
        lines += [f"## {name}: {'-'.join(map(str, cfg['sizes']))}, batch {cfg['batch']}, {cfg['activation']} "
                  f"({entry['params']:,} parameters)", "", "| framework | median step | ratio to plain JAX | TFLOP/s |",
                  "| --- | ---: | ---: | ---: |"]
        for fw, t in entry["timing"].items():
            lines.append(f"| {fw} | {t['median_s'] * 1e6:,.0f} µs | {t['ratio']:.3f} | {t['tflops']:.4f} |")
        if "memory" in entry:
            m = entry["memory"]
            lines += ["", "Temporary memory of the compiled step (XLA `memory_analysis().temp_size_in_bytes`): "
                      + ", ".join(f"{k} {_mib(v)} MiB" for k, v in m.items())
                      + f"; manual / autodiff = {_ratio(m['funcnet'], m['funcnet.reference'])}."]
        lines.append("")
    if "activation_memory" in result:
        lines += [f"## Memory per activation (deep network, batch {result['activation_memory_batch']})", "",
                  "| activation | manual rules (MiB) | autodiff twin (MiB) | plain JAX (MiB) | manual / autodiff |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for act, m in result["activation_memory"].items():
            plain = _mib(m["plain_jax"]) if "plain_jax" in m else "-"
            lines.append(f"| {act} | {_mib(m['funcnet'])} | {_mib(m['funcnet.reference'])} | {plain} | "
                         f"{_ratio(m['funcnet'], m['funcnet.reference'])} |")
        lines.append("")
    if "scan" in result:
        s = result["scan"]
        lines += ["## Steps fused in one `lax.scan` (small network)", "",
                  f"One jitted step at a time: {s['loop_s'] * 1e6:,.0f} µs per step; 200 steps in one compiled "
                  f"`lax.scan`: {s['scan_s'] * 1e6:,.0f} µs per step ({s['loop_s'] / s['scan_s']:.2f}× faster).", ""]
    if "scaling" in result:
        lines += ["## Data-parallel throughput (medium network, batch 256 split over the devices)", "",
                  "| devices | median step | examples/s | scaling efficiency |", "| ---: | ---: | ---: | ---: |"]
        for n, r in result["scaling"].items():
            lines.append(f"| {n} | {r['median_s'] * 1e6:,.0f} µs | {r['examples_per_s']:,.0f} | "
                         f"{r['efficiency']:.2f} |")
        lines += ["", "On a CPU the devices are simulated host devices sharing the same cores, so this row "
                  "measures the overhead of sharding and collectives, not a speed-up.", ""]
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in sorted(set(result["notes"]))] + [""]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["configs"])
    fws = sorted({fw for e in result["configs"].values() for fw in e["timing"]}, key=FRAMEWORKS.index)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(fws), 1)
    for i, fw in enumerate(fws):
        ratios = [result["configs"][n]["timing"].get(fw, {}).get("ratio", np.nan) for n in names]
        ax.bar(np.arange(len(names)) + i * width, ratios, width, label=fw)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(fws) - 1) / 2, names)
    ax.set_ylabel("step time / plain JAX (lower is faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, default=float)
