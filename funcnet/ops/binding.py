"""One op, both derivative directions: the :class:`Op` that every funcnet op is built on.

A rule is four plain ``jax.numpy`` functions over the op's array arguments
(``static`` keyword parameters such as ``axis`` are passed to each):

* ``value(*args) -> y``: the op's value;
* ``save(*args) -> (y, res)``: the value and the residuals the derivative
  rules need, the smallest that suffices (the output for sigmoid, tanh, ReLU);
* ``vjp(res, g) -> cotangents``: the hand-written **reverse** rule, one
  cotangent per array argument (``None`` for an integer argument);
* ``jvp(res, *tangents) -> y_dot``: the hand-written **forward** rule, from the
  same residuals; a tangent is ``None`` where it is zero (integer arguments,
  or arguments the caller does not differentiate).

How they are bound: the way ``jax.lax`` carries its own rules, on stable API.

* The op is a ``jax.custom_jvp`` function of ``value`` (the form of
  ``jax.nn.relu``): undifferentiated, a jitted program holds ordinary
  operations and takes JAX's compiled fast path.
* Its JVP rule runs ``save`` and binds ``<name>_lin``, a primitive
  (``jax.extend.core.Primitive``) that is **linear in the tangents** and takes
  the residuals as constants. Its evaluation and lowering are the hand-written
  forward rule ``jvp``; its **transpose rule is the hand-written reverse rule**
  ``vjp``; its batching rule ``vmap``\\ s the rule function; its own JVP (for
  second order) is the linear primitive again in the tangents plus autodiff of
  ``jvp`` in the residuals.

So ``jax.jvp``/``jacfwd``/``linearize`` run ``jvp``, and ``jax.grad``/``vjp``/
``jacrev`` run ``vjp`` (JAX reverse mode is linearize-then-transpose), in
every context: ``jit``, ``vmap``, ``scan`` and loop bodies, ``jax.checkpoint``
under every policy (the residuals are saved or recomputed by the policy; the
transpose is always ``vjp``), ``shard_map``. Higher orders differentiate the
rules themselves, which are ``jax.numpy`` code.

:func:`custom_vjp_form` builds ops in the classic ``jax.custom_vjp`` form, from
the same ``save``/``vjp`` (reverse mode only).

Inside ``jax.shard_map`` the arguments are first cast to a common set of
varying manual axes (``jax.lax.pcast``), as ``jnp`` does implicitly for its own
primitives, so a replicated weight times a sharded batch gets the gradient
``jax.nn`` code gets (the transpose of the cast is the ``psum``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Literal, Primitive, jaxpr_as_fun
from jax.interpreters import ad, batching, mlir

from funcnet.ops.numerics import sum_to_shape

__all__ = ["Op", "custom_vjp_form", "jvp_of", "varying_like", "vjp_of", "with_array_hypers", "with_optional"]


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _varying_axes(x) -> frozenset:
    """The manual mesh axes ``x`` varies over inside ``shard_map`` (empty outside)."""
    return _varying_axes_of_aval(jax.typeof(x))


def _varying_axes_of_aval(aval) -> frozenset:
    mat = getattr(aval, "mat", None)  # jax >= 0.10: the manual axis type
    return frozenset(mat.varying) if mat is not None else frozenset(getattr(aval, "vma", ()))


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


class Op:
    """The value and both hand-written derivative rules of one op (see the module docstring).

    Args:
      name: the op's public name, used in error messages and the jaxpr.
      value: ``value(*args, **static) -> y``.
      vjp: ``vjp(res, g, **static) -> tuple`` of cotangents, one per argument. A rule
        whose signature names a keyword ``wanted`` is told which cotangents are
        used (a tuple of bools, one per argument: not those of arguments nothing
        differentiates) and may give None for the others and skip their work.
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
        self.linear = _linear_primitive(self)

    def __repr__(self) -> str:
        return f"Op({self.name})"

    def __call__(self, *args, **static):
        """Apply the op to arrays ``args`` with hashable keyword parameters ``static``."""
        args = _common_vma(tuple(jnp.asarray(a) for a in args))
        calls = _CAPTURED.get()
        if calls is not None:  # inside _one_op: the value from `save`, the call recorded
            token = _CAPTURED.set(None)
            try:
                y, res = self.save(*args, **static)
            finally:
                _CAPTURED.reset(token)
            calls.append((self, args, static, y, res))
            return y
        form = _custom_vjp if _CUSTOM_VJP_FORM.get() else _custom_jvp
        return form(self, tuple(sorted(static.items())))(*args)


_CUSTOM_VJP_FORM = contextvars.ContextVar("funcnet_custom_vjp_form", default=False)


@contextlib.contextmanager
def custom_vjp_form():
    """Context manager: ops traced inside it are built as their classic ``jax.custom_vjp`` form.

    The same ``save`` and reverse rule, reverse mode only (``jax.jvp`` raises); for comparing the two
    forms and for code that needs ``custom_vjp`` specifically. Per thread; it acts while tracing.
    """
    token = _CUSTOM_VJP_FORM.set(True)
    try:
        yield
    finally:
        _CUSTOM_VJP_FORM.reset(token)


# ------------------------------------------------------------------ an op's rules called from another op's
_CAPTURED = contextvars.ContextVar("funcnet_captured", default=None)


def _one_op(f: Callable, x):
    """``(y, op, static, res)`` when ``f(x)`` is one funcnet op applied to ``x`` alone (its output
    returned as is), else ``None``. The op runs as its ``save`` function, no derivative machinery."""
    calls = []
    token = _CAPTURED.set(calls)
    try:
        y = f(x)
    finally:
        _CAPTURED.reset(token)
    if len(calls) == 1:
        op, args, static, out, res = calls[0]
        if len(args) == 1 and args[0] is x and out is y:
            return y, op, static, res
    return None


def vjp_of(f: Callable, x):
    """``(f(x), pullback)``, as ``jax.vjp(f, x)`` for a function of one array, for rules that apply
    another op's rule (a fused layer's activation).

    When ``f(x)`` is one funcnet op of ``x`` (``nn.relu``, ``functools.partial(nn.gelu,
    approximate=False)``), the pullback is that op's hand-written reverse rule called directly on
    its saved residuals: the same arithmetic ``jax.vjp`` runs, a quarter of its tracing time.
    Otherwise (a composite such as ``nn.hard_sigmoid``) it is ``jax.vjp``.
    """
    one = _one_op(f, x)
    if one is None:
        return jax.vjp(f, x)
    y, op, static, res = one
    return y, lambda g: (jnp.broadcast_to(op.vjp(res, g, **static)[0], x.shape).astype(x.dtype),)


def jvp_of(f: Callable, x, tx):
    """``(f(x), ẏ)``, as ``jax.jvp(f, (x,), (tx,))``, by the op's own forward rule (see :func:`vjp_of`)."""
    one = _one_op(f, x)
    if one is None:
        return jax.jvp(f, (x,), (tx,))
    y, op, static, res = one
    return y, jnp.broadcast_to(op.jvp(res, tx.astype(x.dtype), **static), y.shape).astype(y.dtype)


# ------------------------------------------------------------------ the value: a custom_jvp function
@functools.lru_cache(maxsize=None)
def _custom_jvp(rule: Op, static_items: tuple):
    static = dict(static_items)

    def f(*args):
        return rule.value(*args, **static)

    def save(*args):
        return rule.save(*args, **static)

    # The residuals come out of one opaque call: JAX linearizes a JVP rule by partial evaluation, which
    # splits any loop in `save` and hoists its loop-invariant parts out as stacked arrays (the fused head's
    # blocks of w: 276 MiB instead of 72). A custom_jvp call with known inputs is bound whole instead;
    # differentiated (second order), it is autodiff of `save`.
    save = jax.custom_jvp(save)
    save.defjvp(lambda primals, tangents: _jvp_along(save.fun, primals, tangents, SymbolicZero),
                symbolic_zeros=True)

    def f_jvp(primals, tangents):
        y, res = save(*primals)
        present = tuple(_is_tangent(t, p) for t, p in zip(tangents, primals))
        if not any(present):
            return y, jnp.zeros_like(y)
        res_leaves, res_tree = jax.tree.flatten(res)
        tangents = [t.astype(p.dtype) for t, p, keep in zip(tangents, primals, present) if keep]
        y_dot = rule.linear.bind(*res_leaves, *tangents, static=static_items, res_tree=res_tree, present=present,
                                 out=(tuple(y.shape), jnp.dtype(y.dtype)), levels=())
        return y, y_dot

    f.__name__ = rule.name
    op = jax.custom_jvp(f)
    op.defjvp(f_jvp, symbolic_zeros=True)
    return op


@functools.lru_cache(maxsize=None)
def _takes_wanted(vjp: Callable) -> bool:
    return "wanted" in inspect.signature(vjp).parameters


def _is_tangent(t, primal) -> bool:
    """Whether ``t`` is a tangent to use: not a symbolic zero, and of a floating argument."""
    return not isinstance(t, SymbolicZero) and _is_float(primal) and t.dtype != jax.dtypes.float0


# ------------------------------------------------------------------ the linear primitive: both rules
def _unpack(args, res_tree, present):
    """``(res, tangents)`` from the primitive's flat operands: ``None`` where a tangent is absent."""
    n_res = res_tree.num_leaves
    res = jax.tree.unflatten(res_tree, args[:n_res])
    it = iter(args[n_res:])
    return res, [next(it) if p else None for p in present]


def _linear_primitive(rule: Op) -> Primitive:
    """``<name>_lin(*residuals, *tangents)``: linear in the tangents; forward rule, transpose = reverse rule.

    Parameters: ``static`` (the op's keyword parameters), ``res_tree`` (the residuals' structure),
    ``present`` (which arguments have a tangent operand), ``out`` (the output's shape and dtype) and
    ``levels``: one mask per ``vmap`` the primitive was batched by, innermost first, marking the
    operands mapped (along axis 0) at that level. Batching rebinds the primitive with one more level,
    so that a ``vmap`` traced before the transpose (``grad(vmap(f))``) keeps the primitive, and with it
    the reverse rule; evaluation and transposition ``vmap`` the rule functions level by level.
    """
    p = Primitive(f"{rule.name}_lin")

    def base_forward(*args, static, res_tree, present, shape, dtype):
        res, tangents = _unpack(args, res_tree, present)
        y_dot = rule.jvp(res, *tangents, **dict(static))
        return jnp.zeros(shape, dtype) if y_dot is None else jnp.broadcast_to(y_dot, shape).astype(dtype)

    def forward(*args, static, res_tree, present, out, levels):
        shape, dtype = out
        f = functools.partial(base_forward, static=static, res_tree=res_tree, present=present,
                              shape=shape[len(levels):], dtype=dtype)
        for mask in levels:
            f = jax.vmap(f, in_axes=tuple(0 if m else None for m in mask))
        return f(*args)

    def abstract_eval(*avals, static, res_tree, present, out, levels):
        # the output varies over the manual mesh axes its inputs vary over (they share one set: _common_vma)
        like = max(avals, key=lambda a: len(_varying_axes_of_aval(a)))
        return like.update(shape=out[0], dtype=out[1], weak_type=False)

    def transpose(ct, *args, static, res_tree, present, out, levels):
        n_res = res_tree.num_leaves
        if type(ct) is ad.Zero:
            return [None] * len(args)
        # a tangent's aval leads with one axis per level it is mapped at; the rule sees it without them
        tangent_shapes = [a.aval.shape[sum(m[n_res + t] for m in levels):] for t, a in enumerate(args[n_res:])]
        tangent_dtypes = [a.aval.dtype for a in args[n_res:]]

        def base(*res_and_ct):
            res = jax.tree.unflatten(res_tree, res_and_ct[:n_res])
            told = {"wanted": present} if _takes_wanted(rule.vjp) else {}
            cts = [c for c, keep in zip(rule.vjp(res, res_and_ct[n_res], **dict(static), **told), present) if keep]
            return tuple(jnp.zeros(shape, dtype) if c is None else jnp.broadcast_to(c, shape).astype(dtype)
                         for c, shape, dtype in zip(cts, tangent_shapes, tangent_dtypes))

        f = base
        for mask in levels:
            f = _vmap_transpose(f, mask[:n_res], mask[n_res:])
        cts = f(*args[:n_res], ct)
        return [None] * n_res + list(cts)

    def jvp(primals, tangents, **params):
        n_res = params["res_tree"].num_leaves
        y = p.bind(*primals, **params)
        res, lin = primals[:n_res], primals[n_res:]
        d_res, d_lin = tangents[:n_res], tangents[n_res:]
        terms = []
        if any(type(t) is not ad.Zero for t in d_lin):
            d_lin = [ad.instantiate_zeros(t) for t in d_lin]
            terms.append(p.bind(*res, *d_lin, **params))
        if any(type(t) is not ad.Zero for t in d_res):
            # the forward rule is linear in the tangents only: in the residuals, autodiff of the rule
            terms.append(_jvp_along(lambda *r: forward(*r, *lin, **params), res, d_res, ad.Zero)[1])
        if not terms:
            return y, ad.Zero.from_primal_value(y)
        return y, functools.reduce(jnp.add, terms)

    def batch(args, dims, *, out, levels, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if isinstance(d, int))
        mask = tuple(isinstance(d, int) for d in dims)
        args = [jnp.moveaxis(a, d, 0) if isinstance(d, int) else a for a, d in zip(args, dims)]
        out = ((size,) + tuple(out[0]), out[1])
        return p.bind(*args, out=out, levels=levels + (mask,), **params), 0

    p.def_impl(forward)
    p.def_abstract_eval(abstract_eval)
    ad.primitive_jvps[p] = jvp
    ad.primitive_transposes[p] = transpose
    batching.primitive_batchers[p] = batch
    mlir.register_lowering(p, mlir.lower_fun(forward, multiple_results=False))
    return p


def _jvp_along(f, primals, tangents, zero_type):
    """``jax.jvp(f, primals, tangents)`` for second order, with the zeros kept symbolic.

    Only the arguments whose tangent is not a symbolic zero (of ``zero_type``) are
    differentiated; the others are constants, and an output that depends on none of the
    differentiated ones gets a symbolic zero tangent. Instantiated zeros would be multiplied by
    partial derivatives, and 0 · inf is NaN: a residual label t = 0 passed through ``save`` and
    read as ``log t`` by a rule made ``jacfwd(grad(sigmoid_focal_loss))`` NaN at hard labels.
    """
    live = [i for i, t in enumerate(tangents) if not isinstance(t, zero_type)]

    def along(*values):
        args = list(primals)
        for i, v in zip(live, values):
            args[i] = v
        return f(*args)

    values = tuple(primals[i] for i in live)
    closed, shapes = jax.make_jaxpr(along, return_shape=True)(*values)
    out, out_dot = jax.jvp(jaxpr_as_fun(closed), values, tuple(tangents[i] for i in live))
    out_dot = [t if dep else (ad.Zero.from_primal_value(y) if zero_type is ad.Zero
                              else SymbolicZero(jax.typeof(y).to_tangent_aval()))
               for y, t, dep in zip(out, out_dot, _depends_on_inputs(closed.jaxpr))]
    tree = jax.tree.structure(shapes)
    return jax.tree.unflatten(tree, out), jax.tree.unflatten(tree, out_dot)


def _depends_on_inputs(jaxpr) -> list[bool]:
    """For each output of ``jaxpr``, whether it depends on an input (a sub-jaxpr counts as a whole)."""
    dependent = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    return [not isinstance(v, Literal) and v in dependent for v in jaxpr.outvars]


def _vmap_transpose(f, res_mask, tangent_mask):
    """One batch level of a transpose ``f(*res, ct) -> tangent cotangents``: mapped residuals and the
    cotangent along axis 0; the cotangent of a tangent not mapped at this level is summed over it."""
    def g(*res_and_ct):
        outs = jax.vmap(f, in_axes=tuple(0 if m else None for m in res_mask) + (0,))(*res_and_ct)
        return tuple(o if m else o.sum(axis=0) for o, m in zip(outs, tangent_mask))

    return g


# ------------------------------------------------------------------ the classic reverse-only form
@functools.lru_cache(maxsize=None)
def _custom_vjp(rule: Op, static_items: tuple):
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


def with_optional(name: str, save: Callable, vjp: Callable, jvp: Callable, present: tuple[bool, ...]) -> Op:
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

    return Op(
        name,
        value=lambda *args, **static: save(*full(args), **static)[0],
        save=lambda *args, **static: save(*full(args), **static),
        vjp=lambda res, g, **static: tuple(c for c, p in zip(vjp(res, g, **static), present) if p),
        jvp=lambda res, *tangents, **static: jvp(res, *full(tangents), **static),
    )


def with_array_hypers(rule: Op, names: tuple[str, ...], derivatives: Callable) -> Op:
    """``rule`` with the hyper-parameters ``names`` as trailing array arguments (traced, or arrays).

    ``rule`` takes them as static keyword parameters; its functions must use them only in
    arithmetic, so that they work on arrays as on numbers. ``derivatives(res, **static) ->
    tuple`` gives d(value)/d(each hyper-parameter), elementwise in the output's shape (from
    ``rule.save``'s residuals); the reverse rule sums each over the axes its hyper-parameter
    was broadcast along, and the forward rule adds ``derivative · ḣ``. So a hyper-parameter
    passed through ``jit`` or ``vmap`` (as optax's tests and hyper-parameter sweeps do) gets
    its gradient, from a hand-written rule.
    """
    n = len(names)

    def split(args, static):
        return args[:-n], {**static, **dict(zip(names, args[-n:]))}

    def save(*args, **static):
        args, full = split(args, static)
        y, res = rule.save(*args, **full)
        return y, (res, tuple(full[k] for k in names))

    def vjp(res2, g, **static):
        res, hypers = res2
        full = {**static, **dict(zip(names, hypers))}
        cts = tuple(rule.vjp(res, g, **full))
        dh = derivatives(res, **full)
        return cts + tuple(sum_to_shape(jnp.broadcast_to(g * d, g.shape), jnp.shape(h)).astype(h.dtype)
                           for d, h in zip(dh, hypers))

    def jvp(res2, *tangents, **static):
        res, hypers = res2
        full = {**static, **dict(zip(names, hypers))}
        out = rule.jvp(res, *tangents[:-n], **full)
        for d, t in zip(derivatives(res, **full), tangents[-n:]):
            if t is not None:
                term = d * t
                out = term if out is None else out + term.astype(out.dtype)
        return out

    return Op(f"{rule.name}_h", value=lambda *a, **s: save(*a, **s)[0], save=save, vjp=vjp, jvp=jvp)
