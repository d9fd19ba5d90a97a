"""Layers as pairs of pure functions, and combinators that build networks from them.

A :class:`Layer` is ``init(key, input_shape) -> (output_shape, params)`` and
``apply(params, x, *, key=None, train=False) -> y``. Shapes include the batch
axis first (use ``-1`` when it is unknown). Parameters are plain nested dicts
with readable keys::

    net = serial(Dense(128), Relu(), Dense(10))
    out_shape, params = net.init(key, (-1, 64))
    # params == {"dense_0": {"w": (64, 128), "b": (128,)}, "dense_1": {...}}
    logits = net.apply(params, x)

Every layer is built from an op namespace, :data:`MANUAL` (``funcnet.manual``:
the hand-written rules, the default; ``ops=funcnet`` names the same ops) or
``ops=funcnet.reference`` (the autodiff twins), so the same network can be built
twice and its gradients compared.
"""

from __future__ import annotations

import contextvars
import types
import warnings
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import init as initializers
from funcnet import manual, reference
from funcnet.ops.declaration import activations as declared_activations
from funcnet.ops.fused_dense import FUSABLE
from funcnet.ops.inputs import is_concrete, static_float
from funcnet.ops.norms import epsilon_argument

Shape = tuple[int, ...]
#: The op namespaces: the hand-written rules (the default ``ops=``) and their autodiff twins.
MANUAL: types.ModuleType = manual
REFERENCE: types.ModuleType = reference
#: What an op namespace holds; two namespaces with the same three modules are the same ops.
OP_FAMILIES = ("gates", "nn", "losses")

__all__ = [
    "Layer", "serial", "branches", "Dense", "ActivationThenDense", "Activation", "Identity", "Sigmoid", "Tanh",
    "HardTanh", "Relu", "LeakyRelu", "Elu", "PReLU", "Softplus", "Silu", "Gelu", "Softmax", "LogSoftmax",
    "Dropout", "Flatten", "LayerNorm", "RMSNorm", "mlp", "MANUAL", "REFERENCE", "ACTIVATIONS", "NORMS",
    "ParameterError", "Embedding", "PositionalEmbedding", "MultiHeadAttention", "TransformerBlock",
    "parallel", "ActivationDense",  # deprecated names of branches and ActivationThenDense
    "LAYER_TAP",
]

#: A hook that sees every layer with parameters as it runs, or None (the default: layers run as written).
#: :mod:`funcnet.curvature` sets it to ``tap(kind, params, inputs, output, spec) -> output`` to record each
#: layer's input and add a probe to its output, whose cotangent is the layer's per-example output cotangent.
#: ``kind`` is ``"dense"`` (spec: ``activation``, ``activation_kwargs``, ``ops``), ``"layer_norm"``,
#: ``"rms_norm"`` (spec: ``epsilon``, ``ops``) or ``"prelu"`` (spec: ``ops``).
LAYER_TAP: contextvars.ContextVar = contextvars.ContextVar("funcnet.layers.LAYER_TAP", default=None)


def _tapped(kind: str, params, inputs, output, **spec):
    tap = LAYER_TAP.get()
    return output if tap is None else tap(kind, params, inputs, output, spec)


class Layer(NamedTuple):
    """A layer: two pure functions and the name its parameters are stored under.

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params)``.
      apply: ``apply(params, x, *, key=None, train=False) -> y``.
      name: the stem of its parameter key inside :func:`serial` (``"dense"`` ->
        ``"dense_0"``); layers without parameters are not stored.
      description: a readable description used in error messages.
      ops: the op namespace it is built on (:data:`MANUAL` or ``funcnet.reference``);
        :mod:`funcnet.train` takes the named losses and the penalty from it, so a
        model and its loss cannot disagree. None for a layer that uses no ops.
    """

    init: Callable[..., tuple[Shape, Any]]
    apply: Callable[..., Any]
    name: str
    description: str
    ops: types.ModuleType | None = MANUAL


def _same_ops(a: Any, b: Any) -> bool:
    """Whether two op namespaces hold the same ops (``funcnet`` and ``funcnet.manual`` do)."""
    return a is b or all(getattr(a, f, None) is getattr(b, f, None) is not None for f in OP_FAMILIES)


def _common_ops(desc: str, layers: Sequence[Layer]) -> types.ModuleType | None:
    """The one op namespace of ``layers`` (ignoring layers that use none), or a ValueError if they mix."""
    found = []
    for layer in layers:
        ops = getattr(layer, "ops", None)
        if ops is not None and not any(_same_ops(ops, f) for f in found):
            found.append(ops)
    if len(found) > 1:
        raise ValueError(f"{desc}: its layers are built on different op namespaces "
                         f"({', '.join(f.__name__ for f in found)}); build every layer with the same ops=")
    return found[0] if found else None


def _shape_error(layer: str, message: str) -> ValueError:
    return ValueError(f"{layer}: {message}")


class ParameterError(ValueError):
    """Parameters that do not fit the layer they are applied with: missing, unexpected or mis-shaped.

    Raised at trace time (shapes are static under ``jit``). Inside :func:`serial`
    and :func:`branches` the message starts with the path of the layer's entry,
    e.g. ``params['dense_1']: Dense(8): parameter 'w' has shape (16, 8), expected (8, 8)``.
    """


def _in_entry(key: str, err: ParameterError) -> ParameterError:
    """``err`` with ``params[key]`` prepended to its path (``params['serial_0']['dense_1']: ...``)."""
    message = str(err)
    inner = message[len("params"):] if message.startswith("params[") else ": " + message
    return ParameterError(f"params[{key!r}]{inner}")


def _shape_text(shape: tuple) -> str:
    return str(tuple(shape)) if all(isinstance(n, int) for n in shape) else "(" + ", ".join(map(str, shape)) + ")"


def _exact_keys(desc: str, params: Any, names: list, *, entries: bool) -> None:
    """``params`` is a dict whose keys are exactly ``names``, else a ParameterError naming the first one missing
    or unexpected; ``entries``: the keys hold sub-layers' dicts (a composite layer's), not arrays."""
    noun = "parameter entry" if entries else "parameter"
    listed = ", ".join(names) if entries else f"keys {names}"
    if not isinstance(params, Mapping):
        raise ParameterError(f"{desc}: parameters must be a dict with {'entries ' if entries else ''}{listed}, "
                             f"got {type(params).__name__}")
    missing = [k for k in names if k not in params]
    if missing:
        raise ParameterError(f"{desc}: missing {noun} {missing[0]!r} (got {'' if entries else 'keys '}"
                             f"{sorted(map(str, params))}); were these parameters made by this network's init?")
    extra = sorted(str(k) for k in params if k not in names)
    if extra:
        raise ParameterError(f"{desc}: unexpected {noun} {extra[0]!r} (expected {listed})")


def _check_params(desc: str, params: Any, expected: dict[str, tuple]) -> None:
    """``params`` is a dict with exactly the keys of ``expected``, each array of the expected shape.

    A layer without parameters also accepts ``None``.
    """
    if params is None and not expected:
        return
    _exact_keys(desc, params, list(expected), entries=False)
    for k, shape in expected.items():
        got = tuple(jnp.shape(params[k]))
        if got != tuple(shape):
            raise ParameterError(f"{desc}: parameter {k!r} has shape {got}, expected {_shape_text(shape)}; "
                                 "were these parameters made for a network of another shape?")


def _is_size(n: Any) -> bool:
    """A positive integer (NumPy integers too; not a bool)."""
    return isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 1


def _split_key(desc: str, key: Any, n: int):
    """``jax.random.split(key, n)``, or a TypeError naming the layer when ``key`` is not a PRNG key."""
    _check_key(desc, key)
    return jax.random.split(key, n)


def _check_key(desc: str, key: Any) -> None:
    is_key = isinstance(key, (jax.Array, np.ndarray)) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == np.uint32 and key.shape[-1:] == (2,)))
    if not is_key:
        raise TypeError(f"{desc}: init needs a PRNG key, e.g. init(jax.random.key(0), ...), got {key!r:.60}")


def _rate(fn: str, name: str, rate: Any) -> float:
    """A dropout rate: a number in [0, 1), or an error naming ``fn`` and ``name``."""
    rate = static_float(fn, name, rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{fn}: {name} must be in [0, 1) (the probability of dropping a unit), got {rate!r}")
    return rate


def _check_layers(fn: str, layers: Sequence[Any]) -> None:
    bad = [layer for layer in layers if not isinstance(layer, Layer)]
    if bad:
        raise TypeError(f"{fn}: expected layers (e.g. Dense(8), Relu()), got {bad[0]!r:.60}")


def _input_shape(desc: str, input_shape: Any) -> Shape:
    """``input_shape`` as a tuple of ints (batch axis first), or a ValueError naming the layer."""
    if input_shape is None:
        raise ValueError(f"{desc}: init needs the input shape, batch axis first, e.g. init(key, (-1, 4)) "
                         "(-1: any batch size)")
    if isinstance(input_shape, (int, str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(f"{desc}: input_shape must be a tuple of ints, batch axis first (e.g. (-1, 4)), "
                         f"got {input_shape!r}")
    return tuple(input_shape)


# ---------------------------------------------------------------------- Dense
def Dense(units: int, w_init: Callable | None = None, b_init: Callable = initializers.zeros,
          *, ops: types.ModuleType = MANUAL) -> Layer:
    """Fully connected layer ``y = x @ w + b`` on the last axis (``funcnet.gates.affine``).

    Args:
      units: number of outputs.
      w_init: initializer of ``w`` (default Glorot uniform).
      b_init: initializer of ``b`` (default zeros).
      ops: the op namespace (:data:`MANUAL` or ``funcnet.reference``).
    """
    return _dense("Dense", units, w_init, b_init, ops, None, {})


def _dense(fn: str, units, w_init, b_init, ops, activation: str | None, activation_kwargs: dict) -> Layer:
    """A Dense layer, applying ``activation`` to its input first if given (``gates.activation_affine``)."""
    if not _is_size(units):
        raise ValueError(f"{fn}: units must be a positive int, got {units!r}")
    units = int(units)
    w_init = initializers.glorot_uniform() if w_init is None else w_init
    desc = f"Dense({units})" if activation is None else f"Dense({units}) after {activation}"

    def init(key, input_shape=None):
        input_shape = _input_shape(desc, input_shape)
        if len(input_shape) < 1 or input_shape[-1] is None or input_shape[-1] < 1:
            raise _shape_error(desc, f"needs inputs with a known last axis, got input shape {input_shape}")
        k_w, k_b = _split_key(desc, key, 2)
        params = {"w": w_init(k_w, (input_shape[-1], units)), "b": b_init(k_b, (units,))}
        return input_shape[:-1] + (units,), params

    def apply(params, x, *, key=None, train=False):
        w_shape = tuple(jnp.shape(params["w"])) if isinstance(params, Mapping) and "w" in params else ()
        # the input width is whatever w says (checked against x below); the output width is this layer's
        _check_params(desc, params, {"w": (w_shape[0] if len(w_shape) == 2 else "inputs", units), "b": (units,)})
        w = params["w"]
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise _shape_error(desc, f"expected inputs whose last axis is {w.shape[0]}, got shape {tuple(x.shape)}")
        if activation is None:
            out = ops.gates.affine(x, w, params["b"])
        else:
            out = ops.gates.activation_affine(x, w, params["b"], activation, **activation_kwargs)
        return _tapped("dense", params, x, out, activation=activation, activation_kwargs=activation_kwargs, ops=ops)

    return Layer(init, apply, "dense", desc, ops)


def ActivationThenDense(activation: str, units: int, w_init: Callable | None = None,
                        b_init: Callable = initializers.zeros, *, ops: types.ModuleType = MANUAL,
                        **activation_kwargs) -> Layer:
    """The activation, then a Dense layer, as one layer: ``f(z) @ w + b`` (``gates.activation_affine``).

    ``serial(Activation(activation), Dense(units))`` with the same parameters
    (``{"w", "b"}`` under a ``dense_<i>`` key) and values, but its reverse rule
    keeps only the input ``z``, so a chain of them (what :func:`mlp` builds) keeps
    one tensor per layer for the backward pass, whatever the activation.
    """
    if activation not in FUSABLE:
        raise ValueError(f"ActivationThenDense: unknown activation {activation!r}; known: {', '.join(FUSABLE)} "
                         "(prelu has parameters: use serial(PReLU(), Dense(units)))")
    return _dense("ActivationThenDense", units, w_init, b_init, ops, activation, activation_kwargs)


def _deprecated(old: str, new: Callable) -> Callable:
    """``new`` under its old name ``old``, warning (DeprecationWarning) on every call; for one release."""

    def call(*args, **kwargs):
        warnings.warn(f"layers.{old} is deprecated: use layers.{new.__name__} (the same layer)", DeprecationWarning,
                      stacklevel=2)
        return new(*args, **kwargs)

    call.__name__ = call.__qualname__ = old
    call.__doc__ = f"Deprecated name of :func:`{new.__name__}`."
    return call


ActivationDense = _deprecated("ActivationDense", ActivationThenDense)


# ---------------------------------------------------------------- activations
def _parameterless(name: str, desc: str, fn: Callable[[Any], Any]) -> Layer:
    def init(key, input_shape=None):
        return _input_shape(desc, input_shape), {}

    def apply(params, x, *, key=None, train=False):
        _check_params(desc, params, {})
        return fn(x)

    return Layer(init, apply, name, desc)


def Activation(name: str, *, ops: types.ModuleType = MANUAL, **kwargs) -> Layer:
    """The activation ``ops.nn.<name>`` as a layer, e.g. ``Activation("leaky_relu", negative_slope=0.1)``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Activation: unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    if name == "prelu":
        return PReLU(ops=ops, **kwargs)
    fn = getattr(ops.nn, name)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return _parameterless(name, f"{name}({args})", lambda x: fn(x, **kwargs))._replace(ops=ops)


def Identity(*, ops=MANUAL): return Activation("identity", ops=ops)  # noqa: E704
def Sigmoid(*, ops=MANUAL): return Activation("sigmoid", ops=ops)  # noqa: E704
def Tanh(*, ops=MANUAL): return Activation("tanh", ops=ops)  # noqa: E704
def HardTanh(*, ops=MANUAL): return Activation("hard_tanh", ops=ops)  # noqa: E704
def Relu(*, ops=MANUAL): return Activation("relu", ops=ops)  # noqa: E704
def LeakyRelu(negative_slope=1e-2, *, ops=MANUAL): return Activation("leaky_relu", ops=ops, negative_slope=negative_slope)  # noqa: E704,E501
def Elu(alpha=1.0, *, ops=MANUAL): return Activation("elu", ops=ops, alpha=alpha)  # noqa: E704
def Softplus(*, ops=MANUAL): return Activation("softplus", ops=ops)  # noqa: E704
def Silu(*, ops=MANUAL): return Activation("silu", ops=ops)  # noqa: E704
def Gelu(approximate=True, *, ops=MANUAL): return Activation("gelu", ops=ops, approximate=approximate)  # noqa: E704
def Softmax(axis=-1, *, ops=MANUAL): return Activation("softmax", ops=ops, axis=axis)  # noqa: E704
def LogSoftmax(axis=-1, *, ops=MANUAL): return Activation("log_softmax", ops=ops, axis=axis)  # noqa: E704


def PReLU(alpha_init: float = 0.25, *, per_channel: bool = True, ops: types.ModuleType = MANUAL) -> Layer:
    """Parametric ReLU with a trainable slope ``alpha`` (one per feature, or one shared scalar)."""
    desc = f"PReLU(alpha_init={alpha_init})"

    def init(key, input_shape=None):
        input_shape = _input_shape(desc, input_shape)
        shape = (input_shape[-1],) if per_channel and input_shape else ()
        return input_shape, {"alpha": jnp.full(shape, alpha_init, jnp.float32)}

    def apply(params, x, *, key=None, train=False):
        shape = (x.shape[-1],) if per_channel and jnp.ndim(x) else ()
        _check_params(desc, params, {"alpha": shape})
        return _tapped("prelu", params, x, ops.nn.prelu(x, params["alpha"]), ops=ops)

    return Layer(init, apply, "prelu", desc, ops)


#: Activation names accepted by :func:`Activation` and :func:`mlp`: every op of ``funcnet.nn`` declared as
#: an activation (derived from the declarations, so a new activation appears here; ``glu`` or ``one_hot``
#: do not).
ACTIVATIONS = tuple(declared_activations())


# ------------------------------------------------------------ LayerNorm, RMSNorm
def _norm_layer(kind: str, epsilon: float, ops: types.ModuleType) -> Layer:
    name = "LayerNorm" if kind == "layer_norm" else "RMSNorm"
    epsilon = epsilon_argument(name, epsilon)  # now, not at the first apply
    desc = f"{name}(epsilon={epsilon})"
    fn = getattr(ops.nn, kind)
    centred = kind == "layer_norm"

    def init(key, input_shape=None):
        input_shape = _input_shape(desc, input_shape)
        if len(input_shape) < 1 or input_shape[-1] is None or input_shape[-1] < 1:
            raise _shape_error(desc, f"needs inputs with a known last axis, got input shape {input_shape}")
        width = input_shape[-1]
        params = {"scale": jnp.ones((width,), jnp.float32)}
        if centred:
            params["bias"] = jnp.zeros((width,), jnp.float32)
        return input_shape, params

    def apply(params, x, *, key=None, train=False):
        width = x.shape[-1] if jnp.ndim(x) else None
        _check_params(desc, params, {"scale": (width,), "bias": (width,)} if centred else {"scale": (width,)})
        extra = (params["bias"],) if centred else ()
        out = fn(x, params["scale"], *extra, epsilon=epsilon)
        return _tapped(kind, params, x, out, epsilon=epsilon, ops=ops)

    return Layer(init, apply, kind, desc, ops)


def LayerNorm(epsilon: float = 1e-5, *, ops: types.ModuleType = MANUAL) -> Layer:
    """Layer normalisation over the last axis (``funcnet.nn.layer_norm``), with a learned ``scale`` (ones) and
    ``bias`` (zeros) per feature."""
    return _norm_layer("layer_norm", epsilon, ops)


def RMSNorm(epsilon: float = 1e-6, *, ops: types.ModuleType = MANUAL) -> Layer:
    """RMS normalisation over the last axis (``funcnet.nn.rms_norm``), with a learned ``scale`` (ones) per
    feature."""
    return _norm_layer("rms_norm", epsilon, ops)


#: The normalisation layers :func:`mlp` can put after each hidden Dense layer (``norm=``).
NORMS = {"layer_norm": LayerNorm, "rms_norm": RMSNorm}


# ------------------------------------------------------------ Dropout, Flatten
def Dropout(rate: float, *, ops: types.ModuleType = MANUAL) -> Layer:
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the rest by 1/(1-rate).

    Needs ``key`` when ``train=True``; the identity when ``train=False``.
    """
    rate = _rate("Dropout", "rate", rate)
    desc = f"Dropout({rate})"

    def init(key, input_shape=None):
        return _input_shape(desc, input_shape), {}

    def apply(params, x, *, key=None, train=False):
        _check_params(desc, params, {})
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(f"{desc}: apply(..., train=True) needs a PRNG key: pass key=jax.random.key(...)")
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return ops.gates.multiply(x, keep.astype(x.dtype) / (1.0 - rate))

    return Layer(init, apply, "dropout", desc, ops)


def Flatten() -> Layer:
    """Flatten every axis but the first (the batch axis)."""

    def init(key, input_shape=None):
        input_shape = _input_shape("Flatten()", input_shape)
        if len(input_shape) < 1:
            raise _shape_error("Flatten()", f"needs a batch axis, got input shape {input_shape}")
        size = 1
        for n in input_shape[1:]:
            size *= n
        return (input_shape[0], size), {}

    def apply(params, x, *, key=None, train=False):
        _check_params("Flatten()", params, {})
        return x.reshape(x.shape[0], -1)

    return Layer(init, apply, "flatten", "Flatten()", None)


# ---------------------------------------------------------------- combinators
def _param_keys(layers: Sequence[Layer]) -> list[str]:
    """``dense_0, relu, dense_1, ...``: the dict key of each layer (numbered per kind)."""
    counts: dict[str, int] = {}
    keys = []
    for layer in layers:
        keys.append(f"{layer.name}_{counts.get(layer.name, 0)}")
        counts[layer.name] = counts.get(layer.name, 0) + 1
    return keys


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence; parameters are stored as ``{"dense_0": ..., "dense_1": ...}``.

    Layers without parameters (activations, dropout, flatten) take no entry.
    Each layer that needs randomness (dropout) gets its own key split from ``key``.
    """
    if not layers:
        raise ValueError("serial: needs at least one layer")
    _check_layers("serial", layers)
    keys = _param_keys(layers)
    desc = "serial(" + ", ".join(l.description for l in layers) + ")"

    def init(key, input_shape=None):
        params = {}
        shape = _input_shape(desc, input_shape)
        for layer, name, k in zip(layers, keys, _split_key(desc, key, len(layers))):
            shape, p = layer.init(k, shape)
            if p:
                params[name] = p
        return shape, params

    def apply(params, x, *, key=None, train=False):
        if not isinstance(params, Mapping):
            raise ParameterError(f"{desc}: parameters must be a dict keyed by layer ({', '.join(keys)}), "
                                 f"got {type(params).__name__}")
        extra = sorted(str(k) for k in params if k not in keys)
        if extra:
            raise ParameterError(f"{desc}: unexpected parameter entry {extra[0]!r}; the layers' entries are "
                                 f"{', '.join(keys)}: were these parameters made for another network?")
        subkeys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        for layer, name, k in zip(layers, keys, subkeys):
            try:
                x = layer.apply(params.get(name, {}), x, key=k, train=train)
            except ParameterError as err:
                raise _in_entry(name, err) from None
        return x

    return Layer(init, apply, "serial", desc, _common_ops(desc, layers))


def branches(*layers: Layer) -> Layer:
    """Apply ``layers[i]`` to the i-th element of a tuple input (stax's ``parallel``); parameters under ``branch_i``.

    The layer's own entry inside :func:`serial` keeps the stem ``parallel``
    (``parallel_0``), as the parameters saved before the rename have it.
    """
    if not layers:
        raise ValueError("branches: needs at least one layer")
    _check_layers("branches", layers)

    def init(key, input_shapes=None):
        if input_shapes is None:
            raise ValueError(f"branches: init needs one input shape per branch ({len(layers)}), "
                             "e.g. init(key, ((-1, 4), (-1, 2)))")
        if len(input_shapes) != len(layers):
            raise ValueError(f"branches: {len(layers)} branches but {len(input_shapes)} input shapes")
        outs, params = [], {}
        for i, (layer, shape, k) in enumerate(zip(layers, input_shapes, _split_key("branches", key, len(layers)))):
            out, p = layer.init(k, shape)
            outs.append(out)
            params[f"branch_{i}"] = p
        return tuple(outs), params

    def apply(params, xs, *, key=None, train=False):
        if len(xs) != len(layers):
            raise ValueError(f"branches: {len(layers)} branches but {len(xs)} inputs")
        names = [f"branch_{i}" for i in range(len(layers))]
        if not isinstance(params, Mapping) or sorted(map(str, params)) != sorted(names):
            got = sorted(map(str, params)) if isinstance(params, Mapping) else type(params).__name__
            raise ParameterError(f"branches: parameters must be a dict with entries {', '.join(names)}, got {got}")
        subkeys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        outs = []
        for name, layer, x, k in zip(names, layers, xs, subkeys):
            try:
                outs.append(layer.apply(params[name], x, key=k, train=train))
            except ParameterError as err:
                raise _in_entry(name, err) from None
        return tuple(outs)

    desc = "branches(" + ", ".join(l.description for l in layers) + ")"
    return Layer(init, apply, "parallel", desc, _common_ops(desc, layers))


parallel = _deprecated("parallel", branches)


def mlp(sizes: Sequence[int], activation: str = "relu", output_activation: str | None = None, *,
        w_init: Callable | None = None, dropout: float = 0.0, norm: str | None = None,
        fused: bool = True, ops: types.ModuleType = MANUAL, **activation_kwargs) -> Layer:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``sizes[0]`` is the input width (checked at ``init``); each hidden Dense is
    followed by ``norm`` (``"layer_norm"`` or ``"rms_norm"``, if given), then
    ``activation`` (and dropout if ``dropout > 0``); the output layer by
    ``output_activation`` (none by default: logits).

    With ``fused=True`` (the default) each activation and the Dense layer after
    it are one :func:`ActivationThenDense` (``gates.activation_affine``), so the
    backward pass keeps one tensor per layer (each layer's pre-activation)
    whatever the activation; the parameters and values are those of
    ``fused=False``. Dropout and ``prelu`` (whose slope is a parameter) sit
    between the two, so with them the layers stay apart; so they do with any
    ``ops`` but :data:`MANUAL` (``funcnet.reference`` builds the unfused
    network on autodiff, and a namespace of your own keeps its own affine and
    activation ops).
    """
    if norm is not None and norm not in NORMS:
        raise ValueError(f"mlp: unknown norm {norm!r}; known: {', '.join(NORMS)} (or None)")
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"mlp: sizes must be a list of layer widths (input, ..., output), got {sizes!r:.60}")
    sizes = list(sizes)
    if len(sizes) < 2 or not all(_is_size(n) for n in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints (input, ..., output), got {sizes}")
    sizes = [int(n) for n in sizes]
    if not isinstance(fused, (bool, np.bool_)):  # "no" would be true
        raise TypeError(f"mlp: fused must be True or False, got {fused!r:.60}")
    dropout = _rate("mlp", "dropout", dropout)
    def build(fuse: bool) -> Layer:
        layers: list[Layer] = []
        for i, width in enumerate(sizes[1:]):
            if i and fuse:
                layers.append(ActivationThenDense(activation, width, w_init, ops=ops, **activation_kwargs))
            else:
                if i:
                    layers.append(Activation(activation, ops=ops, **activation_kwargs))
                    if dropout:
                        layers.append(Dropout(dropout, ops=ops))
                layers.append(Dense(width, w_init, ops=ops))
            if norm is not None and i < len(sizes) - 2:
                layers.append(NORMS[norm](ops=ops))
        if output_activation is not None:
            layers.append(Activation(output_activation, ops=ops))
        return serial(*layers)

    unfused = build(False)
    # the same parameters either way: the unfused network draws them (its keys split per layer)
    fuse = fused and _same_ops(ops, MANUAL) and not dropout and activation != "prelu" and len(sizes) > 2
    net = build(True) if fuse else unfused

    desc = f"mlp({sizes}, {activation})"

    def init(key, input_shape=None):
        _check_key(desc, key)
        input_shape = (-1, sizes[0]) if input_shape is None else tuple(input_shape)
        if input_shape[-1] != sizes[0]:
            raise ValueError(f"mlp{tuple(sizes)}: input width is {sizes[0]}, got input shape {input_shape}")
        return unfused.init(key, input_shape)

    return Layer(init, net.apply, "mlp", desc, ops)


# ------------------------------------------------- Embedding, attention, transformer blocks
def _embedding_init(key, shape, dtype=jnp.float32):
    """Truncated normal with variance 1/features (that of flax's ``nn.Embed``): rows of about unit norm."""
    return initializers.lecun_normal()(key, tuple(shape)[::-1], dtype).T


def _token_ids(desc: str, ids: Any, rows: int):
    """``ids`` as an integer array (its values in ``[0, rows)`` when known at trace time), or an error naming
    the layer."""
    if not hasattr(ids, "dtype"):
        ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{desc}: expected integer token ids, got {ids.dtype}{list(jnp.shape(ids))}; "
                        "convert them with .astype(jnp.int32)")
    if is_concrete(ids) and np.size(ids):
        values = np.asarray(ids)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{desc}: ids must lie in [0, {rows}), got values from {lo} to {hi}")
    return jnp.asarray(ids)


def _entries(desc: str, params: Any, names: Sequence[str]) -> None:
    """``params`` is a dict with exactly the entries ``names`` (each a dict of its own), else a ParameterError."""
    _exact_keys(desc, params, list(names), entries=True)


def _in(name: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, with ``params[name]`` prepended to the path of a ParameterError it raises."""
    try:
        return fn(*args, **kwargs)
    except ParameterError as err:
        raise _in_entry(name, err) from None


def _sequence_input(desc: str, x: Any, width: int | None = None) -> None:
    """``x`` is ``(batch, length, features)`` (with ``features == width`` if given), else a ValueError."""
    shape = tuple(jnp.shape(x))
    if len(shape) != 3 or (width is not None and shape[-1] != width):
        want = "(batch, length, features)" if width is None else f"(batch, length, {width})"
        raise _shape_error(desc, f"expected inputs of shape {want}, got shape {shape}")


def _sequence_shape(desc: str, input_shape: Any) -> Shape:
    shape = _input_shape(desc, input_shape)
    if len(shape) != 3 or shape[-1] is None or shape[-1] < 1:
        raise _shape_error(desc, f"needs inputs (batch, length, features) with a known feature axis, got input "
                                 f"shape {shape}")
    return shape


def _dropped(desc: str, ops: types.ModuleType, rate: float, y, key, train: bool):
    """Inverted dropout of ``y`` in training (the :func:`Dropout` layer's), or ``y`` itself."""
    if not train or rate == 0.0:
        return y
    if key is None:
        raise ValueError(f"{desc}: apply(..., train=True) needs a PRNG key for its dropout: pass "
                         "key=jax.random.key(...)")
    return Dropout(rate, ops=ops).apply({}, y, key=key, train=True)


def Embedding(vocab_size: int, features: int, w_init: Callable | None = None, *,
              ops: types.ModuleType = MANUAL) -> Layer:
    """Token embedding: integer ids ``(...)`` -> rows of a learned table, ``(..., features)`` (``gates.embedding``).

    ``y[..., :] = table[ids[...], :]`` with ``table`` of shape
    ``(vocab_size, features)`` (the parameter ``{"table"}``). The reverse rule
    is a scatter-add (a row read at several positions receives the sum of
    their gradients), the forward rule a gather of the tangent table; the ids
    get no gradient.

    Args:
      vocab_size: number of rows (ids lie in ``[0, vocab_size)``).
      features: width of each row.
      w_init: initializer of the table (default: truncated normal with
        variance 1/features, as flax's ``nn.Embed``).
      ops: the op namespace (:data:`MANUAL` or ``funcnet.reference``).

    The ids must be integers (a TypeError at trace time otherwise); concrete
    ids outside ``[0, vocab_size)`` raise a ValueError naming the layer; under
    ``jit`` such an id gives a row of NaN (see ``funcnet.gates.embedding``).
    """
    for name, n in (("vocab_size", vocab_size), ("features", features)):
        if not _is_size(n):
            raise ValueError(f"Embedding: {name} must be a positive int, got {n!r}")
    rows, width = int(vocab_size), int(features)
    w_init = _embedding_init if w_init is None else w_init
    desc = f"Embedding({rows}, {width})"

    def init(key, input_shape=None):
        input_shape = _input_shape(desc, input_shape)
        _check_key(desc, key)
        return input_shape + (width,), {"table": w_init(key, (rows, width))}

    def apply(params, x, *, key=None, train=False):
        _check_params(desc, params, {"table": (rows, width)})
        return ops.gates.embedding(params["table"], _token_ids(desc, x, rows))

    return Layer(init, apply, "embedding", desc, ops)


def PositionalEmbedding(max_length: int, w_init: Callable | None = None, *,
                        ops: types.ModuleType = MANUAL) -> Layer:
    """Adds a learned vector per position: ``y[b, t] = x[b, t] + table[t]`` for inputs ``(batch, length, features)``.

    The parameter ``{"table"}`` has shape ``(max_length, features)``; inputs
    may be shorter than ``max_length`` (the first ``length`` rows are used).
    Built from ``gates.embedding`` (ids ``0 .. length-1``) and ``gates.add``.

    Args:
      max_length: the longest sequence the layer accepts.
      w_init: initializer of the table (default as :func:`Embedding`'s).
      ops: the op namespace (:data:`MANUAL` or ``funcnet.reference``).
    """
    if not _is_size(max_length):
        raise ValueError(f"PositionalEmbedding: max_length must be a positive int, got {max_length!r}")
    rows = int(max_length)
    w_init = _embedding_init if w_init is None else w_init
    desc = f"PositionalEmbedding({rows})"

    def init(key, input_shape=None):
        input_shape = _sequence_shape(desc, input_shape)
        if input_shape[1] is not None and input_shape[1] > rows:
            raise _shape_error(desc, f"sequences of length {input_shape[1]} are longer than max_length {rows}")
        _check_key(desc, key)
        return input_shape, {"table": w_init(key, (rows, input_shape[-1]))}

    def apply(params, x, *, key=None, train=False):
        table = params.get("table") if isinstance(params, Mapping) else None
        width = jnp.shape(table)[-1] if table is not None and jnp.ndim(table) == 2 else "features"
        _check_params(desc, params, {"table": (rows, width)})
        _sequence_input(desc, x, params["table"].shape[-1])
        length = x.shape[1]
        if length > rows:
            raise _shape_error(desc, f"got sequences of length {length}, longer than max_length {rows}")
        return ops.gates.add(x, ops.gates.embedding(params["table"], np.arange(length)))

    return Layer(init, apply, "positional_embedding", desc, ops)


_ATTENTION_ENTRIES = ("query", "key", "value", "out")


def MultiHeadAttention(num_heads: int, head_dim: int | None = None, *, causal: bool = False, dropout: float = 0.0,
                       w_init: Callable | None = None, b_init: Callable = initializers.zeros,
                       ops: types.ModuleType = MANUAL) -> Layer:
    """Multi-head self-attention on inputs ``(batch, length, features)``; the output has the input's shape.

    With D = features, N = ``num_heads`` and H = ``head_dim`` (default D / N)::

        q, k, v = x Wq + bq, x Wk, x Wv + bv             (each (B, T, N·H), split into N heads)
        o = softmax(q kᵀ / √H [+ causal mask]) v          per head (funcnet.nn.dot_product_attention)
        y = dropout(o Wo + bo)                            (dropout only with train=True and a key)

    The projections are ``gates.affine`` (``gates.matmul`` for the key),
    the attention the streaming ``nn.dot_product_attention`` (its reverse rule
    recomputes the probabilities; the T × T matrix is never held). Parameters:
    ``{"query": {"w", "b"}, "key": {"w"}, "value": {"w", "b"}, "out": {"w",
    "b"}}``. The key has no bias: it would add ``q·b_k`` to every logit of a
    row, which the softmax ignores, so its gradient would always be zero. With
    ``causal=True`` position t attends to positions ≤ t only.

    Args:
      num_heads: number of heads N.
      head_dim: width H of each head (default: features // num_heads, which must divide).
      causal: mask future positions.
      dropout: rate of the inverted dropout on the output (training only).
      w_init: initializer of the projections' weights (default Glorot uniform).
      b_init: initializer of their biases (default zeros).
      ops: the op namespace (:data:`MANUAL` or ``funcnet.reference``).
    """
    if not _is_size(num_heads):
        raise ValueError(f"MultiHeadAttention: num_heads must be a positive int, got {num_heads!r}")
    if head_dim is not None and not _is_size(head_dim):
        raise ValueError(f"MultiHeadAttention: head_dim must be a positive int or None, got {head_dim!r}")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"MultiHeadAttention: causal must be True or False, got {causal!r:.60}")
    rate = _rate("MultiHeadAttention", "dropout", dropout)
    heads, causal = int(num_heads), bool(causal)
    w_init = initializers.glorot_uniform() if w_init is None else w_init
    desc = f"MultiHeadAttention({heads}{'' if head_dim is None else f', {head_dim}'}" \
           f"{', causal' if causal else ''}{f', dropout={rate}' if rate else ''})"

    def init(key, input_shape=None):
        input_shape = _sequence_shape(desc, input_shape)
        width = input_shape[-1]
        if head_dim is None and width % heads:
            raise _shape_error(desc, f"{width} features do not split into {heads} heads; pass head_dim")
        inner = heads * (width // heads if head_dim is None else int(head_dim))
        params = {}
        for name, k in zip(_ATTENTION_ENTRIES, _split_key(desc, key, 4)):
            n_in, n_out = (inner, width) if name == "out" else (width, inner)
            k_w, k_b = jax.random.split(k)
            params[name] = {"w": w_init(k_w, (n_in, n_out))}
            if name != "key":
                params[name]["b"] = b_init(k_b, (n_out,))
        return input_shape, params

    def apply(params, x, *, key=None, train=False):
        _entries(desc, params, _ATTENTION_ENTRIES)
        _sequence_input(desc, x)
        B, T, width = x.shape
        w = params["query"].get("w") if isinstance(params["query"], Mapping) else None
        inner = jnp.shape(w)[1] if w is not None and jnp.ndim(w) == 2 else "heads * head_dim"
        for name in _ATTENTION_ENTRIES:
            n_in, n_out = (inner, width) if name == "out" else (width, inner)
            expected = {"w": (n_in, n_out)} if name == "key" else {"w": (n_in, n_out), "b": (n_out,)}
            _in(name, _check_params, desc, params[name], expected)
        if inner % heads:
            raise ParameterError(f"{desc}: the projections' width {inner} does not split into {heads} heads")

        def heads_of(y):
            return y.reshape(B, T, heads, inner // heads)

        q = heads_of(ops.gates.affine(x, params["query"]["w"], params["query"]["b"]))
        k = heads_of(ops.gates.matmul(x, params["key"]["w"]))
        v = heads_of(ops.gates.affine(x, params["value"]["w"], params["value"]["b"]))
        o = ops.nn.dot_product_attention(q, k, v, is_causal=causal).reshape(B, T, inner)
        y = ops.gates.affine(o, params["out"]["w"], params["out"]["b"])
        return _dropped(desc, ops, rate, y, key, train)

    return Layer(init, apply, "multi_head_attention", desc, ops)


_BLOCK_ENTRIES = ("attention_norm", "attention", "mlp_norm", "mlp_in", "mlp_out")


def TransformerBlock(num_heads: int, mlp_ratio: int = 4, *, head_dim: int | None = None, norm: str = "layer_norm",
                     causal: bool = False, dropout: float = 0.0, activation: str = "gelu",
                     w_init: Callable | None = None, ops: types.ModuleType = MANUAL) -> Layer:
    """A pre-norm transformer block on inputs ``(batch, length, features)``; the output has the input's shape.

    ::

        h = x + MultiHeadAttention(norm(x))                      (its dropout on its output)
        y = h + dropout(ActivationThenDense(activation, D)(Dense(mlp_ratio·D)(norm(h))))

    i.e. the MLP is ``f(norm(h) W1 + b1) W2 + b2`` with f = ``activation``
    (gelu, tanh-approximated, by default), its second layer the fused
    :func:`ActivationThenDense`. Parameters: ``{"attention_norm", "attention",
    "mlp_norm", "mlp_in", "mlp_out"}``, the norms' ``{"scale"[, "bias"]}``,
    the attention's as :func:`MultiHeadAttention`'s, the MLP's ``{"w", "b"}``.
    The residual sums are ``gates.add``: every derivative in the block is a
    hand-written rule (or, with ``ops=funcnet.reference``, autodiff).

    Args:
      num_heads: number of attention heads.
      mlp_ratio: the MLP's hidden width as a multiple of the features.
      head_dim: width of each head (default: features // num_heads).
      causal: mask future positions in the attention.
      norm: ``"layer_norm"`` or ``"rms_norm"`` (default epsilons).
      dropout: rate of the dropout on the attention's and the MLP's outputs (training only).
      activation: the MLP's activation (any of ``ActivationThenDense``'s).
      w_init: initializer of every weight matrix (default Glorot uniform).
      ops: the op namespace (:data:`MANUAL` or ``funcnet.reference``).
    """
    if not _is_size(mlp_ratio):
        raise ValueError(f"TransformerBlock: mlp_ratio must be a positive int, got {mlp_ratio!r}")
    if norm not in NORMS:
        raise ValueError(f"TransformerBlock: unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if activation not in FUSABLE:
        raise ValueError(f"TransformerBlock: unknown activation {activation!r}; known: {', '.join(FUSABLE)}")
    rate = _rate("TransformerBlock", "dropout", dropout)
    ratio = int(mlp_ratio)
    attention = MultiHeadAttention(num_heads, head_dim, causal=causal, dropout=rate, w_init=w_init, ops=ops)
    attention_norm, mlp_norm = NORMS[norm](ops=ops), NORMS[norm](ops=ops)
    desc = f"TransformerBlock({attention.description.removeprefix('MultiHeadAttention(').removesuffix(')')}" \
           f", mlp_ratio={ratio}, {norm}, {activation})"
    mlps: dict[int, tuple[Layer, Layer]] = {}

    def mlp_layers(width: int) -> tuple[Layer, Layer]:
        if width not in mlps:
            mlps[width] = (Dense(ratio * width, w_init, ops=ops), ActivationThenDense(activation, width, w_init, ops=ops))
        return mlps[width]

    def init(key, input_shape=None):
        input_shape = _sequence_shape(desc, input_shape)
        mlp_in, mlp_out = mlp_layers(input_shape[-1])
        params, shape = {}, input_shape
        for name, layer, k in zip(_BLOCK_ENTRIES, (attention_norm, attention, mlp_norm, mlp_in, mlp_out),
                                  _split_key(desc, key, len(_BLOCK_ENTRIES))):
            shape, params[name] = _in(name, layer.init, k, shape)
        return input_shape, params

    def apply(params, x, *, key=None, train=False):
        _entries(desc, params, _BLOCK_ENTRIES)
        _sequence_input(desc, x)
        if train and rate and key is None:
            raise ValueError(f"{desc}: apply(..., train=True) needs a PRNG key for its dropout: pass "
                             "key=jax.random.key(...)")
        k_attention, k_mlp = (None, None) if key is None else tuple(jax.random.split(key))
        mlp_in, mlp_out = mlp_layers(x.shape[-1])
        a = _in("attention", attention.apply, params["attention"],
                _in("attention_norm", attention_norm.apply, params["attention_norm"], x), key=k_attention, train=train)
        h = ops.gates.add(x, a)
        m = _in("mlp_norm", mlp_norm.apply, params["mlp_norm"], h)
        m = _in("mlp_out", mlp_out.apply, params["mlp_out"], _in("mlp_in", mlp_in.apply, params["mlp_in"], m))
        return ops.gates.add(h, _dropped(desc, ops, rate, m, k_mlp, train))

    return Layer(init, apply, "transformer_block", desc, ops)
