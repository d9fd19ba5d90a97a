"""Both hand-written directions of every registry op: forward rule against the twin,
the two rules against each other, and every JAX transformation that needs them.

A new op in the registry is covered by every test here at once. The planted-fault
tests at the end show that a wrong forward rule and a wrong reverse rule are each
caught, and that each changes only its own mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from funcnet import tolerances
from funcnet.ops.binding import Op, custom_vjp_form
from funcnet.registry import OPS, OpSpec
from helpers import assert_trees_close, cotangent_for, diff_args, sample, scalarized

ops = pytest.mark.parametrize("spec", OPS, ids=[s.name for s in OPS])


def tangents_for(d, seed=2):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a)), a.dtype), d)


def partial_in(f, spec: OpSpec, args):
    """``f`` as a function of the differentiable arguments only (the rest fixed)."""

    def g(*d):
        full = list(args)
        for i, a in zip(spec.diff_argnums, d):
            full[i] = a
        return f(*full)

    return g


def jvp_of(f, spec, args, u):
    return jax.jvp(partial_in(f, spec, args), diff_args(spec, args), u)


def adjoint_sides(f, spec, args, u, v):
    """⟨v, J u⟩, ⟨Jᵀ v, u⟩ and the scale ‖J u‖ ‖v‖ their gap is relative to (traceable)."""
    g = partial_in(f, spec, args)
    d = diff_args(spec, args)
    _, ju = jax.jvp(g, d, u)
    _, pullback = jax.vjp(g, *d)
    jtv = pullback(v)
    lhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(ju)))
    rhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(jtv), jax.tree.leaves(u)))
    scale = sum(jnp.sqrt(jnp.vdot(a, a)) for a in jax.tree.leaves(ju)) * jnp.sqrt(
        sum(jnp.vdot(a, a) for a in jax.tree.leaves(v)))
    return lhs, rhs, jnp.maximum(scale, 1e-300)


def adjoint_gap(f, spec, args, u, v):
    """|⟨v, J u⟩ - ⟨Jᵀ v, u⟩| and the scale it is relative to."""
    lhs, rhs, scale = adjoint_sides(f, spec, args, u, v)
    return abs(float(lhs) - float(rhs)), float(scale)


@ops
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_rule_matches_the_twin(spec: OpSpec, dtype):
    """Every input shape, traced into one program."""
    tol = tolerances.tolerance("autodiff", dtype)
    inputs = []
    for k, case in enumerate(spec.cases):
        args = sample(spec, case, dtype, seed=k)
        inputs.append((args, tangents_for(diff_args(spec, args), seed=k)))
    outs = jax.jit(lambda inputs: [(jvp_of(spec.manual, spec, args, u), jvp_of(spec.autodiff, spec, args, u))
                                   for args, u in inputs])(inputs)
    for case, ((y, ju), (y_twin, ju_twin)) in zip(spec.cases, outs):
        assert_trees_close(y, y_twin, tol.rtol, tol.atol, f"{spec.name} {case} value")
        scale = max([float(jnp.max(jnp.abs(t))) for t in jax.tree.leaves(ju_twin)] + [1.0])
        # float32: up to rtol of the largest tangent entry (the scale-free error of funcnet gradcheck), since
        # compiled float32 code rounds the two sides differently where f' is a difference of O(1) terms
        # (gelu near x = -0.75 differs by about 10 ulp of those terms, both sides as far from the float64 value)
        atol = (tol.atol if dtype == "float64" else tol.rtol) * scale
        assert_trees_close(ju, ju_twin, tol.rtol, atol, f"{spec.name} {case} tangent")
        for leaf, want in zip(jax.tree.leaves(ju), jax.tree.leaves(y)):
            assert leaf.dtype == want.dtype, f"{spec.name}: tangent {leaf.dtype}, output {want.dtype}"


@ops
def test_forward_and_reverse_rules_are_adjoint(spec: OpSpec):
    """⟨v, J u⟩ = ⟨Jᵀ v, u⟩ for random u, v in float64, on every case (one program)."""
    tol = tolerances.tolerance("adjoint", "float64")
    inputs = []
    for k, case in enumerate(spec.cases):
        args = sample(spec, case, "float64", seed=k)
        inputs.append((args, tangents_for(diff_args(spec, args), seed=10 + k),
                       cotangent_for(spec.manual, args, seed=20 + k)))
    sides = jax.jit(lambda inputs: [adjoint_sides(spec.manual, spec, *item) for item in inputs])(inputs)
    for case, (lhs, rhs, scale) in zip(spec.cases, sides):
        gap = abs(float(lhs) - float(rhs))
        assert gap <= tol.atol + tol.rtol * float(scale), f"{spec.name} {case}: gap {gap:.3e} at scale {scale:.3e}"


@ops
def test_jax_check_grads_both_modes_second_order(spec: OpSpec):
    args = sample(spec, spec.cases[0], "float64", seed=3)
    # jit: each derivative check_grads takes is compiled once, not dispatched op by op
    check_grads(jax.jit(partial_in(spec.manual, spec, args)), diff_args(spec, args), order=2, modes=("fwd", "rev"),
                atol=1e-5, rtol=1e-5)


@ops
def test_forward_mode_under_transformations(spec: OpSpec):
    """jacfwd, linearize, hessian (forward over reverse), and jvp under jit, vmap, scan and checkpoint.

    Reverse over reverse (funcnet.hessian): tests/test_registry_ops.py."""
    args = sample(spec, spec.cases[0], "float64", seed=5)
    ct = cotangent_for(spec.manual, args)
    d = diff_args(spec, args)
    s_manual = scalarized(spec.manual, spec, args, ct)
    s_twin = scalarized(spec.autodiff, spec, args, ct)
    argnums = tuple(range(len(d)))
    close = dict(rtol=1e-9, atol=1e-10, err_msg=spec.name)
    u = tangents_for(d)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.9 * a]), d)  # 0.9: probabilities stay in [0, 1]

    def scanned(f, d):
        def body(carry, _):
            return carry + jax.jvp(f, d, u)[1], None
        return jax.lax.scan(body, 0.0, None, length=2)[0]

    def everything(f, is_manual):
        """Every transformation of ``f``, traced into one program (compiled once, not op by op)."""
        def run(d, stacked):
            out = {"jacfwd": jax.jacfwd(f, argnums)(*d), "hessian": jax.hessian(f, argnums)(*d),
                   "jvp": jax.jvp(f, d, u)[1], "scan": scanned(f, d),
                   "vmap": jax.vmap(lambda *d: jax.jvp(f, d, u)[1])(*stacked)}
            if is_manual:  # the other routes of the manual rules, each against the twin's plain jvp / hessian
                out["linearize"] = jax.linearize(f, *d)[1](*u)
                out["checkpoint"] = jax.jvp(jax.checkpoint(f), d, u)[1]
            return out
        return jax.jit(run)(tuple(d), stacked)

    got, want = everything(s_manual, True), everything(s_twin, False)
    for key in ("jacfwd", "hessian", "jvp", "scan", "vmap"):
        assert_trees_close(got[key], want[key], **{**close, "err_msg": f"{spec.name}: {key}"})
    for key in ("linearize", "checkpoint"):
        assert_trees_close(got[key], want["jvp"], **{**close, "err_msg": f"{spec.name}: {key}"})


@ops
def test_custom_vjp_form_matches_autodiff(spec: OpSpec):
    """The plain jax.custom_vjp form of every rule, built from the same declaration."""
    args = sample(spec, spec.cases[-1], "float64", seed=6)
    ct = cotangent_for(spec.manual, args)
    argnums = tuple(range(len(spec.diff_argnums)))
    want, want_value = jax.jit(lambda args: (jax.grad(scalarized(spec.autodiff, spec, args, ct), argnums)(
        *diff_args(spec, args)), spec.autodiff(*args)))(args)
    with custom_vjp_form():
        got, value = jax.jit(lambda args: (jax.grad(scalarized(spec.manual, spec, args, ct), argnums)(
            *diff_args(spec, args)), spec.manual(*args)))(args)
    assert_trees_close(got, want, 1e-9, 1e-12, spec.name)
    assert_trees_close(value, want_value, 1e-9, 1e-12, spec.name)


@pytest.mark.parametrize("spec", [s for s in OPS if s.kinks], ids=[s.name for s in OPS if s.kinks])
def test_documented_kinks(spec: OpSpec):
    """The gradient at each declared kink is the hand-computed one, in both directions."""
    for kink in spec.kinks:
        args = tuple(jax.tree.map(jnp.asarray, kink.args))
        kw = {**spec.kwargs, **kink.kwargs}
        f = lambda x: spec.fn(x, *args[1:], **kw)  # noqa: E731
        grad = jax.grad(lambda x: jnp.sum(f(x)))(args[0])
        np.testing.assert_array_equal(np.asarray(grad), kink.grad, err_msg=f"{spec.name} at {kink.where}")
        ones = jnp.ones_like(args[0])
        _, fwd = jax.jvp(lambda x: jnp.sum(f(x)), (args[0],), (ones,))
        np.testing.assert_allclose(float(fwd), float(np.sum(kink.grad)), err_msg=f"{spec.name} fwd at {kink.where}")


# ------------------------------------------------------------- planted faults
def _planted(rule: Op, *, jvp=None, vjp=None) -> Op:
    return Op(rule.name, value=rule.value, save=rule.save, vjp=vjp or rule.vjp, jvp=jvp or rule.jvp)


TANH = next(s for s in OPS if s.name == "tanh").forms[0]
WRONG_FORWARD = _planted(TANH, jvp=lambda y, t: t * (1 - y))          # should be 1 - y²
WRONG_REVERSE = _planted(TANH, vjp=lambda y, g: (g * (1 + y * y),))   # should be 1 - y²


def _tanh_spec(rule):
    spec = next(s for s in OPS if s.name == "tanh")
    return dataclasses.replace(spec, fn=lambda x: rule(x), name=f"planted {spec.name}")


@pytest.mark.parametrize("planted, broken, intact", [(WRONG_FORWARD, "fwd", "rev"), (WRONG_REVERSE, "rev", "fwd")])
def test_a_planted_rule_is_caught_and_changes_only_its_own_mode(planted, broken, intact):
    spec, good = _tanh_spec(planted), _tanh_spec(TANH)
    args = sample(spec, (5,), "float64")
    u, v = tangents_for(args), cotangent_for(spec.manual, args)
    fwd = lambda s: jvp_of(s.manual, s, args, u)[1]  # noqa: E731
    rev = lambda s: jax.vjp(s.manual, *args)[1](v)  # noqa: E731
    mode = {"fwd": fwd, "rev": rev}
    assert not np.allclose(mode[broken](spec), mode[broken](good)), "the planted rule did not change its mode"
    assert_trees_close(mode[intact](spec), mode[intact](good), 0, 0, "the planted rule leaked into the other mode")
    # each checker above catches it
    gap, scale = adjoint_gap(spec.manual, spec, args, u, v)
    assert gap > 1e-6 * scale
    with pytest.raises(AssertionError):
        test_forward_rule_matches_the_twin(spec, "float64") if broken == "fwd" else \
            test_custom_vjp_form_matches_autodiff(spec)
    with pytest.raises(AssertionError):
        check_grads(spec.manual, args, order=1, modes=(broken,))


def test_a_planted_kink_convention_is_caught():
    relu = next(s for s in OPS if s.name == "relu")
    wrong = _planted(relu.forms[0], vjp=lambda y, g: (jnp.where(y >= 0, g, 0.0),),
                     jvp=lambda y, t: jnp.where(y >= 0, t, 0.0))
    with pytest.raises(AssertionError):
        test_documented_kinks(dataclasses.replace(relu, fn=lambda x: wrong(x)))
