"""The fused dense layer ``gates.activation_affine`` (``f(z) @ w + b``) and ``layers.mlp(fused=True)``.

The registry-wide tests cover a few activations (tanh, silu, gelu, softmax) like
every op; here: every activation against the unfused pair, XLA's temporary
memory of the deep network of ``funcnet bench`` (deterministic: compiled, not
run), ``mlp`` fused against unfused, and planted faults that each check catches.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, layers
from funcnet import reference as ref
from funcnet.ops import fused_dense
from helpers import XLA_DEFAULTS

MiB = 2**20
KINKS = (-3.0, -1.0, 0.0, 1.0, 3.0, 6.0)  # hard_tanh, relu, relu6, hard_sigmoid/hard_silu, sparse_*: away from these
OPTIONS = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.5}, "celu": {"alpha": 2.0},
           "gelu": {"approximate": False}}


def _problem(seed=0, shape=(6, 5), n_out=4):
    rng = np.random.default_rng(seed)
    z = 2.5 * rng.standard_normal(shape)
    for k in KINKS:
        z = np.where(np.abs(z - k) < 0.05, k + 0.1, z)
    return (jnp.asarray(z), jnp.asarray(rng.standard_normal((shape[-1], n_out))),
            jnp.asarray(rng.standard_normal(n_out)))


def _gaps(fn, cases):
    """Per case, the largest difference from the unfused twin in value, reverse rule and forward rule.

    All cases are traced into one jit (one compile for the table)."""
    z, w, b = _problem()
    ct = jnp.asarray(np.random.default_rng(1).standard_normal((z.shape[0], w.shape[1])))
    u = tuple(jnp.asarray(np.random.default_rng(2 + i).standard_normal(a.shape)) for i, a in enumerate((z, w, b)))

    @jax.jit
    def all_gaps(z, w, b):
        out = []
        for act, kw in cases:
            f = lambda z, w, b: fn(z, w, b, act, **kw)  # noqa: E731
            t = lambda z, w, b: ref.gates.activation_affine(z, w, b, act, **kw)  # noqa: E731
            gaps = [jnp.max(jnp.abs(f(z, w, b) - t(z, w, b)))]
            gaps += [jnp.max(jnp.abs(a - c)) for a, c in zip(jax.vjp(f, z, w, b)[1](ct), jax.vjp(t, z, w, b)[1](ct))]
            gaps += [jnp.max(jnp.abs(jax.jvp(f, (z, w, b), u)[1] - jax.jvp(t, (z, w, b), u)[1]))]
            out.append(jnp.max(jnp.stack(gaps)))
        return jnp.stack(out)

    return dict(zip([act for act, _ in cases], np.asarray(all_gaps(z, w, b))))


CASES = [(a, {}) for a in fused_dense.FUSABLE] + [(a, kw) for a, kw in OPTIONS.items()]


def test_every_activation_agrees_with_the_unfused_pair_in_both_directions():
    gaps = _gaps(gates.activation_affine, CASES)
    bad = {a: g for a, g in gaps.items() if not g < 1e-12}
    assert not bad, bad


def test_a_planted_reverse_rule_that_forgets_the_activation_is_caught(monkeypatch):
    # dw from z instead of f(z): the bug of a fused layer that saves z and forgets to recompute f(z)
    monkeypatch.setattr(fused_dense, "_activation", lambda activation, kwargs: lambda z: z)
    monkeypatch.setattr(fused_dense._ACTIVATION_AFFINE, "value", fused_dense._activation_affine_value)
    gaps = _gaps(gates.activation_affine, [("tanh", {}), ("relu", {})])
    assert all(g > 1e-2 for g in gaps.values()), gaps


def test_the_activation_s_own_rules_run_inside_the_fused_op(monkeypatch):
    """dz is the activation's hand-written reverse rule and the ż term its forward rule: called directly on
    the saved residuals for a one-op activation (binding.vjp_of, cheap to trace), through jax.vjp/jax.jvp for
    a composite (hard_sigmoid = relu6(z + 3) / 6). Planted x3/x5 rules of relu and relu6 show in both."""
    from funcnet.ops import activations, binding

    z, w, b = _problem()
    assert binding._one_op(funcnet.nn.relu, z) is not None
    assert binding._one_op(fused_dense._activation("gelu", (("approximate", False),)), z) is not None
    assert binding._one_op(funcnet.nn.hard_sigmoid, z) is None
    ct = jnp.ones((z.shape[0], w.shape[1]))

    def dz_and_tangent(z, w, b):  # traced afresh each call (jit would reuse the first trace)
        out = {}
        for act in ("relu", "hard_sigmoid"):
            f = lambda z: gates.activation_affine(z, w, b, act)  # noqa: E731
            out[act] = (jax.vjp(f, z)[1](ct)[0], jax.jvp(f, (z,), (jnp.ones_like(z),))[1])
        return out

    want = jax.jit(lambda *a: dz_and_tangent(*a))(z, w, b)
    for op in (activations._RELU, activations._RELU6):
        vjp, jvp = op.vjp, op.jvp
        monkeypatch.setattr(op, "vjp", lambda res, g, _v=vjp, **s: tuple(3 * c for c in _v(res, g, **s)))
        monkeypatch.setattr(op, "jvp", lambda res, t, _j=jvp, **s: 5 * _j(res, t, **s))
    got = jax.jit(lambda *a: dz_and_tangent(*a))(z, w, b)
    for act in want:
        np.testing.assert_allclose(got[act][0], 3 * want[act][0], rtol=1e-12, err_msg=act)
        np.testing.assert_allclose(got[act][1], 5 * want[act][1], rtol=1e-12, err_msg=act)
        assert float(jnp.max(jnp.abs(want[act][0]))) > 0


def _deep_step_temp(activation, fused_layers=True, batch=4096):
    """XLA's temporary memory of one gradient of the deep network of ``funcnet bench`` (784-(512×8)-10)."""
    net = layers.mlp([784] + [512] * 8 + [10], activation, fused=fused_layers)
    _, params = net.init(jax.random.key(0))

    def loss(p, x, y):
        return funcnet.losses.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    x, y = jax.ShapeDtypeStruct((batch, 784), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32)
    compiled = jax.jit(jax.grad(loss)).lower(params, x, y).compile(compiler_options=XLA_DEFAULTS)
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.fixture(scope="module")
def identity_temp():
    return _deep_step_temp("identity", fused_layers=False)


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu", "hard_tanh"])
def test_deep_network_keeps_one_tensor_per_layer(activation, identity_temp):
    """At batch 4096 the identity network needs 72 MiB (eight 8 MiB layers and one working buffer);
    unfused, ReLU and hard tanh need 128 and SiLU 192."""
    assert identity_temp == 72 * MiB
    ours = _deep_step_temp(activation)
    assert ours <= identity_temp, f"{activation}: {ours / MiB:.1f} MiB, identity {identity_temp / MiB:.1f} MiB"


def test_without_the_ordering_ties_xla_keeps_the_forward_activations(monkeypatch, identity_temp):
    # the planted fault: recompute f(z) as plain f(z); XLA merges it with the forward pass's f(z)
    monkeypatch.setattr(fused_dense, "_after", lambda x, dep: x)
    assert _deep_step_temp("silu") > 1.5 * identity_temp


def _medium_step_temp(fused_layers=True):
    """XLA's temporary memory of one SGD-with-momentum step of the medium network of ``funcnet bench``."""
    from funcnet.apps.bench import steps

    x, y = jax.ShapeDtypeStruct((256, 784), jnp.float32), jax.ShapeDtypeStruct((256,), jnp.int32)
    return steps.funcnet_step([784, 1024, 1024, 10], "relu", fused=fused_layers).temp_bytes(x, y)


def test_small_batches_need_no_more_memory_than_unfused_layers(monkeypatch):
    """Ordering dw before G wᵀ costs a copy of w: where the batch is smaller than the layer (the medium
    network, 784-1024-1024-10, at batch 256) the rule skips it and needs what the unfused layers need."""
    unfused = _medium_step_temp(fused_layers=False)
    assert _medium_step_temp() <= unfused
    # the planted fault: order the two products whatever the batch (a 4 MiB copy of each 1024 × 1024 w)
    monkeypatch.setattr(fused_dense, "_order_pays", lambda rows, n_in, n_out: True)
    assert _medium_step_temp() >= unfused + 4 * MiB


@pytest.mark.parametrize("activation, kw, norm", [("relu", {}, None), ("silu", {}, "layer_norm"),
                                                  ("leaky_relu", {"negative_slope": 0.3}, None),
                                                  ("softmax", {}, "rms_norm")])
def test_mlp_fused_equals_unfused(activation, kw, norm):
    sizes = [5, 7, 6, 3]
    a, b = (layers.mlp(sizes, activation, norm=norm, fused=f, **kw) for f in (True, False))
    _, pa = a.init(jax.random.key(1))
    _, pb = b.init(jax.random.key(1))
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    assert all(jnp.array_equal(u, v) for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)), jnp.float32)
    np.testing.assert_allclose(a.apply(pa, x), b.apply(pb, x), rtol=1e-6, atol=1e-6)

    def loss(net):
        return lambda p: jnp.sum(jnp.sin(net.apply(p, x)))

    for u, v in zip(jax.tree.leaves(jax.grad(loss(a))(pa)), jax.tree.leaves(jax.grad(loss(b))(pb))):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    # the fused network really is built on activation_affine
    jaxpr = str(jax.make_jaxpr(lambda p: a.apply(p, x))(pa))
    assert jaxpr.count("activation_affine") == len(sizes) - 2, jaxpr


def test_mlp_keeps_layers_apart_where_they_cannot_fuse():
    x = jnp.ones((2, 3))
    for net in (layers.mlp([3, 4, 2], "prelu"), layers.mlp([3, 4, 2], "relu", dropout=0.5),
                layers.mlp([3, 4, 2], "relu", fused=False)):
        _, p = net.init(jax.random.key(0))
        assert "activation_affine" not in str(jax.make_jaxpr(lambda p: net.apply(p, x))(p))


def test_reference_mlp_is_autodiff_of_the_same_network():
    sizes = [4, 6, 3]
    manual, auto = layers.mlp(sizes, "gelu"), layers.mlp(sizes, "gelu", ops=ref)
    _, p = manual.init(jax.random.key(2))
    x = jnp.linspace(-2, 2, 8, dtype=jnp.float32).reshape(2, 4)
    assert "activation_affine" not in str(jax.make_jaxpr(lambda p: auto.apply(p, x))(p))
    loss = lambda net: lambda p: jnp.sum(net.apply(p, x) ** 2)  # noqa: E731
    for u, v in zip(jax.tree.leaves(jax.grad(loss(manual))(p)), jax.tree.leaves(jax.grad(loss(auto))(p))):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_keeps_the_input_dtype_and_works_under_vmap_and_second_order():
    z, w, b = (a.astype(jnp.bfloat16) for a in _problem())

    @jax.jit
    def value_and_grad(z, w, b):
        return gates.activation_affine(z, w, b, "silu"), jax.grad(
            lambda z: jnp.sum(gates.activation_affine(z, w, b, "silu").astype(jnp.float32)))(z)

    out, g = value_and_grad(z, w, b)
    assert out.dtype == jnp.bfloat16 and g.dtype == jnp.bfloat16
    z, w, b = _problem()
    f = lambda z: jnp.sum(jnp.tanh(gates.activation_affine(z, w, b, "silu")))  # noqa: E731
    t = lambda z: jnp.sum(jnp.tanh(ref.gates.activation_affine(z, w, b, "silu")))  # noqa: E731
    both = jax.jit(lambda z, f: (jax.hessian(f)(z[0]), jax.vmap(jax.grad(f))(z)), static_argnums=1)
    for u, v in zip(both(z, f), both(z, t)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)


def test_signed_zero_and_nan_cotangents_pass_through_exactly():
    # the ordering ties subtract +0 (x - 0 is x, -0.0 included), and stay 0 when the cotangent holds NaN
    z = jnp.array([[-0.0, 1.0], [-2.0, 0.5]])
    w, b = jnp.eye(2), jnp.zeros(2)
    g = jax.grad(lambda z: jnp.sum(gates.activation_affine(z, w, b, "leaky_relu")))(z)
    np.testing.assert_array_equal(g, [[0.01, 1.0], [0.01, 1.0]])  # -0.0 takes the negative slope
    ct = jnp.array([[jnp.nan, 1.0], [1.0, 1.0]])
    _, pull = jax.vjp(lambda z, w: gates.activation_affine(z, w, b, "tanh"), z, w)
    _, pull_t = jax.vjp(lambda z, w: ref.gates.activation_affine(z, w, b, "tanh"), z, w)
    for u, v in zip(pull(ct), pull_t(ct)):
        np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
        np.testing.assert_allclose(u, v, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("call, fragment", [
    (lambda: gates.activation_affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4), "prelu"), "`activation` must"),
    (lambda: gates.activation_affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4), "nope"), "'nope'"),
    (lambda: gates.activation_affine(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones(4)), "z(2, 3)"),
    (lambda: gates.activation_affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(3)), "`b` must have shape (4,)"),
    (lambda: gates.activation_affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4), "relu", alpha=1.0),
     "does not take {'alpha': 1.0}"),
    (lambda: layers.ActivationThenDense("prelu", 3), "use serial(PReLU(), Dense(units))"),
])
def test_bad_input_is_a_clear_error(call, fragment):
    with pytest.raises((ValueError, TypeError)) as err:
        call()
    assert "activation_affine" in str(err.value) or "ActivationThenDense" in str(err.value)
    assert fragment in str(err.value)


def _wide_head_temp(fused_layers=True):
    """XLA's temporary memory of one SGD step of 64-512-512-1000 (tanh) with squared error, batch 4096."""
    from funcnet.apps.bench import steps

    x, y = jax.ShapeDtypeStruct((4096, 64), jnp.float32), jax.ShapeDtypeStruct((4096,), jnp.int32)
    return steps.funcnet_step([64, 512, 512, 1000], "tanh", loss="squared_error", fused=fused_layers).temp_bytes(x, y)


def test_a_wide_head_keeps_no_output_sized_buffer(monkeypatch):
    """The recompute of f(z) is tied to db, not to an element of G: XLA fuses G's producer into a one-element
    slice, which keeps the network's output (4096 × 1000, 15.6 MiB) alive until the recompute. What is left
    over the unfused network is the copy of w of the ordering (512 × 1000, 1.95 MiB)."""
    unfused = _wide_head_temp(fused_layers=False)
    assert _wide_head_temp() <= unfused + 2 * MiB

    def tied_to_an_element_of_g(res, g, activation, kwargs):  # the planted fault: the rule as it was
        z, w = res
        lead = tuple(range(g.ndim - 1))
        gw = jnp.tensordot(fused_dense._activation(activation, kwargs)(fused_dense._after(z, g)), g, axes=(lead, lead))
        _, pullback = jax.vjp(fused_dense._activation(activation, kwargs), fused_dense._after(z, gw))
        (gz,) = pullback(jnp.matmul(g, fused_dense._after(w, gw).T))
        return gz, gw, g.sum(axis=lead)

    monkeypatch.setattr(fused_dense._ACTIVATION_AFFINE, "vjp", tied_to_an_element_of_g)
    assert _wide_head_temp() >= unfused + 15 * MiB
