"""XOR: one hidden layer is enough, no hidden layer is not.

The four corners (±1, ±1) are labelled by the XOR of their signs, so no straight
line separates the two classes. A 2-4-2 tanh network learns the task; a purely
linear 2-2 model (one Dense layer, softmax on top) cannot do better than three
corners out of four, 75%, and usually sits near 50%.

    python examples/xor.py            # 200 epochs of SGD with momentum
    python examples/xor.py --epochs 5 --seed 1
"""

from __future__ import annotations

import argparse

import jax
import optax

from funcnet import data, layers, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=200, help="passes over the training split (default 200)")
    p.add_argument("--hidden", type=int, default=4, help="hidden tanh units (default 4)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate, momentum 0.9 (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the weights (default 0)")
    return p.parse_args(argv)


def train_and_score(model: layers.Layer, ds: data.Dataset, args: argparse.Namespace) -> dict[str, float]:
    _, params = model.init(jax.random.key(args.seed))
    result = train.fit(model, params, ds, optimizer=optax.sgd(args.lr, momentum=0.9), epochs=args.epochs,
                       batch_size=32, seed=args.seed, progress=False)
    return {"train": result.history.train_accuracy[-1],
            "test": train.evaluate(model, result.params, ds.test)["accuracy"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load("xor", seed=args.seed)
    mlp = train_and_score(layers.mlp([2, args.hidden, 2], "tanh"), ds, args)
    linear = train_and_score(layers.mlp([2, 2]), ds, args)

    print(f"XOR, {len(ds.train.x)} training / {len(ds.test.x)} test points, {args.epochs} epochs")
    print(f"{'model':<18}{'train acc':>10}{'test acc':>10}")
    print(f"{f'2-{args.hidden}-2 tanh MLP':<18}{mlp['train']:>10.3f}{mlp['test']:>10.3f}")
    print(f"{'2-2 linear':<18}{linear['train']:>10.3f}{linear['test']:>10.3f}")
    return {"mlp_train_accuracy": mlp["train"], "mlp_accuracy": mlp["test"],
            "linear_train_accuracy": linear["train"], "linear_accuracy": linear["test"]}


if __name__ == "__main__":
    main()
