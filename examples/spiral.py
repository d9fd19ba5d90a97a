"""Spiral: an MLP bends its decision boundary around interleaved arms.

No straight line separates the arms of a spiral (2 or 3 arms, ``--arms``); a
network with two hidden ReLU layers learns them. The script trains it, prints
the accuracy on each split and saves a decision-boundary plot: the predicted
class over a grid of the input plane, with the training points (dots) and the
test points (crosses) on top.

    python examples/spiral.py                  # 2 arms, writes runs/examples/spiral.png
    python examples/spiral.py --arms 3 --out plots
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _plotting import pyplot, save
from funcnet import data, layers, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", type=int, choices=(2, 3), default=2, help="number of arms and classes (default 2)")
    p.add_argument("--epochs", type=int, default=300, help="passes over the training split (default 300)")
    p.add_argument("--hidden", type=int, default=32, help="units in each of the two hidden layers (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, momentum 0.9 (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the weights (default 0)")
    p.add_argument("--out", default="runs/examples", help="folder of the plot (default: runs/examples)")
    return p.parse_args(argv)


def plot_boundary(model, params, ds: data.Dataset, out: str, arms: int):
    """Colour a grid of the (raw, unstandardized) input plane by the predicted class."""
    plt = pyplot()
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, 300), np.linspace(-1.2, 1.2, 300))
    grid = (np.stack([u.ravel(), v.ravel()], axis=1) - ds.mean) / ds.std
    predicted = np.asarray(jnp.argmax(jax.jit(model.apply)(params, jnp.asarray(grid, jnp.float32)), axis=-1))

    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis", arms)
    ax.contourf(u, v, predicted.reshape(u.shape), levels=np.arange(arms + 1) - 0.5, cmap=cmap, alpha=0.35)
    style = {"o": {"s": 18, "edgecolors": "k", "linewidths": 0.4}, "x": {"s": 40, "linewidths": 1.5}}
    for split, marker in ((ds.train, "o"), (ds.test, "x")):
        xy = split.x * ds.std + ds.mean  # back from standardized to original coordinates
        ax.scatter(xy[:, 0], xy[:, 1], c=split.y, cmap=cmap, vmin=-0.5, vmax=arms - 0.5, marker=marker,
                   **style[marker])
    ax.set(title=f"{arms}-arm spiral: predicted class (dots train, crosses test)", xlabel="x₁", ylabel="x₂",
           aspect="equal")
    fig.tight_layout()
    return save(fig, out, "spiral.png")


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load("spiral" if args.arms == 2 else "spiral3", seed=args.seed)
    model = layers.mlp([2, args.hidden, args.hidden, args.arms], "relu")
    _, params = model.init(jax.random.key(args.seed))
    result = train.fit(model, params, ds, optimizer=optax.sgd(args.lr, momentum=0.9), epochs=args.epochs,
                       batch_size=32, seed=args.seed, progress=False)
    h = result.history  # train and validation accuracy after the last epoch; the test split is scored once here
    scores = {"train": h.train_accuracy[-1], "val": h.val_accuracy[-1],
              "test": train.evaluate(model, result.params, ds.test)["accuracy"]}
    path = plot_boundary(model, result.params, ds, args.out, args.arms)

    print(f"{args.arms}-arm spiral, {model.description}, {args.epochs} epochs")
    print("accuracy  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"decision boundary: {path}")
    return {"train_accuracy": scores["train"], "val_accuracy": scores["val"], "test_accuracy": scores["test"],
            "plot": str(path)}


if __name__ == "__main__":
    main()
