"""The one list of every op: manual function, autodiff twin, input sampler, tolerances.

Tests, the gradient checker (``funcnet gradcheck``) and the docs all iterate over
:data:`OPS`, so adding an op is one definition in ``funcnet/ops`` plus one entry
here; every property the test suite checks then covers it.

A sampler draws *valid* inputs away from kinks (ReLU at 0, max ties, the SVM
margin), so that finite differences see a smooth function; conventions at the
kinks are stated in each entry's ``kink`` text and tested separately.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax

from funcnet import gates, losses, nn
from funcnet import reference as ref

Sampler = Callable[[np.random.Generator, Any], tuple]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise."""

    rtol: float
    atol: float


#: Tolerances for manual vs autodiff (same dtype). Half precision is compared
#: against the float32 twin, so its numbers bound rounding, not algorithm error.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "float64": Tolerance(1e-9, 1e-12),
    "float32": Tolerance(2e-5, 1e-6),
    "bfloat16": Tolerance(4e-2, 2e-2),
    "float16": Tolerance(1e-2, 2e-3),
}


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One registry entry.

    Attributes:
      name: row label, unique; includes non-default keyword arguments.
      family: ``"gates"``, ``"nn"`` or ``"losses"``: the public namespace.
      fn: the public manual op (``funcnet.<family>.<fn.__name__>``).
      twin: its autodiff twin in ``funcnet.reference.<family>``.
      sample: ``sample(rng, case) -> args`` (float64 NumPy arrays or pytrees;
        integer labels stay integer), valid and away from kinks.
      cases: the shapes (or shape tuples) passed to ``sample``; scalars and
        batches among them.
      diff_argnums: positions of the floating-point arguments, each of which
        gets a gradient.
      kwargs: non-array keyword arguments bound for this entry.
      upstream: the same function in ``jax.nn`` or ``optax.losses``, if any.
      extreme: ``extreme() -> args`` at extreme but valid inputs (|x| = 1e4,
        probabilities 0 and 1), float64; the gradient must stay finite there.
      kink: the convention at non-differentiable points, in words.
      saves: what the backward rule keeps from the forward pass.
      tolerances: per-dtype tolerances for manual vs autodiff.
    """

    name: str
    family: str
    fn: Callable
    twin: Callable
    sample: Sampler
    cases: tuple
    diff_argnums: tuple[int, ...] = (0,)
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    upstream: Callable | None = None
    extreme: Callable[[], tuple] | None = None
    kink: str = "none (smooth everywhere)"
    saves: str = ""
    tolerances: Mapping[str, Tolerance] = dataclasses.field(default_factory=lambda: DEFAULT_TOLERANCES)

    @property
    def manual(self) -> Callable:
        return functools.partial(self.fn, **self.kwargs)

    @property
    def autodiff(self) -> Callable:
        return functools.partial(self.twin, **self.kwargs)

    @property
    def reference_upstream(self) -> Callable | None:
        return None if self.upstream is None else functools.partial(self.upstream, **self.kwargs)

    @property
    def qualname(self) -> str:
        return f"funcnet.{self.family}.{self.fn.__name__}"

    def tolerance(self, dtype: Any) -> Tolerance:
        return self.tolerances[np.dtype(dtype).name]


# ------------------------------------------------------------------ samplers
def _normal(rng, shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def _away_from(rng, shape, points=(0.0,), gap=0.05, scale=2.0):
    """Normal draws, each nudged at least ``gap`` away from every kink point."""
    x = _normal(rng, shape, scale)
    for p in points:
        d = x - p
        x = np.where(np.abs(d) < gap, p + np.where(d >= 0, gap, -gap) + d, x)
    return x


def _unary(points=None, scale=2.0) -> Sampler:
    if points is None:
        return lambda rng, shape: (_normal(rng, shape, scale),)
    return lambda rng, shape: (_away_from(rng, shape, points, scale=scale),)


def _sample_untied_pair(rng, shapes):
    x = _normal(rng, shapes[0])
    y = _normal(rng, shapes[1])
    # keep |x - y| >= 0.05 everywhere after broadcasting, so no probe meets a tie
    d = np.broadcast_to(y, np.broadcast_shapes(x.shape, y.shape)) - x
    if np.any(np.abs(d) < 0.05):
        return _sample_untied_pair(rng, shapes)
    return x, y


def _sample_pair(rng, shapes):
    return tuple(_normal(rng, s) for s in shapes)


def _sample_prelu(rng, shapes):
    x_shape, alpha_shape = shapes
    return _away_from(rng, x_shape), rng.uniform(0.05, 0.5, alpha_shape)


def _sample_probs(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0.0, 1.0, shape)


def _sample_logits_and_soft_labels(rng, shape):
    return _normal(rng, shape, 2.0), rng.uniform(0.0, 1.0, shape)


def _sample_logits_and_distribution(rng, shape):
    labels = rng.uniform(0.1, 1.0, shape)
    return _normal(rng, shape, 2.0), labels / labels.sum(-1, keepdims=True)


def _sample_logits_and_classes(rng, shape):
    return _normal(rng, shape, 2.0), rng.integers(0, shape[-1], shape[:-1])


def _sample_svm(rng, shape):
    scores, labels = _sample_logits_and_classes(rng, shape)
    correct = np.take_along_axis(scores, labels[..., None], -1)
    if np.any(np.abs(scores - correct + 1.0) < 0.05):
        return _sample_svm(rng, shape)
    return scores, labels


def _sample_params(rng, layout):
    """A parameter pytree ``{"dense_i": {"w": ..., "b": ...}}`` plus a PReLU slope."""
    tree = {f"dense_{i}": {"w": _away_from(rng, w), "b": _normal(rng, b)} for i, (w, b) in enumerate(layout)}
    tree["prelu"] = {"alpha": rng.uniform(0.05, 0.5, ())}
    return (tree,)


_ACTIVATION_SHAPES = ((), (5,), (3, 4), (2, 3, 4))
_SOFTMAX_SHAPES = ((5,), (3, 4), (2, 3, 4))
_BROADCAST_PAIRS = (((), ()), ((5,), (5,)), ((3, 4), (4,)), ((4, 1), (1, 3)), ((), (2, 3)))
_CLASS_SHAPES = ((3,), (4, 3), (2, 3, 5))
_LAYOUTS = ((((3, 4), (4,)),), (((3, 4), (4,)), ((4, 2), (2,))))


def _extreme_activation():
    return (np.array([-1e4, -50.0, -1.0, 0.5, 50.0, 1e4]),)


def _extreme_pair():
    return np.array([-1e4, 1e4, 3.0]), np.array([1e4, -1e4, -3.0])


def _extreme_logits():
    return np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])


# ------------------------------------------------------------------ registry
def _activation(name, sample=None, extreme=_extreme_activation, upstream=True, **kw) -> OpSpec:
    return OpSpec(
        name=name if not kw.get("kwargs") else f"{name}({', '.join(f'{k}={v}' for k, v in kw['kwargs'].items())})",
        family="nn",
        fn=getattr(nn, name),
        twin=getattr(ref.nn, name),
        sample=sample or _unary(),
        cases=kw.pop("cases", _ACTIVATION_SHAPES),
        upstream=getattr(jax.nn, name) if upstream else None,
        extreme=extreme,
        **kw,
    )


OPS: tuple[OpSpec, ...] = (
    # gates ----------------------------------------------------------------
    OpSpec("add", "gates", gates.add, ref.gates.add, _sample_pair, _BROADCAST_PAIRS, (0, 1),
           upstream=None, extreme=_extreme_pair, saves="nothing (static shapes only)"),
    OpSpec("multiply", "gates", gates.multiply, ref.gates.multiply, _sample_pair, _BROADCAST_PAIRS, (0, 1),
           extreme=_extreme_pair, saves="both inputs"),
    OpSpec("maximum", "gates", gates.maximum, ref.gates.maximum, _sample_untied_pair, _BROADCAST_PAIRS, (0, 1),
           extreme=_extreme_pair, saves="both inputs",
           kink="at a tie x == y the gradient is split equally, g/2 to each input (as jax.grad(jnp.maximum))"),
    OpSpec("matmul", "gates", gates.matmul, ref.gates.matmul, _sample_pair,
           (((3, 4), (4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))),
           (0, 1), extreme=lambda: (np.array([[1e4, -1e4], [1.0, 2.0]]), np.array([[-1e4, 3.0], [1e4, 1.0]])),
           saves="both inputs"),
    OpSpec("affine", "gates", gates.affine, ref.gates.affine, _sample_pair,
           (((5, 3), (3, 4), (4,)), ((3,), (3, 2), (2,)), ((2, 3, 4), (4, 2), (2,))),
           (0, 1, 2), extreme=lambda: (np.array([[1e4, -1e4]]), np.array([[-1e4, 3.0], [1e4, 1.0]]), np.array([1e4, 0.0])),
           saves="x and w"),
    # activations ----------------------------------------------------------
    _activation("identity", saves="nothing"),
    _activation("sigmoid", saves="the output"),
    _activation("tanh", saves="the output"),
    _activation("hard_tanh", sample=_unary((-1.0, 1.0)), saves="a boolean mask of -1 <= x <= 1",
                kink="gradient 1 at x = ±1 (closed interval), as jax.nn.hard_tanh"),
    _activation("relu", sample=_unary((0.0,)), saves="the output",
                kink="gradient 0 at x = 0, as jax.nn.relu"),
    _activation("leaky_relu", sample=_unary((0.0,)), saves="the output (slope > 0)",
                kink="gradient 1 at x = 0, as jax.nn.leaky_relu"),
    _activation("leaky_relu", sample=_unary((0.0,)), kwargs={"negative_slope": 0.2},
                saves="the output (slope > 0)", kink="gradient 1 at x = 0"),
    _activation("elu", sample=_unary((0.0,)), saves="the output (alpha > 0)",
                kink="gradient alpha at x = 0 (the left branch), as jax.nn.elu"),
    _activation("elu", sample=_unary((0.0,)), kwargs={"alpha": 0.5}, saves="the output (alpha > 0)",
                kink="gradient alpha at x = 0"),
    OpSpec("prelu", "nn", nn.prelu, ref.nn.prelu, _sample_prelu,
           (((), ()), ((5,), ()), ((3, 4), (4,)), ((2, 3, 4), (3, 1))), (0, 1),
           extreme=lambda: (_extreme_activation()[0], np.array(0.25)), saves="x and alpha",
           kink="at x = 0 the gradient is 1 in x and 0 in alpha (prelu(x, c) == leaky_relu(x, c))"),
    _activation("softplus", saves="the output"),
    _activation("silu", saves="the input"),
    _activation("gelu", saves="the input"),
    _activation("gelu", kwargs={"approximate": False}, saves="the input"),
    _activation("softmax", cases=_SOFTMAX_SHAPES, saves="the output", extreme=lambda: (_extreme_logits(),)),
    _activation("softmax", cases=_SOFTMAX_SHAPES, kwargs={"axis": 0}, saves="the output",
                extreme=lambda: (_extreme_logits(),)),
    _activation("log_softmax", cases=_SOFTMAX_SHAPES, saves="the output", extreme=lambda: (_extreme_logits(),)),
    # losses ---------------------------------------------------------------
    OpSpec("squared_error", "losses", losses.squared_error, ref.losses.squared_error, _sample_pair,
           (((), ()), ((5,), (5,)), ((4, 3), (4, 3))), (0, 1),
           upstream=optax.losses.squared_error, extreme=_extreme_pair, saves="both inputs"),
    OpSpec("l2_loss", "losses", losses.l2_loss, ref.losses.l2_loss, _sample_pair,
           (((), ()), ((5,), (5,)), ((4, 3), (4, 3))), (0, 1),
           upstream=optax.losses.l2_loss, extreme=_extreme_pair, saves="both inputs"),
    OpSpec("binary_cross_entropy", "losses", losses.binary_cross_entropy, ref.losses.binary_cross_entropy,
           _sample_probs, ((), (5,), (4, 3)), (0, 1),
           extreme=lambda: (np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5])),
           saves="both inputs",
           kink=f"each log is clamped at {losses.LOG_FLOOR} (finite loss at p = 0 or 1); the derivative "
                "of a clamped log is taken as 0"),
    OpSpec("sigmoid_binary_cross_entropy", "losses", losses.sigmoid_binary_cross_entropy,
           ref.losses.sigmoid_binary_cross_entropy, _sample_logits_and_soft_labels, ((), (5,), (4, 3)), (0, 1),
           upstream=optax.losses.sigmoid_binary_cross_entropy,
           extreme=lambda: (_extreme_activation()[0], np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0])), saves="both inputs"),
    OpSpec("softmax_cross_entropy", "losses", losses.softmax_cross_entropy, ref.losses.softmax_cross_entropy,
           _sample_logits_and_soft_labels, _CLASS_SHAPES, (0, 1),
           upstream=optax.losses.softmax_cross_entropy,
           extreme=lambda: (_extreme_logits(), np.eye(3)), saves="the log-probabilities and the labels"),
    OpSpec("softmax_cross_entropy(one-hot-like)", "losses", losses.softmax_cross_entropy,
           ref.losses.softmax_cross_entropy, _sample_logits_and_distribution, _CLASS_SHAPES, (0, 1),
           upstream=optax.losses.softmax_cross_entropy, extreme=lambda: (_extreme_logits(), np.full((3, 3), 1 / 3)),
           saves="the log-probabilities and the labels"),
    OpSpec("softmax_cross_entropy_with_integer_labels", "losses", losses.softmax_cross_entropy_with_integer_labels,
           ref.losses.softmax_cross_entropy_with_integer_labels, _sample_logits_and_classes, _CLASS_SHAPES, (0,),
           upstream=optax.losses.softmax_cross_entropy_with_integer_labels,
           extreme=lambda: (_extreme_logits(), np.array([1, 0, 2])), saves="the probabilities and the labels"),
    OpSpec("multiclass_svm_loss", "losses", losses.multiclass_svm_loss, ref.losses.multiclass_svm_loss,
           _sample_svm, _CLASS_SHAPES, (0,),
           extreme=lambda: (_extreme_logits(), np.array([1, 0, 2])),
           saves="boolean masks of the active classes and of the label",
           kink="a class exactly at the margin (s_j - s_y + margin == 0) is inactive: gradient 0"),
    OpSpec("multiclass_svm_loss(margin=2.0)", "losses", losses.multiclass_svm_loss, ref.losses.multiclass_svm_loss,
           _sample_svm, _CLASS_SHAPES, (0,), kwargs={"margin": 2.0},
           saves="boolean masks of the active classes and of the label",
           extreme=lambda: (_extreme_logits(), np.array([2, 1, 0])),
           kink="a class exactly at the margin is inactive: gradient 0"),
    OpSpec("l1_penalty", "losses", losses.l1_penalty, ref.losses.l1_penalty, _sample_params, _LAYOUTS, (0,),
           extreme=lambda: ({"w": np.array([[1e4, -1e4], [0.5, -0.5]]), "b": np.array([1e4, 1.0])},),
           saves="the weight leaves", kink="sign(0) = 0: a weight at exactly 0 gets gradient 0"),
    OpSpec("l2_penalty", "losses", losses.l2_penalty, ref.losses.l2_penalty, _sample_params, _LAYOUTS, (0,),
           extreme=lambda: ({"w": np.array([[1e4, -1e4], [0.5, -0.5]]), "b": np.array([1e4, 1.0])},),
           saves="the weight leaves"),
)


def by_name(name: str) -> OpSpec:
    """The registry entry called ``name``."""
    for spec in OPS:
        if spec.name == name:
            return spec
    raise KeyError(f"no op called {name!r} in funcnet.registry.OPS")


def cast_args(args: tuple, diff_argnums: tuple[int, ...], dtype: Any) -> tuple:
    """Cast the floating arguments (leaves of the differentiable ones) to ``dtype``."""
    import jax.numpy as jnp

    def cast(i, a):
        if i in diff_argnums:
            return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=dtype), a)
        return jax.tree.map(jnp.asarray, a)

    return tuple(cast(i, a) for i, a in enumerate(args))
