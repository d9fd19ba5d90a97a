"""The op declaration: everything about one op in one place.

An op module writes, for each op, the :class:`~funcnet.ops.binding.Op` (value,
residuals, hand-written reverse and forward rules) and the public function with
the namesake's signature, whose docstring holds the formula, the derivative
and the kink convention. The module makes one :func:`declarer` with its
defaults (family, twin namespace, upstream namespace) and decorates each public
function with it, which records the rest: what the reverse rule saves, in
words; how funcnet differs from its namesake; and, grouped in :class:`Checks`,
the data the tests and ``funcnet gradcheck`` use (an input sampler away from
kinks, the shapes, extreme inputs, hand-computed gradients at the kinks, the
keyword variants).

The twin is ``<twin namespace>.<name>`` and the namesake
``<upstream namespace>.<name>`` when it exists. Everything else is derived from
:data:`DECLARED`: the public namespaces' ``__all__`` (:func:`names`),
:data:`funcnet.registry.OPS`, ``layers``' activations, the docs pages, the
registry-wide tests and ``funcnet gradcheck``. The docstring's "Saves", "Kink
convention" and namesake lines are appended from the declaration and are never
written in the function's own docstring (:func:`declarer` refuses one that does).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from typing import Any, Callable, Mapping

from funcnet.ops.binding import Op

__all__ = ["Checks", "Declaration", "Kink", "declarer", "names", "activations", "DECLARED"]

Sampler = Callable[[Any, Any], tuple]


@dataclasses.dataclass(frozen=True)
class Kink:
    """A point where the op is not differentiable, and the gradient funcnet promises there.

    ``args`` are the op's arguments (float64 NumPy values) and ``grad`` the
    gradient of ``sum(op(*args, **kwargs))`` with respect to the first argument,
    computed by hand from the documented convention, not by running the code.
    ``namesake`` says whether the namesake in ``jax.nn``/``optax.losses`` gives
    the same gradient there (False: a difference the declaration's ``differs``
    documents).
    """

    where: str
    args: tuple
    grad: Any
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    namesake: bool = True


@dataclasses.dataclass(frozen=True)
class Checks:
    """The test data of one op: read by the registry-wide tests and ``funcnet gradcheck``, nothing else.

    Attributes:
      sample: ``sample(rng, case) -> args``: valid float64 inputs away from kinks.
      cases: the shapes passed to ``sample``.
      variants: keyword arguments, one registry row each (``{}`` is the default).
      extreme: ``extreme() -> args``: extreme but valid inputs; values and
        gradients must stay finite there.
      kinks: hand-computed gradients at the non-differentiable points.
    """

    sample: Sampler
    cases: tuple
    variants: tuple[Mapping[str, Any], ...] = ({},)
    extreme: Callable[[], tuple] | None = None
    kinks: tuple[Kink, ...] = ()


@dataclasses.dataclass(frozen=True)
class Declaration:
    """One op (see the module docstring); built by a :func:`declarer`.

    Attributes:
      fn: the public function (``funcnet.<family>.<name>``).
      family: ``"gates"``, ``"nn"`` or ``"losses"``.
      twin: the autodiff twin in ``funcnet.reference.<family>``.
      forms: the op's bound :class:`~funcnet.ops.binding.Op` forms (one for
        most ops; more where a hyper-parameter can be a Python number or an
        array, or an argument is optional).
      saves: what the reverse rule keeps from the forward pass, in words.
      checks: the test data (:class:`Checks`).
      diff_argnums: the positions of the floating arguments that get gradients.
      upstream: the namesake in ``jax.nn`` or ``optax.losses``, if any.
      differs: how funcnet deliberately differs from the namesake ('' if not at all).
      kink: the convention at non-differentiable points, in words.
      activation: for ``"nn"`` ops: a shape-preserving function of one array that
        can follow a Dense layer (``layers.Activation``, ``mlp``, ``funcnet train
        --activation``); False for the others (``glu``, ``logsumexp``, ``one_hot``).
    """

    fn: Callable
    family: str
    twin: Callable
    forms: tuple[Op, ...]
    saves: str
    checks: Checks
    diff_argnums: tuple[int, ...] = (0,)
    upstream: Callable | None = None
    differs: str = ""
    kink: str = "none (smooth everywhere)"
    activation: bool = True

    @property
    def name(self) -> str:
        return self.fn.__name__


#: Every declared op, in declaration order (gates, activations, losses).
DECLARED: list[Declaration] = []

_DERIVED = re.compile(r"^\s*(Saves|Kinks?|Kink convention|Rules|Differs from its namesake)\s*:", re.MULTILINE)
_UNSET: Any = object()


def declarer(family: str, *, twins: types.ModuleType, upstream: types.ModuleType | None = None) -> Callable:
    """The ``declare`` decorator of one op module, with the module's defaults.

    ``declare(forms=..., saves=..., checks=Checks(...), **more)`` records the
    public function's :class:`Declaration` in :data:`DECLARED`, appends the
    declared facts to its docstring and returns it. The twin is
    ``getattr(twins, name)`` unless the call gives ``twin=``; the namesake
    ``getattr(upstream, name)`` if it exists (``upstream=None`` in the call
    says there is none).
    """
    upstream_namespace = upstream  # the module default; ``upstream`` in a call names one function

    def declare(*, forms, saves: str, checks: Checks, twin: Callable | None = None,
                upstream: Callable | None = _UNSET, **more) -> Callable:
        forms_ = (forms,) if isinstance(forms, Op) else tuple(forms)

        def record(fn: Callable) -> Callable:
            name = fn.__name__
            namesake = getattr(upstream_namespace, name, None) if upstream is _UNSET else upstream
            declaration = Declaration(fn=fn, family=family, twin=twin or getattr(twins, name), forms=forms_, saves=saves,
                                      checks=checks, upstream=namesake, **more)
            fn.__doc__ = _docstring(declaration)
            fn.declaration = declaration
            DECLARED.append(declaration)
            return fn

        return record

    return declare


def _docstring(d: Declaration) -> str:
    """The function's docstring (formula, derivative) plus the declared facts."""
    body = inspect.cleandoc(d.fn.__doc__ or "")
    restated = _DERIVED.search(body)
    if restated:
        raise ValueError(f"{d.name}: the docstring restates {restated.group(1)!r}, which the declaration "
                         "appends; say it once, in the declaration")
    lines = [body, ""]
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
