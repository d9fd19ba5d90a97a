"""The one list of every op, derived from the op declarations.

Each declaration (``funcnet/ops/*.py``, see :mod:`funcnet.ops.declaration`) gives one
row here per variant (its non-default keyword arguments). Tests, the gradient
checker (``funcnet gradcheck``) and the docs iterate over :data:`OPS`, so adding
an op is one declaration; every property the test suite checks then covers it.

A sampler draws *valid* inputs away from kinks (ReLU at 0, max ties, the SVM
margin), so that finite differences see a smooth function; conventions at the
kinks are stated in each entry's ``kink`` text and checked at the hand-computed
points of ``kinks``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import Any, Callable, Mapping

import jax
import numpy as np

from funcnet.ops import activations, attention, fused_dense, fused_head, gates, losses, norms, reductions
from funcnet.ops.declaration import DECLARED, Declaration, Kink
from funcnet.ops.binding import Op
from funcnet.tolerances import AUTODIFF, Tolerance

__all__ = ["OPS", "OpSpec", "Tolerance", "by_name", "cast_args", "Kink"]

Sampler = Callable[[np.random.Generator, Any], tuple]


def __getattr__(name: str):
    if name == "DEFAULT_TOLERANCES":  # the name before 0.2, kept one release
        warnings.warn("funcnet.registry.DEFAULT_TOLERANCES is deprecated; use funcnet.tolerances.AUTODIFF",
                      DeprecationWarning, stacklevel=2)
        return AUTODIFF
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _deprecated(old: str, new: str) -> Callable:
    def get(self):
        warnings.warn(f"OpSpec.{old} is deprecated; use OpSpec.{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)
    return get


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One registry row: an op with one choice of keyword arguments.

    Attributes:
      name: row label, unique; includes non-default keyword arguments.
      family: ``"gates"``, ``"nn"`` or ``"losses"``: the public namespace.
      fn: the public manual op (``funcnet.<family>.<fn.__name__>``).
      twin: its autodiff twin in ``funcnet.reference.<family>``.
      sample: ``sample(rng, case) -> args`` (float64 NumPy arrays or pytrees;
        integer labels stay integer), valid and away from kinks.
      cases: the shapes (or shape tuples) passed to ``sample``.
      diff_argnums: positions of the floating-point arguments, each of which
        gets a gradient.
      kwargs: non-array keyword arguments bound for this row.
      upstream: the same function in ``jax.nn`` or ``optax.losses``, if any.
      extreme: ``extreme() -> args`` at extreme but valid inputs.
      kink: the convention at non-differentiable points, in words.
      kinks: hand-computed gradients at those points.
      saves: what the reverse rule keeps from the forward pass.
      differs: how funcnet deliberately differs from ``upstream``.
      forms: the op's bound forms (value, residuals, reverse and forward rules).
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
    kinks: tuple[Kink, ...] = ()
    saves: str = ""
    differs: str = ""
    forms: tuple[Op, ...] = ()
    tolerances: Mapping[str, Tolerance] = dataclasses.field(default_factory=lambda: AUTODIFF)

    @property
    def op(self) -> Callable:
        """The op with this row's keyword arguments bound."""
        return functools.partial(self.fn, **self.kwargs)

    @property
    def twin_op(self) -> Callable:
        """The twin with this row's keyword arguments bound."""
        return functools.partial(self.twin, **self.kwargs)

    @property
    def upstream_op(self) -> Callable | None:
        """The namesake with this row's keyword arguments bound (None if there is none); funcnet's own
        keyword arguments (the attention's block sizes), which the namesake does not take, are left out."""
        if self.upstream is None:
            return None
        accepted = inspect.signature(self.upstream).parameters
        return functools.partial(self.upstream, **{k: v for k, v in self.kwargs.items() if k in accepted})

    # The names before 0.2, kept one release.
    manual = property(_deprecated("manual", "op"))
    autodiff = property(_deprecated("autodiff", "twin_op"))
    reference_upstream = property(_deprecated("reference_upstream", "upstream_op"))

    @property
    def qualname(self) -> str:
        return f"funcnet.{self.family}.{self.fn.__name__}"

    def tolerance(self, dtype: Any) -> Tolerance:
        return self.tolerances[np.dtype(dtype).name]


def _row_name(name: str, kwargs: Mapping[str, Any]) -> str:
    if not kwargs:
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def _rows(d: Declaration) -> tuple[OpSpec, ...]:
    return tuple(
        OpSpec(
            name=_row_name(d.name, kwargs), family=d.family, fn=d.fn, twin=d.twin, sample=d.checks.sample,
            cases=d.checks.cases, diff_argnums=d.diff_argnums, kwargs=dict(kwargs), upstream=d.upstream,
            extreme=d.checks.extreme, kink=d.kink, kinks=d.checks.kinks, saves=d.saves, differs=d.differs,
            forms=d.forms,
        )
        for kwargs in d.checks.variants
    )


#: The op modules, in the order their rows are listed (independent of which was imported first); a
#: declaration from elsewhere (your own ``declare``) comes after them.
MODULES = (gates, fused_dense, activations, reductions, attention, norms, *losses.FAMILIES, fused_head)
_FAMILY_ORDER = {"gates": 0, "nn": 1, "losses": 2}
_MODULE_ORDER = {m.__name__: i for i, m in enumerate(MODULES)}


def _order(d: Declaration) -> tuple[int, int]:
    """Family, then module, then declaration order within the module (``sorted`` is stable)."""
    return _FAMILY_ORDER[d.family], _MODULE_ORDER.get(d.fn.__module__, len(_MODULE_ORDER))


OPS: tuple[OpSpec, ...] = tuple(row for d in sorted(DECLARED, key=_order) for row in _rows(d))


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
