"""Hostile command lines: one line on stderr naming the option and the value, a non-zero exit, nothing run.

Every case is refused before any data is loaded, any folder is made or anything
is measured, so the tables run in-process in a few seconds. A new case is one line.
"""

import importlib.util
import os

import jax
import pytest

from funcnet.apps import cli, run
from funcnet.apps.bench import suite

TRAIN = [  # (arguments after `funcnet train --no-progress --data xor`, exit status, fragments of the message)
    (["--epochs", "0"], 1, ["--epochs", "got 0"]),
    (["--epochs", "-5"], 1, ["--epochs", "got -5"]),
    (["--lam", "-1"], 1, ["--lam", "-1"]),
    (["--lam", "nan"], 1, ["--lam", "nan"]),
    (["--patience", "-1"], 1, ["--patience", "-1"]),
    (["--patience", "0"], 1, ["--patience", "got 0"]),
    (["--schedule", "power", "--decay", "nan"], 1, ["--decay", "nan"]),
    (["--decay", "-1"], 1, ["--decay", "-1"]),
    (["--decay", "inf"], 1, ["--decay", "inf"]),
    (["--warmup", "0"], 1, ["--warmup", "got 0"]),
    (["--seed", "99999999999999999999"], 1, ["--seed", "99999999999999999999"]),
    (["--seed", "-1"], 1, ["--seed", "-1"]),
    (["--seed", "4294967296"], 1, ["--seed", "4294967296"]),  # would silently repeat seed 0
    (["--lr", "nan"], 1, ["--lr", "nan"]),
    (["--lr", "inf"], 1, ["--lr", "inf"]),
    (["--batch-size", "0"], 1, ["--batch-size", "got 0"]),
    (["--batch-size", "-4"], 1, ["--batch-size", "-4"]),
    (["--dropout", "1.5"], 1, ["--dropout", "1.5"]),
    (["--dropout", "nan"], 1, ["--dropout", "nan"]),
    (["--dropout", "-0.5"], 1, ["--dropout", "-0.5"]),
    (["--hidden", "2000000000"], 1, ["--hidden 2000000000", "parameters", "GiB"]),
    (["--hidden", ""], 2, ["--hidden", "''"]),
    (["--hidden", "0"], 2, ["--hidden", "'0'"]),
    (["--epochs", "two"], 2, ["--epochs", "'two'"]),
    (["--out", "a-file/run"], 1, ["--out a-file/run", "cannot create the folder", "Not a directory"]),
    (["--out", "a-run/inner"], 1, ["--out a-run/inner", "inside the run folder"]),  # nested a run in a run
    (["--epochs", "1_0"], 2, ["--epochs", "digits 0-9", "'1_0'"]),  # was read as 10
    (["--epochs", "\uff11\uff10"], 2, ["--epochs", "digits 0-9"]),  # full-width 10: was read as 10
    (["--hidden", "8_0"], 2, ["--hidden", "'8_0'"]),  # was a layer of 80
    (["--lr", "1_0"], 2, ["--lr", "'1_0'"]),
    (["--lr", "1e308"], 1, ["--lr 1e+308", "float32"]),  # overflowed to inf in float32, with a NumPy warning
    (["--decay", "1e39"], 1, ["--decay 1e+39", "float32"]),
]

BENCH = [  # (arguments after `funcnet bench`, fragments of the message); all exit with status 2
    (["--steps", "0"], ["--steps", "got 0"]),
    (["--steps", "-3"], ["--steps", "got -3"]),
    (["--rounds", "0"], ["--rounds", "got 0"]),
    (["--scaling-devices", "-1"], ["--scaling-devices", "got -1"]),
    (["--configs", ""], ["--configs", "no configuration"]),
    (["--configs", " , "], ["--configs", "no configuration"]),
    (["--frameworks", ""], ["--frameworks", "no framework"]),
    (["--markdown", "no-such-folder/bench.md"], ["--markdown", "no-such-folder", "does not exist"]),
    (["--plot", "no-such-folder/bench.png"], ["--plot", "no-such-folder", "does not exist"]),
    (["--markdown", "."], ["--markdown", "folder"]),  # with --overwrite: a folder, not a file
    (["--heads", "8192,x"], ["--heads", "class counts", "8192,x"]),
    (["--heads", "1"], ["--heads", "at least 2"]),
    (["--head-rounds", "-1"], ["--head-rounds", "got -1"]),
]
PACKAGES = {"flax_nnx": "flax", "equinox": "equinox", "pytorch": "torch"}  # the peers and what they import
PEERS = [f for f, package in PACKAGES.items() if importlib.util.find_spec(package) is None]


def status(argv: list[str]) -> int:
    """The exit status of ``funcnet *argv`` run in-process (argparse exits by raising SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return exit.code


def one_line(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.mark.parametrize("args, code, fragments", TRAIN, ids=[" ".join(a) for a, _, _ in TRAIN])
def test_bad_train_options_give_one_line_naming_the_option(tmp_path, capsys, args, code, fragments):
    os.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-run").mkdir()
    (tmp_path / "a-run" / "history.json").write_text("{}")
    assert status(["train", "--no-progress", "--data", "xor", *args]) == code
    captured = capsys.readouterr()
    one_line(captured.err, "funcnet train: error:", *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder left


@pytest.mark.parametrize("args, fragments", BENCH, ids=[" ".join(a) for a, _ in BENCH])
def test_bad_bench_options_give_one_line_before_measuring(tmp_path, capsys, monkeypatch, args, fragments):
    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("measured despite a bad option"))
    os.chdir(tmp_path)
    with_overwrite = ["--overwrite"] if "." in args else []
    assert status(["bench", *args, *with_overwrite]) == 2
    one_line(capsys.readouterr().err, "funcnet bench: error:", *fragments)


@pytest.mark.skipif(not PEERS, reason="every peer framework is installed")
@pytest.mark.parametrize("framework", PEERS)
def test_an_asked_for_peer_that_is_not_installed_is_named_with_the_install_command(capsys, monkeypatch, framework):
    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("measured without the framework"))
    assert cli.main(["bench", "--configs", "small", "--frameworks", framework]) == 2
    one_line(capsys.readouterr().err, framework, PACKAGES[framework], "pip install '.[bench]'")


@pytest.mark.parametrize("args, fragments", [
    (["gradcheck", "--seed", "-1", "--op", "relu"], ["funcnet gradcheck: error:", "--seed", "-1"]),
    (["gradcheck", "--seed", "99999999999999999999", "--op", "relu"], ["--seed", "99999999999999999999"]),
    (["train", "--no-such-option"], ["funcnet: error:", "--no-such-option", "--help"]),
    ([], ["funcnet: error:", "command", "--help"]),
])
def test_gradcheck_seed_and_argparse_errors_are_one_line(capsys, args, fragments):
    assert status(args) == 2
    one_line(capsys.readouterr().err, *fragments)


def test_running_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """An allocation XLA refuses (RESOURCE_EXHAUSTED) is reported in one line, not as a traceback."""
    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 512000000000 bytes.\nmore")

    monkeypatch.setattr(run, "train_run", exhausted)
    os.chdir(tmp_path)
    assert cli.main(["train", "--no-progress", "--data", "xor"]) == 1
    one_line(capsys.readouterr().err, "funcnet train: error: out of memory", "RESOURCE_EXHAUSTED", "--hidden")


def test_a_network_too_big_for_the_memory_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "device_memory", lambda: (2**30, "memory of the test device"))
    os.chdir(tmp_path)
    # 2-20000-2: 100,002 parameters, 3.2 MB: fits; 2-8000-8000-2: 64 million parameters, 2 GB: does not
    assert cli.main(["train", "--no-progress", "--data", "xor", "--hidden", "8000,8000", "--out", "big"]) == 1
    one_line(capsys.readouterr().err, "--hidden 8000,8000", "2-8000-8000-2", "1.0 GiB memory of the test device")
    assert not (tmp_path / "big").exists()
