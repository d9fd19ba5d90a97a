"""The op declaration: everything about one op in one place.

An op module writes, for each op, the :class:`~funcnet.ops._rule.Rule` (value,
residuals, hand-written reverse and forward rules) and the public function with
the namesake's signature (the docstring holds the formula, the derivative and
the kink convention), and decorates the public function with :func:`declare`,
which records the rest: the autodiff twin, what the rule saves in words, the
convention at kinks with hand-computed gradients there, an input sampler away
from kinks, extreme inputs, the namesake in ``jax.nn``/``optax.losses`` and how
funcnet differs from it.

Everything else is derived from :data:`DECLARED`: the public namespaces'
``__all__`` (:func:`names`), :data:`funcnet.registry.OPS`, ``layers``'
activations, the docs pages, the registry-wide tests and ``funcnet gradcheck``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from funcnet.ops._rule import Rule

__all__ = ["Declaration", "Kink", "declare", "names", "DECLARED"]

Sampler = Callable[[Any, Any], tuple]


@dataclasses.dataclass(frozen=True)
class Kink:
    """A point where the op is not differentiable, and the gradient funcnet promises there.

    ``args`` are the op's arguments (float64 NumPy values) and ``grad`` the
    gradient of ``sum(op(*args, **kwargs))`` with respect to the first argument,
    computed by hand from the documented convention, not by running the code.
    """

    where: str
    args: tuple
    grad: Any
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Declaration:
    """One op (see the module docstring); built by :func:`declare`.

    Attributes:
      fn: the public function (``funcnet.<family>.<name>``).
      family: ``"gates"``, ``"nn"`` or ``"losses"``.
      twin: the autodiff twin in ``funcnet.reference.<family>``.
      rules: the op's :class:`Rule` objects (one for most ops; two where a
        hyper-parameter can be a Python number or an array).
      saves: what the reverse rule keeps from the forward pass, in words.
      sample: ``sample(rng, case) -> args``: valid float64 inputs away from kinks.
      cases: the shapes passed to ``sample``.
      diff_argnums: the positions of the floating arguments that get gradients.
      variants: keyword arguments, one registry row each (``{}`` is the default).
      upstream: the namesake in ``jax.nn`` or ``optax.losses``, if any.
      differs: how funcnet deliberately differs from the namesake ('' if not at all).
      extreme: ``extreme() -> args``: extreme but valid inputs; values and
        gradients must stay finite there.
      kink: the convention at non-differentiable points, in words.
      kinks: hand-computed gradients at those points (checked by the tests and
        by ``funcnet gradcheck``).
      activation: for ``"nn"`` ops: a shape-preserving function of one array that
        can follow a Dense layer (``layers.Activation``, ``mlp``, ``funcnet train
        --activation``); False for the others (``glu``, ``logsumexp``, ``one_hot``).
    """

    fn: Callable
    family: str
    twin: Callable
    rules: tuple[Rule, ...]
    saves: str
    sample: Sampler
    cases: tuple
    diff_argnums: tuple[int, ...] = (0,)
    variants: tuple[Mapping[str, Any], ...] = ({},)
    upstream: Callable | None = None
    differs: str = ""
    extreme: Callable[[], tuple] | None = None
    kink: str = "none (smooth everywhere)"
    kinks: tuple[Kink, ...] = ()
    activation: bool = True

    @property
    def name(self) -> str:
        return self.fn.__name__


#: Every declared op, in declaration order (gates, activations, losses).
DECLARED: list[Declaration] = []


def declare(*, family: str, twin: Callable, rules, saves: str, sample: Sampler, cases: tuple, **more):
    """Decorator: record the public function's declaration in :data:`DECLARED` and return it unchanged."""
    rules = (rules,) if isinstance(rules, Rule) else tuple(rules)

    def record(fn: Callable) -> Callable:
        declaration = Declaration(fn=fn, family=family, twin=twin, rules=rules, saves=saves,
                                  sample=sample, cases=cases, **more)
        fn.__doc__ = _docstring(declaration)
        fn.declaration = declaration
        DECLARED.append(declaration)
        return fn

    return record


def _docstring(d: Declaration) -> str:
    """The function's docstring (formula, derivative) plus the declared facts, written once."""
    lines = [inspect.cleandoc(d.fn.__doc__ or ""), ""]
    lines.append("Rules: a hand-written reverse rule (``jax.grad``) and a hand-written forward "
                 "rule (``jax.jvp``), from the same residuals.")
    lines.append(f"Saves: {d.saves}.")
    lines.append(f"Kink convention: {d.kink}.")
    if d.upstream is not None:
        lines.append(f"Differs from its namesake: {d.differs}." if d.differs
                     else "Same signature, values and gradients as its namesake in jax.nn / optax.losses "
                     f"({d.upstream.__name__}).")
    return "\n".join(lines)


def activations() -> list[str]:
    """The ``"nn"`` ops that can follow a Dense layer (declared ``activation=True``), in declaration order."""
    return [d.name for d in DECLARED if d.family == "nn" and d.activation]


def names(family: str, module: str | None = None) -> list[str]:
    """The public names of one family (declared in ``module``, if given), in declaration order: an ``__all__``."""
    return [d.name for d in DECLARED if d.family == family and (module is None or d.fn.__module__ == module)]
