"""Newton's method against gradient descent on L2-regularised logistic regression.

Gradient descent steps along -∇J with one step size for every direction, so on
a loss whose curvature differs a lot between directions (here: features on
different scales) it crawls along the flat ones. Newton's method rescales the
step by the inverse Hessian, θ ← θ - H⁻¹∇J, and near the optimum the error
roughly squares at every step. :func:`funcnet.train.newton` gets the Hessian
by reverse-over-reverse differentiation through funcnet's hand-written
backward rules (:func:`funcnet.hessian`).

Gradient descent gets the classic safe step 1/L, with L the largest Hessian
eigenvalue at θ = 0: the logistic loss is most curved there (σ' peaks at 0),
so L bounds the curvature everywhere and every step goes downhill. Both start
from θ = 0; the optimum is where Newton settles, and each method counts as
there once its loss is within ``--tol`` of it.

    python examples/newton.py
    python examples/newton.py --scales 1,1,1     # well conditioned: GD needs far fewer steps
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import funcnet
from _plotting import pyplot, save
from funcnet import gates, losses, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="examples (default 500)")
    p.add_argument("--scales", type=lambda s: [float(v) for v in s.split(",")], default=[1.0, 3.0, 0.3],
                   help="standard deviation of each feature (default 1,3,0.3)")
    p.add_argument("--lam", type=float, default=1e-2, help="L2 weight λ (default 1e-2)")
    p.add_argument("--newton-steps", type=int, default=10, help="Newton steps (default 10)")
    p.add_argument("--max-gd-steps", type=int, default=20_000, help="gradient descent steps at most (default 20000)")
    p.add_argument("--tol", type=float, default=1e-8, help="'at the optimum': loss within this of it (default 1e-8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    p.add_argument("--out", default="runs/examples", help="folder of the plot (default: runs/examples)")
    return p.parse_args(argv)


def logistic_loss(args: argparse.Namespace):
    """The objective J(w, b) = mean binary cross-entropy + λ‖w‖² of a noisy linear labelling."""
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, len(args.scales))) * np.array(args.scales)
    true_w = rng.standard_normal(len(args.scales)) / np.array(args.scales)
    y = (x @ true_w + 0.5 * rng.standard_normal(args.n) > 0).astype(np.float64)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        logits = gates.affine(x, p["w"], p["b"])[:, 0]
        return jnp.mean(losses.sigmoid_binary_cross_entropy(logits, y)) + args.lam * losses.l2_penalty(p)

    return loss, {"w": jnp.zeros((len(args.scales), 1)), "b": jnp.zeros((1,))}


def gradient_descent(loss, params, lr: float, steps: int) -> np.ndarray:
    """Losses of ``steps`` plain gradient steps (one compiled scan); entry 0 is the start."""
    def step(p, _):
        p = jax.tree.map(lambda v, g: v - lr * g, p, jax.grad(loss)(p))
        return p, loss(p)

    _, path = jax.jit(lambda p: jax.lax.scan(step, p, None, length=steps))(params)
    return np.concatenate([[float(loss(params))], np.asarray(path)])


def steps_to(curve: np.ndarray, optimum: float, tol: float) -> int | None:
    """The first step whose loss is within tol of the optimum (None: never)."""
    reached = np.flatnonzero(curve - optimum < tol)
    return int(reached[0]) if reached.size else None


def main(argv=None) -> dict:
    jax.config.update("jax_enable_x64", True)  # float64, so that "within 1e-8 of the optimum" is meaningful
    args = parse_args(argv)
    loss, p0 = logistic_loss(args)

    _, newton_losses = train.newton(loss, p0, steps=args.newton_steps, damping=1e-10)
    newton_losses = np.array(newton_losses)
    optimum = float(newton_losses.min())
    flat0, unravel = ravel_pytree(p0)
    curvature = float(jnp.linalg.eigvalsh(funcnet.hessian(lambda v: loss(unravel(v)))(flat0)).max())
    gd_losses = gradient_descent(loss, p0, 1.0 / curvature, args.max_gd_steps)
    n_newton, n_gd = steps_to(newton_losses, optimum, args.tol), steps_to(gd_losses, optimum, args.tol)

    print(f"logistic regression, {args.n} examples, feature scales {args.scales}, λ = {args.lam}; "
          f"GD step 1/L = {1 / curvature:.3f}")
    print(f"{'step':>6}{'Newton loss':>16}{'GD loss':>16}")
    last = n_gd if n_gd is not None else args.max_gd_steps
    milestones = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000) if t < last]
    for t in sorted(set(range(len(newton_losses))) | set(milestones) | {last}):
        newton = f"{newton_losses[t]:>16.10f}" if t < len(newton_losses) else f"{'':>16}"
        print(f"{t:>6}{newton}{gd_losses[t]:>16.10f}")
    gd_text = f"{n_gd}" if n_gd is not None else f"more than {args.max_gd_steps}"
    print(f"optimum J = {optimum:.10f}; steps to within {args.tol:g} of it: Newton {n_newton}, gradient descent "
          f"{gd_text}")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4))
    ax.semilogy(np.maximum(gd_losses[: 2 * last + 1] - optimum, 1e-16), label="gradient descent, step 1/L")
    ax.semilogy(np.maximum(newton_losses - optimum, 1e-16), "o-", label="Newton")
    ax.axhline(args.tol, color="grey", lw=0.8, ls="--", label=f"tolerance {args.tol:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlim=(0, None), xlabel="step", ylabel="J - J*", title="logistic regression: distance to the optimum")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the axes: the curves cross every corner
    fig.tight_layout()
    path = save(fig, args.out, "newton.png")
    print(f"plot: {path}")
    return {"optimum": optimum, "newton_steps": n_newton, "gd_steps": n_gd, "newton_losses": newton_losses.tolist(),
            "gd_step_size": 1.0 / curvature, "plot": str(path)}


if __name__ == "__main__":
    main()
