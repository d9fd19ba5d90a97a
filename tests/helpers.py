"""Small helpers shared by the test modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.registry import OpSpec, cast_args

#: XLA's own settings for what tests/conftest.py changes to compile faster, for
#: ``.compile(compiler_options=XLA_DEFAULTS)`` where a memory figure is compared to the byte.
XLA_DEFAULTS = {"xla_cpu_use_fusion_emitters": True}


def sample(spec: OpSpec, case=None, dtype="float64", seed=0):
    """Arguments of ``spec`` for ``case`` (default: its largest), cast to ``dtype``."""
    if case is None:
        case = spec.cases[-1]
    rng = np.random.default_rng(seed)
    return cast_args(spec.sample(rng, case), spec.diff_argnums, dtype)


def diff_args(spec: OpSpec, args):
    return tuple(args[i] for i in spec.diff_argnums)


def scalarized(f, spec: OpSpec, args, cotangent):
    """``⟨cotangent, f(*args)⟩`` as a function of the differentiable arguments."""

    def s(*d):
        full = list(args)
        for i, a in zip(spec.diff_argnums, d):
            full[i] = a
        out = f(*full)
        return sum(jnp.vdot(c, o) for c, o in zip(jax.tree.leaves(cotangent), jax.tree.leaves(out)))

    return s


def cotangent_for(f, args, seed=1):
    rng = np.random.default_rng(seed)
    out = jax.eval_shape(f, *args)
    return jax.tree.map(lambda o: jnp.asarray(rng.standard_normal(o.shape), o.dtype), out)


def assert_trees_close(actual, expected, rtol, atol=0.0, err_msg=""):
    la, lb = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(la) == len(lb), f"{err_msg}: {len(la)} leaves vs {len(lb)}"
    for a, b in zip(la, lb):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol,
                                   err_msg=err_msg)
