"""Autodiff twins of :mod:`funcnet.nn`: the same forward in plain ``jax.numpy``.

Where ``jax.nn`` has the function, the twin is written out here anyway (not
re-exported), because several ``jax.nn`` activations carry custom derivative
rules of their own; a twin must be differentiated by JAX's primitives alone.
"""

import math

import jax.numpy as jnp
from jax import lax

__all__ = [
    "identity", "sigmoid", "tanh", "hard_tanh", "relu", "leaky_relu", "elu", "prelu",
    "softplus", "silu", "gelu", "softmax", "log_softmax", "relu6", "hard_silu", "log_sigmoid",
    "soft_sign", "sparse_plus", "sparse_sigmoid", "selu", "celu", "mish", "log1mexp", "hard_swish", "swish",
    "hard_sigmoid", "squareplus", "glu", "logsumexp", "logmeanexp", "standardize", "layer_norm", "rms_norm",
    "dot_product_attention",
]


def identity(x):
    return x


def sigmoid(x):
    return lax.logistic(x)


def tanh(x):
    return jnp.tanh(x)


def hard_tanh(x):
    return jnp.where(x > 1, 1.0, jnp.where(x < -1, -1.0, x)).astype(x.dtype)


def relu(x):
    # jnp.maximum would split the gradient at 0; jax.nn.relu's convention is 0 there.
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def _nonnegative(x):  # x >= 0 with -0.0 negative, as funcnet.nn.leaky_relu's convention
    return (x > 0) | ((x == 0) & ~jnp.signbit(x))


def leaky_relu(x, negative_slope=1e-2):
    return jnp.where(_nonnegative(x), x, negative_slope * x)


def elu(x, alpha=1.0):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0.0, x))).astype(jnp.result_type(x, alpha))


def prelu(x, alpha):
    return jnp.where(_nonnegative(x), x, alpha * x)


def softplus(x):
    return jnp.logaddexp(x, 0.0).astype(x.dtype)


def silu(x):
    return x * lax.logistic(x)


def gelu(x, approximate=True):
    if approximate:
        c = math.sqrt(2 / math.pi)
        return 0.5 * x * (1 + jnp.tanh(c * (x + 0.044715 * x**3)))
    return 0.5 * x * lax.erfc(-x / math.sqrt(2))


def _masked(x, axis, where):
    """``x`` with masked entries at -inf, shifted by its (masked) maximum, as jax.nn does."""
    x_max = jnp.max(x, axis=axis, where=where, initial=-jnp.inf, keepdims=True)
    safe = x if where is None else jnp.where(where, x, -jnp.inf)
    return safe - lax.stop_gradient(x_max)


def softmax(x, axis=-1, where=None):
    e = jnp.exp(_masked(x, axis, where))
    y = e / jnp.sum(e, axis=axis, where=where, keepdims=True)
    return y if where is None else jnp.where(where, y, 0.0)


def log_softmax(x, axis=-1, where=None):
    z = _masked(x, axis, where)
    y = z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, where=where, keepdims=True))
    return y if where is None else jnp.where(where, y, -jnp.inf)


def relu6(x):
    # jnp.clip would split the gradient at the corners; jax.nn.relu6's convention is 0 there
    return jnp.where((x > 0) & (x < 6), x, jnp.where(x >= 6, 6.0, 0.0)).astype(x.dtype)


def hard_silu(x):
    return x * relu6(x + 3) / 6


def log_sigmoid(x):
    return -jnp.logaddexp(-x, 0)


def soft_sign(x):
    return x / (jnp.abs(x) + 1)


def sparse_plus(x):
    return jnp.where(x <= -1, 0.0, jnp.where(x >= 1, x, (x + 1) ** 2 / 4))


def sparse_sigmoid(x):
    return 0.5 * jnp.clip(x + 1, 0, 2)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    # where, not jnp.minimum, inside: minimum would split the gradient at 0 (jax.nn.selu's convention is λα there)
    return _SELU_SCALE * jnp.where(x > 0, x, _SELU_ALPHA * jnp.expm1(jnp.where(x > 0, 0.0, x)))


def celu(x, alpha=1.0):
    return jnp.maximum(x, 0) + alpha * jnp.expm1(jnp.minimum(x, 0) / alpha)


def mish(x):
    return x * jnp.tanh(jnp.logaddexp(x, 0))


def log1mexp(x):
    # the branch not taken is evaluated where it is finite, so that its zero cotangent stays zero (not 0 · inf)
    c = math.log(2.0)
    return jnp.where(x < c, jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-jnp.where(x < c, c, x))))


hard_swish = hard_silu
swish = silu


def hard_sigmoid(x):
    return relu6(x + 3.0) / 6.0


def squareplus(x, b=4):
    # the stable form: b / (2(r - x)) for x < 0 (double where: no 0/0 in the untaken branch)
    r = jnp.sqrt(x * x + b)
    negative = x < 0
    return jnp.where(negative, b / (2 * jnp.where(negative, r - x, 1.0)), (x + r) / 2)


def glu(x, axis=-1):
    a, b = jnp.split(x, 2, axis=axis)
    return a * sigmoid(b)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    keep = jnp.ones(jnp.shape(a), bool) if where is None else where
    m = jnp.max(jnp.where(keep if b is None else keep & (b != 0), a, -jnp.inf), axis=axis, keepdims=True)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    e = jnp.exp(jnp.where(keep, a, -jnp.inf) - m)
    total = jnp.sum(e if b is None else e * b, axis=axis, keepdims=True)
    out = jnp.log(jnp.abs(total)) + m
    sign = jnp.sign(total)
    if not keepdims:
        axes = tuple(range(jnp.ndim(a))) if axis is None else axis
        out, sign = jnp.squeeze(out, axes), jnp.squeeze(sign, axes)
    if return_sign:
        return out, sign
    return out if b is None else jnp.where(sign < 0, jnp.nan, out)


def logmeanexp(x, axis=None, where=None, keepdims=False):
    count = jnp.sum(jnp.ones(jnp.shape(x), x.dtype) if where is None else where, axis=axis, keepdims=keepdims)
    return logsumexp(x, axis=axis, keepdims=keepdims, where=where) - jnp.log(count)


def standardize(x, axis=-1, mean=None, variance=None, epsilon=1e-05, where=None, *, algorithm="fast"):
    if mean is None:
        mean = jnp.mean(x, axis, keepdims=True, where=where)
    if variance is None:
        if algorithm == "stable":
            variance = jnp.mean(jnp.square(x - mean), axis, keepdims=True, where=where)
        else:
            variance = jnp.clip(jnp.mean(jnp.square(x), axis, keepdims=True, where=where) - jnp.square(mean), 0)
    return (x - mean) * lax.rsqrt(variance + epsilon)


def layer_norm(x, scale=None, bias=None, *, epsilon=1e-5):
    mean = jnp.mean(x, -1, keepdims=True)
    y = (x - mean) * lax.rsqrt(jnp.mean(jnp.square(x - mean), -1, keepdims=True) + epsilon)
    if scale is not None:
        y = y * scale
    return y if bias is None else y + bias


def rms_norm(x, scale=None, *, epsilon=1e-6):
    y = x * lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + epsilon)
    return y if scale is None else y * scale


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                          implementation=None, return_residual=False, block_q=None, block_kv=None):
    """softmax(q kᵀ·scale + bias, masked) v, unfused: the whole T × S matrix at once."""
    def four(x):
        return None if x is None else jnp.reshape(x, (1,) * (4 - jnp.ndim(x)) + jnp.shape(x))

    out_shape = jnp.shape(query)
    q, k, v, bias, mask = four(query), four(key), four(value), four(bias), four(mask)
    _, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    wide = jnp.promote_types(q.dtype, jnp.float32)
    k, v = jnp.repeat(k, N // K, axis=2), jnp.repeat(v, N // K, axis=2)  # head n reads key/value head n // G
    logits = jnp.einsum("btnh,bsnh->bnts", q.astype(wide), k.astype(wide))
    logits = logits * (1.0 / math.sqrt(H) if scale is None else scale)
    if bias is not None:
        logits = logits + bias.astype(wide)
    t, s = jnp.arange(T)[:, None], jnp.arange(S)[None, :]
    keep = jnp.ones(logits.shape, bool)
    if mask is not None:
        keep = keep & mask
    if is_causal:
        keep = keep & (t >= s)
    if local_window_size is not None:
        left, right = (local_window_size,) * 2 if isinstance(local_window_size, int) else local_window_size
        keep = keep & (t <= s + left) & (t >= s - right)
    if query_seq_lengths is not None:
        keep = keep & (t < jnp.asarray(query_seq_lengths)[:, None, None, None])
    if key_value_seq_lengths is not None:
        keep = keep & (s < jnp.asarray(key_value_seq_lengths)[:, None, None, None])
    logits = jnp.where(keep, logits, -0.7 * float(jnp.finfo(jnp.float32).max))
    m = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    e = jnp.exp(logits - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    out = jnp.einsum("bnts,bsnh->btnh", e / total, v.astype(wide))
    if query_seq_lengths is not None:
        out = jnp.where(t[None, :, :, None] < jnp.asarray(query_seq_lengths)[:, None, None, None], out, 0.0)
    out = out.astype(q.dtype).reshape(out_shape)
    if return_residual:
        lse = jnp.transpose((m + jnp.log(total))[..., 0], (0, 2, 1)).astype(k.dtype)
        return out, lax.stop_gradient(lse.reshape(out_shape[:-1]))
    return out
