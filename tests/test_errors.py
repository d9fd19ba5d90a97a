"""Bad input gets a clear error at trace time, naming the op and the offending shapes or values."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates, losses, nn

f32 = jnp.float32


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (escaped)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.mark.parametrize("name", nn.__all__)
def test_activations_reject_non_numeric_input(name):
    f = getattr(nn, name)
    args = {"prelu": ("abc", jnp.float32(0.1)), "one_hot": ("abc", 3),
            "dot_product_attention": ("abc", jnp.ones((2, 1, 4)), jnp.ones((2, 1, 4)))}.get(name, ("abc",))
    first = {"dot_product_attention": "`query`"}.get(name, "`x`")
    with raises(TypeError, f"funcnet.nn.{f.__name__}", first, "str"):  # an alias names its function
        f(*args)


def test_errors_are_raised_at_trace_time_under_jit():
    with raises(ValueError, "funcnet.gates.add", "(3,)", "(4,)"):
        jax.jit(gates.add)(jnp.ones(3), jnp.ones(4))
    with raises(ValueError, "softmax_cross_entropy_with_integer_labels", "(5,)", "(4, 3)"):
        jax.jit(losses.softmax_cross_entropy_with_integer_labels)(jnp.ones((4, 3)), jnp.zeros(5, jnp.int32))


@pytest.mark.parametrize("op", [gates.add, gates.multiply, gates.maximum])
def test_elementwise_gates_reject_shapes_that_do_not_broadcast(op):
    with raises(ValueError, f"funcnet.gates.{op.__name__}", "(2, 3)", "(4,)"):
        op(jnp.ones((2, 3)), jnp.ones(4))


def test_gates_promote_integer_arrays_and_reject_strings():
    assert gates.multiply(jnp.ones(3), jnp.arange(3)).dtype == jnp.multiply(jnp.ones(3), jnp.arange(3)).dtype
    with raises(TypeError, "funcnet.gates.multiply", "`y`", "str"):
        gates.multiply(jnp.ones(3), "abc")


def test_matmul_shapes():
    with raises(ValueError, "funcnet.gates.matmul", "a(3, 4)", "b(5, 2)"):
        gates.matmul(jnp.ones((3, 4)), jnp.ones((5, 2)))
    with raises(ValueError, "funcnet.gates.matmul", "at least 1 dimension"):
        gates.matmul(jnp.float32(1.0), jnp.ones(3))


def test_affine_shapes():
    with raises(ValueError, "funcnet.gates.affine", "x(8, 3)", "w(4, 2)"):
        gates.affine(jnp.ones((8, 3)), jnp.ones((4, 2)), jnp.ones(2))
    with raises(ValueError, "funcnet.gates.affine", "`b`", "(2,)", "(3,)"):
        gates.affine(jnp.ones((8, 4)), jnp.ones((4, 2)), jnp.ones(3))
    with raises(ValueError, "funcnet.gates.affine", "`w` must be 2-D", "(4,)"):
        gates.affine(jnp.ones((8, 4)), jnp.ones(4), jnp.ones(1))


@pytest.mark.parametrize("alpha_shape", [(3,), (2, 3, 4), (5, 1)])
def test_prelu_alpha_must_broadcast_to_x(alpha_shape):
    with raises(ValueError, "funcnet.nn.prelu", f"{alpha_shape}", "(3, 4)", "alpha"):
        nn.prelu(jnp.ones((3, 4)), jnp.ones(alpha_shape))


def test_hyperparameters_must_be_numbers():
    with raises(TypeError, "funcnet.nn.elu", "alpha", "str"):
        nn.elu(jnp.ones(3), "big")
    with raises(TypeError, "funcnet.nn.leaky_relu", "negative_slope", "str"):
        nn.leaky_relu(jnp.ones(3), "big")


def test_softmax_axis_out_of_range():
    with raises(ValueError, "funcnet.nn.softmax", "axis 2", "2 dimensions"):
        nn.softmax(jnp.ones((2, 3)), axis=2)


@pytest.mark.parametrize(
    "op",
    [losses.softmax_cross_entropy, losses.sigmoid_binary_cross_entropy, losses.binary_cross_entropy,
     losses.squared_error, losses.l2_loss],
)
def test_losses_reject_mismatched_shapes(op):
    logits = jnp.full((4, 3), 0.5)
    with raises(ValueError, f"funcnet.losses.{op.__name__}", "(4, 3)", "(5, 3)"):
        op(logits, jnp.full((5, 3), 0.5))


@pytest.mark.parametrize("op", [losses.softmax_cross_entropy_with_integer_labels, losses.multiclass_svm_loss])
def test_integer_label_losses(op):
    logits = jnp.zeros((4, 3))
    name = f"funcnet.losses.{op.__name__}"
    with raises(ValueError, name, "(4, 1)", "(4, 3)", "(4,)"):
        op(logits, jnp.zeros((4, 1), jnp.int32))
    with raises(ValueError, name, "[0, 3)", "from 0 to 3"):
        op(logits, jnp.array([0, 1, 2, 3]))
    with raises(ValueError, name, "from -1 to 2"):
        op(logits, jnp.array([0, -1, 2, 2]))
    with raises(TypeError, name, "labels", "integer", "float32[4]"):
        op(logits, jnp.zeros(4, f32))
    # integer logits are promoted, as in optax
    np.testing.assert_allclose(op(jnp.zeros((4, 3), jnp.int32), jnp.zeros(4, jnp.int32)),
                               op(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32)))


def test_out_of_range_labels_under_jit_give_nan_not_garbage():
    out = jax.jit(losses.softmax_cross_entropy_with_integer_labels)(jnp.zeros((2, 3)), jnp.array([1, 7]))
    assert not bool(jnp.isnan(out[0])) and bool(jnp.isnan(out[1]))


@pytest.mark.parametrize("op", [losses.softmax_cross_entropy_with_integer_labels, losses.multiclass_svm_loss])
def test_out_of_range_labels_under_jit_give_value_and_gradient_that_agree(op):
    """Labels 7 and -1 (traced, so not range-checked): NaN value and NaN gradient row, no wrap-around."""
    logits = jnp.array([[0.0, 1.0, 2.0], [0.5, -1.0, 0.0], [1.0, 1.0, -2.0]])
    labels = jnp.array([1, 7, -1])
    value = jax.jit(op)(logits, labels)
    g = jax.jit(jax.grad(lambda z, y: op(z, y).sum()))(logits, labels)
    assert bool(jnp.all(jnp.isfinite(value[0]))) and bool(jnp.all(jnp.isfinite(g[0])))
    assert bool(jnp.all(jnp.isnan(value[1:]))) and bool(jnp.all(jnp.isnan(g[1:])))
    # the valid row is exactly the twin's
    want = jax.grad(lambda z: getattr(funcnet.reference.losses, op.__name__)(z, labels[:1]).sum())(logits[:1])
    np.testing.assert_allclose(g[:1], want, rtol=1e-6)


def test_stable_value_is_the_same_plain_and_under_value_and_grad():
    logits, labels = jnp.array([[1e4, 1e4, -1e4]], jnp.float32), jnp.array([0])
    f = losses.softmax_cross_entropy_with_integer_labels
    plain = f(logits, labels)
    with_grad = jax.value_and_grad(lambda z: f(z, labels).sum())(logits)[0]
    assert float(plain[0]) == float(with_grad) == pytest.approx(np.log(2), rel=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_integer_label_gradient_along_any_class_axis(axis):
    rng = np.random.default_rng(axis % 3)
    logits = jnp.asarray(rng.standard_normal((4, 5, 6)))
    shape = list(logits.shape)
    classes = shape.pop(axis)
    labels = jnp.asarray(rng.integers(0, classes, shape))
    ct = jnp.asarray(rng.standard_normal(shape))
    grads = [jax.grad(lambda z, ns=ns: (ns.losses.softmax_cross_entropy_with_integer_labels(z, labels, axis) * ct)
                      .sum())(logits) for ns in (funcnet, funcnet.reference)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_integer_labels_get_no_gradient_and_float_labels_do():
    logits = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="integer"):
        jax.grad(lambda l: losses.softmax_cross_entropy_with_integer_labels(logits, l).sum())(jnp.array([0, 1]))
    g = jax.grad(lambda t: losses.softmax_cross_entropy(logits, t).sum())(jnp.eye(3)[:2])
    assert g.shape == (2, 3)


# ------------------------------------------------------------ issue 13: silent wrong results and tracebacks
import importlib.util  # noqa: E402

from funcnet import data, layers, train  # noqa: E402
from funcnet.apps.bench import suite  # noqa: E402
from funcnet.gradcheck import check_gradients  # noqa: E402


@pytest.fixture(scope="module")
def xor_fit():
    ds = data.load("xor")
    net = layers.mlp([2, 4, 2])
    return net, net.init(jax.random.key(0))[1], ds


def _with(ds, split="train", x=None, y=None):
    s = getattr(ds, split)
    return ds._replace(**{split: data.Split(s.x if x is None else x, s.y if y is None else y)})


def _nan_row(x):
    x = np.array(x, copy=True)
    x[3, 1] = np.nan
    return x


FIT_CASES = [  # (fit keyword arguments, or a function of the dataset for `data`; error; fragments)
    ({"epochs": -3}, ValueError, ["fit", "epochs", "-3"]),
    ({"epochs": 0}, ValueError, ["fit", "epochs", "got 0"]),
    ({"lam": -1.0}, ValueError, ["fit", "lam", "-1.0"]),
    ({"lam": float("nan")}, ValueError, ["fit", "lam", "nan"]),
    ({"patience": -1}, ValueError, ["fit", "patience", "-1"]),
    ({"patience": 0}, ValueError, ["fit", "patience", "got 0"]),
    ({"seed": -1}, ValueError, ["fit", "seed", "-1"]),
    ({"seed": 2**32 + 1}, ValueError, ["fit", "seed", "4294967297", "32 bits"]),  # else the same run as seed 1
    ({"batch_size": 2.5}, TypeError, ["fit", "batch_size", "2.5"]),
    ({"data": lambda ds: (ds.train.x, ds.train.y)}, TypeError, ["fit", "Dataset", "tuple", "funcnet.data.load"]),
    ({"data": lambda ds: _with(ds, y=ds.train.y + 1)}, ValueError,
     ["fit", "training labels", "[0, 2)", "2 outputs", "from 1 to 2"]),
    ({"data": lambda ds: _with(ds, "val", y=-ds.val.y)}, ValueError, ["fit", "validation labels", "from -1 to 0"]),
    ({"data": lambda ds: _with(ds, x=_nan_row(ds.train.x))}, ValueError,
     ["fit", "training inputs", "1 NaN or infinite", "row 3"]),
    ({"loss": lambda out, y: "abc"}, TypeError, ["the loss <lambda> returned 'abc'", "float array"]),  # traceback
]


@pytest.mark.parametrize("kwargs, exc, fragments", FIT_CASES, ids=[str(sorted(c[0])) + str(i)
                                                                    for i, c in enumerate(FIT_CASES)])
def test_fit_rejects_bad_arguments_before_training(xor_fit, kwargs, exc, fragments):
    net, params, ds = xor_fit
    kwargs = dict(kwargs)
    given = kwargs.pop("data", None)
    with raises(exc, *fragments):
        train.fit(net, params, ds if given is None else given(ds), epochs=kwargs.pop("epochs", 1), progress=False,
                  **kwargs)


def test_a_diverging_fit_lists_the_likely_causes(xor_fit):
    import optax

    net, params, ds = xor_fit
    with raises(FloatingPointError, "fit: the training loss became", "likely causes", "learning rate", "inputs"):
        train.fit(net, params, ds, optimizer=optax.sgd(1e38), epochs=3, progress=False)


_K = jax.random.key(0)
_P16 = layers.mlp([4, 16, 3]).init(_K)[1]
_P8 = layers.mlp([4, 8, 3]).init(_K)[1]
LAYER_CASES = [  # (a call that must fail, error, fragments)
    (lambda: layers.mlp([4, 8, 3]).apply(_P16, jnp.ones((2, 4))), ValueError,
     ["params['dense_0']", "Dense(8)", "'w'", "(4, 16)", "(4, 8)"]),
    (lambda: jax.jit(layers.mlp([4, 8, 3]).apply)(_P16, jnp.ones((2, 4))), ValueError,
     ["params['dense_0']", "(4, 16)", "(4, 8)"]),  # at trace time
    (lambda: layers.mlp([4, 8, 3]).apply({"dense_1": _P8["dense_1"]}, jnp.ones((2, 4))), ValueError,
     ["params['dense_0']", "Dense(8)", "missing parameter 'w'"]),
    (lambda: layers.mlp([4, 8, 3]).apply({**_P8, "dense_1": {"w": _P8["dense_1"]["w"]}}, jnp.ones((2, 4))),
     ValueError, ["params['dense_1']", "Dense(3)", "missing parameter 'b'"]),
    (lambda: layers.mlp([4, 8, 3]).apply({**_P8, "dense_2": _P8["dense_1"]}, jnp.ones((2, 4))), ValueError,
     ["unexpected parameter entry 'dense_2'"]),
    (lambda: layers.branches(layers.Dense(3)).apply({"branch_0": {"w": jnp.ones((2, 3))}}, (jnp.ones((1, 2)),)),
     ValueError, ["params['branch_0']", "Dense(3)", "missing parameter 'b'"]),
    (lambda: layers.serial(layers.Dense(3)).init(_K), ValueError, ["serial(Dense(3))", "input shape", "(-1, 4)"]),
    (lambda: layers.Dense(3).init(_K), ValueError, ["Dense(3)", "input shape"]),
    (lambda: layers.serial(layers.Dense(3)).init(_K, 4), ValueError, ["serial(Dense(3))", "input_shape", "got 4"]),
]


@pytest.mark.parametrize("call, exc, fragments", LAYER_CASES, ids=[str(i) for i in range(len(LAYER_CASES))])
def test_layers_check_parameters_and_input_shapes(call, exc, fragments):
    with raises(exc, *fragments):
        call()


def test_a_traced_z_loss_of_the_fused_head_is_refused_at_trace_time():
    with raises(TypeError, "linear_softmax_cross_entropy", "`z_loss`", "traced", "static_argnames"):  # ConcretizationError
        jax.jit(lambda z: losses.linear_softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.array([0, 3]),
                                                              z_loss=z))(0.1)


def test_check_gradients_refuses_to_pass_with_nothing_checked():
    with raises(ValueError, "check_gradients", "args[0]", "no array leaves"):
        check_gradients(lambda p, x: jnp.sum(x), {}, jnp.ones(3))


BCE_CASES = [  # (probs, labels, fragments)
    ([0.2, 1.5], [0.0, 1.0], ["`probs`", "[0, 1]", "1.5"]),
    ([-0.1, 0.5], [0.0, 1.0], ["`probs`", "-0.1"]),
    ([0.2, 0.5], [0, 2], ["`labels`", "[0, 1]", "2"]),
    ([0.2, 0.5], [0.0, -1.0], ["`labels`", "-1"]),
]


@pytest.mark.parametrize("probs, labels, fragments", BCE_CASES)
def test_binary_cross_entropy_checks_concrete_values_and_leaves_traced_ones_to_the_caller(probs, labels, fragments):
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    with raises(ValueError, "funcnet.losses.binary_cross_entropy", *fragments):
        losses.binary_cross_entropy(probs, labels)
    jax.jit(losses.binary_cross_entropy)(probs, labels)  # traced: not checked (documented)


_QUIET = {"memory": False, "activations_sweep": False, "scan": False, "roofline": False, "log": lambda m: None}
BENCH_CASES = [  # (bench.run arguments, error, fragments)
    ({"steps": 0}, ValueError, ["bench.run", "steps", "got 0"]),
    ({"steps": -3}, ValueError, ["bench.run", "steps", "-3"]),
    ({"rounds": 0}, ValueError, ["bench.run", "rounds", "got 0"]),
    ({"scaling_devices": -1}, ValueError, ["bench.run", "scaling_devices", "-1"]),
    ({"configs": ["huge"]}, ValueError, ["bench.run", "unknown configuration 'huge'"]),
    ({"frameworks": ()}, ValueError, ["bench.run", "frameworks is empty"]),
]
BENCH_CASES += [({"configs": ["small"], "frameworks": (f,)}, ImportError, [f, p, "pip install '.[bench]'"])
                for f, p in {"flax_nnx": "flax", "equinox": "equinox", "pytorch": "torch"}.items()
                if importlib.util.find_spec(p) is None]  # a peer that is not installed


@pytest.mark.parametrize("kwargs, exc, fragments", BENCH_CASES, ids=[str(c[0]) for c in BENCH_CASES])
def test_bench_run_rejects_bad_arguments_before_measuring(kwargs, exc, fragments):
    kwargs = {"configs": [], "frameworks": ("funcnet",), "scaling_devices": 0, **_QUIET, **kwargs}
    with raises(exc, *fragments):
        suite.run(**kwargs)
