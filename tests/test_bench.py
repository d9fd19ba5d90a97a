"""The benchmark machinery runs and reports what it claims.

Times are measured, not tested: no test expects a speed, but each checks that a time is positive and finite
and that the ratios and rates built from it are the ones the tables print. Memory is deterministic (XLA's
buffer assignment of the compiled step), so it is tested against what the step must keep. Programs are
compiled once where tests can share them (the ``result`` fixture).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import layers
from funcnet.apps import cli
from funcnet.apps.bench import measure, report, scaling, steps, suite

TINY = {"sizes": [8, 16, 4], "batch": 16, "activation": "relu"}
#: Three hidden layers of 256 at batch 1024: each layer's tensor is 1 MiB, far more than the parameters.
MEMORY_NET = {"sizes": [64] + [256] * 3 + [10], "batch": 1024, "activation": "relu"}
LAYER_BYTES = MEMORY_NET["batch"] * 256 * 4


def _cells(text: str, first: str) -> list[str]:
    """The cells of the markdown table row of ``text`` whose first cell is ``first``."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first} |")]
    assert len(rows) == 1, (first, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


@pytest.fixture(scope="module")
def result():
    """One ``suite.run`` on MEMORY_NET (step times, compiled programs, memory), with PyTorch planted as missing."""
    def missing(*_):
        raise ImportError("no", name="not_a_framework")

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(steps.CONFIGS, "mem", MEMORY_NET)
        mp.setitem(steps.BUILDERS, "pytorch", missing)
        return suite.run(["mem"], ("funcnet", "funcnet.reference", "plain_jax", "pytorch"), rounds=1, steps=1,
                         activations_sweep=False, scan=False, scaling_devices=0, roofline=False, dispatch=False,
                         log=lambda m: None)


@pytest.fixture(scope="module")
def text(result):
    return report.markdown(result, "funcnet bench --configs mem")


def test_every_jax_framework_computes_the_same_kind_of_step():
    x, y = steps._data(TINY["sizes"], TINY["batch"])
    for build in (steps.funcnet_step, steps.plain_jax_step):
        s = build(TINY["sizes"], "relu")
        before = [np.asarray(a).copy() for a in jax.tree.leaves(s.state[0])]
        assert 0 < s.run(x, y, 3) < math.inf
        after = [np.asarray(a) for a in jax.tree.leaves(s.state[0])]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # parameters moved


def test_temp_bytes_is_the_intermediate_tensor_of_the_compiled_step():
    """``w - 0.01 (xᵀ tanh(x w))`` holds one tensor between its two matmuls, tanh(x w): batch × 256 float32."""
    w = jnp.zeros((64, 256), jnp.float32)
    s = steps.JaxStep(jax.jit(lambda w, x, y: w - 0.01 * (x.T @ jnp.tanh(x @ w))), w)
    x, y = steps._data([64, 10], 512)
    assert s.temp_bytes(x, y) == 512 * 256 * 4


def test_time_steps_reports_medians_ratios_and_flops_as_the_table_prints_them(result, text):
    timing = result["configs"]["mem"]["timing"]
    assert list(timing) == ["funcnet", "funcnet.reference", "plain_jax"]
    base = timing["plain_jax"]["median_s"]
    flops = 6 * MEMORY_NET["batch"] * steps.param_count(MEMORY_NET["sizes"])
    for fw, t in timing.items():
        assert 0 < t["median_s"] < math.inf
        ratio = t["median_s"] / base  # one round: its time is the median, its ratio the median ratio
        assert t["ratio"] == pytest.approx(ratio, rel=1e-12) and t["ratio_iqr"] == pytest.approx([ratio] * 2)
        assert t["tflops"] == pytest.approx(flops / t["median_s"] / 1e12)
        assert _cells(text, fw) == [fw, f"{t['median_s'] * 1e6:,.0f} µs", f"{ratio:.3f} ({ratio:.3f}–{ratio:.3f})",
                                    f"{flops / t['median_s'] / 1e12:.4f}"]
    assert steps.param_count([8, 16, 4]) == 8 * 16 + 16 + 16 * 4 + 4


def test_compiled_ratio_pairs_the_two_programs_and_reports_an_interval(result, text):
    c = result["configs"]["mem"]["compiled_ratio"]
    lo, hi = c["ci95"]
    assert c["rounds"] == 2 and 0 < lo <= c["ratio"] <= hi < math.inf
    assert (f"(no Python dispatch; 2 paired rounds): funcnet / plain JAX = {c['ratio']:.3f}, 95% bootstrap "
            f"interval {lo:.3f}–{hi:.3f}.") in text


def test_fused_step_keeps_its_hidden_layers_and_less_than_unfused_layers_and_autodiff(result, text):
    """The backward pass needs each hidden layer's pre-activation (three 1 MiB tensors): no step keeps less.
    The fused rule keeps only those; unfused ReLU layers and the autodiff twin keep more."""
    mem = result["configs"]["mem"]["memory"]
    assert set(mem) == {"funcnet", "funcnet.unfused", "funcnet.reference", "plain_jax"}
    assert 3 * LAYER_BYTES <= mem["funcnet"] < mem["funcnet.unfused"] <= mem["funcnet.reference"], mem
    assert min(mem.values()) >= 3 * LAYER_BYTES, mem
    assert (f"funcnet {mem['funcnet'] / 2**20:.1f} MiB, funcnet.unfused {mem['funcnet.unfused'] / 2**20:.1f} MiB"
            in text)
    assert f"manual / autodiff = {mem['funcnet'] / mem['funcnet.reference']:.2f}." in text


def test_report_names_the_network_notes_the_skipped_peer_and_plots(result, text, tmp_path):
    assert result["notes"] == ["pytorch skipped: not_a_framework is not installed (pip install 'funcnet[bench]')"]
    params = steps.param_count(MEMORY_NET["sizes"])
    assert f"## mem: 64-256-256-256-10, batch 1024, relu ({params:,} parameters)" in text and "Machine:" in text
    assert text.endswith(f"## Notes\n\n- {result['notes'][0]}\n")
    report.plot(result, str(tmp_path / "b.png"))
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
    assert scaling.default_meshes(8) == ((1, 1), (2, 1), (4, 1), (8, 1), (4, 2), (2, 4))
    assert scaling.default_meshes(1) == ((1, 1),)
    out = scaling.scaling_in_subprocess("small", max_devices=2)
    assert list(out) == ["1 x 1", "2 x 1", "1 x 2"]
    assert [r["devices"] for r in out.values()] == [1, 2, 2]
    first, batch = out["1 x 1"], steps.CONFIGS["small"]["batch"]
    text = report.markdown({"machine": "CPU test", "configs": {}, "notes": [], "scaling": out}, "cmd")
    for mesh, r in out.items():
        assert 0 < r["median_s"] < math.inf and r["examples_per_s"] == pytest.approx(batch / r["median_s"])
        efficiency = r["examples_per_s"] / (r["devices"] * first["examples_per_s"])
        assert r["efficiency"] == pytest.approx(efficiency)
        assert _cells(text, mesh) == [mesh, str(r["devices"]), f"{r['median_s'] * 1e6:,.0f} µs",
                                      f"{batch / r['median_s']:,.0f}", f"{efficiency:.2f}"]
    assert "simulated host devices" in text


def test_matmul_rate_and_mixed_precision_steps():
    rate = measure.matmul_rate(jnp.float32, n=64, rounds=2)
    assert rate["n"] == 64 and 0 < rate["median_s"] < math.inf
    assert rate["tflops"] == pytest.approx(2 * 64**3 / rate["median_s"] / 1e12)
    out = measure.precision_steps(TINY, rounds=1, steps=1)
    assert set(out) == {"float32", "bfloat16"}
    for v in out.values():
        assert 0 < v["median_s"] < math.inf
        assert v["tflops"] == pytest.approx(6 * 16 * steps.param_count(TINY["sizes"]) / v["median_s"] / 1e12)


def test_bfloat16_step_keeps_float32_master_weights_and_moves_them():
    x, y = steps._data(TINY["sizes"], TINY["batch"])
    s = steps.funcnet_step(TINY["sizes"], "relu", compute_dtype=jnp.bfloat16)
    before = [np.asarray(a).copy() for a in jax.tree.leaves(s.state[0])]
    s.run(x, y, 2)
    after = jax.tree.leaves(s.state[0])
    assert all(a.dtype == jnp.float32 for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    hlo = s.step.lower(s.state, x, y).as_text()
    assert "bf16" in hlo  # the matmuls really run in bfloat16


def test_cli_refuses_to_overwrite_a_plot_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("measured before checking the outputs"))
    existing = tmp_path / "b.png"
    existing.write_bytes(b"mine")
    assert cli.main(["bench", "--configs", "small", "--plot", str(existing)]) == 2
    assert existing.read_bytes() == b"mine" and "--overwrite" in capsys.readouterr().err


def test_wide_configuration_only_by_default_on_an_accelerator():
    assert ("wide" in suite.default_configs()) == (jax.default_backend() != "cpu")


def test_loss_memory_covers_every_head_for_manual_rules_and_autodiff(result, monkeypatch):
    """Every head builds a step with the manual rules and the autodiff twin (traced, not compiled); the default
    head, compiled, needs what ``temp_memory`` measured for the same three programs."""
    x, y = steps._data(TINY["sizes"], TINY["batch"])
    for loss in steps.LOSS_HEADS:
        for ops in (funcnet, funcnet.reference):
            s = steps.funcnet_step(TINY["sizes"], "relu", ops, loss=loss)
            assert jax.eval_shape(s.step, s.state, x, y)[0] == jax.eval_shape(lambda p: p, s.state[0]), loss
    default = "softmax_cross_entropy_with_integer_labels"
    for loss in [h for h in steps.LOSS_HEADS if h != default]:
        monkeypatch.delitem(steps.LOSS_HEADS, loss)
    out = measure.loss_memory(MEMORY_NET)
    mem = result["configs"]["mem"]["memory"]
    assert out == {default: {k: mem[k] for k in ("funcnet", "funcnet.unfused", "funcnet.reference")}}
    m = out[default]
    text = report.markdown({"machine": "CPU test", "configs": {}, "notes": [], "loss_memory": out,
                            "loss_memory_config": MEMORY_NET}, "funcnet bench")
    assert "| loss | manual rules, fused layers (MiB) | unfused layers (MiB) | autodiff twin (MiB) |" in text
    assert _cells(text, default) == [default, *(f"{m[k] / 2**20:.1f}" for k in m),
                                     f"{m['funcnet'] / m['funcnet.reference']:.2f}"]


@functools.cache
def _autodiff_temp(activation):
    x, y = steps._data(MEMORY_NET["sizes"], MEMORY_NET["batch"])
    return steps.funcnet_step(MEMORY_NET["sizes"], activation, funcnet.reference).temp_bytes(x, y)


def _manual_over_autodiff(activation):
    x, y = steps._data(MEMORY_NET["sizes"], MEMORY_NET["batch"])
    # unfused: the activation op's own rule, and what it keeps (the fused layers: tests/test_fused_dense.py)
    manual = steps.funcnet_step(MEMORY_NET["sizes"], activation, fused=False).temp_bytes(x, y)
    return manual, _autodiff_temp(activation)  # the twin's figure once: the planted rule below leaves it alone


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


def test_fused_head_rows_memory_and_time_against_the_unfused_head():
    """Compiled only, 1024 examples over 16384 classes: the unfused head holds the 64 MiB of logits, the fused
    one streams blocks and never does. Timed, a small head: one round, whose ratio is the fused / unfused time."""
    from funcnet.apps import head

    big = head.measure(16384, n=1024, d=8, rounds=0)
    assert "median_s" not in big["fused"] and "time_ratio" not in big
    assert big["fused"]["temp_bytes"] < 1024 * 16384 * 4 <= big["unfused"]["temp_bytes"], big
    assert big["memory_ratio"] == big["fused"]["temp_bytes"] / big["unfused"]["temp_bytes"]
    small = head.measure(64, n=32, d=8, rounds=1)
    assert all(0 < small[k]["median_s"] < math.inf for k in ("fused", "unfused"))
    assert small["time_ratio"] == pytest.approx(small["fused"]["median_s"] / small["unfused"]["median_s"])
    text = "\n".join(head.markdown_lines([big, small]))
    assert _cells(text, "16,384") == ["16,384", f"{big['fused']['temp_bytes'] / 2**20:,.1f}",
                                      f"{big['unfused']['temp_bytes'] / 2**20:,.1f}", f"{big['memory_ratio']:.3f}",
                                      "-", "-", "not timed"]
    assert _cells(text, "64")[-1] == f"{small['time_ratio']:.2f} (1 rounds)"


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
    text = report.markdown(result, "funcnet bench")
    assert "| activation | fused, default (MiB) | unfused (MiB) | autodiff twin (MiB) |" in text
    assert "| silu | 72.0 | 192.0 | 192.0 | - | 0.38 |" in text
    assert "| silu | 256 | 20,000 µs | 21,000 µs | - | 0.950 | - |" in text
    assert "| silu | 4,096 | 900,000 µs | 800,000 µs | 1,000,000 µs | 1.125 | 0.900 |" in text
    report.plot(result, str(tmp_path / "m.png"))
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_fused_step_times_rows_per_activation():
    rows = measure.fused_step_times({"sizes": [8, 16, 16, 4], "batch": 16}, ("silu",), rounds=1, steps=1)
    assert list(rows) == ["silu"]
    row = rows["silu"]
    assert all(0 < row[f"{k}_s"] < math.inf for k in ("fused", "unfused", "plain_jax"))
    # one round: the median of the per-round ratios is the ratio of the two times
    assert row["fused/unfused"] == pytest.approx(row["fused_s"] / row["unfused_s"])
    assert row["fused/plain_jax"] == pytest.approx(row["fused_s"] / row["plain_jax_s"])


def test_dispatch_table_times_each_program_on_both_sides(monkeypatch):
    from funcnet.apps import dispatch

    # the layout, not the numbers, is under test: the smallest networks
    monkeypatch.setattr(dispatch, "APPLY_NET", [8, 16, 4])
    monkeypatch.setattr(dispatch, "DEFAULT_NET", [8, 16, 4])
    monkeypatch.setattr(dispatch, "SMALL", TINY)
    rows = dispatch.measure(rounds=1, calls=4, log=lambda m: None)
    assert [r["name"].split(":")[0] for r in rows] == ["per call"] * 4 + ["trace", "compile"]
    text = "\n".join(dispatch.markdown_lines(rows))
    for r in rows:
        assert 0 < r["funcnet_s"] < math.inf and 0 < r["jax_s"] < math.inf
        if r["name"] != rows[-1]["name"]:  # one round: the ratio of its two times (compile: three rounds)
            assert r["ratio"] == pytest.approx(r["funcnet_s"] / r["jax_s"])
        assert _cells(text, r["name"])[-1] == f"{r['ratio']:.3f}"
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

    monkeypatch.setattr(suite, "run", run)
    assert cli.main(["bench", "--quick"]) == 0
    assert seen["configs"] == ["small"] and seen["rounds"] == 5 and seen["steps"] == 5
    assert not seen["activations_sweep"] and not seen["scan"] and not seen["roofline"]
    assert seen["scaling_devices"] == 0 and seen["dispatch"] and seen["memory"]
    assert cli.main(["bench", "--quick", "--rounds", "7"]) == 0 and seen["rounds"] == 7


def test_funcnet_s_losses_need_no_more_memory_than_optax_s(monkeypatch):
    """Issue 24's target, in XLA's temporary memory of ``value_and_grad`` (deterministic: compiled, not run).
    The check itself fails on a planted loss that keeps a batch × batch matrix optax's does not."""
    from funcnet.apps import optax_memory

    rows = optax_memory.measure(log=lambda m: None)
    assert {r["name"] for r in rows} == set(optax_memory.CASES)  # every loss of the table is funcnet's
    assert all(r["funcnet_bytes"] <= r["optax_bytes"] for r in rows), rows
    lines = optax_memory.markdown_lines(rows)
    assert any(line.startswith("| `ntxent` |") and line.endswith(f"| {rows[3]['ratio']:.2f} |") for line in lines)

    def wasteful(logits, labels):
        return funcnet.losses.ranking_softmax_loss(logits, labels) + 0 * jnp.sum(logits @ logits.T)

    name, (what, inputs, n_diff, pick) = "ranking_softmax_loss", optax_memory.CASES["ranking_softmax_loss"]
    monkeypatch.setitem(optax_memory.CASES, name, (what, inputs, n_diff,
                                                   lambda ns: wasteful if ns is funcnet.losses else pick(ns)))
    (planted,) = optax_memory.measure([name], log=lambda m: None)
    assert planted["funcnet_bytes"] > planted["optax_bytes"], planted


def test_tables_run_through_the_suite_into_the_report(monkeypatch, capsys):
    """``--tables``: each named table's rows land in the report; an unknown name is one line, before measuring."""
    from funcnet.apps import ctc

    monkeypatch.setattr(ctc, "SIZES", ((2, 12, 5, 3),))
    result = suite.run((), ("funcnet",), memory=False, activations_sweep=False, scan=False, scaling_devices=0,
                       roofline=False, dispatch=False, tables=("ctc",), table_rounds=1, log=lambda m: None)
    (row,) = result["tables"]["ctc"]
    assert row["funcnet"]["median_s"] > 0 and row["optax"]["median_s"] > 0
    assert "| 2 × 12 × 5, N = 3 |" in report.markdown(result, "funcnet bench --tables ctc")
    assert cli.main(["bench", "--tables", "ctc,nope"]) == 2
    assert "--tables: unknown table nope; known: ctc, attention, curvature, or all" in capsys.readouterr().err


def test_curvature_table_ghost_norms_within_the_memory_target():
    """Issue 26's memory target (≤ 1.1x one value_and_grad), deterministic (compiled, not run), and the table
    prints what it measured."""
    from funcnet.apps import curvature as table

    rows = table.measure(configs=("small",), quantities=["per-example gradient norms", "per-example gradients"],
                         rounds=0, log=lambda m: None)
    norms, per = rows
    assert norms["baseline_name"] == "value_and_grad" and per["baseline_name"] == "vmap(grad)"
    assert norms["memory_ratio"] <= 1.1, norms
    line = next(l for l in table.markdown_lines(rows) if "| per-example gradient norms |" in l)
    assert f"| {norms['memory_ratio']:.2f} |" in line and "| not timed |" in line
