"""`funcnet train`: the default run, the run folder, resume, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from funcnet.apps import cli


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "funcnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_default_run_reaches_the_accuracy_target_and_writes_the_run_folder(tmp_path):
    proc = run_cli("train", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "run-001"
    assert f"run saved in {os.path.join('runs', 'run-001')}/" in proc.stdout
    assert {p.name for p in folder.iterdir()} == {"checkpoint.safetensors", "history.json", "curves.png"}
    summary = json.loads((folder / "history.json").read_text())
    assert summary["scores"]["test"]["accuracy"] >= 0.975
    assert summary["config"]["data"] == "digits" and summary["loss"] == "softmax_cross_entropy"
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run never reuses the folder
    proc = run_cli("train", "--no-progress", "--data", "xor", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "run-002" / "history.json").exists()


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
        (["--data", "sine", "--loss", "softmax_cross_entropy"], "regression"),
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
    assert cli.main(["train", "--no-progress", "--resume", "first", "--epochs", "4", "--out", "second"]) == 0
    assert (tmp_path / "first" / "checkpoint.safetensors").read_bytes() == before  # the old run is untouched
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    resumed = json.loads((tmp_path / "second" / "history.json").read_text())
    assert resumed["history"]["epoch"] == [1, 2, 3, 4]
    assert resumed["history"]["val_loss"] == full["history"]["val_loss"]
    assert resumed["scores"] == full["scores"]


def test_reference_option_trains_on_autodiff(tmp_path, capsys):
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "3", "--reference", "--out", "r"]) == 0
    assert "autodiff twins" in capsys.readouterr().out


def test_devices_option_trains_data_parallel(tmp_path):
    proc = run_cli("train", "--no-progress", "--data", "xor", "--epochs", "2", "--devices", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "data-parallel over 4 cpu devices" in proc.stdout
    proc = run_cli("train", "--no-progress", "--data", "xor", "--devices", "3", cwd=tmp_path)
    assert proc.returncode == 1 and "--batch-size 32 does not split over 3 devices" in proc.stderr
