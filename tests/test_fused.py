"""The fused classifier head ``losses.linear_softmax_cross_entropy``: memory, blocks, planted faults.

The registry-wide tests (values, both rules against the unfused twin and finite
differences, dtypes, transformations, shard_map) cover it like every op; here:
XLA's temporary memory at the size of the issue (deterministic, compiled, not
run), row masks, half precision, and planted faults that each check catches.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import losses
from funcnet import reference as ref
from funcnet.ops import fused_head

MiB = 2**20


def _temp_bytes(f, *shapes):
    args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_temporary_memory_is_under_five_percent_of_the_unfused_head():
    """N = 8192, D = 1024, V = 32768, float32, default blocks (1024 rows × 4096 classes)."""
    n, d, v = 8192, 1024, 32768
    shapes = (((n, d), jnp.float32), ((d, v), jnp.float32), ((v,), jnp.float32), ((n,), jnp.int32))
    ours = _temp_bytes(lambda x, w, b, y: losses.linear_softmax_cross_entropy(x, w, y, b).mean(), *shapes)
    unfused = _temp_bytes(lambda x, w, b, y: optax.losses.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean(),
                          *shapes)
    assert unfused >= 2048 * MiB  # the N × V logits, twice
    assert ours <= 0.05 * unfused, f"{ours / MiB:.1f} MiB fused vs {unfused / MiB:.1f} MiB unfused"


def _problem(seed=0, n=11, d=3, v=10):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=(d, v))),
            jnp.asarray(rng.integers(0, v, n)), jnp.asarray(rng.normal(size=v)))


def _disagreement(fn=losses.linear_softmax_cross_entropy, **kw):
    """Largest difference from the unfused twin in value, reverse rule and forward rule (float64)."""
    x, w, y, b = _problem()
    f = lambda x, w, b: fn(x, w, y, b, block_rows=4, block_classes=3, **kw)  # noqa: E731  (11 rows, 10 classes)
    t = lambda x, w, b: ref.losses.linear_softmax_cross_entropy(x, w, y, b, **kw)  # noqa: E731
    ct = jnp.linspace(-1.0, 2.0, x.shape[0])
    u = tuple(jnp.ones_like(a) * 0.3 for a in (x, w, b))
    gaps = [jnp.max(jnp.abs(f(x, w, b) - t(x, w, b)))]
    gaps += [jnp.max(jnp.abs(a - c)) for a, c in zip(jax.vjp(f, x, w, b)[1](ct), jax.vjp(t, x, w, b)[1](ct))]
    gaps += [jnp.max(jnp.abs(jax.jvp(f, (x, w, b), u)[1] - jax.jvp(t, (x, w, b), u)[1]))]
    return float(max(gaps))


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.2}, {"z_loss": 1e-2},
                                {"where": jnp.arange(11) % 3 != 0}])
def test_blocks_that_do_not_divide_the_sizes_agree_with_the_unfused_head(kw):
    assert _disagreement(**kw) < 1e-10


def test_a_planted_wrong_block_boundary_is_caught(monkeypatch):
    # the last block is shifted to stay inside the array; forgetting to mask the overlap counts classes twice
    monkeypatch.setattr(fused_head, "_block", lambda start, size, total: (jnp.minimum(start, total - size),
                                                                     jnp.ones(size, bool)))
    assert _disagreement() > 1e-3


def test_a_planted_reverse_rule_without_the_log_sum_exp_is_caught(monkeypatch):
    real = fused_head._LINEAR_CE.vjp

    def without_lse(res, g, **static):
        x, w, b, labels, where, lse = res
        return real((x, w, b, labels, where, jnp.zeros_like(lse)), g, **static)

    monkeypatch.setattr(fused_head._LINEAR_CE, "vjp", without_lse)
    assert _disagreement() > 1e-3


def test_masked_rows_give_zero_and_no_gradient():
    x, w, y, b = _problem()
    keep = jnp.arange(11) < 5
    f = lambda x, w, b: losses.linear_softmax_cross_entropy(x, w, y, b, where=keep, block_rows=4, block_classes=3)  # noqa
    assert bool(jnp.all(f(x, w, b)[5:] == 0))
    gx = jax.grad(lambda x: f(x, w, b).sum())(x)
    assert bool(jnp.all(gx[5:] == 0)) and bool(jnp.any(gx[:5] != 0))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    x, w, y, b = (a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in _problem(n=64, d=16, v=50))
    out = losses.linear_softmax_cross_entropy(x, w, y, b, block_rows=16, block_classes=8)
    want = ref.losses.linear_softmax_cross_entropy(*(a.astype(jnp.float32) if a.dtype == dtype else a
                                                     for a in (x, w, y, b)))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want), rtol=2e-2, atol=2e-2)
    gw = jax.grad(lambda w: losses.linear_softmax_cross_entropy(x, w, y, b, block_rows=16, block_classes=8).sum())(w)
    assert gw.dtype == dtype and bool(jnp.all(jnp.isfinite(gw.astype(jnp.float32))))


@pytest.mark.parametrize("kw, error, fragment", [
    ({"block_rows": 0}, ValueError, "block_rows"), ({"block_classes": 2.5}, TypeError, "block_classes"),
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing"), ({"z_loss": -1.0}, ValueError, "z_loss"),
])
def test_bad_options_are_clear_errors(kw, error, fragment):
    x, w, y, b = _problem()
    with pytest.raises(error, match=fragment):
        losses.linear_softmax_cross_entropy(x, w, y, b, **kw)


def test_bad_shapes_and_labels_are_clear_errors():
    x, w, y, b = _problem()
    with pytest.raises(ValueError, match=r"linear_softmax_cross_entropy.*\(11, 3\).*\(4, 10\)"):
        losses.linear_softmax_cross_entropy(x, jnp.ones((4, 10)), y, b)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        losses.linear_softmax_cross_entropy(x, w, y.at[0].set(10), b)


@pytest.mark.parametrize("block_classes", [1, 2, 4096])
def test_a_class_masked_by_a_minus_inf_bias_and_huge_logits_stay_finite(block_classes):
    """A bias of -inf on one class (masking it) gave NaN (0 · inf in the unused smoothing term; exp(-inf - -inf)
    in a block of masked classes only), and a logit of 1e30 NaN (z_loss · lse² overflowing at z_loss = 0);
    now they equal the unfused loss, with finite gradients."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    b = jnp.array([0.0, -jnp.inf, 0.1, 0.2, 0.0], jnp.float32)
    y = jnp.array([0, 2, 3, 4, 0, 2])

    def fused(x, w, b):
        return losses.linear_softmax_cross_entropy(x, w, y, b, block_classes=block_classes).mean()

    value, grads = jax.jit(jax.value_and_grad(fused, (0, 1)))(x, w, b)
    np.testing.assert_allclose(value, optax.losses.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean(),
                               rtol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    huge = x.at[0, 0].set(1e30)
    np.testing.assert_allclose(losses.linear_softmax_cross_entropy(huge, w, y, jnp.zeros(5), block_classes=block_classes),
                               optax.losses.softmax_cross_entropy_with_integer_labels(huge @ w, y), rtol=1e-6)
