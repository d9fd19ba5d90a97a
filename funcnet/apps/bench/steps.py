"""The networks ``funcnet bench`` trains and one training step of each in every framework it compares.

One step is: forward, mean softmax cross-entropy, backward, SGD with momentum 0.9,
all in float32, on the same batch. Peers (Flax NNX, Equinox, PyTorch) need
``funcnet[bench]``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

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
FRAMEWORKS = ("funcnet", "funcnet.reference", "plain_jax", "flax_nnx", "equinox", "pytorch")
#: The package each peer framework needs; ``pip install '.[bench]'`` installs them all.
PACKAGES = {"flax_nnx": "flax", "equinox": "equinox", "pytorch": "torch"}
LR = 0.01


def missing_packages(frameworks) -> dict[str, str]:
    """``{framework: package}`` for each of ``frameworks`` whose package is not installed."""
    import importlib.util

    return {f: PACKAGES[f] for f in frameworks if f in PACKAGES and importlib.util.find_spec(PACKAGES[f]) is None}


def param_count(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _data(sizes, batch, seed=0) -> tuple[jax.Array, jax.Array]:
    """A standard-normal float32 batch and integer class labels, on JAX's default device."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


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
