"""Segmentation losses: the soft Dice (Tversky) loss, its binary form, and the generalized Dice loss.

All three are one rule: per class (and batch row), over the summed axes, with
I = Σ p·t, P = Σ p, T = Σ t,

    dice = 1 - N/D,   N = I + s,   D = I + α(P - I) + β(T - I) + s,

p the softmax (the sigmoid for one channel, or nothing) of the predictions;
then optional class weights, the background class left out, and the reduction.
The generalized loss takes its class weights from the targets' class
frequencies, inside the same rule.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops.inputs import as_array, canonical_axis, float_input, is_concrete, is_number, promote_floats, static_float
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.binding import with_array_hypers, with_optional
from funcnet.ops.declaration import Checks, declarer, names
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import check_same_shape, float_labels

declare = declarer("losses", twins=twin, upstream=optax.losses)

#: optax's floor under the squared class frequencies of the generalized Dice weights.
_FREQUENCY_EPS = 1e-7
_REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------ the rule
def _probs(xw, activation):
    if activation == "softmax":
        return jax.nn.softmax(xw, axis=-1)
    if activation == "sigmoid":
        return jax.nn.sigmoid(xw)
    return xw


def _probs_tangent(p, txw, activation):
    if activation == "softmax":
        return p * (txw - jnp.sum(p * txw, axis=-1, keepdims=True))
    if activation == "sigmoid":
        return p * (1 - p) * txw
    return txw


def _probs_cotangent(p, gp, activation):
    return _probs_tangent(p, gp, activation)  # both Jacobians are symmetric


def _auto_weights(tw):
    """The generalized Dice weights C·r/Σr, r = 1/(f² + ε), f the targets' sum over all but the last axis."""
    f = jnp.sum(tw, axis=tuple(range(tw.ndim - 1)))
    r = 1.0 / (f * f + _FREQUENCY_EPS)
    return f, r, r.shape[0] * r / jnp.sum(r)


def _auto_weights_tangent(f, r, ftangent):
    """d(C·r/Σr) along ḟ: ṙ = -2 f r² ḟ."""
    dr = -2 * f * r * r * ftangent
    total = jnp.sum(r)
    return r.shape[0] * (dr / total - r * jnp.sum(dr) / (total * total))


def _auto_weights_cotangent(tw, f, r, gweights):
    """The targets' cotangent from the weights' (the transpose of :func:`_auto_weights_tangent`)."""
    total = jnp.sum(r)
    gr = r.shape[0] * (gweights / total - jnp.sum(gweights * r) / (total * total))
    return jnp.broadcast_to(-2 * f * r * r * gr, tw.shape)


def _weights(t, w, auto):
    if auto:
        return _auto_weights(widen(t))[2]
    return None if w is None else widen(w)


def _reduce(loss, reduce, skip_first):
    if skip_first:
        loss = loss[..., 1:]
    if reduce == "mean":
        return jnp.mean(loss, axis=-1)
    if reduce == "sum":
        return jnp.sum(loss, axis=-1)
    if reduce == "all":
        return jnp.mean(loss)
    return loss


def _unreduce(g, shape, reduce, skip_first):
    """The cotangent of the weighted per-class losses (``shape``) from the output's: :func:`_reduce` transposed."""
    kept = shape[:-1] + (shape[-1] - skip_first,) if shape else shape
    if reduce == "mean":
        g = jnp.broadcast_to(g[..., None] / kept[-1], kept)
    elif reduce == "sum":
        g = jnp.broadcast_to(g[..., None], kept)
    elif reduce == "all":
        g = jnp.broadcast_to(g / math.prod(kept), kept)
    if skip_first:
        g = jnp.concatenate([jnp.zeros(shape[:-1] + (1,), g.dtype), g], axis=-1)
    return g


def _dice_parts(p, tw, axes, smooth, alpha, beta):
    """(I, P, T, N, D) per class row, in optax's order of operations."""
    inter, psum, tsum = jnp.sum(p * tw, axis=axes), jnp.sum(p, axis=axes), jnp.sum(tw, axis=axes)
    return inter, psum, tsum, inter + smooth, inter + alpha * (psum - inter) + beta * (tsum - inter) + smooth


def _dice_save(x, t, w, *, axes, smooth, alpha, beta, activation, reduce, skip_first, auto):
    p = _probs(widen(x), activation)
    *_, n, d = _dice_parts(p, widen(t), axes, smooth, alpha, beta)
    weights = _weights(t, w, auto)
    dice = 1.0 - n / d
    loss = _reduce(dice if weights is None else dice * weights, reduce, skip_first)
    return loss.astype(x.dtype), (x, t, w, n, d)


def _dice_vjp(res, g, *, axes, smooth, alpha, beta, activation, reduce, skip_first, auto):
    x, t, w, n, d = res
    tw = widen(t)
    p = _probs(widen(x), activation)
    weights = _weights(t, w, auto)
    gk = _unreduce(widen(g), n.shape, reduce, skip_first)  # of the weighted losses
    q = (gk if weights is None else gk * weights) / (d * d)
    # d(dice)/dp = -(t(D - (1-α-β)N) - αN)/D², d(dice)/dt = -(p(D - (1-α-β)N) - βN)/D²: per class row,
    # u·t + v and u·p + v' (u, v, v' formed per row: fewer full-size broadcasts)
    u = jnp.expand_dims(-q * (d - (1 - alpha - beta) * n), axes)
    gx = _probs_cotangent(p, u * tw + jnp.expand_dims(q * alpha * n, axes), activation)
    gt = u * p + jnp.expand_dims(q * beta * n, axes)
    gweights = None
    if w is not None or auto:
        gweights = jnp.sum(gk * (1.0 - n / d), axis=tuple(range(n.ndim - 1)))
    if auto:
        f, r, _ = _auto_weights(tw)
        gt = gt + _auto_weights_cotangent(tw, f, r, gweights)
    gw = None if w is None else gweights.astype(w.dtype)
    return gx.astype(x.dtype), gt.astype(t.dtype), gw


def _dice_jvp(res, tx, tt, tw_, *, axes, smooth, alpha, beta, activation, reduce, skip_first, auto):
    x, t, w, n, d = res
    tw = widen(t)
    p = _probs(widen(x), activation)
    dp = None if tx is None else _probs_tangent(p, widen(tx), activation)
    dtw = None if tt is None else widen(tt)
    di = add_tangents(None if dp is None else jnp.sum(dp * tw, axis=axes),
                      None if dtw is None else jnp.sum(p * dtw, axis=axes))
    # dN = dI, dD = (1-α-β) dI + α dP + β dT
    dd = add_tangents(None if di is None else (1 - alpha - beta) * di,
                      None if dp is None else alpha * jnp.sum(dp, axis=axes),
                      None if dtw is None else beta * jnp.sum(dtw, axis=axes))
    ddice = None if dd is None else -((0.0 if di is None else di * d) - n * dd) / (d * d)
    weights = _weights(t, w, auto)
    dweights = None if tw_ is None else widen(tw_)
    if auto and dtw is not None:
        f, r, _ = _auto_weights(tw)
        dweights = _auto_weights_tangent(f, r, jnp.sum(dtw, axis=tuple(range(tw.ndim - 1))))
    dot = add_tangents(None if ddice is None or weights is None else ddice * weights,
                       ddice if weights is None else None,
                       None if dweights is None else (1.0 - n / d) * dweights)
    return None if dot is None else _reduce(dot, reduce, skip_first).astype(x.dtype)


def _hyper_derivatives(hypers: tuple[str, ...]):
    """d(loss)/d(each of ``hypers``) in the loss's shape: d(dice)/ds = -(D - N)/D², d/dα = N(P - I)/D²,
    d/dβ = N(T - I)/D², then weighted and reduced as the losses are."""
    def derivatives(res, *, axes, smooth, alpha, beta, activation, reduce, skip_first, auto):
        x, t, w, n, d = res
        inter, psum, tsum, _, _ = _dice_parts(_probs(widen(x), activation), widen(t), axes, smooth, alpha, beta)
        weights = _weights(t, w, auto)
        local = {"smooth": -(d - n), "alpha": n * (psum - inter), "beta": n * (tsum - inter)}
        return tuple(_reduce(local[h] / (d * d) * (1.0 if weights is None else weights), reduce, skip_first)
                     for h in hypers)
    return derivatives


#: Without and with class weights (the generalized loss computes its own, without).
_DICE = tuple(with_optional("dice_loss", _dice_save, _dice_vjp, _dice_jvp, (True, True, weighted))
              for weighted in (False, True))
_DICE_HYPERS = ("smooth", "alpha", "beta")
#: The same, with smooth, alpha and beta as (traced) scalar arrays, or smooth alone.
_DICE_ARRAY = tuple(with_array_hypers(rule, _DICE_HYPERS, _hyper_derivatives(_DICE_HYPERS)) for rule in _DICE)


# ------------------------------------------------------------------ arguments
def _hyper(op: str, name: str, value):
    """A number (static), or a scalar array (traced or not) that gets its gradient."""
    if is_number(value):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, "dtype"):
        value = float_input(op, name, value)
        if value.ndim:
            raise ValueError(f"{op}: `{name}` must be a number or a scalar array, got an array of shape "
                             f"{tuple(value.shape)}")
        return value
    return static_float(op, name, value)


def _promote(op: str, predictions, targets, **more) -> dict:
    """Float predictions, targets and the ``more`` arrays given (not None), promoted together as optax's
    arithmetic does; integer and boolean targets are cast to that dtype (no gradient)."""
    floats = dict(predictions=predictions, **{k: v for k, v in more.items() if v is not None})
    if jnp.issubdtype(as_array(op, "targets", targets).dtype, jnp.floating):
        floats["targets"] = targets
    promoted = dict(zip(floats, promote_floats(op, **floats)))
    if "targets" not in promoted:
        promoted["targets"] = float_labels(op, targets, promoted["predictions"], name="targets")
    return promoted


def _check_distributions(op: str, predictions) -> None:
    """optax's check for apply_softmax=False: the predictions sum to 1 along the last axis (concrete values only)."""
    if not is_concrete(predictions):
        return
    sums = np.sum(np.asarray(predictions, np.float64), axis=-1)
    if not np.allclose(sums, 1.0, rtol=1e-5):
        raise ValueError(f"{op}: when apply_softmax=False, predictions must be valid probability distributions "
                         f"that sum to 1 along the class axis (the last); found sums from {sums.min():.6f} to "
                         f"{sums.max():.6f}")


def _dice(op: str, predictions, targets, *, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5,
          apply_softmax=True, reduction="mean", ignore_background=False, axis=None, auto=False):
    """Check and shape the arguments as optax's dice_loss does, then apply the rule."""
    hypers = {"smooth": _hyper(op, "smooth", smooth), "alpha": _hyper(op, "alpha", alpha),
              "beta": _hyper(op, "beta", beta)}
    numbers = all(isinstance(h, float) for h in hypers.values())
    arrays = _promote(op, predictions, targets, class_weights=class_weights, **({} if numbers else hypers))
    predictions, targets, class_weights = arrays["predictions"], arrays["targets"], arrays.get("class_weights")
    if predictions.ndim == targets.ndim - 1:
        predictions = predictions[..., None]
    if targets.ndim == predictions.ndim - 1:
        targets = targets[..., None]
    check_same_shape(op, ("predictions", "targets"), predictions, targets)
    if predictions.ndim == 0:
        raise ValueError(f"{op}: `predictions` must have a class axis (the last), got a scalar")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: unsupported reduction {reduction!r}; use one of {_REDUCTIONS}")
    if not apply_softmax:
        _check_distributions(op, predictions)
    ndim = predictions.ndim
    axes = tuple(range(1, ndim - 1)) if axis is None else canonical_axis(op, axis, ndim)
    loss_ndim = ndim - len(axes)
    skip_first = bool(ignore_background) and predictions.shape[-1] > 1
    if loss_ndim == 0 and (skip_first or reduction != "none" or class_weights is not None):
        raise ValueError(f"{op}: axis={axis!r} sums over every axis of shape {tuple(predictions.shape)}, which "
                         f"leaves no class axis to weight, drop the background from or reduce over")
    classes = [n for i, n in enumerate(predictions.shape) if i not in axes][-1] if loss_ndim else 0
    args = [predictions, targets]
    if class_weights is not None:
        if class_weights.shape not in ((classes,), (1,)):
            raise ValueError(f"{op}: `class_weights` must have shape ({classes},), one weight per class of the "
                             f"losses' last axis, got shape {tuple(class_weights.shape)}")
        args.append(jnp.broadcast_to(class_weights, (classes,)))
    activation = ("sigmoid" if predictions.shape[-1] == 1 else "softmax") if apply_softmax else None
    static = dict(axes=axes, activation=activation, reduce="all" if auto else reduction, skip_first=skip_first,
                  auto=auto)
    weighted = class_weights is not None
    if numbers:
        return _DICE[weighted](*args, **static, **hypers)
    return _DICE_ARRAY[weighted](*args, *(arrays[h] for h in _DICE_HYPERS), **static)


# ------------------------------------------------------------------ the losses
def _logits_and_targets(rng, shape):
    """Logits and soft targets in [0.05, 1) of one shape (batch, spatial..., classes)."""
    return rng.normal(size=shape) * 1.5, rng.uniform(0.05, 1.0, shape)


def _extreme():
    """Saturated softmax entries (±1e4 logits) with hard and soft targets, three classes."""
    x = np.array([[[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], [[-1e4, -1e4, 1e4], [3.0, 1e4, -50.0]]])
    t = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]]])
    return x, t


_saves = ("the predictions and targets (inputs, not copied) and the class weights if given; per class and batch "
          "row N and D, two arrays the size of the loss before its class reduction; the probabilities are "
          "recomputed from the predictions by both rules")
_dice_differs = (
    "integer predictions are promoted to float; apply_softmax=False's check that the predictions sum to 1 runs on "
    "concrete values only (optax's cannot be traced, so that it fails under jit); `class_weights` must have one "
    "weight per class (or one in all; optax also broadcasts a (C,) weight against a one-class loss); smooth, "
    "alpha and beta are numbers or scalar arrays (traced too, with gradients); optax also broadcasts arrays of "
    "them against the per-class ratios")


@declare(forms=_DICE + _DICE_ARRAY, saves=_saves, diff_argnums=(0, 1), differs=_dice_differs,
         checks=Checks(sample=_logits_and_targets, cases=((2, 4, 3), (2, 3, 2, 3)),
                       variants=({}, {"reduction": "none", "ignore_background": True, "alpha": 0.3, "beta": 0.6},
                                 {"reduction": "sum", "smooth": 0.5, "axis": 1}),
                       extreme=_extreme))
def dice_loss(predictions, targets, *, class_weights=None, smooth=1., alpha=0.5, beta=0.5, apply_softmax=True,
              reduction="mean", ignore_background=False, axis=None):
    r"""Soft Dice (Tversky) loss per class, as ``optax.losses.dice_loss``.

    With p = softmax(predictions) over the last (class) axis (the sigmoid when
    that axis has one entry; the predictions themselves with
    ``apply_softmax=False``, which must then sum to 1 along it), summed over
    ``axis`` (default: every axis but the first and the last) for each class
    and batch row: I = Σ p·t, P = Σ p, T = Σ t, and

        dice = 1 - N/D,   N = I + s,   D = I + α(P - I) + β(T - I) + s.

    α = β = ½ is the standard Dice loss 1 - (2I + 2s)/(P + T + 2s); α > β
    weighs false positives more, β > α false negatives (Tversky). The losses
    are multiplied by ``class_weights``, the first class left out with
    ``ignore_background`` (when there is more than one), and reduced over the
    last axis by ``reduction`` ('mean', 'sum', or 'none' for per-class losses).
    A prediction with one axis fewer than the targets (or the reverse) gets a
    channel axis, as in Optax.

    Derivative: per class row, with G the cotangent of the (weighted) dice and
    F = D - (1-α-β)N, d/dp = -G (t·F - αN)/D², d/dt = -G (p·F - βN)/D², then
    through the softmax (p ⊙ (u - Σ p u)) or the sigmoid (p(1-p) u);
    d/d(class_weights) = Σ_rows G·dice; d/ds = -G(D - N)/D², d/dα = G·N(P - I)/D²,
    d/dβ = G·N(T - I)/D². The forward rule is dN = İ, dD = (1-α-β)İ + αṖ + βṪ,
    d(dice) = -(İ·D - N·dD)/D², weighted and reduced.
    """
    return _dice("funcnet.losses.dice_loss", predictions, targets, class_weights=class_weights, smooth=smooth,
                 alpha=alpha, beta=beta, apply_softmax=apply_softmax, reduction=reduction,
                 ignore_background=ignore_background, axis=axis)


@declare(forms=(_DICE[0], _DICE_ARRAY[0]), saves=_saves, diff_argnums=(0, 1),
         differs="integer predictions are promoted to float; smooth is a number or a scalar array (traced too, "
                 "with a gradient); apply_sigmoid=False has dice_loss's concrete-only check (the predictions must "
                 "sum to 1 over a channel axis of one entry: be 1, as in optax)",
         checks=Checks(sample=_logits_and_targets, cases=((2, 5), (2, 3, 2, 1)), variants=({}, {"smooth": 0.5}),
                       extreme=lambda: (np.array([[1e4, -1e4, 30.0], [-1e4, -1e4, -1e4]]),
                                        np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))))
def binary_dice_loss(predictions, targets, *, smooth=1., apply_sigmoid=True):
    """Dice loss of one channel, as ``optax.losses.binary_dice_loss``: :func:`dice_loss` with the sigmoid.

    Predictions and targets of shape [...] get a channel axis ([..., 1]);
    the result has one loss per batch row (the first axis), the others summed.

    Derivative: :func:`dice_loss`'s with one class and α = β = ½ (F = D), through
    the sigmoid: d/dx = -G p(1-p)(t·D - N/2)/D², d/dt = -G (p·D - N/2)/D².
    """
    op = "funcnet.losses.binary_dice_loss"
    if np.ndim(predictions) == np.ndim(targets) and np.shape(predictions)[-1:] != (1,):
        predictions, targets = jnp.asarray(predictions)[..., None], jnp.asarray(targets)[..., None]
    return _dice(op, predictions, targets, smooth=smooth, apply_softmax=apply_sigmoid)


@declare(forms=(_DICE[0], _DICE_ARRAY[0]), saves=_saves + "; the class weights are recomputed from the targets",
         diff_argnums=(0, 1),
         differs="integer predictions are promoted to float; smooth is a number or a scalar array (traced too, "
                 "with a gradient)",
         checks=Checks(sample=_logits_and_targets, cases=((2, 4, 3), (3, 2, 2, 4)),
                       variants=({}, {"ignore_background": True, "smooth": 0.5}), extreme=_extreme))
def multiclass_generalized_dice_loss(predictions, targets, *, smooth=1., apply_softmax=True,
                                     ignore_background=False):
    """Generalized Dice loss (Sudre et al., 2017), as ``optax.losses.multiclass_generalized_dice_loss``.

    :func:`dice_loss` (α = β = ½, reduction 'none') weighted per class by
    w = C·r/Σr, r_c = 1/(f_c² + 1e-7), f_c = the targets' sum over every axis
    but the last (the class frequencies), and averaged over the batch and the
    classes kept (all of them, or all but the first with ``ignore_background``):
    a scalar.

    Derivative: :func:`dice_loss`'s with these weights, plus the weights' own
    in the targets: with Γ_c = Σ_rows G·dice_c, d/dt_c = -2 f_c r_c² ·
    C(Γ_c/Σr - Σ_k Γ_k r_k/(Σr)²) at every entry of class c.
    """
    op = "funcnet.losses.multiclass_generalized_dice_loss"
    arrays = _promote(op, predictions, targets)
    check_same_shape(op, ("predictions", "targets"), predictions, targets)
    return _dice(op, arrays["predictions"], arrays["targets"], smooth=smooth, apply_softmax=apply_softmax,
                 ignore_background=ignore_background, auto=True)


__all__ = names("losses", __name__)
