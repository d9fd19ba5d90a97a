"""Every registry op, checked the same way; a new declaration is covered by every check here at once.

Per op, two compiled batteries (each traced into as few programs as it can be):

* :func:`funcnet.check_op`, the product's own checker (``funcnet gradcheck``): the
  reverse rule against autodiff of the twin and against finite differences, the
  forward rule against the twin's, the two rules against each other
  (⟨v, J u⟩ = ⟨Jᵀ v, u⟩), Hessian-vector products, on every input shape in float32
  and float64, and the gradient at each declared kink in both directions;
* :func:`battery`: values against the twin and the namesake; every input dtype
  kept (float16 to float64); extreme inputs finite and exact; the four
  compositions of the rules into a Hessian (forward∘forward, forward∘reverse,
  reverse∘forward, reverse∘reverse, each equal to the twin's Hessian: stronger
  than ``jax.test_util.check_grads(order=2)``'s finite differences); ``jvp`` under
  ``jit``, ``vmap``, ``scan``, ``linearize`` and ``checkpoint``; ``vmap`` over every
  argument; the classic ``jax.custom_vjp`` form.

Each checker catches a planted wrong rule (the end of this file).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet.custom import custom_vjp_form
from funcnet.gradcheck import check_op
from funcnet.ops.binding import Op
from funcnet.registry import OPS, OpSpec, cast_args
from helpers import cotangent_for, diff_args, sample, scalarized

ids = [spec.name for spec in OPS]
ops = pytest.mark.parametrize("spec", OPS, ids=ids)


def test_registry_names_are_unique_and_public():
    assert len(set(ids)) == len(ids)
    for spec in OPS:
        namespace = getattr(funcnet, spec.family)
        assert getattr(namespace, spec.fn.__name__) is spec.fn, spec.qualname
        assert getattr(getattr(funcnet.reference, spec.family), spec.fn.__name__) is spec.twin
        assert spec.diff_argnums, spec.name


def test_every_public_op_is_registered():
    registered = {s.fn for s in OPS}  # an alias (nn.swish is nn.silu) is the registered function itself
    for family in ("gates", "nn", "losses"):
        namespace = getattr(funcnet, family)
        for name in namespace.__all__:
            obj = getattr(namespace, name)
            # convex_kl_divergence: optax's deprecated alias of generalized_kl_divergence (tests/test_dropin.py)
            if callable(obj) and name not in ("default_is_weight", "weight_leaves", "smooth_labels", "one_hot",
                                              "convex_kl_divergence"):
                assert obj in registered, f"funcnet.{family}.{name} is not in the registry"


@ops
def test_check_op(spec: OpSpec):
    """Both rules against autodiff, finite differences and each other, second order and kinks."""
    result = check_op(spec, seed=0)
    assert result.passed, f"{spec.name}: {result.failures} {result.notes}"


# ------------------------------------------------------------------ the battery
def _tangents(d, seed=2):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a)), a.dtype), d)


def _small_case(spec: OpSpec):
    """The smallest input shape with more than one entry (a Hessian is quadratic in the input size)."""
    sizes = [sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(sample(spec, c))) for c in spec.cases]
    order = np.argsort(sizes, kind="stable")
    return spec.cases[next((int(k) for k in order if sizes[k] > 1), int(order[0]))]


def _program(spec: OpSpec):
    """Every check of :func:`battery` as one function of its inputs (jitted once per op)."""
    argnums = tuple(range(len(spec.diff_argnums)))
    upstream = spec.upstream_op

    def values(inputs):
        return {key: (spec.op(*args), spec.twin_op(*args), None if upstream is None else upstream(*args))
                for key, args in inputs.items()}

    def dtypes(inputs):
        out = {}
        for dtype, (args, wide) in inputs.items():
            y = spec.op(*args)
            ct = jax.tree.map(jnp.ones_like, y)
            grads = jax.grad(scalarized(spec.op, spec, args, ct), argnums)(*diff_args(spec, args))
            ct_wide = jax.tree.map(lambda c: c.astype(jnp.float32), ct)
            want = jax.grad(scalarized(spec.twin_op, spec, wide, ct_wide), argnums)(*diff_args(spec, wide))
            out[dtype] = (y, grads, spec.twin_op(*wide), want)
        return out

    def extremes(exact_args, inputs):
        ct = jax.tree.map(jnp.ones_like, spec.op(*exact_args))
        exact = jax.grad(scalarized(spec.twin_op, spec, exact_args, ct), argnums)(*diff_args(spec, exact_args))
        ours = {}
        for dtype, args in inputs.items():
            cts = jax.tree.map(lambda c: c.astype(dtype), ct)
            ours[dtype] = (spec.op(*args), jax.grad(scalarized(spec.op, spec, args, cts), argnums)(
                *diff_args(spec, args)))
        return exact, ours

    def transformations(args, ct, u, stacked):
        d = diff_args(spec, args)
        s_op, s_twin = scalarized(spec.op, spec, args, ct), scalarized(spec.twin_op, spec, args, ct)

        def scanned(f):
            return jax.lax.scan(lambda c, _: (c + jax.jvp(f, d, u)[1], None), 0.0, None, length=2)[0]

        got = {"fwd∘fwd hessian": jax.jacfwd(jax.jacfwd(s_op, argnums), argnums)(*d),
               "fwd∘rev hessian": jax.hessian(s_op, argnums)(*d),
               "rev∘fwd hessian": jax.jacrev(jax.jacfwd(s_op, argnums), argnums)(*d),
               "rev∘rev hessian": funcnet.hessian(s_op, argnums)(*d),
               "jacfwd": jax.jacfwd(s_op, argnums)(*d), "jvp": jax.jvp(s_op, d, u)[1],
               "linearize": jax.linearize(s_op, *d)[1](*u), "checkpoint": jax.jvp(jax.checkpoint(s_op), d, u)[1],
               "scan": scanned(s_op), "vmap": jax.vmap(lambda *d: jax.jvp(s_op, d, u)[1])(*stacked)}
        hessian = jax.hessian(s_twin, argnums)(*d)
        want = {"jacfwd": jax.jacfwd(s_twin, argnums)(*d), "jvp": jax.jvp(s_twin, d, u)[1],
                "scan": scanned(s_twin), "vmap": jax.vmap(lambda *d: jax.jvp(s_twin, d, u)[1])(*stacked)}
        want |= {k: hessian for k in got if k.endswith("hessian")} | {"linearize": want["jvp"],
                                                                      "checkpoint": want["jvp"]}
        with custom_vjp_form():  # read at trace time: this part of the program is built in the custom_vjp form
            got["custom_vjp grad"] = jax.grad(scalarized(spec.op, spec, args, ct), argnums)(*d)
            got["custom_vjp value"] = spec.op(*args)
        want["custom_vjp grad"] = jax.grad(s_twin, argnums)(*d)
        want["custom_vjp value"] = spec.twin_op(*args)
        return got, want

    def every_argument(stacked, batch):
        def grads(f):
            def per_example(*args):
                ct = jax.tree.map(jnp.ones_like, jax.eval_shape(f, *args))
                return jax.grad(scalarized(f, spec, args, ct), argnums)(*diff_args(spec, args))
            return jax.vmap(per_example)(*stacked)

        return jax.vmap(spec.op)(*stacked), [spec.op(*args) for args in batch], grads(spec.op), grads(spec.twin_op)

    def program(inputs):
        out = {"values": values(inputs["values"]), "dtypes": dtypes(inputs["dtypes"]),
               "transformations": transformations(*inputs["transformations"]),
               "every argument": every_argument(*inputs["every argument"])}
        if "extremes" in inputs:
            out["extremes"] = extremes(*inputs["extremes"])
        return out

    return program


def _inputs(spec: OpSpec) -> dict:
    inputs = {"values": {(dtype, k): sample(spec, case, dtype, seed=k) for dtype in ("float32", "float64")
                         for k, case in enumerate(spec.cases)}}
    dtypes = {}
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        args = sample(spec, spec.cases[-1], dtype, seed=5)
        # compared with the float32 twin on the same (rounded) inputs
        wide = cast_args(jax.tree.map(np.asarray, args), spec.diff_argnums, "float32" if dtype != "float64" else dtype)
        dtypes[dtype] = (args, wide)
    inputs["dtypes"] = dtypes
    args = sample(spec, _small_case(spec), seed=3)
    d = diff_args(spec, args)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.9 * a]), d)  # 0.9: probabilities stay in [0, 1]
    inputs["transformations"] = (args, cotangent_for(spec.op, args), _tangents(d), stacked)
    batch = [sample(spec, seed=s) for s in range(3)]
    inputs["every argument"] = (jax.tree.map(lambda *xs: jnp.stack(xs), *batch), batch)
    if spec.extreme is not None:
        raw = spec.extreme()
        inputs["extremes"] = (cast_args(raw, spec.diff_argnums, "float64"),
                              {dtype: cast_args(raw, spec.diff_argnums, dtype) for dtype in ("float32", "float64")})
    return inputs


def _close(failures: list, what: str, actual, expected, rtol, atol=0.0) -> None:
    la, lb = jax.tree.leaves(actual), jax.tree.leaves(expected)
    if len(la) != len(lb):
        failures.append(f"{what}: {len(la)} leaves, expected {len(lb)}")
        return
    for a, b in zip(la, lb):
        try:
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)
        except AssertionError as err:
            failures.append(f"{what}: {str(err).strip().splitlines()[-3:]}")
            return


def battery(spec: OpSpec) -> list[str]:
    """What fails for ``spec`` (empty if nothing): every check of the module docstring's second item."""
    out = jax.jit(_program(spec))(inputs := _inputs(spec))
    failures: list[str] = []
    for (dtype, k), (y, twin, up) in out["values"].items():
        tol, what = spec.tolerance(dtype), f"value {dtype} {spec.cases[k]}"
        if not y.dtype == twin.dtype == jnp.dtype(dtype) or y.shape != twin.shape:
            failures.append(f"{what}: {y.dtype}{y.shape}, twin {twin.dtype}{twin.shape}")
        _close(failures, what + " vs twin", y, twin, tol.rtol, tol.atol)
        if up is not None:
            _close(failures, what + " vs namesake", y, up, tol.rtol, tol.atol)
    for dtype, (y, grads, twin_y, twin_grads) in out["dtypes"].items():
        kept = [leaf.dtype == jnp.dtype(dtype) for leaf in jax.tree.leaves((y, grads))]
        finite = [bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(grads)]
        if not all(kept) or not all(finite):
            failures.append(f"{dtype}: output and gradient dtypes {[leaf.dtype for leaf in jax.tree.leaves((y, grads))]}"
                            f", finite {finite}")
        tol = spec.tolerance(dtype)
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(twin_grads))
        _close(failures, f"{dtype} value", y, twin_y, tol.rtol, tol.atol)
        _close(failures, f"{dtype} gradient", grads, twin_grads, tol.rtol, tol.atol * max(scale, 1.0))
    if "extremes" in out:
        exact, ours = out["extremes"]
        if not all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(exact)):
            failures.append("extreme inputs: the twin's gradient is not finite there (a bad extreme case)")
        for dtype, (y, grads) in ours.items():
            if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves((y, grads))):
                failures.append(f"extreme inputs {dtype}: non-finite value or gradient")
            rtol = 1e-12 if dtype == "float64" else 1e-5
            _close(failures, f"extreme inputs {dtype} gradient", grads, exact, rtol, rtol)
    got, want = out["transformations"]
    for key in got:
        _close(failures, key, got[key], want[key], 1e-9, 1e-10)
    mapped, one_by_one, g_op, g_twin = out["every argument"]
    tol = spec.tolerance("float64")
    for i, single in enumerate(one_by_one):
        _close(failures, f"vmap over every argument, example {i}", jax.tree.map(lambda o: o[i], mapped), single,
               tol.rtol, tol.atol)
    _close(failures, "vmap over every argument, gradients", g_op, g_twin, tol.rtol, tol.atol)
    del inputs
    return failures


@ops
def test_battery(spec: OpSpec):
    failures = battery(spec)
    assert not failures, f"{spec.name}:\n  " + "\n  ".join(failures)


@ops
def test_eager_equals_jit(spec: OpSpec):
    """The op and its reverse rule called eagerly equal the same under jit (everything else traces into jit)."""
    args = sample(spec)
    ct = cotangent_for(spec.op, args)
    argnums = tuple(range(len(spec.diff_argnums)))
    tol = spec.tolerance("float64")

    def run(args):
        return spec.op(*args), jax.grad(scalarized(spec.op, spec, args, ct), argnums)(*diff_args(spec, args))

    failures: list[str] = []
    _close(failures, "jit vs eager", jax.jit(run)(args), run(args), tol.rtol, tol.atol)
    assert not failures, f"{spec.name}: {failures}"


# ------------------------------------------------------------- planted faults
def _planted(rule: Op, *, jvp=None, vjp=None) -> Op:
    return Op(rule.name, value=rule.value, save=rule.save, vjp=vjp or rule.vjp, jvp=jvp or rule.jvp)


TANH_SPEC = next(s for s in OPS if s.name == "tanh")
TANH = TANH_SPEC.forms[0]


def _tanh_with(rule: Op) -> OpSpec:
    return dataclasses.replace(TANH_SPEC, fn=lambda x: rule(x), name="planted tanh")


@pytest.mark.parametrize("planted, broken, intact", [
    (_planted(TANH, jvp=lambda y, t: t * (1 - y)), "fwd", "rev"),            # should be 1 - y²
    (_planted(TANH, vjp=lambda y, g: (g * (1 + y * y),)), "rev", "fwd"),      # should be 1 - y²
], ids=["forward", "reverse"])
def test_a_planted_rule_changes_its_own_mode_only_and_both_checkers_catch_it(planted, broken, intact):
    spec, good = _tanh_with(planted), _tanh_with(TANH)
    args = sample(spec, (5,), "float64")
    u, v = _tangents(args), cotangent_for(spec.op, args)
    mode = {"fwd": lambda s: jax.jvp(s.op, args, u)[1], "rev": lambda s: jax.vjp(s.op, *args)[1](v)}
    assert not np.allclose(mode[broken](spec), mode[broken](good)), "the planted rule did not change its mode"
    np.testing.assert_array_equal(mode[intact](spec), mode[intact](good), "the planted rule leaked into the other mode")
    result = check_op(spec, quick=True)
    assert not result.passed and any(("fwd" if broken == "fwd" else "vs autodiff") in f for f in result.failures)
    assert battery(spec), "the battery passed a planted wrong rule"
    assert check_op(good, quick=True).passed and battery(good) == []


def test_a_planted_kink_convention_is_caught():
    relu = next(s for s in OPS if s.name == "relu")
    wrong = _planted(relu.forms[0], vjp=lambda y, g: (jnp.where(y >= 0, g, 0.0),),
                     jvp=lambda y, t: jnp.where(y >= 0, t, 0.0))
    result = check_op(dataclasses.replace(relu, fn=lambda x: wrong(x)), quick=True)
    assert not result.passed and not any(k.reverse or k.forward for k in result.kinks)
