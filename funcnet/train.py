"""Training: the objective, the fit loop, early stopping, Newton's method and hyper-parameter search.

The objective is the lecture's regularised empirical risk

    J(θ) = (1/N) Σ_n loss(f(x_n; θ), y_n) + λ Ω(θ)

with Ω the L1 or L2 penalty of the weights (biases excluded). Optimizers are
Optax's; :mod:`funcnet.schedules` adds the lecture's decay schedules.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import funcnet
from funcnet._trees import cast_floats
from funcnet.data import Dataset, Split
from funcnet.layers import MANUAL, Layer

__all__ = [
    "LOSSES", "make_objective", "mixed_precision", "History", "FitResult", "fit", "fit_many", "evaluate",
    "newton", "newton_step", "grid_search", "random_search", "SearchResult",
]

#: Loss names accepted by :func:`fit`: the op in ``ops.losses`` and whether it classifies.
LOSSES: Mapping[str, tuple[str, bool]] = {
    "softmax_cross_entropy": ("softmax_cross_entropy_with_integer_labels", True),
    "multiclass_svm": ("multiclass_svm_loss", True),
    "squared_error": ("squared_error", False),
    "l2_loss": ("l2_loss", False),
}
PENALTIES = ("l2", "l1")


def _loss_fn(loss: str, ops: types.ModuleType) -> tuple[Callable, bool]:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    name, classifies = LOSSES[loss]
    return getattr(ops.losses, name), classifies


def mixed_precision(apply: Callable, compute_dtype: Any = None) -> Callable:
    """``apply(params, x, **kw)`` run in ``compute_dtype``: float parameters and inputs are cast on the way in.

    The caller's parameters keep their own dtype (float32 master weights), and
    their gradients come back in it through the cast. ``None`` returns ``apply``.
    """
    if compute_dtype is None:
        return apply

    def cast_apply(params, x, **kwargs):
        return apply(cast_floats(params, compute_dtype), x.astype(compute_dtype), **kwargs)

    return cast_apply


def make_objective(apply: Callable, loss: str = "softmax_cross_entropy", penalty: str = "l2",
                   ops: types.ModuleType = MANUAL, compute_dtype: Any = None) -> Callable:
    """``objective(params, x, y, lam, key=None) -> (J, outputs)``: mean data loss + λ·penalty.

    With a ``key`` the model runs in training mode (dropout on). With a
    ``compute_dtype`` (e.g. ``jnp.bfloat16``) the parameters and inputs are cast
    to it for the forward and backward pass (mixed precision): the parameters
    themselves stay in their own dtype (float32 master weights), their
    gradients come back in it through the cast, and the loss is averaged in
    float32.
    """
    loss_fn, _ = _loss_fn(loss, ops)
    if penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; known: {', '.join(PENALTIES)}")
    penalty_fn = getattr(ops.losses, f"{penalty}_penalty")

    apply = mixed_precision(apply, compute_dtype)

    def objective(params, x, y, lam, key=None):
        out = apply(params, x, key=key, train=key is not None)
        data_loss = jnp.mean(loss_fn(out, y).astype(jnp.float32))
        return data_loss + lam * penalty_fn(params), out

    return objective


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run (plain lists, ready for JSON and plotting)."""

    epoch: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_accuracy: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        return cls(**d)


@dataclasses.dataclass
class FitResult:
    params: Any
    opt_state: Any
    history: History


def _accuracy(out, y, classifies):
    if not classifies:
        return jnp.nan
    return jnp.mean(jnp.argmax(out, axis=-1) == y)


def evaluate(model: Layer, params, split: Split, loss: str = "softmax_cross_entropy",
             ops: types.ModuleType = MANUAL) -> dict[str, float]:
    """Mean data loss (no penalty) and accuracy (classification) of ``params`` on ``split``."""
    loss_fn, classifies = _loss_fn(loss, ops)
    value, accuracy = jax.jit(_metrics_fn(model, loss_fn, classifies))(params, jnp.asarray(split.x),
                                                                       jnp.asarray(split.y))
    return {"loss": float(value), "accuracy": float(accuracy)}


def _epoch_fn(objective, optimizer, x, y, batch_size, batch_sharding=None):
    """One epoch as a single ``lax.scan`` over shuffled minibatches (data resident on the device).

    Every step gets its own PRNG key (training mode: dropout layers use it,
    the others ignore it). With ``batch_sharding`` each minibatch is split over
    the mesh's data axis.
    """
    n = x.shape[0]
    steps = n // batch_size

    def run_epoch(params, opt_state, lam, key):
        order = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)

        def step(carry, idx_and_i):
            params, opt_state = carry
            idx, i = idx_and_i
            k = jax.random.fold_in(key, i)
            xb, yb = x[idx], y[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            (j, _), grads = jax.value_and_grad(objective, has_aux=True)(params, xb, yb, lam, k)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), j

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (order, jnp.arange(steps)))
        return params, opt_state, jnp.mean(losses)

    return run_epoch


def _metrics_fn(model, loss_fn, classifies):
    def metrics(params, x, y):
        out = model.apply(params, x)
        return jnp.mean(loss_fn(out, y)), _accuracy(out, y, classifies)

    return metrics


def _count(fn: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, or an error naming ``fn``, ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_lam(fn: str, lam: Any) -> None:
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: lam must be a number, got {lam!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: lam (the penalty strength) must be finite and >= 0, got {lam!r}")


#: Seeds of ``jax.random.key`` keep 32 bits: seeds that differ above them give the same key.
SEED_LIMIT = 2**32


def _check_seed(fn: str, seed: Any) -> int:
    seed = _count(fn, "seed", seed, 0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{fn}: seed must be below 2**32 = {SEED_LIMIT} (JAX keeps 32 bits of it, so larger "
                         f"seeds repeat smaller ones), got {seed}")
    return seed


def _check_data(fn: str, model: Layer, params, data, classifies: bool) -> None:
    """Finite inputs (and regression targets), and class labels within the model's outputs, in every split.

    Inside the compiled epoch the values are traced and no longer checked: a NaN
    feature or a label past the last output would only show up as a NaN loss.
    """
    if not all(hasattr(data, s) for s in ("train", "val")) or not hasattr(data.train, "x"):
        raise TypeError(f"{fn}: data must be a funcnet.data.Dataset (train, val and test splits), got "
                        f"{type(data).__name__}; load one with funcnet.data.load(...), or build "
                        "Dataset(train, val, test, ...) from the Splits of funcnet.data.split(x, y)")
    splits = {"training": data.train, "validation": data.val, **({"test": data.test} if hasattr(data, "test")
                                                                   else {})}
    width = None
    for split_name, split in splits.items():
        for what, values in (("inputs", split.x), ("targets", split.y)):
            values = np.asarray(values)
            if values.size and np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                bad = ~np.isfinite(values.reshape(len(values), -1))
                raise ValueError(f"{fn}: the {split_name} {what} hold {int(bad.sum())} NaN or infinite values "
                                 f"(first in row {int(np.argmax(bad.any(axis=1)))}); remove or impute them")
        labels = np.asarray(split.y)
        if not classifies or not labels.size or not np.issubdtype(labels.dtype, np.integer):
            continue
        if width is None:
            width = jax.eval_shape(model.apply, params, jnp.asarray(np.asarray(split.x)[:1])).shape[-1]
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= width:
            raise ValueError(f"{fn}: the {split_name} labels must lie in [0, {width}) for a model with {width} "
                             f"outputs, got values from {lo} to {hi}; give the output layer at least {hi + 1} "
                             "units, or fix the labels")


def fit(model: Layer, params, data: Dataset, *, loss: str = "softmax_cross_entropy",
        optimizer: optax.GradientTransformation | None = None, epochs: int = 30, batch_size: int = 32,
        penalty: str = "l2", lam: float = 0.0, patience: int | None = None, seed: int = 0,
        progress: bool = True, ops: types.ModuleType = MANUAL, checkpoint: str | None = None,
        resume: str | None = None, config: Mapping | None = None,
        mesh: jax.sharding.Mesh | str | None = None, compute_dtype: Any = None,
        callback: Callable[[int, Any, "History"], bool | None] | None = None) -> FitResult:
    """Train ``params`` of ``model`` on ``data`` by minibatch gradient descent.

    Each epoch is one pass over the training split in shuffled minibatches of
    ``batch_size`` (``len(train) // batch_size`` iterations; the remainder of a
    shuffle is left out of that epoch), compiled once as one ``lax.scan``.
    After each epoch the loss and accuracy on the training and validation
    splits are recorded.

    Args:
      model: the network (``init``/``apply`` pair).
      params: initial parameters.
      data: train/val/test splits.
      loss: a key of :data:`LOSSES`.
      optimizer: an Optax transformation (default: SGD with momentum 0.9, lr 0.1).
      epochs: maximum number of epochs.
      batch_size: examples per minibatch.
      penalty: ``"l2"`` or ``"l1"``, applied to the weights with weight ``lam``.
      lam: regularisation strength λ.
      patience: early stopping: stop after this many epochs without a lower
        validation loss and return the best parameters (None: no early stopping).
      seed: seeds shuffling and dropout; the run is deterministic given it.
      progress: show a progress bar.
      ops: namespace of the loss and penalty (``funcnet`` or ``funcnet.reference``).
      checkpoint: if given, the training state is saved there after every epoch
        (atomically), so an interrupted run can ``resume``. The file must not
        exist yet, unless it is the ``resume`` file itself (training then
        continues in place): fit replaces only the file it writes.
      resume: a checkpoint written by a previous ``fit`` with the same settings.
      config: extra JSON-able settings stored in the checkpoint.
      mesh: data-parallel training over a ``jax.sharding.Mesh`` with a
        ``"data"`` axis (see :mod:`funcnet.parallel`), or ``"auto"`` for a
        ``"data"`` mesh over all visible devices: each minibatch is split
        over the devices, parameters are replicated, and XLA reduces the
        gradients. ``batch_size`` must be a multiple of the number of devices
        on that axis. A second ``"model"`` axis (``parallel.mesh_2d``) also
        splits each Dense layer's units over its devices.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: forward and backward
        in that dtype, parameters (master weights), optimizer state and loss
        average in float32 (see :func:`make_objective`).
      callback: ``callback(epoch, params, history)`` after every epoch (epochs
        count from 1); returning True stops training.

    Returns:
      A :class:`FitResult` with the final (or best) parameters, the optimizer
      state and the :class:`History`.
    """
    import os

    from funcnet import checkpoint as ckpt

    # fit replaces only the checkpoint file it writes, or the one it resumes from (continuing in place)
    in_place = (checkpoint is not None and resume is not None and os.path.exists(checkpoint)
                and os.path.exists(resume) and os.path.samefile(checkpoint, resume))
    if checkpoint is not None and os.path.lexists(checkpoint) and not in_place:
        raise ckpt.CheckpointError(
            f"fit: checkpoint={str(checkpoint)!r} already exists and fit does not replace a file it did not "
            f"write; choose a new path, or pass resume={str(checkpoint)!r} as well to continue it in place")

    loss_fn, classifies = _loss_fn(loss, ops)
    epochs = _count("fit", "epochs", epochs, 1)
    batch_size = _count("fit", "batch_size", batch_size, 1)
    _check_lam("fit", lam)
    if patience is not None:
        patience = _count("fit", "patience", patience, 1)
    seed = _check_seed("fit", seed)
    _check_data("fit", model, params, data, classifies)
    optimizer = optax.sgd(0.1, momentum=0.9) if optimizer is None else optimizer
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    if x.shape[0] < 1:
        raise ValueError("fit: the training split is empty")
    batch_size = min(batch_size, x.shape[0])
    if batch_size < 1:
        raise ValueError(f"fit: batch_size must be positive, got {batch_size}")
    objective = make_objective(model.apply, loss, penalty, ops, compute_dtype)
    batch_sharding = None
    if mesh is not None:
        from funcnet import parallel

        if isinstance(mesh, str) and mesh == "auto":
            mesh = parallel.data_mesh()
        if not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"fit: mesh must be a jax.sharding.Mesh or 'auto', got {mesh!r}")
        if parallel.DATA_AXIS not in mesh.axis_names:
            raise ValueError(f"fit: the mesh needs a '{parallel.DATA_AXIS}' axis to split the batch over; "
                             f"its axes are {mesh.axis_names}")
        n_dev = mesh.shape[parallel.DATA_AXIS]
        if batch_size % n_dev:
            raise ValueError(f"fit: batch_size {batch_size} does not split over the {n_dev} devices of the mesh's "
                             f"'{parallel.DATA_AXIS}' axis; use a multiple of {n_dev}")
        batch_sharding = parallel.batch_sharded(mesh)
        x, y = jax.device_put((x, y), parallel.replicated(mesh))
    run_epoch = jax.jit(_epoch_fn(objective, optimizer, x, y, batch_size, batch_sharding))
    metrics = jax.jit(_metrics_fn(model, loss_fn, classifies))
    has_val = data.val.x.shape[0] > 0
    val = (jnp.asarray(data.val.x), jnp.asarray(data.val.y)) if has_val else None
    if mesh is not None and has_val:
        val = jax.device_put(val, parallel.replicated(mesh))
    base_key = jax.random.key(seed)

    opt_state = optimizer.init(params)
    history = History()
    best = {"params": params, "loss": math.inf, "bad": 0}
    start = 0
    if resume is not None:
        saved = ckpt.restore(resume, like={"params": {"params": params, "best": params}, "opt_state": opt_state})
        params, opt_state = saved.params["params"], saved.opt_state
        best = {"params": saved.params["best"], "loss": saved.config["best_loss"], "bad": saved.config["bad_epochs"]}
        history = History.from_dict(saved.config["history"])
        start = saved.step
    if mesh is not None:
        params = jax.device_put(params, parallel.param_shardings(params, mesh))
        opt_state = jax.jit(optimizer.init)(params)  # the state follows the parameters' shardings
        if resume is not None:
            opt_state = jax.device_put(saved.opt_state, jax.tree.map(lambda a: a.sharding, opt_state))

    bar = _progress(range(start, epochs), progress, initial=start, total=epochs)
    lam_arr = jnp.asarray(lam, jnp.float32)
    for epoch in bar:
        params, opt_state, _ = run_epoch(params, opt_state, lam_arr, jax.random.fold_in(base_key, epoch))
        train_loss, train_acc = (float(v) for v in metrics(params, x, y))
        val_loss, val_acc = (float(v) for v in metrics(params, *val)) if has_val else (math.nan, math.nan)
        history.epoch.append(epoch + 1)
        history.train_loss.append(train_loss)
        history.train_accuracy.append(train_acc)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"fit: the training loss became {train_loss} at epoch {epoch + 1}. The inputs, labels and lam "
                "were checked before training, so likely causes are: a learning rate (or schedule) too high for "
                "this problem, inputs of very large magnitude (standardize them), or a model or loss that "
                "overflows in its dtype; try a lower learning rate first")
        monitored = val_loss if has_val else train_loss
        if monitored < best["loss"]:
            best = {"params": params, "loss": monitored, "bad": 0}
            history.best_epoch = epoch + 1
        else:
            best["bad"] += 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}",
                            **({"val_acc": f"{val_acc:.4f}"} if classifies else {}))
        stop = patience is not None and best["bad"] >= patience
        if callback is not None and callback(epoch + 1, params, history):
            stop = True
        if checkpoint is not None:
            ckpt.save(checkpoint, {"params": params, "best": best["params"]}, opt_state, step=epoch + 1,
                      config={"best_loss": best["loss"], "bad_epochs": best["bad"], "history": history.to_dict(),
                              **dict(config or {})}, overwrite=in_place or epoch > start)
        if stop:
            history.stopped_early = True
            break
    if hasattr(bar, "close"):
        bar.close()
    if patience is not None:
        params = best["params"]
    return FitResult(params, opt_state, history)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="epochs", unit="epoch", leave=True, **kwargs)


# -------------------------------------------------------------------- fit_many
def fit_many(model: Layer, data: Dataset, *, learning_rates: Sequence[float], lams: Sequence[float],
             seeds: Sequence[int], loss: str = "softmax_cross_entropy", penalty: str = "l2",
             make_optimizer: Callable[..., optax.GradientTransformation] = optax.sgd, epochs: int = 20,
             batch_size: int = 32, ops: types.ModuleType = MANUAL) -> dict[str, np.ndarray]:
    """Train one candidate per (learning rate, λ, seed) triple *together*, vmapped in one program.

    Only continuous settings may differ between candidates (the network shape
    is shared), so the whole set trains as one compiled ``vmap`` of the epoch:
    ``K`` candidates cost about one larger batch, not ``K`` compilations.

    ``make_optimizer`` is called as ``make_optimizer(learning_rate=...)``; fix
    its other settings with ``functools.partial(optax.sgd, momentum=0.9)``.

    Returns per-candidate arrays (shape ``(K, epochs)`` for curves): ``val_loss``,
    ``val_accuracy``, ``train_loss``, and the final ``params`` stacked on a
    leading axis.
    """
    if not (len(learning_rates) == len(lams) == len(seeds)):
        raise ValueError("fit_many: learning_rates, lams and seeds must have the same length")
    loss_fn, classifies = _loss_fn(loss, ops)
    optimizer = optax.inject_hyperparams(make_optimizer)(learning_rate=0.0)
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    batch_size = min(int(batch_size), x.shape[0])
    objective = make_objective(model.apply, loss, penalty, ops)
    epoch_fn = _epoch_fn(objective, optimizer, x, y, batch_size)
    metrics = _metrics_fn(model, loss_fn, classifies)
    input_shape = (-1,) + tuple(data.train.x.shape[1:])

    def init_one(lr, seed):
        _, params = model.init(jax.random.key(seed), input_shape)
        state = optimizer.init(params)
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        return params, state

    params, opt_state = jax.vmap(init_one)(jnp.asarray(learning_rates, jnp.float32), jnp.asarray(seeds))
    lams_arr = jnp.asarray(lams, jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))

    @jax.jit
    def epoch_all(params, opt_state, epoch):
        ekeys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
        params, opt_state, _ = jax.vmap(epoch_fn)(params, opt_state, lams_arr, ekeys)
        tr = jax.vmap(metrics, in_axes=(0, None, None))(params, x, y)
        va = jax.vmap(metrics, in_axes=(0, None, None))(params, jnp.asarray(data.val.x), jnp.asarray(data.val.y))
        return params, opt_state, tr, va

    curves = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(epochs):
        params, opt_state, tr, va = epoch_all(params, opt_state, epoch)
        curves["train_loss"].append(np.asarray(tr[0]))
        curves["val_loss"].append(np.asarray(va[0]))
        curves["val_accuracy"].append(np.asarray(va[1]))
    out = {k: np.stack(v, axis=1) for k, v in curves.items()}
    out["params"] = params
    return out


# ---------------------------------------------------------------------- search
@dataclasses.dataclass
class SearchResult:
    """All tried settings with their validation scores; ``best`` is the lowest validation loss."""

    trials: list[dict]
    best: dict


def _run_trials(settings: Iterable[dict], train: Callable[[dict], Mapping[str, float]]) -> SearchResult:
    trials = []
    for s in settings:
        scores = dict(train(dict(s)))
        if "val_loss" not in scores:
            raise ValueError("search: the train function must return a mapping with a 'val_loss' entry")
        trials.append({"settings": dict(s), **scores})
    finite = [t for t in trials if math.isfinite(t["val_loss"])]
    if not finite:
        raise ValueError("search: every trial diverged (no finite validation loss)")
    return SearchResult(trials, min(finite, key=lambda t: t["val_loss"]))


def grid_search(grid: Mapping[str, Sequence], train: Callable[[dict], Mapping[str, float]]) -> SearchResult:
    """Try every combination of ``grid`` (e.g. ``{"lr": [...], "width": [...]}``), select on validation loss.

    ``train(settings) -> {"val_loss": ..., ...}`` trains one model (any shape:
    width, depth and batch size may change) and scores it on the validation split.
    """
    names = list(grid)
    return _run_trials((dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))), train)


def random_search(space: Mapping[str, Callable[[np.random.Generator], Any]], train: Callable[[dict], Mapping],
                  n_trials: int, seed: int = 0) -> SearchResult:
    """Try ``n_trials`` settings drawn from ``space`` (name -> ``sampler(rng)``), select on validation loss.

    Draw scale parameters log-uniformly, e.g. ``"lr": lambda r: 10 ** r.uniform(-4, -1)``.
    """
    rng = np.random.default_rng(seed)
    return _run_trials(({k: sample(rng) for k, sample in space.items()} for _ in range(n_trials)), train)


# ---------------------------------------------------------------------- Newton
def newton_step(loss: Callable, params, damping: float = 1e-4):
    """One damped Newton step ``θ ← θ - (|H| + μI)⁻¹ ∇J`` through the manual rules.

    The Hessian comes from :func:`funcnet.hessian_matrix` (reverse-over-reverse). Its
    eigenvalues are replaced by their absolute values plus ``damping`` (a
    saddle-free Newton step): on a convex loss near its optimum this is plain
    Newton; on a non-convex one it still moves downhill instead of towards a
    saddle or maximum.
    """
    flat, unravel = ravel_pytree(params)
    g, _ = ravel_pytree(jax.grad(loss)(params))
    h = funcnet.hessian_matrix(loss)(params)
    eigvals, eigvecs = jnp.linalg.eigh((h + h.T) / 2)
    step = eigvecs @ ((eigvecs.T @ g) / (jnp.abs(eigvals) + damping))
    return unravel(flat - step)


def newton(loss: Callable, params, *, steps: int = 10, damping: float = 1e-4, tol: float = 0.0):
    """Run up to ``steps`` damped Newton steps; returns ``(params, losses)`` (losses[0] is the start).

    Stops early once the loss improves by less than ``tol``. For small networks
    only: the Hessian has (number of parameters)² entries.
    """
    step = jax.jit(lambda p: newton_step(loss, p, damping))
    value = jax.jit(loss)
    losses = [float(value(params))]
    for _ in range(steps):
        params = step(params)
        losses.append(float(value(params)))
        if losses[-2] - losses[-1] < tol:
            break
    return params, losses
