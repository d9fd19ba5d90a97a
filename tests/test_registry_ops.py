"""Every registry op, checked the same way; a new declaration is covered by every check here at once.

Per op, two compiled batteries (each traced into as few programs as it can be):

* :func:`funcnet.check_op`, the product's own checker (``funcnet gradcheck``), on
  the first input shape in float32 and float64: the reverse rule against autodiff
  of the twin and against finite differences, the forward rule against the
  twin's, the two rules against each other (⟨v, J u⟩ = ⟨Jᵀ v, u⟩), and the
  gradient at each declared kink in both directions;
* :func:`battery`: values against the twin and the namesake, and gradients
  against the twin's, on every input shape (float64; float32 on the first);
  every input dtype kept (float16 to float64); extreme inputs finite and exact;
  the Hessian as ``jax.hessian`` (forward over the reverse rule) and
  ``funcnet.hessian`` (reverse over reverse) build it, each equal to the twin's
  exactly (stronger than ``jax.test_util.check_grads(order=2)``'s finite
  differences, which runs on a few ops, forward over forward included);
  ``linearize``; ``vmap`` of the value over every argument
  (integer labels and masks too); the classic
  ``jax.custom_vjp`` form. That the written rules are the ones that run under
  ``jit``, ``vmap``, ``scan``, loops and ``jax.checkpoint`` is
  tests/test_binding.py's.

Each checker catches a planted wrong rule (the end of this file).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import funcnet
from funcnet.custom import custom_vjp_form
from funcnet.gradcheck import check_op
from funcnet.ops.binding import Op
from funcnet.registry import OPS, OpSpec, by_name, cast_args
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
            # convex_kl_divergence: optax's deprecated alias of generalized_kl_divergence (tests/test_dropin.py);
            # make_fenchel_young_loss: a factory, each loss it makes checked by check_op there too
            if callable(obj) and name not in ("default_is_weight", "weight_leaves", "smooth_labels", "one_hot",
                                              "convex_kl_divergence", "make_fenchel_young_loss"):
                assert obj in registered, f"funcnet.{family}.{name} is not in the registry"


@ops
def test_check_op(spec: OpSpec):
    """Both rules against autodiff, finite differences and each other, second order and kinks."""
    # the first input shape (both dtypes, finite differences, both rules, kinks); the battery compares the
    # gradients on every other shape with the twin's, and every Hessian exactly
    result = check_op(spec, seed=0, second_order=False, quick=True)
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
        def grads(f, args):
            ct = jax.tree.map(jnp.ones_like, f(*args))
            return jax.grad(scalarized(f, spec, args, ct), argnums)(*diff_args(spec, args))
        return {key: (spec.op(*args), spec.twin_op(*args), None if upstream is None else upstream(*args),
                      grads(spec.op, args), grads(spec.twin_op, args))
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

    def transformations(args, ct, u):
        d = diff_args(spec, args)
        s_op, s_twin = scalarized(spec.op, spec, args, ct), scalarized(spec.twin_op, spec, args, ct)
        # the rules under jit, vmap, scan, loops and checkpoint: tests/test_binding.py shows that the written
        # rule is the one that runs there, and check_op that it is right; here what only composition shows
        got = {"fwd∘rev hessian": jax.hessian(s_op, argnums)(*d),
               "rev∘rev hessian": funcnet.hessian(s_op, argnums)(*d),
               "linearize": jax.linearize(s_op, *d)[1](*u)}
        hessian = jax.hessian(s_twin, argnums)(*d)
        want = {"linearize": jax.jvp(s_twin, d, u)[1], "fwd∘rev hessian": hessian, "rev∘rev hessian": hessian}
        with custom_vjp_form():  # read at trace time: this part of the program is built in the custom_vjp form
            got["custom_vjp grad"] = jax.grad(scalarized(spec.op, spec, args, ct), argnums)(*d)
            got["custom_vjp value"] = spec.op(*args)
        want["custom_vjp grad"] = jax.grad(s_twin, argnums)(*d)
        want["custom_vjp value"] = spec.twin_op(*args)
        return got, want

    def every_argument(stacked, batch):
        # the batching rules over every argument, integer labels and masks included (gradients under vmap:
        # tests/test_binding.py)
        return jax.vmap(spec.op)(*stacked), [spec.op(*args) for args in batch]

    def program(inputs):
        out = {"values": values(inputs["values"]), "dtypes": dtypes(inputs["dtypes"]),
               "transformations": transformations(*inputs["transformations"]),
               "every argument": every_argument(*inputs["every argument"])}
        if "extremes" in inputs:
            out["extremes"] = extremes(*inputs["extremes"])
        return out

    return program


def _inputs(spec: OpSpec) -> dict:
    # float64 on every shape, float32 on the first (check_op compares float32 gradients on every shape)
    inputs = {"values": {(dtype, k): sample(spec, case, dtype, seed=k) for dtype in ("float32", "float64")
                         for k, case in enumerate(spec.cases) if dtype == "float64" or k == 0}}
    dtypes = {}
    for dtype in ("float16", "bfloat16"):  # float32 and float64: the values part
        args = sample(spec, spec.cases[-1], dtype, seed=5)
        # compared with the float32 twin on the same (rounded) inputs
        wide = cast_args(jax.tree.map(np.asarray, args), spec.diff_argnums, "float32" if dtype != "float64" else dtype)
        dtypes[dtype] = (args, wide)
    inputs["dtypes"] = dtypes
    args = sample(spec, _small_case(spec), seed=3)
    d = diff_args(spec, args)
    inputs["transformations"] = (args, cotangent_for(spec.op, args), _tangents(d))
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


#: Namesakes that compute in float32 whatever the input dtype (jax.nn.dot_product_attention takes its softmax in
#: float32), compared with funcnet (which keeps float64) at float32's tolerance; their `differs` says so.
NAMESAKE_IN_FLOAT32 = {"dot_product_attention"}


def battery(spec: OpSpec) -> list[str]:
    """What fails for ``spec`` (empty if nothing): every check of the module docstring's second item."""
    out = jax.jit(_program(spec))(inputs := _inputs(spec))
    failures: list[str] = []
    for (dtype, k), (y, twin, up, g, g_twin) in out["values"].items():
        tol, what = spec.tolerance(dtype), f"value {dtype} {spec.cases[k]}"
        for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(twin)):  # one output, or a tuple (CTC's forward probs)
            if not a.dtype == b.dtype == jnp.dtype(dtype) or a.shape != b.shape:
                failures.append(f"{what}: {a.dtype}{a.shape}, twin {b.dtype}{b.shape}")
        if any(leaf.dtype != jnp.dtype(dtype) for leaf in jax.tree.leaves(g)):
            failures.append(f"gradient {dtype} {spec.cases[k]}: dtypes {[leaf.dtype for leaf in jax.tree.leaves(g)]}")
        _close(failures, what + " vs twin", y, twin, tol.rtol, tol.atol)
        if up is not None:
            up_tol = tol
            if spec.fn.__name__ in NAMESAKE_IN_FLOAT32:
                up_tol = spec.tolerance("float32")
                if "softmax in float32" not in spec.differs:
                    failures.append("the namesake's float32 softmax is not stated in `differs`")
            _close(failures, what + " vs namesake", y, up, up_tol.rtol, up_tol.atol)
        scale = max([float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(g_twin)] + [1.0])
        _close(failures, f"gradient {dtype} {spec.cases[k]} vs twin", g, g_twin, tol.rtol, tol.atol * scale)
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
    mapped, one_by_one = out["every argument"]
    tol = spec.tolerance("float64")
    for i, single in enumerate(one_by_one):
        _close(failures, f"vmap over every argument, example {i}", jax.tree.map(lambda o: o[i], mapped), single,
               tol.rtol, tol.atol)
    del inputs
    return failures


@ops
def test_battery(spec: OpSpec):
    failures = battery(spec)
    assert not failures, f"{spec.name}:\n  " + "\n  ".join(failures)


#: Eager dispatch (no jit) on one op of each way an op is bound: elementwise, a gate, optional arguments, array
#: hyper-parameters, a fused op whose rules call another op's, a norm, the streaming head, integer labels.
EAGER = [by_name(n) for n in ("tanh", "relu", "affine", "softmax_cross_entropy", "huber_loss",
                              "activation_affine(activation=silu)", "layer_norm", "linear_softmax_cross_entropy",
                              "softmax_cross_entropy_with_integer_labels", "logsumexp")]


@pytest.mark.parametrize("spec", EAGER, ids=[s.name for s in EAGER])
def test_eager_equals_jit(spec: OpSpec):
    """The op and its reverse rule called eagerly equal the same under jit (everything else traces into jit)."""
    args = sample(spec, _small_case(spec))
    ct = cotangent_for(spec.op, args)
    argnums = tuple(range(len(spec.diff_argnums)))
    tol = spec.tolerance("float64")

    def run(args):
        return spec.op(*args), jax.grad(scalarized(spec.op, spec, args, ct), argnums)(*diff_args(spec, args))

    failures: list[str] = []
    _close(failures, "jit vs eager", jax.jit(run)(args), run(args), tol.rtol, tol.atol)
    assert not failures, f"{spec.name}: {failures}"


@pytest.mark.parametrize("name", ["tanh", "gelu", "softmax", "softmax_cross_entropy", "affine"])
def test_jax_check_grads_second_order_in_both_modes(name):
    """jax's own checker, order 2, both modes, on a few ops (the battery's exact Hessians cover every op)."""
    spec = next(s for s in OPS if s.name == name)
    args = sample(spec, _small_case(spec), seed=3)
    fixed = dict(enumerate(args))

    def f(*d):
        return spec.op(*[d[spec.diff_argnums.index(i)] if i in spec.diff_argnums else a for i, a in fixed.items()])

    check_grads(jax.jit(f), diff_args(spec, args), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


def test_a_wrong_weight_filter_in_the_op_is_caught_by_the_twin_comparison(monkeypatch):
    """The twin selects the penalised leaves itself: a penalty that also took the biases fails check_op."""
    from funcnet.ops.losses import penalties

    spec = next(s for s in OPS if s.name == "l2_penalty")
    assert check_op(spec, quick=True).passed
    monkeypatch.setattr(penalties, "default_is_weight", lambda path, leaf: jnp.ndim(leaf) >= 1)
    assert not check_op(spec, quick=True).passed


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
