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

__all__ = ["DATA_AXIS", "MODEL_AXIS", "data_mesh", "mesh_2d", "use_cpu_devices", "replicated", "batch_sharded",
           "param_shardings"]

DATA_AXIS = "data"
MODEL_AXIS = "model"


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


def mesh_2d(data: int, model: int) -> Mesh:
    """A ``(data, model)`` mesh over the first ``data × model`` devices: data and model parallelism."""
    import numpy as np

    available = jax.devices()
    if data * model > len(available):
        raise ValueError(f"mesh_2d: {data} x {model} = {data * model} devices asked for, {len(available)} visible")
    return Mesh(np.array(available[: data * model]).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def param_shardings(params, mesh: Mesh):
    """Shardings for a parameter pytree: replicated, or split over the mesh's ``"model"`` axis.

    With a ``"model"`` axis, every Dense kernel ``w`` of shape ``(n_in, n_out)``
    whose ``n_out`` divides over that axis is split along ``n_out``, and so is
    its bias: each device holds a slice of the layer's units. XLA's SPMD
    partitioner inserts the gathers and reductions, so results equal the
    replicated computation up to summation order. Everything else is replicated.
    """
    if MODEL_AXIS not in mesh.axis_names:
        return jax.tree.map(lambda _: replicated(mesh), params)
    n_model = mesh.shape[MODEL_AXIS]

    def layer(p):
        w, b = p.get("w"), p.get("b")
        split = (w is not None and getattr(w, "ndim", 0) == 2 and w.shape[1] % n_model == 0
                 and b is not None and b.shape == (w.shape[1],))
        out = {}
        for k, v in p.items():
            if split and k == "w":
                out[k] = NamedSharding(mesh, PartitionSpec(None, MODEL_AXIS))
            elif split and k == "b":
                out[k] = NamedSharding(mesh, PartitionSpec(MODEL_AXIS))
            else:
                out[k] = jax.tree.map(lambda _: replicated(mesh), v)
        return out

    return {k: layer(v) if isinstance(v, dict) and "w" in v else jax.tree.map(lambda _: replicated(mesh), v)
            for k, v in params.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``"data"`` axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
