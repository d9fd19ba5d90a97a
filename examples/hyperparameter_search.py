"""Hyper-parameter search: grid, random, and many candidates in one vmapped program.

Hyper-parameters (learning rate, width, depth, L2 weight λ, batch size) are
chosen on the validation split; the test split is used once, for the chosen
setting only, so its score stays an honest estimate.

- :func:`funcnet.train.grid_search` tries every combination of a few values.
- :func:`funcnet.train.random_search` draws settings at random, scale
  parameters (learning rate, λ) log-uniformly; for the same budget it covers
  each dimension with more distinct values than a grid.
- :func:`funcnet.train.fit_many` trains many (learning rate, λ, seed)
  candidates of one network shape *together*, as a single compiled ``vmap``,
  where the two searches above compile one program per trial.

    python examples/hyperparameter_search.py               # spiral
    python examples/hyperparameter_search.py --data digits
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import numpy as np
import optax

from funcnet import data, layers, train


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("spiral", "digits"), default="spiral", help="dataset (default spiral)")
    p.add_argument("--epochs", type=int, default=40, help="epochs per trial (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, weights and random search")
    g = p.add_argument_group("grid search (every combination)")
    g.add_argument("--grid-lr", type=floats, default=[0.01, 0.1], help="learning rates (default 0.01,0.1)")
    g.add_argument("--grid-width", type=ints, default=[8, 32], help="hidden widths (default 8,32)")
    g.add_argument("--grid-depth", type=ints, default=[1, 2], help="numbers of hidden layers (default 1,2)")
    g.add_argument("--grid-lam", type=floats, default=[1e-4], help="L2 weights λ (default 1e-4)")
    g.add_argument("--grid-batch", type=ints, default=[32], help="batch sizes (default 32)")
    r = p.add_argument_group("random search (see RANDOM_SPACE)")
    r.add_argument("--trials", type=int, default=4, help="random settings to try (default 4)")
    m = p.add_argument_group("fit_many (every (lr, λ, seed) combination, trained together)")
    m.add_argument("--many-lr", type=floats, default=[0.003, 0.01, 0.03, 0.1, 0.3], help="learning rates")
    m.add_argument("--many-lam", type=floats, default=[0.0, 1e-3], help="L2 weights λ (default 0,1e-3)")
    m.add_argument("--many-seeds", type=int, default=2, help="initialisation seeds per setting (default 2)")
    m.add_argument("--many-width", type=int, default=32, help="the one hidden width of all candidates")
    return p.parse_args(argv)


#: name -> sampler(rng) for random search; learning rate and λ are drawn log-uniformly.
RANDOM_SPACE = {
    "lr": lambda rng: float(10 ** rng.uniform(-2.5, -0.5)),
    "width": lambda rng: int(rng.choice([8, 16, 32, 64])),
    "depth": lambda rng: int(rng.choice([1, 2])),
    "lam": lambda rng: float(10 ** rng.uniform(-5, -2)),
    "batch_size": lambda rng: int(rng.choice([16, 32, 64])),
}


def make_trainer(ds: data.Dataset, args: argparse.Namespace):
    """``train(settings) -> scores``, keeping each trained model so the best can be tested afterwards."""
    n_in, n_out = ds.train.x.shape[1], ds.num_classes
    trained = {}

    def train_one(s: dict) -> dict:
        model = layers.mlp([n_in] + [s["width"]] * s["depth"] + [n_out], "relu")
        _, params = model.init(jax.random.key(args.seed))
        try:
            result = train.fit(model, params, ds, optimizer=optax.sgd(s["lr"], momentum=0.9), epochs=args.epochs,
                               batch_size=s["batch_size"], lam=s["lam"], seed=args.seed, progress=False)
        except FloatingPointError:  # the loss diverged: a legitimate, losing trial
            return {"val_loss": float("inf"), "val_accuracy": float("nan")}
        trained[tuple(sorted(s.items()))] = (model, result.params)
        return {"val_loss": result.history.val_loss[-1], "val_accuracy": result.history.val_accuracy[-1]}

    def test_accuracy(settings: dict) -> float:
        model, params = trained[tuple(sorted(settings.items()))]
        return train.evaluate(model, params, ds.test)["accuracy"]

    return train_one, test_accuracy


def print_trials(title: str, search: train.SearchResult, seconds: float) -> None:
    print(f"\n{title}: {len(search.trials)} trials, {seconds:.1f} s ({seconds / len(search.trials):.2f} s per trial)")
    print(f"   {'lr':>8}{'width':>6}{'depth':>6}{'λ':>9}{'batch':>6}{'val loss':>10}{'val acc':>9}")
    for t in search.trials:
        s = t["settings"]
        mark = " * " if t is search.best else "   "
        print(f"{mark}{s['lr']:>8.4f}{s['width']:>6}{s['depth']:>6}{s['lam']:>9.1e}{s['batch_size']:>6}"
              f"{t['val_loss']:>10.4g}{t['val_accuracy']:>9.3f}")


def run_search(name: str, search_fn, test_accuracy) -> dict:
    t0 = time.perf_counter()
    search = search_fn()
    print_trials(name, search, time.perf_counter() - t0)
    test = test_accuracy(search.best["settings"])
    print(f"   * best on validation; its test accuracy: {test:.3f}")
    return {"trials": search.trials, "best": search.best, "test_accuracy": test}


def run_fit_many(ds: data.Dataset, args: argparse.Namespace) -> dict:
    candidates = list(itertools.product(args.many_lr, args.many_lam, range(args.seed, args.seed + args.many_seeds)))
    lrs, lams, seeds = (list(c) for c in zip(*candidates))
    model = layers.mlp([ds.train.x.shape[1], args.many_width, ds.num_classes], "relu")
    t0 = time.perf_counter()
    out = train.fit_many(model, ds, learning_rates=lrs, lams=lams, seeds=seeds, epochs=args.epochs,
                         make_optimizer=lambda learning_rate: optax.sgd(learning_rate, momentum=0.9))
    seconds = time.perf_counter() - t0
    val_loss = out["val_loss"][:, -1]
    best = int(np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.nan)))
    best_params = jax.tree.map(lambda leaf: leaf[best], out["params"])
    test = train.evaluate(model, best_params, ds.test)["accuracy"]

    print(f"\nfit_many: {len(candidates)} candidates of {model.description} in one vmapped program, "
          f"{seconds:.1f} s ({seconds / len(candidates):.2f} s per candidate)")
    print(f"   {'lr':>8}{'λ':>9}{'seed':>6}{'val loss':>10}{'val acc':>9}")
    for k, (lr, lam, seed) in enumerate(candidates):
        mark = " * " if k == best else "   "
        print(f"{mark}{lr:>8.4f}{lam:>9.1e}{seed:>6}{val_loss[k]:>10.4g}{out['val_accuracy'][k, -1]:>9.3f}")
    print(f"   * best on validation; its test accuracy: {test:.3f}")
    return {"candidates": candidates, "val_loss": val_loss.tolist(), "best": best, "test_accuracy": test}


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load(args.data, seed=args.seed)
    train_one, test_accuracy = make_trainer(ds, args)
    print(f"{args.data}: {len(ds.train.x)} train / {len(ds.val.x)} validation / {len(ds.test.x)} test examples, "
          f"{args.epochs} epochs of SGD with momentum per trial")
    grid = {"lr": args.grid_lr, "width": args.grid_width, "depth": args.grid_depth, "lam": args.grid_lam,
            "batch_size": args.grid_batch}
    results = {
        "grid": run_search("grid search", lambda: train.grid_search(grid, train_one), test_accuracy),
        "random": run_search("random search", lambda: train.random_search(RANDOM_SPACE, train_one, args.trials,
                                                                          seed=args.seed), test_accuracy),
        "many": run_fit_many(ds, args),
    }
    return results


if __name__ == "__main__":
    main()
