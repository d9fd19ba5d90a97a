"""Character language model: a small causal transformer learns to write like Macbeth.

The model reads 64 characters and predicts each next one: token and position
embeddings (``layers.Embedding``, ``layers.PositionalEmbedding``), two pre-norm
``layers.TransformerBlock``\\ s (causal multi-head attention through the streaming
``nn.dot_product_attention``, a gelu MLP), a final LayerNorm, and the fused
classifier head ``losses.linear_softmax_cross_entropy`` (``features @ w + b``
and the cross-entropy as one op, the logits never held). Every derivative is a
hand-written rule. It trains with funcnet's training pieces (``train.make_step``,
``train.make_epoch``: one compiled program per epoch), since the head's weights
are an argument of the loss, which ``train.fit``'s ``loss(outputs, targets)``
does not take.

The text is Shakespeare's *Macbeth* (public domain; ``examples/data/README.md``):
the first 90% trains, the last 10% validates. The script prints the loss
(nats per character) per epoch and samples of generated text.

    python examples/char_lm.py                     # about a minute on a 2-core CPU
    python examples/char_lm.py --epochs 30 --blocks 4
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import gates, init, layers, losses, train

TEXT = pathlib.Path(__file__).resolve().parent / "data" / "macbeth.txt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12, help="passes over the training text (default 12)")
    p.add_argument("--context", type=int, default=64, help="characters the model reads (default 64)")
    p.add_argument("--width", type=int, default=64, help="features per character (default 64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads per block (default 4)")
    p.add_argument("--blocks", type=int, default=2, help="transformer blocks (default 2)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate in the blocks (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's peak learning rate (default 3e-3)")
    p.add_argument("--chars", type=int, default=None, help="train on the first CHARS characters only (default: all)")
    p.add_argument("--sample-chars", type=int, default=300, help="length of each generated sample (default 300)")
    p.add_argument("--samples", type=int, default=2, help="generated samples (default 2)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--text", default=str(TEXT), help="a UTF-8 text file to learn instead of Macbeth")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the shuffling and the samples")
    return p.parse_args(argv)


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: inputs ``ids[s : s + context]``, targets shifted by one character."""
    n = (len(ids) - 1) // context
    x = ids[: n * context].reshape(n, context)
    y = ids[1: n * context + 1].reshape(n, context)
    return x, y


def build(args: argparse.Namespace, vocab: int) -> layers.Layer:
    """The trunk: characters ``(batch, context)`` -> features ``(batch, context, width)``."""
    return layers.serial(
        layers.Embedding(vocab, args.width),
        layers.PositionalEmbedding(args.context),
        *[layers.TransformerBlock(args.heads, causal=True, dropout=args.dropout) for _ in range(args.blocks)],
        layers.LayerNorm(),
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    text = pathlib.Path(args.text).read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], np.int32)
    cut = int(0.9 * len(ids))
    train_ids, val_ids = ids[:cut], ids[cut:]
    if args.chars is not None:
        train_ids = train_ids[: args.chars]
    (x, y), (xv, yv) = windows(train_ids, args.context), windows(val_ids, args.context)
    if len(xv) == 0 or len(x) < args.batch_size:
        raise SystemExit(f"char_lm: the text is too short for {args.batch_size} training windows of {args.context} "
                         f"characters and one validation window (got {len(x)} and {len(xv)}); lower --context, "
                         "--batch-size, or give a longer --text")
    vocab = len(chars)

    trunk = build(args, vocab)
    k_trunk, k_head, k_train, k_sample = jax.random.split(jax.random.key(args.seed), 4)
    _, trunk_params = trunk.init(k_trunk, (-1, args.context))
    params = {"trunk": trunk_params,
              "head": {"w": init.glorot_uniform()(k_head, (args.width, vocab)), "b": jnp.zeros((vocab,), jnp.float32)}}

    def objective(params, x, y, key=None):
        """Mean cross-entropy of every next character (nats); dropout when a key is given."""
        h = trunk.apply(params["trunk"], x, key=key, train=key is not None)
        per_char = losses.linear_softmax_cross_entropy(h.reshape(-1, args.width), params["head"]["w"],
                                                       y.reshape(-1), params["head"]["b"])
        return per_char.mean(), None

    steps = args.epochs * (len(x) // args.batch_size)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(100, steps // 10 + 1), max(steps, 1))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    epoch = jax.jit(train.make_epoch(train.make_step(objective, optimizer), args.batch_size))
    val_loss = jax.jit(lambda p: objective(p, xv, yv)[0])
    state = train.TrainState.create(params, optimizer)

    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    print(f"char_lm: {len(text):,} characters of {pathlib.Path(args.text).name}, {vocab} distinct; "
          f"{len(x)} training windows of {args.context} (+{len(xv)} validation); {n_params:,} parameters")
    print(f"{trunk.description} + fused head")
    history = {"epoch": [0], "train_loss": [float("nan")], "val_loss": [float(val_loss(state.params))],
               "seconds": [0.0]}
    print(f"epoch   0  train    -    val {history['val_loss'][0]:.3f}   (uniform guess: ln {vocab} = "
          f"{math.log(vocab):.3f})")
    start = time.perf_counter()
    for e in range(1, args.epochs + 1):
        state, loss = epoch(state, x, y, jax.random.fold_in(k_train, e))
        v = float(val_loss(state.params))
        history["epoch"].append(e)
        history["train_loss"].append(float(loss))
        history["val_loss"].append(v)
        history["seconds"].append(time.perf_counter() - start)
        print(f"epoch {e:3d}  train {float(loss):.3f}  val {v:.3f}   ({history['seconds'][-1]:.1f} s)", flush=True)

    samples = generate(trunk, state.params, args, index, chars, k_sample)
    for s in samples:
        print("\n--- sample ---\n" + s)
    return {**history, "samples": samples, "vocab": vocab, "parameters": n_params,
            "train_seconds": history["seconds"][-1], "head": "losses.linear_softmax_cross_entropy"}


def generate(trunk: layers.Layer, params, args: argparse.Namespace, index: dict, chars: list, key) -> list[str]:
    """``args.samples`` texts of ``args.sample_chars`` characters, each started from a newline, drawn one character
    at a time from softmax(logits / temperature) given (at most) the last ``context`` characters."""
    T = args.context

    @jax.jit
    def next_char(params, window, position, key):
        # the window is right-padded after `position`: causal attention never looks there
        h = trunk.apply(params["trunk"], window[None])[0, position]
        logits = gates.affine(h, params["head"]["w"], params["head"]["b"])
        return jax.random.categorical(key, logits / args.temperature)

    out = []
    for s in range(args.samples):
        text = [index["\n"]] if "\n" in index else [0]
        for i in range(args.sample_chars):
            recent = text[-T:]
            window = np.zeros(T, np.int32)
            window[: len(recent)] = recent
            text.append(int(next_char(params, window, len(recent) - 1, jax.random.fold_in(key, s * 100_000 + i))))
        out.append("".join(chars[c] for c in text[1:]))
    return out


if __name__ == "__main__":
    main()
