"""The example scripts, run through their ``main(argv)`` with small settings, and what they demonstrate."""

import importlib.util
import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def fast_compiles():
    """Compile with most XLA optimizations off: the examples' data are tiny, so compiling dominates
    their run time, and the optimization level does not change what they show."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def example(monkeypatch):
    """``example("xor")`` imports examples/xor.py (with examples/ on sys.path for its helpers)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name):
        spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def is_png(path) -> bool:
    return pathlib.Path(path).read_bytes()[:8] == PNG_MAGIC


def test_free_path_never_overwrites(example, tmp_path):
    plotting = example("_plotting")
    (tmp_path / "fig.png").write_bytes(b"keep")
    first, second = plotting.free_path(tmp_path, "fig.png"), plotting.free_path(tmp_path, "fig.png")
    assert (first.name, second.name) == ("fig-1.png", "fig-2.png")
    assert (tmp_path / "fig.png").read_bytes() == b"keep"
    assert plotting.free_path(tmp_path / "new" / "dir", "fig.png").name == "fig.png"


@pytest.mark.slow
def test_scripts_run_as_scripts_from_anywhere(tmp_path):
    # as `python examples/spiral.py`: its helper module is found next to it, whatever the working folder
    done = subprocess.run([sys.executable, str(EXAMPLES / "spiral.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--arms {2,3}" in done.stdout and "--out OUT" in done.stdout


def test_xor_needs_a_hidden_layer(example):
    r = example("xor").main(["--epochs", "60"])
    assert r["mlp_accuracy"] >= 0.9 and r["mlp_train_accuracy"] >= 0.9
    assert r["linear_accuracy"] <= 0.75 and r["linear_train_accuracy"] <= 0.8


def test_spiral_learns_three_arms_and_keeps_an_existing_plot(example, tmp_path):
    (tmp_path / "spiral.png").write_bytes(b"an older plot")
    r = example("spiral").main(["--arms", "3", "--epochs", "150", "--out", str(tmp_path)])
    assert r["train_accuracy"] > 0.85 and r["test_accuracy"] > 0.75  # chance is 1/3
    assert pathlib.Path(r["plot"]) == tmp_path / "spiral-1.png" and is_png(r["plot"])
    assert (tmp_path / "spiral.png").read_bytes() == b"an older plot"


def test_digits_manual_rules_match_the_autodiff_twins(example, tmp_path):
    r = example("digits").main(["--epochs", "3", "--hidden", "32", "--reference", "--out", str(tmp_path)])
    assert r["test_accuracy"] > 0.85 and r["val_accuracy"] > 0.85  # chance is 0.1
    assert r["epochs_run"] <= 3 and 1 <= r["best_epoch"] <= r["epochs_run"]
    assert r["max_relative_difference"] < 1e-4
    assert abs(r["reference_test_accuracy"] - r["test_accuracy"]) <= 1 / 270 + 1e-9  # at most one image differs
    assert is_png(r["plot"])


def test_char_lm_learns_and_writes(example, capsys):
    """A small run (one block, 12 000 characters, 3 epochs): the loss falls well below the uniform guess and the
    untrained model, every epoch, and the samples are text in the play's characters."""
    r = example("char_lm").main(["--epochs", "3", "--blocks", "1", "--width", "32", "--heads", "2", "--context", "32",
                                 "--chars", "12000", "--sample-chars", "40", "--samples", "2"])
    val, train_loss = r["val_loss"], r["train_loss"]
    assert len(val) == 4 and val[-1] < val[0] - 1.0 and val[-1] < math.log(r["vocab"]) - 0.8
    assert all(b < a for a, b in zip(val, val[1:])) and train_loss[3] < train_loss[1]
    assert r["head"] == "losses.linear_softmax_cross_entropy"
    text = (EXAMPLES / "data" / "macbeth.txt").read_text(encoding="utf-8")
    assert len(r["samples"]) == 2 and all(len(s) == 40 and set(s) <= set(text) for s in r["samples"])
    out = capsys.readouterr().out
    assert out.count("--- sample ---") == 2 and r["samples"][0] in out and "epoch   3  train" in out


def test_sine_fit_is_close_to_the_noise_level(example, tmp_path):
    r = example("sine").main(["--epochs", "300", "--out", str(tmp_path)])
    # predicting 0 everywhere would give the variance of sin, 0.5; the noise floor is 0.0025
    assert r["test_mse"] < 0.02 and r["train_mse"] < 0.02
    assert is_png(r["plot"])


def test_computational_graph_matches_the_numbers_by_hand(example, capsys):
    r = example("computational_graph").main([])
    assert (r["f"], r["df_dx"], r["df_dy"], r["df_dz"]) == (-12.0, -4.0, -4.0, 3.0)
    s = 1 / (1 + math.exp(-1.0))  # the neuron's input is w0 x0 + w1 x1 + w2 = -2 + 6 - 3 = 1
    ds = s * (1 - s)
    assert r["neuron_output"] == pytest.approx(s, abs=1e-6)
    assert r["neuron_dw"] == pytest.approx([-ds, -2 * ds, ds], abs=1e-6)  # σ'·(x0, x1, 1)
    assert r["neuron_dx"] == pytest.approx([2 * ds, -3 * ds], abs=1e-6)   # σ'·(w0, w1)
    assert r["patterns_f"] == -20.0
    assert r["patterns_grads"] == [-8.0, 6.0, 2.0, 0.0]  # mul swaps, max routes to z
    out = capsys.readouterr().out
    assert "differs" not in out and "0.7311" in out


def test_equal_initial_weights_keep_the_hidden_units_identical(example):
    r = example("zero_init_trap").main(["--epochs", "150"])
    assert r["zeros_max_unit_diff"] == 0.0 and r["constant_max_unit_diff"] == 0.0
    assert r["zeros_train_accuracy"] <= 0.6  # chance
    assert r["constant_train_accuracy"] <= 0.8  # no better than a single hidden unit
    assert r["glorot_max_unit_diff"] > 0.1 and r["glorot_train_accuracy"] >= 0.95


def test_searches_select_on_validation_loss(example):
    r = example("hyperparameter_search").main([
        "--epochs", "5", "--grid-lr", "0.1", "--grid-width", "8", "--grid-depth", "1,2", "--trials", "2",
        "--many-lr", "0.001,0.3", "--many-lam", "0", "--many-seeds", "1"])
    grid, rand, many = r["grid"], r["random"], r["many"]
    assert [t["settings"]["depth"] for t in grid["trials"]] == [1, 2]
    assert len(rand["trials"]) == 2
    for search in (grid, rand):
        assert search["best"] in search["trials"]
        assert search["best"]["val_loss"] == min(t["val_loss"] for t in search["trials"])
        assert 0.0 <= search["test_accuracy"] <= 1.0
    assert many["candidates"] == [(0.001, 0.0, 0), (0.3, 0.0, 0)]
    assert many["best"] == 1 and many["val_loss"][1] < many["val_loss"][0]  # 5 epochs at lr 0.001 learn little


def hidden_by_the_legend(fig) -> int:
    """How many plotted points (markers and the vertices of curves) of the figure's first axes lie under its
    legend, or outside the saved figure."""
    ax = fig.axes[0]
    fig.canvas.draw()
    box, page = ax.get_legend().get_window_extent(), fig.bbox
    points = [ax.transData.transform(xy) for line in ax.get_lines() if line.get_transform() == ax.transData
              for xy in line.get_xydata() if np.all(np.isfinite(xy))]
    return sum(box.contains(*p) or not page.contains(*p) for p in points) + (not page.contains(box.x1, box.y0))


def test_newton_needs_far_fewer_steps_than_gradient_descent(example, tmp_path, monkeypatch):
    module = example("newton")
    hidden = []
    save = module.save
    monkeypatch.setattr(module, "save", lambda fig, *a: (hidden.append(hidden_by_the_legend(fig)), save(fig, *a))[1])
    r = module.main(["--max-gd-steps", "3000", "--out", str(tmp_path)])
    assert hidden == [0]  # the legend once covered the Newton points between 1e-12 and 1e-16
    assert r["newton_steps"] is not None and r["newton_steps"] <= 6
    assert r["gd_steps"] is not None and r["gd_steps"] >= 20 * r["newton_steps"]
    losses = r["newton_losses"]
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert is_png(r["plot"])


def test_spectrum_lanczos_matches_the_explicit_hessian_during_training(example, tmp_path):
    r = example("spectrum").main(["--epochs", "2", "--every", "1", "--hidden", "4", "--rows", "32", "--top", "2",
                                  "--iterations", "30", "--runs", "2", "--check", "--out", str(tmp_path)])
    assert r["epochs"] == [0, 1, 2] and r["parameters"] == 64 * 4 + 4 + 4 * 10 + 10
    tops = np.array(r["top_eigenvalues"])
    assert np.all(np.isfinite(tops)) and np.all(tops[:, 0] >= tops[:, 1]) and tops[0, 0] != tops[-1, 0]
    assert r["check_relative_error"] < 1e-4  # float32 Lanczos against numpy's eigh of the 310×310 Hessian
    for density in r["densities"].values():
        assert abs(np.trapezoid(density.density, density.grid) - 1) < 1e-3
    assert is_png(r["plot"])


def test_plots_go_into_runs_by_default_never_into_the_working_folder(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = example("spiral").main(["--epochs", "2"])
    assert pathlib.Path(r["plot"]).resolve() == tmp_path / "runs" / "examples" / "spiral.png"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    for name in ("digits", "newton", "sine", "spectrum"):  # the same default in every example that plots
        line = next(line for line in (EXAMPLES / f"{name}.py").read_text().splitlines() if '"--out"' in line)
        assert 'default="runs/examples"' in line, (name, line)
    assert "runs/" in (EXAMPLES.parent / ".gitignore").read_text().split()  # ignored by the repository


def test_the_readme_lists_every_example_with_its_command():
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    for script in sorted(EXAMPLES.glob("[!_]*.py")):
        assert f"python examples/{script.name}" in readme, f"README.md does not list examples/{script.name}"


def test_dp_sgd_clips_from_ghost_norms_like_vmap_grad(example):
    r = example("dp_sgd").main(["--epochs", "2", "--hidden", "16", "--batch-size", "32"])
    assert r["difference"] < 1e-5  # the same clipped gradient as forming every example's gradient
    assert r["accuracy"] > 0.5 and r["private_accuracy"] > 0.2  # both train (10 classes: chance is 0.1)
