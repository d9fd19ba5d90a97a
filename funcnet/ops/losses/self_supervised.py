"""Self-supervised losses: NT-Xent (the contrastive loss of SimCLR) and the triplet margin loss."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from funcnet.ops import _samples as S
from funcnet.ops.binding import Op, with_array_hypers
from funcnet.ops.declaration import Checks, Kink, declarer, names
from funcnet.ops.inputs import (
    as_array,
    broadcast_args,
    canonical_axis,
    check_broadcast_to,
    check_range,
    float_input,
    is_concrete,
    is_number,
    promote_floats,
    static_float,
)
from funcnet.ops.numerics import add_tangents, widen
from funcnet.reference import losses as twin

declare = declarer("losses", twins=twin, upstream=optax.losses)


# ------------------------------------------------------------------------------ NT-Xent
def _unit_rows(e, eps):
    """Rows u = e/n with n = sqrt(max(|e|², eps)) (optax's cosine similarity), the norms, and where n is not
    clipped."""
    ew = widen(e)
    sq = jnp.sum(ew * ew, axis=-1, keepdims=True)
    n = jnp.sqrt(jnp.maximum(sq, eps))
    return ew / n, n, sq > eps


def _pairs(labels):
    """(positives, negatives): same label and not the diagonal; different label."""
    same = labels[:, None] == labels[None, :]
    return same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


def _similarities(u, labels, temperature):
    """x = uuᵀ/τ and the pair masks."""
    return (u @ u.T) / temperature, *_pairs(labels)


def _shifted_exp(x, pos, neg, m):
    """a = exp(x - m) on the pairs, 0 elsewhere (the diagonal)."""
    return jnp.exp(jnp.where(pos | neg, x - m, -jnp.inf))


def _ntxent_save(embeddings, labels, temperature, eps):
    u, n, free = _unit_rows(embeddings, eps)
    x, pos, neg = _similarities(u, labels, temperature)
    m = jnp.max(jnp.where(pos | neg, x, -jnp.inf), axis=1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # a row with no pair (a batch of one)
    a = _shifted_exp(x, pos, neg, m)
    s = jnp.sum(jnp.where(neg, a, 0.0), axis=1, keepdims=True)
    d = jnp.where(pos, s + a, 1.0)
    count = jnp.sum(pos)
    terms = jnp.where(pos, jnp.log(d) - (x - m), 0.0)
    loss = jnp.sum(terms) / count
    r = jnp.sum(jnp.where(pos, 1 / d, 0.0), axis=1, keepdims=True)
    return loss.astype(embeddings.dtype), (embeddings, labels, n, free, m, s, r, count)


def _ntxent_local(res, temperature, eps):
    """u, n, free, x and G = dL/dx times the number of positive pairs: -S/(S + a) on a positive pair, a·Σ_pos
    1/(S + a) on a negative one (S: the row's sum of a over its negatives)."""
    embeddings, labels, n, free, m, s, r, count = res
    u = widen(embeddings) / n
    x, pos, neg = _similarities(u, labels, temperature)
    a = _shifted_exp(x, pos, neg, m)
    big_g = jnp.where(pos, -s / jnp.where(pos, s + a, 1.0), jnp.where(neg, a * r, 0.0))
    return u, free, n, x, big_g, count


def _per_pair(count, g):
    """g / the number of positive pairs; 0 when there is none (the loss is 0/0 = NaN there, its gradient 0)."""
    return jnp.where(count > 0, g / jnp.where(count > 0, count, 1), 0.0)


def _ntxent_vjp(res, g, temperature, eps):
    u, free, n, _, big_g, count = _ntxent_local(res, temperature, eps)
    ds = _per_pair(count, widen(g)) / temperature * big_g
    du = ds @ u + ds.T @ u  # not (ds + dsᵀ)u: one (batch, batch) array less
    de = (du - jnp.where(free, u * jnp.sum(u * du, axis=-1, keepdims=True), 0.0)) / n
    return de.astype(res[0].dtype), None


def _ntxent_jvp(res, te, _, temperature, eps):
    if te is None:
        return None
    u, free, n, _, big_g, count = _ntxent_local(res, temperature, eps)
    tw = widen(te)
    du = (tw - jnp.where(free, u * jnp.sum(u * tw, axis=-1, keepdims=True), 0.0)) / n
    dot = jnp.sum(du * ((big_g + big_g.T) @ u)) / temperature
    return (jnp.where(count > 0, dot / count, jnp.nan)).astype(te.dtype)


def _ntxent_dtemperature(res, temperature, eps):
    """dL/dτ = -Σ G∘x / (τ · count)."""
    _, _, _, x, big_g, count = _ntxent_local(res, temperature, eps)
    return (-_per_pair(count, jnp.sum(big_g * x)) / temperature,)


_NTXENT = Op("ntxent", save=_ntxent_save, value=lambda *args, **static: _ntxent_save(*args, **static)[0],
             vjp=_ntxent_vjp, jvp=_ntxent_jvp)
_NTXENT_ARRAY = with_array_hypers(_NTXENT, ("temperature",), _ntxent_dtemperature)


def _embeddings_and_groups(rng, case):
    """Embeddings (n, d) and labels in groups of two, the last one alone when n is odd."""
    n, d = case
    return S.normal(rng, (n, d)), rng.permutation(np.arange(n) // 2)


@declare(forms=(_NTXENT, _NTXENT_ARRAY), diff_argnums=(0,),
         saves="the embeddings and labels, and per row the norm, whether it is clipped, and three softmax sums "
               "(the max, the negatives' sum and Σ 1/denominator): the (batch, batch) similarities are recomputed",
         kink="where |e|² ≤ eps (the machine epsilon of the embeddings' dtype) the norm is the constant √eps (no "
              "gradient through it), as in optax; at |e|² = eps exactly it counts as clipped (optax: half of each)",
         differs="integer embeddings are promoted to float (optax raises); embeddings must be 2-D and labels 1-D; "
                 "a concrete temperature ≤ 0 or NaN raises, and an array temperature must be a scalar (optax "
                 "broadcasts it against the similarity matrix); with no positive pair the tangent is NaN like the "
                 "value (and the gradient 0, as in optax); half precision is computed in float32",
         checks=Checks(sample=_embeddings_and_groups, cases=((4, 3), (5, 2)),
                       extreme=lambda: (np.array([[1e4, -1e4, 3.0], [1e-3, 2e-3, -1e-3], [1e4, 1e4, -1.0],
                                                  [-2.0, 1e-4, 1e4]]), np.array([0, 0, 1, 1]))))
def ntxent(embeddings, labels, temperature=0.07):
    """Normalized temperature-scaled cross entropy (NT-Xent), as ``optax.losses.ntxent``.

    ``embeddings`` (batch, features); ``labels`` (batch,) name the groups: two
    rows with the same label are a positive pair, two with different labels a
    negative one (a row is never paired with itself). With ``u_i = e_i /
    sqrt(max(|e_i|², eps))`` (eps: the dtype's machine epsilon) and ``x_ij =
    u_i·u_j / τ``, each positive pair (i, j) has the loss ``-log(e^{x_ij} /
    (e^{x_ij} + Σ_{k negative to i} e^{x_ik}))``; the result is their mean, a
    scalar (NaN when there is no positive pair, as in Optax). ``temperature``
    τ is a number or a scalar array (traced too), which gets its gradient.

    Derivative: with P the number of positive pairs and D_ij = e^{x_ij} +
    Σ_k e^{x_ik}, G = dL/dx is -(1 - e^{x_ij}/D_ij)/P on a positive pair,
    e^{x_ij} Σ_{j' positive to i} 1/D_ij' / P on a negative one and 0 on the
    diagonal (0 everywhere when P = 0); then dL/du = (G + Gᵀ)u/τ and
    dL/de_i = (I - u_i u_iᵀ) dL/du_i / |e_i| (dL/du_i / √eps where the norm
    is clipped); dL/dτ = -Σ G∘x / τ. The forward rule is ``⟨u̇, (G + Gᵀ)u⟩/τ``
    with ``u̇_i = (I - u_i u_iᵀ) ė_i / |e_i|``.
    """
    op = "funcnet.losses.ntxent"
    embeddings = float_input(op, "embeddings", embeddings)
    labels = as_array(op, "labels", labels)
    if embeddings.ndim != 2 or labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{op}: expected `embeddings` of shape (batch, features) and `labels` of shape (batch,), "
                         f"got embeddings {tuple(embeddings.shape)} and labels {tuple(labels.shape)}")
    if not (jnp.issubdtype(labels.dtype, jnp.number) or labels.dtype == jnp.bool_):
        raise TypeError(f"{op}: `labels` must be numbers naming the groups, got {labels.dtype}")
    if not is_number(temperature):
        temperature = float_input(op, "temperature", temperature)
        if temperature.ndim != 0:
            raise ValueError(f"{op}: `temperature` must be a number or a scalar array, got shape "
                             f"{tuple(temperature.shape)}")
    if is_concrete(temperature) and not float(temperature) > 0:
        raise ValueError(f"{op}: `temperature` must be > 0, got {float(temperature)!r}")
    eps = float(jnp.finfo(embeddings.dtype).eps)
    if is_number(temperature):
        return _NTXENT(embeddings, labels, temperature=float(temperature), eps=eps)
    embeddings, temperature = promote_floats(op, embeddings=embeddings, temperature=temperature)
    return _NTXENT_ARRAY(embeddings, labels, temperature, eps=eps)


# ------------------------------------------------------------------------ triplet margin loss
def _power(d, q):
    """d**q as optax computes it: an integer power (exact for negative d) when q is a whole number."""
    return d ** int(q) if float(q).is_integer() else jnp.power(d, q)


def _distance(d, axes, q, eps):
    """(D, c): the distance D = (Σ d^q + eps)^(1/q) over ``axes`` and c = dD/deps = (1/q)(Σ d^q + eps)^(1/q - 1)."""
    z = jnp.sum(_power(d, q), axis=axes) + eps
    return jnp.power(z, 1 / q), jnp.power(z, 1 / q - 1) / q


def _slope(d, c, axes, q):
    """dD/dd = q·d^(q-1)·c; for q > 1, 0 where d = 0 (also where c is infinite: eps = 0 and d = 0 in every entry,
    where optax's autodiff gives 0·inf = NaN)."""
    j = q * _power(d, q - 1) * jnp.expand_dims(c, axes)
    return jnp.where(d == 0, 0.0, j) if q > 1 else j


def _triplet_save(anchors, positives, negatives, axes, norm_degree, margin, eps):
    aw = widen(anchors)
    dp, cp = _distance(aw - widen(positives), axes, norm_degree, eps)
    dn, cn = _distance(aw - widen(negatives), axes, norm_degree, eps)
    v = dp - dn + margin
    hinge = jnp.where(v > 0, 1.0, jnp.where(v == 0, 0.5, 0.0))  # ½ at the hinge, as jnp.maximum splits a tie
    # the inputs, and per triplet the hinge's slope times dD/deps of each distance
    return jnp.maximum(v, 0.0).astype(anchors.dtype), (anchors, positives, negatives, hinge, hinge * cp, hinge * cn)


def _triplet_slopes(res, axes, q):
    """h·dD_p/d(a - p) and h·dD_n/d(a - n), recomputed from the inputs (h: the hinge's slope)."""
    a, p, n, _, hcp, hcn = res
    aw = widen(a)
    # -(p - a), not a - p: XLA would merge a - p with the forward pass's and keep that (batch, dim) array alive
    # until the gradients are written; this way each gradient reads the inputs again
    return _slope(-(widen(p) - aw), hcp, axes, q), _slope(-(widen(n) - aw), hcn, axes, q)


def _triplet_vjp(res, g, axes, norm_degree, margin, eps):
    jp, jn = _triplet_slopes(res, axes, norm_degree)
    gw = jnp.expand_dims(widen(g), axes)
    gp, gn = gw * jp, gw * jn
    return (gp - gn).astype(g.dtype), (-gp).astype(g.dtype), gn.astype(g.dtype)


def _triplet_jvp(res, ta, tp, tn, axes, norm_degree, margin, eps):
    jp, jn = _triplet_slopes(res, axes, norm_degree)
    w = lambda t: None if t is None else widen(t)  # noqa: E731
    terms = add_tangents(None if ta is None else (jp - jn) * w(ta), None if tp is None else -jp * w(tp),
                         None if tn is None else jn * w(tn))
    return None if terms is None else jnp.sum(terms, axis=axes).astype(res[0].dtype)


_TRIPLET = Op("triplet_margin_loss", save=_triplet_save,
              value=lambda *args, **static: _triplet_save(*args, **static)[0], vjp=_triplet_vjp, jvp=_triplet_jvp)
# d/dmargin = the hinge's slope; d/deps = the hinge's slope times (c_p - c_n)
_TRIPLET_ARRAY = with_array_hypers(_TRIPLET, ("margin", "eps"), lambda res, **static: (res[3], res[4] - res[5]))


def _triplets(rng, case):
    """Anchors in [1, 3] and positives, negatives in [-2, 0.9]: every difference a - p, a - n is at least 0.1, so
    any norm degree is real there, in any pairing of samples too (tests/test_shard_map.py pairs them); the hinge
    stays 0.05 away from its kink (margin 1)."""
    a, p, n = rng.uniform(1.0, 3.0, case), rng.uniform(-1.0, 0.9, case), rng.uniform(-2.0, 0.9, case)
    v = np.sum((a - p) ** 2, -1) ** 0.5 - np.sum((a - n) ** 2, -1) ** 0.5 + 1
    return (a, p, n) if np.all(np.abs(v) > 0.05) else _triplets(rng, case)


def _check_hyper(op, name, value, loss_shape):
    value = float_input(op, name, value)
    check_broadcast_to(op, (name, "loss"), value.shape, loss_shape)
    return value


@declare(forms=(_TRIPLET, _TRIPLET_ARRAY), diff_argnums=(0, 1, 2),
         saves="the three inputs, and per triplet the hinge's slope and the hinge's slope times dD/deps of each "
               "distance (the slopes dD/d(a - p), dD/d(a - n) are recomputed from the inputs)",
         kink="at the hinge (D_p - D_n + margin = 0) half the active gradient, as optax's jnp.maximum gives; for "
              "norm_degree > 1 an entry with a - p = 0 (or a - n = 0) gets gradient 0 from that distance, also "
              "where the distance itself is 0 with eps = 0 (optax: 0·inf = NaN there)",
         differs="integer inputs are promoted to float (optax raises); norm_degree must be a concrete number > 0 "
                 "(optax also takes a traced one); a concrete eps < 0 or NaN raises; array `margin` and `eps` "
                 "must broadcast to the loss's shape (optax also lets them enlarge it); where a - p = 0 in an "
                 "entry and norm_degree > 1 that entry's gradient is 0 even where the distance is 0 (eps = 0; "
                 "optax: NaN); half precision is computed in float32",
         checks=Checks(sample=_triplets, cases=((5,), (4, 3)),
                       extreme=lambda: (np.array([[1e4, 1e4, 3.0], [1e-4, 2.0, 1e4]]),
                                        np.array([[-1e4, -1e4, -1e4], [0.0, 2.0, 1e4 - 1.0]]),
                                        np.array([[-1e4, 1e4, 3.0 - 1e-4], [0.0, 2.0, 1e4]])),
                       kinks=(Kink("the hinge: D_p - D_n + margin = 4 - 5 + 1 = 0 (first triplet)",
                                   (np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 4.0], [1.0, 0.0]]),
                                    np.array([[5.0, 0.0], [3.0, 0.0]])),
                                   np.array([[0.5, -0.5], [0.0, 0.0]]), kwargs={"eps": 0.0}),
                              Kink("a = p with eps = 0: D_p = 0", (np.array([[1.0, 4.0]]), np.array([[1.0, 4.0]]),
                                                                   np.array([[1.0, 0.0]])),
                                   np.array([[0.0, -1.0]]), kwargs={"eps": 0.0, "margin": 5.0},
                                   namesake=False))))
def triplet_margin_loss(anchors, positives, negatives, axis=-1, norm_degree=2, margin=1.0, eps=1e-6):
    """Triplet margin loss ``max(D(a, p) - D(a, n) + margin, 0)``, as ``optax.losses.triplet_margin_loss``.

    ``D(a, b) = (Σ (a - b)^q + eps)^(1/q)`` over ``axis`` (int, tuple or None),
    with q = ``norm_degree``, exactly as Optax writes it (no absolute value:
    for odd q the "distance" can be negative or NaN). The three inputs
    broadcast against each other; the result has their shape less ``axis``.
    ``margin`` and ``eps`` are numbers or arrays (traced too) that broadcast
    against the loss and get their gradients.

    Derivative: with h = 1 where the hinge is active (½ at 0, 0 beyond) and
    c = (1/q)(Σ d^q + eps)^(1/q - 1), dD/dd = q·d^(q-1)·c, so d/da = h(J_p - J_n),
    d/dp = -h·J_p, d/dn = h·J_n; d/dmargin = h, d/deps = h(c_p - c_n). The
    forward rule is ``Σ h(J_p·(ȧ - ṗ) - J_n·(ȧ - ṅ))``.
    """
    op = "funcnet.losses.triplet_margin_loss"
    a, p, n = broadcast_args(op, **dict(zip(("anchors", "positives", "negatives"),
                                            promote_floats(op, anchors=anchors, positives=positives,
                                                           negatives=negatives))))
    axes = canonical_axis(op, axis, a.ndim)
    q = static_float(op, "norm_degree", norm_degree)
    if not q > 0:
        raise ValueError(f"{op}: `norm_degree` must be > 0, got {norm_degree!r}")
    check_range(op, "eps", eps, low=0, meaning="the distance's offset")
    static = dict(axes=axes, norm_degree=int(q) if q.is_integer() else q)
    if is_number(margin) and is_number(eps):
        return _TRIPLET(a, p, n, margin=float(margin), eps=float(eps), **static)
    loss_shape = tuple(k for i, k in enumerate(a.shape) if i not in axes)
    hypers = [_check_hyper(op, name, v, loss_shape) for name, v in (("margin", margin), ("eps", eps))]
    return _TRIPLET_ARRAY(a, p, n, *hypers, **static)


__all__ = names("losses", __name__)
