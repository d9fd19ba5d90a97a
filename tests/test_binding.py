"""The rule that runs is the one written: every op, every transformation (funcnet/ops/binding.py).

Each op's rules are replaced by planted ones, the reverse rule scaled by 3 and the
forward rule by 5: in every context ``jax.grad`` must then give exactly 3 times the
true gradient (so the reverse rule ran, and nothing else) and ``jax.jvp`` 5 times
the true tangent (the twin's, in the same program). The contexts: ``jit``, ``vmap`` (outside and inside ``grad``), ``lax.scan``, ``fori_loop`` (reverse)
and ``while_loop`` (forward) bodies, and ``jax.checkpoint`` (under all four policies for
one op of each binding kind, :data:`EVERY_POLICY`; the default policy for the others);
all of an op's contexts, and its twin's, are traced into one program. ``shard_map``: tests/test_shard_map.py.

Also here: undifferentiated programs hold only ordinary primitives (JAX's compiled
fast path), and the classic ``custom_vjp`` form's own planted fault.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import layers, nn
from funcnet.ops.binding import Op
from funcnet.registry import OPS, OpSpec
from helpers import cotangent_for, diff_args, sample, scalarized

REVERSE, FORWARD = 3.0, 5.0  # the planted factors

#: One row per declared op (its first variant): the binding is per rule, not per keyword.
FIRST = [s for i, s in enumerate(OPS) if s.diff_argnums and s.fn not in [t.fn for t in OPS[:i]]]

POLICIES = {
    "checkpoint": None,
    "checkpoint dots_saveable": jax.checkpoint_policies.dots_saveable,
    "checkpoint nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "checkpoint save_only_these_names": jax.checkpoint_policies.save_only_these_names("funcnet_test"),
}


def plant(monkeypatch, rules):
    """Scale every rule's reverse rule by REVERSE and its forward rule by FORWARD."""
    for rule in rules:
        vjp, jvp = rule.vjp, rule.jvp
        monkeypatch.setattr(rule, "vjp", lambda res, g, _v=vjp, **s: tuple(
            None if c is None else jax.tree.map(lambda a: REVERSE * a, c) for c in _v(res, g, **s)))
        monkeypatch.setattr(rule, "jvp", lambda res, *t, _j=jvp, **s: (
            lambda y: None if y is None else FORWARD * y)(_j(res, *t, **s)))


#: The ops that also run under the three other remat policies: one of each way an op is bound (elementwise,
#: a gate, optional arguments, array hyper-parameters, a fused op whose rules call another op's, a norm, the
#: streaming head). Every op runs under the default policy.
EVERY_POLICY = {"tanh", "affine", "softmax_cross_entropy", "huber_loss", "activation_affine", "layer_norm",
                "linear_softmax_cross_entropy"}


def contexts(s, d, u, policies=POLICIES):
    """``{context: (grad of s, jvp of s along u)}`` in every context, for one traced program."""
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.9 * a]), d)  # 0.9: probabilities stay in [0, 1]
    argnums = tuple(range(len(d)))
    grad = jax.grad(s, argnums)
    jvp = lambda f: jax.jvp(f, d, u)[1]  # noqa: E731

    def twice_scan(*d):
        return jax.lax.scan(lambda c, _: (c + s(*d), None), 0.0, None, length=2)[0]

    def twice_fori(*d):
        return jax.lax.fori_loop(0, 2, lambda i, c: c + s(*d), 0.0)

    def over_a_batch(*d):  # vmap traced before the transpose: grad(vmap(f))
        return jax.vmap(s)(*jax.tree.map(lambda a: jnp.stack([a, 0.9 * a]), d)).sum()

    def twice_while(*d):
        return jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] + s(*d)), (0, 0.0))[1]

    out = {
        "jit": (grad(*d), jvp(s)),
        "vmap": (jax.vmap(grad)(*stacked), jax.vmap(lambda *d: jax.jvp(s, d, u)[1])(*stacked)),
        "vmap inside grad": (jax.grad(over_a_batch, argnums)(*d), jvp(over_a_batch)),
        "scan": (jax.grad(twice_scan, argnums)(*d), jvp(twice_scan)),
        "fori_loop / while_loop": (jax.grad(twice_fori, argnums)(*d), jvp(twice_while)),
    }
    for name, policy in policies.items():
        f = jax.checkpoint(s, policy=policy)
        out[name] = (jax.grad(f, argnums)(*d), jvp(f))
    return out


def program(spec: OpSpec, args, ct, u):
    """Every context of the op (with whatever rules it holds now) and of its twin (plain autodiff): one program."""
    s_op, s_twin = scalarized(spec.op, spec, args, ct), scalarized(spec.twin_op, spec, args, ct)
    policies = POLICIES if spec.fn.__name__ in EVERY_POLICY else {"checkpoint": None}
    return jax.jit(lambda d, u: (contexts(s_op, d, u, policies), contexts(s_twin, d, u, policies)))(
        diff_args(spec, args), u)


@pytest.mark.parametrize("spec", FIRST, ids=[s.name for s in FIRST])
def test_the_planted_rules_run_in_every_context(spec: OpSpec, monkeypatch):
    """The planted op gives exactly 3x (grad) and 5x (jvp) the twin's value in every context."""
    args = sample(spec, spec.cases[-1], "float64", seed=7)
    ct = cotangent_for(spec.op, args)
    rng = np.random.default_rng(8)
    u = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a)), a.dtype), diff_args(spec, args))
    plant(monkeypatch, spec.forms)
    planted, twin = program(spec, args, ct, u)
    tol = spec.tolerance("float64")
    for context, (g, t) in twin.items():
        pg, pt = planted[context]
        assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g)) > 0, f"{spec.name}: zero gradient"
        for want, got, factor, mode in ((g, pg, REVERSE, "grad"), (t, pt, FORWARD, "jvp")):
            for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
                np.testing.assert_allclose(np.asarray(b), factor * np.asarray(a), rtol=tol.rtol,
                                           atol=factor * tol.atol * max(1.0, float(np.max(np.abs(a)))),
                                           err_msg=f"{spec.name}: {mode} under {context} did not run its rule")


def test_a_bypassed_rule_is_caught(monkeypatch):
    """The planted fault of the check itself: ``checkpoint`` transposing the forward rule (what the
    previous binding did) instead of running the reverse rule fails the test above."""
    spec = next(s for s in FIRST if s.name == "tanh")
    import funcnet.ops.binding as rule_module

    def transposing(rule, static_items):  # a binding whose linear part is autodiff's transpose of `jvp`
        op = jax.custom_jvp(lambda *a: rule.value(*a, **dict(static_items)))

        def f_jvp(primals, tangents):
            y, res = rule.save(*primals, **dict(static_items))
            return y, rule.jvp(res, *tangents, **dict(static_items))

        op.defjvp(f_jvp)
        return op

    monkeypatch.setattr(rule_module, "_custom_jvp", transposing)
    with pytest.raises(AssertionError, match="grad under"):
        test_the_planted_rules_run_in_every_context(spec, monkeypatch)


def _primitives(jaxpr, seen=None):
    """Every primitive in a jaxpr, sub-jaxprs included."""
    seen = set() if seen is None else seen
    for eqn in jaxpr.eqns:
        seen.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _primitives(sub, seen)
    return seen


def _fast(f, *args) -> bool:
    """Whether calls after the first take JAX's compiled fast path (no Python cache miss, so no tracing)."""
    jitted = jax.jit(f)
    jitted(*args)
    try:
        with jax.no_tracing(True):
            jitted(*args)
            jitted(*args)
    except RuntimeError:
        return False
    return True


def test_undifferentiated_programs_take_the_fast_path():
    """``jax.jit`` of a network's forward pass: after the first call, calls never go back to Python (the
    dispatch figures in docs/benchmarks.md). The linear primitives appear only where a tangent is taken,
    and ``grad`` leaves none behind (all transposed into the reverse rules)."""
    net = layers.mlp([4, 8, 8, 3], "gelu", norm="layer_norm")
    _, params = net.init(jax.random.key(0))
    x = jnp.ones((2, 4))
    assert _fast(net.apply, params, x) and _fast(nn.relu, x) and _fast(jax.grad(lambda p: net.apply(p, x).sum()), params)
    assert not {p for p in _primitives(jax.make_jaxpr(net.apply)(params, x).jaxpr) if p.endswith("_lin")}
    grad = jax.make_jaxpr(jax.grad(lambda p: net.apply(p, x).sum()))(params).jaxpr
    assert not {p for p in _primitives(grad) if p.endswith("_lin")}
    tangent = jax.make_jaxpr(lambda x: jax.jvp(lambda x: net.apply(params, x), (x,), (x,)))(x).jaxpr
    assert "activation_affine_lin" in _primitives(tangent)
    # the planted fault: an op bound as a high-level primitive (the previous binding) leaves the fast path
    hijax = pytest.importorskip("jax.experimental.hijax")

    class High(hijax.VJPHiPrimitive):
        def __init__(self, x):
            self.in_avals, self.out_aval, self.params = (jax.typeof(x),), jax.typeof(x), {}
            super().__init__()

        def expand(self, x):
            return jnp.maximum(x, 0)

    assert not _fast(lambda x: High(x)(x), x)


def test_the_custom_vjp_form_runs_the_reverse_rule(monkeypatch):
    from funcnet.ops.binding import custom_vjp_form

    rule = next(s for s in OPS if s.name == "tanh").forms[0]
    x = jnp.linspace(-1.0, 1.0, 4)
    with custom_vjp_form():
        want = jax.grad(lambda x: nn.tanh(x).sum())(x)
        plant(monkeypatch, [rule])
        got = jax.grad(lambda x: nn.tanh(x).sum())(x)
        with pytest.raises(TypeError):  # reverse mode only
            jax.jvp(lambda x: nn.tanh(x), (x,), (x,))
    np.testing.assert_allclose(got, REVERSE * want, rtol=1e-12)
    assert isinstance(rule, Op)
