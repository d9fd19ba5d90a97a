"""Helpers shared by the manual ops: input checks, broadcasting, precision.

Everything here runs at trace time (shapes and dtypes are static), so the
errors it raises point at the user's call, not at a compiled program.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

FORWARD_MODE_HINT = (
    "funcnet ops are jax.custom_vjp functions: they have hand-written reverse-mode "
    "rules and no forward mode, so jax.jvp and jax.jacfwd cannot go through them. "
    "For second derivatives use funcnet.hessian (reverse-over-reverse through the "
    "manual rules); for forward mode use the autodiff twins in funcnet.reference."
)


def with_forward_mode_hint(fn: Callable) -> Callable:
    """Re-raise JAX's forward-mode error from ``fn`` with a pointer to the fixes.

    JAX raises ``TypeError("can't apply forward-mode autodiff (jvp) to a
    custom_vjp function.")`` while the op is called under ``jax.jvp`` outside of
    ``jit``; there we add the hint and keep the error type. Under ``jit`` JAX
    raises the same error later, at lowering time, where no op code runs, so the
    message stays JAX's own (the README and docs carry the hint for that case).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as err:
            if "forward-mode autodiff" in str(err) and FORWARD_MODE_HINT not in str(err):
                raise TypeError(f"{err}\n{FORWARD_MODE_HINT}") from err
            raise

    return wrapper


def _describe(x: Any) -> str:
    return f"{x.dtype}{list(x.shape)}"


def as_float_array(op: str, name: str, x: Any) -> jax.Array:
    """``x`` as a JAX array with a floating dtype, or a TypeError naming ``op``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{op}: `{name}` must be a floating-point array, got {_describe(x)}; "
            f"cast it first, e.g. {name}.astype(jnp.float32)"
        )
    return x


def as_integer_array(op: str, name: str, x: Any) -> jax.Array:
    """``x`` as a JAX array with an integer dtype, or a TypeError naming ``op``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{op}: `{name}` must be an integer array of class indices, got {_describe(x)}")
    return x


def promote_floats(op: str, **arrays: Any) -> list[jax.Array]:
    """Check every argument is floating and cast all to their common dtype.

    The cast happens outside the custom_vjp, so each gradient comes back in its
    own input's dtype through the cast's transpose.
    """
    checked = [as_float_array(op, name, x) for name, x in arrays.items()]
    dtype = jnp.result_type(*checked)
    return [x.astype(dtype) for x in checked]


def static_float(op: str, name: str, value: Any) -> float:
    """A hyper-parameter that must be a Python number (not a traced array)."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{op}: `{name}` must be a concrete number, not a traced array; "
            "use funcnet.nn.prelu for a trainable slope"
        )
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{op}: `{name}` must be a number, got {value!r}") from err


def canonical_axis(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Normalise an int or tuple axis argument to a sorted tuple of positive axes."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not all(isinstance(a, int) for a in axes):
        raise TypeError(f"{op}: `axis` must be an int or a tuple of ints, got {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for an input with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def check_broadcast_to(op: str, names: tuple[str, str], small: tuple, big: tuple) -> None:
    """Raise unless an array of shape ``small`` broadcasts to exactly ``big``."""
    try:
        result = np.broadcast_shapes(small, big)
    except ValueError:
        result = None
    if result != tuple(big):
        raise ValueError(
            f"{op}: `{names[0]}` of shape {tuple(small)} does not broadcast to the shape "
            f"{tuple(big)} of `{names[1]}`"
        )


def broadcast_shapes(op: str, **shapes: tuple) -> tuple[int, ...]:
    """The jnp broadcast of the named shapes, or a ValueError naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        listed = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"{op}: shapes do not broadcast: {listed}") from None


def sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Reverse a broadcast: sum ``g`` over the axes that broadcasting added or stretched."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    axes = tuple(range(lead)) + stretched
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)

def compute_dtype(dtype: Any) -> Any:
    """The dtype a rule computes in: float16/bfloat16 are widened to float32.

    Half-precision exponentials and cubes overflow at modest inputs (GELU's x^3
    is inf at |x| > 40 in float16), so the elementwise math runs in float32 and
    only the stored result is rounded back to the input dtype.
    """
    return jnp.promote_types(dtype, jnp.float32)


def widen(x: jax.Array) -> jax.Array:
    return x.astype(compute_dtype(x.dtype))


def saves_output(value: Callable) -> Callable:
    """The forward half of a rule that keeps only its output: ``fwd(*args) = (y, y)``."""

    def fwd(*args):
        y = value(*args)
        return y, y

    return fwd


def saves_inputs(value: Callable) -> Callable:
    """The forward half of a rule that keeps its (array) inputs: ``fwd(*args) = (y, args)``."""

    def fwd(*args):
        return value(*args), args

    return fwd


def is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)
