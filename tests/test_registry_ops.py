"""Every registry entry, checked the same way: forward, gradients, transforms, dtypes, extremes.

A new op added to ``funcnet.registry.OPS`` is covered by every test here at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet.gradcheck import THRESHOLDS, check_op
from funcnet.registry import OPS, OpSpec, cast_args
from helpers import assert_trees_close, cotangent_for, diff_args, sample, scalarized

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
def test_forward_matches_twin_and_upstream(spec: OpSpec):
    """Every input shape, float32 and float64, traced into one program (eager calls: test_jit)."""
    inputs = {(dtype, k): sample(spec, case, dtype, seed=k) for dtype in ("float32", "float64")
              for k, case in enumerate(spec.cases)}
    upstream = spec.reference_upstream
    outs = jax.jit(lambda inputs: {key: (spec.manual(*args), spec.autodiff(*args),
                                         None if upstream is None else upstream(*args))
                                   for key, args in inputs.items()})(inputs)
    for (dtype, k), (out, twin, up) in outs.items():
        tol, case = spec.tolerance(dtype), spec.cases[k]
        assert out.dtype == twin.dtype == jnp.dtype(dtype), (out.dtype, twin.dtype)
        assert out.shape == twin.shape
        assert_trees_close(out, twin, tol.rtol, tol.atol, f"{spec.name} {dtype} {case}")
        if up is not None:
            assert up.shape == out.shape
            assert_trees_close(out, up, tol.rtol, tol.atol, f"{spec.name} vs upstream {dtype} {case}")


@ops
def test_manual_vjp_matches_autodiff_and_finite_differences(spec: OpSpec):
    """On every input shape, float32 and float64, with random cotangents."""
    result = check_op(spec, seed=0, second_order=False)  # second order: tests/test_forward_mode.py
    for dtype, errs in result.errors.items():
        for kind, err in errs.items():
            assert err <= THRESHOLDS[dtype][kind], f"{spec.name} {dtype} vs {kind}: {err:.3e}"


@ops
def test_manual_vjp_elementwise_close_to_autodiff(spec: OpSpec):
    """A second, elementwise criterion with the registry's own tolerances (another seed)."""
    argnums = tuple(range(len(spec.diff_argnums)))
    inputs = {}
    for dtype in ("float32", "float64"):
        args = sample(spec, dtype=dtype, seed=7)
        inputs[dtype] = (args, cotangent_for(spec.manual, args))

    def grads(args, ct):
        d = diff_args(spec, args)
        return tuple(jax.grad(scalarized(f, spec, args, ct), argnums)(*d) for f in (spec.manual, spec.autodiff))

    outs = jax.jit(lambda inputs: {dtype: grads(*pair) for dtype, pair in inputs.items()})(inputs)
    for dtype, (g_manual, g_auto) in outs.items():
        tol = spec.tolerance(dtype)
        assert_trees_close(g_manual, g_auto, tol.rtol, tol.atol, f"{spec.name} {dtype}")


@ops
def test_jit(spec: OpSpec):
    """The op and its reverse rule called eagerly equal the same under jit (the other tests trace everything
    into jit; the rules' agreement with autodiff is theirs to check)."""
    args = sample(spec)
    ct = cotangent_for(spec.manual, args)
    argnums = tuple(range(len(spec.diff_argnums)))
    tol = spec.tolerance("float64")

    def run(args):
        return spec.manual(*args), jax.grad(scalarized(spec.manual, spec, args, ct), argnums)(*diff_args(spec, args))

    assert_trees_close(jax.jit(run)(args), run(args), tol.rtol, tol.atol, f"{spec.name}: jit vs eager")


@ops
def test_vmap_over_every_argument(spec: OpSpec):
    """vmap over a batch of all inputs (for PReLU and the gates: a batch of parameters too)."""
    batch = [sample(spec, seed=s) for s in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    tol = spec.tolerance("float64")

    def grads(f):
        def per_example(*args):
            ct = jax.tree.map(jnp.ones_like, jax.eval_shape(f, *args))
            return jax.grad(scalarized(f, spec, args, ct), tuple(range(len(spec.diff_argnums))))(*diff_args(spec, args))

        return jax.vmap(per_example)

    @jax.jit
    def run(stacked, batch):
        return (jax.vmap(spec.manual)(*stacked), [spec.manual(*args) for args in batch],
                grads(spec.manual)(*stacked), grads(spec.autodiff)(*stacked))

    out, one_by_one, g_manual, g_auto = run(stacked, batch)
    for i, single in enumerate(one_by_one):
        assert_trees_close(jax.tree.map(lambda o: o[i], out), single, tol.rtol, tol.atol)
    assert_trees_close(g_manual, g_auto, tol.rtol, tol.atol, spec.name)


def _small_case(spec: OpSpec):
    """The smallest input shape (the Hessian is quadratic in the input size)."""
    sizes = [sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(sample(spec, c))) for c in spec.cases]
    return spec.cases[int(np.argmin(sizes))] if min(sizes) > 1 else spec.cases[int(np.argsort(sizes)[min(1, len(sizes) - 1)])]


@ops
def test_reverse_over_reverse_hessian_matches_twin(spec: OpSpec):
    args = sample(spec, _small_case(spec), seed=3)
    ct = cotangent_for(spec.manual, args)
    argnums = tuple(range(len(spec.diff_argnums)))

    @jax.jit
    def hessians(args, ct):
        d = diff_args(spec, args)
        s_manual, s_twin = scalarized(spec.manual, spec, args, ct), scalarized(spec.autodiff, spec, args, ct)
        # funcnet.hessian is jacrev∘jacrev (forward-over-reverse: tests/test_forward_mode.py)
        return funcnet.hessian(s_manual, argnums)(*d), jax.hessian(s_twin, argnums)(*d)

    h_manual, h_twin = hessians(args, ct)
    assert_trees_close(h_manual, h_twin, rtol=1e-9, atol=1e-10, err_msg=spec.name)


@ops
def test_output_and_gradient_keep_the_input_dtype(spec: OpSpec):
    """float16, bfloat16, float32 and float64 inputs, traced into one program."""
    argnums = tuple(range(len(spec.diff_argnums)))
    inputs = {}
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        args = sample(spec, spec.cases[-1], dtype, seed=5)
        # the values are compared with the float32 twin on the same (rounded) inputs
        wide = cast_args(jax.tree.map(np.asarray, args), spec.diff_argnums, "float32" if dtype != "float64" else dtype)
        inputs[dtype] = (args, wide)

    def run(args, wide):
        out = spec.manual(*args)
        ct = jax.tree.map(jnp.ones_like, out)
        grads = jax.grad(scalarized(spec.manual, spec, args, ct), argnums)(*diff_args(spec, args))
        ct_wide = jax.tree.map(lambda c: c.astype(jnp.float32), ct)
        ref_grads = jax.grad(scalarized(spec.autodiff, spec, wide, ct_wide), argnums)(*diff_args(spec, wide))
        return out, grads, spec.autodiff(*wide), ref_grads

    results = jax.jit(lambda inputs: {dtype: run(*pair) for dtype, pair in inputs.items()})(inputs)
    for dtype, (out, grads, ref_out, ref_grads) in results.items():
        for leaf in jax.tree.leaves(out):
            assert leaf.dtype == jnp.dtype(dtype), f"{spec.name}: output {leaf.dtype}, input {dtype}"
        for leaf in jax.tree.leaves(grads):
            assert leaf.dtype == jnp.dtype(dtype), f"{spec.name}: gradient {leaf.dtype}, input {dtype}"
            assert bool(jnp.all(jnp.isfinite(leaf))), f"{spec.name}: non-finite {dtype} gradient"
        tol = spec.tolerance(dtype)
        assert_trees_close(out, ref_out, tol.rtol, tol.atol, f"{spec.name} forward {dtype}")
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
        assert_trees_close(grads, ref_grads, tol.rtol, tol.atol * max(scale, 1.0), f"{spec.name} gradient {dtype}")


@ops
def test_extreme_inputs_stay_finite_and_exact(spec: OpSpec):
    if spec.extreme is None:
        pytest.skip(f"{spec.name}: no extreme regime (linear in each input)")
    raw = spec.extreme()
    exact_args = cast_args(raw, spec.diff_argnums, "float64")
    ct = jax.tree.map(jnp.ones_like, jax.eval_shape(spec.manual, *exact_args))
    argnums = tuple(range(len(spec.diff_argnums)))
    inputs = {dtype: cast_args(raw, spec.diff_argnums, dtype) for dtype in ("float32", "float64")}

    @jax.jit
    def run(exact_args, inputs):
        exact = jax.grad(scalarized(spec.autodiff, spec, exact_args, ct), argnums)(*diff_args(spec, exact_args))
        ours = {}
        for dtype, args in inputs.items():
            cts = jax.tree.map(lambda c: c.astype(dtype), ct)
            ours[dtype] = (spec.manual(*args),
                           jax.grad(scalarized(spec.manual, spec, args, cts), argnums)(*diff_args(spec, args)))
        return exact, ours

    exact, ours = run(exact_args, inputs)
    for leaf in jax.tree.leaves(exact):
        assert np.all(np.isfinite(leaf)), f"{spec.name}: the twin's gradient is not finite at the extreme input"
    for dtype, (out, grads) in ours.items():
        assert all(bool(jnp.all(jnp.isfinite(o))) for o in jax.tree.leaves(out)), f"{spec.name} {dtype} forward"
        for leaf in jax.tree.leaves(grads):
            assert bool(jnp.all(jnp.isfinite(leaf))), f"{spec.name} {dtype}: non-finite gradient {leaf}"
        rtol = 1e-12 if dtype == "float64" else 1e-5
        assert_trees_close(grads, exact, rtol=rtol, atol=rtol, err_msg=f"{spec.name} {dtype}")
