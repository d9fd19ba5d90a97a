"""Digits: an MLP on the bundled 8x8 handwritten digits, trained the way the lecture describes.

Minibatch SGD with momentum, a learning rate that decays like 1/t
(``α_t = α / (1 + δ t)``, :func:`funcnet.schedules.inverse_time_decay`), an L2
penalty λ‖W‖² on the weights, and early stopping on the validation loss (the
best parameters are kept). Prints train/validation/test accuracy and saves the
learning curves.

With ``--reference`` the same network is trained a second time from the same
start on the autodiff twins (``funcnet.reference``) instead of the hand-written
backward rules, and the two final parameter sets are compared.

    python examples/digits.py
    python examples/digits.py --reference --epochs 20
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

import funcnet
from _plotting import free_path
from funcnet import data, layers, train
from funcnet.apps import run
from funcnet.schedules import inverse_time_decay


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100, help="most passes over the training split (default 100)")
    p.add_argument("--hidden", type=int, default=128, help="hidden ReLU units (default 128)")
    p.add_argument("--lr", type=float, default=0.05, help="initial learning rate α (default 0.05)")
    p.add_argument("--decay", type=float, default=1e-3, help="decay rate δ per step of α/(1+δt) (default 1e-3)")
    p.add_argument("--lam", type=float, default=1e-3, help="L2 penalty weight λ (default 1e-3)")
    p.add_argument("--patience", type=int, default=10, help="early stopping patience in epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per minibatch (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffling")
    p.add_argument("--reference", action="store_true", help="also train on the autodiff twins and compare")
    p.add_argument("--out", default="runs/examples", help="folder of the learning-curve plot (default: runs/examples)")
    return p.parse_args(argv)


def fit(args: argparse.Namespace, ds: data.Dataset, params, ops) -> tuple[layers.Layer, train.FitResult]:
    model = layers.mlp([64, args.hidden, 10], "relu", ops=ops)
    optimizer = optax.sgd(inverse_time_decay(args.lr, args.decay), momentum=0.9)
    return model, train.fit(model, params, ds, optimizer=optimizer, epochs=args.epochs, batch_size=args.batch_size,
                            penalty="l2", lam=args.lam, patience=args.patience, seed=args.seed, progress=False)


def max_relative_difference(a, b) -> float:
    """max over parameter arrays of max|a - b| / max|b|."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in pairs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load("digits", seed=args.seed)
    _, params = layers.mlp([64, args.hidden, 10], "relu").init(jax.random.key(args.seed))  # one start for both runs
    model, result = fit(args, ds, params, funcnet)
    h = result.history  # early stopping returned the parameters of epoch h.best_epoch
    acc = {"train": h.train_accuracy[h.best_epoch - 1], "val": h.val_accuracy[h.best_epoch - 1],
           "test": train.evaluate(model, result.params, ds.test)["accuracy"]}
    plot = free_path(args.out, "digits.png")
    run.plot_history(h.to_dict(), plot, f"digits: {model.description}, SGD+momentum, α/(1+δt)")

    print(f"digits: {len(ds.train.x)} train / {len(ds.val.x)} validation / {len(ds.test.x)} test images, "
          f"{model.description}")
    steps = len(h.epoch) * (len(ds.train.x) // args.batch_size)
    final_lr = float(inverse_time_decay(args.lr, args.decay)(steps))
    print(f"ran {len(h.epoch)} epochs{' (stopped early)' if h.stopped_early else ''} = {steps} steps, "
          f"best validation loss after epoch {h.best_epoch}; learning rate {args.lr} -> {final_lr:.4f}")
    print("accuracy  " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"learning curves: {plot}")
    out = {"train_accuracy": acc["train"], "val_accuracy": acc["val"], "test_accuracy": acc["test"],
           "epochs_run": len(h.epoch), "best_epoch": h.best_epoch, "plot": str(plot)}

    if args.reference:
        ref_model, ref = fit(args, ds, params, funcnet.reference)
        ref_scores = train.evaluate(ref_model, ref.params, ds.test)
        out["reference_test_accuracy"] = ref_scores["accuracy"]
        out["max_relative_difference"] = max_relative_difference(result.params, ref.params)
        print(f"autodiff twins: test accuracy {out['reference_test_accuracy']:.4f}; final parameters differ from "
              f"the manual-rule run by at most {out['max_relative_difference']:.2e} (relative to each array's max)")
    return out


if __name__ == "__main__":
    main()
