"""Your own op with hand-written rules: :func:`custom_op`, checked by :func:`funcnet.check_op`.

In the spirit of ``torch.autograd.Function`` + ``gradcheck``: write the op's value, what
its derivative rules keep, the reverse rule and the forward rule once; get an op that
works under every JAX transformation (bound as funcnet's own ops are, see
:mod:`funcnet.ops.binding`), and check it with one call that runs the battery the
built-in ops get::

    import jax.numpy as jnp
    import funcnet

    cube = funcnet.custom_op(
        "cube",
        save=lambda x: (x ** 3, x),               # (value, residuals)
        vjp=lambda x, g: (3 * x ** 2 * g,),       # reverse rule: one cotangent per argument
        jvp=lambda x, t: 3 * x ** 2 * t,          # forward rule, from the same residuals
        twin=lambda x: x ** 3,                    # plain jax.numpy, differentiated by JAX
    )
    report = funcnet.check_op(cube)               # both rules vs the twin and finite differences,
    assert report.passed, report.failures         # the adjoint identity, second order, kinks

``funcnet gradcheck --module my_ops`` checks every custom op of a module (or a ``.py`` file)
and prints the table the built-in ops get.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from funcnet.ops.declaration import Kink
from funcnet.ops.binding import Op, custom_vjp_form, jvp_of, vjp_of
from funcnet.registry import OpSpec

__all__ = ["CustomOp", "Kink", "custom_op", "custom_vjp_form", "jvp_of", "ops_in", "vjp_of"]


def _normal_sample(rng: np.random.Generator, case) -> tuple:
    return tuple(rng.standard_normal(shape) for shape in case)


class CustomOp:
    """An op made by :func:`custom_op`: call it like a function; ``spec`` is what :func:`funcnet.check_op` checks."""

    spec: OpSpec  # set by custom_op, once the op exists to be the spec's function

    def __init__(self, rule: Op, doc: str):
        self.rule = rule
        self.__name__ = rule.name
        self.__doc__ = doc

    def __call__(self, *args, **static):
        """The op on arrays ``args``; keyword parameters are static (hashable) and passed to every rule."""
        return self.rule(*args, **static)

    def __repr__(self) -> str:
        return f"funcnet.custom_op({self.__name__!r})"


def custom_op(
    name: str,
    *,
    save: Callable,
    vjp: Callable,
    jvp: Callable,
    value: Callable | None = None,
    twin: Callable | None = None,
    cases: Sequence[tuple] | None = None,
    sample: Callable[[np.random.Generator, Any], tuple] | None = None,
    diff_argnums: Sequence[int] | None = None,
    static: Mapping[str, Any] | None = None,
    kinks: Sequence[Kink] = (),
    kink: str = "none (smooth everywhere)",
    doc: str = "",
) -> CustomOp:
    """An op with a hand-written reverse rule and forward rule, usable under every JAX transformation.

    Args:
      name: the op's name (errors, jaxprs, the gradcheck table).
      save: ``save(*args, **static) -> (y, residuals)``: the value and what the rules need.
      vjp: the reverse rule, ``vjp(residuals, g, **static) -> tuple`` of one cotangent per
        argument (``None`` for an integer argument). ``jax.grad``/``vjp``/``jacrev`` run it, in
        every context (``jit``, ``vmap``, ``scan``, ``jax.checkpoint`` under any policy, ``shard_map``).
        A rule with a keyword ``wanted`` is told which cotangents are used (a tuple of bools, one
        per argument) and may give None for the others and skip their work.
      jvp: the forward rule, ``jvp(residuals, *tangents, **static) -> y_dot``; a tangent is
        ``None`` where it is zero. ``jax.jvp``/``jacfwd``/``linearize`` run it.
      value: ``value(*args, **static) -> y`` for undifferentiated calls (default: ``save``'s
        value; give it where the residuals cost work a plain call should not pay).
      twin: the autodiff twin: the same function in plain ``jax.numpy``, which the checks
        differentiate with JAX (default: ``value``, itself differentiated by autodiff).
      cases: the input shapes the checks draw, one tuple of shapes per case with one shape per
        argument (default: one argument of shape ``(5,)``, then ``(3, 4)``).
      sample: ``sample(rng, case) -> args``, valid float64 inputs away from kinks (default:
        standard normal arrays of the case's shapes).
      diff_argnums: the arguments that get gradients (default: all).
      static: the keyword parameters the checks call the op with (``{"axis": -1}``), if it has any.
      kinks: points where the op is not differentiable, with the gradient promised there
        (:class:`Kink`, computed by hand); the checks compare both rules with it exactly.
      kink: the convention at those points, in words.
      doc: the op's docstring.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"funcnet.custom_op: name must be an identifier (it names a JAX primitive), got {name!r}")
    for field, fn in (("save", save), ("vjp", vjp), ("jvp", jvp)):
        if not callable(fn):
            raise TypeError(f"funcnet.custom_op({name!r}): {field} must be callable, got {type(fn).__name__}")
    signature_of = twin if twin is not None else value if value is not None else save
    if value is None:
        value = lambda *args, **static: save(*args, **static)[0]  # noqa: E731
    rule = Op(name, value=value, save=save, vjp=vjp, jvp=jvp)
    if cases is None:
        n_args = _arity(signature_of, static or {})
        if n_args not in (None, 1):
            raise ValueError(f"funcnet.custom_op({name!r}): the op takes {n_args} arguments; give cases=, one tuple "
                             "of shapes per case with one shape per argument, e.g. cases=[((5,), (5,))]")
        cases = (((5,),), ((3, 4),))
    cases = tuple(tuple(tuple(shape) for shape in case) for case in cases)
    if diff_argnums is None:
        diff_argnums = tuple(range(len(cases[0])))
    op = CustomOp(rule, doc)
    op.spec = OpSpec(name=name, family="custom", fn=op, twin=twin if twin is not None else value,
                     sample=sample or _normal_sample, cases=cases, diff_argnums=tuple(diff_argnums), kink=kink,
                     kinks=tuple(kinks), forms=(rule,), kwargs=dict(static or {}))
    return op


def _arity(f: Callable, static: Mapping[str, Any]) -> int | None:
    """The number of array arguments ``f`` requires (``None`` if its signature does not say)."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
               and p.name not in static for p in params)


def ops_in(module) -> list[CustomOp]:
    """The custom ops a module defines at its top level, in definition order (``funcnet gradcheck --module``)."""
    return [v for v in vars(module).values() if isinstance(v, CustomOp)]
