"""DP-SGD on the digits: every example's gradient clipped, from one backward pass, without forming it.

Differentially private SGD (Abadi et al. 2016) clips each example's gradient to
norm ``C`` and adds Gaussian noise to the sum::

    g̃ = (1/B) (Σᵢ gᵢ · min(1, C/‖gᵢ‖) + N(0, σ² C² I))

The usual JAX way forms every ``gᵢ`` with ``vmap(grad)`` (B copies of the
parameters). ``funcnet.curvature.clipped_gradient`` takes the norms from the
ghost-norm identity ``‖aᵢ δᵢᵀ‖ = ‖aᵢ‖‖δᵢ‖`` of each Dense layer (its input ``a``
and output cotangent ``δ``, both in the one backward pass) and the clipped sum
as ``aᵀ diag(c) δ``. This script checks the two give the same clipped gradient,
times them on one batch, and trains the digits network privately and not.

What it leaves out: the privacy accounting. The (ε, δ) guarantee follows from
the noise multiplier σ, the sampling rate B/N and the number of steps through an
accountant (e.g. Google's ``dp_accounting``, not a funcnet dependency), and it
assumes Poisson-sampled batches, where this script shuffles fixed-size ones.

    python examples/dp_sgd.py
    python examples/dp_sgd.py --noise 0.5 --clip 1.0 --epochs 30
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import curvature, data, layers, train
from funcnet.train.steps import loss_function


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="passes over the training split (default 20)")
    p.add_argument("--hidden", type=int, default=128, help="hidden ReLU units (default 128)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per minibatch (default 64)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--clip", type=float, default=1.0, help="per-example gradient norm bound C (default 1.0)")
    p.add_argument("--noise", type=float, default=1.0, help="noise multiplier σ (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights, the batches and the noise")
    return p.parse_args(argv)


def formed_clipped_gradient(model, params, x, y, clip):
    """The clipped mean the usual way: every per-example gradient formed by ``vmap(grad)``."""
    loss_fn = loss_function("softmax_cross_entropy_with_integer_labels", model)
    per = jax.vmap(jax.grad(lambda p, x, y: loss_fn(model.apply(p, x[None]), y[None])[0]), (None, 0, 0))(params, x, y)
    norms = jnp.sqrt(sum(jnp.sum(g.reshape(len(x), -1) ** 2, 1) for g in jax.tree.leaves(per)))
    c = jnp.minimum(1.0, clip / norms)
    return jax.tree.map(lambda g: jnp.tensordot(c, g, 1) / len(x), per), norms


def median_seconds(f, *args, repeats: int = 30) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def make_step(model, optimizer, clip, noise, private: bool):
    """``step(state, x, y, key) -> (state, loss)`` for :func:`funcnet.train.make_epoch`."""
    def step(state: train.TrainState, x, y, key):
        if private:
            grads, _ = curvature.clipped_gradient(model, state.params, x, y, clip)
            leaves, tree = jax.tree.flatten(grads)
            keys = jax.random.split(key, len(leaves))
            grads = tree.unflatten([g + noise * clip / len(x) * jax.random.normal(k, g.shape, g.dtype)
                                    for g, k in zip(leaves, keys)])
            loss = jnp.nan  # not needed: one backward pass, no loss value
        else:
            moments = curvature.gradient_moments(model, state.params, x, y)
            grads, loss = moments.gradient, moments.loss
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return train.TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), loss

    return step


def main(argv=None) -> dict:
    args = parse_args(argv)
    ds = data.load("digits", seed=args.seed)
    model = layers.mlp([64, args.hidden, 10], "relu")
    _, params0 = model.init(jax.random.key(args.seed))
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)

    xb, yb = x[: args.batch_size], y[: args.batch_size]
    ghost = jax.jit(lambda p: curvature.clipped_gradient(model, p, xb, yb, args.clip))
    formed = jax.jit(lambda p: formed_clipped_gradient(model, p, xb, yb, args.clip))
    (g1, n1), (g2, _) = ghost(params0), formed(params0)
    difference = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in
                     zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
    t_ghost, t_formed = median_seconds(ghost, params0), median_seconds(formed, params0)
    print(f"one batch of {args.batch_size}: clipped gradient from ghost norms {t_ghost * 1e3:.2f} ms, from "
          f"vmap(grad) {t_formed * 1e3:.2f} ms ({t_formed / t_ghost:.1f}x); largest relative difference "
          f"{difference:.1e}; {int(jnp.sum(n1 > args.clip))} of {args.batch_size} examples clipped")

    out = {"difference": difference, "ghost_ms": t_ghost * 1e3, "vmap_grad_ms": t_formed * 1e3}
    steps = len(x) // args.batch_size
    for private in (False, True):
        optimizer = optax.sgd(args.lr, momentum=0.9)
        epoch = jax.jit(train.make_epoch(make_step(model, optimizer, args.clip, args.noise, private),
                                         args.batch_size))
        state = train.TrainState.create(params0, optimizer)
        start = time.perf_counter()
        for k in range(args.epochs):
            state, _ = epoch(state, x, y, jax.random.key(args.seed * 1000 + k))
        seconds = time.perf_counter() - start
        acc = train.evaluate(model, state.params, ds.test)["accuracy"]
        name = f"DP-SGD (C = {args.clip}, σ = {args.noise})" if private else "SGD, not private"
        print(f"{name}: test accuracy {acc:.4f} after {args.epochs} epochs of {steps} steps ({seconds:.1f} s)")
        out["private_accuracy" if private else "accuracy"] = acc
    return out


if __name__ == "__main__":
    main()
