"""Backpropagation on small computational graphs, by funcnet's gates and by hand.

Each graph is built from :mod:`funcnet.gates` and :mod:`funcnet.nn`, whose
backward rules are hand-written, and differentiated with ``jax.grad``. The
script prints each value next to the number worked out on paper:

1. f = (x + y) z at x = -2, y = 5, z = -4: q = x + y = 3, f = -12;
   df/dz = q = 3 and df/dq = z = -4, which the add gate hands to x and y alike.
2. A sigmoid neuron σ(w0 x0 + w1 x1 + w2) at w = (2, -3, -3), x = (-1, -2):
   the input is 1, σ(1) = 0.73, and σ'(1) = σ(1)(1 - σ(1)) = 0.20 scales
   every local gradient: dw = 0.20 (x0, x1, 1), dx = 0.20 (w0, w1).
3. The three gate patterns in f = 2 (x y + max(z, w)) at x = 3, y = -4, z = 2,
   w = -1: the add gate distributes the upstream 2 to both branches, the max
   gate routes it to the larger input z (w gets 0), and the multiply gate
   swaps its inputs (dx = 2 y = -8, dy = 2 x = 6).

    python examples/computational_graph.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from funcnet import gates, nn


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decimals", type=int, default=4, help="decimals printed for funcnet's values (default 4)")
    return p.parse_args(argv)


def table(title: str, rows: list[tuple[str, float, float]], decimals: int) -> None:
    """Print ``(quantity, funcnet value, by-hand value)`` rows; by-hand values have 2 decimals."""
    print(f"\n{title}\n{'quantity':<40}{'funcnet':>10}{'by hand':>10}")
    for name, value, by_hand in rows:
        ok = "" if abs(value - by_hand) < 0.005 else "  <- differs"
        print(f"{name:<40}{value:>10.{decimals}f}{by_hand:>10.2f}{ok}")


def add_multiply(decimals: int) -> dict:
    def f(x, y, z):
        return gates.multiply(gates.add(x, y), z)

    x, y, z = jnp.float32(-2.0), jnp.float32(5.0), jnp.float32(-4.0)
    value = float(f(x, y, z))
    dx, dy, dz = (float(g) for g in jax.grad(f, argnums=(0, 1, 2))(x, y, z))
    table("1. f = (x + y) z at x=-2, y=5, z=-4", [
        ("f", value, -12.0), ("df/dx  (add gate: copy of df/dq = z)", dx, -4.0),
        ("df/dy  (add gate: copy of df/dq = z)", dy, -4.0), ("df/dz  (mul gate: q = x + y)", dz, 3.0),
    ], decimals)
    return {"f": value, "df_dx": dx, "df_dy": dy, "df_dz": dz}


def sigmoid_neuron(decimals: int) -> dict:
    def neuron(w, x):
        z = gates.add(gates.add(gates.multiply(w[0], x[0]), gates.multiply(w[1], x[1])), w[2])
        return nn.sigmoid(z)

    w, x = jnp.array([2.0, -3.0, -3.0]), jnp.array([-1.0, -2.0])
    out = float(neuron(w, x))
    dw, dx = (g.tolist() for g in jax.grad(neuron, argnums=(0, 1))(w, x))
    table("2. sigmoid neuron σ(w0 x0 + w1 x1 + w2) at w=(2,-3,-3), x=(-1,-2)", [
        ("σ(1)", out, 0.73),
        ("dw0 = σ'·x0", dw[0], -0.20), ("dw1 = σ'·x1", dw[1], -0.39), ("dw2 = σ'·1", dw[2], 0.20),
        ("dx0 = σ'·w0", dx[0], 0.39), ("dx1 = σ'·w1", dx[1], -0.59),
    ], decimals)
    return {"neuron_output": out, "neuron_dw": dw, "neuron_dx": dx}


def gate_patterns(decimals: int) -> dict:
    def f(x, y, z, w):
        return gates.multiply(2.0, gates.add(gates.multiply(x, y), gates.maximum(z, w)))

    args = tuple(jnp.float32(v) for v in (3.0, -4.0, 2.0, -1.0))
    value = float(f(*args))
    dx, dy, dz, dw = (float(g) for g in jax.grad(f, argnums=(0, 1, 2, 3))(*args))
    table("3. gate patterns in f = 2 (x y + max(z, w)) at x=3, y=-4, z=2, w=-1", [
        ("f", value, -20.0),
        ("df/dx  (mul swaps: 2·y)", dx, -8.0), ("df/dy  (mul swaps: 2·x)", dy, 6.0),
        ("df/dz  (max routes: z won)", dz, 2.0), ("df/dw  (max routes: w lost)", dw, 0.0),
    ], decimals)
    print("   (the add gate distributed the upstream 2 unchanged to both of its inputs)")
    return {"patterns_f": value, "patterns_grads": [dx, dy, dz, dw]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    return {**add_multiply(args.decimals), **sigmoid_neuron(args.decimals), **gate_patterns(args.decimals)}


if __name__ == "__main__":
    main()
