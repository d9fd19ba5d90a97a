"""The benchmark machinery runs and reports what it claims (timings are not asserted: measured, not tested)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import layers
from funcnet.apps import bench, cli

TINY = {"sizes": [8, 16, 4], "batch": 16, "activation": "relu"}


def test_every_jax_framework_computes_the_same_kind_of_step():
    x, y = bench._data(TINY["sizes"], TINY["batch"])
    for build in (bench.funcnet_step, bench.plain_jax_step):
        s = build(TINY["sizes"], "relu")
        before = [np.asarray(a).copy() for a in jax.tree.leaves(s.state[0])]
        assert s.run(x, y, 3) > 0
        after = [np.asarray(a) for a in jax.tree.leaves(s.state[0])]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # parameters moved
        assert s.temp_bytes(x, y) > 0


def test_time_steps_reports_medians_ratios_and_flops():
    notes = []
    out = bench.time_steps(TINY, ("funcnet", "funcnet.reference", "plain_jax"), rounds=2, steps=2, notes=notes)
    assert out["plain_jax"]["ratio"] == 1.0
    for t in out.values():
        assert t["median_s"] > 0 and t["tflops"] == pytest.approx(6 * 16 * bench.param_count(TINY["sizes"])
                                                                  / t["median_s"] / 1e12)
    assert bench.param_count([8, 16, 4]) == 8 * 16 + 16 + 16 * 4 + 4


def test_missing_peer_is_skipped_with_a_note(monkeypatch):
    def missing(*_):
        raise ImportError("no", name="not_a_framework")

    monkeypatch.setitem(bench.BUILDERS, "pytorch", missing)
    notes = []
    out = bench.time_steps(TINY, ("plain_jax", "pytorch"), rounds=1, steps=1, notes=notes)
    assert set(out) == {"plain_jax"} and "pytorch skipped" in notes[0]


def test_memory_report_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)
    result = bench.run(["tiny"], ("funcnet", "plain_jax"), rounds=1, steps=1, activations_sweep=False, scan=False,
                       scaling_devices=0, roofline=False, dispatch=False, log=lambda m: None)
    mem = result["configs"]["tiny"]["memory"]
    assert set(mem) == {"funcnet", "funcnet.unfused", "funcnet.reference", "plain_jax"}
    assert all(v >= 0 for v in mem.values())
    text = bench.markdown(result, "funcnet bench --configs tiny")
    assert "## tiny: 8-16-4, batch 16, relu" in text and "| funcnet |" in text and "Machine:" in text
    bench.plot(result, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_unknown_configs_and_refuses_to_overwrite(tmp_path, capsys):
    assert cli.main(["bench", "--configs", "huge"]) == 2
    assert "unknown configuration huge" in capsys.readouterr().err
    existing = tmp_path / "bench.md"
    existing.write_text("mine")
    args = ["bench", "--configs", "small", "--frameworks", "plain_jax", "--rounds", "1", "--steps", "1",
            "--no-memory", "--no-sweep", "--no-scan", "--scaling-devices", "0", "--markdown", str(existing)]
    assert cli.main(args) == 2
    assert existing.read_text() == "mine" and "--overwrite" in capsys.readouterr().err


def test_scaling_over_simulated_devices_with_data_and_model_axes():
    assert bench.default_meshes(8) == ((1, 1), (2, 1), (4, 1), (8, 1), (4, 2), (2, 4))
    assert bench.default_meshes(1) == ((1, 1),)
    out = bench.scaling_in_subprocess("small", max_devices=2)
    assert list(out) == ["1 x 1", "2 x 1", "1 x 2"]
    assert [r["devices"] for r in out.values()] == [1, 2, 2]
    assert out["1 x 1"]["efficiency"] == 1.0 and all(r["examples_per_s"] > 0 for r in out.values())
    text = bench.markdown({"machine": "CPU test", "configs": {}, "notes": [], "scaling": out}, "cmd")
    assert "| 1 x 2 | 2 |" in text and "simulated host devices" in text


def test_matmul_rate_and_mixed_precision_steps():
    rate = bench.matmul_rate(jnp.float32, n=64, rounds=2)
    assert rate["n"] == 64 and rate["tflops"] == pytest.approx(2 * 64**3 / rate["median_s"] / 1e12)
    steps = bench.precision_steps(TINY, rounds=1, steps=1)
    assert set(steps) == {"float32", "bfloat16"} and all(v["median_s"] > 0 for v in steps.values())


def test_bfloat16_step_keeps_float32_master_weights_and_moves_them():
    x, y = bench._data(TINY["sizes"], TINY["batch"])
    s = bench.funcnet_step(TINY["sizes"], "relu", compute_dtype=jnp.bfloat16)
    before = [np.asarray(a).copy() for a in jax.tree.leaves(s.state[0])]
    s.run(x, y, 2)
    after = jax.tree.leaves(s.state[0])
    assert all(a.dtype == jnp.float32 for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    hlo = s.step.lower(s.state, x, y).as_text()
    assert "bf16" in hlo  # the matmuls really run in bfloat16


def test_cli_refuses_to_overwrite_a_plot_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured before checking the outputs"))
    existing = tmp_path / "b.png"
    existing.write_bytes(b"mine")
    assert cli.main(["bench", "--configs", "small", "--plot", str(existing)]) == 2
    assert existing.read_bytes() == b"mine" and "--overwrite" in capsys.readouterr().err


def test_wide_configuration_only_by_default_on_an_accelerator():
    assert ("wide" in bench.default_configs()) == (jax.default_backend() != "cpu")


def test_loss_memory_covers_every_head_for_manual_rules_and_autodiff():
    out = bench.loss_memory(TINY)
    assert set(out) == set(bench.LOSS_HEADS)
    assert all(set(m) == {"funcnet", "funcnet.unfused", "funcnet.reference"} and min(m.values()) >= 0
               for m in out.values())
    text = bench.markdown({"machine": "CPU test", "configs": {}, "notes": [], "loss_memory": out,
                           "loss_memory_config": TINY}, "funcnet bench")
    assert "| loss | manual rules, fused layers (MiB) | unfused layers (MiB) | autodiff twin (MiB) |" in text


# Memory is deterministic (XLA's buffer assignment of the compiled step), so unlike time it can be tested.
MEMORY_NET = {**bench.CONFIGS["deep"], "batch": 1024}


def _manual_over_autodiff(activation):
    x, y = bench._data(MEMORY_NET["sizes"], MEMORY_NET["batch"])
    # unfused: the activation op's own rule, and what it keeps (the fused layers: tests/test_fused_dense.py)
    manual = bench.funcnet_step(MEMORY_NET["sizes"], activation, fused=False).temp_bytes(x, y)
    auto = bench.funcnet_step(MEMORY_NET["sizes"], activation, funcnet.reference).temp_bytes(x, y)
    return manual, auto


@pytest.mark.parametrize("activation", [a for a in layers.ACTIVATIONS if a != "prelu"])
def test_manual_rules_never_need_more_temporary_memory_than_autodiff(activation):
    manual, auto = _manual_over_autodiff(activation)
    assert manual <= auto, f"{activation}: {manual / 2**20:.1f} MiB with manual rules, {auto / 2**20:.1f} with autodiff"
    if activation == "elu":  # the rule keeps only the output; autodiff keeps the input and an exponential
        assert manual <= 0.5 * auto


def test_the_memory_check_catches_an_elu_rule_that_keeps_the_input(monkeypatch):
    from funcnet.ops import activations as impl

    def save(x, alpha):
        return impl._elu_value(x, alpha), x

    def vjp(x, g, alpha):
        return (g * jnp.where(x > 0, 1.0, alpha * jnp.exp(x)),)

    monkeypatch.setattr(impl._ELU, "save", save)
    monkeypatch.setattr(impl._ELU, "vjp", vjp)
    manual, auto = _manual_over_autodiff("elu")
    assert manual > 0.5 * auto


def test_compiled_ratio_pairs_the_two_programs_and_reports_an_interval():
    out = bench.compiled_ratio(TINY, rounds=6, steps=2)
    assert out["rounds"] == 6 and out["ratio"] > 0
    assert out["ci95"][0] <= out["ratio"] <= out["ci95"][1]
    text = bench.markdown({"machine": "CPU test", "notes": [], "configs": {"tiny": {
        "config": TINY, "params": 1, "timing": {}, "compiled_ratio": out}}}, "cmd")
    assert "Compiled programs alone" in text and "95% bootstrap interval" in text


def test_fused_head_rows_memory_and_time_against_the_unfused_head():
    from funcnet.apps import head

    row = head.measure(64, n=32, d=8, rounds=2)
    assert row["fused"]["temp_bytes"] > 0 and row["unfused"]["temp_bytes"] > 0
    assert row["memory_ratio"] == row["fused"]["temp_bytes"] / row["unfused"]["temp_bytes"]
    assert row["fused"]["median_s"] > 0 and row["time_ratio"] > 0
    untimed = head.measure(64, n=32, d=8, rounds=0)
    assert "median_s" not in untimed["fused"]
    text = "\n".join(head.markdown_lines([row, untimed]))
    assert "| 64 |" in text and "(2 rounds)" in text and "not timed" in text


def test_fused_memory_column_time_table_and_plot(tmp_path):
    """The per-activation table shows fused, unfused and autodiff memory; the timing table its ratios; the plot
    gains a memory panel. Numbers made up here: only the report's layout is under test."""
    mib = 2**20
    memory = {"identity": {"funcnet": 72 * mib, "funcnet.unfused": 72 * mib, "funcnet.reference": 72 * mib,
                           "plain_jax": 72 * mib},
              "silu": {"funcnet": 72 * mib, "funcnet.unfused": 192 * mib, "funcnet.reference": 192 * mib}}
    times = {256: {"silu": {"fused_s": 0.02, "unfused_s": 0.021, "fused/unfused": 0.95}},
             4096: {"silu": {"fused_s": 0.9, "unfused_s": 0.8, "plain_jax_s": 1.0, "fused/unfused": 1.125,
                             "fused/plain_jax": 0.9}}}
    result = {"machine": "CPU test", "configs": {}, "notes": [], "activation_memory": memory,
              "activation_memory_batch": 4096, "fused_times": times}
    text = bench.markdown(result, "funcnet bench")
    assert "| activation | fused, default (MiB) | unfused (MiB) | autodiff twin (MiB) |" in text
    assert "| silu | 72.0 | 192.0 | 192.0 | - | 0.38 |" in text
    assert "| silu | 256 | 20,000 µs | 21,000 µs | - | 0.950 | - |" in text
    assert "| silu | 4,096 | 900,000 µs | 800,000 µs | 1,000,000 µs | 1.125 | 0.900 |" in text
    bench.plot(result, str(tmp_path / "m.png"))
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_fused_step_times_rows_per_activation():
    rows = bench.fused_step_times({"sizes": [8, 16, 16, 4], "batch": 16}, ("relu", "silu"), rounds=2, steps=1)
    assert set(rows) == {"relu", "silu"}
    for row in rows.values():
        assert row["fused_s"] > 0 and row["unfused_s"] > 0 and row["plain_jax_s"] > 0
        assert row["fused/unfused"] > 0 and row["fused/plain_jax"] > 0


def test_dispatch_table_times_each_program_on_both_sides(monkeypatch):
    from funcnet.apps import dispatch

    monkeypatch.setattr(dispatch, "APPLY_NET", [8, 16, 4])  # the layout, not the numbers, is under test
    rows = dispatch.measure(rounds=1, calls=4, log=lambda m: None)
    assert [r["name"].split(":")[0] for r in rows] == ["per call"] * 4 + ["trace", "compile"]
    assert all(r["funcnet_s"] > 0 and r["jax_s"] > 0 and r["ratio"] > 0 for r in rows)
    text = "\n".join(dispatch.markdown_lines(rows))
    assert "| per call: jit(nn.relu), 128 x 256 |" in text and "| program | funcnet | jax.nn + optax | ratio |" in text


def test_memory_under_checkpoint_fused_rules_keep_less_than_autodiff():
    """Deterministic (compiled, not run): under per-layer ``jax.checkpoint`` the fused layers' hand-written rules
    (which run there) keep one tensor per layer, autodiff two; unfused layers keep what autodiff keeps."""
    from funcnet.apps import remat

    sizes, batch = [32] + [128] * 6 + [10], 512
    temp = {kind: remat.step_temp_bytes(sizes, batch, "silu", kind) for kind in remat.KINDS}
    assert temp["funcnet"] < 0.5 * temp["funcnet.reference"], temp
    assert temp["funcnet.unfused"] >= temp["funcnet.reference"], temp  # the check tells the two apart
    lines = remat.markdown_lines({"silu": {"remat": temp, "plain": temp}}, sizes, batch)
    mib = temp["funcnet"] / 2**20
    assert lines[-2].startswith(f"| silu | {mib:.1f} ({mib:.1f}) |")


def test_cli_quick_runs_the_small_network_dispatch_and_memory_only(monkeypatch, capsys):
    seen = {}

    def run(configs, frameworks, **kw):
        seen.update(configs=list(configs), **kw)
        return {"machine": "CPU test", "configs": {}, "notes": []}

    monkeypatch.setattr(bench, "run", run)
    assert cli.main(["bench", "--quick"]) == 0
    assert seen["configs"] == ["small"] and seen["rounds"] == 5 and seen["steps"] == 5
    assert not seen["activations_sweep"] and not seen["scan"] and not seen["roofline"]
    assert seen["scaling_devices"] == 0 and seen["dispatch"] and seen["memory"]
    assert cli.main(["bench", "--quick", "--rounds", "7"]) == 0 and seen["rounds"] == 7
