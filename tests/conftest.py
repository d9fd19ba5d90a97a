"""Test configuration: float64 on, so tests can ask for either precision explicitly.

The CLI's persistent compilation cache is off here (tests that run the CLI in
this process would otherwise turn it on for every later test, and write into
the user's cache folder); tests/test_cli_train.py checks the cache itself, in
subprocesses with a folder of their own.

The suite compiles thousands of tiny programs, and XLA's CPU compiler, not
the running, is most of its time. So XLA's LLVM backend runs at optimisation
level 0, fusions are emitted by the older LLVM-IR emitters instead of the MLIR
fusion emitters, and code is generated in one piece: together about 3x faster
compilation of a gradient check (0.14 s -> 0.05 s a program). The HLO passes
(fusion decisions, buffer assignment) are unchanged; the older emitters add a
32-byte scalar buffer to some programs, so a test that compares temporary memory
to the byte compiles with ``helpers.XLA_DEFAULTS`` (what users run with).
"""

import os

#: Compile-time settings for the suite, unless XLA_FLAGS already names them (set before JAX starts its backend).
FAST_COMPILE = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false",
                "xla_cpu_parallel_codegen_split_count": "1"}
for _flag, _value in FAST_COMPILE.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()

import jax  # noqa: E402

os.environ["FUNCNET_COMPILE_CACHE"] = "off"
jax.config.update("jax_enable_x64", True)
