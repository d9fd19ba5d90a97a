"""pytest plugin: jax's own ``tests/nn_test.py`` run on funcnet's functions (not part of the suite).

jax does not ship its tests in its wheel, so this runs on a checkout of the jax release that
funcnet is installed with (nothing of it is copied here)::

    git clone -q --depth 1 --branch jax-v0.10.2 https://github.com/jax-ml/jax /tmp/jax
    PYTHONPATH=tests python -m pytest -p upstream_jax -n 2 /tmp/jax/tests/nn_test.py

While it runs, every ``jax.nn`` function that funcnet shares a name with is funcnet's
(``nn_test.py`` calls them as ``nn.<name>`` on the ``jax.nn`` module). The tests of what
funcnet does not have (``scaled_matmul``, ``scaled_dot_general``, initializers) run on jax's own functions and are deselected. The deliberate differences
(the README's list) are expected failures, strict: one that starts passing is reported.
"""

from __future__ import annotations

import jax
import pytest

from funcnet import nn

#: Tests of functions funcnet does not have.
NOT_OURS = ("ScaledMatmul", "ScaledDotGeneral", "Initializer", "VarianceScaling")

#: Deliberate differences: test name -> why.
DIFFERENCES = {
    "testSoftmaxGradFlag": "jax.softmax_custom_jvp(False) switches jax.nn.softmax to plain autodiff (3 residuals); "
                           "funcnet's softmax always runs its hand-written rule, which keeps only the output",
    "testOneHotConcretizationError": "the ConcretizationTypeError names funcnet.nn.one_hot, not jax.nn.one_hot",
}


def pytest_configure(config):
    for name in dir(jax.nn):
        if not name.startswith("_") and callable(getattr(jax.nn, name)) and hasattr(nn, name):
            setattr(jax.nn, name, getattr(nn, name))


def pytest_collection_modifyitems(config, items):
    kept = [item for item in items if not any(part in item.name for part in NOT_OURS)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
    for item in kept:
        why = DIFFERENCES.get(item.name.split("[")[0])
        if why:
            item.add_marker(pytest.mark.xfail(reason=why, strict=True))
