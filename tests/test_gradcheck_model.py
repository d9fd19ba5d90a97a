"""Whole-model gradient checks: correct models pass, planted wrong rules fail at exactly their leaves.

Each mode is shown to catch a fault planted into its own rule: reverse mode the
reverse rule, forward mode the forward rule, second order a rule that is right
at first order but differentiates wrongly; and the finite-difference step,
relative to each leaf, checks a leaf of size 3e5 that an absolute step cannot.
"""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, layers, losses, nn
from funcnet.gradcheck import GradientCheckError
from funcnet.gradcheck import check_gradients as check_both_modes


def check_gradients(*args, modes=("rev",), **kwargs):
    """Reverse mode unless a test asks for more: most tests here plant reverse-only (custom_vjp) rules.
    The library's default (both modes) is tested as ``check_both_modes``."""
    return check_both_modes(*args, modes=modes, **kwargs)
from funcnet.ops.binding import Op
from funcnet.registry import by_name

X = jnp.asarray(np.random.default_rng(0).standard_normal((12, 5)))
Y = jnp.asarray(np.random.default_rng(1).integers(0, 3, 12))


def namespace(gates_=None, nn_=None, losses_=None):
    """An op namespace like `funcnet` with some ops replaced (to plant wrong rules)."""
    def ns(module, overrides):
        return types.SimpleNamespace(**{**{n: getattr(module, n) for n in module.__all__}, **(overrides or {})})

    return types.SimpleNamespace(gates=ns(gates, gates_), nn=ns(nn, nn_), losses=ns(losses, losses_))


def wrong(fwd, bwd):
    f = jax.custom_vjp(lambda *a: fwd(*a)[0])
    f.defvjp(fwd, bwd)
    return f


def model_and_twin(activation="tanh", ops=funcnet, hidden=(6,), lam=1e-2):
    def build(ops):
        net = layers.mlp([5, *hidden, 3], activation, ops=ops)

        def loss(p, x, y):
            return ops.losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean() \
                + lam * ops.losses.l2_penalty(p)

        return net, loss

    net, loss = build(ops)
    _, twin = build(funcnet.reference)
    _, params = net.init(jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params), loss, twin


def test_a_correct_model_passes_and_the_report_is_readable():
    params, loss, twin = model_and_twin()
    report = check_gradients(loss, params, X, Y, twin=twin)
    assert report.passed and report.failures == []
    assert [leaf.path for leaf in report.leaves] == ["dense_0/b", "dense_0/w", "dense_1/b", "dense_1/w"]
    text = str(report)
    assert "dense_1/w" in text and "4/4 leaves passed" in text
    d = report.to_dict()
    json.dumps(d)
    assert d["passed"] and d["leaves"][0]["pairs"]["manual vs autodiff"]["max_rel"] < 1e-9
    assert d["modes"] == ["rev"] and d["order"] == 1
    assert all(leaf.step == 1e-6 for leaf in report.leaves)  # leaves of unit size or less: h = step


def test_both_modes_and_second_order_pass_on_a_correct_model_and_are_reported():
    params, loss, twin = model_and_twin()
    report = check_gradients(loss, params, X, Y, twin=twin, modes=("rev", "fwd"), order=2)
    assert report.passed
    new = ("fwd manual vs autodiff", "fwd manual vs finite differences", "Hv rev-over-rev vs autodiff",
           "Hv fwd-over-rev vs autodiff")
    for leaf in report.leaves:
        assert set(new) <= set(leaf.pairs)
        assert leaf.pairs["fwd manual vs autodiff"].max_rel < 1e-12
        assert leaf.pairs["Hv rev-over-rev vs autodiff"].max_rel < 1e-9
    header = str(report).splitlines()[0]
    assert all(name in header for name in new)
    assert "modes rev, fwd; order 2" in str(report).splitlines()[-1]
    assert json.loads(json.dumps(report.to_dict()))["order"] == 2


PLANTED = {
    "sign flip in tanh": (
        dict(nn_={"tanh": wrong(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (-g * (1 - y * y),))}),
        "tanh", {"dense_0/b", "dense_0/w"}),
    "missing factor 2 in the L2 penalty": (
        dict(losses_={"l2_penalty": lambda p, is_weight=None: wrong(
            lambda ws: (sum(jnp.sum(w * w) for w in ws), ws), lambda ws, g: ([g * w for w in ws],))(
            losses.weight_leaves(p, is_weight))}),
        "tanh", {"dense_0/w", "dense_1/w"}),
    "bias gradient not summed over the batch": (
        dict(gates_={"affine": wrong(lambda x, w, b: (x @ w + b, (x, w)),
                                     lambda r, g: (g @ r[1].T, r[0].T @ g, g[0]))}),
        "tanh", {"dense_0/b", "dense_1/b"}),
    "prelu alpha gradient dropped": (
        dict(nn_={"prelu": wrong(lambda x, a: (jnp.where(x >= 0, x, a * x), (x, a)),
                                 lambda r, g: (jnp.where(r[0] >= 0, g, r[1] * g), jnp.zeros_like(r[1])))}),
        "prelu", {"prelu_0/alpha"}),
}


@pytest.mark.parametrize("what", PLANTED)
def test_planted_wrong_rule_fails_exactly_its_leaves(what):
    overrides, activation, expected = PLANTED[what]
    params, loss, twin = model_and_twin(activation, ops=namespace(**overrides))
    report = check_gradients(loss, params, X, Y, twin=twin)
    assert set(report.failures) == expected
    for leaf in expected:
        pairs = report[leaf].pairs
        assert not pairs["manual vs autodiff"].passed and not pairs["manual vs finite differences"].passed
        assert pairs["autodiff vs finite differences"].passed  # the twin is right: the checker localises
        assert pairs["manual vs finite differences"].kinks == 0


def test_max_routed_to_the_wrong_input_fails_both_inputs_only():
    bad_max = wrong(lambda x, y: (jnp.maximum(x, y), (x, y)), lambda r, g: (g * (r[0] < r[1]), g * (r[0] > r[1])))
    rng = np.random.default_rng(2)
    p = {"a": jnp.asarray(rng.standard_normal(6)), "b": jnp.asarray(rng.standard_normal(6)) + 0.1,
         "c": jnp.asarray(rng.standard_normal(6))}
    f = lambda mx: lambda p: jnp.sum(gates.multiply(mx(p["a"], p["b"]), p["c"]))  # noqa: E731
    report = check_gradients(f(bad_max), p, twin=f(jnp.maximum))
    assert set(report.failures) == {"a", "b"}
    assert check_gradients(f(gates.maximum), p, twin=f(jnp.maximum)).passed


def _relu_on_its_kink():
    """A ReLU MLP's loss whose biases 0 sit exactly on ReLU's kink (zero inputs), with its twin."""
    net = layers.mlp([5, 4, 3], "relu")
    twin_net = layers.mlp([5, 4, 3], "relu", ops=funcnet.reference)
    _, params = net.init(jax.random.key(0))
    params["dense_0"]["b"] = jnp.array([0.0, 0.5, -0.5, 0.0])
    x = jnp.zeros((4, 5))
    loss = lambda n, ops: lambda p: ops.losses.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        n.apply(p, x), Y[:4]).mean()
    return loss(net, funcnet), params, loss(twin_net, funcnet.reference)


def test_a_correct_rule_at_a_kink_is_reported_as_a_kink_not_a_failure():
    loss, params, twin_loss = _relu_on_its_kink()
    report = check_gradients(loss, params, twin=twin_loss)
    assert report.passed
    assert report["dense_0/b"].pairs["manual vs finite differences"].kinks == 2

    # the same point with a rule that returns a slope outside the one-sided ones fails
    def bwd(x, g):
        return (jnp.where(x > 0, g, jnp.where(x == 0, 3 * g, 0.0)),)

    bad_relu = wrong(lambda x: (jnp.maximum(x, 0), x), bwd)
    bad_net = layers.mlp([5, 4, 3], "relu", ops=namespace(nn_={"relu": bad_relu}))
    bad_loss = lambda p: funcnet.losses.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        bad_net.apply(p, jnp.zeros((4, 5))), Y[:4]).mean()
    bad = check_gradients(bad_loss, params)
    assert bad.failures == ["dense_0/b"]


def test_hinge_at_the_margin_is_a_kink():
    scores = jnp.array([[1.0, 0.0, 3.0], [2.0, 0.5, 0.0]])  # first row: class 1 exactly at the margin
    labels = jnp.array([0, 0])
    f = lambda s: losses.multiclass_svm_loss(s, labels).sum()  # noqa: E731
    report = check_gradients(f, scores, twin=lambda s: funcnet.reference.losses.multiclass_svm_loss(s, labels).sum())
    assert report.passed and report.leaves[0].kinks >= 1


def test_random_directions_for_large_leaves_catch_errors():
    params, loss, twin = model_and_twin(hidden=(40,))
    report = check_gradients(loss, params, X, Y, twin=twin, full_max=50, probes=5)
    assert report["dense_1/w"].probes == "5 random directions" and report["dense_0/b"].probes == "every coordinate"
    assert report.passed
    ops = namespace(nn_={"tanh": wrong(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (0.5 * g * (1 - y * y),))})
    params, loss, twin = model_and_twin(hidden=(40,), ops=ops)
    bad = check_gradients(loss, params, X, Y, twin=twin, full_max=50, probes=5)
    assert set(bad.failures) == {"dense_0/b", "dense_0/w"}
    assert str(bad["dense_0/w"].pairs["manual vs finite differences"].worst).startswith("direction")


def test_float32_model_native_precision_and_x64_setting_restored():
    params, loss, twin = model_and_twin()
    params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    with jax.enable_x64(False):
        report = check_gradients(loss, params32, jnp.asarray(X, jnp.float32), Y, twin=twin, precision="native")
        assert jax.config.jax_enable_x64 is False
        assert report.passed and {leaf.dtype for leaf in report.leaves} == {"float32"}
        full = check_gradients(loss, params32, jnp.asarray(X, jnp.float32), Y, twin=twin)
        assert jax.config.jax_enable_x64 is False
        assert full.passed and {leaf.dtype for leaf in full.leaves} == {"float64"}


def test_strict_mode_raises_with_the_report():
    overrides, activation, _ = PLANTED["sign flip in tanh"]
    params, loss, twin = model_and_twin(activation, ops=namespace(**overrides))
    with pytest.raises(GradientCheckError, match="dense_0/b, dense_0/w") as info:
        check_gradients(loss, params, X, Y, twin=twin, strict=True)
    assert not info.value.report.passed


def test_several_arguments_and_non_scalar_outputs():
    w = jnp.asarray(np.random.default_rng(3).standard_normal((5, 3)))
    f = lambda x, w: nn.softmax(gates.matmul(x, w))  # noqa: E731
    t = lambda x, w: funcnet.reference.nn.softmax(x @ w)  # noqa: E731
    report = check_gradients(f, X, w, twin=t, argnums=(0, 1))
    assert [leaf.path for leaf in report.leaves] == ["args[0]", "args[1]"] and report.passed
    with pytest.raises(ValueError, match="argnums"):
        check_gradients(f, X, w, argnums=2)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "softmax"])
def test_hessian_of_an_mlp_loss_equals_the_twins(activation):
    """A few activations: each op's own Hessians are compared exactly in tests/test_registry_ops.py."""
    params, loss, twin = model_and_twin(activation, hidden=(4,))
    h = jax.jit(funcnet.hessian(loss))(params, X, Y)
    h_twin = jax.jit(jax.hessian(twin))(params, X, Y)
    for a, b in zip(jax.tree.leaves(h), jax.tree.leaves(h_twin)):
        scale = max(float(np.abs(b).max()), 1e-12)
        assert float(np.abs(a - b).max()) <= 1e-8 * scale, activation


def test_hvp_and_hessian_matrix():
    params, loss, twin = model_and_twin("tanh", hidden=(4,))
    f = lambda p: loss(p, X, Y)  # noqa: E731
    v = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(4).standard_normal(a.shape)), params)
    hv = jax.jit(lambda p, v: funcnet.hvp(f, p, v))(params, v)
    flat_v, _ = jax.flatten_util.ravel_pytree(v)
    H = jax.jit(funcnet.hessian_matrix(f))(params)
    n = flat_v.size
    assert H.shape == (n, n)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(hv)[0], H @ flat_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, H.T, atol=1e-12)


# ------------------------------------------------------- the step, relative to each leaf
def _softplus_of_a_big_leaf(ops, wrong=0.0, compute_dtype=None):
    """``1e5 · Σ softplus(s / 1e5)`` of a leaf ``s`` of size 3e5; ``wrong`` scales its gradient by ``1 + wrong``."""

    def f(p):
        s = p["s"] if compute_dtype is None else p["s"].astype(compute_dtype)
        value = 1e5 * jnp.sum(ops.nn.softplus(s / 1e5))
        return value + wrong * (value - jax.lax.stop_gradient(value))

    return f


BIG = {"s": jnp.asarray([2e5, 3e5, 4e5], jnp.float32)}


def test_the_step_is_relative_to_the_leaf():
    manual, twin = _softplus_of_a_big_leaf(funcnet), _softplus_of_a_big_leaf(funcnet.reference)
    report = check_gradients(manual, BIG, twin=twin, modes=("rev", "fwd"))
    rms = float(np.sqrt(np.mean(np.square(np.asarray(BIG["s"], np.float64)))))
    assert report.passed and report["s"].step == pytest.approx(1e-6 * rms)
    assert report["s"].pairs["manual vs finite differences"].max_rel < 1e-8
    # the absolute step 1e-6 moves f by ~1e-6 out of ~1e6: float64 keeps only a few digits of the difference
    absolute = check_gradients(manual, BIG, twin=twin, modes=("rev", "fwd"), relative_step=False)
    pairs = absolute["s"].pairs
    assert absolute.failures == ["s"] and absolute["s"].step == 1e-6
    assert pairs["manual vs autodiff"].passed and pairs["fwd manual vs autodiff"].passed
    for name in ("manual vs finite differences", "autodiff vs finite differences", "fwd manual vs finite differences"):
        assert 1e-5 < pairs[name].max_rel < 1e-3 and pairs[name].kinks == 0
    # the larger step still catches a gradient that is 1% off
    bad = check_gradients(_softplus_of_a_big_leaf(funcnet, wrong=0.01), BIG, twin=twin)
    assert bad.failures == ["s"] and bad["s"].pairs["manual vs finite differences"].max_rel > 5e-3
    assert bad["s"].pairs["autodiff vs finite differences"].passed


def test_a_float32_leaf_of_size_3e5_computed_in_float32():
    # a model computing in float32 (as mixed precision does): the finite differences are float32 arithmetic
    assert np.float32(3e5) + np.float32(1e-3) == np.float32(3e5)  # an absolute step of 1e-3 is invisible there
    assert np.float32(3e5) + np.float32(1e-3 * 3e5) != np.float32(3e5)
    f32 = dict(compute_dtype=jnp.float32)
    manual, twin = _softplus_of_a_big_leaf(funcnet, **f32), _softplus_of_a_big_leaf(funcnet.reference, **f32)
    check = dict(twin=twin, precision="native", step=1e-3, modes=("rev", "fwd"))
    report = check_gradients(manual, BIG, **check)
    assert report.passed and report["s"].dtype == "float32"
    assert report["s"].pairs["manual vs finite differences"].max_rel < 1e-3
    # the absolute step does not move the leaf at all: every difference is 0, an error of 100%
    absolute = check_gradients(manual, BIG, relative_step=False, **check)
    assert absolute.failures == ["s"]
    assert absolute["s"].pairs["manual vs finite differences"].max_rel == pytest.approx(1.0)
    assert absolute["s"].pairs["fwd manual vs finite differences"].max_rel == pytest.approx(1.0)
    # and the relative step catches a gradient that is 1% off
    bad = check_gradients(_softplus_of_a_big_leaf(funcnet, wrong=0.01, **f32), BIG, **check)
    assert bad.failures == ["s"] and not bad["s"].pairs["manual vs finite differences"].passed


# ---------------------------------------------- forward mode and second order catch their own faults
TANH = by_name("tanh").forms[0]


def tanh_with(*, vjp=None, jvp=None):
    """tanh built on :class:`Op` with its reverse or forward rule replaced."""
    rule = Op("tanh", value=TANH.value, save=TANH.save, vjp=vjp or TANH.vjp, jvp=jvp or TANH.jvp)
    return lambda x: rule(x)


WRONG_FORWARD = tanh_with(jvp=lambda y, t: t * (1 - y))  # should be 1 - y²
WRONG_REVERSE = tanh_with(vjp=lambda y, g: (g * (1 + y * y),))  # should be 1 - y²
# both rules right at first order, but they hide their residual from differentiation: d²tanh is lost
WRONG_SECOND = tanh_with(vjp=lambda y, g: (g * (1 - jax.lax.stop_gradient(y) ** 2),),
                         jvp=lambda y, t: t * (1 - jax.lax.stop_gradient(y) ** 2))


def _failing_pairs(report):
    return {leaf.path: {n for n, p in leaf.pairs.items() if not p.passed} for leaf in report.leaves if not leaf.passed}


def test_forward_mode_catches_a_planted_forward_rule():
    params, loss, twin = model_and_twin(ops=namespace(nn_={"tanh": WRONG_FORWARD}))
    fwd = {"fwd manual vs autodiff", "fwd manual vs finite differences"}
    report = check_gradients(loss, params, X, Y, twin=twin, modes=("rev", "fwd"))
    assert _failing_pairs(report) == {"dense_0/b": fwd, "dense_0/w": fwd}  # only the leaves before the tanh
    assert _failing_pairs(check_gradients(loss, params, X, Y, twin=twin, modes=("fwd",))) == {
        "dense_0/b": fwd, "dense_0/w": fwd}
    # reverse mode never runs the forward rule
    assert check_gradients(loss, params, X, Y, twin=twin).passed


def test_reverse_mode_catches_a_planted_reverse_rule_that_forward_mode_cannot_see():
    params, loss, twin = model_and_twin(ops=namespace(nn_={"tanh": WRONG_REVERSE}))
    rev = {"manual vs autodiff", "manual vs finite differences"}
    report = check_gradients(loss, params, X, Y, twin=twin, modes=("rev", "fwd"))
    assert _failing_pairs(report) == {"dense_0/b": rev, "dense_0/w": rev}
    assert check_gradients(loss, params, X, Y, twin=twin, modes=("fwd",)).passed


def test_second_order_catches_a_rule_that_is_right_at_first_order():
    params, loss, twin = model_and_twin(ops=namespace(nn_={"tanh": WRONG_SECOND}))
    assert check_gradients(loss, params, X, Y, twin=twin, modes=("rev", "fwd")).passed
    report = check_gradients(loss, params, X, Y, twin=twin, modes=("rev", "fwd"), order=2)
    hv = {"Hv rev-over-rev vs autodiff", "Hv fwd-over-rev vs autodiff"}
    assert _failing_pairs(report) == {"dense_0/b": hv, "dense_0/w": hv}
    assert report["dense_0/w"].pairs["Hv rev-over-rev vs autodiff"].max_rel > 1e-2
    assert str(report["dense_0/w"].pairs["Hv fwd-over-rev vs autodiff"].worst).startswith("v")
    # each second-order mode fails on its own pair above: rev-over-rev and fwd-over-rev alike


def test_second_order_catches_a_function_whose_hessian_differs_from_the_twins():
    # equal values and gradients at p0, Hessians differing by 2ε·I: first order cannot tell them apart
    params, loss, twin = model_and_twin(hidden=(4,))
    p0 = params
    eps = 1e-3

    def curved(p, x, y):
        return loss(p, x, y) + eps * sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p0)))

    assert check_gradients(curved, params, X, Y, twin=twin, modes=("rev", "fwd")).passed
    report = check_gradients(curved, params, X, Y, twin=twin, modes=("rev", "fwd"), order=2)
    assert set(report.failures) == {"dense_0/b", "dense_0/w", "dense_1/b", "dense_1/w"}


def test_a_kink_in_forward_mode_is_a_kink_too():
    loss, params, twin_loss = _relu_on_its_kink()
    report = check_gradients(loss, params, twin=twin_loss, modes=("rev", "fwd"))
    assert report.passed
    assert report["dense_0/b"].pairs["fwd manual vs finite differences"].kinks == 2


def test_bad_modes_and_orders_are_one_line_errors():
    params, loss, twin = model_and_twin()
    with pytest.raises(ValueError, match="modes"):
        check_gradients(loss, params, X, Y, modes=("backward",))
    with pytest.raises(ValueError, match="order"):
        check_gradients(loss, params, X, Y, order=3)
    with pytest.raises(ValueError, match="twin"):
        check_gradients(loss, params, X, Y, order=2)
    # a jax.custom_vjp has no forward rule: asking for forward mode through it says so
    custom = wrong(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y * y),))
    with pytest.raises(ValueError, match="'fwd'"):
        check_gradients(lambda w: jnp.sum(custom(w)), jnp.ones(3), modes=("fwd",))


def test_both_modes_by_default_and_the_report_names_the_op_at_fault(monkeypatch):
    """A planted wrong forward rule in the registry's own tanh: the default check (both modes) fails, and the
    report names tanh, the op that fails its own check, not only the parameter leaves."""
    params, loss, twin = model_and_twin()
    assert check_both_modes(loss, params, X, Y, twin=twin).suspects == {}
    monkeypatch.setattr(TANH, "jvp", lambda y, t: t * (1 - y))
    report = check_both_modes(loss, params, X, Y, twin=twin)
    assert report.modes == ("rev", "fwd") and not report.passed
    assert set(report.suspects) == {"tanh"} and "float64 fwd vs twin" in report.suspects["tanh"]
    assert "ops at fault (each fails its own check): tanh (" in str(report)


def test_complex_leaves_are_refused_not_passed():
    """|a|² against the twin Re(a)²: the imaginary part of the gradient is wrong, and real finite differences
    cannot see it; the checker refuses complex leaves, naming them, instead of reporting "passed"."""
    a = {"w": jnp.array([1 + 2j, 3 - 1j])}
    with pytest.raises(ValueError, match=r"complex leaves are not checked \(args\[0\]\['w'\]\)"):
        check_both_modes(lambda p: jnp.sum(jnp.abs(p["w"]) ** 2), a, twin=lambda p: jnp.sum(p["w"].real ** 2))
