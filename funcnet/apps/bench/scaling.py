"""Throughput of the funcnet step on data- and model-parallel meshes (simulated devices in a subprocess on a CPU)."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys

import jax

from funcnet.apps.bench.measure import _interleaved
from funcnet.apps.bench.steps import _data, funcnet_step


def default_meshes(max_devices: int) -> tuple[tuple[int, int], ...]:
    """(data, model) mesh shapes: data-parallel on 1, 2, 4, ... devices, then the largest split with a model axis."""
    shapes = [(n, 1) for n in (1, 2, 4, 8, 16) if n <= max_devices]
    top = shapes[-1][0]
    shapes += [(top // m, m) for m in (2, 4) if m <= top]
    return tuple(shapes)


def scaling(config: dict, meshes=((1, 1), (2, 1), (4, 1), (8, 1)), rounds: int = 5,
            steps: int = 5) -> dict[str, dict]:
    """Throughput of the funcnet step on each ``(data, model)`` mesh, the batch split over ``data``.

    With a ``model`` axis each Dense layer's units are split as in
    ``fit(mesh=parallel.mesh_2d(data, model))``. Needs as many visible devices
    as the largest mesh (on a CPU, see :func:`funcnet.parallel.use_cpu_devices`).
    Keys are ``"data x model"``; efficiency is throughput on n devices /
    (n × throughput on the first mesh's devices).
    """
    from funcnet import parallel

    sizes, batch = config["sizes"], config["batch"]
    x, y = _data(sizes, batch)
    runners = {}
    for d, m in meshes:
        mesh = parallel.mesh_2d(d, m)
        s = funcnet_step(sizes, config["activation"])
        params = jax.device_put(s.state[0], parallel.param_shardings(s.state[0], mesh))
        s.state = (params, jax.jit(s.init_opt)(params))  # the optimizer state follows the parameters' shardings
        data = jax.device_put((x, y), parallel.batch_sharded(mesh))
        s.run(*data, 2)
        runners[f"{d} x {m}"] = (d * m, functools.partial(s.run, *data, steps))
    times = _interleaved({k: run for k, (_, run) in runners.items()}, rounds)
    out = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        out[k] = {"devices": runners[k][0], "median_s": med, "examples_per_s": batch / med}
    first = out[next(iter(out))]
    for r in out.values():
        r["efficiency"] = r["examples_per_s"] * first["devices"] / (r["devices"] * first["examples_per_s"])
    return out


def scaling_in_subprocess(config_name: str = "medium", max_devices: int = 8) -> dict[str, dict]:
    """:func:`scaling` in a fresh Python with ``max_devices`` simulated CPU devices (fixed at start-up)."""
    code = (f"import json, jax; jax.config.update('jax_num_cpu_devices', {max_devices}); "
            f"from funcnet.apps.bench import scaling, steps; "
            f"print(json.dumps(scaling.scaling(steps.CONFIGS[{config_name!r}], "
            f"scaling.default_meshes({max_devices}))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"scaling benchmark in a subprocess failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

