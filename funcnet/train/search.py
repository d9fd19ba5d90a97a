"""Choosing settings: ``fit_many`` (candidates trained together under ``vmap``), grid and random search."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.data import Dataset
from funcnet.layers import Layer
from funcnet.train.state import TrainState
from funcnet.train.steps import DEFAULT_LOSS, Loss, canonical_loss, make_epoch, make_metrics, make_objective, make_step

__all__ = ["fit_many", "grid_search", "random_search", "SearchResult"]


def fit_many(model: Layer, data: Dataset, *, learning_rates: Sequence[float], lams: Sequence[float],
             seeds: Sequence[int], loss: str | Loss = DEFAULT_LOSS, penalty: str | None = "l2",
             make_optimizer: Callable[..., optax.GradientTransformation] = optax.sgd, epochs: int = 20,
             batch_size: int = 32) -> dict[str, np.ndarray]:
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
    loss = canonical_loss(loss)
    optimizer = optax.inject_hyperparams(make_optimizer)(learning_rate=0.0)
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    val = (jnp.asarray(data.val.x), jnp.asarray(data.val.y))
    batch_size = min(int(batch_size), x.shape[0])
    metrics = make_metrics(model, loss)
    input_shape = (-1,) + tuple(data.train.x.shape[1:])

    def init_one(lr, seed):
        _, params = model.init(jax.random.key(seed), input_shape)
        state = TrainState.create(params, optimizer)
        state.opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        return state

    def epoch_one(state, lam, key):
        objective = make_objective(model, loss, penalty=penalty, lam=lam)
        state, _ = make_epoch(make_step(objective, optimizer), batch_size)(state, x, y, key)
        return state, metrics(state.params, x, y), metrics(state.params, *val)

    states = jax.vmap(init_one)(jnp.asarray(learning_rates, jnp.float32), jnp.asarray(seeds))
    lams_arr = jnp.asarray(lams, jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))

    @jax.jit
    def epoch_all(states, epoch):
        return jax.vmap(epoch_one)(states, lams_arr, jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys))

    curves = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(epochs):
        states, tr, va = epoch_all(states, epoch)
        curves["train_loss"].append(np.asarray(tr[0]))
        curves["val_loss"].append(np.asarray(va[0]))
        curves["val_accuracy"].append(np.asarray(va[1]))
    out = {k: np.stack(v, axis=1) for k, v in curves.items()}
    out["params"] = states.params
    return out


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
