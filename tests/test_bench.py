"""The benchmark machinery runs and reports what it claims (timings are not asserted: measured, not tested)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import bench, cli

TINY = {"sizes": [8, 16, 4], "batch": 16, "activation": "relu"}


def test_every_jax_framework_computes_the_same_kind_of_step():
    x, y = (jnp.asarray(a) for a in bench._data(TINY["sizes"], TINY["batch"]))
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
                       scaling_devices=0,
                       log=lambda m: None)
    mem = result["configs"]["tiny"]["memory"]
    assert set(mem) == {"funcnet", "funcnet.reference", "plain_jax"} and all(v >= 0 for v in mem.values())
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


def test_scaling_over_simulated_devices():
    out = bench.scaling_in_subprocess("small", max_devices=2)
    assert set(out) == {1, 2}
    assert out[1]["efficiency"] == 1.0 and out[2]["examples_per_s"] > 0
