"""The main job of ``funcnet train`` written by hand in plain JAX + Optax: the baseline of docs/benchmarks.md.

The same work as ``funcnet train`` with its defaults: the digits (1,257 training, 270 validation and 270 test
examples), a 64-256-10 ReLU network, Adam 1e-3, batch 32, L2 penalty 1e-4, 30 epochs, one ``lax.scan`` per
epoch, validation loss and accuracy after each epoch, the test accuracy at the end; no plot, no checkpoint,
no early stopping. Time it as a whole process (median of several runs), e.g.::

    /usr/bin/time -f %e python benchmarks/main_job_plain_jax.py            # digits from scikit-learn
    /usr/bin/time -f %e python benchmarks/main_job_plain_jax.py --bundled  # funcnet's copy, read with numpy

Prints the test accuracy, so that a run that learned nothing shows.
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--bundled", action="store_true", help="read funcnet/_data/digits.npz instead of scikit-learn")
args = parser.parse_args()
if args.bundled:
    with np.load(pathlib.Path(__file__).parent.parent / "funcnet" / "_data" / "digits.npz") as f:
        x, y = f["images"].reshape(-1, 64) / 16.0, f["labels"].astype(np.int32)
else:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data / 16.0, digits.target.astype(np.int32)

order = np.random.default_rng(0).permutation(len(x))
x, y = x[order].astype(np.float32), y[order]
x -= x[:1257].mean(axis=0)
train, val, test = (x[:1257], y[:1257]), (x[1257:1527], y[1257:1527]), (x[1527:], y[1527:])


def init(key, sizes=(64, 256, 10)):
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"w": jax.nn.initializers.glorot_uniform()(k, (n_in, n_out)), "b": jnp.zeros(n_out)})
    return params


def apply(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss(params, x, y):
    data = optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()
    return data + 1e-4 * sum(jnp.sum(layer["w"] ** 2) for layer in params) / 2


optimizer = optax.adam(1e-3)


@jax.jit
def epoch(params, opt_state, key, x, y):
    steps = x.shape[0] // 32
    batches = jax.random.permutation(key, x.shape[0])[: steps * 32].reshape(steps, 32)

    def step(carry, idx):
        params, opt_state = carry
        grads = jax.grad(loss)(params, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
    logits = apply(params, val[0])
    return params, opt_state, optax.softmax_cross_entropy_with_integer_labels(logits, val[1]).mean(), \
        jnp.mean(jnp.argmax(logits, -1) == val[1])


key = jax.random.key(0)
params = init(key)
opt_state = optimizer.init(params)
for e in range(30):
    params, opt_state, val_loss, val_acc = epoch(params, opt_state, jax.random.fold_in(key, e), *train)
    float(val_loss)  # the host sees each epoch's metrics, as a training loop with logging does
print(f"test accuracy {float(jnp.mean(jnp.argmax(apply(params, test[0]), -1) == test[1])):.4f}")
