"""Test configuration: float64 on, so tests can ask for either precision explicitly."""

import jax

jax.config.update("jax_enable_x64", True)
