"""Margin losses: hinge and perceptron (binary and multiclass), the multiclass SVM, and the sparsemax losses.

The sparsemax losses belong here as margin losses: each is zero once the right
label leads by a margin of 1 (Blondel et al., *Learning with Fenchel-Young
losses*, 2020).
"""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from funcnet.ops import _samples as S
from funcnet.ops.inputs import as_array, broadcast_args, float_input, static_float
from funcnet.ops.numerics import add_tangents, widen
from funcnet.ops.binding import Op
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.reference import losses as twin
from funcnet.ops.losses._arguments import (
    at_labels,
    check_same_shape,
    class_scores_and_labels,
    label_index,
    take,
    float_labels,
    pair_of_shapes,
)

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ----------------------------------------------------- margin losses: hinge, perceptron
def _margin_value(outputs, targets, margin):
    return jnp.maximum(0.0, margin - widen(outputs) * widen(targets)).astype(outputs.dtype)


def _margin_local(outputs, targets, margin):
    """1 where the hinge is active (margin - y·t > 0), ½ at the hinge (as jnp.maximum splits a tie), 0 beyond."""
    z = margin - widen(outputs) * widen(targets)
    return jnp.where(z > 0, 1.0, jnp.where(z == 0, 0.5, 0.0))


def _margin_vjp(res, g, margin):
    outputs, targets = res
    ga = -widen(g) * _margin_local(outputs, targets, margin)
    return (ga * widen(targets)).astype(outputs.dtype), (ga * widen(outputs)).astype(targets.dtype)


def _margin_jvp(res, ty, tt, margin):
    outputs, targets = res
    dot = add_tangents(None if ty is None else widen(ty) * widen(targets), None if tt is None else widen(tt) * widen(outputs))
    return None if dot is None else (-_margin_local(outputs, targets, margin) * dot).astype(outputs.dtype)


_MARGIN = Op("hinge_loss", value=_margin_value, vjp=_margin_vjp, jvp=_margin_jvp)


def _margin_pairs(margin):
    """Outputs and targets (in [-1.5, 1.5]) whose products stay 0.05 away from the hinge at ``margin``."""
    def sample(rng, case):
        a, b = pair_of_shapes(case)
        outputs, targets = S.normal(rng, a), rng.uniform(-1.5, 1.5, b)
        if np.any(np.abs(margin - outputs * targets) < 0.05):
            return sample(rng, case)
        return outputs, targets
    return sample


def _margin_loss(op: str, predictor_outputs, targets, margin: float, same_shape: bool):
    outputs = float_input(op, "predictor_outputs", predictor_outputs)
    targets = float_labels(op, targets, outputs, name="targets")
    if same_shape:
        check_same_shape(op, ("predictor_outputs", "targets"), outputs, targets)
    return _MARGIN(*broadcast_args(op, outputs=outputs, targets=targets), margin=margin)


_margin_common = dict(forms=_MARGIN, saves="both inputs", diff_argnums=(0, 1))


def _margin_checks(margin: float, kink: Kink) -> Checks:
    return Checks(sample=_margin_pairs(margin), cases=((), (5,), (4, 3)), kinks=(kink,),
                  extreme=lambda: (np.array([-1e4, 1e4, 0.5]), np.array([1.0, 1.0, -1.0])))


@declare(kink="at the hinge (y·t = 1) half the active gradient, as optax's jnp.maximum gives",
         differs="integer outputs are promoted to float",
         checks=_margin_checks(1.0, Kink("y·t = 1 (first entry)", (np.array([1.0, 0.5, 2.0]), np.array([1.0, -1.0, 1.0])), np.array([-0.5, 1.0, 0.0]))),
         **_margin_common)
def hinge_loss(predictor_outputs, targets):
    """Binary hinge loss ``max(0, 1 - y·t)``, as ``optax.losses.hinge_loss``.

    ``predictor_outputs`` y are real scores and ``targets`` t are ±1 (soft
    values allowed); the two broadcast against each other, as in Optax.
    Integer targets get no gradient.

    Derivative: d/dy = -t·a, d/dt = -y·a with a = 1 where 1 - y·t > 0, a = ½ at
    1 - y·t = 0 (optax's jnp.maximum splits the tie) and a = 0 beyond.
    """
    return _margin_loss("funcnet.losses.hinge_loss", predictor_outputs, targets, 1.0, same_shape=False)


@declare(kink="at y·t = 0 half the active gradient, as optax's jnp.maximum gives",
         differs="integer outputs are promoted to float",
         checks=_margin_checks(0.0, Kink("y·t = 0 (first entry)", (np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 1.0])), np.array([-0.5, 0.0, -1.0]))),
         **_margin_common)
def perceptron_loss(predictor_outputs, targets):
    """Binary perceptron loss ``max(0, -y·t)``, as ``optax.losses.perceptron_loss``.

    ``targets`` t are ±1 and must have the shape of ``predictor_outputs`` y (as
    in Optax). Integer targets get no gradient.

    Derivative: d/dy = -t·a, d/dt = -y·a with a = 1 where y·t < 0, ½ at y·t = 0
    (optax's jnp.maximum splits the tie) and 0 where y·t > 0.
    """
    return _margin_loss("funcnet.losses.perceptron_loss", predictor_outputs, targets, 0.0, same_shape=True)


# -------------------------------------------------------------- binary sparsemax loss
def _sparse_plus(z):
    return jnp.where(z <= -1, 0.0, jnp.where(z >= 1, z, (z + 1) ** 2 / 4))


def _signed(logits, positive):
    return jnp.where(positive, -widen(logits), widen(logits))


def _sparsemax_bin_vjp(res, g):
    logits, positive = res
    slope = jnp.clip((_signed(logits, positive) + 1) / 2, 0.0, 1.0)
    return (widen(g) * jnp.where(positive, -slope, slope)).astype(logits.dtype), None


def _sparsemax_bin_jvp(res, tx, _):
    if tx is None:
        return None
    logits, positive = res
    slope = jnp.clip((_signed(logits, positive) + 1) / 2, 0.0, 1.0)
    return (widen(tx) * jnp.where(positive, -slope, slope)).astype(tx.dtype)


_SPARSEMAX_BIN = Op("sparsemax_loss", value=lambda x, p: _sparse_plus(_signed(x, p)).astype(x.dtype),
                      vjp=_sparsemax_bin_vjp, jvp=_sparsemax_bin_jvp)


def _logits_and_bits(rng, shape):
    return S.away_from(rng, shape, (-1.0, 1.0)), rng.integers(0, 2, shape)


@declare(forms=_SPARSEMAX_BIN, saves="the logits and a boolean mask of the positive labels", diff_argnums=(0,),
         kink="none in the gradient (sparse_plus is once differentiable); the second derivative jumps at z = ±1, "
              "where z is -x for a positive label and x otherwise", differs="integer logits are promoted to float",
         checks=Checks(sample=_logits_and_bits, cases=((), (5,), (4, 3)),
                       extreme=lambda: (np.array([-1e4, 1e4, -1e4, 1e4, 0.5]), np.array([0, 0, 1, 1, 1]))))
def sparsemax_loss(logits, labels):
    """Binary sparsemax loss, as ``optax.losses.sparsemax_loss``: ``sparse_plus(z)``, z = -x if t else x.

    ``labels`` are 0/1 (any dtype; a non-zero label counts as positive, as
    ``jnp.where`` reads it) and get no gradient; they broadcast against the
    logits. ``sparse_plus(z)`` is 0 for z ≤ -1, (z + 1)²/4 for |z| < 1 and z for
    z ≥ 1 (Martins & Astudillo, 2016).

    Derivative: d/dx = ±sparse_sigmoid(z) = ±clip((z + 1)/2, 0, 1), with the
    sign of z = ±x.
    """
    op = "funcnet.losses.sparsemax_loss"
    logits = float_input(op, "logits", logits)
    positive = as_array(op, "labels", labels) != 0
    return _SPARSEMAX_BIN(*broadcast_args(op, logits=logits, labels=positive))


# ----------------------------------------------------------- multiclass SVM loss
def _svm_save(scores, labels, margin):
    s = widen(scores)
    is_label = labels[..., None] == jnp.arange(s.shape[-1])  # all False for an out-of-range label
    correct = take(s, labels, -1)[..., None]
    m = s - correct + margin
    active = (m > 0) & ~is_label
    loss = jnp.sum(jnp.where(active, m, 0.0), axis=-1)
    loss = jnp.where(jnp.any(is_label, axis=-1), loss, jnp.nan)
    return loss.astype(scores.dtype), (active, is_label)


def _svm_vjp(res, g, margin):
    active, is_label = res
    count = jnp.sum(active, axis=-1, keepdims=True)
    local = active.astype(jnp.float32) - is_label * count
    gw = jnp.where(jnp.any(is_label, axis=-1), widen(g), jnp.nan)  # NaN row for an out-of-range label
    return (gw[..., None] * local).astype(g.dtype), None


def _svm_jvp(res, ts, _, margin):
    if ts is None:
        return None
    active, is_label = res
    tw = widen(ts)
    count = jnp.sum(active, axis=-1)
    out = jnp.sum(jnp.where(active, tw, 0.0), axis=-1) - count * jnp.sum(jnp.where(is_label, tw, 0.0), axis=-1)
    return jnp.where(jnp.any(is_label, axis=-1), out, jnp.nan).astype(ts.dtype)


_SVM = Op("multiclass_svm_loss", value=lambda *a, **s: _svm_save(*a, **s)[0], save=_svm_save,
            vjp=_svm_vjp, jvp=_svm_jvp)


def _svm_scores(rng, shape):
    """Scores and labels with every s_j - s_y at least 0.05 away from -1 and -2 (the margins of both rows)."""
    scores, labels = S.logits_and_classes(rng, shape)
    correct = np.take_along_axis(scores, labels[..., None], -1)
    if any(np.any(np.abs(scores - correct + margin) < 0.05) for margin in (1.0, 2.0)):
        return _svm_scores(rng, shape)
    return scores, labels


@declare(forms=_SVM, saves="boolean masks of the active classes and of the label", diff_argnums=(0,),
         kink="a class exactly at the margin (s_j - s_y + margin == 0) is inactive: gradient 0, like ReLU at 0",
         checks=Checks(sample=_svm_scores, cases=S.CLASS_SHAPES, variants=({}, {"margin": 2.0}),
                       extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])),
                       kinks=(Kink("class 1 at the margin (scores 1, 0, 3; label 0; margin 1)", (np.array([1.0, 0.0, 3.0]), np.array(0)), np.array([-1.0, 0.0, 1.0]), {"margin": 1.0}),)))
def multiclass_svm_loss(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss ``Σ_{j≠y} max(0, s_j - s_y + Δ)``, per example.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)`` (or one that broadcasts with it); ``margin`` is Δ, a
    number. This is the lecture's (Weston–Watkins) form, which *sums* over the
    wrong classes; ``optax.losses.multiclass_hinge_loss`` takes the *max*
    instead, hence the different name.

    Derivative: d/ds_j = 1[s_j - s_y + Δ > 0] for j ≠ y, and d/ds_y = -(number
    of such active classes); the forward rule is ``Σ_{active j} ṡ_j - (count)·ṡ_y``.
    Labels are range-checked when known at trace time; under ``jit`` an
    out-of-range label gives a NaN loss and a NaN gradient row and tangent.
    """
    op = "funcnet.losses.multiclass_svm_loss"
    scores, labels = class_scores_and_labels(op, scores, labels)
    return _SVM(scores, labels, margin=static_float(op, "margin", margin))


# ----------------------------------------- multiclass hinge (Crammer–Singer) and perceptron
def _cs_save(scores, labels, margin):
    s = widen(scores)
    is_label = labels[..., None] == jnp.arange(s.shape[-1])  # all False for an out-of-range label
    shifted = jnp.where(is_label, s, s + margin)
    top = jnp.max(shifted, axis=-1)
    loss = top - take(s, labels, -1)  # NaN for an out-of-range label
    return loss.astype(scores.dtype), (shifted == top[..., None], is_label)


def _cs_local(res):
    """d loss / d scores: the maximisers share 1 equally (as jnp.max's gradient), minus the one-hot label."""
    winners, is_label = res
    count = jnp.sum(winners, axis=-1, keepdims=True)
    # no maximiser: a NaN score (NaN == NaN is False), whose gradient row is NaN, as optax's autodiff gives
    share = jnp.where(count > 0, winners / jnp.maximum(count, 1), jnp.nan)
    valid = jnp.any(is_label, axis=-1, keepdims=True)
    return jnp.where(valid, share - is_label, jnp.nan)


_CRAMMER_SINGER = Op(
    "multiclass_hinge_loss", value=lambda *a, **s: _cs_save(*a, **s)[0], save=_cs_save,
    vjp=lambda res, g, margin: ((widen(g)[..., None] * _cs_local(res)).astype(g.dtype), None),
    jvp=lambda res, ts, _, margin: None if ts is None else jnp.sum(_cs_local(res) * widen(ts), axis=-1).astype(ts.dtype),
)


def _untied_scores(margin):
    """Scores and labels whose top two shifted scores (s_j + margin for j ≠ y) differ by at least 0.05."""
    def sample(rng, shape):
        scores, labels = S.logits_and_classes(rng, shape)
        shifted = np.where(np.arange(shape[-1]) == labels[..., None], scores, scores + margin)
        top2 = np.sort(shifted, axis=-1)[..., -2:]
        if np.any(top2[..., 1] - top2[..., 0] < 0.05):
            return sample(rng, shape)
        return scores, labels
    return sample


def _crammer_singer(op: str, scores, labels, margin: float):
    scores, labels = class_scores_and_labels(op, scores, labels)
    return _CRAMMER_SINGER(scores, labels, margin=margin)


_cs_common = dict(forms=_CRAMMER_SINGER, saves="boolean masks of the maximising classes and of the label",
                  kink="tied maximisers share the gradient equally, as jnp.max's gradient does")


def _cs_checks(margin: float, kink: Kink) -> Checks:
    return Checks(sample=_untied_scores(margin), cases=((3,), (4, 3)), kinks=(kink,),
                  extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2])))
_cs_differs = ("integer scores are promoted to float; an out-of-range label gives a NaN loss and gradient row "
               "(optax's one-hot of it is all zeros: a finite, meaningless loss)")


@declare(differs=_cs_differs,
         checks=_cs_checks(1.0, Kink("classes 0 and 2 tie (scores 2, 0, 3; label 2)", (np.array([2.0, 0.0, 3.0]), np.array(2)), np.array([0.5, 0.0, -0.5]))),
         **_cs_common)
def multiclass_hinge_loss(scores, labels):
    """Crammer–Singer multiclass hinge loss ``max_j (s_j + 1 - [j = y]) - s_y``, as Optax's.

    ``scores`` are ``(..., classes)`` and ``labels`` integer class indices of
    shape ``(...)``. This is the *max* over the classes (Crammer & Singer,
    2001): only the worst margin violation counts. :func:`multiclass_svm_loss`
    is the lecture's Weston–Watkins form, which *sums* ``max(0, s_j - s_y + 1)``
    over every wrong class; the two agree when at most one class violates the
    margin.

    Derivative: d/ds = onehot(argmax_j(s_j + 1 - [j = y])) - onehot(y).
    """
    return _crammer_singer("funcnet.losses.multiclass_hinge_loss", scores, labels, 1.0)


@declare(differs=_cs_differs,
         checks=_cs_checks(0.0, Kink("classes 0 and 2 tie (scores 3, 0, 3; label 2)", (np.array([3.0, 0.0, 3.0]), np.array(2)), np.array([0.5, 0.0, -0.5]))),
         **_cs_common)
def multiclass_perceptron_loss(scores, labels):
    """Multiclass perceptron loss ``max_j s_j - s_y``, as ``optax.losses.multiclass_perceptron_loss``.

    Derivative: d/ds = onehot(argmax s) - onehot(y); tied maximisers share the
    1 equally.
    """
    return _crammer_singer("funcnet.losses.multiclass_perceptron_loss", scores, labels, 0.0)


# ------------------------------------------------------------ multiclass sparsemax loss
def _sparsemax(z):
    """The Euclidean projection of each row of ``z`` onto the simplex (Martins & Astudillo, 2016)."""
    desc = -jnp.sort(-z, axis=-1)
    cumulative = jnp.cumsum(desc, axis=-1)
    k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = jnp.sum(1 + k * desc > cumulative, axis=-1, keepdims=True)  # the support is a prefix of desc
    tau = (jnp.take_along_axis(cumulative, support - 1, axis=-1) - 1) / support.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def _sparsemax_save(scores, labels):
    s = widen(scores)
    z = s - lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))  # shift-invariant; keeps cumsums small
    p = _sparsemax(z)
    loss = jnp.sum(p * z, axis=-1) - take(z, labels, -1) + 0.5 * (1 - jnp.sum(p * p, axis=-1))
    return loss.astype(scores.dtype), (p, labels)


def _sparsemax_vjp(res, g):
    p, labels = res
    gw = jnp.where(label_index(labels, p.shape[-1]) < p.shape[-1], widen(g), jnp.nan)
    return (gw[..., None] * p + at_labels(-gw, labels, p.shape, p.ndim - 1)).astype(g.dtype), None


def _sparsemax_jvp(res, ts, _):
    if ts is None:
        return None
    p, labels = res
    tw = widen(ts)
    return (jnp.sum(p * tw, axis=-1) - take(tw, labels, -1)).astype(ts.dtype)


_SPARSEMAX = Op("multiclass_sparsemax_loss", value=lambda *a: _sparsemax_save(*a)[0], save=_sparsemax_save,
                  vjp=_sparsemax_vjp, jvp=_sparsemax_jvp)


@declare(forms=_SPARSEMAX, saves="the sparsemax probabilities and the labels", diff_argnums=(0,),
         kink="none in the gradient (p - onehot(y) is continuous, ties included); the second derivative jumps "
              "where a class enters or leaves the support",
         differs="scores of any batch shape (..., classes) (optax: exactly (batch, classes)); integer scores are "
                 "promoted to float; an out-of-range label gives a NaN loss and gradient row",
         checks=Checks(sample=S.logits_and_classes, cases=((2, 3), (4, 5)),
                       extreme=lambda: (S.extreme_logits(), np.array([1, 0, 2]))))
def multiclass_sparsemax_loss(scores, labels):
    """Multiclass sparsemax loss (Martins & Astudillo, 2016), as Optax's function of that name.

    With p = sparsemax(s), the Euclidean projection of s onto the simplex,
    ``L = ⟨p, s⟩ - s_y + ½(1 - ‖p‖²)``: zero when the label alone has
    probability 1 with a margin, and ≥ 0 always. The projection sorts each row
    (ties are harmless: p is unique) after subtracting the row's maximum.

    Derivative: d/ds = p - onehot(y) (the projection's own derivative cancels).
    Labels are range-checked when known at trace time; under ``jit`` an
    out-of-range label gives NaN.
    """
    op = "funcnet.losses.multiclass_sparsemax_loss"
    scores, labels = class_scores_and_labels(op, scores, labels)
    return _SPARSEMAX(scores, labels)


__all__ = names("losses", __name__)
