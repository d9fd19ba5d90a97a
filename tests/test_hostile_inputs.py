"""Hostile input across the API, the CLI and the files: one clear line, never a wrong result or a lost file.

Each row is a hostile input that once gave a traceback, a silent wrong result or
a lost file, and now gives one line naming the function or option and the value
(or a correct result). A new case is one line.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from funcnet import checkpoint, data, layers, losses, nn, train
from funcnet.apps import cli, run
from funcnet.apps.bench import suite
from funcnet.checkpoint import CheckpointError
from funcnet.data import DataError, Split
from funcnet.gradcheck import check_gradients

NAN = float("nan")
ONES = Split(np.ones((4, 2), np.float32), None)
WITH_NAN = Split(np.array([[1.0], [NAN], [2.0]]), None)
ALL_INF = Split(np.full((2, 2), np.inf), None)
RUN = {"data": "xor", "hidden": [8], "activation": "relu", "optimizer": "adam", "epochs": 1}  # a saved run's settings
STATE = {"best_loss": 0.5, "bad_epochs": 0, "steps": 1, "history": {  # a training state as fit saves it after epoch 1
    "epoch": [1], "train_loss": [0.5], "train_accuracy": [0.5], "val_loss": [0.5], "val_accuracy": [0.5],
    "best_epoch": 1, "stopped_early": False, "stopped_epoch": None, "restored_epoch": None}}
CRAFTED = {  # checkpoints with a valid digest and one bad setting or training state (file name: config)
    "run-ok/checkpoint.safetensors": {"run": RUN, **STATE},
    "run-no-history": {"run": RUN, **{k: v for k, v in STATE.items() if k != "history"}},
    "run-history-x": {"run": RUN, **STATE, "history": "x"},
    "run-epochs-x": {"run": RUN, **STATE, "history": {**STATE["history"], "epoch": ["1"]}},
    "run-steps-2e40": {"run": RUN, **STATE, "steps": 2**40},
    "run-lr-1e400": {"run": {**RUN, "lr": 10**400}, **STATE},
    "run-lr-1e300": {"run": {**RUN, "lr": 1e300}, **STATE},
    "run-reference-yes": {"run": {**RUN, "reference": "yes"}, **STATE},
    "run-dropout-false": {"run": {**RUN, "dropout": False}, **STATE},
    "run-hidden-empty": {"run": {**RUN, "hidden": []}, **STATE},
    "run-loss-list": {"run": {**RUN, "loss": []}, **STATE},
    "run-digest-x": {"run": {**RUN, "data_digest": "x"}, **STATE},
}


def raises(exc, *fragments):
    """pytest.raises whose one-line message must contain every fragment."""
    return pytest.raises(exc, match="^(?=[^\n]*$)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.fixture
def files(tmp_path):
    """The files the rows name, in a fresh working folder."""
    os.chdir(tmp_path)
    rows = lambda label: "".join(f"{i % 7},{i % 5},{label(i)}\n" for i in range(40))  # noqa: E731
    (tmp_path / "one-class.csv").write_text(rows(lambda i: 0))
    (tmp_path / "underscore.csv").write_text(rows(lambda i: "1_0" if i % 2 else "0"))
    params = layers.mlp([2, 8, 2]).init(jax.random.key(0))[1]
    for name, config in {"run-a-list": {"run": [1, 2]}, "run-hidden-5": {"run": {**RUN, "hidden": 5}},
                         "run-data-123": {"run": {**RUN, "data": 123}}}.items():
        checkpoint.save(tmp_path / name, params, step=1, config=config)
    for name, config in CRAFTED.items():
        checkpoint.save(tmp_path / name, params, step=1, config=config)
    checkpoint.save(tmp_path / "ckpt", params, step=1)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "outlier.csv").write_text(rows(lambda i: i % 2) + "1,2,999999\n")  # line 41
    return tmp_path


def status(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return exit.code


CLI = [  # (arguments after `funcnet`, exit status, fragments of the one line on stderr)
    (["train", "--data", "xor", "--schedule", "power", "--warmup", "99999999999999999999"], 1,
     ["--warmup", "99999999999999999999"]),  # was an OverflowError traceback from the jitted schedule
    (["train", "--data", ""], 1, ["--data", "''"]),  # was read as the folder "." of MNIST files
    (["train", "--data", "xor", "--out", ""], 2, ["--out", "''"]),  # was taken for no --out (runs/run-001)
    (["train", "--resume", ""], 2, ["--resume", "''"]),  # was ignored: a new run from scratch
    (["train", "--data", "xor", "--devices", "99999999999999999999"], 1, ["--devices", "99999999999999999999"]),
    (["train", "--data", "xor", "--devices", "1000000", "--batch-size", "1000000"], 1, ["--devices", "4096"]),  # hung
    (["train", "--data", "one-class.csv"], 1, ["one-class.csv", "every class label is 0"]),  # trained to loss 0
    (["train", "--data", "underscore.csv"], 1, ["underscore.csv", "line 2, column 3", "'1_0'"]),  # was read as 10
    (["train", "--resume", "run-a-list", "--epochs", "3"], 1, ["run-a-list", "not a checkpoint of `funcnet train`"]),
    (["train", "--resume", "run-hidden-5", "--epochs", "3"], 1, ["--hidden", "got 5"]),  # was a TypeError traceback
    (["train", "--resume", "run-data-123", "--epochs", "3"], 1, ["--data", "got 123"]),  # was a TypeError traceback
    (["train", "--data", "outlier.csv"], 1, ["outlier.csv: line 41", "999999", "1,000,000 classes"]),  # 3.9 GB
    (["train", "--resume", "fifo"], 1, ["fifo: is not a regular file"]),  # was "no such checkpoint file"
    (["train", "--resume", "run-ok", "--epochs", "3", "--out", "run-ok/again"], 1, ["--out run-ok/again", "inside the run folder"]),
    (["train", "--resume", "run-no-history", "--epochs", "3"], 1, ["run-no-history", "history = None"]),  # KeyError
    (["train", "--resume", "run-history-x", "--epochs", "3"], 1, ["history = 'x'"]),  # was a TypeError traceback
    (["train", "--resume", "run-epochs-x", "--epochs", "3"], 1, ["history['epoch'] = ['1']"]),
    (["train", "--resume", "run-steps-2e40", "--epochs", "3"], 1, ["steps = 1099511627776"]),  # OverflowError
    (["train", "--resume", "run-lr-1e400", "--epochs", "3"], 1, ["saved settings", "--lr 1000", "float32"]),  # OverflowError
    (["train", "--resume", "run-lr-1e300", "--epochs", "3"], 1, ["saved settings", "--lr 1e+300", "float32"]),
    (["train", "--resume", "run-reference-yes", "--epochs", "3"], 1, ["--reference", "'yes'"]),  # was taken as on
    (["train", "--resume", "run-dropout-false", "--epochs", "3"], 1, ["--dropout", "False"]),  # was dropout 0
    (["train", "--resume", "run-hidden-empty", "--epochs", "3"], 1, ["--hidden"]),  # was a network without layers
    (["train", "--resume", "run-loss-list", "--epochs", "3"], 1, ["--loss", "[]"]),  # unhashable: a traceback
    (["train", "--resume", "run-digest-x", "--epochs", "3"], 1, ["data digest", "'x'"]),
    (["bench", "--markdown", "r.png", "--plot", "r.png"], 2, ["--markdown and --plot", "same file"]),  # plot won
    (["bench", "--markdown", ""], 2, ["--markdown", "''"]),  # was ignored: no report written
    (["bench", "--plot", " "], 2, ["--plot", "' '"]),
    (["bench", "--scaling-devices", "99999999999999999999"], 2, ["--scaling-devices", "at most 4096"]),  # traceback
]


@pytest.mark.parametrize("args, code, fragments", CLI, ids=[" ".join(a) for a, _, _ in CLI])
def test_hostile_command_lines_get_one_line_and_leave_no_run_folder(files, capsys, monkeypatch, args, code,
                                                                     fragments):
    monkeypatch.setattr(suite, "run", lambda *a, **k: pytest.fail("measured despite a bad option"))
    extra = ["--no-progress", "--epochs", "1"] if args[0] == "train" and "--resume" not in args else []
    assert status([*args, *extra]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for f in [f"funcnet {args[0]}: error:", *fragments]:
        assert f in err, (f, err)
    assert not (files / "runs").exists() or not any((files / "runs").iterdir())
    assert not (files / "r.png").exists()


API = [  # (a call that must fail, error, fragments of its one-line message)
    (lambda p: data.load(123), DataError, ["funcnet.data.load", "got 123"]),  # was pathlib's TypeError
    (lambda p: data.load(""), DataError, ["funcnet.data.load", "got ''"]),  # was read as the cwd
    (lambda p: data.load("xor", seed=-1), DataError, ["funcnet.data.load", "`seed`", "-1"]),  # NumPy's words
    (lambda p: data.load("xor", seed=True), DataError, ["funcnet.data.load", "`seed`", "True"]),  # was seed 1
    (lambda p: data.split(np.ones((9, 2)), np.zeros(9), seed=1.5), DataError, ["funcnet.data.split", "1.5"]),
    (lambda p: data.xor(seed=-1), DataError, ["funcnet.data.xor", "`seed`", "-1"]),
    (lambda p: data.spiral(arms=3.0), DataError, ["funcnet.data.spiral", "`arms`", "3.0"]),  # NumPy TypeError
    (lambda p: data.standardize(ONES, epsilon=NAN), DataError, ["funcnet.data.standardize", "`epsilon`", "nan"]),  # NaN
    (lambda p: data.standardize(ONES, epsilon=0), DataError, ["funcnet.data.standardize", "`epsilon`", "got 0"]),  # x/0
    (lambda p: data.standardize(WITH_NAN), DataError, ["training split", "1 NaN or infinite", "row 1"]),  # all NaN
    (lambda p: data.standardize(ONES, ONES, ALL_INF), DataError, ["split 2 of *others", "4 NaN or infinite"]),
    (lambda p: data.standardize(np.ones((3, 2))), DataError, ["funcnet.data.standardize", "Split(x, y)", "ndarray"]),
    (lambda p: data.standardize(Split(np.array([["a"]]), None)), DataError, ["standardize", "not numbers", "<U1"]),
    (lambda p: data.load_csv(p / "underscore.csv"), DataError, ["line 2, column 3", "'1_0' is not a finite"]),
    (lambda p: checkpoint.save(p / "ckpt", {"w": np.ones(2)}, overwrite="no"), CheckpointError,
     ["overwrite must be True or False", "'no'"]),  # "no" is truthy: the checkpoint was replaced
    (lambda p: checkpoint.copy(p / "run-a-list", p / "ckpt", overwrite="no"), CheckpointError, ["overwrite", "'no'"]),
    (lambda p: checkpoint.save(p / "new", {"w": np.ones(2)}, step=True), CheckpointError, ["step", "True"]),
    (lambda p: checkpoint.save(p / "new", {"w": np.ones(2)}, config={"lr": NAN}), CheckpointError,
     ["config['lr'] is nan", "JSON"]),  # was written as NaN, which is not JSON
    (lambda p: checkpoint.save(123, {"w": np.ones(2)}), CheckpointError, ["funcnet.checkpoint.save", "got 123"]),
    (lambda p: checkpoint.save("", {"w": np.ones(2)}), CheckpointError, ["funcnet.checkpoint.save", "got ''"]),
    (lambda p: checkpoint.restore(None), CheckpointError, ["funcnet.checkpoint.restore", "got None"]),
    (lambda p: checkpoint.restore(p / "ckpt", like=5), CheckpointError, ["`like` must be a dict", "int"]),
    (lambda p: checkpoint.restore(p / "folder"), CheckpointError, ["folder: is a directory, not a checkpoint"]),
    (lambda p: checkpoint.restore(p / "fifo"), CheckpointError, ["fifo: is not a regular file"]),  # "no such file"
    (lambda p: checkpoint.save(p / "new", {"w": np.ones(2)}, step=2**70), CheckpointError,
     ["step", "2**63", str(2**70)]),  # was saved, and read back by no int64 counter
    (lambda p: checkpoint.save(p / "new", {0: np.ones(2), "0": np.ones(2)}), CheckpointError,
     ["params", "0 and '0'", "string keys"]),  # was JAX's "Comparator raised exception"
    (lambda p: checkpoint.save(p / "new", {"key": jax.random.key(0)}), CheckpointError,
     ["params/key is a PRNG key", "jax.random.key_data"]),  # was a TypeError from NumPy
    (lambda p: checkpoint.save(p / ("n" * 300), {"w": np.ones(2)}), CheckpointError,
     ["File name too long", "300 characters"]),  # was a bare OSError
    (lambda p: checkpoint.save(p / "new", {"w": np.ones(2)}, config=_nested(10_000)), CheckpointError,
     ["config nests more than 100 levels"]),  # was a RecursionError
    (lambda p: data.load(p / "outlier.csv"), DataError, ["outlier.csv: line 41: class label 999999",
                                                         "1,000,000 classes", "number the classes from 0"]),
    (lambda p: _fit(p, config={"history": 1}), CheckpointError, ["fit", "'history' is reserved"]),  # broke resume
    (lambda p: _fit(p, config={"lr": NAN}), CheckpointError, ["config['lr'] is nan"]),
    (lambda p: _fit(p, lam="0.1"), TypeError, ["fit: lam must be a number", "'0.1'"]),  # crashed in the objective
    (lambda p: _fit(p, optimizer="adam"), TypeError, ["fit: optimizer must be an optax", "'adam'"]),
    (lambda p: train.evaluate(layers.mlp([2, 3]), {}, "train"), TypeError, ["evaluate", "Split", "'train'"]),
    (lambda p: train.evaluate(layers.mlp([2, 3]), {}, Split(np.ones((0, 2)), np.ones(0, int))), ValueError,
     ["evaluate: the split is empty"]),  # was a NaN loss
    (lambda p: layers.mlp([2, True, 3]), ValueError, ["mlp: sizes", "True"]),  # was a 1-wide layer
    (lambda p: layers.Dense(True), ValueError, ["Dense: units", "True"]),
    (lambda p: layers.mlp(5), TypeError, ["mlp: sizes must be a list", "5"]),  # 'int' object is not iterable
    (lambda p: layers.serial(1), TypeError, ["serial: expected layers", "1"]),  # AttributeError
    (lambda p: layers.branches(layers.Dense(2), "x"), TypeError, ["branches: expected layers", "'x'"]),
    # issue 23, items 8, 15 and 18: invalid values once accepted, or refused with a traceback
    (lambda p: train.evaluate(_NET, _P, Split(_XOR.test.x, _XOR.test.y + 5)), ValueError,
     ["evaluate", "labels must lie in [0, 2)", "from 5 to 6"]),  # was {'loss': nan, 'accuracy': 0.0}
    (lambda p: train.evaluate(_NET, _P, {"test": Split(_nan_at_1(_XOR.test.x), _XOR.test.y)}), ValueError,
     ["evaluate", "'test' inputs", "1 NaN", "row 1"]),  # evaluated silently
    (lambda p: losses.huber_loss(np.ones(2), delta=-1), ValueError, ["huber_loss", "`delta`", ">= 0", "-1"]),  # -3.5
    (lambda p: losses.sigmoid_focal_loss(np.ones(2), np.ones(2), alpha=2), ValueError,
     ["sigmoid_focal_loss", "`alpha`", "[0, 1]", "2"]),  # a negative loss
    (lambda p: losses.smooth_labels(np.eye(3), 2), ValueError, ["smooth_labels", "`alpha`", "[0, 1]"]),  # labels < 0
    (lambda p: losses.smooth_labels(np.eye(3), "0.1"), TypeError, ["smooth_labels", "`alpha`", "'0.1'"]),  # traceback
    (lambda p: nn.leaky_relu(np.ones(2), "1e-5"), TypeError, ["leaky_relu", "`negative_slope`", "'1e-5'"]),  # dtype
    (lambda p: losses.multiclass_svm_loss(np.ones((2, 3)), np.zeros(2, int), "2"), TypeError,
     ["multiclass_svm_loss", "`margin`", "'2'"]),  # was taken as 2.0
    (lambda p: layers.mlp([2, 3], fused="no"), TypeError, ["mlp: fused must be True or False", "'no'"]),  # was True
    (lambda p: losses.linear_softmax_cross_entropy(*_HEAD, where=np.array([1.0, 0.0])), TypeError,
     ["linear_softmax_cross_entropy", "`where`", "boolean", "float"]),  # was cast to bool
    (lambda p: losses.linear_softmax_cross_entropy(*_HEAD, where="yes"), TypeError,
     ["linear_softmax_cross_entropy", "`where`", "'yes'"]),
    (lambda p: layers.LayerNorm(epsilon=-1), ValueError, ["LayerNorm", "`epsilon`", ">= 0", "-1"]),  # until apply
    (lambda p: layers.LayerNorm(epsilon="a"), TypeError, ["LayerNorm", "`epsilon`", "'a'"]),
    (lambda p: layers.RMSNorm(epsilon=NAN), ValueError, ["RMSNorm", "`epsilon`", "nan"]),
    (lambda p: check_gradients(_SQ, np.ones(3), probes=0), ValueError, ["check_gradients", "`probes`", "got 0"]),
    (lambda p: check_gradients(_SQ, np.ones(3), step=-1e-6), ValueError, ["check_gradients", "step", "> 0"]),
    (lambda p: check_gradients(_SQ, np.ones(3), step=0), ValueError, ["check_gradients", "step", "got 0"]),
    (lambda p: check_gradients(_SQ, np.ones(3), tolerances={"float64": {"autodif": 1}}), ValueError,
     ["check_gradients", "tolerances['float64']", "autodiff, finite_diff", "'autodif'"]),  # ignored
    (lambda p: check_gradients(_SQ, np.ones(3), tolerances={"f64": {}}), ValueError, ["unknown dtype key 'f64'"]),
    (lambda p: check_gradients(_SQ, np.ones(3), argnums=1.0), TypeError, ["check_gradients", "argnums", "1.0"]),
    (lambda p: check_gradients(_SQ, np.ones(3), tolerances=5), TypeError, ["check_gradients", "tolerances", "5"]),
    (lambda p: check_gradients(_SQ, np.ones(3), seed=-1), ValueError, ["check_gradients", "`seed`", "-1"]),
    (lambda p: check_gradients(_SQ, np.arange(3)), TypeError, ["check_gradients", "args[0]", "integer"]),
    (lambda p: nn.squareplus([[1, 2], [3]]), ValueError, ["squareplus", "`x`", "rectangular", "[[1, 2], [3]]"]),
    (lambda p: nn.glu(np.ones((2, 4)), axis=None), TypeError, ["glu", "`axis` must be one int", "None"]),
    (lambda p: nn.glu(np.ones((2, 4)), axis=(0, 1)), TypeError, ["glu", "`axis` must be one int", "(0, 1)"]),
    (lambda p: nn.squareplus(np.ones(2), b=None), TypeError, ["squareplus", "`b`", "None"]),
    (lambda p: losses.perceptron_loss(np.ones(2), np.array(["a", "b"])), TypeError,
     ["perceptron_loss", "`targets`", "<U1"]),  # a staging error
    (lambda p: losses.sparsemax_loss(np.ones(2), np.array(["a", "b"])), TypeError, ["sparsemax_loss", "`labels`"]),
    (lambda p: losses.linear_softmax_cross_entropy(*_HEAD, label_smoothing=None), TypeError,
     ["linear_softmax_cross_entropy", "`label_smoothing`", "None"]),
    (lambda p: losses.linear_softmax_cross_entropy(*_HEAD, where=np.ones(3, bool)), ValueError,
     ["linear_softmax_cross_entropy", "`where` of shape (3,)", "(2,)"]),  # NumPy's broadcast error
    (lambda p: layers.mlp([2, 3, 2], dropout="0.1"), TypeError, ["mlp", "`dropout`", "'0.1'"]),
    (lambda p: layers.mlp([2, 3]).init(None), TypeError, ["mlp", "PRNG key", "None"]),
    (lambda p: layers.Dense(3).init(None, (-1, 2)), TypeError, ["Dense(3)", "PRNG key", "None"]),
    (lambda p: train.TrainState.create(_P, "adam"), TypeError, ["TrainState.create", "optax", "'adam'"]),
    (lambda p: train.make_epoch(_STEP, 0), ValueError, ["make_epoch", "`batch_size`", "got 0"]),
    (lambda p: train.make_epoch(_STEP, -2), ValueError, ["make_epoch", "`batch_size`", "-2"]),
    (lambda p: train.make_epoch(_STEP, 2.0), TypeError, ["make_epoch", "`batch_size`", "2.0"]),
    (lambda p: train.make_epoch(_STEP, 10**6)(_STATE, *_XOR.train, jax.random.key(0)), ValueError,
     ["make_epoch", "batch_size 1000000", "140 examples"]),  # was a NaN loss from no step
    (lambda p: train.EarlyStopping.create(_P).update({"w": np.ones(2)}, 1.0, 1), ValueError,
     ["EarlyStopping.update", "different trees"]),
    (lambda p: _fit(p, callback=42), TypeError, ["fit: callback must be a function", "42"]),  # after epoch 1
    (lambda p: _fit(p, checkpoint=123), CheckpointError, ["fit: checkpoint must be a file path", "123"]),
    (lambda p: _fit(p, config=[1, 2]), CheckpointError, ["fit: config must be a dict", "[1, 2]"]),
    (lambda p: _fit(p, params=jax.tree.map(lambda w: w.astype(np.int32), _P)), TypeError,
     ["fit: params['dense_0']['b'] is int32", "floating"]),  # a traceback from jax.grad
]

_XOR = data.load("xor")
_NET = layers.mlp([2, 4, 2])
_P = _NET.init(jax.random.key(0))[1]
_HEAD = (np.ones((2, 3)), np.ones((3, 4)), np.array([0, 3]))  # features, weight, labels of the fused head
_STEP = train.make_step(train.make_objective(_NET), optax.sgd(0.1))
_STATE = train.TrainState.create(_P, optax.sgd(0.1))
_SQ = lambda x: (x * x).sum()  # noqa: E731


ACCEPTED = [  # (a valid call once refused or crashing, a check of its result)
    (lambda: losses.linear_softmax_cross_entropy(np.ones((0, 3)), np.ones((3, 4)), np.zeros(0, int)),
     lambda r: r.shape == (0,)),  # a ZeroDivisionError (the unfused loss gives an empty loss too)
    (lambda: losses.linear_softmax_cross_entropy(*_HEAD, block_rows=np.int64(1)),
     lambda r: np.allclose(r, losses.linear_softmax_cross_entropy(*_HEAD))),  # NumPy integers were refused
    (lambda: train.make_epoch(_STEP, 32)(_STATE, *_XOR.train, jax.random.key(0))[1],
     np.isfinite),  # unjitted on data.load's NumPy arrays: a TracerArrayConversionError
]


@pytest.mark.parametrize("call, check", ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_valid_calls_once_refused_now_work(call, check):
    assert check(call())


def _nan_at_1(x):
    x = np.array(x, copy=True)
    x[1, 0] = NAN
    return x


def _nested(depth):
    config = {}
    for _ in range(depth):
        config = {"a": config}
    return config


def _fit(p, **kwargs):
    kwargs = {"params": _P, "checkpoint": str(p / "fit.safetensors"), **kwargs}
    return train.fit(_NET, kwargs.pop("params"), _XOR, epochs=1, progress=False, **kwargs)


@pytest.mark.parametrize("call, exc, fragments", API, ids=[str(i) for i in range(len(API))])
def test_hostile_calls_get_one_line_naming_the_function_and_value(files, call, exc, fragments):
    before = (files / "ckpt").read_bytes()
    with raises(exc, *fragments):
        call(files)
    assert (files / "ckpt").read_bytes() == before  # nothing replaced
    assert not (files / "fit.safetensors").exists() and not (files / "new").exists()


def test_a_resume_that_fails_leaves_no_folder_and_the_old_run_untouched(tmp_path, capsys):
    os.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(40)))
    assert cli.main(["train", "--no-progress", "--data", "d.csv", "--epochs", "1", "--out", "r1"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "r1").iterdir()}
    (tmp_path / "d.csv").write_text("".join(f"{i % 7},{i % 5},{i % 3},{i % 2}\n" for i in range(40)))  # a column more
    capsys.readouterr()
    assert cli.main(["train", "--no-progress", "--resume", "r1", "--epochs", "2", "--out", "r2"]) == 1
    assert "not the data the run was trained on" in capsys.readouterr().err  # was: trained on, then a shape error
    assert not (tmp_path / "r2").exists()  # was left holding a copy of r1's checkpoint
    assert {p.name: p.read_bytes() for p in (tmp_path / "r1").iterdir()} == before


#: A child of a pytest-xdist worker inherits its ignored SIGINT (and the command rightly leaves an ignored SIGINT
#: ignored: it then ran to the end): the scripts first take the default actions, as a shell starts a command.
DEFAULT_ACTIONS = ("signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_DFL)")


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_and_leaves_no_empty_folder(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys, time
        {DEFAULT_ACTIONS}
        from funcnet.apps import cli, run
        def stopped(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        run.train_run = stopped
        sys.exit(cli.main(["train", "--no-progress", "--data", "xor", "--out", "stopped"]))
    """).replace("{DEFAULT_ACTIONS}", DEFAULT_ACTIONS)
    env = {**os.environ, "FUNCNET_COMPILE_CACHE": "off"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr  # was killed at once, leaving stopped/ behind
    assert done.stderr.strip().endswith("funcnet train: terminated"), done.stderr
    assert not (tmp_path / "stopped").exists()


@pytest.mark.parametrize("name", ["curves.png", "history.json"])
def test_a_run_stopped_while_writing_its_files_leaves_none_half_written(tmp_path, monkeypatch, name):
    def half(path, text="{\"half"):  # a write cut short by Ctrl-C
        with open(path, "w") as f:
            f.write(text)
        raise KeyboardInterrupt

    if name == "curves.png":
        monkeypatch.setattr(run, "plot_history", lambda history, path, title: half(path, "\x89PNG half"))
    else:
        monkeypatch.setattr(run.pathlib.Path, "write_text", lambda self, text: half(self))
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run.train_run(run.RunConfig(data="xor", epochs=1), folder, progress=False, log=lambda m: None)
    assert name not in os.listdir(folder)
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temporary file left


def test_numpy_integer_sizes_build_the_same_network():
    a, b = layers.mlp([2, 4, 3]), layers.mlp([np.int64(2), np.int32(4), np.int64(3)])  # refused before
    pa, pb = a.init(jax.random.key(0))[1], b.init(jax.random.key(0))[1]
    assert jax.tree.map(np.shape, pa) == jax.tree.map(np.shape, pb) == {"dense_0": {"w": (2, 4), "b": (4,)},
                                                                        "dense_1": {"w": (4, 3), "b": (3,)}}


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_whose_exception_was_swallowed_still_stops_the_run(tmp_path, monkeypatch, capsys, signum, code, word):
    # JAX can print and drop an exception raised in one of its callbacks; the handler also records the signal,
    # and the run stops after the epoch it arrived in (here: as the run starts)
    os.chdir(tmp_path)
    monkeypatch.setattr(run, "use_compile_cache", lambda: cli._SIGNALS.append(signum))
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "50", "--out", "r"]) == code
    assert capsys.readouterr().err.strip() == f"funcnet train: {word}"
    assert not (tmp_path / "r").exists()


SIGNAL_SCRIPT = """
import os, signal, sys
{actions}
signum, moment = signal.{signal}, {moment!r}
send = lambda *args: os.kill(os.getpid(), signum)
if moment == "import":  # while JAX imports, before funcnet's own code has run
    class SendOnJax:
        def find_spec(self, name, *args):
            if name == "jax":
                send()
    sys.meta_path.insert(0, SendOnJax())
else:
    from funcnet import train
    if moment == "epoch 1":  # the run's folder is made, nothing is saved in it yet
        fit = train.fit
        train.fit = lambda *a, callback, **k: fit(*a, callback=lambda *c: (send(), callback(*c)), **k)
    else:  # "evaluate": after the last epoch, before history.json and curves.png
        evaluate = train.evaluate
        train.evaluate = lambda *a, **k: (send(), evaluate(*a, **k))[1]
sys.argv = ["funcnet", "train", "--no-progress", "--data", "xor", "--epochs", "2", "--out", "stopped"]
from funcnet.apps.cli import main
main()
"""
SIGNAL_MOMENTS = [  # (signal, moment, exit status, the line's last word): the command itself, in a fresh process
    ("SIGINT", "import", 130, "interrupted"),  # was a KeyboardInterrupt traceback
    ("SIGTERM", "import", 143, "terminated"),  # was killed without a word
    ("SIGHUP", "epoch 1", 129, "hung up"),  # was killed, leaving an empty run folder
    ("SIGTERM", "evaluate", 143, "terminated"),  # left a checkpoint that --resume refused ("trained 2 epochs")
]


@pytest.mark.slow
@pytest.mark.parametrize("name, moment, code, word", SIGNAL_MOMENTS, ids=[f"{s[0]} {s[1]}" for s in SIGNAL_MOMENTS])
def test_a_signal_at_any_moment_stops_with_one_line_and_leaves_no_folder_or_a_resumable_one(tmp_path, capsys, name,
                                                                                            moment, code, word):
    env = {**os.environ, "FUNCNET_COMPILE_CACHE": "off"}
    script = SIGNAL_SCRIPT.format(signal=name, moment=moment, actions=DEFAULT_ACTIONS)
    # as a shell starts a command: with the signals' default actions (a pytest-xdist worker may ignore SIGINT, and
    # a child inherits that; the command then rightly leaves an ignored SIGINT ignored, and ran to the end)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.endswith(f": {word}\n"), done.stderr
    stopped = tmp_path / "stopped"
    if moment != "evaluate":
        assert not stopped.exists()
        return
    assert os.listdir(stopped) == ["checkpoint.safetensors"]
    os.chdir(tmp_path)  # the run ended: --resume finishes it into a new folder, without training
    assert cli.main(["train", "--no-progress", "--resume", "stopped", "--out", "finished"]) == 0
    assert capsys.readouterr().out.startswith("finishing stopped/checkpoint.safetensors: it had ended after epoch 2")
    assert sorted(os.listdir(tmp_path / "finished")) == ["checkpoint.safetensors", "curves.png", "history.json"]
    assert json.loads((tmp_path / "finished" / "history.json").read_text())["history"]["epoch"] == [1, 2]


def test_a_signal_swallowed_after_the_last_epoch_still_stops_the_run_with_its_folder_complete(tmp_path, monkeypatch,
                                                                                              capsys):
    os.chdir(tmp_path)
    evaluate = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: (cli._SIGNALS.append(signal.SIGINT), evaluate(*a, **k))[1])
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "1", "--out", "r"]) == 130  # was 0
    assert capsys.readouterr().err == "funcnet train: interrupted\n"
    assert sorted(os.listdir(tmp_path / "r")) == ["checkpoint.safetensors", "curves.png", "history.json"]


WRITE_ERRORS = [  # (what fails, errno, fragments of the one line): each names the file and what to do
    ("curves.png", errno.ENOSPC, ["r/curves.png: cannot write (No space left on device)", "--resume r"]),
    ("history.json", errno.EFBIG, ["r/history.json: cannot write (File too large)", "--resume r"]),
    ("runs", errno.EROFS, ["runs: cannot create a run folder there (Read-only file system)", "--out DIR"]),
]


@pytest.mark.parametrize("what, number, fragments", WRITE_ERRORS, ids=[w[0] for w in WRITE_ERRORS])
def test_a_write_that_fails_names_its_file_and_the_remedy_and_resume_finishes_the_run(tmp_path, monkeypatch, capsys,
                                                                                     what, number, fragments):
    def fail(*args, **kwargs):
        raise OSError(number, os.strerror(number))

    os.chdir(tmp_path)
    if what == "runs":
        monkeypatch.setattr(run.pathlib.Path, "mkdir", fail)
    elif what == "curves.png":
        monkeypatch.setattr(run, "plot_history", fail)
    else:
        monkeypatch.setattr(run.pathlib.Path, "write_text", fail)
    out = [] if what == "runs" else ["--out", "r"]
    assert cli.main(["train", "--no-progress", "--data", "xor", "--epochs", "1", *out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("funcnet train: error: "), err
    for f in fragments:
        assert f in err, (f, err)
    if what == "runs":
        return
    monkeypatch.undo()
    assert "history.json" not in os.listdir(tmp_path / "r") and "checkpoint.safetensors" in os.listdir(tmp_path / "r")
    assert cli.main(["train", "--no-progress", "--resume", "r", "--out", "r2"]) == 0  # was "trained 1 epochs already"
    assert sorted(os.listdir(tmp_path / "r2")) == ["checkpoint.safetensors", "curves.png", "history.json"]
