"""Sine: one hidden tanh layer approximates sin(x) on [-π, π].

A regression network 1-H-1 (tanh hidden units, a linear output) is fitted to
noisy samples y = sin(x) + ε by minimising the squared error. With a handful of
units the curve is matched to within the noise: the test mean squared error
approaches the noise variance (0.05² = 0.0025). The fit is saved as a plot.

    python examples/sine.py                 # 16 hidden units, writes runs/examples/sine.png
    python examples/sine.py --hidden 2      # too few units: a visibly worse fit
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _plotting import pyplot, save
from funcnet import data, layers, train

NOISE = 0.05  # standard deviation of the noise in funcnet.data.sine


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=16, help="hidden tanh units (default 16)")
    p.add_argument("--epochs", type=int, default=1000, help="passes over the training split (default 1000)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the weights (default 0)")
    p.add_argument("--out", default="runs/examples", help="folder of the plot (default: runs/examples)")
    return p.parse_args(argv)


def plot_fit(model, params, ds: data.Dataset, out: str, hidden: int):
    plt = pyplot()
    x = np.linspace(-np.pi, np.pi, 400, dtype=np.float32)[:, None]
    y = np.asarray(model.apply(params, jnp.asarray((x - ds.mean) / ds.std)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, np.sin(x), "k--", lw=1, label="sin(x)")
    ax.scatter(ds.train.x * ds.std + ds.mean, ds.train.y, s=8, alpha=0.5, label="training samples")
    ax.plot(x, y, lw=2, label=f"network, {hidden} tanh units")
    ax.set(xlabel="x", ylabel="y", title="one hidden layer approximating sin(x)")
    ax.legend()
    fig.tight_layout()
    return save(fig, out, "sine.png")


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load("sine", seed=args.seed)
    model = layers.mlp([1, args.hidden, 1], "tanh")
    _, params = model.init(jax.random.key(args.seed))
    result = train.fit(model, params, ds, loss="squared_error", optimizer=optax.adam(args.lr), epochs=args.epochs,
                       batch_size=32, seed=args.seed, progress=False)
    mse = {"train": result.history.train_loss[-1],
           "test": train.evaluate(model, result.params, ds.test, loss="squared_error")["loss"]}
    path = plot_fit(model, result.params, ds, args.out, args.hidden)

    print(f"sin(x) on [-π, π], {model.description}, {args.epochs} epochs of Adam")
    print(f"mean squared error  train {mse['train']:.5f}  test {mse['test']:.5f}  (noise variance {NOISE**2:.5f})")
    print(f"fit: {path}")
    return {"train_mse": mse["train"], "test_mse": mse["test"], "noise_variance": NOISE**2, "plot": str(path)}


if __name__ == "__main__":
    main()
