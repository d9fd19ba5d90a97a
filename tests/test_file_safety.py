"""Nothing a user saved is lost, half-written or silently replaced: checkpoints under races, kills and full disks.

Processes that race or get killed are forked from one helper process (the "zygote") that imported
funcnet once without starting a JAX backend, so each trial costs a fork rather than an interpreter.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import stat
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from funcnet import checkpoint, data, layers, train
from funcnet.checkpoint import CheckpointError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="forks, signals and permission bits are POSIX")

#: Runs "jobs" sent as JSON lines: forks one child per job, starts them together, optionally
#: SIGKILLs them after a delay, and answers with each child's outcome and the elapsed time.
ZYGOTE = r"""
import json, os, resource, signal, sys, time, traceback
import numpy as np
from funcnet import checkpoint  # imports only: no JAX backend starts, so forking is safe
from funcnet.apps import run

def act(job):
    if not job.get("tmpfile", True):
        checkpoint._O_TMPFILE = 0  # the named-temporary-file fallback of platforms without O_TMPFILE
    if job.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))  # writes past it fail: EFBIG
    if job["do"] == "save":
        tree = {"w": np.full(job["n"], job["value"], np.float32)}
        checkpoint.save(job["path"], tree, step=job["value"], overwrite=job["overwrite"])
    elif job["do"] == "copy":
        checkpoint.copy(job["src"], job["dst"])
    elif job["do"] == "resume":  # what `funcnet train --resume SRC --out FOLDER` runs
        cfg = run.RunConfig(data="xor", hidden=(4,), epochs=1, patience=None)
        run.train_run(cfg, __import__("pathlib").Path(job["folder"]), resume=__import__("pathlib").Path(job["src"]),
                      progress=False, log=lambda *a: None)

def child(job, gate_r, report_w):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.read(gate_r, 1)  # wait for the start signal: all children begin together
    try:
        act(job)
        outcome = "ok"
    except checkpoint.CheckpointError as err:
        outcome = "CheckpointError: " + str(err)
    except BaseException as err:
        outcome = type(err).__name__ + ": " + str(err) + " " + traceback.format_exc()
    os.write(report_w, outcome.encode())
    os._exit(0)

for line in sys.stdin:
    request = json.loads(line)
    gate_r, gate_w = os.pipe()
    kids = []
    for job in request["jobs"]:
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            child(job, gate_r, report_w)
        os.close(report_w)
        kids.append((pid, report_r))
    os.close(gate_r)
    t0 = time.perf_counter()
    os.write(gate_w, b"x" * len(kids))
    os.close(gate_w)
    if request.get("kill_after") is not None:
        time.sleep(request["kill_after"])
        for pid, _ in kids:
            os.kill(pid, signal.SIGKILL)  # a finished child is a zombie until reaped: killing it is harmless
    outcomes = []
    for pid, report_r in kids:
        _, status = os.waitpid(pid, 0)
        chunks = []
        while chunk := os.read(report_r, 65536):
            chunks.append(chunk)
        os.close(report_r)
        outcomes.append("killed" if os.WIFSIGNALED(status) else b"".join(chunks).decode())
    print(json.dumps({"outcomes": outcomes, "seconds": time.perf_counter() - t0}), flush=True)
"""


class Zygote:
    def __init__(self):
        root = pathlib.Path(checkpoint.__file__).resolve().parents[1]  # the funcnet under test
        env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def run(self, *jobs, kill_after=None):
        """The outcome of each job ("ok", "killed", "CheckpointError: ..." or another error), and the seconds taken."""
        self.proc.stdin.write(json.dumps({"jobs": jobs, "kill_after": kill_after}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the zygote process died"
        reply = json.loads(line)
        return reply["outcomes"], reply["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


TEMP = re.compile(r"\..*\.tmp")  # the name of a temporary file of funcnet's or of an older version's


def temps(folder):
    return sorted(name for name in os.listdir(folder) if TEMP.fullmatch(name))


def big_checkpoint(path, n, value=1.0):
    return checkpoint.save(path, {"w": np.full(n, value, np.float32)}, step=int(value))


# --- 1. fit never replaces a file it did not write ---------------------------------------------------------


@pytest.fixture(scope="module")
def fit_setup():
    net = layers.mlp([2, 4, 2], "tanh")
    _, params = net.init(jax.random.key(0))
    kw = dict(optimizer=optax.sgd(0.1), batch_size=50, progress=False)
    return net, params, data.load("xor", seed=0), kw


FIT_CASES = [
    # id,                       what is at `checkpoint` before fit,    resume from,  refused
    ("a_users_checkpoint",      "user_checkpoint",                     None,         True),
    ("a_users_other_file",      "text",                                None,         True),
    ("a_directory",             "directory",                           None,         True),
    ("resuming_another_file",   "text",                                "other",      True),
    ("resuming_it_in_place",    "fit_checkpoint",                      "itself",     False),
    ("a_new_path",              None,                                  None,         False),
]


@pytest.mark.parametrize("before, resume_from, refused", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_fit_does_not_replace_a_file_it_did_not_write(tmp_path, fit_setup, before, resume_from, refused):
    net, params, ds, kw = fit_setup
    path, other = tmp_path / "state.safetensors", tmp_path / "other.safetensors"
    if resume_from == "other":
        train.fit(net, params, ds, epochs=1, checkpoint=str(other), **kw)
    if before == "user_checkpoint":
        checkpoint.save(path, {"mine": np.arange(3.0)}, step=99)
    elif before == "text":
        path.write_text("my notes\n")
    elif before == "directory":
        (path / "inside").mkdir(parents=True)
    elif before == "fit_checkpoint":
        train.fit(net, params, ds, epochs=1, checkpoint=str(path), **kw)
    snapshot = path.read_bytes() if path.is_file() else None
    resume = {None: None, "other": str(other), "itself": str(path)}[resume_from]
    if refused:
        with pytest.raises(CheckpointError, match=rf"^fit: checkpoint={re.escape(repr(str(path)))} already exists"):
            train.fit(net, params, ds, epochs=2, checkpoint=str(path), resume=resume, **kw)
        assert (path.read_bytes() if path.is_file() else None) == snapshot
        assert path.is_dir() == (before == "directory")
    else:
        train.fit(net, params, ds, epochs=2, checkpoint=str(path), resume=resume, **kw)
        assert checkpoint.read_config(path)[0] == 2


# --- 2. exclusive creation: of racing writers exactly one wins ----------------------------------------------


def test_racing_saves_to_one_new_path_have_exactly_one_winner(tmp_path, zygote):
    writers, trials = 8, 12
    for trial in range(trials):
        path = tmp_path / f"trial{trial}" / "c.safetensors"
        jobs = [dict(do="save", path=str(path), n=20_000, value=i, overwrite=False) for i in range(writers)]
        outcomes, _ = zygote.run(*jobs)
        winners = [i for i, o in enumerate(outcomes) if o == "ok"]
        assert len(winners) == 1, f"trial {trial}: {len(winners)} writers reported success: {outcomes}"
        for o in outcomes:
            assert o == "ok" or (o.startswith("CheckpointError: ") and "already exists" in o), o
        assert checkpoint.read_config(path)[0] == winners[0]  # the file is the winner's
        assert temps(path.parent) == []


# --- 3 and 4. killed or failing writers leave a complete file or none, and no temporary files ---------------

N_BIG = 5_000_000  # a 20 MB checkpoint: writing it takes long enough for kills to land mid-write

KILL_CASES = [
    # id,                 job,       temporary file,  target exists before,  temporary files between kills
    ("unnamed_new",       "save",    True,            False,                 False),
    ("unnamed_replace",   "save",    True,            True,                  True),  # the instant before the rename
    ("named_new",         "save",    False,           False,                 True),
    ("named_replace",     "save",    False,           True,                  True),
    ("copy_new",          "copy",    True,            False,                 False),
]


@pytest.mark.parametrize("do, tmpfile, exists, temps_between", [c[1:] for c in KILL_CASES],
                         ids=[c[0] for c in KILL_CASES])
def test_a_killed_writer_leaves_a_complete_file_or_none(tmp_path, zygote, do, tmpfile, exists, temps_between):
    folder = tmp_path / "run"
    target = folder / "c.safetensors"
    src = big_checkpoint(tmp_path / "src.safetensors", N_BIG, value=7.0)

    def job(value):
        if do == "copy":
            return dict(do="copy", src=str(src), dst=str(target), tmpfile=tmpfile)
        return dict(do="save", path=str(target), n=N_BIG, value=value, overwrite=exists, tmpfile=tmpfile)

    outcomes, seconds = zygote.run(job(1))  # unkilled: how long one write takes
    assert outcomes == ["ok"], outcomes
    if not exists:
        target.unlink()
    rng = random.Random(0)
    before = 1
    for value in range(2, 14):
        outcomes, _ = zygote.run(job(value), kill_after=rng.uniform(0.0, 1.2 * seconds))
        assert outcomes in (["ok"], ["killed"]), outcomes
        left = temps(folder)
        assert not left or temps_between, f"temporary files left after a kill: {left}"
        if target.exists():
            step = checkpoint.read_config(target)[0]  # complete: the digest checks every byte
            expected = {7} if do == "copy" else {before, value} if exists else {value}
            assert step in expected
            if exists:
                before = step
            else:
                target.unlink()
        else:
            assert not exists, "a kill removed the checkpoint that was being replaced"
    outcomes, _ = zygote.run(job(20))  # a later complete write sweeps what killed writers left
    assert outcomes == ["ok"], outcomes
    assert temps(folder) == []


FULL_DISK_CASES = [
    # id,                    job (the target is at folder/checkpoint.safetensors)
    ("save_new",             dict(do="save", overwrite=False)),
    ("save_replace",         dict(do="save", overwrite=True)),
    ("save_new_named",       dict(do="save", overwrite=False, tmpfile=False)),
    ("copy",                 dict(do="copy")),
    ("train_resume_copy",    dict(do="resume")),  # `funcnet train --resume`: the copy into the new run folder
]


@pytest.mark.parametrize("job", [c[1] for c in FULL_DISK_CASES], ids=[c[0] for c in FULL_DISK_CASES])
def test_a_write_that_fails_midway_leaves_the_target_as_it_was(tmp_path, zygote, job):
    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "checkpoint.safetensors"
    src = big_checkpoint(tmp_path / "src.safetensors", 1_000_000, value=3.0)  # 4 MB
    if job.get("overwrite"):
        big_checkpoint(target, 10, value=1.0)
    snapshot = target.read_bytes() if target.exists() else None
    job = {**job, "path": str(target), "n": 1_000_000, "value": 2, "src": str(src), "dst": str(target),
           "folder": str(folder), "fsize": 1 << 20}  # any write past 1 MB fails, as on a full disk
    (outcome,), _ = zygote.run(job)
    assert (target.read_bytes() if target.exists() else None) == snapshot, "the target was changed or truncated"
    assert temps(folder) == []
    assert outcome.startswith("CheckpointError: ") and str(target) in outcome and "File too large" in outcome, outcome


# --- 5. permissions follow the umask, like any other new file -----------------------------------------------


PERMISSION_CASES = [
    # id,                       umask,  how it is written,       mode of the file replaced,  expected mode
    ("new_umask_022",           0o022,  "save",                  None,                       0o644),
    ("new_umask_027",           0o027,  "save",                  None,                       0o640),
    ("new_umask_002",           0o002,  "save",                  None,                       0o664),
    ("new_named_temp",          0o027,  "save_named",            None,                       0o640),
    ("copy",                    0o022,  "copy",                  None,                       0o644),
    ("replace_keeps_0600",      0o022,  "save",                  0o600,                      0o600),
    ("replace_keeps_0664",      0o077,  "save",                  0o664,                      0o664),
]


@pytest.mark.parametrize("umask, how, old_mode, expected", [c[1:] for c in PERMISSION_CASES],
                         ids=[c[0] for c in PERMISSION_CASES])
def test_permissions_are_those_of_any_new_file(tmp_path, monkeypatch, umask, how, old_mode, expected):
    path = tmp_path / "c.safetensors"
    src = checkpoint.save(tmp_path / "src.safetensors", {"w": np.ones(3, np.float32)})
    if old_mode is not None:
        checkpoint.save(path, {"w": np.zeros(3, np.float32)})
        os.chmod(path, old_mode)
    if how == "save_named":
        monkeypatch.setattr(checkpoint, "_O_TMPFILE", 0, raising=False)
    previous = os.umask(umask)
    try:
        if how == "copy":
            checkpoint.copy(src, path)
        else:
            checkpoint.save(path, {"w": np.ones(3, np.float32)}, overwrite=old_mode is not None)
        (tmp_path / "plain.txt").write_text("any other file")
    finally:
        os.umask(previous)
    assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(expected)
    if old_mode is None:
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)

