"""Test configuration: float64 on, so tests can ask for either precision explicitly.

The CLI's persistent compilation cache is off here (tests that run the CLI in
this process would otherwise turn it on for every later test, and write into
the user's cache folder); tests/test_cli_train.py checks the cache itself, in
subprocesses with a folder of their own.

The suite compiles thousands of tiny programs, and XLA's CPU compiler, not
the running, is most of its time: it compiles with the settings of
:mod:`funcnet.gradcheck.fast_compile` (about 3x faster compiles, as ``funcnet
gradcheck`` does). The older emitters add a 32-byte scalar buffer to some
programs, so a test that compares temporary memory to the byte compiles with
``helpers.XLA_DEFAULTS`` (what users run with).
"""

import os

from funcnet.gradcheck import fast_compile  # noqa: E402  (imports JAX; its backend starts at the first computation)

fast_compile.request()  # unless XLA_FLAGS already names them; before JAX starts its backend

import jax  # noqa: E402

os.environ["FUNCNET_COMPILE_CACHE"] = "off"
jax.config.update("jax_enable_x64", True)


def pytest_collection_modifyitems(config, items):
    """Run the tests that start a fresh process (marked ``slow``, the longest) first.

    Under ``pytest -n auto`` a long test dealt out last leaves the other workers idle at the end; dealt out
    first, it runs beside the many short ones. The order of the others is kept.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
