"""The benchmark behind ``funcnet bench``: one training step of the same MLP in several frameworks.

One step is: forward, mean softmax cross-entropy, backward, SGD with momentum 0.9,
all in float32, on the same batch. Frameworks run interleaved in one process
(round after round, each framework in turn), and each reports the median step
time over rounds, its ratio to the plain-JAX baseline (``jax.nn`` + ``optax``,
differentiated by ``jax.grad``), and the achieved TFLOP/s counted as
``6 × batch × parameters`` per step.

Peers (Flax NNX, Equinox, PyTorch) are optional: install ``funcnet[bench]``;
a peer that is not installed is skipped with a note. The modules, each using only
those above it:

* :mod:`funcnet.apps.bench.steps`: the networks and each framework's training step;
* :mod:`funcnet.apps.bench.measure`: step times, XLA's temporary memory, the matmul roofline, the machine;
* :mod:`funcnet.apps.bench.scaling`: throughput on data- and model-parallel meshes;
* :mod:`funcnet.apps.bench.report`: the markdown report, the plot and the JSON dump;
* :mod:`funcnet.apps.bench.suite`: :func:`~funcnet.apps.bench.suite.run`, every measurement of
  ``funcnet bench`` in turn.

The dispatch table, the fused head and the memory under ``jax.checkpoint`` are
:mod:`funcnet.apps.dispatch`, :mod:`funcnet.apps.head` and :mod:`funcnet.apps.remat`.
"""
