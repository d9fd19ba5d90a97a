"""The all-equal initialisation trap: identical hidden units stay identical.

If every weight starts at the same value (all zeros, or any constant), every
hidden unit computes the same function of the input, so backpropagation hands
each one the same gradient and the same update: after any number of steps they
are still copies of one another, and the network is no more expressive than one
with a single hidden unit. With all zeros it is worse: the hidden activations
are tanh(0) = 0, so no gradient reaches the hidden weights at all.

The script trains the same one-hidden-layer tanh network three times by
full-batch gradient descent with momentum (one step per epoch), from all-zero
weights, from a constant, and from Glorot-uniform weights, and after every epoch
measures the largest difference between two hidden units (their incoming
weights, bias and outgoing weights). It stays exactly 0 for the first two: the
all-zero network stays at chance, the constant one does no better than a single
tanh unit (on XOR, a single unit can get at most three corners of four right).
Glorot's random start breaks the symmetry and learns.

The symmetry is exact in exact arithmetic. In floating point it holds as long
as every column of a matrix product is rounded the same way; XLA's CPU kernels
do that for some widths and not others (on the machine this was written on,
widths 8 and 32 picked up a one-ulp difference between units, which the
unstable symmetric point then amplified), so the default width is small: 4.

    python examples/zero_init_trap.py                 # XOR
    python examples/zero_init_trap.py --data spiral --epochs 1000
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import data, init, layers, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("xor", "spiral"), default="xor", help="dataset (default xor)")
    p.add_argument("--hidden", type=int, default=4, help="hidden tanh units (default 4)")
    p.add_argument("--epochs", type=int, default=300, help="full-batch steps (default 300)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate, momentum 0.9 (default 0.1)")
    p.add_argument("--constant", type=float, default=0.5, help="value of the constant start (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the Glorot weights (default 0)")
    return p.parse_args(argv)


def unit_difference(params) -> jax.Array:
    """Largest difference between hidden unit j and unit 0 over (w_in[:, j], b[j], w_out[j, :])."""
    units = jnp.concatenate([params["dense_0"]["w"], params["dense_0"]["b"][None, :], params["dense_1"]["w"].T])
    return jnp.max(jnp.abs(units - units[:, :1]))


def train_from(w_init, ds: data.Dataset, args: argparse.Namespace) -> dict:
    model = layers.mlp([2, args.hidden, ds.num_classes], "tanh", w_init=w_init)
    _, params = model.init(jax.random.key(args.seed))
    objective = train.make_objective(model, penalty=None)
    optimizer = optax.sgd(args.lr, momentum=0.9)
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)

    @jax.jit
    def step(params, opt_state):
        grads, _ = jax.grad(objective, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        return params, opt_state, unit_difference(params)

    @jax.jit
    def accuracy(params, x, y):
        return jnp.mean(jnp.argmax(model.apply(params, x), axis=-1) == y)

    opt_state, unit_diff = optimizer.init(params), [unit_difference(params)]
    for _ in range(args.epochs):
        params, opt_state, diff = step(params, opt_state)
        unit_diff.append(diff)
    return {"unit_diff": np.array(jax.device_get(unit_diff)), "train_accuracy": float(accuracy(params, x, y)),
            "test_accuracy": float(accuracy(params, ds.test.x, ds.test.y))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load(args.data, seed=args.seed)
    starts = {"zeros": init.zeros, f"constant {args.constant:g}": init.constant(args.constant),
              "glorot uniform": init.glorot_uniform()}
    runs = {name: train_from(w_init, ds, args) for name, w_init in starts.items()}

    print(f"{args.data}: 2-{args.hidden}-{ds.num_classes} tanh network, {args.epochs} full-batch epochs "
          f"(chance = {1 / ds.num_classes:.2f})")
    print(f"{'start':<16}{'unit diff at 0':>16}{'max over epochs':>17}{'train acc':>11}{'test acc':>10}")
    for name, r in runs.items():
        print(f"{name:<16}{r['unit_diff'][0]:>16.4g}{r['unit_diff'].max():>17.4g}{r['train_accuracy']:>11.3f}"
              f"{r['test_accuracy']:>10.3f}")
    print("unit diff = largest difference between two hidden units' weights (0: all units are copies)")
    out = {}
    for key, run in zip(("zeros", "constant", "glorot"), runs.values()):
        out[f"{key}_max_unit_diff"] = float(run["unit_diff"].max())
        out[f"{key}_train_accuracy"] = run["train_accuracy"]
        out[f"{key}_test_accuracy"] = run["test_accuracy"]
    return out


if __name__ == "__main__":
    main()
