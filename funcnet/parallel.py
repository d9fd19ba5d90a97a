"""Meshes and shardings for data-parallel training, on JAX's own ``jax.sharding``.

Data parallelism here is nothing home-made: :func:`funcnet.train.fit` with a
``mesh`` keeps the parameters and optimizer state replicated, constrains each
minibatch to be split along the mesh's ``"data"`` axis, and lets XLA's SPMD
partitioner insert the all-reduce of the gradients.

On a CPU, several host devices can be simulated for testing with
:func:`use_cpu_devices` (or ``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
before JAX first touches a device. On several hosts, call
``jax.distributed.initialize()`` on every host first; ``jax.devices()`` then
lists the devices of all hosts and :func:`data_mesh` spans them.
"""

from __future__ import annotations

from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "data_mesh", "use_cpu_devices", "replicated", "batch_sharded"]

DATA_AXIS = "data"


def use_cpu_devices(n: int) -> None:
    """Ask for ``n`` simulated CPU devices; must run before JAX initialises its backends."""
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as err:  # backends already initialised
        raise RuntimeError(
            f"use_cpu_devices({n}): JAX's devices are already initialised; call it before any computation, "
            "or set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting Python"
        ) from err


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (a count, a list, or all visible devices)."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise ValueError(f"data_mesh: asked for {devices} devices, {len(available)} visible "
                             f"({available[0].platform})")
        chosen = available[:devices]
    else:
        chosen = list(devices)
    return Mesh(chosen, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``"data"`` axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
