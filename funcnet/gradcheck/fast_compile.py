"""XLA settings for compiling many small programs that run once (gradient checks, the test suite).

A gradient check compiles several programs per op and runs each once, so XLA's CPU
compiler, not the running, is most of its time. These settings run XLA's LLVM backend
at optimisation level 0, emit fusions with the older LLVM-IR emitters and generate code
in one piece: about 3x faster compiles of a check (0.14 s -> 0.05 s a program; the
default ``funcnet gradcheck`` 70 s -> 38 s on a 2-core CPU). The HLO passes (fusion
decisions, buffer assignment) are unchanged; the older emitters add a 32-byte scalar
buffer to some programs, so exact memory figures are compiled with XLA's defaults. At
level 0 float64 rounds differently, which leaves finite differences less headroom (one
MLP's worst leaf: 1.1e-6 against the limit 1e-6, 2.5e-7 with XLA's defaults), so
``funcnet gradcheck --all`` keeps the defaults. The settings take effect only before JAX
starts its backend (the first computation).
"""

from __future__ import annotations

import os

__all__ = ["FLAGS", "request"]

FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false",
         "xla_cpu_parallel_codegen_split_count": "1"}


def request() -> None:
    """Add :data:`FLAGS` to ``XLA_FLAGS``, except those it already names (the user's choice wins)."""
    for flag, value in FLAGS.items():
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{flag}={value}".strip()
