"""Matrix-free second-order quantities: Hessian- and GGN-vector products, Hutchinson estimates, Lanczos spectra.

Nothing here forms a matrix. Every quantity is built from products ``M v``
with ``M`` the Hessian ``H = ∇²L(θ)`` of the mean data loss
``L(θ) = (1/B) Σᵢ ℓ(f(θ, xᵢ), yᵢ)`` or its generalized Gauss–Newton matrix
``G = Jᵀ H_ℓ J`` (``J = ∂f/∂θ`` the Jacobian of all ``B`` outputs, ``H_ℓ`` the
Hessian of ``(1/B) Σᵢ ℓ(oᵢ, yᵢ)`` with respect to the outputs ``o``, which holds
the ``1/B``):

* :func:`hvp` runs ``jax.jvp`` over ``jax.grad`` (forward-over-reverse): the
  gradient runs every op's hand-written reverse rule, and the forward mode over
  it differentiates that rule's code and the op's residuals by autodiff, as
  every second derivative in funcnet does (:mod:`funcnet.ops.binding`: "higher
  orders differentiate the rules themselves"). It costs about 1.5 gradients.
  :func:`funcnet.second_order.hvp` takes the other
  route (reverse-over-reverse, for networks in the plain ``jax.custom_vjp``
  form, which has no forward mode) and :func:`funcnet.second_order.hessian_matrix`
  forms the whole matrix, for small parameter counts.
* :func:`ggn_vp` runs the network forward once (``jax.linearize``), pushes ``v``
  through the hand-written forward rules (``J v``), applies the loss's output Hessian
  (forward-over-reverse of the loss alone: outputs-sized, cheap) and pulls the
  result back through the hand-written reverse rules (``Jᵀ u``, the transpose
  of the linearized network): first-order rules only. About one gradient. ``G`` is
  positive semi-definite whenever the loss is convex in the outputs.
* :func:`hutchinson_diagonal` and :func:`hutchinson_trace` average
  ``v ⊙ M v`` and ``vᵀ M v`` over Rademacher probes ``v`` (entries ±1), which
  are unbiased for ``diag(M)`` and ``tr(M)``.
* :func:`lanczos` (on any symmetric ``matvec`` over flat vectors),
  :func:`top_eigenvalues` and :func:`spectral_density` (stochastic Lanczos
  quadrature).

Products that are repeated (probes, Lanczos steps) linearize the gradient (or
the network) once and apply the linear map to each vector, so the forward pass
and the residuals are shared by every product. Flat vectors are ordered as
``jax.flatten_util.ravel_pytree(params)`` orders them. Hyper-parameters
(``samples``, ``iterations``, ``k``, ``runs``, ``grid``) are static Python ints;
keys, parameters and data may be traced, so every function works under
``jax.jit``. Models run in evaluation mode (no dropout).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnet.layers import Layer
from funcnet.ops.inputs import static_int
from funcnet.train.state import check_float_params
from funcnet.train.steps import DEFAULT_LOSS, Loss, loss_function

__all__ = ["MATRICES", "hvp", "ggn_vp", "hutchinson_diagonal", "hutchinson_trace", "Lanczos", "lanczos",
           "top_eigenvalues", "SpectralDensity", "spectral_density"]

_HIGHEST = jax.lax.Precision.HIGHEST

#: The matrices ``matrix=`` names: the Hessian of the mean loss, and its generalized Gauss–Newton matrix.
MATRICES = ("hessian", "ggn")


# ------------------------------------------------------------------ checks and pieces
def _check_model_and_batch(fn: str, model: Any, params: Any, x: Any, y: Any) -> None:
    if not callable(getattr(model, "apply", None)):
        raise TypeError(f"{fn}: model must be a funcnet.layers.Layer (an init/apply pair), got {model!r:.60}")
    check_float_params(fn, params)
    xs, ys = jnp.shape(x), jnp.shape(y)
    if len(xs) < 1 or xs[0] < 1:
        raise ValueError(f"{fn}: x must be a batch with at least one row, got shape {xs}")
    if ys[:1] != xs[:1]:
        raise ValueError(f"{fn}: x has {xs[0]} rows but y has shape {ys}; give one target (or label) per row")


def _check_key(fn: str, key: Any) -> None:
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and jnp.shape(key) == ()
    raw = dtype == jnp.uint32 and jnp.shape(key) == (2,)
    if not (typed or raw):
        raise TypeError(f"{fn}: key must be one PRNG key, e.g. jax.random.key(0), got {key!r:.60}")


def _check_matrix(fn: str, matrix: Any) -> str:
    if not isinstance(matrix, str) or matrix not in MATRICES:
        raise ValueError(f"{fn}: matrix must be one of {', '.join(map(repr, MATRICES))}, got {matrix!r:.60}")
    return matrix


def _loss_fn(fn: str, model: Layer, loss: str | Loss) -> Loss:
    try:
        return loss_function(loss, model)
    except ValueError as err:
        raise ValueError(f"{fn}: {err}") from None


def _parts(fn: str, model: Layer, params: Any, x: Any, y: Any, loss: str | Loss) -> tuple[Callable, Callable]:
    """``(outputs, data_loss)``: ``θ -> f(θ, x)`` and ``o -> mean ℓ(o, y)``, so that ``L = data_loss ∘ outputs``.

    The mean is over every entry the loss returns (per example, or per example
    and output as ``squared_error`` gives them), as :func:`funcnet.train.make_objective`
    takes it; unlike there it stays in the parameters' dtype (float64 stays float64).
    """
    _check_model_and_batch(fn, model, params, x, y)
    loss_fn = _loss_fn(fn, model, loss)

    def outputs(p):
        return model.apply(p, x)

    def data_loss(out):
        values = loss_fn(out, y)
        if not (hasattr(values, "dtype") and jnp.issubdtype(values.dtype, jnp.floating)):
            name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
            raise TypeError(f"{fn}: the loss {name} returned {values!r:.60}; a loss returns the per-example "
                            "losses as a float array")
        return jnp.mean(values)

    return outputs, data_loss


def _as_vector(fn: str, params: Any, vector: Any) -> Any:
    """``vector`` checked against ``params`` (same tree and shapes) and cast to each parameter's dtype."""
    if jax.tree.structure(vector) != jax.tree.structure(params):
        raise ValueError(f"{fn}: vector must have the structure of params ({jax.tree.structure(params)}), got "
                         f"{jax.tree.structure(vector)}"[:400])
    for (path, p), v in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(vector)):
        if jnp.shape(p) != jnp.shape(v):
            raise ValueError(f"{fn}: vector{jax.tree_util.keystr(path)} has shape {jnp.shape(v)}, but the "
                             f"parameter has shape {jnp.shape(p)}")
    return jax.tree.map(lambda p, v: jnp.asarray(v, jnp.result_type(p)), params, vector)


def _operator(fn: str, model: Layer, params: Any, x: Any, y: Any, matrix: str,
              loss: str | Loss) -> tuple[Callable, jax.Array, Callable]:
    """``(matvec, flat params, unravel)``: ``matvec`` maps a flat vector ``v`` to the flat ``M v``.

    The forward pass (and for the Hessian the backward pass) is linearized once
    here; each call of ``matvec`` runs only the linear part.
    """
    matrix = _check_matrix(fn, matrix)
    outputs, data_loss = _parts(fn, model, params, x, y, loss)
    flat, unravel = ravel_pytree(params)
    if not flat.size:
        raise ValueError(f"{fn}: the model has no parameters")
    if matrix == "hessian":
        def flat_grad(f):
            return ravel_pytree(jax.grad(lambda p: data_loss(outputs(p)))(unravel(f)))[0]

        _, matvec = jax.linearize(flat_grad, flat)
        return matvec, flat, unravel
    out, jvp = jax.linearize(lambda f: outputs(unravel(f)), flat)
    vjp = jax.linear_transpose(jvp, flat)

    def ggn(v):
        return vjp(_loss_hessian_product(data_loss, out, jvp(v)))[0]

    return ggn, flat, unravel


def _loss_hessian_product(data_loss: Callable, out: Any, u: Any) -> Any:
    """``H_ℓ u``, the Hessian of ``data_loss`` at the outputs ``out`` times ``u`` (forward-over-reverse)."""
    return jax.jvp(jax.grad(data_loss), (out,), (u,))[1]


def _probe(key: jax.Array, n: int, dtype: Any) -> jax.Array:
    """A Rademacher probe (``n`` entries ±1); probe ``i`` of ``count`` comes from ``split(key, count)[i]``."""
    return jax.random.rademacher(key, (n,), jnp.int8).astype(dtype)


def _check_chunk(fn: str, chunk: Any) -> int | None:
    return None if chunk is None else static_int(fn, "chunk", chunk)


def _apply_all(f: Callable, rows: jax.Array, chunk: int | None) -> jax.Array:
    """``f`` of each row of ``rows``: one at a time (``chunk=1``: ``lax.map``), ``chunk`` at a time (``lax.map``
    over vmapped batches), or all at once (None, or ``chunk`` at least the rows: ``vmap``)."""
    if chunk is None or chunk >= rows.shape[0]:
        return jax.vmap(f)(rows)
    if chunk == 1:  # no vmap at all: a lax.cond inside f stays a branch (vmapped, both sides would run)
        return jax.lax.map(f, rows)
    return jax.lax.map(f, rows, batch_size=chunk)


def _sum_all(f: Callable, rows: jax.Array, chunk: int | None) -> jax.Array:
    """``Σ f(row)`` over the rows, computed as :func:`_apply_all` does, but one at a time (or ``chunk`` at a
    time) as a ``lax.scan`` that carries the sum: memory for one term (or ``chunk``), not for every row."""
    count = rows.shape[0]
    if chunk is None or chunk >= count:
        return jnp.sum(jax.vmap(f)(rows), axis=0)
    batches, rest = divmod(count, chunk)
    term = f if chunk == 1 else (lambda batch: jnp.sum(jax.vmap(f)(batch), axis=0))
    head = rows[:batches * chunk]
    head = head if chunk == 1 else head.reshape(batches, chunk, *rows.shape[1:])
    shape = jax.eval_shape(f, rows[0])
    total = jax.lax.scan(lambda acc, r: (acc + term(r), None), jnp.zeros(shape.shape, shape.dtype), head)[0]
    return total + jnp.sum(jax.vmap(f)(rows[batches * chunk:]), axis=0) if rest else total


# ------------------------------------------------------------------ products
def hvp(model: Layer, params: Any, x: Any, y: Any, vector: Any, *, loss: str | Loss = DEFAULT_LOSS) -> Any:
    """Hessian-vector product ``H v`` of the mean data loss, forward-over-reverse, without forming ``H``.

    ``H v = ∂/∂ε ∇L(θ + ε v)|_{ε=0}``: ``jax.jvp`` of ``jax.grad(L)``. The
    gradient runs each op's hand-written reverse rule; the forward mode over it
    differentiates that rule (plain ``jax.numpy`` code) and the op's residuals by
    autodiff, so a reverse rule must be right as a function of its residuals,
    not only in value (the tests plant one that is not). Costs about 1.5
    gradients of ``L`` on the batch (1.4–1.6 on a CPU, ``benchmarks/curvature_products.py``),
    and the memory of one backward pass and its tangent. Exact (no approximation); for a network with
    kinks (ReLU, hinge losses) it is the Hessian of the smooth piece the
    parameters lie on. :func:`funcnet.second_order.hvp` computes the same product
    reverse-over-reverse, for any scalar function.

    Args:
      model: a :class:`funcnet.layers.Layer`; it runs in evaluation mode.
      params: its parameters (a pytree of float arrays).
      x: the batch's inputs.
      y: its labels or targets, one per row.
      vector: ``v``, a pytree shaped like ``params`` (cast to their dtypes).
      loss: a name of :data:`funcnet.train.LOSSES` or a callable
        ``loss(outputs, targets) -> per-example losses``.

    Returns:
      ``H v``, shaped like ``params``.
    """
    fn = "curvature.hvp"
    outputs, data_loss = _parts(fn, model, params, x, y, loss)
    vector = _as_vector(fn, params, vector)
    return jax.jvp(jax.grad(lambda p: data_loss(outputs(p))), (params,), (vector,))[1]


def ggn_vp(model: Layer, params: Any, x: Any, y: Any, vector: Any, *, loss: str | Loss = DEFAULT_LOSS) -> Any:
    """Generalized Gauss–Newton product ``G v = Jᵀ H_ℓ J v`` (the ``1/B`` is in ``H_ℓ``), without forming ``G``.

    ``J`` is the Jacobian of the network's outputs on the batch with respect to
    the parameters and ``H_ℓ`` the Hessian of ``(1/B) Σᵢ ℓ(oᵢ, yᵢ)`` with respect
    to the outputs (block diagonal, one ``C × C`` block per example). One forward
    pass is linearized (``jax.linearize``: the forward rules give ``J v``), the
    loss's output Hessian is applied by forward-over-reverse of the loss alone
    (outputs-sized), and ``Jᵀ`` is the transpose of the linearized network (the
    reverse rules). Costs about one gradient (0.9–1.1 on a CPU).

    ``G`` drops the second-order term ``Σ ∂ℓ/∂o · ∇²f`` of the Hessian; it is
    positive semi-definite for a loss convex in the outputs (all of
    :data:`funcnet.train.LOSSES`), and for the softmax cross-entropy it equals the
    Fisher information matrix. A piecewise-linear loss (``multiclass_svm``) has
    ``H_ℓ = 0`` almost everywhere, so its ``G`` is 0.

    Args and Returns: as :func:`hvp`.
    """
    fn = "curvature.ggn_vp"
    outputs, data_loss = _parts(fn, model, params, x, y, loss)
    vector = _as_vector(fn, params, vector)
    out, jvp = jax.linearize(outputs, params)
    hjv = _loss_hessian_product(data_loss, out, jvp(vector))
    return jax.linear_transpose(jvp, params)(hjv)[0]


# ------------------------------------------------------------------ Hutchinson
def _hutchinson(fn, model, params, x, y, key, samples, matrix, loss, chunk):
    _check_key(fn, key)
    samples = static_int(fn, "samples", samples)
    chunk = _check_chunk(fn, chunk)
    matvec, flat, unravel = _operator(fn, model, params, x, y, matrix, loss)

    def term(k):
        v = _probe(k, flat.size, flat.dtype)
        return v * matvec(v)

    return _sum_all(term, jax.random.split(key, samples), chunk) / samples, unravel


def hutchinson_diagonal(model: Layer, params: Any, x: Any, y: Any, key: jax.Array, *, samples: int = 16,
                        matrix: str = "hessian", loss: str | Loss = DEFAULT_LOSS, chunk: int | None = 1) -> Any:
    """Hutchinson's estimate of ``diag(M)``: the mean of ``v ⊙ M v`` over ``samples`` Rademacher probes ``v``.

    With ``v`` of independent ±1 entries, ``E[vᵢ (M v)ᵢ] = Σⱼ Mᵢⱼ E[vᵢ vⱼ] = Mᵢᵢ``:
    unbiased, with variance ``Σ_{j≠i} Mᵢⱼ² / samples`` per entry (the error
    shrinks like ``1/√samples``). Costs ``samples`` products ``M v`` after one
    linearization (:func:`hvp` or :func:`ggn_vp` each, without repeating the
    forward pass).

    Args:
      model: as in :func:`hvp`.
      params: as in :func:`hvp`.
      x: as in :func:`hvp`.
      y: as in :func:`hvp`.
      key: a PRNG key; probe ``i`` is drawn from ``jax.random.split(key, samples)[i]``.
      samples: the number of probes (a static int).
      matrix: ``"hessian"`` or ``"ggn"``.
      loss: as in :func:`hvp`.
      chunk: products computed at once: 1 (the default) one after the other (a ``lax.scan`` that sums
        them: on a CPU the fastest, and memory for one); ``k`` in vmapped batches of ``k``; None all at
        once (``vmap``: memory × ``samples``, the choice for an accelerator).

    Returns:
      The estimate of the diagonal, shaped like ``params``.
    """
    fn = "curvature.hutchinson_diagonal"
    diagonal, unravel = _hutchinson(fn, model, params, x, y, key, samples, matrix, loss, chunk)
    return unravel(diagonal)


def hutchinson_trace(model: Layer, params: Any, x: Any, y: Any, key: jax.Array, *, samples: int = 16,
                     matrix: str = "hessian", loss: str | Loss = DEFAULT_LOSS, chunk: int | None = 1) -> jax.Array:
    """Hutchinson's estimate of ``tr(M)``: the mean of ``vᵀ M v`` over ``samples`` Rademacher probes ``v``.

    Unbiased (``E[vᵀ M v] = tr(M E[v vᵀ]) = tr(M)``), with variance
    ``2 Σ_{i≠j} Mᵢⱼ² / samples``: Rademacher probes have the least variance of
    all probes with ``E[v vᵀ] = I``. The same probes as :func:`hutchinson_diagonal`
    with the same key (the trace is the sum of that diagonal estimate). Arguments
    as there; returns a scalar.
    """
    fn = "curvature.hutchinson_trace"
    diagonal, _ = _hutchinson(fn, model, params, x, y, key, samples, matrix, loss, chunk)
    return jnp.sum(diagonal)


# ------------------------------------------------------------------ Lanczos
class Lanczos(NamedTuple):
    """What :func:`lanczos` returns: ``Vᵀ M V = T``, tridiagonal (``alphas`` on its diagonal, ``betas`` beside it)."""

    #: ``(m,)``: the diagonal of ``T``, ``αⱼ = vⱼᵀ M vⱼ``.
    alphas: jax.Array
    #: ``(m - 1,)``: the off-diagonal of ``T``, ``βⱼ = ‖M vⱼ - αⱼ vⱼ - βⱼ₋₁ vⱼ₋₁‖`` (0 where the Krylov space ran out).
    betas: jax.Array
    #: ``(m, n)``: the orthonormal Lanczos vectors ``vⱼ`` as rows, or None (``basis=False``).
    basis: jax.Array | None

    def tridiagonal(self) -> jax.Array:
        """``T`` as an ``(m, m)`` matrix; its eigenvalues are the Ritz values, approximations of ``M``'s extremes."""
        return jnp.diag(self.alphas) + jnp.diag(self.betas, 1) + jnp.diag(self.betas, -1)


def _reorthogonalize(basis: jax.Array, w: jax.Array) -> jax.Array:
    """``w`` less its components along the rows of ``basis``, twice ("twice is enough", Kahan–Parlett).

    In full precision: an accelerator's default float32 matmul (TF32, bfloat16 passes) would leave
    components of 1e-3, and the basis would drift from orthonormal.
    """
    for _ in range(2):
        w = w - jnp.dot(jnp.dot(basis, w, precision=_HIGHEST), basis, precision=_HIGHEST)
    return w


def lanczos(matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, iterations: int, *,
            basis: bool = False) -> Lanczos:
    """``iterations`` steps of the Lanczos process on a symmetric ``matvec``, with full reorthogonalization.

    From ``v₀ = v0/‖v0‖``: ``w = M vⱼ``, ``αⱼ = vⱼᵀ w``, ``w ← w - αⱼ vⱼ - βⱼ₋₁ vⱼ₋₁``,
    then ``w`` is orthogonalized against every ``v`` so far (twice), and
    ``βⱼ = ‖w‖``, ``vⱼ₊₁ = w/βⱼ``. In floating point the plain three-term
    recurrence loses orthogonality as soon as a Ritz value converges, and the
    converged eigenvalue then reappears as spurious copies ("ghosts"); the full
    reorthogonalization keeps ``V`` orthonormal to rounding, at ``O(m n)`` per
    step and ``m n`` numbers of memory. Where the Krylov space runs out
    (``βⱼ`` at rounding level, e.g. ``M = 0`` or more steps than ``M`` has
    distinct eigenvalues) the process restarts from the coordinate vector
    ``eᵢ`` least represented in ``V`` (``‖V eᵢ‖² ≤ j/n < 1``), orthogonalized against
    ``V``, and sets ``βⱼ = 0``: ``T`` is then block diagonal and still ``Vᵀ M V``.

    Args:
      matvec: ``v -> M v`` on flat vectors of length ``n`` (``M`` symmetric).
      v0: the starting vector, ``(n,)``, nonzero.
      iterations: ``m``, the number of steps (``1 ≤ m ≤ n``, a static int): ``m`` products ``M v``.
      basis: also return the Lanczos vectors ``V`` (``(m, n)``).

    Returns:
      A :class:`Lanczos` with ``alphas``, ``betas`` (and ``basis``). The
      eigenvalues of :meth:`Lanczos.tridiagonal` approximate ``M``'s extreme
      eigenvalues first, and equal all of them when ``m = n``.
    """
    fn = "curvature.lanczos"
    if not callable(matvec):
        raise TypeError(f"{fn}: matvec must be a function v -> M v on flat vectors, got {matvec!r:.60}")
    v0 = jnp.asarray(v0)
    if v0.ndim != 1 or v0.size < 1 or not jnp.issubdtype(v0.dtype, jnp.floating):
        raise ValueError(f"{fn}: v0 must be a non-empty 1-D float vector (ravel a pytree with "
                         f"jax.flatten_util.ravel_pytree), got shape {v0.shape} and dtype {v0.dtype}")
    n = v0.size
    iterations = static_int(fn, "iterations", iterations)
    if iterations > n:
        raise ValueError(f"{fn}: iterations must be at most the dimension n = {n} (a Krylov space has at most "
                         f"n orthonormal vectors), got {iterations}")
    out_shape = jax.eval_shape(matvec, jax.ShapeDtypeStruct(v0.shape, v0.dtype))
    if getattr(out_shape, "shape", None) != v0.shape:
        raise ValueError(f"{fn}: matvec must map a vector of shape {v0.shape} to one of the same shape, got "
                         f"{getattr(out_shape, 'shape', out_shape)}")
    dtype, eps = v0.dtype, float(jnp.finfo(v0.dtype).eps)
    v = v0 / jnp.linalg.norm(v0)

    def step(j, carry):
        V, alphas, betas, v, v_prev, beta_prev, scale = carry
        V = V.at[j].set(v)
        w = matvec(v).astype(dtype)
        alpha = jnp.dot(v, w, precision=_HIGHEST)
        w = _reorthogonalize(V, w - alpha * v - beta_prev * v_prev)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta + beta_prev)  # a lower bound of ‖M‖
        # the Krylov space ran out: what is left of w is rounding noise (or exactly 0); go on from a fresh vector
        ran_out = beta <= 10 * eps * math.sqrt(n) * scale

        def restart():  # only when needed: it reads V three more times (under vmap both branches run)
            least = jnp.argmin(jnp.ones(iterations, dtype) @ (V * V))  # ‖V eᵢ‖² (a reduction over axis 0 is slow)
            fresh = _reorthogonalize(V, jnp.zeros(n, dtype).at[least].set(1))
            return fresh / jnp.linalg.norm(fresh), jnp.zeros((), dtype)

        v_next, beta = jax.lax.cond(ran_out, restart, lambda: (w / beta, beta))
        return V, alphas.at[j].set(alpha), betas.at[j].set(beta), v_next, v, beta, scale

    zero = jnp.zeros((), dtype)
    carry = (jnp.zeros((iterations, n), dtype), jnp.zeros(iterations, dtype), jnp.zeros(iterations, dtype), v,
             jnp.zeros_like(v), zero, zero)
    V, alphas, betas, *_ = jax.lax.fori_loop(0, iterations, step, carry)
    return Lanczos(alphas, betas[:-1], V if basis else None)


def _ritz(result: Lanczos) -> tuple[jax.Array, jax.Array]:
    """The Ritz values (ascending) and their quadrature weights (squared first components of the eigenvectors)."""
    values, vectors = jnp.linalg.eigh(result.tridiagonal())
    return values, vectors[0] ** 2


def _iterations(fn: str, iterations: int, n: int) -> int:
    return min(static_int(fn, "iterations", iterations), n)


def top_eigenvalues(model: Layer, params: Any, x: Any, y: Any, key: jax.Array, *, k: int = 1,
                    iterations: int = 20, matrix: str = "hessian", loss: str | Loss = DEFAULT_LOSS) -> jax.Array:
    """The ``k`` largest eigenvalues of the Hessian (or GGN) of the mean loss, by :func:`lanczos`, largest first.

    Runs ``iterations`` Lanczos steps (each one :func:`hvp` or :func:`ggn_vp`
    product after one shared linearization) from a Gaussian start drawn from
    ``key``, and returns the ``k`` largest Ritz values. The largest ones converge
    first (geometrically, faster the better separated they are); with
    ``iterations`` equal to the number of parameters they are exact to rounding.
    "Largest" is algebraic: a Hessian's negative eigenvalues come last. Ritz
    values lie inside ``M``'s spectrum, so each is at most the true eigenvalue of
    its rank (``iterations`` is capped at the number of parameters).

    Args:
      model: as in :func:`hvp`.
      params: as in :func:`hvp`.
      x: as in :func:`hvp`.
      y: as in :func:`hvp`.
      key: a PRNG key (the Gaussian start vector).
      k: how many eigenvalues (``1 ≤ k ≤ iterations``, static).
      iterations: Lanczos steps (static); memory ``iterations × n``.
      matrix: ``"hessian"`` or ``"ggn"``.
      loss: as in :func:`hvp`.

    Returns:
      ``(k,)`` eigenvalue estimates, in descending order.
    """
    fn = "curvature.top_eigenvalues"
    _check_key(fn, key)
    matvec, flat, _ = _operator(fn, model, params, x, y, matrix, loss)
    iterations = _iterations(fn, iterations, flat.size)
    k = static_int(fn, "k", k)
    if k > iterations:
        raise ValueError(f"{fn}: k = {k} eigenvalues need at least k Lanczos iterations (capped at the "
                         f"{flat.size} parameters), got iterations = {iterations}")
    result = lanczos(matvec, jax.random.normal(key, flat.shape, flat.dtype), iterations)
    return jnp.linalg.eigvalsh(result.tridiagonal())[::-1][:k]


class SpectralDensity(NamedTuple):
    """What :func:`spectral_density` returns."""

    #: ``(g,)``: the points where the density is given, ascending.
    grid: jax.Array
    #: ``(g,)``: the smoothed eigenvalue density at those points (it integrates to 1 over a wide enough grid).
    density: jax.Array
    #: ``(runs, m)``: the Ritz values of each run, the quadrature nodes.
    nodes: jax.Array
    #: ``(runs, m)``: their weights (each run's sum to 1).
    weights: jax.Array
    #: the standard deviation of the Gaussian kernel, in eigenvalue units.
    sigma: jax.Array


def spectral_density(model: Layer, params: Any, x: Any, y: Any, key: jax.Array, *, iterations: int = 30,
                     runs: int = 4, grid: int | Any = 512, sigma: float = 0.01, matrix: str = "hessian",
                     loss: str | Loss = DEFAULT_LOSS, chunk: int | None = 1) -> SpectralDensity:
    """The eigenvalue density of the Hessian (or GGN) by stochastic Lanczos quadrature (Ghorbani et al., 2019).

    The density of the ``n`` eigenvalues ``λₖ``, smoothed by a Gaussian kernel,
    ``φ(t) = (1/n) Σₖ g_σ(t - λₖ)``, equals ``E[vᵀ g_σ(t - M) v]/n`` for a probe with
    ``E[v vᵀ] = I``. Each of ``runs`` Rademacher probes ``v`` (normalized) starts
    ``iterations`` Lanczos steps; the Gauss quadrature of the tridiagonal ``T``
    (its eigenvalues ``θⱼ`` as nodes, the squared first components of its
    eigenvectors ``τⱼ`` as weights) gives ``v̂ᵀ g_σ(t - M) v̂ ≈ Σⱼ τⱼ g_σ(t - θⱼ)``,
    and the runs are averaged:

        φ(t) ≈ (1/runs) Σ_r Σⱼ τⱼ⁽ʳ⁾ g_σ(t - θⱼ⁽ʳ⁾),   g_σ(u) = exp(-u²/2σ²)/(σ√2π).

    Each run's weights sum to 1, so ``φ`` integrates to 1; its mean
    ``Σ τ θ`` averaged over the runs is exactly :func:`hutchinson_trace` with the
    same key and ``samples=runs``, divided by ``n``. The extreme eigenvalues are
    resolved first; the bulk (for a network, a spike near 0 holding most of the
    mass) is resolved to about the kernel width. Costs ``runs × iterations``
    products and ``iterations × n`` numbers of memory per run computed at once.

    Args:
      model: as in :func:`hvp`.
      params: as in :func:`hvp`.
      x: as in :func:`hvp`.
      y: as in :func:`hvp`.
      key: a PRNG key; run ``r``'s probe is :func:`hutchinson_trace`'s probe ``r``.
      iterations: Lanczos steps per run (static; capped at the number of parameters).
      runs: the number of probes (static); the density's noise falls like ``1/√runs``.
      grid: the number of points (a static int), evenly spaced over
        ``[θ_min - 6σ, θ_max + 6σ]`` with ``θ`` all runs' Ritz values; or the points
        themselves (a 1-D array, e.g. the same grid for several checkpoints).
      sigma: the kernel's width as a fraction of the span of the spectrum: with an
        int ``grid``, ``σ = sigma·(θ_max - θ_min)``; with given points,
        ``σ = sigma·(grid.max() - grid.min())``.
      matrix: ``"hessian"`` or ``"ggn"``.
      loss: as in :func:`hvp`.
      chunk: runs computed at once, as :func:`hutchinson_diagonal`'s ``chunk``
        (default 1: one after the other).

    Returns:
      A :class:`SpectralDensity` (``grid``, ``density``, the quadrature ``nodes`` and
      ``weights``, and the absolute ``sigma``).
    """
    fn = "curvature.spectral_density"
    _check_key(fn, key)
    runs = static_int(fn, "runs", runs)
    chunk = _check_chunk(fn, chunk)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)) \
            or not 0 < float(sigma) < math.inf:
        raise ValueError(f"{fn}: sigma must be a positive finite number (a fraction of the spectrum's span), got "
                         f"{sigma!r:.60}")
    points = None
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = static_int(fn, "grid", grid, 2)
    else:
        points = jnp.asarray(grid)
        if points.ndim != 1 or points.size < 2 or not jnp.issubdtype(points.dtype, jnp.floating):
            raise ValueError(f"{fn}: grid must be a number of points (an int >= 2) or a 1-D float array of at least "
                             f"2 points, got {grid!r:.60}")
    matvec, flat, _ = _operator(fn, model, params, x, y, matrix, loss)
    n, dtype = flat.size, flat.dtype
    iterations = _iterations(fn, iterations, n)
    nodes, weights = _apply_all(lambda k: _ritz(lanczos(matvec, _probe(k, n, dtype), iterations)),
                                jax.random.split(key, runs), chunk)
    if points is None:
        low, high = jnp.min(nodes), jnp.max(nodes)
        span = high - low
        width = sigma * jnp.where(span > 0, span, jnp.maximum(jnp.abs(high), 1))
        points = jnp.linspace(low - 6 * width, high + 6 * width, grid, dtype=dtype)
    else:
        points = points.astype(dtype)
        width = sigma * (jnp.max(points) - jnp.min(points))
    kernel = jnp.exp(-0.5 * ((points[:, None, None] - nodes) / width) ** 2) / (width * math.sqrt(2 * math.pi))
    density = jnp.sum(kernel * weights, axis=(1, 2)) / runs
    return SpectralDensity(points, density, nodes, weights, width)
