"""funcnet.curvature, second order: the losses' output Hessians, the GGN diagonal, K-FAC's factors and optimizer.

Every expectation is computed here by another route: ``jax.hessian`` of the
autodiff twins' losses, explicit ``(1/B) Σ Jᵀ H J`` from ``jax.jacrev``, K-FAC's
factors from ``jax.vjp`` cotangents of a forward pass written by hand, and the
optimizer's step from those with ``numpy.linalg.inv``. Each check is shown to
fail on a planted fault (a wrong or transposed Hessian root, a missed layer, a
biased sampler, a wrong factor, a wrong damping split, a layer left
unpreconditioned).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from funcnet import curvature, layers, reference, train
from funcnet.curvature import ggn as ggn_module
from funcnet.curvature import loss_hessians, taps

CE, SE, L2, SVM = loss_hessians.CE, loss_hessians.SE, loss_hessians.L2, loss_hessians.SVM
B, C = 6, 3


def per_example_loss(loss):
    """ℓᵢ from the autodiff twins, written out: the mean of the loss's values over the example's entries."""
    ref = reference.losses
    return {CE: lambda f, y: ref.softmax_cross_entropy_with_integer_labels(f, y),
            SE: lambda f, y: jnp.mean(ref.squared_error(f, y), -1),
            L2: lambda f, y: jnp.mean(ref.l2_loss(f, y), -1),
            SVM: lambda f, y: ref.multiclass_svm_loss(f, y)}[loss]


def targets(loss, dtype=jnp.float64, seed=3):
    if loss in (CE, SVM):
        return jnp.arange(B) % C
    return jax.random.normal(jax.random.key(seed), (B, C), dtype)


def rel(a, b):
    """max |a − b| over a tree, relative to max |b| (traceable)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    num = jnp.max(jnp.stack([jnp.max(jnp.abs(x - y)) for x, y in zip(la, lb)]))
    den = jnp.max(jnp.stack([jnp.max(jnp.abs(y)) for y in lb]))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), num)


# ---------------------------------------------------------------------------------------- the loss Hessians
def hessian_errors(outputs, losses=loss_hessians.CURVATURE_LOSSES):
    """Per loss: (H against jax.hessian of the twin's ℓᵢ, S Sᵀ against that Hessian), one compiled program."""
    def run(outputs):
        out = {}
        for loss in losses:
            y = targets(loss)
            ell = per_example_loss(loss)
            want = jax.vmap(jax.hessian(lambda f, t: ell(f[None], t[None])[0]))(outputs, y)
            s = curvature.loss_hessian_sqrt(loss, outputs, y)
            out[loss] = jnp.stack([rel(curvature.loss_hessian(loss, outputs, y), want),
                                   rel(s @ jnp.swapaxes(s, 1, 2), want)])
        return out

    return {k: np.asarray(v) for k, v in jax.jit(run)(outputs).items()}


def test_loss_hessians_and_their_roots_equal_jax_hessian_of_the_twins(monkeypatch):
    assert set(loss_hessians.CURVATURE_LOSSES) == set(train.LOSSES)  # every named loss is covered
    outputs = jax.random.normal(jax.random.key(0), (B, C), jnp.float64) * 2
    for loss, (h_err, s_err) in hessian_errors(outputs).items():
        assert h_err <= 1e-10 and s_err <= 1e-10, (loss, h_err, s_err)
    assert curvature.loss_hessian_sqrt(SVM, outputs, targets(SVM)).shape == (B, C, 0)
    # planted: the cross-entropy's root without its rank-one term, and transposed
    original = loss_hessians.loss_hessian_sqrt
    for planted in (lambda loss, f, y: jax.vmap(jnp.diag)(jnp.sqrt(jax.nn.softmax(f))),
                    lambda loss, f, y: jnp.swapaxes(original(loss, f, y), 1, 2)):
        monkeypatch.setattr(curvature, "loss_hessian_sqrt", planted)
        assert hessian_errors(outputs, [CE])[CE][1] > 1e-3
    monkeypatch.undo()


def test_sampled_gradients_have_the_hessian_as_second_moment_and_the_error_falls_like_one_over_root_n(monkeypatch):
    outputs = jax.random.normal(jax.random.key(1), (B, C), jnp.float64)

    def errors(key):
        out = []
        for loss in (CE, SE, L2):
            g = curvature.sampled_gradients(loss, key, outputs, samples=4096)
            moment = jnp.einsum("sbi,sbj->sbij", g, g)
            h = curvature.loss_hessian(loss, outputs, targets(loss))  # checked against jax.hessian above
            out.append([jnp.linalg.norm(jnp.mean(moment[:n], 0) - h) / jnp.linalg.norm(h) for n in (64, 4096)])
        return jnp.asarray(out)

    def both(key):  # the library's samplers, and (traced in the same program) planted ones: labels drawn from
        right = errors(key)  # softmax(f/2), Gaussian targets whose variance is doubled
        original = loss_hessians.sample_targets
        wrong = {CE: lambda key, f: original(CE, key, f / 2),
                 SE: lambda key, f: f + jnp.sqrt(2.0) * (original(SE, key, f) - f),
                 L2: lambda key, f: f + jnp.sqrt(2.0) * (original(L2, key, f) - f)}
        with monkeypatch.context() as m:
            m.setattr(loss_hessians, "sample_targets", lambda loss, key, f: wrong[loss](key, f))
            return right, errors(key)

    err, planted = (np.asarray(e) for e in jax.jit(both)(jax.random.key(2)))
    assert np.all(err[:, 1] < 0.06) and np.all(err[:, 1] < err[:, 0] / 4), err  # 64× the samples: about 8× less
    assert np.all(planted[:, 1] > np.maximum(0.1, 3 * err[:, 1])), planted


# ------------------------------------------------------------------------------------- the GGN diagonal
def tied(width=4):
    """A square Dense layer applied twice with the same parameters, then a Dense head: a tied weight."""
    inner, head = layers.Dense(width), layers.Dense(C)

    def init(key, input_shape):
        k1, k2 = jax.random.split(key)
        _, p_in = inner.init(k1, input_shape)
        _, p_head = head.init(k2, (-1, width))
        return (-1, C), {"inner": p_in, "head": p_head}

    def apply(params, x, **_):
        return head.apply(params["head"], jnp.tanh(inner.apply(params["inner"], jnp.tanh(inner.apply(params["inner"], x)))))

    return layers.Layer(init, apply, "tied", "tied")


NETWORKS = {
    "unfused relu, layer_norm": lambda: layers.mlp([4, 5, 4, C], "relu", norm="layer_norm", fused=False),
    "fused tanh, rms_norm": lambda: layers.mlp([4, 5, 4, C], "tanh", norm="rms_norm"),
    "prelu": lambda: layers.mlp([4, 5, C], "prelu"),
    "tied": tied,
}


def net(name, dtype):
    model = NETWORKS[name]()
    _, params = model.init(jax.random.key(7), (-1, 4))
    params = jax.tree.map(lambda p: p.astype(dtype) + 0.3 * jax.random.normal(jax.random.key(8), p.shape, dtype),
                          params)  # nonzero biases, slopes and norm offsets
    x = jax.random.normal(jax.random.key(9), (B, 4), dtype)
    return model, params, x


def explicit_ggn_diagonal(model, params, x, y, loss):
    """diag((1/B) Σᵢ Jᵢᵀ Hᵢ Jᵢ) with J from jax.jacrev and H from jax.hessian of the twin's loss."""
    flat, unravel = ravel_pytree(params)
    f = model.apply(params, x)
    jac = jax.jacrev(lambda p: model.apply(unravel(p), x))(flat)
    ell = per_example_loss(loss)
    h = jax.vmap(jax.hessian(lambda fi, yi: ell(fi[None], yi[None])[0]))(f, y)
    return unravel(jnp.einsum("bcp,bcd,bdp->p", jac, h, jac) / x.shape[0])


#: fused and not, both norms, PReLU and a tied weight with the cross-entropy; the squared error and the SVM on
#: the smallest network (l2_loss differs from squared_error only by its Hessian's scale, checked above); float32
#: on one network (against the float64 explicit GGN of the same values)
CASES = [("fused tanh, rms_norm", CE, jnp.float64), ("unfused relu, layer_norm", CE, jnp.float64),
         ("tied", CE, jnp.float64), *[("prelu", loss, jnp.float64) for loss in (SE, SVM)],
         ("fused tanh, rms_norm", CE, jnp.float32)]


def ggn_errors(cases=CASES):
    """ggn_diagonal against the explicit GGN (float64, from the same values) for each case, in one program.

    Returns ``({case: relative error}, {case: explicit diagonal})``.
    """
    models = {(n, d): net(n, d) for n, _, d in cases}

    @jax.jit
    def run(all_params):
        errors, wants = [], []
        for (n, loss, d) in cases:
            model, _, x = models[(n, d)]
            params = all_params[f"{n}/{jnp.dtype(d).name}"]
            y = targets(loss, d)
            got = curvature.ggn_diagonal(model, params, x, y, loss=loss)
            wide = jax.tree.map(lambda v: v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v,
                                (params, x, y))
            wants.append(explicit_ggn_diagonal(model, *wide, loss))
            errors.append(rel(got, wants[-1]))
        return jnp.stack(errors), wants

    errors, wants = run({f"{n}/{jnp.dtype(d).name}": p for (n, d), (_, p, _) in models.items()})
    return dict(zip(cases, np.asarray(errors))), dict(zip(cases, wants))


def test_exact_ggn_diagonal_equals_the_explicit_one(monkeypatch):
    errors, wants = ggn_errors()
    for (name, loss, dtype), err in errors.items():
        assert err <= (1e-10 if dtype == jnp.float64 else 1e-5), (name, loss, dtype, err)
    # planted faults, each caught: a transposed Hessian root, a missed layer (its squares dropped)
    case = ("unfused relu, layer_norm", CE, jnp.float64)
    model, params, x = net(case[0], case[2])

    def planted_error():
        return float(rel(jax.jit(lambda p: curvature.ggn_diagonal(model, p, x, targets(CE)))(params), wants[case]))

    original_root, original_squares = loss_hessians.loss_hessian_sqrt, taps.column_sum_of_squares
    monkeypatch.setattr(ggn_module, "loss_hessian_sqrt", lambda *a: jnp.swapaxes(original_root(*a), 1, 2))
    assert planted_error() > 1e-3
    monkeypatch.undo()
    monkeypatch.setattr(taps, "column_sum_of_squares", lambda site, gs: jax.tree.map(
        jnp.zeros_like, original_squares(site, gs)) if site.kind == "layer_norm" else original_squares(site, gs))
    assert planted_error() > 1e-3


def test_monte_carlo_ggn_diagonal_is_unbiased_and_a_biased_sampler_fails(monkeypatch):
    model, params, x = net("unfused relu, layer_norm", jnp.float64)
    y = targets(CE)
    norm = lambda t: jnp.sqrt(sum(jnp.sum(v * v) for v in jax.tree.leaves(t)))  # noqa: E731

    def errors(keys):
        """The relative error (root mean square over the keys) with 16 and with 1024 samples."""
        exact = curvature.ggn_diagonal(model, params, x, y)
        out = []
        for n in (16, 1024):
            est = jax.vmap(lambda k: curvature.mc_ggn_diagonal(model, params, x, y, k, samples=n))(keys)
            err = jax.vmap(lambda e: norm(jax.tree.map(jnp.subtract, e, exact)))(est) / norm(exact)
            out.append(jnp.sqrt(jnp.mean(err**2)))
        return jnp.stack(out)

    def both(keys):  # the library's sampler, and (traced in the same program) a planted tempered one
        right = errors(keys)
        original = loss_hessians.sample_targets
        with monkeypatch.context() as m:
            m.setattr(loss_hessians, "sample_targets", lambda loss, key, f: original(loss, key, f / 2))
            return right, errors(keys)

    (few, many), biased = jax.jit(both)(jax.random.split(jax.random.key(4), 4))
    assert many < 0.03 and many < few / 4, (few, many)  # 64× the samples: the error falls about 8×
    assert biased[1] > 0.1 and biased[1] > biased[0] / 2, biased  # tempered labels: the error stays


# ------------------------------------------------------------------------------------------ K-FAC's factors
def hand_factors(params, x, key, samples, act="tanh"):
    """K-FAC's factors of the unfused ``Dense → layer_norm → act → Dense`` network, by hand.

    ``A`` and ``G`` from the inputs and the ``jax.vjp`` cotangents of zero probes added to each Dense output of
    a forward pass written out here; the norm's Fisher diagonal from per-example gradients (``vmap(grad)`` of
    the twins' network). The sampled labels are the library's (``sample_targets`` with
    ``jax.random.split(key, samples)[s]``), whose distribution is checked above.
    """
    acts = {"tanh": jnp.tanh, "relu": lambda z: jnp.maximum(z, 0)}

    def forward(params, probes):
        inputs = [x]
        z = x @ params["dense_0"]["w"] + params["dense_0"]["b"] + probes[0]
        zhat = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-5)
        h = acts[act](zhat * params["layer_norm_0"]["scale"] + params["layer_norm_0"]["bias"])
        inputs.append(h)
        return h @ params["dense_1"]["w"] + params["dense_1"]["b"] + probes[1], inputs

    probes = [jnp.zeros((x.shape[0], params[k]["w"].shape[1]), x.dtype) for k in ("dense_0", "dense_1")]
    f, vjp, inputs = jax.vjp(forward, params, probes, has_aux=True)
    twin = layers.mlp([x.shape[1], params["dense_0"]["w"].shape[1], C], act, norm="layer_norm", fused=False,
                      ops=reference)
    ell = lambda p, xi, yi: reference.losses.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        twin.apply(p, xi[None]), yi[None])[0]
    deltas, squares = [[], []], []
    for k in jax.random.split(key, samples):
        labels = curvature.sample_targets(CE, k, f)
        g = jax.nn.softmax(f) - jax.nn.one_hot(labels, f.shape[1], dtype=f.dtype)  # ∂ℓᵢ/∂fᵢ at the sampled label
        for j, d in enumerate(vjp(g)[1]):
            deltas[j].append(d)
        per = jax.vmap(jax.grad(ell), (None, 0, 0))(params, x, labels)["layer_norm_0"]
        squares.append(jax.tree.map(lambda v: v * v, per))
    out = {}
    for i, k in enumerate(("dense_0", "dense_1")):
        a = jnp.concatenate([inputs[i], jnp.ones((x.shape[0], 1), x.dtype)], 1)
        d = jnp.concatenate(deltas[i])
        out[k] = (a.T @ a / x.shape[0], d.T @ d / d.shape[0])
    out["layer_norm_0"] = jax.tree.map(lambda *v: jnp.mean(jnp.concatenate(v), 0), *squares)
    return out


#: compiled once, shared by the factor and the optimizer tests (same shapes)
hand_factors_jit = jax.jit(hand_factors, static_argnums=(3, 4))


def factors_as_tuples(factors):
    return {k: tuple(v) if isinstance(v, tuple) else v for k, v in factors.items()}


def test_kfac_factors_equal_their_formula_from_vjp_cotangents(monkeypatch):
    x = jax.random.normal(jax.random.key(10), (B, 4), jnp.float64)
    key = jax.random.key(11)
    models = [layers.mlp([4, 5, C], "tanh", norm="layer_norm", fused=fused) for fused in (True, False)]
    _, params = models[0].init(jax.random.key(12))
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.2, params)
    want = hand_factors_jit(params, x, key, 2)

    def library(model):
        return jax.jit(lambda p, x, k: factors_as_tuples(curvature.kfac_factors(model, p, x, k, samples=2)))

    for model in models:  # fused and not: the same parameters, the same factors
        got = library(model)(params, x, key)
        assert set(got) == set(want) and float(rel(got, want)) <= 1e-10, float(rel(got, want))
    # planted: G of the mean loss's cotangents (δ/B, so G/B²) and A without the bias's 1 — each caught
    original = taps.second_moments
    for plant in (lambda m: {**m, "g": m["g"] / B**2},
                  lambda m: {**m, "a": m["a"].at[-1].set(0).at[:, -1].set(0)}):
        monkeypatch.setattr(taps, "second_moments", lambda s, d, fn="", plant=plant: (
            plant(original(s, d, fn)) if s.kind == "dense" else original(s, d, fn)))
        assert float(rel(library(models[0])(params, x, key), want)) > 1e-3
        monkeypatch.undo()


# -------------------------------------------------------------------------------------------- the optimizer
def hand_step(factors_list, grads, velocity, inverses, *, damping, lr, momentum, decay, norm_constraint, refresh,
              missed=None, swap_pi=False):
    """One K-FAC step by hand (numpy): averaged factors, damped inverses (if ``refresh``), direction, its norm
    constraint, momentum. Returns ``(update, velocity, inverses, averaged factors, η² Δ·∇)``."""
    weight = sum(decay**t for t in range(len(factors_list)))
    avg = {k: jax.tree.map(lambda *fs: sum(decay**(len(fs) - 1 - t) * f for t, f in enumerate(fs)) / weight,
                           *[f[k] for f in factors_list]) for k in factors_list[0]}
    if refresh:
        inverses = {}
        for k, f in avg.items():
            if isinstance(f, tuple):
                a, g = (np.asarray(m) for m in f)
                pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
                pi = 1 / pi if swap_pi else pi
                inverses[k] = (np.linalg.inv(a + pi * np.sqrt(damping) * np.eye(len(a))),
                               np.linalg.inv(g + np.sqrt(damping) / pi * np.eye(len(g))))
            else:
                inverses[k] = jax.tree.map(lambda d: 1 / (np.asarray(d) + damping), f)
    direction = {}
    for k, g in grads.items():
        if k == missed:
            direction[k] = g
        elif isinstance(inverses[k], tuple):
            v = np.concatenate([g["w"], g["b"][None]], 0)
            p = inverses[k][0] @ v @ inverses[k][1]
            direction[k] = {"w": p[:-1], "b": p[-1]}
        else:
            direction[k] = {n: g[n] * inverses[k][n] for n in g}
    sq = lr**2 * sum(float(np.vdot(d, g)) for d, g in zip(jax.tree.leaves(direction), jax.tree.leaves(grads)))
    if norm_constraint is not None:
        direction = jax.tree.map(lambda d: min(1.0, np.sqrt(norm_constraint / sq)) * d, direction)
    velocity = jax.tree.map(lambda v, d: momentum * v + d, velocity, direction)
    return jax.tree.map(lambda v: -lr * v, velocity), velocity, inverses, avg, sq


def test_two_kfac_updates_equal_the_hand_computed_steps():
    model = layers.mlp([4, 5, C], "tanh", norm="layer_norm")
    _, params = model.init(jax.random.key(13))
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.1, params)
    xs = jax.random.normal(jax.random.key(14), (2, B, 4), jnp.float64)
    ys = jnp.stack([targets(CE), targets(CE)[::-1]])
    keys = jax.random.split(jax.random.key(15), 2)
    # the norm constraint binds at step 1 (η² Δ·∇ ≈ 0.64), not at step 0 (≈ 0.15); step 1 keeps step 0's inverses
    hp = dict(damping=0.05, lr=0.3, momentum=0.8, decay=0.7, norm_constraint=0.3)
    opt = curvature.kfac(model, learning_rate=hp["lr"], damping=hp["damping"], momentum=hp["momentum"],
                         decay=hp["decay"], norm_constraint=hp["norm_constraint"], inverse_update_interval=2,
                         samples=2)
    objective = train.make_objective(model, penalty=None)
    grad = jax.jit(jax.grad(lambda p, x, y: objective(p, x, y)[0]))
    update = jax.jit(lambda g, s, p, x, y, k: opt.update(g, s, p, batch=(x, y), key=k))
    state = opt.init(params)
    step_params = params
    factors_list, velocity, inverses = [], jax.tree.map(np.zeros_like, params), None
    checks, planted, squares = [], [], []
    for t in range(2):
        grads = grad(step_params, xs[t], ys[t])
        updates, state = update(grads, state, step_params, xs[t], ys[t], keys[t])
        factors_list.append(hand_factors_jit(step_params, xs[t], keys[t], 2))
        want, velocity_next, inverses_next, avg, sq = hand_step(factors_list, grads, velocity, inverses,
                                                                refresh=t == 0, **hp)
        squares.append(sq)
        checks += [float(rel(updates, want)), float(rel(factors_as_tuples(state.factors), avg))]
        # planted: a layer left unpreconditioned (a Dense, a norm), π inverted, the constraint left out, and
        # (at step 1) inverses refreshed when they are not due
        faults = [dict(missed="dense_1"), dict(missed="layer_norm_0"), dict(swap_pi=True)] if t == 0 else \
            [dict(refresh=True), dict(norm_constraint=None)]
        for fault in faults:
            wrong = hand_step(factors_list, grads, velocity, inverses, **{"refresh": t == 0, **hp, **fault})[0]
            planted.append(float(rel(updates, wrong)))
        velocity, inverses = velocity_next, inverses_next
        step_params = optax.apply_updates(step_params, updates)
    assert max(checks) <= 1e-10, checks
    assert squares[0] < hp["norm_constraint"] < squares[1], squares
    assert min(planted) > 1e-3, planted
    assert int(state.count) == 2


# ------------------------------------------------------------------------------------------------ training
def test_make_step_passes_the_batch_and_a_key_to_an_optimizer_that_takes_them():
    seen = {}

    def update(grads, state, params=None, *, batch=None, key=None):
        seen.update(batch=batch, key=key)
        return grads, state

    recorder = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    objective = lambda p, x, y, key=None: (jnp.sum(p * x) + jnp.sum(y), None)  # noqa: E731
    step = train.make_step(objective, recorder)
    state = train.TrainState(jnp.ones(2), optax.EmptyState(), jnp.zeros((), jnp.int32))
    x, y = jnp.arange(2.0), jnp.ones(2)
    step(state, x, y, jax.random.key(0))
    assert seen["batch"][0] is x and seen["batch"][1] is y and seen["key"] is not None
    assert not np.array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(jax.random.key(0)))
    step(state, x, y)
    assert seen["key"] is None
    # a plain transformation is called without them (it takes none)
    plain = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda g, s, p=None: (g, s))
    assert float(train.make_step(objective, plain)(state, x, y)[1]) == 1.0 + 2.0


def test_funcnet_train_with_kfac_learns_and_its_state_round_trips_through_the_checkpoint(tmp_path, capsys):
    from funcnet.apps import cli, run
    from funcnet.train.state import restore_state

    os.chdir(tmp_path)
    common = ["train", "--no-progress", "--data", "spiral", "--hidden", "8", "--patience", "100"]
    assert cli.main([*common, "--optimizer", "kfac", "--epochs", "2", "--out", "first"]) == 0
    summary = json.loads((tmp_path / "first" / "history.json").read_text())
    assert summary["config"]["optimizer"] == "kfac" and summary["config"]["lr"] == run.OPTIMIZER_DEFAULTS["kfac"]["lr"]
    assert summary["history"]["train_loss"][1] < summary["history"]["train_loss"][0]
    # the checkpoint holds the whole K-FAC state after epoch 2 (4 steps each), restored into its own template
    cfg = run.RunConfig.from_json(summary["config"])
    model = layers.mlp([2, 8, 2], "relu")
    params = model.init(jax.random.key(0), (-1, 2))[1]
    opt = run.make_optimizer(cfg, model, summary["loss"])
    fresh = train.TrainState.create(params, opt)
    state, _, _ = restore_state(tmp_path / "first" / "checkpoint.safetensors", fresh,
                                train.EarlyStopping.create(params))
    assert isinstance(state.opt_state, curvature.KFACState) and int(state.opt_state.count) == 8
    assert float(rel(state.opt_state.factors, fresh.opt_state.factors)) > 1e-3  # not the initial state
    assert cli.main(["train", "--no-progress", "--resume", "first", "--epochs", "3", "--out", "second"]) == 0
    resumed = json.loads((tmp_path / "second" / "history.json").read_text())
    assert resumed["history"]["epoch"] == [1, 2, 3] and resumed["config"]["optimizer"] == "kfac"
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------- errors
def test_bad_input_gets_one_clear_error(tmp_path, capsys):
    from funcnet.apps import cli

    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--optimizer", "kfac", "--loss", "multiclass_svm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optimizer kfac needs a loss with curvature" in err, err
    assert not (tmp_path / "runs").exists()
    model, params, x = net("prelu", jnp.float64)
    y = targets(CE)
    seq = layers.serial(layers.Dense(3), layers.Flatten(), layers.Dense(C))
    _, seq_params = seq.init(jax.random.key(0), (-1, 2, 4))
    cases = [
        (lambda: curvature.ggn_diagonal(model, params, x, y, loss=lambda f, t: f), ValueError,
         "ggn_diagonal: the loss must be one of softmax_cross_entropy_with_integer_labels"),
        (lambda: curvature.loss_hessian("huber", x, y), ValueError, "loss_hessian: the loss must be one of"),
        (lambda: curvature.sample_targets(SVM, jax.random.key(0), x), ValueError, "sample_targets: the multiclass SVM"),
        (lambda: curvature.loss_hessian(CE, x[None], y), ValueError, "loss_hessian: the model's outputs must have "
                                                                      "shape (batch, outputs)"),
        (lambda: curvature.ggn_diagonal(model, params, x, y[:3]), ValueError, "ggn_diagonal: the outputs have 6 rows"),
        (lambda: curvature.mc_ggn_diagonal(model, params, x, y, jax.random.key(0), samples=0), ValueError,
         "mc_ggn_diagonal: `samples` must be an int >= 1"),
        (lambda: curvature.kfac(model, learning_rate=0.1, loss="multiclass_svm"), ValueError, "kfac: the multiclass_svm loss has a zero"),
        (lambda: curvature.kfac(model, learning_rate=0.1, damping=0.0), ValueError, "kfac: damping must be finite and in (0, inf]"),
        (lambda: curvature.kfac(model, learning_rate=0.1, momentum=1.0), ValueError, "kfac: momentum must be finite and in [0, 1)"),
        (lambda: curvature.kfac(model, learning_rate=0.1, inverse_update_interval=0), ValueError, "kfac: `inverse_update_interval`"),
        (lambda: curvature.kfac(model, learning_rate=0.1).update(params, {}, params), TypeError,
         "kfac: update needs the parameters and the batch"),
        (lambda: curvature.kfac_factors(seq, seq_params, jnp.ones((B, 2, 4)), jax.random.key(0)), ValueError,
         "kfac_factors: the Dense layer at 'dense_0' sees 2 positions per example"),
        (lambda: curvature.kfac_factors(tied(), net("tied", jnp.float64)[1], x, jax.random.key(0)), ValueError,
         "kfac_factors: the parameters at 'inner' are used by 2 layers"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as info:
            jax.eval_shape(call)  # at trace time: nothing is computed
        assert message in str(info.value), (message, str(info.value))
