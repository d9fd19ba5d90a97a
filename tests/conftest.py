"""Test configuration: float64 on, so tests can ask for either precision explicitly.

The CLI's persistent compilation cache is off here (tests that run the CLI in
this process would otherwise turn it on for every later test, and write into
the user's cache folder); tests/test_cli_train.py checks the cache itself, in
subprocesses with a folder of their own.
"""

import os

import jax

os.environ["FUNCNET_COMPILE_CACHE"] = "off"
jax.config.update("jax_enable_x64", True)
