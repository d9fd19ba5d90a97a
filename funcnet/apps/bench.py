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
import functools
import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnet
from funcnet import layers, train

CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"sizes": [64, 256, 256, 10], "batch": 128, "activation": "relu"},
    "medium": {"sizes": [784, 1024, 1024, 10], "batch": 256, "activation": "relu"},
    "deep": {"sizes": [784] + [512] * 8 + [10], "batch": 256, "activation": "tanh"},
    "wide": {"sizes": [4096, 8192, 8192, 8192, 1024], "batch": 4096, "activation": "relu"},
}
#: Activations whose fused and unfused steps are timed against each other (output-, input- and mask-based rules).
FUSED_TIMING = ("relu", "tanh", "silu", "gelu")
FRAMEWORKS = ("funcnet", "funcnet.reference", "plain_jax", "flax_nnx", "equinox", "pytorch")
#: The package each peer framework needs; ``pip install '.[bench]'`` installs them all.
PACKAGES = {"flax_nnx": "flax", "equinox": "equinox", "pytorch": "torch"}
BASELINE = "plain_jax"
LR = 0.01


def missing_packages(frameworks) -> dict[str, str]:
    """``{framework: package}`` for each of ``frameworks`` whose package is not installed."""
    import importlib.util

    return {f: PACKAGES[f] for f in frameworks if f in PACKAGES and importlib.util.find_spec(PACKAGES[f]) is None}


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


def param_count(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _data(sizes, batch, seed=0) -> tuple[jax.Array, jax.Array]:
    """A standard-normal float32 batch and integer class labels, on JAX's default device."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


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


# ------------------------------------------------------------------ JAX steps
@dataclasses.dataclass
class JaxStep:
    """A jitted ``step(state, x, y) -> state`` with its initial state, for timing and memory analysis."""

    step: Callable
    state: Any
    init_opt: Callable | None = None  # params -> optimizer state (to rebuild the state for sharded parameters)

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


def sgd_step(loss) -> tuple[Callable, Callable]:
    """``(step, init)``: one SGD-with-momentum step on ``loss(params, x, y)`` (not jitted) and the optimizer's init."""
    opt = optax.sgd(LR, momentum=0.9)

    def step(state, x, y):
        params, opt_state = state
        grads = jax.grad(loss)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step, opt.init


def _optax_step(loss, params) -> JaxStep:
    step, init = sgd_step(loss)
    return JaxStep(jax.jit(step), (params, init(params)), init)


def _one_hot(o, y):
    return jax.nn.one_hot(y, o.shape[-1], dtype=o.dtype)


#: Loss heads of the step, ``head(ops, outputs, integer_labels) -> per-example loss``.
LOSS_HEADS: dict[str, Callable] = {
    "softmax_cross_entropy": lambda ops, o, y: ops.losses.softmax_cross_entropy(o, _one_hot(o, y)),
    "softmax_cross_entropy_with_integer_labels":
        lambda ops, o, y: ops.losses.softmax_cross_entropy_with_integer_labels(o, y),
    "sigmoid_binary_cross_entropy":
        lambda ops, o, y: ops.losses.sigmoid_binary_cross_entropy(o, _one_hot(o, y)).sum(-1),
    "binary_cross_entropy":
        lambda ops, o, y: ops.losses.binary_cross_entropy(ops.nn.sigmoid(o), _one_hot(o, y)).sum(-1),
    "multiclass_svm_loss": lambda ops, o, y: ops.losses.multiclass_svm_loss(o, y),
    "squared_error": lambda ops, o, y: ops.losses.squared_error(o, _one_hot(o, y)).sum(-1),
}


def funcnet_step(sizes, activation, ops=funcnet, compute_dtype=None,
                 loss: str = "softmax_cross_entropy_with_integer_labels", norm: str | None = None,
                 fused: bool = True) -> JaxStep:
    """The funcnet MLP's step with a loss head of :data:`LOSS_HEADS` (and ``norm`` after each hidden layer).

    ``compute_dtype=jnp.bfloat16`` runs it as ``fit(compute_dtype=...)`` does; ``fused=False`` keeps each
    activation and the Dense layer after it apart (``layers.mlp(fused=False)``).
    """
    net = layers.mlp(sizes, activation, ops=ops, norm=norm, fused=fused)
    _, params = net.init(jax.random.key(0))
    apply = train.mixed_precision(net.apply, compute_dtype)
    head = LOSS_HEADS[loss]

    def objective(p, x, y):
        return head(ops, apply(p, x), y).astype(jnp.float32).mean()

    return _optax_step(objective, params)


def plain_jax_mlp(sizes, activation) -> tuple[list, Callable]:
    """``(params, apply)``: the same MLP in plain ``jax.nn`` (Glorot-uniform weights, zero biases)."""
    act = getattr(jax.nn, activation)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    init = jax.nn.initializers.glorot_uniform()
    params = [(init(k, (a, b)), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply(p, x):
        for w, b in p[:-1]:
            x = act(x @ w + b)
        w, b = p[-1]
        return x @ w + b

    return params, apply


def plain_jax_step(sizes, activation) -> JaxStep:
    params, apply = plain_jax_mlp(sizes, activation)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

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
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        # JAX's default float32 matmul precision on GPUs uses TF32; let PyTorch do the same work
        torch.set_float32_matmul_precision("high")
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(act())
    model = torch.nn.Sequential(*mods).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    class Runner:
        def run(self, x, y, n):
            xt = torch.from_numpy(np.array(x)).to(device)
            yt = torch.from_numpy(np.array(y)).long().to(device)
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xt), yt).backward()
                opt.step()
            sync()
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


def default_meshes(max_devices: int) -> tuple[tuple[int, int], ...]:
    """(data, model) mesh shapes: data-parallel on 1, 2, 4, ... devices, then the largest split with a model axis."""
    shapes = [(n, 1) for n in (1, 2, 4, 8, 16) if n <= max_devices]
    top = shapes[-1][0]
    shapes += [(top // m, m) for m in (2, 4) if m <= top]
    return tuple(shapes)


def scaling(config: dict, meshes=((1, 1), (2, 1), (4, 1), (8, 1)), rounds: int = 5,
            steps: int = 5) -> dict[str, dict]:
    """Throughput of the funcnet step on each ``(data, model)`` mesh, the batch split over ``data``.

    With a ``model`` axis each Dense layer's units are split as in
    ``fit(mesh=parallel.mesh_2d(data, model))``. Needs as many visible devices
    as the largest mesh (on a CPU, see :func:`funcnet.parallel.use_cpu_devices`).
    Keys are ``"data x model"``; efficiency is throughput on n devices /
    (n × throughput on the first mesh's devices).
    """
    from funcnet import parallel

    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    runners = {}
    for d, m in meshes:
        mesh = parallel.mesh_2d(d, m)
        s = funcnet_step(sizes, config["activation"])
        params = jax.device_put(s.state[0], parallel.param_shardings(s.state[0], mesh))
        s.state = (params, jax.jit(s.init_opt)(params))  # the optimizer state follows the parameters' shardings
        data = jax.device_put((x, y), parallel.batch_sharded(mesh))
        s.run(*data, 2)
        runners[f"{d} x {m}"] = (d * m, functools.partial(s.run, *data, steps))
    times = _interleaved({k: run for k, (_, run) in runners.items()}, rounds)
    out = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        out[k] = {"devices": runners[k][0], "median_s": med, "examples_per_s": batch / med}
    first = out[next(iter(out))]
    for r in out.values():
        r["efficiency"] = r["examples_per_s"] * first["devices"] / (r["devices"] * first["examples_per_s"])
    return out


def scaling_in_subprocess(config_name: str = "medium", max_devices: int = 8) -> dict[str, dict]:
    """:func:`scaling` in a fresh Python with ``max_devices`` simulated CPU devices (fixed at start-up)."""
    import subprocess
    import sys

    code = (f"import json, jax; jax.config.update('jax_num_cpu_devices', {max_devices}); "
            f"from funcnet.apps import bench; "
            f"print(json.dumps(bench.scaling(bench.CONFIGS[{config_name!r}], "
            f"bench.default_meshes({max_devices}))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"scaling benchmark in a subprocess failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def default_configs() -> tuple[str, ...]:
    """small, medium and deep everywhere; the wide configuration only on an accelerator (minutes per step on a CPU)."""
    return ("small", "medium", "deep") + (() if jax.default_backend() == "cpu" else ("wide",))


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
def run(configs=None, frameworks=FRAMEWORKS, rounds: int = 10, steps: int = 10,
        memory: bool = True, activations_sweep: bool = True, scan: bool = True, sweep_batch: int = 4096,
        scaling_devices: int = 8, roofline: bool = True, head_vocabs: tuple[int, ...] = (),
        head_rounds: int = 3, dispatch: bool = True, log=print) -> dict:
    """Run the benchmark and return every number (also the input of :func:`markdown`).

    ``configs`` defaults to :func:`default_configs`.
    """
    configs = default_configs() if configs is None else tuple(configs)
    _check_args(configs, frameworks, rounds, steps, scaling_devices, sweep_batch)
    notes: list[str] = []
    result = {"machine": machine(), "configs": {}, "notes": notes}
    if dispatch:
        from funcnet.apps import dispatch as dispatch_table

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
        from funcnet.apps import remat

        result["remat_memory"] = remat.measure(deep["sizes"], sweep_batch, log=log)
        wide_head = {**deep, "sizes": deep["sizes"][:-1] + [1000]}
        log(f"[deep with 1000 classes, batch {sweep_batch}] memory per loss ...")
        result["loss_memory"] = loss_memory(wide_head)
        result["loss_memory_config"] = wide_head
    if head_vocabs:
        from funcnet.apps import head

        result["heads"] = []
        for vocab in head_vocabs:
            log(f"[fused head, V = {vocab}] memory{' and time' if head_rounds else ''} ...")
            result["heads"].append(head.measure(vocab, rounds=head_rounds))
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


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}" if b >= 2**20 else f"{b / 2**20:.4f}"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else ("1.00" if a == b else "inf")


def _memory_row(name: str, m: dict[str, int], *extra: str) -> str:
    """``| name | manual MiB | (unfused MiB) | autodiff MiB | *extra | manual / autodiff |``"""
    unfused = [_mib(m["funcnet.unfused"])] if "funcnet.unfused" in m else []
    cells = [name, _mib(m["funcnet"]), *unfused, _mib(m["funcnet.reference"]), *extra,
             _ratio(m["funcnet"], m["funcnet.reference"])]
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict, command: str) -> str:
    lines = ["# Benchmarks", "", f"Machine: {result['machine']}.", "", f"Command: `{command}`", "",
             "One training step (forward, softmax cross-entropy, backward, SGD with momentum 0.9, float32) of "
             "the same MLP on the same batch; frameworks interleaved in one process, in an order that rotates "
             "every round; median step time over rounds; ratio = median over rounds of the step time / plain "
             "JAX's (`jax.nn` + `optax`, `jax.grad`) in the same round, with its interquartile range; "
             "TFLOP/s = 6 × batch × parameters / step time.", ""]
    rates = {k: v["tflops"] for k, v in result.get("matmul", {}).items()}
    if rates:
        lines += ["Roofline: one jitted n × n × n matmul measured "
                  + " and ".join(f"{v:.3f} TFLOP/s in {k}" for k, v in rates.items())
                  + f" (n = {result['matmul']['float32']['n']}); the last column of each table is the step's "
                  "TFLOP/s as a fraction of the float32 rate."
                  + (" On a CPU this is a reference point rather than a ceiling: the steps' smaller matmuls can "
                     "run faster than one large matmul, and bfloat16 has no faster matmul units here."
                     if result["machine"].startswith("CPU") else ""), ""]
    if "dispatch" in result:
        from funcnet.apps import dispatch

        lines += dispatch.markdown_lines(result["dispatch"])
    for name, entry in result["configs"].items():
        cfg = entry["config"]
        roof_head, roof_rule = (" of f32 matmul rate |", " ---: |") if rates else ("", "")
        lines += [f"## {name}: {'-'.join(map(str, cfg['sizes']))}, batch {cfg['batch']}, {cfg['activation']} "
                  f"({entry['params']:,} parameters)", "",
                  "| framework | median step | ratio to plain JAX (IQR) | TFLOP/s |" + roof_head,
                  "| --- | ---: | ---: | ---: |" + roof_rule]
        for fw, t in entry["timing"].items():
            roof = f" {t['tflops'] / rates['float32']:.0%} |" if rates else ""
            lo, hi = t["ratio_iqr"]
            lines.append(f"| {fw} | {t['median_s'] * 1e6:,.0f} µs | {t['ratio']:.3f} ({lo:.3f}–{hi:.3f}) | "
                         f"{t['tflops']:.4f} |{roof}")
        if "compiled_ratio" in entry:
            c = entry["compiled_ratio"]
            lines += ["", f"Compiled programs alone (no Python dispatch; {c['rounds']} paired rounds): funcnet / plain "
                      f"JAX = {c['ratio']:.3f}, 95% bootstrap interval {c['ci95'][0]:.3f}–{c['ci95'][1]:.3f}."]
        if "mixed_precision" in entry and rates:
            mp = entry["mixed_precision"]
            lines += ["", "Mixed precision (funcnet, `fit(compute_dtype=jnp.bfloat16)`: bfloat16 compute, float32 "
                      "master weights): " + "; ".join(
                          f"{k} {v['median_s'] * 1e6:,.0f} µs, {v['tflops']:.4f} TFLOP/s = "
                          f"{v['tflops'] / rates[k]:.0%} of the {k} matmul rate" for k, v in mp.items())
                      + f"; bfloat16 / float32 step time = {mp['bfloat16']['median_s'] / mp['float32']['median_s']:.2f}."]
        if "memory" in entry:
            m = entry["memory"]
            lines += ["", "Temporary memory of the compiled step (XLA `memory_analysis().temp_size_in_bytes`): "
                      + ", ".join(f"{k} {_mib(v)} MiB" for k, v in m.items())
                      + f"; manual / autodiff = {_ratio(m['funcnet'], m['funcnet.reference'])}."]
        lines.append("")
    if "activation_memory" in result:
        lines += [f"## Memory per activation (deep network, batch {result['activation_memory_batch']})", "",
                  "XLA's temporary memory of one compiled training step. *Fused* is `layers.mlp`'s default: each "
                  "activation and the Dense layer after it are one `gates.activation_affine`, whose rule keeps only "
                  "the layer's pre-activation; *unfused* is `mlp(..., fused=False)` (an activation op, then an "
                  "affine op); the autodiff twin is `mlp(..., ops=funcnet.reference)`.", "",
                  "| activation | fused, default (MiB) | unfused (MiB) | autodiff twin (MiB) | plain JAX (MiB) "
                  "| fused / autodiff |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for act, m in result["activation_memory"].items():
            plain = _mib(m["plain_jax"]) if "plain_jax" in m else "-"
            lines.append(_memory_row(act, m, plain))
        lines.append("")
    if "remat_memory" in result:
        from funcnet.apps import remat

        lines += remat.markdown_lines(result["remat_memory"], CONFIGS["deep"]["sizes"], result["activation_memory_batch"])
    if "fused_times" in result:
        lines += ["## Fused vs unfused step time (deep network)", "",
                  "Median step time over interleaved rounds; ratios are medians of the per-round ratios.", "",
                  "| activation | batch | fused | unfused | plain JAX | fused / unfused | fused / plain JAX |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for batch, per_activation in result["fused_times"].items():
            for act, t in per_activation.items():
                plain = f"{t['plain_jax_s'] * 1e6:,.0f} µs" if "plain_jax_s" in t else "-"
                vs_plain = f"{t['fused/plain_jax']:.3f}" if "fused/plain_jax" in t else "-"
                lines.append(f"| {act} | {int(batch):,} | {t['fused_s'] * 1e6:,.0f} µs | {t['unfused_s'] * 1e6:,.0f} µs "
                             f"| {plain} | {t['fused/unfused']:.3f} | {vs_plain} |")
        lines.append("")
    if "loss_memory" in result:
        cfg = result["loss_memory_config"]
        lines += [f"## Memory per loss ({'-'.join(map(str, cfg['sizes']))}, {cfg['activation']}, batch {cfg['batch']})",
                  ""]
        unfused = all("funcnet.unfused" in m for m in result["loss_memory"].values())
        lines += (["| loss | manual rules, fused layers (MiB) | unfused layers (MiB) | autodiff twin (MiB) "
                   "| manual / autodiff |", "| --- | ---: | ---: | ---: | ---: |"] if unfused else
                  ["| loss | manual rules (MiB) | autodiff twin (MiB) | manual / autodiff |", "| --- | ---: | ---: | ---: |"])
        for loss, m in result["loss_memory"].items():
            lines.append(_memory_row(loss, m))
        lines.append("")
    if result.get("heads"):
        from funcnet.apps import head

        lines += head.markdown_lines(result["heads"])
    if "scan" in result:
        s = result["scan"]
        lines += ["## Steps fused in one `lax.scan` (small network)", "",
                  f"One jitted step at a time: {s['loop_s'] * 1e6:,.0f} µs per step; {s['n_steps']} steps in one "
                  "compiled "
                  f"`lax.scan`: {s['scan_s'] * 1e6:,.0f} µs per step ({s['loop_s'] / s['scan_s']:.2f}× faster).", ""]
    if "scaling" in result:
        lines += ["## Data- and model-parallel throughput (medium network, batch 256)", "",
                  "Mesh `data x model`: the batch is split over `data`; with `model` > 1 each Dense layer's units "
                  "are split over `model` as well (`fit(mesh=parallel.mesh_2d(data, model))`).", "",
                  "| mesh (data x model) | devices | median step | examples/s | scaling efficiency |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for k, r in result["scaling"].items():
            lines.append(f"| {k} | {r['devices']} | {r['median_s'] * 1e6:,.0f} µs | {r['examples_per_s']:,.0f} | "
                         f"{r['efficiency']:.2f} |")
        if result["machine"].startswith("CPU"):
            lines += ["", "On a CPU the devices are simulated host devices sharing the same cores, so this table "
                      "measures the overhead of sharding and collectives, not a speed-up."]
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in sorted(set(result["notes"]))] + [""]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    from funcnet.apps.plotting import pyplot

    plt = pyplot()
    names = list(result["configs"])
    fws = sorted({fw for e in result["configs"].values() for fw in e["timing"]}, key=FRAMEWORKS.index)
    memory = result.get("activation_memory")
    # step ratios (if any configuration was timed) on top, memory per activation (if swept) below
    panels = (["ratios"] if names or not memory else []) + (["memory"] if memory else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(10 if memory else 8, 4 * len(panels)), squeeze=False)
    axes = dict(zip(panels, axes[:, 0]))
    if memory:
        _plot_activation_memory(axes["memory"], memory, result["activation_memory_batch"])
    if "ratios" in axes:
        _plot_ratios(axes["ratios"], result, names, fws)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_ratios(ax, result: dict, names: list, fws: list) -> None:
    width = 0.8 / max(len(fws), 1)
    for i, fw in enumerate(fws):
        rows = [result["configs"][n]["timing"].get(fw, {"ratio": np.nan, "ratio_iqr": [np.nan] * 2}) for n in names]
        ratios = np.array([r["ratio"] for r in rows])
        iqr = np.array([r["ratio_iqr"] for r in rows]).T
        ax.bar(np.arange(len(names)) + i * width, ratios, width, label=fw,
               yerr=np.abs(iqr - ratios), capsize=2, error_kw={"lw": 0.8})
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(fws) - 1) / 2, names)
    ax.set_ylabel("step time / plain JAX (lower is faster; bars: IQR)")
    ax.legend(fontsize=8)


def _plot_activation_memory(ax, memory: dict, batch: int) -> None:
    acts = list(memory)
    series = (("funcnet", "fused (default)"), ("funcnet.unfused", "unfused"), ("funcnet.reference", "autodiff twin"))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        ax.bar(np.arange(len(acts)) + i * width, [memory[a].get(key, np.nan) / 2**20 for a in acts], width,
               label=label)
    if "identity" in memory:
        ax.axhline(memory["identity"]["funcnet.unfused"] / 2**20, color="black", lw=0.8, ls="--",
                   label="identity network")
    ax.set_xticks(np.arange(len(acts)) + width * (len(series) - 1) / 2, acts, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"temporary memory (MiB)\ndeep network, batch {batch}")
    ax.legend(fontsize=8)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, default=float)
