"""One op, both derivative directions: the :class:`Rule` that every funcnet op is built on.

A rule is four plain ``jax.numpy`` functions over the op's array arguments
(``static`` keyword parameters such as ``axis`` are passed to each):

* ``value(*args)``: the op's value (also what ``expand`` lowers to);
* ``save(*args) -> (y, res)``: the value and the residuals the derivative
  rules need, the smallest that suffices (the output for sigmoid, tanh, ReLU);
* ``vjp(res, g) -> cotangents``: the hand-written **reverse** rule, one
  cotangent per array argument (``None`` for an integer argument);
* ``jvp(res, *tangents) -> y_dot``: the hand-written **forward** rule, from the
  same residuals; a tangent is ``None`` where it is zero (integer arguments,
  or arguments the caller does not differentiate).

From these, a rule builds two JAX functions:

* by default a primitive on ``jax.experimental.hijax.VJPHiPrimitive``, which
  carries both rules: ``jax.grad``/``vjp`` run ``vjp``, ``jax.jvp``/``jacfwd``/
  ``linearize`` run ``jvp`` (``linearize`` saves the same residuals), ``vmap``
  maps the rules themselves, and second order differentiates the rules with
  autodiff (they are ``jnp`` code);
* :meth:`Rule.custom_vjp`, the classic ``jax.custom_vjp`` form with the same
  ``save``/``vjp`` (reverse mode only). It is the fallback where the
  experimental API is missing or fails its self-check at import, and it can be
  chosen with ``FUNCNET_RULES=custom_vjp`` in the environment.

Inside ``jax.shard_map`` the arguments are first cast to a common set of
varying manual axes (``jax.lax.pcast``), as ``jnp`` does implicitly for its own
primitives, so a replicated weight times a sharded batch gets the gradient
``jax.nn`` code gets (the transpose of the cast is the ``psum``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

try:  # the experimental API that carries both directions in one primitive
    from jax.experimental.hijax import VJPHiPrimitive, Zero
except ImportError:  # pragma: no cover - exercised only on a JAX without hijax
    VJPHiPrimitive, Zero = None, None

__all__ = ["Rule", "backend", "use_backend", "values_only", "varying_like", "with_optional"]

_BACKEND = os.environ.get("FUNCNET_RULES", "hijax" if VJPHiPrimitive is not None else "custom_vjp")
if _BACKEND not in ("hijax", "custom_vjp"):
    raise ValueError(f"FUNCNET_RULES must be 'hijax' or 'custom_vjp', got {_BACKEND!r}")
if VJPHiPrimitive is None:
    _BACKEND = "custom_vjp"


def backend() -> str:
    """``"hijax"`` (both hand-written rules) or ``"custom_vjp"`` (reverse rule only)."""
    return "hijax" if _BACKEND == "hijax" and _hijax_works() else "custom_vjp"


class use_backend:
    """Context manager choosing how ops are built while tracing, e.g. for tests.

    ``with use_backend("custom_vjp"): jax.grad(f)(x)`` runs every op through its
    plain ``jax.custom_vjp`` form.
    """

    def __init__(self, name: str):
        if name not in ("hijax", "custom_vjp"):
            raise ValueError(f"use_backend: expected 'hijax' or 'custom_vjp', got {name!r}")
        if name == "hijax" and VJPHiPrimitive is None:
            raise RuntimeError("use_backend('hijax'): this JAX has no jax.experimental.hijax.VJPHiPrimitive")
        self.name = name

    def __enter__(self):
        global _BACKEND
        self._saved, _BACKEND = _BACKEND, self.name
        return self

    def __exit__(self, *exc):
        global _BACKEND
        _BACKEND = self._saved


#: Set by :func:`values_only` in the running thread (a context variable, so tracing in another thread keeps the rules).
_VALUES_ONLY = contextvars.ContextVar("funcnet_values_only", default=False)


@contextlib.contextmanager
def values_only():
    """Context manager under which ops return their ``value`` as plain ``jax.numpy``, with no rule attached.

    For one op's rules that call another op where JAX never takes that call's first derivative (a fused
    op recomputing an activation inside its own reverse rule). Bound there as a primitive, the call would
    stay undifferentiated in the traced program, and a ``jax.jit`` program holding an undifferentiated
    hijax primitive is lowered again on every call instead of taking JAX's compiled fast path (measured:
    ``jax.jit(funcnet.nn.relu)`` on a 128 x 256 array, 460 µs per call against 14 µs for ``jax.nn.relu``).
    Derivatives of higher order than the rules still differentiate ``value`` with autodiff. It acts while
    tracing: a function JAX traced (and cached) inside it keeps that trace when called again outside.
    """
    token = _VALUES_ONLY.set(True)
    try:
        yield
    finally:
        _VALUES_ONLY.reset(token)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _varying_axes(x) -> frozenset:
    """The manual mesh axes ``x`` varies over inside ``shard_map`` (empty outside)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)  # jax >= 0.10: the manual axis type
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def _common_vma(args):
    """Cast every array argument to the union of their varying manual axes (shard_map)."""
    vmas = [_varying_axes(a) for a in args]
    union = frozenset().union(*vmas)
    if not union:
        return args
    out = []
    for a, v in zip(args, vmas):
        missing = tuple(sorted(union - v))
        out.append(jax.lax.pcast(a, missing, to="varying") if missing else a)
    return tuple(out)


def varying_like(x, *like):
    """``x`` cast to vary over the manual mesh axes that any of ``like`` varies over (shard_map).

    A fresh array (a loop's zero carry) is replicated inside ``shard_map``;
    a rule whose loop adds per-shard values to it must start it varying.
    """
    axes = frozenset().union(*(_varying_axes(a) for a in like)) - _varying_axes(x)
    return jax.lax.pcast(x, tuple(sorted(axes)), to="varying") if axes else x


def _float0_zeros(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


class Rule:
    """The value and both hand-written derivative rules of one op (see the module docstring).

    Args:
      name: the op's public name, used in error messages and the jaxpr.
      value: ``value(*args, **static) -> y``.
      vjp: ``vjp(res, g, **static) -> tuple`` of cotangents, one per argument.
      jvp: ``jvp(res, *tangents, **static) -> y_dot``.
      save: ``save(*args, **static) -> (y, res)``; by default the residuals are
        the arguments themselves.
    """

    def __init__(self, name: str, *, value: Callable, vjp: Callable, jvp: Callable, save: Callable | None = None):
        self.name = name
        self.value = value
        self.vjp = vjp
        self.jvp = jvp
        self.save = save if save is not None else (lambda *args, **static: (value(*args, **static), args))

    def __repr__(self) -> str:
        return f"Rule({self.name})"

    # ------------------------------------------------------------------ binding
    def __call__(self, *args, **static):
        """Apply the op to arrays ``args`` with hashable keyword parameters ``static``."""
        args = _common_vma(tuple(jnp.asarray(a) for a in args))
        if _VALUES_ONLY.get():
            return self.value(*args, **static)
        if _BACKEND == "hijax" and _hijax_works():
            return _HiOp(self, args, static)(*args)
        return self.custom_vjp(*args, **static)

    def custom_vjp(self, *args, **static):
        """The op as a classic ``jax.custom_vjp`` (reverse rule only), same residuals and rule."""
        args = _common_vma(tuple(jnp.asarray(a) for a in args))
        return _custom_vjp(self, tuple(sorted(static.items())))(*args)


@functools.lru_cache(maxsize=None)
def _custom_vjp(rule: Rule, static_items: tuple):
    static = dict(static_items)

    def f(*args):
        return rule.value(*args, **static)

    def fwd(*args):
        return rule.save(*args, **static)

    def bwd(res, g):
        return tuple(rule.vjp(res, g, **static))

    f.__name__ = rule.name
    op = jax.custom_vjp(f)
    op.defvjp(fwd, bwd)
    return op


def with_optional(name: str, save: Callable, vjp: Callable, jvp: Callable, present: tuple[bool, ...]) -> Rule:
    """A rule over the arguments that ``present`` marks, from functions that take every argument.

    ``save(*args, **static)`` and ``jvp(res, *tangents, **static)`` get ``None``
    for an absent argument (an optional mask or weight left out), and the
    cotangents ``vjp`` returns for absent arguments are dropped. One op with
    optional array arguments is written once this way, as one rule per
    combination of the arguments given.
    """
    def full(given):
        it = iter(given)
        return [next(it) if p else None for p in present]

    return Rule(
        name,
        value=lambda *args, **static: save(*full(args), **static)[0],
        save=lambda *args, **static: save(*full(args), **static),
        vjp=lambda res, g, **static: tuple(c for c, p in zip(vjp(res, g, **static), present) if p),
        jvp=lambda res, *tangents, **static: jvp(res, *full(tangents), **static),
    )


if VJPHiPrimitive is not None:

    class _HiOp(VJPHiPrimitive):
        """A funcnet rule as a JAX primitive with both hand-written directions."""

        def __init__(self, rule: Rule, args, static: dict):
            self.in_avals = tuple(jax.typeof(a) for a in args)
            out = _out_shape(rule, tuple(sorted(static.items())),
                             tuple((a.shape, a.dtype) for a in self.in_avals))
            floats = [a for a in self.in_avals if _is_float(a.dtype)] or list(self.in_avals)
            self.out_aval = floats[0].update(shape=out.shape, dtype=out.dtype, weak_type=False)
            self.params = dict(rule=rule, static=tuple(sorted(static.items())))
            super().__init__()

        @property
        def _static(self):
            return dict(self.params["static"])

        def expand(self, *args):
            return self.params["rule"].value(*args, **self._static)

        def vjp_fwd(self, nzs, *args):
            return self.params["rule"].save(*args, **self._static)

        def vjp_bwd_retval(self, res, g):
            cts = self.params["rule"].vjp(res, g, **self._static)
            return tuple(
                _float0_zeros(aval) if ct is None or not _is_float(aval.dtype) else ct
                for ct, aval in zip(cts, self.in_avals)
            )

        def _tangents(self, tangents):
            return tuple(
                None if isinstance(t, Zero) or not _is_float(aval.dtype) or t.dtype == jax.dtypes.float0 else t
                for t, aval in zip(tangents, self.in_avals)
            )

        def jvp(self, primals, tangents):
            y, res = self.params["rule"].save(*primals, **self._static)
            y_dot = self.params["rule"].jvp(res, *self._tangents(tangents), **self._static)
            return y, _tangent_or_zeros(y_dot, y)

        def lin(self, nzs, *args):
            return self.params["rule"].save(*args, **self._static)

        def linearized(self, res, *tangents):
            y_dot = self.params["rule"].jvp(res, *self._tangents(tangents), **self._static)
            return _tangent_or_zeros(y_dot, self.out_aval)

        def batch(self, axis_data, args, dims):
            # Inputs none of which is batched: a rule that calls other ops (activation_affine) can bind
            # them inside a vmap with unbatched arguments only; their output is then unbatched too.
            if all(d is None for d in jax.tree.leaves(dims, is_leaf=lambda d: d is None)):
                return self(*args), None
            return super().batch(axis_data, args, dims)

        def batch_dim_rule(self, axis_data, dims):
            # The rules are jnp code, so vmap maps them directly; the batch axis leads the output.
            return 0

else:  # pragma: no cover
    _HiOp = None


@functools.lru_cache(maxsize=4096)
def _out_shape(rule: Rule, static_items: tuple, in_shapes: tuple):
    """The output shape and dtype of ``rule.value``, traced once per rule, parameters and input types."""
    structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in in_shapes]
    return jax.eval_shape(functools.partial(rule.value, **dict(static_items)), *structs)


def _tangent_or_zeros(y_dot, like):
    if y_dot is None:
        return jnp.zeros(like.shape, like.dtype)
    return y_dot.astype(like.dtype)


@functools.lru_cache(maxsize=1)
def _hijax_works() -> bool:
    """:func:`self_check`, once, at the first op call (not at import: that would start JAX's backends)."""
    return self_check()


def self_check() -> bool:
    """Whether the hijax route traces a small rule in both directions (it runs nothing on a device)."""
    if VJPHiPrimitive is None:
        return False
    rule = Rule(
        "self_check",
        value=lambda x: x * x,
        save=lambda x: (x * x, x),
        vjp=lambda x, g: (2 * x * g,),
        jvp=lambda x, t: None if t is None else 2 * x * t,
    )
    x = jax.ShapeDtypeStruct((), jnp.float32)
    try:
        jax.make_jaxpr(jax.grad(lambda x: _HiOp(rule, (x,), {})(x)))(x)
        jax.make_jaxpr(lambda x: jax.jvp(lambda x: _HiOp(rule, (x,), {})(x), (x,), (x,)))(x)
        return True
    except Exception:  # noqa: BLE001 - any failure means: use the classic form
        return False
