"""Embedding, PositionalEmbedding, MultiHeadAttention and TransformerBlock: names, shapes, errors, and manual ==
autodiff. The embedding gate's scatter-add and the causal mask each get a checker that is shown to fail on a planted
fault (a scatter that overwrites, a mask one position too wide)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import gates
from funcnet.gradcheck import check_op
from funcnet.layers import Embedding, MultiHeadAttention, ParameterError, PositionalEmbedding, TransformerBlock, serial
from funcnet.ops import gates as gate_ops
from funcnet.registry import by_name

B, T, D, V = 2, 5, 8, 7
IDS = np.array([[1, 3, 3, 0, 6], [3, 3, 2, 3, 5]])  # repeats (3 five times), and a row never read (4)


def _stack(ops, causal=True):
    """The layers under test, built on ``ops``: each alone, and a small causal language-model trunk."""
    return {
        "embedding": (Embedding(V, D, ops=ops), (-1, T), IDS),
        "attention": (MultiHeadAttention(2, ops=ops), (-1, T, D), None),
        "causal attention, head_dim 3": (MultiHeadAttention(4, 3, causal=True, ops=ops), (-1, T, D), None),
        "block layer_norm": (TransformerBlock(2, 2, causal=causal, ops=ops), (-1, T, D), None),
        "block rms_norm relu": (TransformerBlock(4, 3, norm="rms_norm", activation="relu", ops=ops), (-1, T, D), None),
        "trunk": (serial(Embedding(V, D, ops=ops), PositionalEmbedding(6, ops=ops), TransformerBlock(2, causal=causal,
                                                                                                    ops=ops)),
                  (-1, T), IDS),
    }


def test_shapes_and_parameter_names():
    key = jax.random.key(0)
    shape, p = Embedding(V, D).init(key, (-1, T))
    assert shape == (-1, T, D) and jax.tree.map(jnp.shape, p) == {"table": (V, D)}
    assert abs(float(jnp.std(Embedding(500, 64).init(key, (-1,))[1]["table"])) - 1 / 8) < 0.01  # variance 1/features
    shape, p = PositionalEmbedding(9).init(key, (-1, T, D))
    assert shape == (-1, T, D) and jax.tree.map(jnp.shape, p) == {"table": (9, D)}
    shape, p = MultiHeadAttention(4, 3).init(key, (-1, T, D))
    assert shape == (-1, T, D)
    assert jax.tree.map(jnp.shape, p) == {"query": {"w": (D, 12), "b": (12,)}, "key": {"w": (D, 12)},
                                          "value": {"w": (D, 12), "b": (12,)}, "out": {"w": (12, D), "b": (D,)}}
    shape, p = TransformerBlock(2, 3, norm="rms_norm").init(key, (-1, T, D))
    assert shape == (-1, T, D)
    assert set(p) == {"attention_norm", "attention", "mlp_norm", "mlp_in", "mlp_out"}
    assert jax.tree.map(jnp.shape, p["mlp_in"]) == {"w": (D, 3 * D), "b": (3 * D,)}
    assert jax.tree.map(jnp.shape, p["mlp_out"]) == {"w": (3 * D, D), "b": (D,)}
    assert set(p["attention_norm"]) == {"scale"}  # rms_norm has no bias
    net = serial(Embedding(V, D), PositionalEmbedding(T), TransformerBlock(2), TransformerBlock(2))
    shape, p = net.init(key, (-1, T))
    assert shape == (-1, T, D)
    assert set(p) == {"embedding_0", "positional_embedding_0", "transformer_block_0", "transformer_block_1"}
    assert net.apply(p, IDS).shape == (B, T, D)


def _cast(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _disagreements(only=None) -> list[str]:
    """Each layer (of ``only``, default all) built on the hand-written rules and on the autodiff twins, from the
    same parameters: where the values, the gradients (parameters and float inputs) or the tangents (float64)
    differ by more than 1e-10 relative to the largest entry of the same quantity. One compiled program."""
    manual, twin = _stack(funcnet), _stack(funcnet.reference)
    names = list(manual) if only is None else list(only)
    rng = np.random.default_rng(0)
    inputs, params = {}, {}
    for i, name in enumerate(names):
        layer, shape, ids = manual[name]
        params[name] = _cast(layer.init(jax.random.key(i), shape)[1])
        inputs[name] = ids if ids is not None else jnp.asarray(rng.standard_normal((B, T, D)))
    cotangents = {name: jnp.asarray(rng.standard_normal((B, T, D))) for name in names}
    directions = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)

    def run(stack, params, inputs):
        out = {}
        for name in names:
            layer, _, ids = stack[name]
            x = inputs[name]
            if ids is None:
                y, pullback = jax.vjp(layer.apply, params[name], x)
            else:  # integer ids get no gradient
                y, pullback = jax.vjp(lambda p: layer.apply(p, x), params[name])
            tangent = jax.jvp(lambda p: layer.apply(p, x), (params[name],), (directions[name],))[1]
            out[name] = (y, pullback(cotangents[name]), tangent)
        return out

    got, want = jax.jit(lambda p, x: (run(manual, p, x), run(twin, p, x)))(params, inputs)
    failures = []
    for name in names:
        for what, a, b in zip(("value", "gradient", "tangent"), got[name], want[name]):
            la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
            assert len(la) == len(lb) > 0
            # relative to the largest entry of the whole quantity (a leaf's gradient may be small next to others')
            scale = max(float(np.max(np.abs(y))) for y in lb)
            assert scale > 0, (name, what)
            for (path, x), y in zip(la, lb):
                err = float(np.max(np.abs(x - y))) / scale
                if not err <= 1e-10:
                    failures.append(f"{name} {what} {jax.tree_util.keystr(path)}: relative error {err:.2e}")
    return failures


def test_manual_equals_reference_values_gradients_and_tangents():
    assert _disagreements() == []


# ------------------------------------------------------------------ the embedding gate's reverse rule
def _embedding_failures() -> list[str]:
    """What is wrong with ``gates.embedding``'s rules: against counts written out by hand, and check_op (autodiff
    of the twin and finite differences) on ids that repeat."""
    table = jnp.asarray(np.arange(V * 3, dtype=np.float64).reshape(V, 3))
    g = jnp.asarray(np.random.default_rng(1).standard_normal(IDS.shape + (3,)))
    dtable = jax.jit(lambda t: jax.vjp(lambda t: gates.embedding(t, IDS), t)[1](g)[0])(table)
    want = np.zeros((V, 3))
    for b in range(IDS.shape[0]):  # the scatter-add by hand: every position adds its gradient to its row
        for t in range(IDS.shape[1]):
            want[IDS[b, t]] += np.asarray(g[b, t])
    failures = []
    if not np.allclose(dtable, want, rtol=1e-12, atol=1e-12):
        failures.append(f"the gradient of the table is not the scatter-add: rows {np.argwhere(~np.isclose(dtable, want))[:, 0]}")
    tangent = jax.jvp(lambda t: gates.embedding(t, IDS), (table,), (2 * table,))[1]
    if not np.array_equal(tangent, 2 * np.asarray(table)[IDS]):
        failures.append("the tangent is not the gather of the tangent table")
    result = check_op(by_name("embedding"), quick=True, second_order=False)
    if not result.passed:
        failures.append(f"check_op: {result.failures}")
    return failures


def test_the_embedding_rules_are_a_scatter_add_and_a_gather():
    assert _embedding_failures() == []


def test_a_scatter_that_overwrites_is_caught(monkeypatch):
    """The planted fault: ``.set`` instead of ``.add`` (the last of the repeated ids wins)."""
    rule = gate_ops._EMBEDDING

    def overwriting(ids, g, rows):
        d = jnp.zeros((rows, g.shape[-1]), g.dtype).at[ids.reshape(-1)].set(g.reshape(-1, g.shape[-1]), mode="drop")
        return d, None

    monkeypatch.setattr(rule, "vjp", overwriting)
    failures = _embedding_failures()
    assert any("scatter-add" in f for f in failures) and any("check_op" in f for f in failures), failures
    # and the layers' comparison: the embedding's and the trunk's table gradients, nothing else
    failures = _disagreements(["embedding", "trunk", "attention"])
    assert failures and all(" gradient " in f and "['table']" in f for f in failures), failures
    assert any(f.startswith("embedding ") for f in failures) and any(f.startswith("trunk ") for f in failures)


def test_out_of_range_ids_under_jit_give_nan_rows_and_no_gradient():
    table = jnp.asarray(np.arange(6.0).reshape(3, 2))
    ids = jnp.asarray([0, 3, -1, 2, 2])

    def both(t, i):
        y, pullback = jax.vjp(lambda t: gates.embedding(t, i), t)
        return y, pullback(jnp.ones_like(y))[0]

    y, dt = jax.jit(both)(table, ids)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()  # -1 does not wrap around to the last row
    np.testing.assert_array_equal(np.asarray(y)[[0, 3, 4]], [[0, 1], [4, 5], [4, 5]])
    np.testing.assert_array_equal(dt, [[1, 1], [0, 0], [2, 2]])  # only the ids in range send gradient
    with pytest.raises(ValueError, match=r"funcnet.gates.embedding: ids must lie in \[0, 3\).*from -1 to 3"):
        gates.embedding(table, ids)  # concrete ids are checked


# ------------------------------------------------------------------ causal attention
def _future_leaks(layer, params, x) -> list[str]:
    """Positions whose output depends on a later input: the Jacobian ∂y[t]/∂x[s] for s > t, through the manual
    reverse rules (jacrev) and forward rules (jacfwd), must be exactly zero; and an earlier one must not be."""
    f = lambda x: layer.apply(params, x[None])[0]  # noqa: E731  (one example: the Jacobian is (T, D, T, D))
    leaks = []
    for mode, jac in (("rev", jax.jacrev(f)), ("fwd", jax.jacfwd(f))):
        j = np.abs(np.asarray(jax.jit(jac)(x[0]))).max(axis=(1, 3))  # (T, T): the largest ∂y[t]/∂x[s]
        future = [(t, s) for t in range(j.shape[0]) for s in range(t + 1, j.shape[1]) if j[t, s] != 0]
        if future:
            leaks.append(f"{mode}: y[t] depends on x[s] for (t, s) in {future}")
        if not all(j[t, s] > 0 for t in range(j.shape[0]) for s in range(t + 1)):
            leaks.append(f"{mode}: some y[t] does not depend on an earlier x[s]")
    return leaks


def _causal_layers(ops):
    return {"attention": MultiHeadAttention(2, causal=True, ops=ops),
            "block": TransformerBlock(2, 2, causal=True, ops=ops)}


def test_causal_layers_do_not_see_the_future():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, T, D)))
    for name, layer in _causal_layers(funcnet).items():
        _, params = layer.init(jax.random.key(0), (-1, T, D))
        assert _future_leaks(layer, _cast(params), x) == [], name
    full = MultiHeadAttention(2)
    assert _future_leaks(full, _cast(full.init(jax.random.key(0), (-1, T, D))[1]), x)  # the check can fail


def test_a_mask_one_position_too_wide_is_caught():
    """The planted fault: a causal mask that also lets position t see t + 1."""
    def off_by_one(query, key, value, *, is_causal=False):
        t = np.arange(query.shape[1])
        mask = jnp.asarray(t[:, None] + 1 >= t[None, :]) if is_causal else None
        return funcnet.nn.dot_product_attention(query, key, value, mask=mask)

    planted = types.SimpleNamespace(gates=funcnet.gates, losses=funcnet.losses,
                                    nn=types.SimpleNamespace(dot_product_attention=off_by_one,
                                                             layer_norm=funcnet.nn.layer_norm))
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, T, D)))
    for name, layer in _causal_layers(planted).items():
        _, params = layer.init(jax.random.key(0), (-1, T, D))
        leaks = _future_leaks(layer, _cast(params), x)
        assert leaks and all(f"({t}, {t + 1})" in " ".join(leaks) for t in range(T - 1)), (name, leaks)


# ------------------------------------------------------------------ dropout and errors
def test_dropout_only_in_training_with_a_key():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, D)))
    for layer, plain in ((MultiHeadAttention(2, dropout=0.5), MultiHeadAttention(2)),
                         (TransformerBlock(2, dropout=0.5), TransformerBlock(2))):
        _, p = layer.init(jax.random.key(0), (-1, T, D))
        np.testing.assert_array_equal(layer.apply(p, x), plain.apply(p, x))  # no dropout outside training
        a = layer.apply(p, x, key=jax.random.key(1), train=True)
        b = layer.apply(p, x, key=jax.random.key(2), train=True)
        assert not np.allclose(a, b) and not np.allclose(a, plain.apply(p, x))
        with pytest.raises(ValueError, match=r"\(2, dropout=0.5.*needs a PRNG key"):
            layer.apply(p, x, train=True)


def test_errors_name_the_layer_and_the_offending_input():
    key = jax.random.key(0)
    emb = Embedding(V, D)
    _, p = emb.init(key, (-1, T))
    with pytest.raises(TypeError, match=r"Embedding\(7, 8\): expected integer token ids, got float32\[2, 5\]"):
        jax.jit(emb.apply)(p, jnp.ones((2, 5), jnp.float32))  # at trace time
    with pytest.raises(ValueError, match=r"Embedding\(7, 8\): ids must lie in \[0, 7\), got values from 0 to 7"):
        emb.apply(p, np.array([[0, 7]]))
    with pytest.raises(ValueError, match="Embedding: vocab_size must be a positive int, got 0"):
        Embedding(0, 4)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(3\): 8 features do not split into 3 heads"):
        MultiHeadAttention(3).init(key, (-1, T, D))
    mha = MultiHeadAttention(2)
    _, p = mha.init(key, (-1, T, D))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): expected inputs of shape \(batch, length, "
                                         r"features\), got shape \(5, 8\)"):
        mha.apply(p, jnp.ones((T, D)))
    with pytest.raises(ParameterError, match=r"params\['query'\]: MultiHeadAttention\(2\): parameter 'w' has shape "
                                             r"\(8, 8\), expected \(6, 8\)"):
        mha.apply(p, jnp.ones((B, T, 6)))
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(4\): got sequences of length 5, longer than "
                                         "max_length 4"):
        PositionalEmbedding(4).apply({"table": jnp.ones((4, D))}, jnp.ones((B, T, D)))
    with pytest.raises(ValueError, match="TransformerBlock: unknown norm 'batch_norm'"):
        TransformerBlock(2, norm="batch_norm")
    net = serial(Embedding(V, D), TransformerBlock(2))
    _, p = net.init(key, (-1, T))
    del p["transformer_block_0"]["attention"]["out"]
    with pytest.raises(ParameterError, match=r"params\['transformer_block_0'\]\['attention'\]: MultiHeadAttention\(2\): "
                                             r"missing parameter entry 'out'"):
        net.apply(p, IDS)
