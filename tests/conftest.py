"""Test configuration: float64 on, so tests can ask for either precision explicitly.

The CLI's persistent compilation cache is off here (tests that run the CLI in
this process would otherwise turn it on for every later test, and write into
the user's cache folder); tests/test_cli_train.py checks the cache itself, in
subprocesses with a folder of their own.

XLA's LLVM backend runs at optimisation level 0: the suite compiles thousands
of tiny programs, and that cut its time by about a fifth. The HLO passes
(fusion, buffer assignment) are unchanged, so the memory figures the tests
check are the same as with the default level (checked for the deep network).
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

os.environ["FUNCNET_COMPILE_CACHE"] = "off"
jax.config.update("jax_enable_x64", True)
