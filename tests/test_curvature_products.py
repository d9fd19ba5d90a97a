"""funcnet.curvature's matrix-free products (funcnet/curvature/products.py) and the curvature hook (monitor.py).

Every quantity is checked against its autodiff definition, built on the autodiff twins (``funcnet.reference``,
so a wrong hand-written rule cannot be in the expectation too): Hessian-vector products against ``jax.hessian``
of the mean loss, GGN products against the explicit ``Jᵀ H_ℓ J`` from ``jax.jacrev``/``jax.hessian``, on small
networks with several activations, both norms and every loss of ``train.LOSSES``, in float64 (≤ 1e-10 relative)
and float32 (≤ 1e-5); Lanczos eigenvalues against ``numpy.linalg.eigh``; the spectral density against the
smoothed spectral measure of the same probes; Hutchinson's estimators unbiased, their error shrinking like
1/√samples. Each check fails on a planted fault, shown here. All cases of a check are traced into one program.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from funcnet import curvature, data, layers, reference, train
from funcnet.curvature import products
from funcnet.registry import OPS
from funcnet.train.steps import LOSSES, loss_function

SIZES, BATCH = [3, 5, 4], 6
#: (activation, norm, loss): every loss of train.LOSSES, both norms, four activations.
CASES = [("tanh", "layer_norm", "softmax_cross_entropy_with_integer_labels"),
         ("gelu", None, "squared_error"),
         ("softplus", "rms_norm", "l2_loss"),
         ("elu", None, "multiclass_svm")]
F64, F32 = 1e-10, 1e-5


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Most XLA optimizations off: the programs are tiny and compiling them is most of this file's time (the
    Lanczos loops compile twice as fast); rounding is the same."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def test_the_cases_cover_every_loss():
    assert {case[2] for case in CASES} == set(LOSSES)


def build(case, dtype="float64", ops=layers.MANUAL):
    """``(model, params, x, y)`` of a case, in ``dtype``."""
    activation, norm, loss = case
    model = layers.mlp(SIZES, activation, norm=norm, ops=ops)
    with jax.ensure_compile_time_eval():  # concrete parameters, also when built inside a traced program
        params = model.init(jax.random.key(0), (-1, SIZES[0]))[1]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + 0.3 * rng.standard_normal(p.shape), dtype), params)
    x = jnp.asarray(rng.standard_normal((BATCH, SIZES[0])), dtype)
    y = (jnp.asarray(rng.integers(0, SIZES[-1], BATCH)) if LOSSES[loss][1]
         else jnp.asarray(rng.standard_normal((BATCH, SIZES[-1])), dtype))
    return model, params, x, y


def explicit(case):
    """``(H, G)`` from autodiff of the twin network: ``jax.hessian`` of L, and ``Jᵀ H_ℓ J`` (``H_ℓ`` holds the 1/B)."""
    model, params, x, y = build(case, ops=reference)
    loss_fn = loss_function(case[2], model)
    flat, unravel = ravel_pytree(params)
    outputs = lambda f: model.apply(unravel(f), x)  # noqa: E731
    data_loss = lambda o: jnp.mean(loss_fn(o, y))  # noqa: E731
    hessian = jax.hessian(lambda f: data_loss(outputs(f)))(flat)
    out = outputs(flat)
    jacobian = jax.jacrev(outputs)(flat).reshape(out.size, flat.size)
    loss_hessian = jax.hessian(lambda o: data_loss(o.reshape(out.shape)))(out.reshape(-1))
    return hessian, jacobian.T @ loss_hessian @ jacobian


def directions(n, count=2, seed=2):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((count, n)))


def products_of(case, dtype):
    """``(H V, G V)`` for the rows of :func:`directions`, from the functions under test (flat, float64)."""
    model, params, x, y = build(case, dtype)
    flat, unravel = ravel_pytree(params)

    def apply(fn):
        return jax.vmap(lambda v: ravel_pytree(fn(model, params, x, y, unravel(v), loss=case[2]))[0])(
            directions(flat.size).astype(dtype)).astype(jnp.float64)

    return apply(curvature.hvp), apply(curvature.ggn_vp)


def relative_error(got, want):
    """The largest ``‖got_k - want_k‖ / ‖want_k‖`` over the rows (0 where both are 0: the hinge loss's GGN)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    num, den = np.linalg.norm(got - want, axis=-1), np.linalg.norm(want, axis=-1)
    return float(np.max(np.where(den > 0, num / np.where(den > 0, den, 1), num)))


@pytest.fixture(scope="module")
def truth():
    """Every case's explicit matrices and the products under test, float64 and float32: one program."""

    @jax.jit
    def program():
        out = {}
        for case in CASES:
            hessian, ggn = explicit(case)
            out[case] = {"H": hessian, "G": ggn, "float64": products_of(case, "float64"),
                         "float32": products_of(case, "float32")}
        return out

    return jax.device_get(program())


def product_errors(truth, case, dtype, got=None):
    got = truth[case][dtype] if got is None else got
    v = np.asarray(directions(truth[case]["H"].shape[0]).astype(dtype), np.float64)
    return (relative_error(got[0], v @ truth[case]["H"].T), relative_error(got[1], v @ truth[case]["G"].T))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_hvp_and_ggn_vp_equal_the_explicit_matrices(truth, case):
    hessian, ggn = truth[case]["H"], truth[case]["G"]
    assert np.linalg.norm(hessian) > 0.01 and np.allclose(hessian, hessian.T, rtol=0, atol=1e-12)
    # the GGN is not the Hessian (else the GGN check could not tell them apart); the hinge loss's is 0 (its output
    # Hessian is)
    assert np.linalg.norm(ggn - hessian) > 0.01 * np.linalg.norm(hessian)
    assert (np.abs(ggn).max() == 0) == (case[2] == "multiclass_svm")
    assert np.all(np.linalg.eigvalsh(ggn) >= -1e-12 * max(1.0, np.abs(ggn).max()))  # convex losses: G ⪰ 0
    for dtype, tol in (("float64", F64), ("float32", F32)):
        h_err, g_err = product_errors(truth, case, dtype)
        assert h_err <= tol and g_err <= tol, (dtype, h_err, g_err)


def plant_rules(monkeypatch, name, direction, change):
    """Replace the hand-written ``direction`` rule ("jvp" forward, "vjp" reverse) of every form of the op ``name``
    by ``change(rule)``."""
    for spec in OPS:
        if spec.name == name:
            for rule in spec.forms:
                monkeypatch.setattr(rule, direction, change(getattr(rule, direction)))


def scaled(rule):  # a wrong factor in the rule's value
    return lambda res, *args, **s: jax.tree.map(lambda a: 1.5 * a, rule(res, *args, **s))


def frozen(rule):  # the right value, but blind to the residuals: its derivative (second order) is wrong
    return lambda res, *args, **s: rule(jax.tree.map(jax.lax.stop_gradient, res), *args, **s)


def planted_errors(truth):
    """The product errors of the first case in float64, traced anew (with whatever is planted)."""
    case = CASES[0]
    return product_errors(truth, case, "float64", jax.device_get(jax.jit(lambda: products_of(case, "float64"))()))


def test_the_product_checks_fail_planted_faults(truth, monkeypatch):
    # the Hessian in place of the GGN, and the GGN in place of the Hessian
    assert product_errors(truth, CASES[0], "float64", (truth[CASES[0]]["float64"][1],) * 2)[0] > 0.01
    assert product_errors(truth, CASES[0], "float64", (truth[CASES[0]]["float64"][0],) * 2)[1] > 0.01
    with monkeypatch.context() as m:  # a wrong loss Hessian: only the GGN uses it
        m.setattr(products, "_loss_hessian_product", lambda f, o, u: jax.jvp(jax.grad(f), (o,), (2 * u,))[1])
        h_err, g_err = planted_errors(truth)
        assert h_err <= F64 and g_err > 0.5
    with monkeypatch.context() as m:  # a dropped 1/B
        parts = products._parts

        def summed(*args):
            outputs, data_loss = parts(*args)
            return outputs, lambda out: BATCH * data_loss(out)

        m.setattr(products, "_parts", summed)
        assert min(planted_errors(truth)) > 1
    # the hand-written rules of an op inside the network: ggn_vp runs the forward rule (J v) and the reverse rule
    # (Jᵀ u, the transpose of the linearized network); hvp runs the reverse rule and differentiates it (and the
    # op's residuals) by autodiff, so it sees a reverse rule blind to its residuals, which the GGN does not use
    for name, direction, change, fails in (("layer_norm", "jvp", scaled, (False, True)),
                                           ("affine", "vjp", scaled, (True, True)),
                                           ("layer_norm", "vjp", frozen, (True, False))):
        with monkeypatch.context() as m:
            plant_rules(m, name, direction, change)
            errors = planted_errors(truth)
            assert tuple(e > 0.01 for e in errors) == fails and all(e <= F64 for e, f in zip(errors, fails)
                                                                    if not f), (name, direction, errors)


# ------------------------------------------------------------------ Lanczos
def test_top_eigenvalues_equal_numpy_eigh_in_both_precisions(truth):
    case = CASES[0]
    n = truth[case]["H"].shape[0]

    @jax.jit
    def program(key):
        out = {}
        for dtype in ("float64", "float32"):
            model, params, x, y = build(case, dtype)
            for matrix in ("hessian", "ggn"):
                out[f"{dtype} {matrix}"] = curvature.top_eigenvalues(model, params, x, y, key, k=3, iterations=n,
                                                               matrix=matrix, loss=case[2])
        out["few"] = curvature.top_eigenvalues(*build(case), key, k=1, iterations=n // 2, loss=case[2])
        return out

    got = jax.device_get(program(jax.random.key(3)))
    for matrix, explicit_matrix in (("hessian", truth[case]["H"]), ("ggn", truth[case]["G"])):
        eigenvalues = np.linalg.eigh(explicit_matrix)[0]
        want, scale = eigenvalues[::-1][:3], np.abs(eigenvalues).max()
        assert np.abs(got[f"float64 {matrix}"] - want).max() <= F64 * scale, (matrix, got[f"float64 {matrix}"], want)
        assert np.abs(got[f"float32 {matrix}"] - want).max() <= F32 * scale, (matrix, got[f"float32 {matrix}"], want)
    # fewer steps: the top one has converged, and a Ritz value never exceeds the eigenvalue of its rank
    top = np.linalg.eigh(truth[case]["H"])[0][-1]
    assert top - 1e-6 * abs(top) <= got["few"][0] <= top + 1e-10 * abs(top), (got["few"], top)


#: A clustered spectrum: two separated eigenvalues above 60 in [0, 1], the case where a Lanczos process that does
#: not reorthogonalize repeats its converged Ritz values ("ghosts").
CLUSTERED = np.concatenate([[100.0, 50.0], np.linspace(0.0, 1.0, 60)])


def lanczos_on_the_clustered_spectrum():
    diagonal = jnp.asarray(CLUSTERED)
    result = jax.jit(lambda v0: curvature.lanczos(lambda v: diagonal * v, v0, 40, basis=True))(
        jnp.ones(CLUSTERED.size))
    ritz = np.linalg.eigvalsh(np.asarray(result.tridiagonal()))[::-1]
    basis = np.asarray(result.basis)
    return np.abs(ritz[:3] - np.sort(CLUSTERED)[::-1][:3]).max(), np.abs(basis @ basis.T - np.eye(40)).max()


def test_lanczos_keeps_its_basis_orthonormal_and_finds_no_ghosts(monkeypatch):
    ghost, orthogonality = lanczos_on_the_clustered_spectrum()
    assert ghost <= 1e-10 * 100 and orthogonality <= 1e-12
    with monkeypatch.context() as m:  # planted: the plain three-term recurrence
        m.setattr(products, "_reorthogonalize", lambda basis, w: w)
        ghost, orthogonality = lanczos_on_the_clustered_spectrum()
        assert ghost > 1 and orthogonality > 0.1  # the third Ritz value is a copy of 100 or 50, not 1


def test_lanczos_restarts_where_the_krylov_space_runs_out():
    """A rank-2 matrix (its Krylov space has dimension 3) and the zero matrix: every step still gives a valid
    T, whose eigenvalues are then the whole spectrum, zeros included, and nothing is NaN."""
    u = np.linalg.qr(np.random.default_rng(4).standard_normal((6, 2)))[0]
    low_rank = jnp.asarray(u @ np.diag([3.0, -2.0]) @ u.T)

    @jax.jit
    def program(v0):
        return (curvature.lanczos(lambda v: low_rank @ v, v0, 6, basis=True),
                curvature.lanczos(lambda v: 0 * v, v0, 6, basis=True))

    for result, spectrum in zip(program(jnp.arange(1.0, 7.0)), ([-2, 0, 0, 0, 0, 3], [0] * 6)):
        np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(result.tridiagonal())), spectrum, atol=1e-12)
        np.testing.assert_allclose(np.asarray(result.basis @ result.basis.T), np.eye(6), atol=1e-12)
        assert np.any(np.asarray(result.betas) == 0)


# ------------------------------------------------------------------ spectral density
RUNS = 6


def density_program(case, hutchinson=True):
    n = ravel_pytree(build(case)[1])[0].size

    @jax.jit
    def program(key):
        model, params, x, y = build(case)
        density = curvature.spectral_density(model, params, x, y, key, iterations=n, runs=RUNS, grid=400,
                                             loss=case[2])
        if not hutchinson:
            return density
        trace = curvature.hutchinson_trace(model, params, x, y, key, samples=RUNS, loss=case[2])
        diagonal = curvature.hutchinson_diagonal(model, params, x, y, key, samples=RUNS, loss=case[2])
        chunked = [ravel_pytree(curvature.hutchinson_diagonal(model, params, x, y, key, samples=RUNS, loss=case[2],
                                                              chunk=chunk))[0] for chunk in (4, None)]
        return density, trace, ravel_pytree(diagonal)[0], chunked

    return program


def density_errors(truth, case, density, trace):
    """What the density must satisfy, as errors: its integral is 1; its mean is Hutchinson's trace with the same
    probes over n; with n Lanczos steps it is exactly the smoothed spectral measure of H for those probes,
    ``(1/runs) Σ_r Σ_k (v̂_r·u_k)² g_σ(t - λ_k)`` (eigenpairs from numpy)."""
    grid, values, sigma = (np.asarray(a) for a in (density.grid, density.density, density.sigma))
    n = truth[case]["H"].shape[0]
    eigenvalues, vectors = np.linalg.eigh(truth[case]["H"])
    probes = np.stack([np.asarray(jax.random.rademacher(k, (n,)), np.float64)
                       for k in jax.random.split(jax.random.key(5), RUNS)]) / math.sqrt(n)
    weights = (probes @ vectors) ** 2
    kernel = np.exp(-0.5 * ((grid[:, None] - eigenvalues) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    smoothed = (kernel @ weights.T).mean(axis=1)
    return {"integral": abs(np.trapezoid(values, grid) - 1),
            "mean": abs(np.trapezoid(grid * values, grid) - float(trace) / n) / np.abs(eigenvalues).max(),
            "measure": np.abs(values - smoothed).max() / smoothed.max()}


def test_the_spectral_density_is_the_smoothed_spectrum_of_its_probes(truth, monkeypatch):
    case = CASES[0]
    density, trace, diagonal, chunked = density_program(case)(jax.random.key(5))
    assert abs(trace - np.sum(diagonal)) <= 1e-12 * abs(trace)  # the same probes: the trace sums the diagonal
    for other in chunked:  # a scan over one at a time (the default), over 4 then 2 more, all at once (vmap)
        np.testing.assert_allclose(other, diagonal, rtol=1e-12, atol=1e-15)
    errors = density_errors(truth, case, density, trace)
    assert errors["integral"] <= 1e-7 and errors["mean"] <= 1e-9 and errors["measure"] <= 1e-9, errors
    assert density.nodes.shape == density.weights.shape == (RUNS, truth[case]["H"].shape[0])
    # planted: weights from the last components of T's eigenvectors; weights not normalized (twice as heavy)
    ritz = products._ritz
    for planted, fails in ((lambda r: (ritz(r)[0], jnp.linalg.eigh(r.tridiagonal())[1][-1] ** 2), "mean"),
                           (lambda r: (ritz(r)[0], 2 * ritz(r)[1]), "integral")):
        with monkeypatch.context() as m:
            m.setattr(products, "_ritz", planted)
            errors = density_errors(truth, case, density_program(case, hutchinson=False)(jax.random.key(5)), trace)
            assert errors[fails] > 1e-3 and errors["measure"] > 1e-3, (fails, errors)


# ------------------------------------------------------------------ Hutchinson
SEEDS, FEW = 256, 4


def hutchinson_statistics(truth, case):
    """Over SEEDS seeds at FEW and 4·FEW probes: the root-mean-square error of the diagonal (summed over its
    entries) and of the trace, the variances the theory gives for Rademacher probes, and the bias of the trace.
    The trace estimate is the sum of the diagonal one (the same probes; checked with the density)."""
    model, params, x, y = build(case)

    @jax.jit
    def program(keys):
        def one(key):
            diagonals = {s: ravel_pytree(curvature.hutchinson_diagonal(model, params, x, y, key, samples=s,
                                                                       loss=case[2]))[0] for s in (FEW, 4 * FEW)}
            return {s: (d, jnp.sum(d)) for s, d in diagonals.items()}

        return jax.vmap(one)(keys)

    estimates = jax.device_get(program(jax.random.split(jax.random.key(6), SEEDS)))
    hessian = truth[case]["H"]
    off = hessian - np.diag(np.diag(hessian))
    stats = {}
    for s, (diagonal, trace) in estimates.items():
        stats[s] = {"diagonal": math.sqrt(np.mean(np.sum((diagonal - np.diag(hessian)) ** 2, axis=1))),
                    "trace": math.sqrt(np.mean((trace - np.trace(hessian)) ** 2)),
                    # Var[vᵢ (H v)ᵢ] = Σ_{j≠i} Hᵢⱼ², Var[vᵀ H v] = 2 Σ_{i≠j} Hᵢⱼ², each divided by s
                    "diagonal_theory": math.sqrt(np.sum(off ** 2) / s),
                    "trace_theory": math.sqrt(2 * np.sum(off ** 2) / s),
                    "trace_bias": abs(np.mean(trace) - np.trace(hessian)) / (np.std(trace) / math.sqrt(SEEDS))}
    return stats


def unbiased(stats) -> bool:
    """The estimator behaves as an unbiased one with Rademacher probes: the error at 4·FEW probes is half that at
    FEW (1/√samples), both errors are the ones the theory gives (a bias adds its square to the mean squared error,
    a wrong scale changes it), and the mean trace over the seeds is within 4 standard errors of the truth."""
    few, many = stats[FEW], stats[4 * FEW]
    return (all(0.4 <= many[q] / few[q] <= 0.6 for q in ("diagonal", "trace"))
            and all(0.85 <= s[q] / s[f"{q}_theory"] <= 1.15 for s in (few, many) for q in ("diagonal", "trace"))
            and all(s["trace_bias"] <= 4 for s in (few, many)))


def test_hutchinson_is_unbiased_and_its_error_shrinks_like_one_over_root_samples(truth, monkeypatch):
    stats = hutchinson_statistics(truth, CASES[0])
    assert unbiased(stats), stats
    # planted: Gaussian probes scaled wrong (E[v vᵀ] = 1.21 I); 0/1 probes (the 2b - 1 of a sign left out)
    wrong = {"gaussian": lambda key, n, dtype: 1.1 * jax.random.normal(key, (n,), dtype),
             "0/1": lambda key, n, dtype: jax.random.bernoulli(key, 0.5, (n,)).astype(dtype)}
    for name, probe in wrong.items():
        with monkeypatch.context() as m:
            m.setattr(products, "_probe", probe)
            assert not unbiased(hutchinson_statistics(truth, CASES[0])), name


# ------------------------------------------------------------------ errors
def _bad(case=CASES[0]):
    model, params, x, y = build(case)
    key = jax.random.key(0)
    vector = jax.tree.map(jnp.ones_like, params)
    wrong = jax.tree.map(lambda p: jnp.ones(p.shape + (1,)), params)
    flat = ravel_pytree(params)[0]
    return [
        (lambda: curvature.hvp(model, params, x, y, wrong), ValueError, ("curvature.hvp", "vector[", "has shape")),
        (lambda: curvature.ggn_vp(model, params, x, y[:3], vector), ValueError,
         ("curvature.ggn_vp", "6 rows", "(3,)")),
        (lambda: curvature.ggn_vp(model, params, x, y, [1.0]), ValueError, ("curvature.ggn_vp", "structure")),
        (lambda: curvature.hvp(model, params, x, y, vector, loss="nope"), ValueError, ("curvature.hvp", "'nope'")),
        (lambda: curvature.hutchinson_trace(model, params, x, y, key, matrix="fisher"), ValueError,
         ("curvature.hutchinson_trace", "'fisher'")),
        (lambda: curvature.hutchinson_diagonal(model, params, x, y, key, samples=0), ValueError,
         ("curvature.hutchinson_diagonal", "samples", "0")),
        (lambda: curvature.hutchinson_trace(model, params, x, y, 0), TypeError,
         ("curvature.hutchinson_trace", "key")),
        (lambda: curvature.top_eigenvalues(model, params, x, y, key, k=5, iterations=4), ValueError,
         ("curvature.top_eigenvalues", "k = 5", "iterations = 4")),
        (lambda: curvature.spectral_density(model, params, x, y, key, sigma=0.0), ValueError,
         ("curvature.spectral_density", "sigma", "0.0")),
        (lambda: curvature.spectral_density(model, params, x, y, key, grid=jnp.ones((2, 2))), ValueError,
         ("curvature.spectral_density", "grid")),
        (lambda: curvature.lanczos(lambda v: v, flat, flat.size + 1), ValueError,
         ("curvature.lanczos", f"n = {flat.size}", str(flat.size + 1))),
        (lambda: curvature.lanczos(lambda v: v[:2], flat, 2), ValueError, ("curvature.lanczos", "same shape")),
        (lambda: curvature.lanczos(lambda v: v, jnp.ones((2, 2)), 1), ValueError, ("curvature.lanczos", "(2, 2)")),
        (lambda: curvature.hvp(model, jax.tree.map(lambda p: p.astype(jnp.int32), params), x, y, vector),
         TypeError, ("curvature.hvp", "int32")),
    ]


def test_bad_input_gives_one_clear_error_at_trace_time():
    for call, error, fragments in _bad():
        with pytest.raises(error) as raised:
            jax.eval_shape(call)  # traced only: the error comes before anything runs
        message = str(raised.value)
        assert "\n" not in message and all(f in message for f in fragments), (fragments, message)


# ------------------------------------------------------------------ the hook
def test_the_monitor_records_per_epoch_what_a_direct_call_gives(tmp_path):
    ds = data.load("spiral", seed=0)
    model = layers.mlp([2, 8, 2], "tanh")
    params = model.init(jax.random.key(0), (-1, 2))[1]
    monitor = curvature.CurvatureMonitor(model, ds.train.x, ds.train.y, rows=64, iterations=6, samples=3, seed=7)
    assert monitor.x.shape == (64, 2) and all(any(np.array_equal(r, t) for t in ds.train.x)
                                              for r in monitor.x[:5])
    seen = []
    result = train.fit(model, params, ds, epochs=2, batch_size=64, progress=False, hooks=[monitor],
                       callback=lambda epoch, p, h: seen.append(p), checkpoint=str(tmp_path / "c.safetensors"))
    history = result.history
    assert len(history.hessian_top_eigenvalue) == len(history.hessian_trace) == 2

    @jax.jit
    def direct(p):
        top_key, trace_key = jax.random.split(jax.random.key(7))
        return (curvature.top_eigenvalues(model, p, monitor.x, monitor.y, top_key, iterations=6)[0],
                curvature.hutchinson_trace(model, p, monitor.x, monitor.y, trace_key, samples=3))

    for epoch, p in enumerate(seen):
        top, trace = direct(p)
        assert np.isfinite(history.hessian_top_eigenvalue[epoch]) and np.isfinite(history.hessian_trace[epoch])
        np.testing.assert_allclose(history.hessian_top_eigenvalue[epoch], top, rtol=1e-5)
        np.testing.assert_allclose(history.hessian_trace[epoch], trace, rtol=1e-5)
    assert history.hessian_top_eigenvalue[0] != history.hessian_top_eigenvalue[1]
    # the checkpoint keeps them, and a history saved before they existed still loads (with them empty)
    _, _, saved = train.hooks.Checkpointer.restore(tmp_path / "c.safetensors", *_fresh(model, params))
    assert saved.hessian_trace == history.hessian_trace
    old = {k: v for k, v in history.to_dict().items() if k not in curvature.CURVATURE_FIELDS}
    assert train.History.from_dict(old).hessian_top_eigenvalue == []


def _fresh(model, params):
    import optax

    return train.TrainState.create(params, optax.sgd(0.1, momentum=0.9)), train.EarlyStopping.create(params)
