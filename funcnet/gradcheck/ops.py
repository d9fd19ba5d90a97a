"""Check one op's hand-written rules against autodiff, finite differences and its documented kinks.

For one op (a registry entry) the checker draws valid inputs away from kinks
and, for every input shape, in float32 and float64:

* **reverse rule**: contracts the output with a random cotangent ``c`` to get a
  scalar ``s(args) = ⟨c, f(args)⟩`` and compares three gradients of ``s``: the
  manual rule (``jax.vjp`` of the op), autodiff (``jax.vjp`` of its twin in
  ``funcnet.reference``) and centred finite differences
  ``(s(x + h e_i) - s(x - h e_i)) / 2h`` over every coordinate, always computed
  in float64;
* **forward rule**: ``jax.jvp`` of the op against ``jax.jvp`` of its twin, along
  random tangents ``u``;
* **adjoint** (float64): the two hand-written rules against each other,
  ``⟨c, J u⟩ = ⟨Jᵀ c, u⟩``.

Then, at each documented kink (:class:`funcnet.registry.Kink`), ``jax.grad`` of
``sum(op)`` must equal the hand-computed gradient exactly, and ``jax.jvp`` with
a tangent of ones must give its sum.

The error of a comparison is the scale-free ``max|a - b| / max(max|a|, max|b|)``
over all argument leaves, maximised over input shapes; it passes when it is at
most the ``rtol`` of :mod:`funcnet.tolerances` for its kind and dtype (the
forward rule against its twin is an ``autodiff`` comparison).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnet import tolerances
from funcnet.gradcheck.differences import centred, contract, probe
from funcnet.ops.declaration import Declaration
from funcnet.registry import OPS, OpSpec, cast_args

FD_STEP = 1e-6


def _limit(kind: str, dtype: str) -> float:
    """The pass limit on a scale-free error: the ``rtol`` of :mod:`funcnet.tolerances` (the one table)."""
    return tolerances.tolerance(kind, dtype).rtol


def __getattr__(name: str):
    if name == "THRESHOLDS":  # the name before 0.2, kept one release
        warnings.warn("funcnet.gradcheck.THRESHOLDS is deprecated; use funcnet.tolerances.tolerance(kind, dtype).rtol",
                      DeprecationWarning, stacklevel=2)
        return {dtype: {kind: _limit(kind, dtype) for kind in ("autodiff", "finite_diff", "adjoint")}
                for dtype in ("float64", "float32")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def random_cotangent(rng: np.random.Generator, out: Any) -> Any:
    """A standard-normal cotangent with the structure, shapes and dtypes of ``out``."""
    return jax.tree.map(lambda o: jnp.asarray(rng.standard_normal(o.shape), o.dtype), out)


def _with_diff_args(args: tuple, diff_argnums: Sequence[int], diff_args: Sequence) -> tuple:
    """``args`` with the differentiable positions replaced by ``diff_args``."""
    full = list(args)
    for i, a in zip(diff_argnums, diff_args):
        full[i] = a
    return tuple(full)


def _diff_fn(f: Callable, args: tuple, diff_argnums: Sequence[int]) -> Callable:
    """``f`` as a function of its differentiable arguments only (the rest fixed)."""

    def g(*diff_args):
        return f(*_with_diff_args(args, diff_argnums, diff_args))

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


def _over_cases(fn: Callable, diff_argnums: tuple, cases: Sequence[tuple]) -> list:
    """``[fn(args, *extra) for args, *extra in cases]``, every case in one compiled program.

    The differentiable arguments and the extras (cotangents, tangents) are the
    program's inputs; the other arguments (integer labels) stay compile-time
    constants. One program for all input shapes of an op compiles in about half
    the time of one program per shape.
    """

    @jax.jit
    def run(diffs, extras):
        return [fn(_with_diff_args(case[0], diff_argnums, d), *extra) for case, d, extra in zip(cases, diffs, extras)]

    return run([tuple(case[0][i] for i in diff_argnums) for case in cases], [tuple(case[1:]) for case in cases])


def _three(manual: Callable, autodiff: Callable, diff_argnums: tuple) -> Callable:
    def three(args, cotangent):
        return (vjp_grads(manual, args, diff_argnums, cotangent), vjp_grads(autodiff, args, diff_argnums, cotangent),
                finite_difference_grads(manual, args, diff_argnums, cotangent))

    return three


def _two_jvps(manual: Callable, autodiff: Callable, diff_argnums: tuple, second_order: bool = False) -> Callable:
    """``(J u, J_twin u)``, and with ``second_order`` also ``(H u, H_twin u)``: forward over reverse of
    ``⟨c, f⟩``, so the manual side differentiates the reverse rule itself."""
    def two(args, tangents, cotangent=None):
        diff = tuple(args[i] for i in diff_argnums)
        out = tuple(jax.jvp(_diff_fn(f, args, diff_argnums), diff, tuple(tangents))[1] for f in (manual, autodiff))
        if not second_order:
            return out

        def hvp(f):
            grad = jax.grad(lambda *d: contract(cotangent, _diff_fn(f, args, diff_argnums)(*d)),
                            tuple(range(len(diff))))
            return jax.jvp(grad, diff, tuple(tangents))[1]

        return out + (hvp(manual), hvp(autodiff))

    return two


def three_gradients(manual: Callable, autodiff: Callable, args: tuple, diff_argnums: Sequence[int], cotangent: Any):
    """(manual, autodiff, finite-difference) gradients of ``⟨cotangent, f(*args)⟩``, in one compiled call.

    Non-differentiable arguments (integer labels) are passed through as
    compile-time constants.
    """
    diff_argnums = tuple(diff_argnums)
    return _over_cases(_three(manual, autodiff, diff_argnums), diff_argnums, [(args, cotangent)])[0]


def jvp_tangents(manual: Callable, autodiff: Callable, args: tuple, diff_argnums: Sequence[int], tangents: tuple):
    """``(J u, J_twin u)``: ``jax.jvp`` of the op and of its twin along ``tangents``, in one compiled call."""
    diff_argnums = tuple(diff_argnums)
    return _over_cases(_two_jvps(manual, autodiff, diff_argnums), diff_argnums, [(args, tuple(tangents))])[0]


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


def _inner(a: Any, b: Any) -> float:
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64))
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))


def _norm(a: Any) -> float:
    return _inner(a, a) ** 0.5


def adjoint_error(cotangent: Any, ju: Any, jtv: Any, u: Any, dtype: str = "float64") -> float:
    """``|⟨v, J u⟩ - ⟨Jᵀ v, u⟩| / max(‖v‖ ‖J u‖, atol / rtol)``, with the adjoint tolerance of ``dtype``.

    It is at most ``rtol`` exactly when the gap is within ``max(atol, rtol ‖v‖ ‖J u‖)``.
    """
    gap = abs(_inner(cotangent, ju) - _inner(jtv, u))
    if not np.isfinite(gap):
        return float("inf")
    tol = tolerances.tolerance("adjoint", dtype)
    return float(gap / max(_norm(cotangent) * _norm(ju), tol.atol / tol.rtol))


@dataclasses.dataclass(frozen=True)
class KinkCheck:
    """One documented kink: does the op's gradient there match the hand-computed one?

    ``reverse``: ``jax.grad`` of ``sum(op)`` equals ``kink.grad`` exactly;
    ``forward``: ``jax.jvp`` with a tangent of ones equals ``sum(kink.grad)``.
    """

    where: str
    reverse: bool
    forward: bool
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.reverse and self.forward


@dataclasses.dataclass
class OpCheck:
    """One row of the gradient-check table: the worst errors over all input shapes.

    Attributes:
      name: the registry row.
      errors: the reverse rule, ``dtype -> {"autodiff": err, "finite_diff": err}``.
      forward: the forward rule against the twin's, ``dtype -> err`` (``inf`` where ``jax.jvp`` fails).
      adjoint: the forward rule against the reverse rule, ``dtype -> err``.
      second: Hessian-vector products (forward over the reverse rule) against the twin's, float64
        (``None``: not checked).
      kinks: one :class:`KinkCheck` per documented kink.
      notes: why a column could not be computed.
    """

    name: str
    errors: dict[str, dict[str, float]]
    forward: dict[str, float] = dataclasses.field(default_factory=dict)
    adjoint: dict[str, float | None] = dataclasses.field(default_factory=dict)
    kinks: list[KinkCheck] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    second: dict[str, float | None] = dataclasses.field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        out = [
            f"{dtype} vs {kind}"
            for dtype, errs in self.errors.items()
            for kind, err in errs.items()
            if not err <= _limit(kind, dtype)
        ]
        out += [f"{dtype} fwd vs twin" for dtype, err in self.forward.items()
                if err is not None and not err <= _limit("autodiff", dtype)]
        out += [f"{dtype} adjoint" for dtype, err in self.adjoint.items()
                if err is not None and not err <= _limit("adjoint", dtype)]
        out += [f"{dtype} second order" for dtype, err in self.second.items()
                if err is not None and not err <= _limit("autodiff", dtype)]
        for k in self.kinks:
            if not k.reverse:
                out.append(f"kink {k.where} (rev)")
            if not k.forward:
                out.append(f"kink {k.where} (fwd)")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        """Plain types only (the ``--json`` output of ``funcnet gradcheck``)."""
        return {"op": self.name, "errors": self.errors, "forward": self.forward, "adjoint": self.adjoint,
                "second_order": self.second, "kinks": [dataclasses.asdict(k) for k in self.kinks], "notes": self.notes,
                "passed": self.passed, "failures": self.failures}


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def check_kinks(spec: OpSpec) -> list[KinkCheck]:
    """Check each documented kink of ``spec``: the gradient there, in both directions, against the hand-computed one."""
    results = []
    with jax.enable_x64(True):
        for kink in spec.kinks:
            kw = {**spec.kwargs, **kink.kwargs}
            args = tuple(jax.tree.map(jnp.asarray, kink.args))
            want = np.asarray(kink.grad, np.float64)

            def total(x, args=args, kw=kw):
                return jnp.sum(spec.fn(x, *args[1:], **kw))

            try:
                grad = np.asarray(jax.jit(jax.grad(total))(args[0]), np.float64)  # one program, not op by op
                reverse = grad.shape == want.shape and bool(np.array_equal(grad, want))
                detail = "" if reverse else f"rev gives {grad.tolist()}, documented {want.tolist()}"
            except Exception as err:  # noqa: BLE001 - a rule that cannot run at its kink fails it
                reverse, detail = False, f"rev: {_short(err)}"
            try:
                _, dot = jax.jit(lambda x: jax.jvp(total, (x,), (jnp.ones_like(x),)))(args[0])
                tol = tolerances.tolerance("autodiff", "float64")
                forward = bool(np.isclose(float(dot), float(np.sum(want)), rtol=tol.rtol, atol=tol.atol))
                if not forward:
                    detail = "; ".join(filter(None, [detail, f"fwd gives {float(dot)!r}, documented "
                                                              f"{float(np.sum(want))!r}"]))
            except Exception as err:  # noqa: BLE001
                forward = False
                detail = "; ".join(filter(None, [detail, f"fwd: {_short(err)}"]))
            results.append(KinkCheck(kink.where, reverse, forward, detail))
    return results


def _spec_of(d: Declaration) -> OpSpec:
    """The check data of a declaration with its default keyword arguments (a registry row's, for one not in it)."""
    return OpSpec(name=d.name, family=d.family, fn=d.fn, twin=d.twin, sample=d.checks.sample, cases=d.checks.cases,
                  diff_argnums=d.diff_argnums, upstream=d.upstream, extreme=d.checks.extreme, kink=d.kink,
                  kinks=d.checks.kinks, saves=d.saves, differs=d.differs, forms=d.forms)


def check_op(spec: OpSpec | Any, seed: int = 0, dtypes: Iterable[str] = ("float32", "float64"),
             second_order: bool = True, quick: bool = False) -> OpCheck:
    """Check one op: reverse rule, forward rule, their adjointness, second order and its kinks (module docstring).

    ``spec`` is a registry entry (:data:`funcnet.registry.OPS`), an op made by
    :func:`funcnet.custom_op`, or a function with a ``declaration`` (a declared op, checked with its
    default keywords; a loss made by ``funcnet.losses.make_fenchel_young_loss``). ``second_order=False``
    leaves out the Hessian-vector products (the test suite checks the registry's second order
    elsewhere); ``quick=True`` checks the first input shape only (``funcnet gradcheck``'s default;
    ``--all`` checks every one).
    """
    spec = getattr(spec, "spec", spec)
    if not isinstance(spec, OpSpec) and isinstance(getattr(spec, "declaration", None), Declaration):
        spec = _spec_of(spec.declaration)  # a declared function, or a loss make_fenchel_young_loss made
    shapes = spec.cases[:1] if quick else spec.cases
    errors: dict[str, dict[str, float]] = {}
    forward: dict[str, float] = {}
    adjoint: dict[str, float | None] = {}
    second: dict[str, float | None] = {}
    notes: list[str] = []
    diff_argnums = tuple(spec.diff_argnums)
    with jax.enable_x64(True):
        cases = []  # (dtype, args, cotangent, tangents) for each dtype and input shape
        for dtype in dtypes:
            for k, case in enumerate(shapes):
                rng = np.random.default_rng([seed, k])
                args = cast_args(spec.sample(rng, case), diff_argnums, dtype)
                ct = random_cotangent(rng, jax.eval_shape(spec.op, *args))
                u = random_cotangent(np.random.default_rng([seed, k, 1]), tuple(args[i] for i in diff_argnums))
                cases.append((dtype, args, ct, u))
        grads = _over_cases(_three(spec.op, spec.twin_op, diff_argnums), diff_argnums,
                            [(args, ct) for _, args, ct, _ in cases])
        tangents = None  # (J u, J_twin u[, H u, H_twin u]) per case; None where the forward rules cannot be traced
        try:
            tangents = _over_cases(_two_jvps(spec.op, spec.twin_op, diff_argnums, second_order), diff_argnums,
                                   [(args, u, ct) for _, args, ct, u in cases])
        except Exception as err:  # noqa: BLE001 - an op without a working forward rule fails the column
            notes.append(f"jax.jvp failed: {_short(err)}")
    failed = float("inf") if tangents is None else 0.0
    for dtype in dtypes:
        errors[dtype] = {"autodiff": 0.0, "finite_diff": 0.0}
        forward[dtype] = failed
        if dtype == "float64":
            adjoint[dtype] = failed
            second[dtype] = failed if second_order else None
    for i, ((dtype, _, ct, u), (manual, auto, fd)) in enumerate(zip(cases, grads)):
        worst = errors[dtype]
        worst["autodiff"] = max(worst["autodiff"], relative_error(manual, auto))
        worst["finite_diff"] = max(worst["finite_diff"], relative_error(manual, fd))
        if tangents is not None:
            ju, ju_twin = tangents[i][:2]
            forward[dtype] = max(forward[dtype], relative_error(ju, ju_twin))
            if dtype == "float64":
                adjoint[dtype] = max(adjoint[dtype], adjoint_error(ct, ju, manual, u, dtype))
                if second_order:
                    second[dtype] = max(second[dtype], relative_error(*tangents[i][2:]))
    return OpCheck(spec.name, errors, forward, adjoint, check_kinks(spec), notes, second)


def check_registry(ops: Sequence[OpSpec] = OPS, seed: int = 0, quick: bool = False,
                   progress: Callable[[Iterable], Iterable] = iter) -> list[OpCheck]:
    """:func:`check_op` for every entry of the registry (``progress`` wraps the ops, e.g. ``tqdm``)."""
    return [check_op(spec, seed, quick=quick, second_order=not quick) for spec in progress(ops)]
