"""K-FAC: Kronecker-factored curvature of each Dense layer, and an Optax optimizer that preconditions with it.

Factors (Martens & Grosse 2015)
-------------------------------
A Dense layer ``z = a w + b`` (``a`` its input, after a fused activation) has the
per-example gradient ``∂ℓᵢ/∂[w; b] = āᵢ δᵢᵀ`` with ``ā = [a, 1]`` (the bias's input
appended last) and ``δᵢ = ∂ℓᵢ/∂zᵢ``. The Fisher of the mean loss
``L = (1/B) Σᵢ ℓᵢ`` restricted to the layer, ``F = (1/B) Σᵢ E_ŷ[vec(āᵢδᵢᵀ) vec(āᵢδᵢᵀ)ᵀ]``,
is approximated by ``F ≈ A ⊗ G`` with::

    A = (1/B) Σᵢ āᵢ āᵢᵀ                    ((n_in + 1) × (n_in + 1))
    G = (1/(B k)) Σᵢ Σₛ δᵢₛ δᵢₛᵀ            (n_out × n_out)

where ``δᵢₛ`` is the output cotangent of example ``i``'s own loss ``ℓᵢ`` at targets
sampled from the model (:func:`~funcnet.curvature.sample_targets`, ``k`` sets):
the Fisher's labels, not the data's (the "empirical Fisher" is a different,
worse-behaved matrix). Normalisation: ``δᵢ`` is the cotangent of ``ℓᵢ``, not of
``L`` (which is ``δᵢ/B``); with it ``(1/B) Σᵢ (āᵢāᵢᵀ) ⊗ (δᵢδᵢᵀ)``, the layer's exact
Fisher of ``L``, factors into the two means above. This is kfac-jax's
convention (it scales the mean loss's cotangents back up by ``B``) and Martens
& Grosse's (expectations over the data). ``E[δᵢδᵢᵀ] = Jᵢᵀ Hᵢ Jᵢ`` at the layer's
output, so ``A ⊗ G`` approximates the GGN's block too. For ``LayerNorm``,
``RMSNorm`` and ``PReLU`` the factor is the exact Fisher diagonal of their
parameters, ``(1/(B k)) Σᵢₛ (∂ℓᵢₛ/∂θ)²``. One position per example is assumed (a
Dense layer seeing a sequence is refused).

The optimizer
-------------
:func:`kfac` keeps running averages of the factors (a weighted moving average,
``decay`` per step, normalised by its total weight as in kfac-jax, so the
first step's average is that step's factors), and every
``inverse_update_interval`` steps (and at the first) inverts them with factored
Tikhonov damping::

    Ā = A + π √λ I,   Ḡ = G + (√λ / π) I,   π = √( (tr A / dim A) / (tr G / dim G) )

(``λ`` = ``damping``; π balances the two factors, Martens & Grosse §6.3). The
gradient ``V = [∇w; ∇b]`` of each Dense layer becomes ``Ā⁻¹ V Ḡ⁻¹``
(``(Ā ⊗ Ḡ)⁻¹ vec V``), a diagonal layer's ``∇θ / (F_diag + λ)``; then momentum
``v ← μ v + Δ`` and the step ``−η v``. Cost per step: one more forward pass and
``samples`` backward passes (the factors' cotangents), ``O(B n²)`` per layer for
the factors, and every ``inverse_update_interval`` steps ``O(n³)`` per factor
(Cholesky).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funcnet.curvature import taps as _taps
from funcnet.curvature.loss_hessians import ZERO_HESSIAN, check_outputs, loss_name, sampled_gradients
from funcnet.layers import Layer
from funcnet.ops.inputs import static_int
from funcnet.train.steps import DEFAULT_LOSS, Loss

__all__ = ["KroneckerFactors", "KFACState", "kfac_factors", "kfac"]


class KroneckerFactors(NamedTuple):
    """A Dense layer's factors (or, in :class:`KFACState`, their damped inverses).

    Attributes:
      a: ``A = E[ā āᵀ]``, ``(n_in + 1, n_in + 1)``, the bias's input ``1`` last.
      g: ``G = E[δ δᵀ]``, ``(n_out, n_out)``.
    """

    a: Any
    g: Any


Path = tuple[str, ...]


def _entries(params) -> dict[Path, dict]:
    """The parameter entries by layer path: ``{("dense_0",): {"w": ..., "b": ...}, ...}``."""
    out: dict[Path, dict] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(_taps._key(k) for k in path)
        out.setdefault(keys[:-1], {})[keys[-1]] = leaf
    return out


def _nest(by_path: dict[Path, Any]) -> Any:
    """A nested dict from ``{path: value}`` (the value itself for the empty path)."""
    if () in by_path:
        return by_path[()]
    root: dict = {}
    for path, value in by_path.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


def _at(tree, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def _statistics(fn: str, model: Layer, params, x, key, loss, samples: int):
    """``(sites, per-site sums of second_moments)`` from one forward and ``samples`` sampled backward passes."""
    name = loss_name(fn, loss)
    if name in ZERO_HESSIAN:
        raise ValueError(f"{fn}: the {name} loss has a zero output Hessian almost everywhere (it is piecewise "
                         "linear), so its Fisher and K-FAC's factors are zero; use another loss")
    t = _taps.tap(model, params, x, fn=fn)
    check_outputs(fn, t.outputs)
    paths = [s.path for s in t.sites]
    for path in paths:
        if paths.count(path) > 1:
            raise ValueError(f"{fn}: the parameters at {'/'.join(path)!r} are used by {paths.count(path)} layers; "
                             "K-FAC's factors assume each layer has parameters of its own")
    cotangents = sampled_gradients(name, key, t.outputs, samples=samples, model=model)
    _, deltas = jax.vmap(t.pullback)(cotangents)
    return t.sites, [_taps.second_moments(s, d, fn) for s, d in zip(t.sites, deltas)]


def kfac_factors(model: Layer, params, x, key, *, loss: str | Loss = DEFAULT_LOSS, samples: int = 1) -> Any:
    """Each layer's K-FAC factors on the batch ``x`` (see the module docstring), keyed like ``params``' entries.

    A Dense layer's entry is ``KroneckerFactors(A, G)`` with ``A = (1/B) Σᵢ āᵢāᵢᵀ``
    and ``G = (1/(B k)) Σᵢₛ δᵢₛδᵢₛᵀ`` from ``k = samples`` sets of sampled targets
    (sample ``s`` uses ``jax.random.split(key, samples)[s]``); a norm or PReLU
    layer's entry is its parameters' Fisher diagonal, a dict like its
    parameters. Cost: one forward and ``samples`` backward passes, and ``O(B n²)``
    per Dense layer.
    """
    fn = "kfac_factors"
    samples = static_int(fn, "samples", samples, 1)
    sites, sums = _statistics(fn, model, params, x, key, loss, samples)
    return _nest(_scaled(sites, sums, x.shape[0], samples))


def _scaled(sites, sums, batch: int, samples: int) -> dict[Path, Any]:
    """The sums of :func:`_statistics` as means: ``A`` over the batch, the rest over the batch and the samples."""
    out = {}
    for site, entry in zip(sites, sums):
        if site.kind == "dense":
            out[site.path] = KroneckerFactors(entry["a"] / batch, entry["g"] / (batch * samples))
        else:
            out[site.path] = {k: v / (batch * samples) for k, v in entry.items()}
    return out


# ------------------------------------------------------------------------------------------------ optimizer
class KFACState(NamedTuple):
    """The state of :func:`kfac` (a pytree; every leaf an array, so it goes into a checkpoint as it is).

    Attributes:
      count: steps taken (int32).
      weight: the total weight of the factors' moving average (``Σₜ decayᵗ``).
      factors: the running averages, one entry per layer (:class:`KroneckerFactors`, or a Fisher diagonal).
      inverses: their damped inverses, refreshed every ``inverse_update_interval`` steps.
      velocity: the momentum buffer, shaped like the parameters.
    """

    count: Any
    weight: Any
    factors: Any
    inverses: Any
    velocity: Any


def _check_number(fn: str, name: str, value, low: float, high: float = math.inf, *, open_low: bool = False,
                  open_high: bool = False) -> None:
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r:.60}") from None
    below = v <= low if open_low else v < low
    above = v >= high if open_high else v > high
    if not math.isfinite(v) or below or above:
        lo, hi = ("(" if open_low else "[") + f"{low:g}", f"{high:g}" + (")" if open_high else "]")
        raise ValueError(f"{fn}: {name} must be finite and in {lo}, {hi}, got {value!r}")


def _damped_inverse(a, g, damping):
    """``(Ā⁻¹, Ḡ⁻¹)`` with factored Tikhonov damping and π from the factors' mean eigenvalues (traces)."""
    ta, tg = jnp.trace(a) / a.shape[0], jnp.trace(g) / g.shape[0]
    tiny = jnp.finfo(a.dtype).tiny
    pi = jnp.where((ta > tiny) & (tg > tiny), jnp.sqrt(ta / jnp.maximum(tg, tiny)), 1.0)
    root = jnp.sqrt(damping)

    def inv(m, shift):
        eye = jnp.eye(m.shape[0], dtype=m.dtype)
        chol = jnp.linalg.cholesky(m + shift * eye)
        return jax.scipy.linalg.cho_solve((chol, True), eye)

    return KroneckerFactors(inv(a, pi * root), inv(g, root / pi))


def kfac(model: Layer, *, learning_rate: float | Callable, loss: str | Loss = DEFAULT_LOSS, damping: float = 0.1,
         momentum: float = 0.9, inverse_update_interval: int = 10, decay: float = 0.95,
         norm_constraint: float | None = 1e-3, samples: int = 1, seed: int = 0) -> optax.GradientTransformationExtraArgs:
    """K-FAC (Martens & Grosse 2015) as an Optax transformation whose ``update`` takes the batch.

    ``update(grads, state, params, *, batch=(x, y), key=None)`` computes this
    batch's factors (:func:`kfac_factors`, at ``params``), folds them into the
    running averages, refreshes the damped inverses every
    ``inverse_update_interval`` steps, preconditions ``grads`` layer by layer and
    returns ``−η (μ v + Δ)`` (see the module docstring). :func:`funcnet.train.make_step`
    (and so ``fit`` and ``funcnet train --optimizer kfac``) passes the batch and a
    key; without a key the samples are drawn with ``fold_in(key(seed), count)``.

    The gradient may hold more than the loss's (a weight penalty): it is
    preconditioned as it is. The factors use the model in inference mode (no
    dropout) and the loss's Fisher, which for these losses is the GGN.

    Args:
      model: the network whose parameters are trained (Dense, fused Dense, LayerNorm, RMSNorm and PReLU layers).
      learning_rate: η, a number or an Optax schedule of the step count.
      loss: a name of :data:`funcnet.train.LOSSES` but ``multiclass_svm`` (whose Fisher is zero).
      damping: λ > 0, added to the Fisher (factored between ``A`` and ``G``; added as it is to the diagonals).
      momentum: μ in [0, 1).
      inverse_update_interval: steps between refreshes of the inverses.
      decay: the factors' moving-average decay, in [0, 1).
      norm_constraint: ``c`` > 0, or None: the direction is scaled by ``min(1, √(c / (η² Δ·∇)))`` so that the
        step's squared norm in the damped curvature, ``η² Δᵀ F̃ Δ = η² Δ·∇``, is at most ``c`` (kfac-jax's
        ``norm_constraint``, Ba et al. 2017's KL clipping).
      samples: sets of sampled targets per step (``G``'s Monte-Carlo samples).
      seed: seeds the samples when ``update`` gets no key.
    """
    fn = "kfac"
    name = loss_name(fn, loss)
    if name in ZERO_HESSIAN:
        raise ValueError(f"{fn}: the {name} loss has a zero output Hessian almost everywhere, so its Fisher is zero "
                         "and K-FAC would divide by the damping alone; use another loss")
    _check_number(fn, "learning_rate", learning_rate, 0.0, open_low=True)
    _check_number(fn, "damping", damping, 0.0, open_low=True)
    _check_number(fn, "momentum", momentum, 0.0, 1.0, open_high=True)
    _check_number(fn, "decay", decay, 0.0, 1.0, open_high=True)
    interval = static_int(fn, "inverse_update_interval", inverse_update_interval, 1)
    samples = static_int(fn, "samples", samples, 1)
    seed = static_int(fn, "seed", seed, 0)
    if norm_constraint is not None:
        _check_number(fn, "norm_constraint", norm_constraint, 0.0, open_low=True)

    def blank(params, full: bool):
        out = {}
        for path, entry in _entries(params).items():
            if set(entry) == {"w", "b"} and jnp.ndim(entry["w"]) == 2:
                n_in, n_out = jnp.shape(entry["w"])
                dtype = jnp.result_type(entry["w"])
                out[path] = KroneckerFactors(jnp.eye(n_in + 1, dtype=dtype) * full,
                                             jnp.eye(n_out, dtype=dtype) * full)
            else:
                out[path] = {k: jnp.full(jnp.shape(v), full, jnp.result_type(v)) for k, v in entry.items()}
        return out

    def init(params) -> KFACState:
        if not jax.tree.leaves(params):  # optax.tree_map_params' placeholder: the factors stand as one leaf each
            zero = jnp.zeros(())
            return KFACState(jnp.zeros((), jnp.int32), zero, zero, zero, jax.tree.map(jnp.zeros_like, params))
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return KFACState(jnp.zeros((), jnp.int32), jnp.zeros((), dtype), _nest(blank(params, False)),
                         _nest(blank(params, True)), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state: KFACState, params=None, *, batch=None, key=None, **extra_args):
        del extra_args
        if params is None or batch is None:
            raise TypeError(f"{fn}: update needs the parameters and the batch: update(grads, state, params, "
                            "batch=(x, y), key=key) (funcnet.train.make_step passes them)")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if key is None:
            key = jax.random.fold_in(jax.random.key(seed), state.count)
        sites, sums = _statistics(fn, model, params, x, key, name, samples)
        for site in sites:
            if (site.kind == "dense") != isinstance(_at(state.factors, site.path), KroneckerFactors):
                raise ValueError(f"{fn}: the layer at {'/'.join(site.path)!r} is a {site.kind} layer, but the "
                                 "state was made for another kind; init the optimizer with this model's parameters")
        new = _scaled(sites, sums, x.shape[0], samples)
        weight = (decay * state.weight + 1.0).astype(state.weight.dtype)
        old = {s.path: _at(state.factors, s.path) for s in sites}
        averaged = {p: jax.tree.map(lambda o, n: (((decay * state.weight) * o + n) / weight).astype(o.dtype),
                                    old[p], new[p]) for p in new}
        factors = _nest(averaged)

        def invert(_):
            out = {}
            for p, f in averaged.items():
                if isinstance(f, KroneckerFactors):
                    out[p] = _damped_inverse(f.a, f.g, jnp.asarray(damping, f.a.dtype))
                else:
                    out[p] = jax.tree.map(lambda d: 1.0 / (d + damping), f)
            return _nest(out)

        def refreshed(_):
            return jax.tree.map(lambda n, o: n.astype(o.dtype), invert(None), state.inverses)

        inverses = jax.lax.cond(state.count % interval == 0, refreshed, lambda _: state.inverses, None)
        entries = _entries(grads)
        directions = {}
        for site in sites:
            inv = _at(inverses, site.path)
            g = entries[site.path]
            if isinstance(inv, KroneckerFactors):
                v = jnp.concatenate([g["w"], g["b"][None, :]], axis=0)
                p = inv.a @ v @ inv.g
                directions[site.path] = {"w": p[:-1], "b": p[-1]}
            else:
                directions[site.path] = {k: g[k] * inv[k] for k in g}
        flat = {path + (k,): v for path, entry in directions.items() for k, v in entry.items()}
        delta = jax.tree_util.tree_map_with_path(lambda path, _: flat[tuple(_taps._key(k) for k in path)], grads)
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if norm_constraint is not None:
            sq = rate**2 * sum(jnp.vdot(d, g) for d, g in zip(jax.tree.leaves(delta), jax.tree.leaves(grads)))
            scale = jnp.minimum(1.0, jnp.sqrt(norm_constraint / jnp.maximum(sq, jnp.finfo(sq.dtype).tiny)))
            delta = jax.tree.map(lambda d: (scale * d).astype(d.dtype), delta)
        velocity = jax.tree.map(lambda v, d: (momentum * v + d).astype(v.dtype), state.velocity, delta)
        updates = jax.tree.map(lambda v: (-rate * v).astype(v.dtype), velocity)
        return updates, KFACState(state.count + 1, weight, factors, inverses, velocity)

    return optax.GradientTransformationExtraArgs(init, update)
