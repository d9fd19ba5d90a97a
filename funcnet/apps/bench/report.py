"""The report of ``funcnet bench``: the markdown tables, the plot and the JSON dump of a result."""

from __future__ import annotations

import json

import numpy as np

from funcnet.apps import dispatch, head, optax_memory, remat
from funcnet.apps.bench.suite import TABLES
from funcnet.apps.bench.steps import CONFIGS, FRAMEWORKS


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}" if b >= 2**20 else f"{b / 2**20:.4f}"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else ("1.00" if a == b else "inf")


def _memory_row(name: str, m: dict[str, int], *extra: str) -> str:
    """``| name | manual MiB | (unfused MiB) | autodiff MiB | *extra | manual / autodiff |``"""
    unfused = [_mib(m["funcnet.unfused"])] if "funcnet.unfused" in m else []
    cells = [name, _mib(m["funcnet"]), *unfused, _mib(m["funcnet.reference"]), *extra,
             _ratio(m["funcnet"], m["funcnet.reference"])]
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict, command: str) -> str:
    lines = ["# Benchmarks", "", f"Machine: {result['machine']}.", "", f"Command: `{command}`", "",
             "One training step (forward, softmax cross-entropy, backward, SGD with momentum 0.9, float32) of "
             "the same MLP on the same batch; frameworks interleaved in one process, in an order that rotates "
             "every round; median step time over rounds; ratio = median over rounds of the step time / plain "
             "JAX's (`jax.nn` + `optax`, `jax.grad`) in the same round, with its interquartile range; "
             "TFLOP/s = 6 × batch × parameters / step time.", ""]
    rates = {k: v["tflops"] for k, v in result.get("matmul", {}).items()}
    if rates:
        lines += ["Roofline: one jitted n × n × n matmul measured "
                  + " and ".join(f"{v:.3f} TFLOP/s in {k}" for k, v in rates.items())
                  + f" (n = {result['matmul']['float32']['n']}); the last column of each table is the step's "
                  "TFLOP/s as a fraction of the float32 rate."
                  + (" On a CPU this is a reference point rather than a ceiling: the steps' smaller matmuls can "
                     "run faster than one large matmul, and bfloat16 has no faster matmul units here."
                     if result["machine"].startswith("CPU") else ""), ""]
    if "dispatch" in result:
        lines += dispatch.markdown_lines(result["dispatch"])
    for name, entry in result["configs"].items():
        cfg = entry["config"]
        roof_head, roof_rule = (" of f32 matmul rate |", " ---: |") if rates else ("", "")
        lines += [f"## {name}: {'-'.join(map(str, cfg['sizes']))}, batch {cfg['batch']}, {cfg['activation']} "
                  f"({entry['params']:,} parameters)", "",
                  "| framework | median step | ratio to plain JAX (IQR) | TFLOP/s |" + roof_head,
                  "| --- | ---: | ---: | ---: |" + roof_rule]
        for fw, t in entry["timing"].items():
            roof = f" {t['tflops'] / rates['float32']:.0%} |" if rates else ""
            lo, hi = t["ratio_iqr"]
            lines.append(f"| {fw} | {t['median_s'] * 1e6:,.0f} µs | {t['ratio']:.3f} ({lo:.3f}–{hi:.3f}) | "
                         f"{t['tflops']:.4f} |{roof}")
        if "compiled_ratio" in entry:
            c = entry["compiled_ratio"]
            lines += ["", f"Compiled programs alone (no Python dispatch; {c['rounds']} paired rounds): funcnet / plain "
                      f"JAX = {c['ratio']:.3f}, 95% bootstrap interval {c['ci95'][0]:.3f}–{c['ci95'][1]:.3f}."]
        if "mixed_precision" in entry and rates:
            mp = entry["mixed_precision"]
            lines += ["", "Mixed precision (funcnet, `fit(compute_dtype=jnp.bfloat16)`: bfloat16 compute, float32 "
                      "master weights): " + "; ".join(
                          f"{k} {v['median_s'] * 1e6:,.0f} µs, {v['tflops']:.4f} TFLOP/s = "
                          f"{v['tflops'] / rates[k]:.0%} of the {k} matmul rate" for k, v in mp.items())
                      + f"; bfloat16 / float32 step time = {mp['bfloat16']['median_s'] / mp['float32']['median_s']:.2f}."]
        if "memory" in entry:
            m = entry["memory"]
            lines += ["", "Temporary memory of the compiled step (XLA `memory_analysis().temp_size_in_bytes`): "
                      + ", ".join(f"{k} {_mib(v)} MiB" for k, v in m.items())
                      + f"; manual / autodiff = {_ratio(m['funcnet'], m['funcnet.reference'])}."]
        lines.append("")
    if "activation_memory" in result:
        lines += [f"## Memory per activation (deep network, batch {result['activation_memory_batch']})", "",
                  "XLA's temporary memory of one compiled training step. *Fused* is `layers.mlp`'s default: each "
                  "activation and the Dense layer after it are one `gates.activation_affine`, whose rule keeps only "
                  "the layer's pre-activation; *unfused* is `mlp(..., fused=False)` (an activation op, then an "
                  "affine op); the autodiff twin is `mlp(..., ops=funcnet.reference)`.", "",
                  "| activation | fused, default (MiB) | unfused (MiB) | autodiff twin (MiB) | plain JAX (MiB) "
                  "| fused / autodiff |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for act, m in result["activation_memory"].items():
            plain = _mib(m["plain_jax"]) if "plain_jax" in m else "-"
            lines.append(_memory_row(act, m, plain))
        lines.append("")
    if "remat_memory" in result:
        lines += remat.markdown_lines(result["remat_memory"], CONFIGS["deep"]["sizes"], result["activation_memory_batch"])
    if "fused_times" in result:
        lines += ["## Fused vs unfused step time (deep network)", "",
                  "Median step time over interleaved rounds; ratios are medians of the per-round ratios.", "",
                  "| activation | batch | fused | unfused | plain JAX | fused / unfused | fused / plain JAX |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for batch, per_activation in result["fused_times"].items():
            for act, t in per_activation.items():
                plain = f"{t['plain_jax_s'] * 1e6:,.0f} µs" if "plain_jax_s" in t else "-"
                vs_plain = f"{t['fused/plain_jax']:.3f}" if "fused/plain_jax" in t else "-"
                lines.append(f"| {act} | {int(batch):,} | {t['fused_s'] * 1e6:,.0f} µs | {t['unfused_s'] * 1e6:,.0f} µs "
                             f"| {plain} | {t['fused/unfused']:.3f} | {vs_plain} |")
        lines.append("")
    if "loss_memory" in result:
        cfg = result["loss_memory_config"]
        lines += [f"## Memory per loss ({'-'.join(map(str, cfg['sizes']))}, {cfg['activation']}, batch {cfg['batch']})",
                  ""]
        unfused = all("funcnet.unfused" in m for m in result["loss_memory"].values())
        lines += (["| loss | manual rules, fused layers (MiB) | unfused layers (MiB) | autodiff twin (MiB) "
                   "| manual / autodiff |", "| --- | ---: | ---: | ---: | ---: |"] if unfused else
                  ["| loss | manual rules (MiB) | autodiff twin (MiB) | manual / autodiff |", "| --- | ---: | ---: | ---: |"])
        for loss, m in result["loss_memory"].items():
            lines.append(_memory_row(loss, m))
        lines.append("")
    if result.get("optax_memory"):
        lines += optax_memory.markdown_lines(result["optax_memory"])
    if result.get("heads"):
        lines += head.markdown_lines(result["heads"])
    for table, rows in result.get("tables", {}).items():
        lines += TABLES[table].markdown_lines(rows)
    if "scan" in result:
        s = result["scan"]
        lines += ["## Steps fused in one `lax.scan` (small network)", "",
                  f"One jitted step at a time: {s['loop_s'] * 1e6:,.0f} µs per step; {s['n_steps']} steps in one "
                  "compiled "
                  f"`lax.scan`: {s['scan_s'] * 1e6:,.0f} µs per step ({s['loop_s'] / s['scan_s']:.2f}× faster).", ""]
    if "scaling" in result:
        lines += ["## Data- and model-parallel throughput (medium network, batch 256)", "",
                  "Mesh `data x model`: the batch is split over `data`; with `model` > 1 each Dense layer's units "
                  "are split over `model` as well (`fit(mesh=parallel.mesh_2d(data, model))`).", "",
                  "| mesh (data x model) | devices | median step | examples/s | scaling efficiency |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for k, r in result["scaling"].items():
            lines.append(f"| {k} | {r['devices']} | {r['median_s'] * 1e6:,.0f} µs | {r['examples_per_s']:,.0f} | "
                         f"{r['efficiency']:.2f} |")
        if result["machine"].startswith("CPU"):
            lines += ["", "On a CPU the devices are simulated host devices sharing the same cores, so this table "
                      "measures the overhead of sharding and collectives, not a speed-up."]
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in sorted(set(result["notes"]))] + [""]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    from funcnet.apps.plotting import pyplot

    plt = pyplot()
    names = list(result["configs"])
    fws = sorted({fw for e in result["configs"].values() for fw in e["timing"]}, key=FRAMEWORKS.index)
    memory = result.get("activation_memory")
    # step ratios (if any configuration was timed) on top, memory per activation (if swept) below
    panels = (["ratios"] if names or not memory else []) + (["memory"] if memory else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(10 if memory else 8, 4 * len(panels)), squeeze=False)
    axes = dict(zip(panels, axes[:, 0]))
    if memory:
        _plot_activation_memory(axes["memory"], memory, result["activation_memory_batch"])
    if "ratios" in axes:
        _plot_ratios(axes["ratios"], result, names, fws)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_ratios(ax, result: dict, names: list, fws: list) -> None:
    width = 0.8 / max(len(fws), 1)
    for i, fw in enumerate(fws):
        rows = [result["configs"][n]["timing"].get(fw, {"ratio": np.nan, "ratio_iqr": [np.nan] * 2}) for n in names]
        ratios = np.array([r["ratio"] for r in rows])
        iqr = np.array([r["ratio_iqr"] for r in rows]).T
        ax.bar(np.arange(len(names)) + i * width, ratios, width, label=fw,
               yerr=np.abs(iqr - ratios), capsize=2, error_kw={"lw": 0.8})
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(fws) - 1) / 2, names)
    ax.set_ylabel("step time / plain JAX (lower is faster; bars: IQR)")
    ax.legend(fontsize=8)


def _plot_activation_memory(ax, memory: dict, batch: int) -> None:
    acts = list(memory)
    series = (("funcnet", "fused (default)"), ("funcnet.unfused", "unfused"), ("funcnet.reference", "autodiff twin"))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        ax.bar(np.arange(len(acts)) + i * width, [memory[a].get(key, np.nan) / 2**20 for a in acts], width,
               label=label)
    if "identity" in memory:
        ax.axhline(memory["identity"]["funcnet.unfused"] / 2**20, color="black", lw=0.8, ls="--",
                   label="identity network")
    ax.set_xticks(np.arange(len(acts)) + width * (len(series) - 1) / 2, acts, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"temporary memory (MiB)\ndeep network, batch {batch}")
    ax.legend(fontsize=8)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, default=float)
