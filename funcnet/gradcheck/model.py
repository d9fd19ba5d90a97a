"""Gradient checks of whole models: any scalar function of pytrees, compared leaf by leaf.

Three gradients of ``f(*args)`` with respect to the arguments in ``argnums``:

* **manual**: ``jax.grad(f)``, through funcnet's hand-written rules;
* **autodiff**: ``jax.grad(twin)`` of a second function computing the same
  value on ``funcnet.reference`` (optional);
* **finite differences**: centred differences ``(f(x + h v) - f(x - h v)) / 2h``
  in float64 along every coordinate of a small leaf, or along ``probes`` random
  unit directions ``v`` of a large one, compared with ``⟨v, ∇f⟩``.

``jax.test_util.check_grads`` needs forward mode, which ``custom_vjp`` forbids;
this checker uses reverse mode only.

**Kinks.** Where a probe straddles a point at which ``f`` is not differentiable
(ReLU at 0, a max tie, a hinge at its margin), the centred difference averages
two slopes and honestly disagrees with any single gradient. A disagreeing probe
is classified as a *kink* when its one-sided differences ``(f(x+hv) - f(x))/h``
and ``(f(x) - f(x-hv))/h`` differ by a jump and the gradient lies between them
(it is one of the one-sided slopes, as the kink conventions promise); it is then
counted, not failed. A wrong rule at a smooth point has equal one-sided slopes
and fails.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnet._trees import cast_floats, path_name
from funcnet.gradcheck.differences import contract, probe

#: Pass thresholds on the scale-free error, by the dtype the gradients were computed in.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"autodiff": 1e-9, "finite_diff": 1e-6},
    "float32": {"autodiff": 1e-5, "finite_diff": 1e-3},
    "bfloat16": {"autodiff": 5e-2, "finite_diff": 5e-2},
    "float16": {"autodiff": 1e-2, "finite_diff": 2e-2},
}
#: A jump between the one-sided slopes larger than this (relative to the gradient scale) is a kink.
KINK_JUMP = 1e-3
#: Leaves of at most this many elements get a finite difference per coordinate.
FULL_MAX = 512

PAIRS = {
    "manual vs autodiff": "autodiff",
    "manual vs finite differences": "finite_diff",
    "autodiff vs finite differences": "finite_diff",
}


@dataclasses.dataclass(frozen=True)
class PairError:
    """How far two gradients of one leaf are apart.

    Attributes:
      max_abs: the largest absolute difference (over elements, or over probes).
      max_rel: ``max_abs`` divided by the gradient scale of the leaf.
      worst: the index of the worst element (a tuple), or ``"direction k"``.
      tolerance: the pass threshold on ``max_rel``.
      kinks: probes that straddle a kink (excluded from the errors).
    """

    max_abs: float
    max_rel: float
    worst: Any
    tolerance: float
    kinks: int = 0

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.tolerance


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """All comparisons for one leaf, e.g. ``dense_1/w``."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    probes: str  # "every coordinate" or "N random directions"
    pairs: dict[str, PairError]

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs.values())

    @property
    def kinks(self) -> int:
        return max((p.kinks for p in self.pairs.values()), default=0)


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """The result of :func:`check_gradients`: one :class:`LeafReport` per checked leaf."""

    leaves: list[LeafReport]
    precision: str

    @property
    def passed(self) -> bool:
        return all(leaf.passed for leaf in self.leaves)

    @property
    def failures(self) -> list[str]:
        """Paths of the failing leaves."""
        return [leaf.path for leaf in self.leaves if not leaf.passed]

    def __getitem__(self, path: str) -> LeafReport:
        for leaf in self.leaves:
            if leaf.path == path:
                return leaf
        raise KeyError(f"no leaf {path!r}; leaves: {[leaf.path for leaf in self.leaves]}")

    def to_dict(self) -> dict:
        """Plain types only, ready for ``json.dumps`` and loggers."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str)) | {
            "passed": self.passed, "failures": self.failures}

    def __str__(self) -> str:
        names = list(PAIRS)
        width = max([len(leaf.path) for leaf in self.leaves] + [4])
        head = f"{'leaf':<{width}}  {'shape':<12} " + "  ".join(f"{n:>30}" for n in names) + "  kinks  result"
        lines = [head, "-" * len(head)]
        for leaf in self.leaves:
            cells = []
            for n in names:
                p = leaf.pairs.get(n)
                cells.append(f"{'-':>30}" if p is None else f"{p.max_rel:.2e} at {p.worst}".rjust(30))
            verdict = "ok" if leaf.passed else "FAIL: " + ", ".join(n for n, p in leaf.pairs.items() if not p.passed)
            lines.append(f"{leaf.path:<{width}}  {str(leaf.shape):<12} " + "  ".join(cells)
                         + f"  {leaf.kinks:>5}  {verdict}")
        n_ok = sum(leaf.passed for leaf in self.leaves)
        lines.append("-" * len(head))
        lines.append(f"{n_ok}/{len(self.leaves)} leaves passed (max relative error; computed in {self.precision}; "
                     "finite differences in float64)")
        return "\n".join(lines)


class GradientCheckError(AssertionError):
    """Raised by ``check_gradients(..., strict=True)``; ``.report`` holds the full report."""

    def __init__(self, report: GradientReport):
        super().__init__(f"gradient check failed for {', '.join(report.failures)}\n{report}")
        self.report = report


def _scalarize(f: Callable, args: tuple, seed: int) -> Callable:
    """``f`` itself if it returns a scalar, else ``⟨c, f(*args)⟩`` for a fixed random cotangent ``c``."""
    out = jax.eval_shape(f, *args)
    leaves = jax.tree.leaves(out)
    if len(leaves) == 1 and leaves[0].shape == ():
        return f
    rng = np.random.default_rng(seed)
    cts = [rng.standard_normal(o.shape) for o in leaves]

    def scalar(*a):
        return contract(cts, f(*a))

    return scalar


def _pair(a: np.ndarray, b: np.ndarray, scale: float, tol: float, worst_label=None, kinks: int = 0) -> PairError:
    if a.size == 0:
        return PairError(0.0, 0.0, None, tol, kinks)
    diff = np.abs(a - b)
    if not np.all(np.isfinite(diff)):
        i = int(np.argmax(~np.isfinite(diff)))
        return PairError(float("inf"), float("inf"), worst_label(i) if worst_label else i, tol, kinks)
    i = int(np.argmax(diff))
    return PairError(float(diff.flat[i]), float(diff.flat[i] / scale), worst_label(i) if worst_label else i, tol,
                     kinks)


def check_gradients(f: Callable, *args: Any, twin: Callable | None = None, argnums: int | Sequence[int] = 0,
                    precision: str = "float64", probes: int = 16, full_max: int = FULL_MAX,
                    step: float = 1e-6, seed: int = 0, strict: bool = False,
                    tolerances: dict[str, dict[str, float]] | None = None) -> GradientReport:
    """Compare manual, autodiff and finite-difference gradients of ``f`` leaf by leaf.

    Args:
      f: the function, e.g. ``loss(params, batch)``; a non-scalar output is
        contracted with a fixed random cotangent.
      *args: its arguments (any pytrees).
      twin: the same function built on autodiff (``funcnet.reference``); if
        None, only the finite-difference comparison is made.
      argnums: which arguments to check (each may be a whole pytree).
      precision: ``"float64"`` (default): every floating input is cast to
        float64 and all gradients compared at that precision; ``"native"``:
        manual and autodiff gradients in the inputs' own dtypes, with
        dtype-aware tolerances. Finite differences always run in float64, and
        the caller's ``jax_enable_x64`` setting is restored afterwards.
      probes: random directions per leaf larger than ``full_max`` elements.
      full_max: leaves up to this size get one probe per coordinate.
      step: the finite-difference step ``h``.
      seed: seeds the directions (and the cotangent of a non-scalar output).
      strict: raise :class:`GradientCheckError` (carrying the report) on failure.
      tolerances: overrides :data:`TOLERANCES`.

    Returns:
      A :class:`GradientReport`.
    """
    if precision not in ("float64", "native"):
        raise ValueError(f"check_gradients: precision must be 'float64' or 'native', got {precision!r}")
    tolerances = {**TOLERANCES, **(tolerances or {})}
    single = isinstance(argnums, int)
    argnums = (argnums,) if single else tuple(argnums)
    if not argnums or any(not 0 <= i < len(args) for i in argnums):
        raise ValueError(f"check_gradients: argnums {argnums} out of range for {len(args)} arguments")

    with jax.enable_x64(True):
        args64 = tuple(cast_floats(a, jnp.float64) for a in args)
        args_grad = args64 if precision == "float64" else tuple(jax.tree.map(jnp.asarray, a) for a in args)
        s = _scalarize(f, args_grad, seed)
        s64 = _scalarize(f, args64, seed)
        manual = jax.jit(jax.grad(s, argnums))(*args_grad)
        auto = None
        if twin is not None:
            t = _scalarize(twin, args_grad, seed)
            auto = jax.jit(jax.grad(t, argnums))(*args_grad)

        names, dtypes, leaves64, m_leaves, a_leaves = [], [], [], [], []
        for k, i in enumerate(argnums):
            with_path, _ = jax.tree_util.tree_flatten_with_path(args64[i])
            m_k = jax.tree.leaves(manual[k])
            a_k = jax.tree.leaves(auto[k]) if auto is not None else [None] * len(with_path)
            for (path, leaf), m, a in zip(with_path, m_k, a_k, strict=True):
                name = path_name(path)
                if not single:
                    name = f"args[{i}]" + (f"/{name}" if name else "")
                names.append(name or "<arg>")
                dtypes.append(np.dtype(m.dtype).name)
                leaves64.append(np.asarray(leaf, np.float64))
                m_leaves.append(np.asarray(m, np.float64))
                a_leaves.append(None if a is None else np.asarray(a, np.float64))
        global_scale = max((float(np.max(np.abs(m))) for m in m_leaves if m.size), default=0.0)
        floor = max(1e-3 * global_scale, np.finfo(np.float64).tiny)

        # every probe of every leaf as a direction in the flat parameter space: one compiled program
        flat, unravel = ravel_pytree(tuple(args64[i] for i in argnums))
        rng = np.random.default_rng(seed)
        local_directions, rows, offset = [], [], 0
        for x in leaves64:
            if x.size <= full_max:
                local = np.eye(x.size)
            else:
                v = rng.standard_normal((probes, x.size))
                local = v / np.linalg.norm(v, axis=1, keepdims=True)
            embedded = np.zeros((len(local), flat.size))
            embedded[:, offset:offset + x.size] = local
            local_directions.append(local)
            rows.append(embedded)
            offset += x.size
        directions = np.concatenate(rows) if rows else np.zeros((0, flat.size))

        def at(v):
            new_args = list(args64)
            for i, a in zip(argnums, unravel(v)):
                new_args[i] = a
            return s64(*new_args)

        base = float(jax.jit(at)(flat))
        values = (np.asarray(jax.jit(probe, static_argnums=(0, 3))(at, flat, jnp.asarray(directions), step))
                  if len(directions) else np.zeros((0, 2)))
        reports, row = [], 0
        for name, dtype, x, m, a, local in zip(names, dtypes, leaves64, m_leaves, a_leaves, local_directions):
            plus, minus = values[row:row + len(local), 0], values[row:row + len(local), 1]
            row += len(local)
            reports.append(_check_leaf(name, dtype if precision == "native" else "float64", x, m, a, local,
                                       x.size <= full_max, plus, minus, base, floor, step, tolerances))
    report = GradientReport(reports, precision)
    if strict and not report.passed:
        raise GradientCheckError(report)
    return report


def _check_leaf(name, dtype, x, m, a, directions, full, plus, minus, base, floor, step, tolerances) -> LeafReport:
    """Compare one leaf's gradients; ``plus``/``minus`` are ``f(x ± h·d)`` for each probe direction ``d``."""
    tol = tolerances[dtype]
    leaf_scale = max(float(np.max(np.abs(m))) if m.size else 0.0, floor)
    if full:
        label = lambda j: tuple(int(v) for v in np.unravel_index(j, x.shape))  # noqa: E731
        probes_text = "every coordinate"
        fd_scale = leaf_scale
    else:
        label = lambda j: f"direction {j}"  # noqa: E731
        probes_text = f"{len(directions)} random directions"
        fd_scale = max(float(np.linalg.norm(m)), floor)
    m_proj = directions @ m.reshape(-1)
    a_proj = None if a is None else directions @ a.reshape(-1)
    central = (plus - minus) / (2 * step)
    forward, backward = (plus - base) / step, (base - minus) / step

    def versus_fd(g_proj):
        slack = tol["finite_diff"] * fd_scale
        mismatch = np.abs(g_proj - central) > slack
        jump = np.abs(forward - backward) > KINK_JUMP * fd_scale
        between = (g_proj >= np.minimum(forward, backward) - slack) & (g_proj <= np.maximum(forward, backward) + slack)
        kink = mismatch & jump & between
        keep = np.flatnonzero(~kink)
        return _pair(g_proj[keep], central[keep], fd_scale, tol["finite_diff"], lambda j: label(keep[j]),
                     int(kink.sum()))

    pairs = {}
    if a is not None:
        pairs["manual vs autodiff"] = _pair(m.reshape(-1), a.reshape(-1), leaf_scale, tol["autodiff"],
                                            lambda j: tuple(int(v) for v in np.unravel_index(j, x.shape)))
    pairs["manual vs finite differences"] = versus_fd(m_proj)
    if a_proj is not None:
        pairs["autodiff vs finite differences"] = versus_fd(a_proj)
    return LeafReport(name, tuple(x.shape), dtype, probes_text, pairs)
