"""Gradient checks of whole models: any scalar function of pytrees, compared leaf by leaf.

First order, reverse mode (``"rev"`` in ``modes``; the default is both modes): three gradients
of ``f(*args)`` with respect to the arguments in ``argnums``:

* **manual**: ``jax.grad(f)``, through funcnet's hand-written reverse rules;
* **autodiff**: ``jax.grad(twin)`` of a second function computing the same
  value on ``funcnet.reference`` (optional);
* **finite differences**: centred differences ``(f(x + h v) - f(x - h v)) / 2h``
  in float64 along every coordinate of a small leaf, or along ``probes`` random
  unit directions ``v`` of a large one, compared with ``⟨v, ∇f⟩``.

First order, forward mode (``"fwd"`` in ``modes``): ``jax.jvp(f)`` along the
same directions ``v`` (through the hand-written forward rules) against
``jax.jvp(twin)`` and against the same finite differences.

Second order (``order=2``, needs ``twin``): Hessian-vector products ``H v``
along ``probes`` random directions of the whole checked space, reverse-over-
reverse (``"rev"`` in ``modes``) and forward-over-reverse (``"fwd"``) through
the manual rules, against the twin's forward-over-reverse autodiff.

**The step.** A fixed step is meaningless for a leaf far from unit size (at
3e5, ``1e-6`` is below float32's resolution and leaves float64 a few digits),
so each leaf gets its own step, relative to its magnitude::

    h_leaf = step * max(1, rms(leaf))

(``relative_step=False`` restores the absolute ``h = step``). Leaves of unit
size or smaller, such as freshly initialised weights, keep ``h = step``. The
differences are taken in float64, but a function that computes in float32
itself (mixed precision) differences in float32: pass a larger ``step``, such
as ``1e-3``, there.

**Tolerances** come from the one table, :mod:`funcnet.tolerances` (the ``rtol``
of each kind and dtype; see :func:`limits`).

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
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnet._trees import cast_floats, path_name
from funcnet.gradcheck.differences import contract, probe
from funcnet.ops.inputs import static_float, static_int
from funcnet.tolerances import AUTODIFF, FINITE_DIFF, tolerance

#: A jump between the one-sided slopes larger than this (relative to the gradient scale) is a kink.
KINK_JUMP = 1e-3
#: Leaves of at most this many elements get a finite difference per coordinate.
FULL_MAX = 512
MODES = ("rev", "fwd")

#: Every comparison the checker can make, and the kind of tolerance it is held to.
PAIRS = {
    "manual vs autodiff": "autodiff",
    "manual vs finite differences": "finite_diff",
    "autodiff vs finite differences": "finite_diff",
    "fwd manual vs autodiff": "autodiff",
    "fwd manual vs finite differences": "finite_diff",
    "Hv rev-over-rev vs autodiff": "autodiff",
    "Hv fwd-over-rev vs autodiff": "autodiff",
}


def limits(dtype: Any) -> dict[str, float]:
    """The pass limits on the scale-free errors for gradients computed in ``dtype``, from :mod:`funcnet.tolerances`.

    ``{"autodiff": rtol, "finite_diff": rtol}``. Finite differences always run
    in float64, so their limit bounds the rounding of the gradient being
    checked; a dtype without a ``finite_diff`` row of its own (half precision)
    uses the larger of its ``autodiff`` limit and float32's ``finite_diff``.
    """
    name = np.dtype(dtype).name
    auto = tolerance("autodiff", name).rtol
    fd = FINITE_DIFF[name].rtol if name in FINITE_DIFF else max(auto, FINITE_DIFF["float32"].rtol)
    return {"autodiff": auto, "finite_diff": fd}


def _check_tolerances(tolerances: Any) -> dict:
    """``tolerances`` (``{dtype: {"autodiff": x, "finite_diff": y}}`` or None), checked: a misspelt key would be
    ignored and the check run at the default limits."""
    if tolerances is None:
        return {}
    if not isinstance(tolerances, Mapping):
        raise TypeError(f"check_gradients: tolerances must be a dict {{dtype: {{'autodiff': x, 'finite_diff': "
                        f"y}}}}, got {tolerances!r:.60}")
    kinds = set(limits("float64"))
    for dtype, limit in tolerances.items():
        if dtype not in AUTODIFF:
            raise ValueError(f"check_gradients: tolerances has the unknown dtype key {dtype!r}; known: "
                             f"{', '.join(AUTODIFF)}")
        if not isinstance(limit, Mapping) or not set(limit) <= kinds:
            raise ValueError(f"check_gradients: tolerances[{dtype!r}] must be a dict with keys among "
                             f"{', '.join(sorted(kinds))}, got {limit!r:.60}")
        for kind, value in limit.items():
            if not static_float("check_gradients", f"tolerances[{dtype!r}][{kind!r}]", value) > 0:
                raise ValueError(f"check_gradients: tolerances[{dtype!r}][{kind!r}] must be > 0, got {value!r}")
    return dict(tolerances)


def leaf_step(leaf: np.ndarray, step: float) -> float:
    """The finite-difference step of one leaf: ``step * max(1, rms(leaf))``."""
    rms = float(np.sqrt(np.mean(np.square(leaf)))) if leaf.size else 0.0
    return step * max(1.0, rms) if np.isfinite(rms) else step


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
    """All comparisons for one leaf, e.g. ``dense_1/w``.

    ``step`` is the finite-difference step used on this leaf (see the module docstring).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    probes: str  # "every coordinate" or "N random directions"
    pairs: dict[str, PairError]
    step: float | None = None

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
    modes: tuple[str, ...] = ("rev", "fwd")
    order: int = 1
    #: Where the check failed: each funcnet op ``f`` calls that fails its own check (``funcnet.check_op`` of
    #: its registry entry, first input shape), with what failed; empty when none does on its own.
    suspects: dict[str, list[str]] = dataclasses.field(default_factory=dict)

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
        names = [n for n in PAIRS if any(n in leaf.pairs for leaf in self.leaves)]
        width = max([len(leaf.path) for leaf in self.leaves] + [4])
        head = f"{'leaf':<{width}}  {'shape':<12} " + "  ".join(f"{n:>32}" for n in names) + "  kinks  result"
        lines = [head, "-" * len(head)]
        for leaf in self.leaves:
            cells = []
            for n in names:
                p = leaf.pairs.get(n)
                cells.append(f"{'-':>32}" if p is None else f"{p.max_rel:.2e} at {p.worst}".rjust(32))
            verdict = "ok" if leaf.passed else "FAIL: " + ", ".join(n for n, p in leaf.pairs.items() if not p.passed)
            lines.append(f"{leaf.path:<{width}}  {str(leaf.shape):<12} " + "  ".join(cells)
                         + f"  {leaf.kinks:>5}  {verdict}")
        n_ok = sum(leaf.passed for leaf in self.leaves)
        lines.append("-" * len(head))
        lines.append(f"{n_ok}/{len(self.leaves)} leaves passed (max relative error; computed in {self.precision}; "
                     f"modes {', '.join(self.modes)}; order {self.order}; finite differences in float64 with "
                     "h = step * max(1, rms(leaf)))")
        if not self.passed:
            lines.append("ops at fault (each fails its own check): " + "; ".join(
                f"{op} ({', '.join(f)})" for op, f in self.suspects.items()) if self.suspects else
                "no funcnet op fails its own check: look at how they are combined, at an op's keyword arguments, "
                "or at the twin")
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


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_gradients(f: Callable, *args: Any, twin: Callable | None = None, argnums: int | Sequence[int] = 0,
                    precision: str = "float64", probes: int = 16, full_max: int = FULL_MAX,
                    step: float = 1e-6, seed: int = 0, strict: bool = False,
                    tolerances: dict[str, dict[str, float]] | None = None, modes: Sequence[str] = ("rev", "fwd"),
                    order: int = 1, relative_step: bool = True) -> GradientReport:
    """Compare manual, autodiff and finite-difference derivatives of ``f`` leaf by leaf.

    Args:
      f: the function, e.g. ``loss(params, batch)``; a non-scalar output is
        contracted with a fixed random cotangent.
      *args: its arguments (any pytrees).
      twin: the same function built on autodiff (``funcnet.reference``); if
        None, only the finite-difference comparisons are made.
      argnums: which arguments to check (each may be a whole pytree).
      precision: ``"float64"`` (default): every floating input is cast to
        float64 and all gradients compared at that precision; ``"native"``:
        manual and autodiff gradients in the inputs' own dtypes, with
        dtype-aware tolerances. Finite differences always run in float64, and
        the caller's ``jax_enable_x64`` setting is restored afterwards.
      probes: random directions per leaf larger than ``full_max`` elements, and
        the number of Hessian-vector products at ``order=2``.
      full_max: leaves up to this size get one probe per coordinate.
      step: the finite-difference step, relative to each leaf's magnitude:
        ``h = step * max(1, rms(leaf))``.
      seed: seeds the directions (and the cotangent of a non-scalar output).
      strict: raise :class:`GradientCheckError` (carrying the report) on failure.
      tolerances: ``{dtype: {"autodiff": x, "finite_diff": y}}`` overriding
        :func:`limits` (the values of :mod:`funcnet.tolerances`).
      modes: ``"rev"`` checks ``jax.grad`` (the reverse rules), ``"fwd"``
        checks ``jax.jvp`` (the forward rules); both by default. One string
        is one mode, as ``jax.test_util.check_grads`` reads it.
      order: 1, or 2 to also compare Hessian-vector products with the twin's
        (reverse-over-reverse for ``"rev"``, forward-over-reverse for ``"fwd"``).
      relative_step: ``False`` uses the absolute step ``h = step`` on every leaf.

    Returns:
      A :class:`GradientReport`. The manual reverse-mode gradient sets the scale
      errors are relative to (in every mode).
    """
    if precision not in ("float64", "native"):
        raise ValueError(f"check_gradients: precision must be 'float64' or 'native', got {precision!r}")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"check_gradients: modes must be one or both of 'rev', 'fwd', got {modes!r}")
    if order not in (1, 2):
        raise ValueError(f"check_gradients: order must be 1 or 2, got {order!r}")
    if order == 2 and twin is None:
        raise ValueError("check_gradients: order=2 compares Hessian-vector products with the twin's; pass twin=")
    fn = "check_gradients"
    probes, full_max, seed = static_int(fn, "probes", probes), static_int(fn, "full_max", full_max, 0), \
        static_int(fn, "seed", seed, 0)
    if not static_float(fn, "step", step) > 0:  # a step of 0 divides by 0, a negative one swaps the sides
        raise ValueError(f"check_gradients: step must be a number > 0, got {step!r}")
    overrides = _check_tolerances(tolerances)
    single = isinstance(argnums, (int, np.integer))
    argnums = (argnums,) if single else argnums
    if isinstance(argnums, (str, bytes)) or not isinstance(argnums, Sequence):
        raise TypeError(f"check_gradients: argnums must be an int or a tuple of ints, got {argnums!r:.60}")
    argnums = tuple(static_int(fn, "argnums", i, 0) for i in argnums)
    if not argnums or any(not 0 <= i < len(args) for i in argnums):
        raise ValueError(f"check_gradients: argnums {argnums} out of range for {len(args)} arguments")
    empty = [i for i in argnums if not jax.tree.leaves(args[i])]
    if empty:
        # a report over zero leaves would say "passed" having compared nothing
        raise ValueError(f"check_gradients: the checked argument args[{empty[0]}] has no array leaves (got "
                         f"{args[empty[0]]!r}), so there is nothing to compare; pass the parameters or inputs "
                         "whose gradients should be checked, and select them with argnums")

    int_leaves = [f"args[{i}]{jax.tree_util.keystr(path)}" for i in argnums
                  for path, leaf in jax.tree_util.tree_flatten_with_path(args[i])[0]
                  if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if int_leaves:
        raise TypeError(f"check_gradients: {', '.join(int_leaves)} are integer or boolean and have no gradient; "
                        "pass them in an argument outside argnums (or close over them in f), or as floats")
    complex_leaves = [f"args[{i}]{jax.tree_util.keystr(path)}" for i in argnums
                      for path, leaf in jax.tree_util.tree_flatten_with_path(args[i])[0] if jnp.iscomplexobj(leaf)]
    if complex_leaves:
        # centred differences along real directions see only the real part: a wrong imaginary part would pass
        raise ValueError(f"check_gradients: complex leaves are not checked ({', '.join(complex_leaves)}); pass the "
                         "real and imaginary parts as separate real leaves and combine them inside f")
    with jax.enable_x64(True):
        args64 = tuple(cast_floats(a, jnp.float64) for a in args)
        args_grad = args64 if precision == "float64" else tuple(jax.tree.map(jnp.asarray, a) for a in args)
        s = _scalarize(f, args_grad, seed)
        s64 = _scalarize(f, args64, seed)
        t = None if twin is None else _scalarize(twin, args_grad, seed)
        manual = jax.jit(jax.grad(s, argnums))(*args_grad)  # also the scale of every comparison
        auto = None if t is None or "rev" not in modes else jax.jit(jax.grad(t, argnums))(*args_grad)

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
        steps = [leaf_step(x, step) if relative_step else step for x in leaves64]

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
        # the probes move each leaf by its own step h (the rows of `scaled`), so `probe` runs with step 1
        scaled = directions * np.repeat(steps, [len(local) for local in local_directions])[:, None]

        def at(v):
            new_args = list(args64)
            for i, a in zip(argnums, unravel(v)):
                new_args[i] = a
            return s64(*new_args)

        base = float(jax.jit(at)(flat))
        values = (np.asarray(jax.jit(probe, static_argnums=(0, 3))(at, flat, jnp.asarray(scaled), 1.0))
                  if len(directions) else np.zeros((0, 2)))

        # functions of one flat vector in the precision the gradients are computed in
        flat_g, unravel_g = ravel_pytree(tuple(args_grad[i] for i in argnums))

        def flat_fn(g):
            def h(v):
                new_args = list(args_grad)
                for i, a in zip(argnums, unravel_g(v)):
                    new_args[i] = a
                return g(*new_args)
            return h

        fwd_m = fwd_t = None
        if "fwd" in modes and len(directions):
            dirs_g = jnp.asarray(directions, flat_g.dtype)

            def jvps(g):
                return jax.jit(lambda x, ds: jax.lax.map(lambda d: jax.jvp(g, (x,), (d,))[1], ds, batch_size=64))(
                    flat_g, dirs_g)

            try:
                fwd_m = np.asarray(jvps(flat_fn(s)), np.float64)
            except Exception as err:  # noqa: BLE001 - e.g. a jax.custom_vjp inside f, which has no forward rule
                raise ValueError(f"check_gradients: modes includes 'fwd' but jax.jvp cannot run through f "
                                 f"({_short(err)})") from err
            fwd_t = None if t is None else np.asarray(jvps(flat_fn(t)), np.float64)

        hvps = {}
        if order == 2 and flat_g.size:
            hv_dirs = jnp.asarray(np.random.default_rng([seed, 2]).standard_normal((probes, flat_g.size)),
                                  flat_g.dtype)
            grad_s, grad_t = jax.grad(flat_fn(s)), jax.grad(flat_fn(t))
            products = {"reference": lambda x, v: jax.jvp(grad_t, (x,), (v,))[1]}  # the twin: all autodiff
            if "rev" in modes:
                products["Hv rev-over-rev vs autodiff"] = lambda x, v: jax.grad(lambda y: jnp.vdot(grad_s(y), v))(x)
            if "fwd" in modes:
                products["Hv fwd-over-rev vs autodiff"] = lambda x, v: jax.jvp(grad_s, (x,), (v,))[1]
            computed = {}
            for name, hvp in products.items():
                try:
                    computed[name] = np.asarray(jax.jit(lambda x, vs, hvp=hvp: jax.lax.map(
                        lambda v: hvp(x, v), vs, batch_size=16))(flat_g, hv_dirs), np.float64)
                except Exception as err:  # noqa: BLE001
                    raise ValueError(f"check_gradients: order=2 cannot differentiate f twice ({name}: "
                                     f"{_short(err)})") from err
            reference = computed.pop("reference")
            hvps = {name: (hv, reference) for name, hv in computed.items()}

        reports, row, offset = [], 0, 0
        hv_global = max((float(np.max(np.abs(ref))) for _, ref in hvps.values()), default=0.0)
        for name, dtype, x, m, a, local, h in zip(names, dtypes, leaves64, m_leaves, a_leaves, local_directions,
                                                  steps):
            n = len(local)
            sl = slice(row, row + n)
            kind_dtype = dtype if precision == "native" else "float64"
            tol = {**limits(kind_dtype), **overrides.get(kind_dtype, {})}
            pairs = _check_leaf(x, m, a, local, x.size <= full_max, values[sl, 0], values[sl, 1], base, floor, h,
                                tol, modes, None if fwd_m is None else fwd_m[sl],
                                None if fwd_t is None else fwd_t[sl])
            for pair, (hv, ref) in hvps.items():
                block_hv, block_ref = hv[:, offset:offset + x.size], ref[:, offset:offset + x.size]
                scale = max(float(np.max(np.abs(block_ref))) if block_ref.size else 0.0, 1e-3 * hv_global,
                            np.finfo(np.float64).tiny)

                def hv_label(j, shape=x.shape, cols=x.size):
                    return f"v{j // cols} {tuple(int(c) for c in np.unravel_index(j % cols, shape))}"

                pairs[pair] = _pair(block_hv.reshape(-1), block_ref.reshape(-1), scale, tol[PAIRS[pair]], hv_label)
            row += n
            offset += x.size
            reports.append(LeafReport(name, tuple(x.shape), kind_dtype,
                                      "every coordinate" if x.size <= full_max else f"{n} random directions",
                                      pairs, h))
    report = GradientReport(reports, precision, modes, order)
    if not report.passed:
        report = dataclasses.replace(report, suspects=suspect_ops(f, *args))
    if strict and not report.passed:
        raise GradientCheckError(report)
    return report


def _op_names(jaxpr, names: list[str]) -> list[str]:
    """The names of the ``custom_jvp`` calls (funcnet's ops among them) in a jaxpr and its sub-jaxprs, in order."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "custom_jvp_call":
            info = eqn.params["call_jaxpr"].jaxpr.debug_info  # a funcnet op's function is named after its rule
            if info is not None and info.func_name not in names:
                names.append(info.func_name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _op_names(sub, names)
    return names


def suspect_ops(f: Callable, *args: Any) -> dict[str, list[str]]:
    """``{op: failures}`` for each registry op ``f`` calls that fails :func:`funcnet.check_op` on its own."""
    from funcnet.gradcheck.ops import check_op
    from funcnet.registry import OPS

    names = _op_names(jax.make_jaxpr(f)(*args).jaxpr, [])
    out = {}
    for name in names:
        spec = next((s for s in OPS if any(r.name == name for r in s.forms)), None)
        if spec is not None:
            failures = check_op(spec, quick=True).failures
            if failures:
                out[spec.name] = failures
    return out


def _check_leaf(x, m, a, directions, full, plus, minus, base, floor, step, tol, modes, fwd_m, fwd_t) -> dict:
    """Compare one leaf's derivatives; ``plus``/``minus`` are ``f(x ± h·d)`` for each probe direction ``d``.

    ``fwd_m``/``fwd_t``: ``jax.jvp`` of ``f``/``twin`` along each ``d`` (``None`` unless forward mode is checked).
    """
    leaf_scale = max(float(np.max(np.abs(m))) if m.size else 0.0, floor)
    if full:
        label = lambda j: tuple(int(v) for v in np.unravel_index(j, x.shape))  # noqa: E731
        fd_scale = leaf_scale
    else:
        label = lambda j: f"direction {j}"  # noqa: E731
        fd_scale = max(float(np.linalg.norm(m)), floor)
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
    if "rev" in modes:
        if a is not None:
            pairs["manual vs autodiff"] = _pair(m.reshape(-1), a.reshape(-1), leaf_scale, tol["autodiff"],
                                                lambda j: tuple(int(v) for v in np.unravel_index(j, x.shape)))
        pairs["manual vs finite differences"] = versus_fd(directions @ m.reshape(-1))
        if a is not None:
            pairs["autodiff vs finite differences"] = versus_fd(directions @ a.reshape(-1))
    if fwd_m is not None:
        if fwd_t is not None:
            pairs["fwd manual vs autodiff"] = _pair(fwd_m, fwd_t, fd_scale, tol["autodiff"], label)
        pairs["fwd manual vs finite differences"] = versus_fd(fwd_m)
    return pairs
