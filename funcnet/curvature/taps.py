"""Taps: each parameterised layer's input and per-example output cotangent, from one forward and one backward pass.

Every layer with parameters that :mod:`funcnet.layers` builds is linear in
them once its input is fixed, so its per-example parameter gradient is a
contraction of two tensors the backward pass already has: the layer's input
(what the reverse rule saved) and the cotangent ``gᵢ = ∂ℓᵢ/∂zᵢ`` of its output
``z``. For a Dense layer ``z = a w + b`` (``a = x``, or ``f(x)`` after a fused
activation)::

    ∂ℓᵢ/∂w = Σₜ aᵢₜ gᵢₜᵀ          ∂ℓᵢ/∂b = Σₜ gᵢₜ

(``t`` runs over the positions of example ``i``: one for a flat input), and for
the elementwise layers (``LayerNorm``/``RMSNorm``: ``z = x̂ ⊙ scale + bias``;
``PReLU``: ``z = max(x, 0) + α min(x, 0)``) the gradient is ``Σₜ gᵢₜ ⊙ sᵢₜ`` with
``s = x̂``, ``1`` or ``min(x, 0)``.

:func:`tap` runs the model once with :data:`funcnet.layers.LAYER_TAP` set: each
such layer records its input and adds a zero probe to its output, so that one
``jax.vjp`` gives the parameter gradients and, as the probes' cotangents, every
layer's ``g``. The model's own ops (fused layers included) and their
hand-written rules run as always; the features (``a``, ``x̂``, ``min(x, 0)``) are
recomputed from the recorded input only when a quantity needs them, so the
taps keep no tensor the reverse rules do not keep already.

The quantities of :mod:`funcnet.curvature` are contractions of ``a`` and ``g``
(:func:`per_example`, :func:`squared_norms`, :func:`sum_of_squares`,
:func:`column_sum_of_squares` over several backward passes, :func:`weighted_sum`,
and K-FAC's :func:`second_moments`): the ghost-norm identity ``‖aᵢ gᵢᵀ‖² = ‖aᵢ‖²‖gᵢ‖²`` for one
position per example, and the Gram form ``Σₜₛ (aₜ·aₛ)(gₜ·gₛ)`` for several.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.layers import LAYER_TAP, Layer

__all__ = ["Site", "Taps", "tap", "features", "per_example", "squared_norms", "sum_of_squares",
           "column_sum_of_squares", "weighted_sum", "second_moments", "positions", "gather"]

Path = tuple[str, ...]


class Site(NamedTuple):
    """One tapped layer: what it is, where its parameters sit, and its input.

    Attributes:
      kind: ``"dense"``, ``"layer_norm"``, ``"rms_norm"`` or ``"prelu"``.
      path: the keys of its parameter entry in the model's parameters (``("dense_1",)``).
      shapes: each parameter's name and shape (``{"w": (64, 10), "b": (10,)}``).
      inputs: the layer's input, batch axis first.
      spec: how the layer computes (its activation, epsilon, op namespace).
    """

    kind: str
    path: Path
    shapes: dict
    inputs: Any
    spec: dict


class Taps(NamedTuple):
    """What :func:`tap` returns.

    Attributes:
      outputs: the model's outputs.
      sites: one :class:`Site` per tapped layer, in the order the layers ran.
      pullback: ``pullback(cotangent of outputs) -> (parameter cotangents, (g of each site, ...))``;
        linear, so it may be vmapped over several cotangents. The parameter cotangents are None when
        :func:`tap` was asked for none.
    """

    outputs: Any
    sites: tuple[Site, ...]
    pullback: Callable


def _key(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry))))


def _paths(params) -> dict[int, Path]:
    return {id(leaf): tuple(_key(k) for k in path) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def tap(model: Layer, params, x, *, parameter_gradients: bool = True, fn: str = "curvature") -> Taps:
    """Run ``model`` on ``x`` (inference mode) and tap every layer with parameters; see the module docstring.

    With ``parameter_gradients=False`` the pullback gives ``(None, δs)`` and the
    backward pass forms no parameter gradient (what the ghost norms save).

    Raises a ValueError naming the entry when a parameter belongs to no
    tappable layer (one :mod:`funcnet.layers` does not build, or parameters
    cast before the layer sees them).
    """
    static: list[tuple[str, Path, dict, dict]] = []

    def run(params, probes, outputs=None):
        where = _paths(params)
        inputs = []
        static.clear()

        def hook(kind, layer_params, layer_inputs, output, spec):
            paths = {where.get(id(leaf)) for leaf in layer_params.values()}
            if None in paths:
                raise ValueError(f"{fn}: a {kind} layer's parameters are not the model's own arrays (cast or "
                                 "computed before the layer?); pass the parameters to the model as they are")
            static.append((kind, next(iter(paths))[:-1], {k: tuple(jnp.shape(v)) for k, v in layer_params.items()},
                           spec))
            inputs.append(layer_inputs)
            if outputs is not None:
                outputs.append(output)
            return output if probes is None else output + probes[len(inputs) - 1]

        token = LAYER_TAP.set(hook)
        try:
            out = model.apply(params, x)
        finally:
            LAYER_TAP.reset(token)
        return out, tuple(inputs)

    def site_outputs(params):
        outputs: list = []
        run(params, None, outputs)
        return tuple(outputs)

    # a probe per tapped layer, shaped like its output (a trace, no computation)
    probes = tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(site_outputs, params))
    if parameter_gradients:
        out, vjp, inputs = jax.vjp(run, params, probes, has_aux=True)
    else:
        out, vjp_probes, inputs = jax.vjp(lambda probes: run(params, probes), probes, has_aux=True)

        def vjp(cotangent):
            return None, vjp_probes(cotangent)[0]
    sites = tuple(Site(k, p, sh, i, sp) for (k, p, sh, sp), i in zip(static, inputs))
    _check_covered(fn, params, sites)
    return Taps(out, sites, vjp)


def _check_covered(fn: str, params, sites) -> None:
    covered = {site.path + (name,) for site in sites for name in site.shapes}
    for path in _paths(params).values():
        if path not in covered:
            raise ValueError(f"{fn}: the parameters at {'/'.join(path)!r} belong to no layer funcnet.curvature "
                             "can tap (Dense, ActivationThenDense, LayerNorm, RMSNorm, PReLU, and networks of "
                             "them)")


# ------------------------------------------------------------------------------------------------ features
def features(site: Site) -> dict[str, tuple[str, Any]]:
    """Per parameter: ``("outer", a)`` (gradient ``Σₜ aₜ gₜᵀ``) or ``("scale", s)`` (``Σₜ gₜ ⊙ sₜ``; ``s`` None: 1).

    The features are values only (no derivative flows through them).
    """
    x = jax.lax.stop_gradient(site.inputs)
    ops = site.spec["ops"]
    if site.kind == "dense":
        act = site.spec["activation"]
        a = x if act is None else getattr(ops.nn, act)(x, **site.spec["activation_kwargs"])
        return {"w": ("outer", a), "b": ("scale", None)}
    if site.kind in ("layer_norm", "rms_norm"):
        width = x.shape[-1]
        unit = (jnp.ones((width,), x.dtype),) + ((jnp.zeros((width,), x.dtype),) if site.kind == "layer_norm" else ())
        x_hat = getattr(ops.nn, site.kind)(x, *unit, epsilon=site.spec["epsilon"])
        return {"scale": ("scale", x_hat), **({"bias": ("scale", None)} if "bias" in site.shapes else {})}
    if site.kind == "prelu":
        return {"alpha": ("scale", jnp.minimum(x, 0))}
    raise ValueError(f"curvature: no features for a layer of kind {site.kind!r}")


def _rows(t, width: int | None):
    """``t`` (batch first) as ``(B, positions, width)``, or ``(B, everything)`` for a scalar parameter."""
    return t.reshape(t.shape[0], -1) if width is None else t.reshape(t.shape[0], -1, width)


def _scale_terms(g, s, shape):
    t = g if s is None else g * s
    return _rows(t, shape[-1] if shape else None).sum(axis=1)


def _formed(a, g):
    """``(B, n_in, n_out)``: each example's ``Σₜ aₜ gₜᵀ``, formed."""
    return jnp.einsum("bti,bto->bio", _rows(a, a.shape[-1]), _rows(g, g.shape[-1]))


def per_example(site: Site, g) -> dict[str, Any]:
    """Each parameter's per-example gradient ``(B, *shape)`` from the site's output cotangent ``g``."""
    out = {}
    for name, (how, f) in features(site).items():
        out[name] = _formed(f, g) if how == "outer" else _scale_terms(g, f, site.shapes[name])
    return out


def squared_norms(site: Site, g):
    """``(B,)``: the squared L2 norm of each example's gradient over the site's parameters, never forming it
    for a Dense weight (``‖a‖²‖g‖²``, or the Gram form with several positions)."""
    total = 0.0
    for name, (how, f) in features(site).items():
        if how == "outer":
            a, gg = _rows(f, f.shape[-1]), _rows(g, g.shape[-1])
            if a.shape[1] == 1:
                total = total + jnp.sum(a[:, 0] ** 2, -1) * jnp.sum(gg[:, 0] ** 2, -1)
            elif a.shape[1] ** 2 <= a.shape[2] * gg.shape[2]:
                total = total + jnp.sum(jnp.einsum("bti,bsi->bts", a, a) * jnp.einsum("bto,bso->bts", gg, gg), (1, 2))
            else:
                total = total + jnp.sum(_formed(f, g) ** 2, (1, 2))
        else:
            t = _scale_terms(g, f, site.shapes[name])
            total = total + jnp.sum(t.reshape(t.shape[0], -1) ** 2, -1)
    return total


def sum_of_squares(site: Site, g) -> dict[str, Any]:
    """Each parameter's ``Σᵢ (∂ℓᵢ/∂θ)²``: ``(a²)ᵀ(g²)`` for a Dense weight with one position per example."""
    return column_sum_of_squares(site, g[None])


def column_sum_of_squares(site: Site, gs) -> dict[str, Any]:
    """Each parameter's ``Σₖ Σᵢ (∂ℓᵢₖ/∂θ)²`` for cotangents ``gs`` ``(K, B, ...)`` of ``K`` backward passes.

    With one position per example the features do not depend on ``k``, so the
    sum over ``k`` comes first: a Dense weight's is ``(a²)ᵀ (Σₖ gₖ²)``, one matrix
    product whatever ``K`` (the exact GGN diagonal's ``K`` Hessian-root columns).
    """
    out = {}
    one = positions(site) == 1
    for name, (how, f) in features(site).items():
        if how == "outer" and one:
            a = f.reshape(f.shape[0], -1)
            out[name] = (a * a).T @ jnp.sum(gs.reshape(*gs.shape[:2], -1) ** 2, 0)
        elif how == "outer":  # a weight seen at several positions: each column's per-example gradients formed
            out[name] = jnp.sum(jax.vmap(lambda g, f=f: _formed(f, g) ** 2)(gs), (0, 1))
        else:  # elementwise terms (cheap), per column
            out[name] = jnp.sum(jax.vmap(lambda g, f=f, name=name: _scale_terms(g, f, site.shapes[name]) ** 2)(gs),
                                (0, 1))
    return out


def positions(site: Site) -> int:
    """How many positions each example has at the site (1 for a flat input ``(B, width)``)."""
    x = site.inputs
    return 1 if x.ndim <= 2 else int(jnp.size(x) // (x.shape[0] * x.shape[-1]))


def second_moments(site: Site, gs, fn: str = "kfac_factors") -> dict[str, Any]:
    """K-FAC's per-site statistics from cotangents ``gs`` ``(K, B, ...)`` of ``K`` sampled backward passes.

    A Dense layer: ``{"a": Σᵢ āᵢ āᵢᵀ, "g": Σₖ Σᵢ gᵢₖ gᵢₖᵀ}`` (``ā = [a, 1]``, the
    bias's input appended last); any other layer: its parameters'
    ``Σₖ Σᵢ (∂ℓᵢₖ/∂θ)²`` (:func:`column_sum_of_squares`). Sums, not means: the
    caller divides. One position per example (a ValueError otherwise).
    """
    if site.kind != "dense":
        return column_sum_of_squares(site, gs)
    if positions(site) != 1:
        raise ValueError(f"{fn}: the Dense layer at {'/'.join(site.path)!r} sees {positions(site)} positions per "
                         "example; its K-FAC factors here assume one (a flat input of shape (batch, width))")
    _, a = features(site)["w"]
    a = a.reshape(a.shape[0], -1)
    a_bar = jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)
    g = gs.reshape(-1, gs.shape[-1])
    return {"a": a_bar.T @ a_bar, "g": g.T @ g}


def weighted_sum(site: Site, g, weights) -> dict[str, Any]:
    """Each parameter's ``Σᵢ cᵢ ∂ℓᵢ/∂θ`` for per-example weights ``c`` ``(B,)``, never forming the per-example terms."""
    return {name: jnp.tensordot(weights, t, 1) if how == "scale" else
            jnp.einsum("b,bti,bto->io", weights, _rows(f, f.shape[-1]), _rows(g, g.shape[-1]))
            for name, (how, f) in features(site).items()
            for t in [_scale_terms(g, f, site.shapes[name]) if how == "scale" else None]}


def gather(params, sites, values: list[dict]) -> Any:
    """A pytree shaped like ``params`` from per-site dicts (``values[k][name]`` for ``sites[k]``); a parameter
    that several sites share (a tied weight) gets their sum."""
    by_path: dict[Path, Any] = {}
    for site, entry in zip(sites, values):
        for name, value in entry.items():
            key = site.path + (name,)
            by_path[key] = value if key not in by_path else by_path[key] + value
    return jax.tree_util.tree_map_with_path(lambda path, _: by_path[tuple(_key(k) for k in path)], params)
