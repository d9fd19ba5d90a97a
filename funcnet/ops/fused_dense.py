"""The fused dense layer ``activation_affine``: ``f(z) @ w + b`` as one op that keeps only ``z``.

An activation followed by a dense layer, as one op that keeps only its input
``z`` (the previous layer's pre-activation): the reverse rule recomputes
``f(z)`` for ``dw`` and applies the activation's own hand-written reverse rule
to ``dz``. Chained, as in :func:`funcnet.layers.mlp`, a network keeps one
tensor per layer for its backward pass whatever the activation (SiLU, GELU or
ReLU alike).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from funcnet.ops import _samples as S
from funcnet.ops import activations, reductions  # noqa: F401  (importing them declares the activations)
from funcnet.ops.numerics import add_tangents
from funcnet.ops.inputs import promote_floats
from funcnet.ops.binding import Op, jvp_of, vjp_of
from funcnet.ops.declaration import DECLARED, Checks, declarer
from funcnet.ops.gates import check_affine_shapes
from funcnet.reference import gates as gates_twin

declare = declarer("gates", twins=gates_twin)


# ----------------------------------------------------------- activation_affine
def _activation(activation, kwargs):
    """The manual activation ``funcnet.nn.<activation>`` with its keyword arguments bound."""
    return functools.partial(_FUSABLE[activation], **dict(kwargs))


def _activation_affine_value(z, w, b, activation, kwargs):
    return jnp.matmul(_activation(activation, kwargs)(z), w) + b


def _after(x, dep):
    """``x``, exactly, as a value XLA must compute after ``dep`` (and cannot merge with an earlier ``x``).

    ``x - 0·[dep₀ is NaN]``: the subtracted term is +0 whatever ``dep`` holds (NaN and inf
    included), and ``x - (+0)`` is ``x`` bit for bit, signed zeros too. The reverse rule
    needs this twice. (1) It recomputes f(z); unless tied to the backward pass, XLA merges
    that with the forward pass's f(z) (common subexpression elimination) and keeps the
    forward one alive until the backward pass: the very tensor this op exists not to keep.
    ``optimization_barrier`` says the same, but XLA's CPU compiler drops barriers before it
    merges. (2) Forming dw = f(z)ᵀ G before G wᵀ lets f(z) die before the next
    layer-sized buffer is born (XLA's scheduler otherwise orders them the other way);
    the order costs a copy of w, so the rule asks for it only where it saves more.
    """
    if dep.size == 0:
        return x
    first = lax.reshape(lax.slice(lax.reshape(dep, (dep.size,)), (0,), (1,)), ())  # lax: cheap to trace
    return lax.sub(x, lax.broadcast(lax.mul(lax.convert_element_type(lax.ne(first, first), x.dtype),
                                            lax.full((), 0, x.dtype)), x.shape))


#: Below this many elements (1 MiB of float32) the buffer that ordering spares is not worth its cost.
_ORDER_MIN_ELEMENTS = 2**18


def _order_pays(rows, n_in, n_out):
    """Whether to form G wᵀ after dw: it spares one rows × n_in buffer (the recomputed f(z) and G wᵀ are
    never alive together) and costs a copy of w (n_in × n_out), so only when rows > n_out, and only
    where the buffer is large (rows × n_in ≥ 2¹⁸): the tie adds 15% to the compile time of the default
    network's training step (64-256-10, batch 128) to spare 128 KiB. Measured on the networks of
    ``funcnet bench``: the deep one at batch 4096 needs 72 MiB ordered and 80 unordered; the medium one
    (784-1024-1024-10) at batch 256, 1 MiB unordered and 9 MiB ordered, and a slower step."""
    return rows > n_out and rows * n_in >= _ORDER_MIN_ELEMENTS


def _activation_affine_vjp(res, g, activation, kwargs, wanted=(True, True, True)):
    z, w = res
    f = _activation(activation, kwargs)
    lead = tuple(range(g.ndim - 1))
    gb = g.sum(axis=lead)
    # the recompute tied to db = Σ G rather than to an element of G: XLA fuses G's producer (the loss's
    # gradient) into a one-element slice, which kept the network's output alive until the recompute
    # (+15.6 MiB with squared error on 1000 classes at batch 4096)
    gw = jnp.tensordot(f(_after(z, gb)), g, axes=(lead, lead)) if wanted[1] else None
    if not wanted[0]:
        return None, gw, gb
    # f's own reverse rule, its residuals recomputed only now, so that they fuse into dz; with w not
    # differentiated (input gradients, per-example cotangents) there is no dw to form, and nothing to order
    _, pullback = vjp_of(f, z if gw is None else _after(z, gw))
    ordered = _after(w, gw) if gw is not None and _order_pays(math.prod(g.shape[:-1]), *w.shape) else w
    (gz,) = pullback(jnp.matmul(g, ordered.T))
    return gz, gw, gb


def _activation_affine_jvp(res, tz, tw, tb, activation, kwargs):
    z, w = res
    f = _activation(activation, kwargs)
    if tz is None:
        a, out = f(z), None
    else:
        a, ta = jvp_of(f, z, tz)  # f's own forward rule
        out = jnp.matmul(ta, w)
    return add_tangents(out, None if tw is None else jnp.matmul(a, tw), tb, shape=z.shape[:-1] + (w.shape[1],))


_ACTIVATION_AFFINE = Op(
    "activation_affine",
    value=_activation_affine_value,
    save=lambda z, w, b, **static: (_activation_affine_value(z, w, b, **static), (z, w)),
    vjp=_activation_affine_vjp,
    jvp=_activation_affine_jvp,
)

_FUSABLE = {d.name: d.fn for d in DECLARED if d.family == "nn" and d.activation and d.name != "prelu"}
#: The activations ``activation_affine`` takes: every declared activation but prelu (whose slope is a parameter).
FUSABLE = tuple(_FUSABLE)


@declare(forms=_ACTIVATION_AFFINE,
         saves="z and w (f(z) is recomputed in the reverse rule), so a chain keeps one tensor per layer",
         diff_argnums=(0, 1, 2), kink="that of the activation (e.g. relu's gradient 0 at z = 0)",
         checks=Checks(sample=S.pair,
                       cases=(((5, 3), (3, 4), (4,)), ((3,), (3, 2), (2,)), ((2, 3, 4), (4, 2), (2,))),
                       variants=({"activation": "silu"}, {"activation": "softmax"}),
                       extreme=lambda: (np.array([[1e4, -1e4]]), np.array([[-1e4, 3.0], [1e4, 1.0]]), np.array([1e4, 0.0]))))
def activation_affine(z, w, b, activation="relu", **activation_kwargs):
    """An activation followed by an affine map, fused: ``f(z) @ w + b``.

    ``z`` is ``(..., n_in)`` (the previous layer's pre-activation), ``w``
    ``(n_in, n_out)``, ``b`` ``(n_out,)``; ``activation`` names any activation
    of ``funcnet.nn`` but ``prelu``, with its keyword arguments (e.g.
    ``activation="leaky_relu", negative_slope=0.1``). Equal to
    ``affine(nn.<activation>(z, **activation_kwargs), w, b)`` in value and both
    derivatives; the difference is what the reverse rule keeps: only ``z`` (and
    ``w``), where the unfused pair keeps the activation's residual (its input or
    output) and the Dense layer's input ``f(z)``. In a chain
    ``z₁ = x w₀ + b₀, zₖ₊₁ = f(zₖ) wₖ + bₖ`` each layer's ``zₖ`` is the one
    tensor kept, for every activation; ``f(z)`` is recomputed in the backward
    pass (an elementwise pass per layer).

    Derivative: with G the upstream gradient and a = f(z), the reverse rule is
    dw = aᵀ G, db = ΣG and dz = f'(z)ᵀ(G wᵀ) by the activation's own reverse
    rule; the forward rule is ẏ = (f'(z) ż) w + a ẇ + ḃ, with the activation's
    forward rule.
    """
    op = "funcnet.gates.activation_affine"
    if activation not in FUSABLE:
        raise ValueError(f"{op}: `activation` must be one of {', '.join(FUSABLE)}, got {activation!r}")
    z, w, b = promote_floats(op, z=z, w=w, b=b)
    check_affine_shapes(op, "z", z, w, b)
    kwargs = tuple(sorted(activation_kwargs.items()))
    try:
        _check_activation(activation, kwargs, z.shape, z.dtype)
    except TypeError as err:
        raise TypeError(f"{op}: activation {activation!r} does not take {dict(kwargs)} "
                        f"(Python numbers, bools or strings): {err}") from None
    return _ACTIVATION_AFFINE(z, w, b, activation=activation, kwargs=kwargs)


@functools.lru_cache(maxsize=1024)
def _check_activation(activation, kwargs, shape, dtype) -> None:
    """Trace the activation once per signature (raises TypeError for keywords it does not take)."""
    jax.eval_shape(_activation(activation, kwargs), jax.ShapeDtypeStruct(shape, dtype))


__all__ = ["activation_affine", "FUSABLE"]
