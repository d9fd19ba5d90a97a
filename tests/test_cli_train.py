"""`funcnet train`: the default run, the run folder, resume, and one-line errors."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from funcnet.apps import cli


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "funcnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow
def test_default_run_reaches_the_accuracy_target_and_writes_the_run_folder(tmp_path):
    proc = run_cli("train", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "run-001"
    assert f"run saved in {os.path.join('runs', 'run-001')}/" in proc.stdout
    assert {p.name for p in folder.iterdir()} == {"checkpoint.safetensors", "history.json", "curves.png"}
    summary = json.loads((folder / "history.json").read_text())
    assert summary["scores"]["test"]["accuracy"] >= 0.975
    assert summary["config"]["data"] == "digits" and summary["loss"] == "softmax_cross_entropy_with_integer_labels"
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run never reuses the folder; the time it prints is the command's wall time, start-up included
    started = time.perf_counter()
    proc = run_cli("train", "--no-progress", "--data", "xor", "--epochs", "2", cwd=tmp_path)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "run-002" / "history.json").exists()
    printed = float(re.search(r"in ([0-9.]+) s$", proc.stdout.strip()).group(1))
    assert 0.75 * wall <= printed <= wall + 0.05, (printed, wall)


@pytest.mark.slow
def test_existing_out_folder_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = run_cli("train", "--out", str(out), "--data", "xor", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nope"], "unknown"),
        (["--data", "missing.npz"], "missing.npz"),
        (["--data", "sine", "--loss", "softmax_cross_entropy_with_integer_labels"], "regression"),
        (["--data", "xor", "--lr", "-1"], "--lr must be positive"),
        (["--resume", "no-such-run"], "no-such-run"),
    ],
)
def test_bad_settings_and_files_give_one_line(tmp_path, args, message, capsys):
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("funcnet train: error:")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_data_file_gives_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n3,x,1\n")
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.csv" in err and "line 2" in err


@pytest.mark.slow
def test_argparse_errors_exit_2_without_traceback(tmp_path):
    proc = run_cli("train", "--hidden", "12,x", cwd=tmp_path)
    assert proc.returncode == 2 and "comma-separated" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--activation", "swish", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_resume_continues_into_a_new_folder(tmp_path, capsys):
    os.chdir(tmp_path)
    common = ["train", "--no-progress", "--data", "spiral", "--hidden", "8", "--patience", "100"]
    assert cli.main([*common, "--epochs", "4", "--out", "full"]) == 0
    assert cli.main([*common, "--epochs", "2", "--out", "first"]) == 0
    before = (tmp_path / "first" / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--no-progress", "--resume", "first", "--epochs", "4", "--out", "second"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == f"resuming {os.path.join('first', 'checkpoint.safetensors')} after epoch 2: training up to " \
                         "epoch 4 into second/", first_line
    assert (tmp_path / "first" / "checkpoint.safetensors").read_bytes() == before  # the old run is untouched
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    resumed = json.loads((tmp_path / "second" / "history.json").read_text())
    assert resumed["history"]["epoch"] == [1, 2, 3, 4]
    assert resumed["history"]["val_loss"] == full["history"]["val_loss"]
    assert resumed["scores"] == full["scores"]


def test_the_old_loss_name_is_accepted_with_a_note_and_old_runs_resume_under_the_new_one(tmp_path, capsys):
    from funcnet.apps import run

    parsed = cli.build_parser().parse_args(["train", "--loss", "softmax_cross_entropy"])
    assert parsed.loss == "softmax_cross_entropy_with_integer_labels"
    assert "--loss softmax_cross_entropy is deprecated" in capsys.readouterr().err
    # a run saved with the old name: its settings read back under the new one, and a --loss given as the new
    # name is no change
    saved = {**run.RunConfig(data="xor").to_json(), "loss": "softmax_cross_entropy"}
    cfg = run.resumed_config(saved, {"loss": "softmax_cross_entropy_with_integer_labels"}, tmp_path)
    assert cfg.loss == "softmax_cross_entropy_with_integer_labels"
    cfg.validate()


def test_reference_option_trains_on_autodiff(tmp_path, capsys):
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "3", "--reference", "--out", "r"]) == 0
    assert "autodiff twins" in capsys.readouterr().out


@pytest.mark.slow
def test_devices_option_trains_data_parallel(tmp_path):
    proc = run_cli("train", "--no-progress", "--data", "xor", "--epochs", "2", "--devices", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "data-parallel over 4 cpu devices" in proc.stdout
    proc = run_cli("train", "--no-progress", "--data", "xor", "--devices", "3", cwd=tmp_path)
    assert proc.returncode == 1 and "--batch-size 32 does not split over 3 devices" in proc.stderr


def test_version_and_each_default_shown_once(capsys):
    import funcnet

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"funcnet {funcnet.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    assert "(default: None)" not in text and "(default:" not in text
    for option, default in (("--lr LR", "0.001"), ("--epochs EPOCHS", "30"), ("--hidden HIDDEN", "256")):
        section = text.split(option, 1)[1].split(" --", 1)[0]
        assert section.count("default") == 1 and f"[default: {default}]" in section, section


def test_resume_applies_training_options_and_refuses_the_others(tmp_path, capsys):
    os.chdir(tmp_path)
    base = ["train", "--no-progress", "--data", "xor", "--hidden", "4"]
    assert cli.main([*base, "--epochs", "2", "--out", "first"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--no-progress", "--resume", "first", "--epochs", "3", "--lr", "0.01",
                     "--hidden", "4", "--out", "second"]) == 0  # --hidden equal to the run's is fine
    resumed = json.loads((tmp_path / "second" / "history.json").read_text())
    assert resumed["config"]["lr"] == 0.01 and resumed["history"]["epoch"] == [1, 2, 3]
    for args, fragment in ((["--hidden", "8"], "--hidden 8 differs from the run's 4"),
                           (["--activation", "tanh"], "--activation tanh differs from the run's relu"),
                           (["--optimizer", "sgd"], "--optimizer sgd differs"),
                           (["--curvature"], "--curvature True differs from the run's False"),
                           (["--epochs", "2"], "trained 2 epochs already"),
                           ([], "trained 2 epochs already")):
        capsys.readouterr()
        assert cli.main(["train", "--no-progress", "--resume", "first", *args, "--out", "third"]) == 1, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err
        assert not (tmp_path / "third").exists()


def png_size(path) -> tuple[int, int]:
    header = pathlib.Path(path).read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_early_stopping_is_reported_and_regression_runs_write_strict_json_and_a_loss_plot(tmp_path, capsys):
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", "sine", "--epochs", "60", "--patience", "2",
                     "--lr", "0.05", "--out", "sine"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "sine" / "history.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"history.json holds {c}, not standard JSON"))
    history = summary["history"]
    assert history["stopped_early"] and history["stopped_epoch"] == len(history["epoch"]) < 60
    assert (f"early stopping after epoch {history['stopped_epoch']}: no lower validation loss for 2 epochs; "
            f"kept the parameters of epoch {history['restored_epoch']}") in out
    assert history["val_accuracy"] == [None] * len(history["epoch"]) and "accuracy" not in out
    assert history["hessian_top_eigenvalue"] == history["hessian_trace"] == []  # recorded with --curvature only
    assert summary["scores"]["test"]["accuracy"] is None
    width, _ = png_size(tmp_path / "sine" / "curves.png")
    assert width == 500  # one panel (loss); a classification run draws two (1000 pixels wide)
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "2", "--out", "xor"]) == 0
    assert png_size(tmp_path / "xor" / "curves.png")[0] == 1000


@pytest.mark.slow
def test_the_compile_cache_fills_once_and_changes_no_result(tmp_path):
    def train(name, cache):
        proc = subprocess.run([sys.executable, "-m", "funcnet", "train", "--no-progress", "--data", "xor",
                               "--epochs", "3", "--out", name], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "FUNCNET_COMPILE_CACHE": str(cache),
                                                "PYTHONPATH": os.getcwd()})
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / name / "history.json").read_text())

    def entries(folder):  # name -> modification time: a compile that missed the cache writes its entry again
        return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    cache = tmp_path / "cache"
    runs = [train("a", cache)]
    first = entries(cache)
    assert first, "the first run left nothing in the cache"
    runs.append(train("b", cache))
    assert entries(cache) == first  # the second run found every program there and wrote none
    runs.append(train("c", "off"))
    assert not (tmp_path / "off").exists()
    for summary in runs:
        summary.pop("seconds")
    assert runs[0] == runs[1] == runs[2]
    from safetensors import safe_open  # the order of the files' metadata varies; their contents must not

    a, b = (safe_open(tmp_path / name / "checkpoint.safetensors", "numpy") for name in ("a", "b"))
    assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key))


def test_curvature_option_records_the_top_eigenvalue_and_trace_per_epoch(tmp_path, capsys):
    os.chdir(tmp_path)
    common = ["train", "--no-progress", "--data", "xor", "--hidden", "4"]
    assert cli.main([*common, "--epochs", "2", "--curvature", "--out", "c"]) == 0
    assert "curvature after epoch 2: top Hessian eigenvalue" in capsys.readouterr().out
    assert cli.main(["train", "--no-progress", "--resume", "c", "--epochs", "3", "--out", "c3"]) == 0
    first, resumed = (json.loads((tmp_path / name / "history.json").read_text())["history"] for name in ("c", "c3"))
    for name in ("hessian_top_eigenvalue", "hessian_trace"):
        assert len(first[name]) == 2 and all(np.isfinite(first[name])) and first[name][0] != first[name][1]
        assert resumed[name][:2] == first[name] and np.isfinite(resumed[name][2])
    assert png_size(tmp_path / "c" / "curves.png") == (1000, 800)  # loss, accuracy and the two curvature panels


@pytest.mark.parametrize("classifies", [False, True])
@pytest.mark.parametrize("curvature", [False, True])
def test_the_learning_curves_keep_their_axis_labels_inside_the_figure(classifies, curvature):
    """A regression run's loss spans less than a decade (sine: 0.5 -> 0.119), so the log axis labels its minor
    ticks (2×10⁻¹): with 0.1 of the width as the left margin they and the axis title were cut off."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from funcnet.apps import run

    n = 30
    losses = list(np.geomspace(0.5, 0.119, n))
    accuracy = list(np.linspace(0.5, 0.9, n)) if classifies else [None] * n
    history = {"epoch": list(range(1, n + 1)), "train_loss": losses, "val_loss": losses, "train_accuracy": accuracy,
               "val_accuracy": accuracy, "restored_epoch": n}
    if curvature:  # two more panels: three in a row, or four in a square
        history.update(hessian_top_eigenvalue=list(np.geomspace(40, 3, n)), hessian_trace=list(np.linspace(-2, 900, n)))
    fig = run.history_figure(history, "sine: mlp([1, 256, 1], relu)")
    assert len(fig.axes) == (1 + classifies + 2 * curvature)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    def shown(ax, labels, axis):  # the labels of ticks inside the axis's range (the others are not drawn)
        low, high = sorted(ax.get_ylim() if axis == 1 else ax.get_xlim())
        return [t for t in labels if low <= t.get_position()[axis] <= high]

    texts = [t for ax in fig.axes for t in (
        *shown(ax, ax.get_yticklabels() + ax.get_yticklabels(minor=True), 1), *shown(ax, ax.get_xticklabels(), 0),
        ax.yaxis.label, ax.xaxis.label, ax.title) if t.get_text()] + [fig._suptitle]
    width, height = canvas.get_width_height()
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height, (t.get_text(), box)


def test_the_bundled_regression_set_is_fitted_by_its_defaults(tmp_path, capsys):
    """`funcnet train --data sine` with no other option fits sin(x) to about the noise variance (0.0025), as
    examples/sine.py does (the digits' defaults ended at test MSE 0.119); a given option still wins."""
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", "sine", "--out", "s"]) == 0
    summary = json.loads((tmp_path / "s" / "history.json").read_text())
    assert summary["config"]["activation"] == "tanh" and summary["scores"]["test"]["loss"] <= 0.005
    assert cli.main(["train", "--no-progress", "--data", "sine", "--epochs", "2", "--activation", "relu",
                     "--out", "r"]) == 0
    config = json.loads((tmp_path / "r" / "history.json").read_text())["config"]
    assert config["activation"] == "relu" and config["epochs"] == 2 and config["hidden"] == [16]


def test_resume_reads_the_runs_own_data_from_any_working_folder(tmp_path, capsys):
    """The run stores its data file's absolute path and digest: resumed from another folder that holds another
    d.csv, it reads its own (it read the other one, silently); changed data is refused (test_hostile_inputs)."""
    rows = lambda label: "".join(f"{i % 7},{i % 5},{label(i)}\n" for i in range(40))  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "d.csv").write_text(rows(lambda i: i % 2))
    (tmp_path / "b" / "d.csv").write_text(rows(lambda i: (i // 3) % 2))  # the same shape, other labels
    os.chdir(tmp_path / "a")
    assert cli.main(["train", "--no-progress", "--data", "d.csv", "--epochs", "1", "--out", "r1"]) == 0
    os.chdir(tmp_path / "b")
    assert cli.main(["train", "--no-progress", "--resume", "../a/r1", "--epochs", "2", "--out", "r2"]) == 0
    config = json.loads((tmp_path / "b" / "r2" / "history.json").read_text())["config"]
    assert config["data"] == str(tmp_path / "a" / "d.csv")
    from funcnet.apps import run

    assert config["data_digest"] == run.data_digest(config["data"]) != run.data_digest("d.csv")
