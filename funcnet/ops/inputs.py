"""Argument checks and promotion shared by the ops: dtypes, shapes, axes, masks, labels, static numbers.

Everything here runs at trace time (shapes and dtypes are static), so the
errors name the op and the offending shapes or values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _describe(x: Any) -> str:
    return f"{x.dtype}{list(x.shape)}"


def default_float():
    """The dtype ``jnp`` promotes integers to: float32, or float64 under ``jax_enable_x64``."""
    return jnp.result_type(float)


def as_array(op: str, name: str, x: Any) -> jax.Array:
    """``x`` as a JAX array, or an error naming ``op``, ``name`` and the value.

    ``jnp.asarray`` refuses None without naming the argument, reads a string
    as a dtype name (``'1e-5'`` is refused as a bad dtype format, ``'2'`` read
    as one), refuses NumPy string arrays with a message about staging, and
    nested lists of unequal lengths with NumPy's "inhomogeneous shape": each
    gets one line here instead.
    """
    if x is None or isinstance(x, (str, bytes)) or getattr(getattr(x, "dtype", None), "kind", "") in ("U", "S", "O"):
        raise TypeError(f"{op}: `{name}` must be a number or an array of numbers, got {x!r:.60} "
                        f"({type(x).__name__}); convert it first (e.g. float(...) or np.asarray(..., float))")
    try:
        return jnp.asarray(x)
    except ValueError as err:
        if "inhomogeneous" not in str(err):
            raise
        raise ValueError(f"{op}: `{name}` must be a rectangular array, got nested lists of unequal lengths "
                         f"{x!r:.60}; pad the rows to one length") from None
    except TypeError as err:
        raise TypeError(f"{op}: `{name}` must be an array of numbers, got {x!r:.60} ({type(x).__name__})") from err


def float_input(op: str, name: str, x: Any, *, keep_int: bool = False) -> jax.Array | None:
    """``x`` as a floating JAX array, promoting integers and booleans as ``jax.nn`` does.

    With ``keep_int=True`` an integer input returns ``None`` instead, for the
    ops whose ``jax.nn`` namesake keeps integers integer (``relu``, ...).
    """
    x = as_array(op, name, x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return None if keep_int else x.astype(default_float())
    raise TypeError(f"{op}: `{name}` must be a real floating-point or integer array, got {_describe(x)}")


def as_integer_array(op: str, name: str, x: Any) -> jax.Array:
    """``x`` as a JAX array with an integer dtype, or a TypeError naming ``op``."""
    x = as_array(op, name, x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{op}: `{name}` must be an integer array of class indices, got {_describe(x)}")
    return x


def promote_floats(op: str, **arrays: Any) -> list[jax.Array]:
    """Check every argument is floating and cast all to their common dtype.

    The cast happens outside the custom_vjp, so each gradient comes back in its
    own input's dtype through the cast's transpose.
    """
    checked = [float_input(op, name, x) for name, x in arrays.items()]
    # jnp's promotion on the original dtypes (float16 with int stays float16) ...
    dtype = jnp.result_type(*(x if isinstance(x, (int, float)) else jnp.asarray(x) for x in arrays.values()))
    if not jnp.issubdtype(dtype, jnp.floating):  # ... and the default float when all are integers
        dtype = jnp.result_type(*checked)
    return [x.astype(dtype) for x in checked]


def is_number(v) -> bool:
    """A Python int or float (not a bool): a hyper-parameter the rules can take as a static number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def static_float(op: str, name: str, value: Any) -> float:
    """A hyper-parameter that must be a Python number (not a traced array)."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{op}: `{name}` must be a concrete number, not a traced array: it is a static parameter of this op "
            f"(pass it as a Python float, e.g. through functools.partial or jax.jit's static_argnames)"
        )
    if isinstance(value, (str, bytes)):  # float('2') would take it
        raise TypeError(f"{op}: `{name}` must be a number, got the string {value!r:.60}; pass a number")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{op}: `{name}` must be a number, got {value!r:.60}") from err


def check_per_row(op: str, name: str, value: jax.Array, shape: tuple, axes: tuple[int, ...]) -> None:
    """Raise unless the array hyper-parameter ``value`` broadcasts to ``shape`` reduced over ``axes`` (keepdims).

    Upstream adds such a hyper-parameter (a norm's ``epsilon``) to per-row statistics kept with
    ``keepdims``; an array that varies along ``axes`` would turn them into per-entry ones.
    """
    rows = tuple(1 if i in axes else n for i, n in enumerate(shape))
    try:
        fits = np.broadcast_shapes(np.shape(value), rows) == rows
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: `{name}` of shape {tuple(np.shape(value))} must broadcast to {rows}, one value "
                         f"per row of the statistics over axes {axes}")


def static_int(op: str, name: str, value: Any, low: int = 1) -> int:
    """A count that must be a Python or NumPy integer (not a bool) ``>= low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: `{name}` must be an int, got {value!r:.60}")
    if value < low:
        raise ValueError(f"{op}: `{name}` must be an int >= {low}, got {value!r}")
    return int(value)


def check_range(op: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                meaning: str = "") -> None:
    """Raise unless every value of the hyper-parameter ``value`` lies in ``[low, high]`` (NaN never does).

    Only concrete values are checked (Python numbers, NumPy and unmapped JAX
    arrays): a traced one is the caller's responsibility, as in Optax. A string
    is a TypeError. ``meaning`` says what the parameter is, for the message.
    """
    if isinstance(value, jax.core.Tracer) or value is None:
        return
    try:
        values = np.asarray(value)  # not jnp: a Python number would become a tracer inside jit
    except ValueError:
        values = None
    if values is None or values.dtype.kind in "USO":
        as_array(op, name, value)  # the one-line error for a string, ragged lists, ...
    values = values.astype(float)
    bad = np.isnan(values) | (values < (-np.inf if low is None else low)) | (values > (np.inf if high is None
                                                                                         else high))
    if bad.any():
        bounds = (f"in [{low:g}, {high:g}]" if low is not None and high is not None
                  else f">= {low:g}" if low is not None else f"<= {high:g}")
        shown = value if values.ndim == 0 else float(values[bad][0])
        raise ValueError(f"{op}: `{name}`{f' ({meaning})' if meaning else ''} must be {bounds}, got {shown!r}")


def canonical_axis(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Normalise an int, tuple or ``None`` (all axes) axis argument to a sorted tuple of positive axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        axes = (int(axis),)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(int(a) if isinstance(a, np.integer) else a for a in axis)
    else:
        raise TypeError(f"{op}: `axis` must be an int, a tuple of ints or None, got {axis!r}")
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


def single_axis(op: str, axis: Any, ndim: int, remedy: str) -> int:
    """One axis (an int, not None or a tuple) as a positive int; ``remedy`` ends the TypeError otherwise."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: `axis` must be one int, got {axis!r:.60}; {remedy}")
    return canonical_axis(op, axis, ndim)[0]


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


def is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_class_labels(op: str, labels, num_classes: int) -> None:
    """Range-check integer labels when their values are known at trace time.

    Under ``jit`` the values are not known; an out-of-range label then gives a
    NaN loss and a NaN gradient row (see the losses' docstrings).
    """
    if is_concrete(labels) and labels.size:
        values = np.asarray(labels)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{op}: labels must lie in [0, {num_classes}) for {num_classes} classes, "
                f"got values from {lo} to {hi}"
            )


def bool_mask(op: str, where: Any) -> jax.Array:
    """``where`` as a boolean array; a TypeError naming ``op`` for any other dtype."""
    where = as_array(op, "where", where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{op}: `where` must be a boolean mask, got {where.dtype}{list(where.shape)}")
    return where


def broadcast_args(op: str, **arrays) -> list[jax.Array]:
    """The arrays broadcast to their common shape, or a ValueError naming the shapes."""
    shape = broadcast_shapes(op, **{k: v.shape for k, v in arrays.items()})
    return [jnp.broadcast_to(v, shape) for v in arrays.values()]


def broadcast_with_mask(op: str, where, **arrays) -> tuple[list[jax.Array], tuple[int, ...]]:
    """The arrays and the boolean mask ``where`` (if given, last) broadcast together, and their common shape."""
    if where is not None:
        arrays["where"] = bool_mask(op, where)
    args = broadcast_args(op, **arrays)
    return args, tuple(args[0].shape)
