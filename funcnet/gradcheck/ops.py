"""Compare manual gradients with autodiff and with centred finite differences.

For one op (a registry entry) the checker draws valid inputs, contracts the
output with a random cotangent ``c`` to get a scalar ``s(args) = ⟨c, f(args)⟩``,
and compares three gradients of ``s``:

* the manual rule: ``jax.vjp`` through the ``custom_vjp`` op;
* autodiff: ``jax.vjp`` of the op's twin in ``funcnet.reference``;
* centred finite differences ``(s(x + h e_i) - s(x - h e_i)) / 2h`` over every
  coordinate, always computed in float64.

The error of a pair is the scale-free ``max|a - b| / max(max|a|, max|b|)`` over
all argument leaves, maximised over input shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnet.gradcheck.differences import centred, contract, probe
from funcnet.registry import OPS, OpSpec, cast_args

#: Pass thresholds on the scale-free error, by the dtype the manual rule ran in.
THRESHOLDS = {
    "float64": {"autodiff": 1e-9, "finite_diff": 1e-6},
    "float32": {"autodiff": 1e-5, "finite_diff": 1e-4},
}
FD_STEP = 1e-6


def random_cotangent(rng: np.random.Generator, out: Any) -> Any:
    """A standard-normal cotangent with the structure, shapes and dtypes of ``out``."""
    return jax.tree.map(lambda o: jnp.asarray(rng.standard_normal(o.shape), o.dtype), out)


def _diff_fn(f: Callable, args: tuple, diff_argnums: Sequence[int]) -> Callable:
    """``f`` as a function of its differentiable arguments only (the rest fixed)."""

    def g(*diff_args):
        full = list(args)
        for i, a in zip(diff_argnums, diff_args):
            full[i] = a
        return f(*full)

    return g


def vjp_grads(f: Callable, args: tuple, diff_argnums: Sequence[int], cotangent: Any) -> tuple:
    """Gradients of ``⟨cotangent, f(*args)⟩`` with respect to ``args[i]``, i in ``diff_argnums``."""
    g = _diff_fn(f, args, diff_argnums)
    _, pullback = jax.vjp(g, *(args[i] for i in diff_argnums))
    return pullback(cotangent)


def finite_difference_grads(
    f: Callable, args: tuple, diff_argnums: Sequence[int], cotangent: Any, step: float = FD_STEP
) -> tuple:
    """Centred differences of ``⟨cotangent, f(*args)⟩`` over every coordinate, in float64.

    Every coordinate is probed in one compiled program
    (:func:`funcnet.gradcheck.differences.probe`).
    """
    with jax.enable_x64(True):
        args64 = tuple(
            jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), a) if i in diff_argnums else a
            for i, a in enumerate(args)
        )
        ct64 = jax.tree.map(lambda c: jnp.asarray(c, jnp.float64), cotangent)
        flat, unravel = ravel_pytree(tuple(args64[i] for i in diff_argnums))
        g = _diff_fn(f, args64, diff_argnums)

        def scalar(v):
            return contract(ct64, g(*unravel(v)))

        values = probe(scalar, flat, jnp.eye(flat.size, dtype=jnp.float64), step)
        return tuple(unravel(centred(values, step)))


def three_gradients(manual: Callable, autodiff: Callable, args: tuple, diff_argnums: Sequence[int], cotangent: Any):
    """(manual, autodiff, finite-difference) gradients of ``⟨cotangent, f(*args)⟩``, in one compiled call.

    Non-differentiable arguments (integer labels) are passed through as
    compile-time constants.
    """
    diff_argnums = tuple(diff_argnums)

    @jax.jit
    def run(diff_args, ct):
        full = list(args)
        for i, a in zip(diff_argnums, diff_args):
            full[i] = a
        full = tuple(full)
        return (
            vjp_grads(manual, full, diff_argnums, ct),
            vjp_grads(autodiff, full, diff_argnums, ct),
            finite_difference_grads(manual, full, diff_argnums, ct),
        )

    return run(tuple(args[i] for i in diff_argnums), cotangent)


def relative_error(a: Any, b: Any) -> float:
    """``max|a - b| / max(max|a|, max|b|)``, both maxima over every leaf of the pytrees.

    Normalising by the largest gradient entry of the whole comparison, not leaf
    by leaf, keeps a leaf whose true gradient is 0 (a bias the function ignores)
    from turning finite-difference round-off into a relative error of 1.
    Returns 0 when both are all zero and ``inf`` when anything is not finite.
    """
    la = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    lb = [np.asarray(y, np.float64) for y in jax.tree.leaves(b)]
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        raise ValueError(f"gradient structures differ: {[x.shape for x in la]} vs {[y.shape for y in lb]}")
    pairs = [(x, y) for x, y in zip(la, lb) if x.size]
    if not pairs:
        return 0.0
    if not all(np.all(np.isfinite(x)) and np.all(np.isfinite(y)) for x, y in pairs):
        return float("inf")
    diff = max(np.max(np.abs(x - y)) for x, y in pairs)
    scale = max(max(np.max(np.abs(x)), np.max(np.abs(y))) for x, y in pairs)
    return 0.0 if diff == 0 else float(diff / max(scale, np.finfo(np.float64).tiny))


@dataclasses.dataclass
class OpCheck:
    """One row of the gradient-check table: the worst errors over all input shapes."""

    name: str
    errors: dict[str, dict[str, float]]  # dtype -> {"autodiff": err, "finite_diff": err}

    @property
    def failures(self) -> list[str]:
        return [
            f"{dtype} vs {kind}"
            for dtype, errs in self.errors.items()
            for kind, err in errs.items()
            if not err <= THRESHOLDS[dtype][kind]
        ]

    @property
    def passed(self) -> bool:
        return not self.failures


def check_op(spec: OpSpec, seed: int = 0, dtypes: Iterable[str] = ("float32", "float64")) -> OpCheck:
    """Compare manual, autodiff and finite-difference gradients of one registry entry."""
    errors: dict[str, dict[str, float]] = {}
    with jax.enable_x64(True):
        for dtype in dtypes:
            worst = {"autodiff": 0.0, "finite_diff": 0.0}
            for k, case in enumerate(spec.cases):
                rng = np.random.default_rng([seed, k])
                args = cast_args(spec.sample(rng, case), spec.diff_argnums, dtype)
                ct = random_cotangent(rng, jax.eval_shape(spec.manual, *args))
                manual, auto, fd = three_gradients(spec.manual, spec.autodiff, args, spec.diff_argnums, ct)
                worst["autodiff"] = max(worst["autodiff"], relative_error(manual, auto))
                worst["finite_diff"] = max(worst["finite_diff"], relative_error(manual, fd))
            errors[dtype] = worst
    return OpCheck(spec.name, errors)


def check_registry(ops: Sequence[OpSpec] = OPS, seed: int = 0) -> list[OpCheck]:
    """:func:`check_op` for every entry of the registry."""
    return [check_op(spec, seed) for spec in ops]


def format_table(rows: Sequence[OpCheck]) -> str:
    """The rows as a fixed-width table with a final verdict line."""
    width = max(len(r.name) for r in rows)
    head = (
        f"{'op':<{width}}  {'f32 vs autodiff':>15}  {'f32 vs fin.diff':>15}  "
        f"{'f64 vs autodiff':>15}  {'f64 vs fin.diff':>15}  result"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{r.errors[d][k]:>15.2e}" for d in ("float32", "float64") for k in ("autodiff", "finite_diff")]
        verdict = "ok" if r.passed else "FAIL: " + ", ".join(r.failures)
        lines.append(f"{r.name:<{width}}  " + "  ".join(cells) + f"  {verdict}")
    failed = sum(not r.passed for r in rows)
    lines.append("-" * len(head))
    limits = ", ".join(f"{d}: autodiff {t['autodiff']:.0e}, fin.diff {t['finite_diff']:.0e}" for d, t in THRESHOLDS.items())
    lines.append(f"{len(rows) - failed}/{len(rows)} ops passed (max relative error; limits {limits})")
    return "\n".join(lines)
