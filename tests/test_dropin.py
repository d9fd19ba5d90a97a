"""funcnet as a drop-in for jax.nn and optax.losses, compared with them directly.

Signature (parameter names, kinds, defaults), values and gradients at the edge
cases a researcher meets: integer inputs, ±inf and NaN, masks (including empty
ones), tuple and None axes, traced and array-valued hyper-parameters (with their
gradients), broadcast labels.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet
from funcnet import losses, nn, reference
from funcnet.registry import OPS
from helpers import assert_trees_close

NAMESAKES = list({spec.fn: spec for spec in OPS if spec.upstream is not None}.values())


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("spec", NAMESAKES, ids=[s.fn.__name__ for s in NAMESAKES])
def test_same_signature_as_the_namesake(spec):
    ours, theirs = _params(spec.fn), _params(spec.upstream)
    # funcnet's own parameters (the attention's block sizes) may only follow the namesake's, keyword-only,
    # with defaults, and stated in `differs`: every call of the namesake is a call of funcnet's
    ours, own = ours[:len(theirs)], ours[len(theirs):]
    assert [n for n, _, _ in ours] == [n for n, _, _ in theirs], spec.qualname
    assert [d for _, _, d in ours] == [d for _, _, d in theirs], spec.qualname
    for name, kind, default in own:
        assert kind == inspect.Parameter.KEYWORD_ONLY and default is not inspect.Parameter.empty, (spec.qualname, name)
        assert f"`{name}`" in spec.fn.declaration.differs, (spec.qualname, name)


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **{"rtol": 1e-6, "atol": 1e-7, **kw})


# prelu takes a slope array; glu needs an even axis (its own test below); one_hot is an encoding, not an op;
# dot_product_attention: ATTENTION_CASES below
# layer_norm and rms_norm have no jax.nn namesake (compared with Flax's formulas in test_norms.py)
UNARY = [n for n in nn.__all__ if n not in ("prelu", "glu", "one_hot", "dot_product_attention") and hasattr(jax.nn, n)]
EDGES = jnp.array([-jnp.inf, -1e30, -3.0, -0.0, 0.0, 2.5, 1e30, jnp.inf, jnp.nan])


#: funcnet's value at -inf where jax.nn's is NaN (the limit), stated in the op's `differs`
LIMIT_WHERE_JAX_IS_NAN = {"squareplus": 0.0}


@pytest.mark.parametrize("name", UNARY)
def test_activation_values_and_gradients_at_edges(name):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    axis = {"axis": 0} if "softmax" in name else {}
    finite = EDGES[:-1] if "softmax" in name else EDGES  # one NaN poisons a whole softmax
    mid = jnp.array([-3.0, -0.5, 0.5, 2.0, 20.0])

    def finite_sum_grad(f):
        return jax.grad(lambda x: jnp.sum(jnp.where(jnp.isfinite(f(x, **axis)), f(x, **axis), 0.0)))

    got, want, g_ours, g_theirs = jax.jit(lambda x, mid: (ours(x, **axis), theirs(x, **axis), finite_sum_grad(ours)(
        mid), finite_sum_grad(theirs)(mid)))(finite, mid)  # one program
    if name in LIMIT_WHERE_JAX_IS_NAN:  # a documented difference: funcnet gives the limit where jax.nn gives NaN
        assert "NaN at -inf" in ours.declaration.differs, name
        at = np.asarray(finite) == -np.inf
        assert np.all(np.isnan(np.asarray(want)[at]))
        np.testing.assert_array_equal(np.asarray(got)[at], LIMIT_WHERE_JAX_IS_NAN[name])
        got, want = np.asarray(got)[~at], np.asarray(want)[~at]
    close(got, want, equal_nan=True)
    close(g_ours, g_theirs)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_leaky_relu_signed_zero_convention(dtype):
    """Tiny negative x, whose output underflows to -0.0, gets negative_slope, as in jax.nn; -0.0 itself
    does too (the documented difference: jax.nn gives 1 there), and +0 gets 1 as in jax.nn."""
    tiny = float(jnp.finfo(dtype).tiny)
    x = jnp.array([-tiny, -3 * tiny, -0.0, 0.0, tiny], dtype)
    assert np.all(np.signbit(np.asarray(jax.jit(nn.leaky_relu)(x))[:3]))  # the output cannot tell them apart
    for f in (lambda x: nn.leaky_relu(x), lambda x: nn.leaky_relu(x, jnp.asarray(0.01, dtype))):
        got = jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(x)
        tangent = jax.jit(lambda x: jax.jvp(f, (x,), (jnp.ones_like(x),))[1])(x)
        want = jax.grad(lambda x: jnp.sum(jax.nn.leaky_relu(x)))(x)
        close(got, [0.01, 0.01, 0.01, 1.0, 1.0])
        close(tangent, got)
        close(np.delete(np.asarray(got), 2), np.delete(np.asarray(want), 2))
        assert want[2] == 1.0
    assert "-0.0 counts as negative" in nn.leaky_relu.declaration.differs


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("x", [jnp.arange(-2, 3), 0, 1, np.array([1, 2])])
def test_integer_and_python_inputs_as_jax_nn(name, x):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    if ("softmax" in name or name == "standardize") and np.ndim(x) == 0:  # they reduce over axis -1
        x = np.array([x])
    try:
        want = theirs(x)
    except TypeError:  # jax.nn.sigmoid/silu raise for integers; funcnet promotes (documented)
        want = theirs(jnp.asarray(x, jnp.result_type(float)))
        assert "promoted" in (ours.__doc__ or ""), name
    got = ours(x)
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    close(got, want)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None, (1, 2)])
def test_softmax_axes_and_masks(name, axis):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 4)))
    masks = [None, jnp.asarray(rng.random((2, 3, 4)) > 0.3), jnp.asarray(rng.random((3, 4)) > 0.3)]
    weights = [jnp.asarray(rng.normal(size=x.shape)) for _ in masks]

    @jax.jit
    def everything(x):  # value, gradient and tangent of both, for each mask: one program
        out = []
        for where, w in zip(masks, weights):
            keep = jnp.ones_like(x, bool) if where is None else jnp.broadcast_to(where, x.shape)
            for f in (ours, theirs):
                loss = lambda x, f=f: jnp.sum(jnp.where(keep, f(x, axis=axis, where=where) * w, 0.0))  # noqa: E731
                out.append((f(x, axis=axis, where=where), jax.grad(loss)(x), jax.jvp(loss, (x,), (w,))[1]))
        return out

    results = everything(x)
    for (y, g, t), (y_j, g_j, t_j) in zip(results[::2], results[1::2]):
        close(y, y_j, equal_nan=True)
        close(g, g_j, equal_nan=True)
        close(t, t_j)


def test_empty_mask_matches_jax_nn():
    x = jnp.array([1.0, 2.0])
    none = jnp.zeros(2, bool)
    close(nn.softmax(x, where=none), jax.nn.softmax(x, where=none), equal_nan=True)
    close(nn.log_softmax(x, where=none), jax.nn.log_softmax(x, where=none), equal_nan=True)


@pytest.mark.parametrize("name, kw", [("leaky_relu", "negative_slope"), ("elu", "alpha")])
@pytest.mark.parametrize("value", [0.2, jnp.float64(0.2), jnp.array([0.1, 0.2, 0.3, 0.4])])
def test_traced_and_array_hyperparameters_with_gradients(name, kw, value):
    ours, theirs = getattr(nn, name), getattr(jax.nn, name)
    x = jnp.array([-2.0, -0.5, 0.5, 3.0])

    def total(f, v):
        return jnp.sum(f(x, **{kw: v}) * jnp.arange(1.0, 5.0))

    close(jax.jit(lambda v: ours(x, **{kw: v}))(value), theirs(x, **{kw: value}))
    if not isinstance(value, float):
        close(jax.grad(lambda v: total(ours, v))(value), jax.grad(lambda v: total(theirs, v))(value))
        close(jax.jvp(lambda v: total(ours, v), (value,), (jnp.ones_like(value),))[1],
              jax.jvp(lambda v: total(theirs, v), (value,), (jnp.ones_like(value),))[1])
    close(jax.grad(lambda x: jnp.sum(ours(x, **{kw: value})))(x), jax.grad(lambda x: jnp.sum(theirs(x, **{kw: value})))(x))


# ------------------------------------------------------------------ losses vs optax.losses
# funcnet.losses against optax.losses directly: the value, the gradient of a random cotangent
# (reverse mode) and the tangent along a random direction (forward mode), case by case from the
# table below. All cases are traced into ONE jit, compiled once (eager dispatch and one compile per
# case took about half a minute for this table); a case that raises while tracing fails alone.
# Eager values are checked on a few cases. Where funcnet deliberately differs, its docstring says
# so: those tests assert funcnet's documented behaviour and that the docstring (and the
# declaration's `differs`) mentions it.

_RNG = np.random.default_rng(7)
X = jnp.asarray(_RNG.normal(size=(4, 3)))
T = jnp.asarray(_RNG.uniform(size=(4, 3)))
X3 = jnp.asarray(_RNG.normal(size=(2, 3, 4)))
T3 = jnp.asarray(_RNG.uniform(size=(2, 3, 4)))
LAB = jnp.array([0, 1, 2, 1])
LAB3 = {0: jnp.asarray(_RNG.integers(0, 2, (3, 4))), 1: jnp.asarray(_RNG.integers(0, 3, (2, 4))),
        2: jnp.asarray(_RNG.integers(0, 4, (2, 3)))}
LAB3_FLAT = {(1, 2): jnp.asarray(_RNG.integers(0, 12, (2,))), (2, 1): jnp.asarray(_RNG.integers(0, 12, (2,))),
             (0, 2): jnp.asarray(_RNG.integers(0, 8, (3,))), (-1, 0): jnp.asarray(_RNG.integers(0, 8, (3,)))}
MASK = jnp.array([[True, False, True], [True, True, False], [False, False, False], [True, True, True]])  # row 2 empty
ROWS = jnp.array([True, False, True, True])  # batch-shape mask: example 1 left out
NO_ROW = jnp.zeros(4, bool)
NOTHING = jnp.zeros((4, 3), bool)
MASK3 = jnp.asarray(_RNG.random((2, 3, 4)) > 0.3).at[0, 0].set(False)  # one empty class row along axis -1
INF = jnp.inf
EMB = jnp.asarray(_RNG.normal(size=(6, 3)))
GROUPS = jnp.array([0, 1, 0, 2, 1, 2])
SCE, INT, SBCE = "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels", "sigmoid_binary_cross_entropy"
XS = jnp.asarray(_RNG.normal(size=(2, 3, 4, 3)))  # segmentation: batch, H, W, classes
TS = jax.nn.one_hot(jnp.asarray(_RNG.integers(0, 3, (2, 3, 4))), 3, dtype=jnp.float64)
DICE = "dice_loss"
RANK = "ranking_softmax_loss"
CTC, CTC_PROBS = "ctc_loss", "ctc_loss_with_forward_probs"


def _ctc(frames, classes, labels, logit_lengths, label_lengths):
    """CTC arguments: logits [B, T, K], right-padded frames and labels (paddings 1.0 past each length)."""
    labels = jnp.asarray(labels, jnp.int32)
    pads = lambda lengths, size: (np.arange(size)[None] >= np.asarray(lengths)[:, None]).astype(float)  # noqa: E731
    logits = jnp.asarray(_RNG.normal(0.0, 1.5, (labels.shape[0], frames, classes)))
    return logits, jnp.asarray(pads(logit_lengths, frames)), labels, jnp.asarray(pads(label_lengths, labels.shape[1]))


# repeats (1 1, 2 2 2), a padded frame, labels of every length; labels equal to blank_id 2 (as optax allows)
CTC_ARGS = _ctc(8, 5, [[1, 1, 2, 3], [2, 2, 2, 4], [3, 1, 4, 1], [4, 3, 0, 0]], [8, 7, 6, 3], [4, 3, 2, 1])
CTC_EMPTY = _ctc(5, 4, [[1, 2], [3, 3], [2, 1]], [5, 0, 4], [0, 0, 2])  # no labels; a row of padded frames
# infeasible: 4 labels in 3 frames; 1 1 1 needs 5 frames, has 4; 1 2 3 in exactly 3 frames (one alignment)
CTC_TIGHT = _ctc(4, 4, [[1, 2, 3, 1], [1, 1, 1, 0], [1, 2, 3, 0]], [3, 4, 3], [4, 3, 3])
CTC_OUT_OF_RANGE = _ctc(5, 4, [[1, 4, 2], [-1, 3, 3]], [5, 5], [3, 3])  # optax's one-hot reads 0 there

# (id, loss name, keywords, args, argnums differentiated)
LOSS_CASES = [
    # sigmoid BCE: labels broadcast against the logits, both ways; integer labels; mixed precision; ±inf
    ("sbce-bcast-labels-f32", SBCE, {}, (X.astype(jnp.float32), T[0]), (0, 1)),
    ("sbce-bcast-logits", SBCE, {}, (X[0], T), (0, 1)),
    ("sbce-int-labels", SBCE, {}, (X, (T > 0.5).astype(int)), (0,)),
    ("sbce-inf", SBCE, {}, (jnp.array([INF, -INF, INF, -INF, INF, 3.0]), jnp.array([1.0, 0, 0, 1, 0.5, 0.5])), (0, 1)),
    # softmax CE: broadcasting both ways, one-hot integer labels, axes (int, tuple, None)
    ("sce-bcast-labels", SCE, {}, (X, T[0]), (0, 1)),
    ("sce-bcast-logits", SCE, {}, (X[0], T), (0, 1)),
    ("sce-bcast-logits-axis0", SCE, {"axis": 0}, (X[0], T), (0, 1)),
    ("sce-bcast-logits-axisNone", SCE, {"axis": None}, (X[0], T), (0, 1)),
    ("sce-onehot-int-f32", SCE, {}, (X.astype(jnp.float32), jax.nn.one_hot(LAB, 3, dtype=int)), (0,)),
    ("sce-axisNone", SCE, {"axis": None}, (X3, T3), (0, 1)),
    ("sce-axis(2,0)", SCE, {"axis": (2, 0)}, (X3, T3), (0, 1)),
    # softmax CE with masks (the logits' gradient; the labels' one differs, see the test further down)
    ("sce-where", SCE, {"where": MASK}, (X, T), (0,)),
    ("sce-where-rows", SCE, {"where": ROWS}, (X, T), (0,)),
    ("sce-where-empty", SCE, {"where": NOTHING}, (X, T), (0,)),
    ("sce-where--inf-masked", SCE, {"where": MASK}, (jnp.where(MASK, X, -INF), T), (0,)),
    ("sce-where-axisNone", SCE, {"axis": None, "where": MASK3}, (X3, T3), (0,)),
    ("sce-where-axis(0,2)", SCE, {"axis": (0, 2), "where": MASK3}, (X3, T3), (0,)),
    ("sce-inf", SCE, {}, (jnp.array([[0.0, -INF, 1.0], [0.0, INF, 1.0]]), jnp.eye(3)[:2]), (0, 1)),
    # integer labels: broadcasting, every axis, tuple axes (a flat index, order kept), masks, ±inf
    ("int-bcast-labels", INT, {}, (X, jnp.array([2])), (0,)),
    ("int-bcast-logits", INT, {}, (X[:1], LAB), (0,)),
    ("int-f32-uint8", INT, {}, (X.astype(jnp.float32), LAB.astype(jnp.uint8)), (0,)),
    ("int-axis0", INT, {"axis": 0}, (X3, LAB3[0]), (0,)),
    ("int-axis-2", INT, {"axis": -2}, (X3, LAB3[1]), (0,)),
    ("int-axis(2,1)", INT, {"axis": (2, 1)}, (X3, LAB3_FLAT[2, 1]), (0,)),
    ("int-axis(-1,0)-where", INT, {"axis": (-1, 0), "where": MASK3}, (X3, LAB3_FLAT[-1, 0]), (0,)),
    ("int-axis(0,2)-rows", INT, {"axis": (0, 2), "where": jnp.array([True, False, True])},
     (X3, LAB3_FLAT[0, 2]), (0,)),
    ("int-where", INT, {"where": MASK}, (X, LAB), (0,)),
    ("int-where-rows", INT, {"where": ROWS}, (X, LAB), (0,)),
    ("int-where-label-masked", INT, {"where": MASK}, (X, jnp.array([1, 2, 0, 0])), (0,)),
    ("int-where-no-row", INT, {"where": NO_ROW}, (X, LAB), (0,)),
    ("int-where--inf-masked", INT, {"where": MASK}, (jnp.where(MASK, X, -INF), LAB), (0,)),
    ("int-inf", INT, {}, (jnp.array([[0.0, -INF, 1.0], [0.0, INF, 1.0], [0.0, INF, 1.0]]), jnp.array([0, 1, 0])),
     (0,)),
    # squared error / l2: with targets, targets=None, integer targets, mixed precision
    ("sq-no-targets", "squared_error", {}, (X,), (0,)),
    ("sq-int-targets", "squared_error", {}, (X, 2 * LAB[:, None] * jnp.ones((1, 3), int)), (0,)),
    ("sq-f32", "squared_error", {}, (X.astype(jnp.float32), T), (0, 1)),
    ("l2", "l2_loss", {}, (X, T), (0, 1)),
    ("l2-no-targets", "l2_loss", {}, (X3,), (0,)),
    # regression: broadcasting (optax does not check shapes here), targets=None, delta, large errors
    ("huber-bcast", "huber_loss", {}, (X3, T3[0]), (0, 1)),
    ("huber-delta", "huber_loss", {"delta": 0.3}, (3 * X, T), (0, 1)),
    ("huber-no-targets-f32", "huber_loss", {}, (1e4 * X.astype(jnp.float32),), (0,)),
    ("huber-at-delta", "huber_loss", {}, (jnp.array([1.0, -1.0, 0.0, 2.0]), jnp.array([0.0, 0.0, 0.0, 1.0])), (0, 1)),
    ("log_cosh-bcast", "log_cosh", {}, (X, T[0]), (0, 1)),
    ("log_cosh-large", "log_cosh", {}, (jnp.array([1e4, -1e4, 800.0, -3.0]),), (0,)),
    # margin losses: ±1 integer targets, soft targets, the hinge itself (optax's jnp.maximum splits the tie)
    ("hinge-int-targets", "hinge_loss", {}, (X, 2 * (T > 0.5).astype(int) - 1), (0,)),
    ("hinge-bcast-soft", "hinge_loss", {}, (X, T[0]), (0, 1)),
    ("hinge-at-hinge", "hinge_loss", {}, (jnp.array([1.0, -0.5, 2.0]), jnp.array([1.0, -2.0, 0.5])), (0, 1)),
    ("perceptron", "perceptron_loss", {}, (X, 2 * T - 1), (0, 1)),
    ("perceptron-at-zero", "perceptron_loss", {}, (jnp.array([0.0, 1.0, -1.0]), jnp.array([1.0, 0.0, 1.0])), (0, 1)),
    ("sparsemax-bin", "sparsemax_loss", {}, (3 * X, (T > 0.5).astype(jnp.float64)), (0,)),
    ("sparsemax-bin-int", "sparsemax_loss", {}, (jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0]), jnp.array([0, 1, 1, 0, 1])),
     (0,)),
    ("focal", "sigmoid_focal_loss", {}, (3 * X, T), (0, 1)),
    ("focal-alpha-gamma", "sigmoid_focal_loss", {"alpha": 0.25, "gamma": 1.5}, (3 * X, T[0]), (0, 1)),
    ("focal-hard-f32", "sigmoid_focal_loss", {}, (jnp.array([-30.0, 30.0, -30.0, 30.0, 0.0], jnp.float32),
                                                 jnp.array([0.0, 1.0, 1.0, 0.0, 1.0], jnp.float32)), (0,)),
    # safe and poly cross-entropy
    ("safe-sce", "safe_softmax_cross_entropy", {}, (X, T), (0, 1)),
    ("safe-sce-bcast", "safe_softmax_cross_entropy", {}, (X3, T3[0, 0]), (0, 1)),
    ("safe-sce--inf-zero-label", "safe_softmax_cross_entropy", {},
     (jnp.array([[0.0, -INF, 1.0], [2.0, 1.0, -INF]]), jnp.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])), (0,)),
    ("poly", "poly_loss_cross_entropy", {}, (X, T), (0, 1)),
    ("poly-eps-axis0", "poly_loss_cross_entropy", {"epsilon": -0.5, "axis": 0}, (X3, T3), (0, 1)),
    ("poly-where", "poly_loss_cross_entropy", {"where": MASK}, (X, T), (0,)),
    ("poly-axisNone", "poly_loss_cross_entropy", {"axis": None}, (X3, T3), (0, 1)),
    # Crammer-Singer hinge, perceptron, sparsemax: ties share the gradient; sparsemax with tied scores
    ("mc-hinge", "multiclass_hinge_loss", {}, (X, LAB), (0,)),
    ("mc-hinge-tie", "multiclass_hinge_loss", {}, (jnp.array([[2.0, 0.0, 3.0], [1.0, 1.0, 1.0]]), jnp.array([2, 0])),
     (0,)),
    ("mc-perceptron", "multiclass_perceptron_loss", {}, (X, LAB), (0,)),
    ("mc-perceptron-tie", "multiclass_perceptron_loss", {}, (jnp.array([[3.0, 0.0, 3.0], [1.0, 2.0, 2.0]]),
                                                             jnp.array([2, 0])), (0,)),
    ("mc-sparsemax", "multiclass_sparsemax_loss", {}, (3 * X, LAB), (0,)),
    ("mc-sparsemax-ties", "multiclass_sparsemax_loss", {},
     (jnp.array([[1.0, 1.0, 1.0], [2.0, 2.0, -5.0], [1e4, 1e4, -1e4], [0.3, 0.2, 0.1]]), LAB), (0,)),
    # KL divergences: axes, masks, broadcasting, zero targets (finite log-predictions), log targets
    ("kl", "kl_divergence", {}, (jax.nn.log_softmax(X), jax.nn.softmax(X[::-1])), (0, 1)),
    ("kl-zero-targets", "kl_divergence", {}, (jax.nn.log_softmax(X), T * (T > 0.4)), (0,)),
    ("kl-axisNone-where", "kl_divergence", {"axis": None, "where": MASK3}, (jax.nn.log_softmax(X3), T3), (0, 1)),
    ("kl-axis(0,2)-bcast", "kl_divergence", {"axis": (0, 2)}, (jax.nn.log_softmax(X3), T3[0, 0]), (0, 1)),
    ("kl-log", "kl_divergence_with_log_targets", {}, (jax.nn.log_softmax(X), jnp.log(T)), (0, 1)),
    ("kl-log-where", "kl_divergence_with_log_targets", {"where": MASK}, (jax.nn.log_softmax(X), jnp.log(T)), (0, 1)),
    ("gen-kl", "generalized_kl_divergence", {}, (X, T), (0, 1)),
    ("gen-kl-axis0-where", "generalized_kl_divergence", {"axis": 0, "where": MASK}, (X, T), (0, 1)),
    ("convex-kl", "convex_kl_divergence", {}, (X, T), (0, 1)),
    # cosine: axes, masks, broadcasting, the clipped norm (|a|² < epsilon)
    ("cos-sim", "cosine_similarity", {}, (X, T), (0, 1)),
    ("cos-sim-bcast", "cosine_similarity", {}, (X3, T3[0, 0]), (0, 1)),
    ("cos-sim-axis0", "cosine_similarity", {"axis": 0}, (X, T), (0, 1)),
    ("cos-sim-where-axisNone", "cosine_similarity", {"axis": None, "where": MASK3}, (X3, T3), (0, 1)),
    ("cos-sim-clipped", "cosine_similarity", {"epsilon": 1.0}, (0.1 * X, T), (0, 1)),
    ("cos-dist", "cosine_distance", {"axis": (0, 2)}, (X3, T3), (0, 1)),
    # Dice: (batch, H, W, classes) with one-hot targets; Tversky weights, per-class losses without the background,
    # class weights promoting float32 logits, axes over the batch too, no spatial axes, saturated logits, smooth=0
    ("dice", DICE, {}, (XS, TS), (0, 1)),
    ("dice-tversky-none-bg", DICE, {"alpha": 0.3, "beta": 0.7, "reduction": "none", "ignore_background": True},
     (XS, TS), (0, 1)),
    ("dice-weights-sum-f32", DICE, {"class_weights": jnp.array([1.0, 2.0, 0.5]), "reduction": "sum"},
     (XS.astype(jnp.float32), TS), (0, 1)),
    ("dice-axis(0,1,2)", DICE, {"axis": (0, 1, 2)}, (XS, TS), (0, 1)),
    ("dice-no-spatial-axes", DICE, {}, (X, jax.nn.one_hot(LAB, 3)), (0, 1)),
    ("dice-saturated-smooth0", DICE, {"smooth": 0.0}, (1e4 * XS, TS), (0, 1)),
    # one channel: the sigmoid; a channel axis added to either side; boolean targets
    ("dice-sigmoid-expand-logits", DICE, {}, (XS[..., 0], TS[..., :1]), (0, 1)),
    ("dice-sigmoid-bool-targets", DICE, {"beta": 0.8}, (XS[..., :1], TS[..., 0] > 0.5), (0,)),
    ("bdice", "binary_dice_loss", {}, (XS[..., 0], TS[..., 1]), (0, 1)),
    ("bdice-channel-smooth", "binary_dice_loss", {"smooth": 0.25}, (XS[..., :1], TS[..., 1]), (0, 1)),
    # generalized Dice: the class weights from the targets' frequencies (their gradient too), a class absent
    ("gdice", "multiclass_generalized_dice_loss", {}, (XS, TS), (0, 1)),
    ("gdice-bg-soft", "multiclass_generalized_dice_loss", {"ignore_background": True}, (XS, 0.2 + 0.6 * TS), (0, 1)),
    ("gdice-absent-class", "multiclass_generalized_dice_loss", {}, (XS, TS.at[..., 2].set(0.0)), (0, 1)),
    # ranking softmax: each reduction, masks (an empty list), weights, a list with no positive label, integer
    # grades, broadcast labels, batch axes, optax's extreme scores
    ("rank", RANK, {}, (X, 2 * T), (0, 1)),
    ("rank-none", RANK, {"reduce_fn": None}, (X, 2 * T), (0, 1)),
    ("rank-sum", RANK, {"reduce_fn": jnp.sum}, (X, 2 * T), (0, 1)),
    ("rank-where", RANK, {"where": MASK}, (X, 2 * T), (0, 1)),
    ("rank-where-none", RANK, {"where": MASK, "reduce_fn": None}, (X, 2 * T), (0, 1)),
    ("rank-where-empty", RANK, {"where": NOTHING}, (X, 2 * T), (0, 1)),
    ("rank-where-rows", RANK, {"where": ROWS[:, None]}, (X, 2 * T), (0, 1)),
    ("rank-weights", RANK, {"weights": 2 * T[::-1]}, (X, 2 * T), (0, 1)),
    ("rank-where-weights-sum", RANK, {"where": MASK, "weights": 2 * T[::-1], "reduce_fn": jnp.sum}, (X, 2 * T),
     (0, 1)),
    ("rank-no-positive", RANK, {"reduce_fn": None}, (X, (2 * T).at[1].set(0.0)), (0, 1)),
    ("rank-int-labels-f32", RANK, {}, (X.astype(jnp.float32), (3 * T).astype(int)), (0,)),
    ("rank-bcast-labels", RANK, {"reduce_fn": None}, (X, T[0]), (0, 1)),
    ("rank-batch-where", RANK, {"where": MASK3, "reduce_fn": None}, (X3, T3), (0, 1)),
    ("rank-extreme-f32", RANK, {"reduce_fn": jnp.sum}, (jnp.array([0.0, -2.1e26, 3.4e37, 42.0], jnp.float32),
                                                       jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)), (0, 1)),
    # NT-Xent: label groups (pairs; a group of three and a row with no positive; one group: no negative; every
    # label distinct: no positive pair, a NaN value and a zero gradient), temperatures (a number; traced, with its
    # gradient), a zero embedding (the clipped norm), float labels
    ("ntxent-pairs", "ntxent", {}, (EMB, GROUPS), (0,)),
    ("ntxent-groups-f32", "ntxent", {}, (EMB.astype(jnp.float32), jnp.array([0, 0, 0, 1, 2, 2])), (0,)),
    ("ntxent-one-group", "ntxent", {}, (EMB, jnp.zeros(6, int)), (0,)),
    ("ntxent-all-distinct", "ntxent", {}, (EMB, jnp.arange(6)), (0,)),
    ("ntxent-temperature", "ntxent", {"temperature": 0.5}, (EMB, GROUPS), (0,)),
    ("ntxent-traced-temperature", "ntxent", {}, (EMB, GROUPS, jnp.float64(0.2)), (0, 2)),
    ("ntxent-zero-row", "ntxent", {}, (EMB.at[0].set(0.0), GROUPS), (0,)),
    ("ntxent-float-labels", "ntxent", {}, (EMB, jnp.array([1.0, 0.5, 1.0, 0.5, 2.0, 2.0])), (0,)),
    # triplet margin loss: norm degrees (optax's Σ d^q, no absolute value: odd q gives NaN rows), margins, eps,
    # axes, broadcasting, the hinge (optax's jnp.maximum splits the tie)
    ("triplet", "triplet_margin_loss", {}, (X, T, -X), (0, 1, 2)),
    ("triplet-f32", "triplet_margin_loss", {"margin": 2.0}, (X.astype(jnp.float32), T.astype(jnp.float32),
                                                           -X.astype(jnp.float32)), (0, 1, 2)),
    ("triplet-l1", "triplet_margin_loss", {"norm_degree": 1}, (X, T, -X), (0, 1, 2)),
    ("triplet-q3-nan-rows", "triplet_margin_loss", {"norm_degree": 3, "margin": 3.0}, (X, T, -X), (0, 1, 2)),
    ("triplet-q3", "triplet_margin_loss", {"norm_degree": 3, "margin": 3.0}, (X + 4, T, 2 * T), (0, 1, 2)),
    ("triplet-q1.5", "triplet_margin_loss", {"norm_degree": 1.5, "margin": 3.0}, (X + 4, T, 1 - T), (0, 1, 2)),
    ("triplet-eps0-margin", "triplet_margin_loss", {"eps": 0.0, "margin": 0.5}, (X, T, -X), (0, 1, 2)),
    ("triplet-margin-array", "triplet_margin_loss", {"margin": jnp.array([0.5, 1.0, 2.0, 4.0])}, (X, T, -X),
     (0, 1, 2)),
    ("triplet-axis0", "triplet_margin_loss", {"axis": 0, "margin": 2.0}, (X3, T3, -X3), (0, 1, 2)),
    ("triplet-axisNone", "triplet_margin_loss", {"axis": None, "margin": 9.0}, (X3, T3, -X3), (0, 1, 2)),
    ("triplet-bcast", "triplet_margin_loss", {"margin": 2.0}, (X3, T3[0], -X3[:, :1]), (0, 1, 2)),
    ("triplet-at-hinge", "triplet_margin_loss", {"eps": 0.0},
     (jnp.zeros((2, 2)), jnp.array([[0.0, 4.0], [1.0, 0.0]]), jnp.array([[5.0, 0.0], [0.0, 2.0]])), (0, 1, 2)),
    # CTC: repeats, padded frames and labels, blank_id, empty labels, infeasible and tight alignments, log ε
    ("ctc", CTC, {}, CTC_ARGS, (0,)),
    ("ctc-blank2", CTC, {"blank_id": 2}, CTC_ARGS, (0,)),
    ("ctc-empty-labels", CTC, {}, CTC_EMPTY, (0,)),
    ("ctc-infeasible", CTC, {}, CTC_TIGHT, (0,)),
    ("ctc-log-eps", CTC, {"log_epsilon": -3.0}, CTC_TIGHT, (0,)),
    ("ctc-out-of-range-labels", CTC, {}, CTC_OUT_OF_RANGE, (0,)),
    ("ctc-probs", CTC_PROBS, {}, CTC_ARGS, (0,)),
    ("ctc-probs-blank3-empty", CTC_PROBS, {"blank_id": 3}, CTC_EMPTY, (0,)),
    ("ctc-probs-infeasible", CTC_PROBS, {}, CTC_TIGHT, (0,)),
    ("ctc-probs-log-eps", CTC_PROBS, {"log_epsilon": -2.0}, CTC_ARGS, (0,)),
]
# the forward variables of unreachable states sit near -1e5 (log ε): their derivatives, differences of such
# numbers, keep about 1e-11 absolute in float64 (optax's autodiff and funcnet's rule alike), 1e-12 of the largest
ABSOLUTE = {"ctc-probs": 1e-10, "ctc-probs-blank3-empty": 1e-10, "ctc-probs-infeasible": 1e-10}
# optax is finite at these (value and gradient) despite an infinite logit: funcnet must be too
FINITE_DESPITE_INF = {"sce-where--inf-masked", "int-where--inf-masked", "safe-sce--inf-zero-label"}
# optax's forward mode is NaN here (a zero weight's tangent times -inf inside its rules); funcnet's tangent is
# finite, documented, and checked against its own gradient by ⟨ct, J t⟩ = ⟨Jᵀ ct, t⟩
OPTAX_TANGENT_NAN = {"safe-sce--inf-zero-label"}


def _loss(name, **kw):
    """funcnet's and optax's loss of that name with keywords bound, looked up at call time."""
    return (lambda *a: getattr(losses, name)(*a, **kw)), (lambda *a: getattr(optax.losses, name)(*a, **kw))


def _directions(case):
    """A cotangent for the output and a tangent per differentiated argument (random, fixed)."""
    _, name, kw, args, argnums = case
    out = jax.eval_shape(_loss(name, **kw)[1], *args)
    rng = np.random.default_rng(1)
    ct = jax.tree.map(lambda o: jnp.asarray(rng.normal(size=o.shape), o.dtype), out)  # a tuple: CTC's forward probs
    tangents = tuple(jnp.asarray(np.random.default_rng(2 + i).normal(size=np.shape(args[i])), args[i].dtype)
                     for i in argnums)
    return ct, tangents


def _value_grad_tangent(f, args, argnums, ct, tangents):
    """(value, gradients of ⟨ct, f⟩ in the argnums, tangent of f along ``tangents``), traceable."""
    def part(*diff):
        full = list(args)
        for i, a in zip(argnums, diff):
            full[i] = a
        return f(*full)

    primals = tuple(args[i] for i in argnums)
    def dot(*d):
        return sum(jnp.sum(o * c) for o, c in zip(jax.tree.leaves(part(*d)), jax.tree.leaves(ct)))

    grads = jax.grad(dot, argnums=tuple(range(len(argnums))))(*primals)
    return f(*args), grads, jax.jvp(part, primals, tangents)[1]


_RESULTS: dict = {}


def _results():
    """{(case id, "ours" | "optax"): (value, grads, tangent) or the exception tracing it raised}, computed once."""
    if "done" not in _RESULTS:
        inputs = {case[0]: (case[3], _directions(case)) for case in LOSS_CASES}

        def run(inputs):
            out = {}
            for case_id, name, kw, _, argnums in LOSS_CASES:
                args, (ct, tangents) = inputs[case_id]
                for side, f in zip(("ours", "optax"), _loss(name, **kw)):
                    try:
                        out[case_id, side] = _value_grad_tangent(f, args, argnums, ct, tangents)
                    except Exception as err:  # noqa: BLE001  (re-raised by that case's test)
                        _RESULTS[case_id, side] = err
            return out

        _RESULTS.update(jax.jit(run)(inputs))
        _RESULTS["done"] = True
    return _RESULTS


def _tol(args):
    low = any(getattr(a, "dtype", None) == jnp.float32 for a in args)
    return {"rtol": 2e-6, "atol": 1e-6} if low else {"rtol": 1e-10, "atol": 1e-12}


def _same(a, b, what, **tol):
    """Same shape and dtype, and close, NaN matching NaN and ±inf matching itself."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True,
                               err_msg=what, **{"rtol": 1e-10, "atol": 1e-12, **tol})


def _documents(name, *phrases):
    """The op's docstring has the 'Differs from its namesake' paragraph, and it and `differs` say each phrase."""
    fn = getattr(losses, name)
    doc, differs = fn.__doc__ or "", fn.declaration.differs
    assert "Differs from its namesake:" in doc, name
    tail = doc.split("Differs from its namesake:", 1)[1]
    for phrase in phrases:
        assert phrase in differs and phrase in tail, (name, phrase)


def test_loss_value_gradient_and_tangent_as_optax():
    """Every case of LOSS_CASES, from the one program of :func:`_results`; every failing case is reported."""
    failures = []
    for case in LOSS_CASES:
        try:
            _check_loss_case(case)
        except AssertionError as err:
            failures.append(f"{case[0]}: {str(err).strip().splitlines()[:4]}")
    assert not failures, "\n".join(failures)


def _check_loss_case(case):
    case_id, name, _, args, _ = case
    results = _results()
    got, want = results[case_id, "ours"], results[case_id, "optax"]
    for side in (got, want):
        if isinstance(side, Exception):
            raise side
    if case_id in OPTAX_TANGENT_NAN:
        _documents(name, "forward mode")
        assert np.all(np.isnan(want[2])) and np.all(np.isfinite(got[2])), case_id
        ct, tangents = _directions(case)
        np.testing.assert_allclose(float(jnp.sum(ct * got[2])),
                                   float(sum(jnp.sum(g * t) for g, t in zip(got[1], tangents))), rtol=1e-5)
        got, want = got[:2], want[:2]
    for what, a, b in zip(("value", "grad", "tangent"), got, want):
        leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(leaves_a) == len(leaves_b), (case_id, what)
        for i, (ai, bi) in enumerate(zip(leaves_a, leaves_b)):
            _same(ai, bi, f"{case_id}: {what} {i}", **{**_tol(args), **({"atol": ABSOLUTE[case_id]}
                                                                           if case_id in ABSOLUTE else {})})
    if case_id in FINITE_DESPITE_INF:
        assert all(np.isfinite(leaf).all() for part in got for leaf in jax.tree.leaves(part)), case_id


EAGER = ["sce-where-rows", "int-where-rows"]


@pytest.mark.parametrize("case_id", EAGER)
def test_loss_eager_value_as_optax(case_id):
    _, name, kw, args, _ = next(c for c in LOSS_CASES if c[0] == case_id)
    ours, theirs = _loss(name, **kw)
    _same(ours(*args), theirs(*args), case_id)


@pytest.mark.parametrize("name", ["squared_error", "l2_loss"])
def test_squared_losses_do_not_broadcast_as_optax(name):
    with pytest.raises(ValueError):
        getattr(optax.losses, name)(X, T[0])
    with pytest.raises(ValueError, match=f"funcnet.losses.{name}"):
        getattr(losses, name)(X, T[0])


@pytest.mark.parametrize("kw", [{"axis": None}, {"axis": None, "where": MASK}])
def test_integer_labels_reject_axis_none_as_optax(kw):
    with pytest.raises(ValueError):
        optax.losses.softmax_cross_entropy_with_integer_labels(X, LAB, **kw)
    with pytest.raises(ValueError, match="funcnet.losses.softmax_cross_entropy_with_integer_labels.*axis"):
        losses.softmax_cross_entropy_with_integer_labels(X, LAB, **kw)


INT_INPUTS = [
    ("squared_error", (2 * LAB[:, None] * jnp.ones((1, 3), int), T)),
    ("squared_error", (jnp.arange(-2, 3),)),
    ("l2_loss", (LAB[:, None] * jnp.ones((1, 3), int), T)),
    (SBCE, (jnp.arange(-2, 3), jnp.array([0.0, 1, 0.5, 1, 0]))),
    (SCE, (jnp.array([[3, -1, 0], [0, 2, 2]]), jnp.eye(3)[:2])),
    (INT, (jnp.array([[3, -1, 0], [0, 2, 2]]), jnp.array([0, 2]))),
]


@pytest.mark.parametrize("name, args", INT_INPUTS, ids=[n for n, _ in INT_INPUTS])
def test_integer_inputs_promoted_where_optax_raises(name, args):
    ours, theirs = (jax.jit(getattr(m, name)) for m in (losses, optax.losses))
    try:
        want = theirs(*args)
    except TypeError:  # optax rejects integer logits/predictions; funcnet promotes them (documented)
        _documents(name, "promoted")
        want = theirs(jnp.asarray(args[0], jnp.result_type(float)), *args[1:])
    _same(ours(*args), want, name)


@pytest.mark.parametrize("where", [MASK, ROWS], ids=["full-shape", "batch-shape"])
def test_sce_masked_label_gradient_is_zero_where_optax_is_nan(where):
    _documents(SCE, "with `where`, the labels' gradient at masked-out entries is 0", "optax: NaN")

    def both(f):
        weights = jnp.array([1.0, -2.0, 0.5, 3.0])
        return jax.value_and_grad(lambda a, b: jnp.sum(f(a, b) * weights), (0, 1))(X, T), jax.jvp(f, (X, T), (T, X))[1]

    ours, theirs = _loss(SCE, where=where)
    ((v, (gx, gt)), tan), ((vo, (gxo, gto)), tano) = jax.jit(lambda: (both(ours), both(theirs)))()
    keep = np.asarray(jnp.broadcast_to(where if where.ndim == 2 else where[:, None], X.shape))
    _same(v, vo, "value")
    _same(gx, gxo, "logits' gradient")
    _same(gt[keep], gto[keep], "labels' gradient at kept entries")
    assert np.all(np.asarray(gt)[~keep] == 0)  # funcnet: 0 (documented)
    assert np.all(np.isnan(np.asarray(gto)[~keep]))  # optax: NaN, from 0·log 0 (as the docstring says)
    _same(tan, tano, "tangent")  # forward mode has no such difference


def test_focal_label_gradient_at_hard_labels_is_exact_where_optax_drops_a_term():
    _documents("sigmoid_focal_loss", "exact at hard labels 0 and 1", "drops the focal weight's term")
    x, t = jnp.array([0.0, 0.5, -2.0, 3.0]), jnp.array([1.0, 1.0, 0.0, 0.0])

    def grad_t(f):
        return jax.grad(lambda t: f(x, t).sum())(t)

    # the loss is a polynomial in t (times smooth functions of x), so centred differences through 0 and 1 are
    # exact up to rounding; the twin writes it so (funcnet's rule works in logs, defined on [0, 1] only)
    h = 1e-6
    fd = (reference.losses.sigmoid_focal_loss(x, t + h) - reference.losses.sigmoid_focal_loss(x, t - h)) / (2 * h)
    ours = grad_t(losses.sigmoid_focal_loss)
    np.testing.assert_allclose(ours, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours[0], 0.0, atol=1e-15)  # at x = 0 the loss does not depend on t at all
    assert abs(float(grad_t(optax.losses.sigmoid_focal_loss)[0])) > 0.3  # optax: log 2 · ½ (the term it drops)


def test_second_order_at_hard_labels_is_optax_s(monkeypatch):
    """``jax.hessian`` (forward over reverse) of the focal loss at confident logits and hard labels 0 and 1,
    as optax's own test checks it. The labels are a residual with a zero tangent there; instantiated, that
    zero met the rule's ``log t = -inf`` (0 · inf = NaN). Planted fault: the zeros instantiated."""
    x = jnp.array([100.0, -100.0, 50.0, -50.0, 1e4, -1e4, 0.3])
    t = jnp.array([0.9, 0.1, 1.0, 0.0, 1.0, 1.0, 0.0])

    def diagonals(f):  # one fresh program per call: the planted binding is traced again
        return jax.jit(lambda x: [jnp.diag(jax.hessian(lambda x: f(x, t, gamma=g).sum())(x)) for g in (0.5, 2.0)])(x)

    for ours, theirs in zip(diagonals(losses.sigmoid_focal_loss), diagonals(optax.losses.sigmoid_focal_loss)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-30)
    from funcnet.ops import binding

    def instantiated(f, primals, tangents, zero_type):
        return jax.jvp(f, tuple(primals), tuple(jnp.zeros_like(p) if isinstance(t, zero_type) else t
                                                for p, t in zip(primals, tangents)))

    monkeypatch.setattr(binding, "_jvp_along", instantiated)
    assert not all(bool(jnp.all(jnp.isfinite(d))) for d in diagonals(losses.sigmoid_focal_loss))


Z = jnp.array([[0.0, 1.0, 2.0], [0.5, -1.0, 0.0], [1.0, 1.0, -2.0], [1.0, 2.0, 3.0]])
BAD = jnp.array([1, 7, -1, 3])  # rows 1-3 out of range for 3 classes (-1 included: no wrap-around)


def test_out_of_range_labels_under_jit_give_nan_value_gradient_row_and_tangent():
    _documents(INT, "out-of-range label under jit gives a NaN loss and a NaN gradient row", "wraps -1")
    assert "negative ones included" in losses.softmax_cross_entropy_with_integer_labels.__doc__

    def all_three(f, z, y):
        return f(z, y), jax.grad(lambda z: f(z, y).sum())(z), jax.jvp(lambda z: f(z, y), (z,), (jnp.ones_like(z),))[1]

    (value, grad, tangent), (vo, go, _), (wrapped, _, _) = jax.jit(lambda z, y: (
        all_three(losses.softmax_cross_entropy_with_integer_labels, z, y),
        all_three(optax.losses.softmax_cross_entropy_with_integer_labels, z, y),
        all_three(optax.losses.softmax_cross_entropy_with_integer_labels, z, jnp.where(y < 0, 2, y))))(Z, BAD)
    bad = np.array([False, True, True, True])
    assert np.all(np.isnan(value[bad])) and np.all(np.isnan(grad[bad])) and np.all(np.isnan(tangent[bad]))
    assert np.all(np.isfinite(grad[0])) and np.isfinite(tangent[0])
    _same(value[0], vo[0], "in-range value")  # the in-range example is untouched, and as optax
    _same(grad[0], go[0], "in-range gradient row")
    # what optax does instead, as the docstring says: -1 wraps to the last class; label 7 has a NaN
    # loss but a finite gradient
    _same(vo[2], wrapped[2], "optax wraps -1")
    assert np.isnan(vo[1]) and np.all(np.isfinite(go[1]))
    with pytest.raises(ValueError, match=f"funcnet.losses.{INT}: labels must lie in"):  # concrete labels: raise
        losses.softmax_cross_entropy_with_integer_labels(Z, BAD)


def test_integer_label_value_is_exact_at_large_float32_logits():
    _documents(INT, "log_softmax-then-take", "float32 digits at large logits")
    # large logits whose labelled class leads (small losses: log 2, log(1 + e⁻²), ...), where
    # logsumexp(x) - x_y is off by about ulp(1e4) ≈ 1e-3 in float32
    x = jnp.array([[1e4, 1e4, -1e4], [-2e4, 3e4 + 2, 3e4], [5e3, -5e3, 5e3 - 1], [1e4, 0, -1e4]], jnp.float32)
    y = jnp.array([0, 1, 0, 0])
    f, fo = losses.softmax_cross_entropy_with_integer_labels, optax.losses.softmax_cross_entropy_with_integer_labels
    value, (v_and_g, grad), exact, grad_optax = jax.jit(lambda x: (
        f(x, y), jax.value_and_grad(lambda z: f(z, y).sum())(x),
        fo(x.astype(jnp.float64), y), jax.grad(lambda z: fo(z, y).sum())(x)))(x)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value[0], np.log(2.0), rtol=1e-7)  # optax gives 0.69336 there
    for got in (value, f(x, y)):  # jit and eager
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)  # the float32 logits' exact loss
    np.testing.assert_allclose(v_and_g, np.sum(exact), rtol=1e-6)
    _same(grad, grad_optax, "gradient", rtol=1e-6, atol=1e-7)  # d/dx = softmax - onehot: no difference there


@pytest.mark.parametrize("name", ["kl_divergence", "generalized_kl_divergence"])
def test_kl_zero_target_at_minus_inf_log_prediction_is_finite_where_optax_is_nan(name):
    _documents(name, "a zero target adds 0 and has gradient 0", "optax: NaN")
    log_q = jnp.array([[-INF, 0.0], [jnp.log(0.25), jnp.log(0.75)]])
    t = jnp.array([[0.0, 1.0], [0.5, 0.5]])
    ours, theirs = getattr(losses, name), getattr(optax.losses, name)
    value, grads = jax.value_and_grad(lambda a, b: ours(a, b).sum(), (0, 1))(log_q, t)
    assert np.isnan(theirs(log_q, t)[0])
    exact_row1 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)  # t log(t/q), by hand
    np.testing.assert_allclose(ours(log_q, t), [0.0, exact_row1], rtol=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # away from the -inf entry, as optax
    _same(ours(log_q[1:], t[1:]), theirs(log_q[1:], t[1:]), name)


def test_kl_with_log_targets_of_minus_inf_adds_zero_where_optax_is_nan():
    _documents("kl_divergence_with_log_targets", "log 0 = -inf adds 0", "optax: NaN")
    log_q, log_t = jnp.array([-INF, jnp.log(0.5)]), jnp.array([-INF, 0.0])
    assert np.isnan(optax.losses.kl_divergence_with_log_targets(log_q, log_t))
    np.testing.assert_allclose(losses.kl_divergence_with_log_targets(log_q, log_t), np.log(2.0), rtol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"axis": 0}, {"axis": None}, {"where": MASK}, {"axis": 0, "where": MASK}])
@pytest.mark.parametrize("alpha", [0.1, jnp.array([0.0, 0.1, 0.2])])
def test_smooth_labels_as_optax(kw, alpha):
    _same(losses.smooth_labels(T, alpha, **kw), optax.losses.smooth_labels(T, alpha, **kw), str(kw))
    g = jax.grad(lambda a: losses.smooth_labels(T, a, **kw).sum())(jnp.float64(0.1))
    _same(g, jax.grad(lambda a: optax.losses.smooth_labels(T, a, **kw).sum())(jnp.float64(0.1)), "alpha gradient")


def test_smooth_labels_rejects_integer_labels_as_optax():
    with pytest.raises((TypeError, ValueError)):
        optax.losses.smooth_labels(LAB, 0.1)
    with pytest.raises(TypeError, match="funcnet.losses.smooth_labels: `labels` must be floating"):
        losses.smooth_labels(LAB, 0.1)


def test_squareplus_keeps_its_digits_at_large_negative_x():
    x = jnp.array([-1e4, -1e8, -1e30], jnp.float32)
    exact = 4.0 / (2 * (np.sqrt(np.float64(x) ** 2 + 4.0) - np.float64(x)))  # b / (2(r - x)), in float64
    np.testing.assert_allclose(nn.squareplus(x), exact, rtol=1e-6)
    assert not np.allclose(jax.nn.squareplus(x), exact, rtol=1e-2)  # the textbook form cancels there
    gx, gb = jax.grad(lambda x, b: nn.squareplus(x, b).sum(), (0, 1))(jnp.array([-1e4, 0.0, 3.0]), jnp.float64(2.0))
    gx_j, gb_j = jax.grad(lambda x, b: jax.nn.squareplus(x, b).sum(), (0, 1))(jnp.array([-1e4, 0.0, 3.0]),
                                                                               jnp.float64(2.0))
    close(gx, gx_j, rtol=1e-6)
    close(gb, gb_j)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_glu_as_jax_nn(axis):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6)))
    close(nn.glu(x, axis), jax.nn.glu(x, axis))
    w = jnp.asarray(np.random.default_rng(4).normal(size=jax.nn.glu(x, axis).shape))
    close(jax.grad(lambda x: jnp.sum(nn.glu(x, axis) * w))(x), jax.grad(lambda x: jnp.sum(jax.nn.glu(x, axis) * w))(x))
    with pytest.raises(ValueError, match="funcnet.nn.glu: the size of axis"):
        nn.glu(jnp.ones((3, 5)), axis)


@pytest.mark.parametrize("kw", [{}, {"axis": 1}, {"axis": (0, 2), "keepdims": True}, {"where": MASK3},
                                {"axis": -1, "where": MASK3}])
def test_logsumexp_and_logmeanexp_as_jax_nn(kw):
    b = jnp.asarray(np.random.default_rng(5).uniform(0.1, 2.0, X3.shape))
    for ours, theirs, extra in ((nn.logsumexp, jax.nn.logsumexp, {}), (nn.logsumexp, jax.nn.logsumexp, {"b": b}),
                                (nn.logmeanexp, jax.nn.logmeanexp, {})):
        close(ours(X3, **kw, **extra), theirs(X3, **kw, **extra))
        close(jax.grad(lambda x: ours(x, **kw, **extra).sum())(X3), jax.grad(lambda x: theirs(x, **kw, **extra).sum())(X3))
        t_ours = jax.jvp(lambda x: ours(x, **kw, **extra), (X3,), (T3,))[1]
        t_theirs = jax.jvp(lambda x: theirs(x, **kw, **extra), (X3,), (T3,))[1]
        if "where" in kw:  # a row with nothing left: tangent 0, as its gradient (jax.nn: NaN; documented)
            assert "tangent 0" in ours.declaration.differs
            empty = ~np.asarray(jnp.any(kw["where"], axis=kw.get("axis"), keepdims=kw.get("keepdims", False)))
            assert np.all(np.asarray(t_ours)[empty] == 0) and np.all(np.isnan(np.asarray(t_theirs)[empty]))
            t_ours, t_theirs = np.asarray(t_ours)[~empty], np.asarray(t_theirs)[~empty]
        close(t_ours, t_theirs)
    close(jax.grad(lambda b: nn.logsumexp(X3, b=b, **kw).sum())(b), jax.grad(lambda b: jax.nn.logsumexp(X3, b=b, **kw).sum())(b))


def test_logsumexp_signs_and_zero_weights():
    a, b = jnp.array([0.0, 1.0, 2.0]), jnp.array([1.0, -1.0, 0.0])
    out, sign = nn.logsumexp(a, b=b, return_sign=True)
    out_j, sign_j = jax.nn.logsumexp(a, b=b, return_sign=True)
    close(out, out_j)
    assert float(sign) == float(sign_j) == -1.0
    assert np.isnan(nn.logsumexp(a, b=b)) and np.isnan(jax.nn.logsumexp(a, b=b))
    _documents_nn = nn.logsumexp.declaration.differs
    assert "the true slope (jax.nn: 0)" in _documents_nn
    b = jnp.array([1.0, 0.0, 1.0])
    gb = jax.grad(lambda b: nn.logsumexp(a, b=b))(b)
    np.testing.assert_allclose(gb, np.exp(a) / (np.exp(0.0) + np.exp(2.0)), rtol=1e-12)  # e^a / Σ b e^a, by hand
    np.testing.assert_allclose(jax.grad(lambda b: jax.nn.logsumexp(a, b=b))(b)[1], 0.0)  # jax.nn: 0 there
    close(nn.logsumexp(jnp.array([-jnp.inf, -jnp.inf])), jax.nn.logsumexp(jnp.array([-jnp.inf, -jnp.inf])))


def test_one_hot_as_jax_nn():
    labels = jnp.array([0, 2, -1, 3])
    for kw in ({}, {"dtype": jnp.int8}, {"axis": 0}):
        got, want = nn.one_hot(labels, 3, **kw), jax.nn.one_hot(labels, 3, **kw)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="funcnet.nn.one_hot: `num_classes` must be a Python int"):
        nn.one_hot(labels, 3.0)


@pytest.mark.parametrize("kw", [{}, {"axis": 0}, {"axis": (0, 2)}, {"axis": None}, {"where": MASK3},
                                {"algorithm": "stable", "where": MASK3, "axis": 1}, {"epsilon": 0.5}])
def test_standardize_as_jax_nn(kw):
    ours, theirs = (lambda x: nn.standardize(x, **kw)), (lambda x: jax.nn.standardize(x, **kw))
    close(ours(X3), theirs(X3))
    w = jnp.asarray(np.random.default_rng(8).normal(size=X3.shape))
    close(jax.grad(lambda x: jnp.sum(ours(x) * w))(X3), jax.grad(lambda x: jnp.sum(theirs(x) * w))(X3))
    close(jax.jvp(ours, (X3,), (T3,))[1], jax.jvp(theirs, (X3,), (T3,))[1])


@pytest.mark.parametrize("given", ["mean", "variance", "both"])
def test_standardize_with_given_statistics_as_jax_nn(given):
    mean, variance = jnp.mean(X3, -1, keepdims=True) + 0.1, jnp.var(X3, -1, keepdims=True) + 0.2
    kw = {"mean": mean, "variance": variance} if given == "both" else {given: {"mean": mean, "variance": variance}[given]}

    def total(f, x, kw):
        return jnp.sum(f(x, **kw) * T3)

    close(nn.standardize(X3, **kw), jax.nn.standardize(X3, **kw))
    names_ = tuple(kw)
    g_ours = jax.grad(lambda x, *s: total(nn.standardize, x, dict(zip(names_, s))), tuple(range(1 + len(kw))))(X3, *kw.values())
    g_jax = jax.grad(lambda x, *s: total(jax.nn.standardize, x, dict(zip(names_, s))), tuple(range(1 + len(kw))))(X3, *kw.values())
    for a, b in zip(g_ours, g_jax):
        close(a, b)


# -------------------------------------------- hyper-parameters as arrays, through jit and vmap
HYPER_X = np.array([[0.3, -2.0, 4.0], [1.0, 2.0, -0.5]])
HYPER_T = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])  # soft labels: optax's focal label gradient is exact there
HYPER_SCALE, HYPER_BIAS = np.array([0.5, 1.2, 0.9]), np.array([0.1, -0.2, 0.3])
HYPERS = [  # (name, hyper-parameters, inputs)
    ("huber_loss", {"delta": 1.5}, (HYPER_X, HYPER_T)),
    ("poly_loss_cross_entropy", {"epsilon": 1.5}, (HYPER_X, HYPER_T)),
    ("sigmoid_focal_loss", {"gamma": 1.5}, (HYPER_X, HYPER_T)),
    ("sigmoid_focal_loss", {"alpha": 0.3, "gamma": 1.5}, (HYPER_X, HYPER_T)),
    ("cosine_similarity", {"epsilon": 0.5}, (HYPER_X, HYPER_T)),  # clips |t|² = 0.38 in row 0, not 0.66 in row 1
    ("cosine_distance", {"epsilon": np.array([[0.5], [0.2]])}, (HYPER_X, HYPER_T)),  # one per row, keepdims
    ("celu", {"alpha": 0.7}, (HYPER_X,)),
    ("standardize", {"epsilon": 0.5}, (HYPER_X,)),
    ("layer_norm", {"epsilon": np.array([[0.5], [0.2]])}, (HYPER_X, HYPER_SCALE, HYPER_BIAS)),
    ("rms_norm", {"epsilon": 0.5}, (HYPER_X, HYPER_SCALE)),
    ("dice_loss", {"smooth": 0.5, "alpha": 0.3, "beta": 0.6}, (HYPER_X, HYPER_T)),
    ("dice_loss", {"class_weights": HYPER_SCALE}, (HYPER_X[:, None], HYPER_T[:, None])),
    ("binary_dice_loss", {"smooth": 0.5}, (HYPER_X, HYPER_T)),
    ("multiclass_generalized_dice_loss", {"smooth": 2.0}, (HYPER_X, HYPER_T)),
    ("ranking_softmax_loss", {"weights": np.array([[1.0, 0.5, 2.0], [0.3, 1.0, 1.5]])}, (HYPER_X, HYPER_T)),
    ("triplet_margin_loss", {"margin": np.array([3.0, 5.0]), "eps": 0.1}, (HYPER_X, HYPER_T, -HYPER_X)),
]


@pytest.mark.parametrize("name, hypers, inputs", HYPERS, ids=[f"{n}-{'-'.join(h)}" for n, h, _ in HYPERS])
def test_hyper_parameters_traced_through_jit_and_vmap_as_optax(name, hypers, inputs):
    """Values, gradients (the hyper-parameters' own included) and a tangent along every argument of a jitted
    call with traced hyper-parameters, and a vmap over them, equal those of the namesake in optax.losses or
    jax.nn (the autodiff twin where there is none: layer_norm, rms_norm); a Python number gives the same values."""
    ours = getattr(losses, name, None) or getattr(nn, name)
    theirs = getattr(optax.losses, name, None) or getattr(jax.nn, name, None) or getattr(reference.nn, name)
    keys, n = tuple(hypers), len(inputs)

    def program(fn):
        def total(*args):
            y = fn(*args[:n], **dict(zip(keys, args[n:])))
            return jnp.sum(y * jnp.cos(jnp.arange(y.size)).reshape(y.shape))  # a cotangent other than ones

        def run(xs, h):
            args = (*xs, *h)
            grads = jax.grad(total, tuple(range(len(args))))(*args)
            tangent = jax.jvp(total, args, tuple(jnp.sin(jnp.arange(a.size) + 1.0).reshape(a.shape) for a in args))[1]
            swept = jax.vmap(lambda h0: fn(*xs, **dict(zip(keys, (h0, *h[1:])))))(jnp.stack([h[0], 2 * h[0]]))
            return total(*args), grads, tangent, swept
        return jax.jit(run)

    args = (tuple(jnp.asarray(x) for x in inputs), tuple(jnp.asarray(v) for v in hypers.values()))
    got, want = program(ours)(*args), program(theirs)(*args)
    assert_trees_close(got, want, 1e-12, 1e-12, f"{name} {keys}")
    assert len(jax.tree.leaves(got[1])) == n + len(keys)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in got[1][n:]), "a hyper-parameter's gradient is 0"
    np.testing.assert_allclose(ours(*args[0], **hypers), got[3][0], rtol=1e-12)


def test_convex_kl_divergence_warns_as_optaxs_deprecated_alias():
    args = (jnp.log(jnp.array([0.2, 0.8])), jnp.array([0.5, 0.5]))
    with pytest.warns(DeprecationWarning) as ours:
        value = losses.convex_kl_divergence(*args)
    with pytest.warns(DeprecationWarning) as theirs:
        want = optax.losses.convex_kl_divergence(*args)
    assert str(ours[0].message) == str(theirs[0].message)
    np.testing.assert_allclose(value, want, rtol=1e-6)


def test_one_hot_with_a_traced_num_classes_raises_jax_nns_error_type():
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.jit(lambda n: jax.nn.one_hot(jnp.arange(3), n))(3)
    with pytest.raises(jax.errors.ConcretizationTypeError, match="funcnet.nn.one_hot argument `num_classes`"):
        jax.jit(lambda n: nn.one_hot(jnp.arange(3), n))(3)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_focal_label_gradient_at_gamma_0_and_confident_hard_labels_is_finite_as_optaxs(dtype):
    """At γ = 0 the focal weight is constant: the labels' gradient is -x, as optax gives ([100, -10000]); the
    rule gave NaN there (0 · q^(-1) with q underflowed)."""
    x, t = jnp.array([-100.0, 1e4], dtype), jnp.zeros(2, dtype)
    ours = jax.grad(lambda t: losses.sigmoid_focal_loss(x, t, gamma=0.0).astype(jnp.float32).sum())(t)
    theirs = jax.grad(lambda t: optax.losses.sigmoid_focal_loss(x, t, gamma=0.0).astype(jnp.float32).sum())(t)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))


HALF_SLOPES = [  # (activation, keyword arguments, x): float16 slopes against jax.nn's at the same x in float32
    ("celu", {"alpha": 1e-7}, [-1.0, -1e-7, -20.0]),  # -0.19 at x = -1 (true ≈ 0), 0.40 at -1e-7 (true 0.30)
    ("elu", {"alpha": 1e-7}, [-1.0, -20.0, -1e-7]),
    ("selu", {}, [-20.0, -0.5, 0.5]),
]


@pytest.mark.parametrize("name, kwargs, xs", HALF_SLOPES, ids=[f"{n}{k}" for n, k, _ in HALF_SLOPES])
def test_elu_family_slopes_in_float16_keep_their_sign_and_digits(name, kwargs, xs):
    """Issue 23, item 11: the slope rebuilt from a subnormal float16 output (alpha below 6.1e-5) was wrong."""
    x = jnp.asarray(xs, jnp.float16)
    ours = np.asarray(jax.grad(lambda v: getattr(nn, name)(v, **kwargs).astype(jnp.float32).sum())(x), np.float32)
    theirs = jax.grad(lambda v: getattr(jax.nn, name)(v, **kwargs).sum())(x.astype(jnp.float32))
    assert np.all(ours >= 0), ours
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=1e-3)  # float16 keeps the slope to about eps


def test_logsumexp_sign_without_b_and_empty_rows_as_jax_nn():
    """Issue 23, item 16: return_sign without b raised IndexError; an empty reduction raised NumPy's error."""
    for a in (jnp.array([1.0, 2.0]), jnp.array([-jnp.inf, -jnp.inf])):
        for got, want in zip(nn.logsumexp(a, return_sign=True), jax.nn.logsumexp(a, return_sign=True)):
            close(got, want)
    empty = jnp.zeros((0,))
    assert float(nn.logsumexp(empty)) == float(jax.nn.logsumexp(empty)) == -np.inf
    assert np.isnan(float(nn.logmeanexp(empty)))
    assert jax.grad(nn.logsumexp)(empty).shape == (0,)


@pytest.mark.parametrize("name", ["multiclass_hinge_loss", "multiclass_perceptron_loss"])
def test_a_nan_score_gives_a_nan_gradient_row_as_optax(name):
    """Issue 23, item 10: a NaN score gave the finite gradient row [-1, 0, 0] (optax: NaN)."""
    s, y = jnp.array([[jnp.nan, 0.0, 1.0], [0.0, 2.0, 1.0]]), jnp.array([0, 1])
    ours = jax.grad(lambda s: getattr(losses, name)(s, y).sum())(s)
    theirs = jax.grad(lambda s: getattr(optax.losses, name)(s, y).sum())(s)
    assert np.all(np.isnan(ours[0])) and np.all(np.isnan(theirs[0]))
    close(ours[1], theirs[1])
    assert np.isnan(float(jax.jvp(lambda s: getattr(losses, name)(s, y), (s,), (jnp.ones_like(s),))[1][0]))


# -------------------------------------------- ranking: the masked and weighted rules; Fenchel-Young losses
def _ranking_mask(shape):
    """Item 1 of every list left out, and the first list empty (for a batch of lists)."""
    mask = np.ones(shape, bool)
    mask[..., 1] = False
    if len(shape) > 1:
        mask[0] = False
    return mask


def _ranking_spec(fault=None):
    """The per-list ranking loss with a mask and weights (all three float arguments differentiated), as a
    registry row for check_op: the forms the registry's default row does not reach."""
    from funcnet.registry import OpSpec

    def bound(fn):
        def loss(logits, labels, weights):
            return fn(logits, labels, where=_ranking_mask(logits.shape), weights=weights, reduce_fn=None)
        return loss

    def sample(rng, case):
        return rng.normal(size=case), rng.uniform(0.0, 2.0, case), rng.uniform(0.5, 2.0, case)

    return OpSpec(name="ranking_softmax_loss(where, weights)", family="losses", fn=bound(losses.ranking_softmax_loss),
                  twin=bound(reference.losses.ranking_softmax_loss), sample=sample, cases=((3, 4),),
                  diff_argnums=(0, 1, 2))


def test_ranking_rules_with_mask_and_weights_pass_check_op():
    """Both rules of the masked, weighted form against autodiff of the twin, finite differences and each
    other, second order included (the weights' gradient: optax's is NaN at masked items, see below)."""
    report = funcnet.check_op(_ranking_spec(), seed=0)
    assert report.passed, (report.failures, report.notes)


def test_ranking_weights_gradient_as_optax_and_zero_at_masked_items_where_optax_is_nan():
    x, t, w = X, 2 * T, 2 * T[::-1]

    def grads(fn, where):
        return jax.grad(lambda w: jnp.sum(fn(x, t, where=where, weights=w, reduce_fn=None) * jnp.arange(4.0)))(w)

    _same(grads(losses.ranking_softmax_loss, None), grads(optax.losses.ranking_softmax_loss, None), "weights")
    ours, theirs = grads(losses.ranking_softmax_loss, MASK), grads(optax.losses.ranking_softmax_loss, MASK)
    assert np.all(np.isnan(theirs[~MASK])) and np.all(ours[~MASK] == 0.0)
    _same(ours[MASK], theirs[MASK], "weights, kept items")
    _documents("ranking_softmax_loss", "the weights' gradient at masked-out items is 0")


def _sparsemax_max(s):
    """The sparsemax regularised max ⟨s, p⟩ - ½‖p‖², p the projection of s on the simplex: ∇ = p (Danskin)."""
    u = jnp.sort(s)[::-1]
    k = jnp.arange(1, s.shape[-1] + 1)
    cum = jnp.cumsum(u) - 1.0
    support = jnp.sum(u * k > cum)  # the projection's support size (sort-based, as optax's sparsemax)
    p = jnp.maximum(s - cum[support - 1] / support, 0.0)
    return jnp.dot(s, p) - 0.5 * jnp.dot(p, p)


MAX_FUNS = {"logsumexp": jax.scipy.special.logsumexp, "sparsemax": _sparsemax_max}


@pytest.mark.parametrize("name", MAX_FUNS)
def test_fenchel_young_loss_passes_check_op_and_equals_optax(name):
    """The op make_fenchel_young_loss builds passes check_op's battery (both rules against autodiff of
    max_fun(s) - ⟨s, t⟩ and finite differences, the adjoint identity, second order), and its values, gradients
    (scores and targets, targets broadcast) and tangent equal optax's."""
    ours_loss = losses.make_fenchel_young_loss(MAX_FUNS[name])
    report = funcnet.check_op(ours_loss, seed=0)
    assert report.passed, (report.failures, report.notes)
    theirs_loss = optax.losses.make_fenchel_young_loss(MAX_FUNS[name])
    s, t = 2 * X3, jax.nn.softmax(T3[0])  # targets (3, 4) broadcast against scores (2, 3, 4)

    def run(fn):
        total = lambda s, t: jnp.sum(fn(s, t) * jnp.arange(6.0).reshape(2, 3))  # noqa: E731
        return fn(s, t), jax.grad(total, (0, 1))(s, t), jax.jvp(total, (s, t), (jnp.cos(s), jnp.sin(t)))[1]

    assert_trees_close(jax.jit(lambda: run(ours_loss))(), jax.jit(lambda: run(theirs_loss))(), 1e-12, 1e-12, name)


def test_fenchel_young_loss_with_a_wrong_prediction_fails_check_op():
    """The planted fault: a wrong ŷ (1.1·softmax for logsumexp) fails both rules against autodiff; the right
    closed form (softmax) passes, and then max_fun is never differentiated."""
    lse = jax.scipy.special.logsumexp
    assert funcnet.check_op(losses.make_fenchel_young_loss(lse, grad_fun=jax.nn.softmax)).passed
    report = funcnet.check_op(losses.make_fenchel_young_loss(lse, grad_fun=lambda s: 1.1 * jax.nn.softmax(s)))
    assert {"float64 vs autodiff", "float64 vs finite_diff", "float64 fwd vs twin"} <= set(report.failures)


def test_fenchel_young_loss_op_cached_keywords_passed_and_bad_calls_refused():
    lse = jax.scipy.special.logsumexp
    loss = losses.make_fenchel_young_loss(lse)
    assert loss.op is losses.make_fenchel_young_loss(lse).op  # one op (one primitive) per max_fun
    scaled = losses.make_fenchel_young_loss(lambda s, temperature=1.0: temperature * lse(s / temperature))
    s, t = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(scaled(s, t, temperature=0.5), 0.5 * lse(s / 0.5) - s @ t, rtol=1e-12)
    with pytest.raises(TypeError, match="extra positional argument"):
        loss(s, t, 2.0)
    with pytest.raises(TypeError, match="must be hashable"):
        scaled(s, t, temperature=jnp.array(0.5))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        loss(s, t[:2])


RANKING_ERRORS = [  # (arguments, keywords, error type, what the message must name)
    ((np.ones(3), np.ones(4)), {}, ValueError, ["logits (3,)", "labels (4,)"]),
    ((np.float32(1.0), 1.0), {}, ValueError, ["`logits`", "list axis"]),
    ((np.ones(3), np.ones(3)), {"where": np.ones(3)}, TypeError, ["`where`", "boolean mask"]),
    ((np.ones(3), np.ones(3)), {"weights": np.ones(2)}, ValueError, ["weights (2,)"]),
]


@pytest.mark.parametrize("args, kw, error, phrases", RANKING_ERRORS, ids=[str(i) for i in range(len(RANKING_ERRORS))])
def test_ranking_bad_inputs_are_named_at_trace_time(args, kw, error, phrases):
    with pytest.raises(error) as err:
        jax.jit(lambda *a: losses.ranking_softmax_loss(*a, **kw))(*args)
    assert "funcnet.losses.ranking_softmax_loss" in str(err.value)
    assert all(p in str(err.value) for p in phrases), str(err.value)
_E, _L = np.ones((4, 3)), np.array([0, 0, 1, 1])
SELF_SUPERVISED_ERRORS = [  # (call, error, fragments): at trace time, naming the function, argument and value
    (lambda: losses.ntxent(_E, _L[:3]), ValueError, ["funcnet.losses.ntxent", "`labels`", "(4, 3)", "(3,)"]),
    (lambda: losses.ntxent(_E[0], _L), ValueError, ["funcnet.losses.ntxent", "`embeddings`", "(3,)"]),
    (lambda: jax.jit(losses.ntxent)(_E, _L[:3]), ValueError, ["funcnet.losses.ntxent", "(3,)"]),
    (lambda: losses.ntxent(_E, _L, 0.0), ValueError, ["funcnet.losses.ntxent", "`temperature`", "> 0", "0.0"]),
    (lambda: losses.ntxent(_E, _L, float("nan")), ValueError, ["funcnet.losses.ntxent", "`temperature`", "nan"]),
    (lambda: losses.ntxent(_E, _L, np.ones(4)), ValueError, ["funcnet.losses.ntxent", "`temperature`", "(4,)"]),
    (lambda: losses.ntxent(_E, np.array(["a"] * 4)), TypeError, ["funcnet.losses.ntxent", "`labels`"]),
    (lambda: losses.triplet_margin_loss(_E, _E, np.ones((5, 3))), ValueError,
     ["funcnet.losses.triplet_margin_loss", "negatives (5, 3)"]),
    (lambda: losses.triplet_margin_loss(_E, _E, _E, norm_degree=0), ValueError,
     ["funcnet.losses.triplet_margin_loss", "`norm_degree`", "> 0", "0"]),
    (lambda: jax.jit(lambda q: losses.triplet_margin_loss(_E, _E, _E, norm_degree=q))(2.0), TypeError,
     ["funcnet.losses.triplet_margin_loss", "`norm_degree`", "concrete number"]),
    (lambda: losses.triplet_margin_loss(_E, _E, _E, eps=-1.0), ValueError,
     ["funcnet.losses.triplet_margin_loss", "`eps`", ">= 0", "-1.0"]),
    (lambda: losses.triplet_margin_loss(_E, _E, _E, margin=np.ones(3)), ValueError,
     ["funcnet.losses.triplet_margin_loss", "`margin` of shape (3,)", "(4,)"]),
]


@pytest.mark.parametrize("call, error, fragments", SELF_SUPERVISED_ERRORS)
def test_self_supervised_losses_reject_bad_input_by_name(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
# ------------------------------------------------------------------ attention vs jax.nn
# funcnet.nn.dot_product_attention against jax.nn.dot_product_attention (implementation="xla"): the value, the
# gradient of a random cotangent and the tangent along random directions, every row of the table traced into
# ONE jit. Small blocks (block_q=2, block_kv=3) make several tiles and a padded last one of each.
_ARNG = np.random.default_rng(11)


def _qkv(B, T, S, N, K, H, dtype=jnp.float32):
    return tuple(jnp.asarray(_ARNG.normal(size=s), dtype) for s in ((B, T, N, H), (B, S, K, H), (B, S, K, H)))


_QKV = _qkv(2, 5, 7, 4, 2, 3)
_ABIAS = jnp.asarray(_ARNG.normal(size=(1, 4, 5, 7)), jnp.float32)
_AMASK = jnp.asarray(_ARNG.random((2, 1, 5, 7)) < 0.6).at[0, 0, 2].set(False)  # a row with every key masked
_LEN = {"query_seq_lengths": jnp.array([3, 5], jnp.int32), "key_value_seq_lengths": jnp.array([4, 0], jnp.int32)}
_SMALL = {"block_q": 2, "block_kv": 3}

# (id, keywords, (query, key, value[, bias]) — the bias, when given, is differentiated too)
ATTENTION_CASES = [  # each option at least once, combined where one case can carry several
    ("plain", {}, _QKV),
    ("causal-T<S", {"is_causal": True, **_SMALL}, _qkv(1, 3, 7, 2, 2, 4)),
    ("mask-empty-row-scale", {"mask": _AMASK, "scale": 0.3, **_SMALL}, _QKV),
    ("bias-bcast-grad", {"block_kv": 2}, _QKV + (_ABIAS[:, :1],)),
    ("bias-mask-causal", {"mask": _AMASK, "is_causal": True, **_SMALL}, _QKV + (_ABIAS,)),
    ("gqa-mqa", _SMALL, _qkv(2, 4, 6, 6, 1, 3)),
    ("seq-lengths-causal-bias", {**_LEN, "is_causal": True, **_SMALL}, _QKV + (_ABIAS,)),
    ("window", {"local_window_size": (2, 1), **_SMALL}, _QKV),
    ("window-int-causal", {"local_window_size": 1, "is_causal": True, **_SMALL}, _QKV),
    ("unbatched-TNH", _SMALL, tuple(a[0] for a in _QKV)),
    ("bfloat16-causal-bias", {"is_causal": True, **_SMALL}, _qkv(2, 5, 7, 4, 2, 8, jnp.bfloat16) + (_ABIAS,)),
]
_OWN = ("block_q", "block_kv")  # funcnet's own keywords, not passed to jax.nn


def _attention_directions(args):
    return tuple(jnp.asarray(_ARNG.normal(size=a.shape), a.dtype) for a in args)


def _attention_results():
    if "attention" not in _RESULTS:
        inputs = {cid: (args, _attention_directions(args), _attention_directions(args[:1])[0])
                  for cid, _, args in ATTENTION_CASES}

        def run(inputs):
            out = {}
            for cid, kw, _ in ATTENTION_CASES:
                args, tangents, ct = inputs[cid]
                for side, f, extra in (("ours", nn.dot_product_attention, {}),
                                       ("jax", jax.nn.dot_product_attention, {"implementation": "xla"})):
                    kwj = {k: v for k, v in kw.items() if side == "ours" or k not in _OWN}

                    def g(*a, f=f, kwj=kwj, extra=extra):
                        return f(*a[:3], *(a[3:] or (None,)), **kwj, **extra)

                    loss = lambda *a, g=g, ct=ct: jnp.vdot(ct.astype(jnp.float32), g(*a).astype(jnp.float32))  # noqa: E731
                    out[cid, side] = (g(*args), jax.grad(loss, tuple(range(len(args))))(*args),
                                      jax.jvp(g, args, tangents)[1])
            return out

        _RESULTS["attention"] = jax.jit(run)(inputs)
    return _RESULTS["attention"]


@pytest.mark.parametrize("case_id", [c[0] for c in ATTENTION_CASES])
def test_dot_product_attention_as_jax_nn(case_id):
    results = _attention_results()
    got, want = results[case_id, "ours"], results[case_id, "jax"]
    low = next(c[2] for c in ATTENTION_CASES if c[0] == case_id)[0].dtype == jnp.bfloat16
    tol = {"rtol": 3e-2, "atol": 3e-2} if low else {"rtol": 2e-5, "atol": 2e-6}
    for what, a, b in zip(("value", "grad", "tangent"), got, want):
        for i, (ai, bi) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
            _same(ai, bi, f"{case_id}: {what} {i}", **tol)


def test_dot_product_attention_residual_and_options_as_jax_nn():
    q, k, v = _QKV
    for kw in ({}, {"mask": _AMASK, **_LEN, **_SMALL}):
        with jax.numpy_rank_promotion("raise"), jax.debug_infs(True):  # as jax's own tests run it
            o, lse = nn.dot_product_attention(q, k, v, return_residual=True, **kw)
        o_j, lse_j = jax.nn.dot_product_attention(q, k, v, return_residual=True,
                                                  **{k: v for k, v in kw.items() if k not in _OWN})
        _same(o, o_j, "output", rtol=2e-5, atol=2e-6)
        _same(lse, lse_j, "log-sum-exp", rtol=2e-6, atol=2e-6)
    for implementation in ("xla", "cudnn"):  # accepted; funcnet runs its own rule
        _same(nn.dot_product_attention(q, k, v, implementation=implementation),
              jax.nn.dot_product_attention(q, k, v), implementation, rtol=2e-5, atol=2e-6)
    assert "`implementation`" in nn.dot_product_attention.declaration.differs
    with pytest.raises(ValueError, match="funcnet.nn.dot_product_attention: unsupported `implementation`"):
        nn.dot_product_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        nn.dot_product_attention(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match="`mask` must be boolean"):
        nn.dot_product_attention(q, k, v, mask=_AMASK.astype(jnp.float32))
    with pytest.raises(ValueError, match="`key_value_seq_lengths` must be int32 of shape"):
        nn.dot_product_attention(q, k, v, key_value_seq_lengths=jnp.array([3], jnp.int32))


def test_dot_product_attention_never_holds_the_logits():
    """value_and_grad's temporary memory stays below one B × N × T × S float32 array (jax.nn holds several)."""
    B, T, N, H = 1, 512, 2, 16
    shape = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)

    def temp(f):
        step = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2)))
        return step.lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes

    logits = B * N * T * T * 4
    ours = temp(lambda q, k, v: nn.dot_product_attention(q, k, v, is_causal=True, block_q=64, block_kv=128))
    assert ours < logits / 2 < temp(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)), ours


def _ctc_against_optax(args):
    """The largest difference of funcnet's CTC value and logits gradient from optax's (a fresh trace)."""
    def step(ctc):
        return jax.jit(jax.value_and_grad(lambda x, *rest: jnp.sum(ctc(x, *rest))))(*args)

    ours, theirs = step(losses.ctc_loss), step(optax.losses.ctc_loss)
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))


@pytest.mark.parametrize("fault", ["a wrong blank transition", "a repeated-label skip allowed",
                                   "a padding frame counted"])
def test_the_ctc_comparison_catches_a_planted_fault(monkeypatch, fault):
    """Each fault planted into the recursion both rules share makes the value or the gradient differ from
    optax's on CTC_ARGS (repeated labels, padded frames), which agree to rounding without it."""
    from funcnet.ops.losses import sequence

    assert _ctc_against_optax(CTC_ARGS) < 1e-10
    if fault == "a wrong blank transition":  # the blank read from the next class
        emissions = sequence._emissions
        monkeypatch.setattr(sequence, "_emissions", lambda lp, labels, blank_id: emissions(
            lp, labels, (blank_id + 1) % lp.shape[2]))
    elif fault == "a repeated-label skip allowed":  # the skip between equal labels left open
        monkeypatch.setattr(sequence, "_repeats", lambda labels, dtype: jnp.zeros(labels.shape, dtype))
    else:  # a padded frame moves the variables like any other
        monkeypatch.setattr(sequence, "_blend", lambda pad, old, new: new)
    assert _ctc_against_optax(CTC_ARGS) > 1e-3
