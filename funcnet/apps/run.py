"""The main job behind ``funcnet train``: build, train, evaluate and save one run.

A run folder holds ``checkpoint.safetensors`` (parameters, optimizer state and
the full config), ``history.json`` (per-epoch metrics and final scores) and
``curves.png`` (loss and accuracy per epoch). Folders are never reused: a new
run gets a new folder, and an existing ``--out`` folder (or one inside a run
folder) is an error. ``history.json`` is written last: a folder without it holds
a run that was stopped, which ``--resume`` continues (or, if it had ended,
finishes). The config stores a data file's absolute path and its sha256 digest,
and a run is not resumed on other data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import re
import time
from typing import Any, NamedTuple

import optax

from funcnet import schedules

#: ``--optimizer`` names: each builds an Optax optimizer from a learning rate (or schedule).
_OPTIMIZERS: dict[str, Any] = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adam": optax.adam,
    "adamw": optax.adamw,
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
}
#: ``--schedule`` names: each builds the learning rate (a number or a schedule) from the run's settings.
_SCHEDULES: dict[str, Any] = {
    "constant": lambda cfg: cfg.lr,
    "inverse_time": lambda cfg: schedules.inverse_time_decay(cfg.lr, cfg.decay),
    "power": lambda cfg: schedules.power_decay(cfg.lr, cfg.decay, cfg.warmup),
}
#: K-FAC's settings under ``--optimizer kfac`` (``--lr`` is its learning rate); see :func:`funcnet.curvature.kfac`.
#: Tuned on the digits and the two-spiral set (benchmarks/kfac_vs_adam.py; docs/curvature.md says what was tried).
KFAC_SETTINGS: dict[str, Any] = {"damping": 0.1, "norm_constraint": 1e-3, "momentum": 0.9,
                                 "inverse_update_interval": 10, "decay": 0.95}
#: ``--optimizer`` names whose optimizer preconditions with the model's curvature: each builds it from a learning
#: rate (or schedule), the model and the loss's name.
_MODEL_OPTIMIZERS: dict[str, Any] = {
    "kfac": lambda lr, model, loss: _curvature().kfac(model, loss=loss, learning_rate=lr, **KFAC_SETTINGS),
}
#: Defaults of an optimizer whose scale the general ones (Adam's learning rate 1e-3) do not fit; options given on
#: the command line win, and they win over a data set's :data:`TASK_DEFAULTS`.
OPTIMIZER_DEFAULTS: dict[str, dict] = {"kfac": {"lr": 0.1}}
OPTIMIZERS = tuple(_OPTIMIZERS) + tuple(_MODEL_OPTIMIZERS)
SCHEDULES = tuple(_SCHEDULES)


def _curvature():
    from funcnet import curvature

    return curvature


class RunError(ValueError):
    """A bad setting or run folder; the message is one line for the CLI."""


#: Bytes of training memory per parameter, roughly: float32 parameters, gradients, two optimizer moments,
#: the best parameters, the update and its double buffer, and the checkpoint's host copy.
BYTES_PER_PARAMETER = 32


def device_memory() -> tuple[int | None, str]:
    """Bytes of memory for JAX's first device, and where: an accelerator's limit, or the host's available RAM."""
    import os

    import jax

    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # not every backend reports memory statistics
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"memory of the {dev.platform} device"
    try:  # Linux: what can be allocated now without swapping
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024, "memory available on this machine"
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "memory of this machine"
    except (ValueError, OSError, AttributeError):
        return None, "this machine"


def _check_size(sizes: list[int], hidden) -> None:
    """Refuse a network whose training state cannot fit in memory (clearly, rather than being killed for it)."""
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    memory, where = device_memory()
    need = n_params * BYTES_PER_PARAMETER
    if memory is not None and need > memory:
        raise RunError(f"--hidden {','.join(map(str, hidden))}: a {'-'.join(map(str, sizes))} network has "
                       f"{n_params:,} parameters, whose training state needs about {need / 2**30:,.1f} GiB, more "
                       f"than the {memory / 2**30:,.1f} GiB {where}; choose smaller hidden layers")


def _whole(option: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise RunError(f"{option} must be {bound}, got {value!r}")


#: float32's largest finite value: training computes in float32, so a larger setting would be infinite there.
_F32_MAX = 3.4028234663852886e38


def _real(option: str, value, *, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and -math.inf < value < math.inf \
        and (value > 0 if positive else value >= 0)
    if not ok:
        raise RunError(f"{option} must be {'positive and finite' if positive else 'finite and >= 0'}, got {value!r}")
    if value > _F32_MAX:
        raise RunError(f"{option} {value!r:.40} is beyond float32's largest value {_F32_MAX:.4g}, which training "
                       "computes in; give a smaller number")


#: Defaults of the bundled sets whose task the general defaults (a 256-unit ReLU layer, 30 epochs of Adam at
#: 1e-3: the digits) do not fit; options given on the command line win. The sine regression reaches test
#: MSE 0.0028 with these (the noise variance is 0.0025; 0.119 with the general defaults).
TASK_DEFAULTS: dict[str, dict] = {
    "sine": {"hidden": (16,), "activation": "tanh", "lr": 0.02, "epochs": 1000, "patience": 100},
}


@dataclasses.dataclass
class RunConfig:
    """Every setting of a run; stored in its checkpoint so that ``--resume`` rebuilds the same network."""

    data: str = "digits"
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    loss: str | None = None  # None: cross-entropy for classes, squared error for regression
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    decay: float = 1e-3
    warmup: int = 100
    epochs: int = 30
    batch_size: int = 32
    penalty: str = "l2"
    lam: float = 1e-4
    patience: int | None = 10
    dropout: float = 0.0
    seed: int = 0
    reference: bool = False
    #: Record the top Hessian eigenvalue and the Hutchinson trace after every epoch (see :data:`CURVATURE`).
    curvature: bool = False
    #: ``sha256:<hex>`` of the data file (or folder) the run trained on; None for a bundled set. Set by
    #: :func:`train_run`; a run resumed on data with another digest is refused.
    data_digest: str | None = None

    def __post_init__(self):
        # a path is kept absolute, so that a run resumed from another folder reads the same file
        self.data = data_source(self.data)
        if isinstance(self.loss, str):  # a run saved with an old loss name resumes under the new one
            from funcnet.train.steps import DEPRECATED_LOSSES

            self.loss = DEPRECATED_LOSSES.get(self.loss, self.loss)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def validate(self) -> None:
        """Raise :class:`RunError` naming the option of the first bad setting (before any data is loaded)."""
        from funcnet.layers import ACTIVATIONS
        from funcnet.train.loop import SEED_LIMIT  # seeds keep 32 bits in jax.random.key
        from funcnet.train.steps import LOSSES, PENALTIES

        if not isinstance(self.data, str) or not self.data:
            raise RunError(f"--data must be a dataset name or a path, got {self.data!r}")
        _whole("--epochs", self.epochs, 1)
        _whole("--batch-size", self.batch_size, 1)
        _whole("--warmup", self.warmup, 1, 2**31 - 1)  # the power schedule compares it with int32 steps
        if self.patience is not None:
            _whole("--patience", self.patience, 1)
        _whole("--seed", self.seed, 0, SEED_LIMIT - 1)
        _real("--lr", self.lr, positive=True)
        _real("--decay", self.decay)
        _real("--lam", self.lam)
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
                and 0 <= self.dropout < 1):
            raise RunError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        hidden = tuple(self.hidden)
        if not hidden or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in hidden):
            raise RunError(f"--hidden must be positive layer sizes, got {','.join(map(str, hidden))!r}")
        if not isinstance(self.reference, bool):
            raise RunError(f"--reference is on or off (true or false), got {self.reference!r}")
        if not isinstance(self.curvature, bool):
            raise RunError(f"--curvature is on or off (true or false), got {self.curvature!r}")
        if self.data_digest is not None and not (isinstance(self.data_digest, str)
                                                 and re.fullmatch(r"sha256:[0-9a-f]{64}", self.data_digest)):
            raise RunError(f"the data digest must be sha256:<64 hex digits>, got {self.data_digest!r:.80}")
        for option, value, known in (("--activation", self.activation, ACTIVATIONS),
                                     ("--optimizer", self.optimizer, OPTIMIZERS),
                                     ("--schedule", self.schedule, SCHEDULES),
                                     ("--penalty", self.penalty, PENALTIES),
                                     ("--loss", self.loss, (None, *LOSSES))):
            if value not in known:
                raise RunError(f"unknown {option} {value!r}; known: {', '.join(k for k in known if k)}")
        if self.optimizer in _MODEL_OPTIMIZERS and self.loss == "multiclass_svm":
            raise RunError(f"--optimizer {self.optimizer} needs a loss with curvature; the multiclass_svm loss is "
                           "piecewise linear (its output Hessian is zero), so use another --loss or --optimizer")

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        hidden = d.get("hidden", [])
        if not isinstance(hidden, list):  # tuple(5) or tuple("64") would fail or mislead; validate() checks the rest
            raise RunError(f"--hidden must be a list of layer sizes in the saved run, got {hidden!r}")
        d["hidden"] = tuple(hidden)
        return cls(**d)


def make_optimizer(cfg: RunConfig, model=None, loss: str | None = None) -> optax.GradientTransformation:
    """The run's optimizer; ``--optimizer kfac`` needs the ``model`` and the ``loss``'s name."""
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):  # NaN fails both comparisons, so test it explicitly
        raise RunError(f"--lr must be positive and finite, got {cfg.lr}")
    # every schedule is built, so a bad --decay or --warmup is reported whichever schedule is chosen
    rates = {name: build(cfg) for name, build in _SCHEDULES.items()}
    if cfg.optimizer in _MODEL_OPTIMIZERS:
        if model is None or loss is None:
            raise RunError(f"--optimizer {cfg.optimizer} is built from the model and the loss; pass them")
        return _MODEL_OPTIMIZERS[cfg.optimizer](rates[cfg.schedule], model, loss)
    return _OPTIMIZERS[cfg.optimizer](rates[cfg.schedule])


#: The settings of ``--curvature``'s :class:`funcnet.curvature.CurvatureMonitor`: the training rows it measures
#: on (a fixed subset drawn with ``--seed``), the Lanczos steps of the top eigenvalue and the Hutchinson probes of
#: the trace. Per epoch that is 30 Hessian-vector products on 512 rows.
CURVATURE = {"rows": 512, "iterations": 20, "samples": 10}


#: Settings a resumed run may change: they steer the rest of the training, not the network, its data or the
#: optimizer state's layout. Any other setting given with ``--resume`` must equal the saved one.
RESUMABLE = ("epochs", "lr", "schedule", "decay", "warmup", "patience", "lam", "penalty")


def data_source(data):
    """``--data`` as a run stores it: a bundled set's name as it is, a path made absolute."""
    from funcnet.data import NAMES

    return os.path.abspath(data) if isinstance(data, str) and data and data not in NAMES else data


def data_digest(data: str) -> str | None:
    """``sha256:<hex>`` of the data ``--data`` names: a file's bytes, or a folder's files (each one's name and
    bytes, in name order); None for a bundled set, which funcnet makes itself."""
    from funcnet.data import NAMES

    if data in NAMES:
        return None
    path = pathlib.Path(data)
    digest = hashlib.sha256()
    try:
        for file in sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]:
            digest.update(json.dumps([file.name, file.stat().st_size]).encode())
            with open(file, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
    except OSError as err:
        raise RunError(f"--data {data}: cannot read ({err.strerror or err})") from None
    return "sha256:" + digest.hexdigest()


class Resume(NamedTuple):
    """What ``--resume`` continues: see :func:`resumed_run`."""

    path: pathlib.Path
    done: int
    config: RunConfig
    finish: bool


def resumed_run(source: pathlib.Path, given: dict) -> Resume:
    """The run ``--resume source`` continues (a run folder, or its checkpoint), after checking all it holds.

    Returns its checkpoint, the epochs it has trained, its settings with the ``given`` ones applied, and whether
    it had ended but was stopped before its files were written (it is then only finished: evaluated, and its
    ``history.json`` and ``curves.png`` written). Raises :class:`RunError` (or a ``CheckpointError``) naming
    the setting or the part of the training state that is wrong, as for one typed on the command line.
    """
    from funcnet import checkpoint

    path = source / "checkpoint.safetensors" if source.is_dir() else source
    done, saved = checkpoint.read_config(path)  # verifies the whole file
    if not isinstance(saved.get("run"), dict):
        raise RunError(f"{path}: not a checkpoint of `funcnet train` (no run settings in it)")
    cfg = resumed_config(saved["run"], given, path)
    _check_training_state(path, done, saved)
    ended = done >= cfg.epochs or (saved["history"]["stopped_early"] and "epochs" not in given)
    finish = ended and path.name == RUN_FILES[0] and not (path.parent / RUN_FILES[1]).exists()
    if cfg.epochs <= done and not finish:
        raise RunError(f"--resume {path}: the run has trained {done} epochs already and --epochs {cfg.epochs} is "
                       f"the epoch to train up to; pass --epochs N with N > {done}")
    return Resume(path, done, cfg, finish)


def _check_training_state(path: pathlib.Path, done: int, saved: dict) -> None:
    """Refuse a checkpoint whose training state (what ``fit`` saves beside the run's settings) is not one that
    ``fit`` writes after epoch ``done``: the digest is a checksum, not a signature."""
    from funcnet.curvature.monitor import CURVATURE_FIELDS
    from funcnet.train.state import CHECKPOINT_KEYS, History

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and -math.inf < v < math.inf

    def count(high):
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= high

    def epoch(v):
        return v is None or count(done)(v) and v >= 1

    def series(ok):
        return lambda v: isinstance(v, list) and len(v) == done and all(map(ok, v))

    history = saved.get("history")
    rules = {"best_loss": lambda v: v is None or number(v), "bad_epochs": count(done),
             "steps": count(2**31 - 1), "history": lambda v: isinstance(v, dict)}
    history_rules = {
        "epoch": lambda v: v == list(range(1, done + 1)), "train_loss": series(number),
        **{name: series(lambda x: x is None or number(x)) for name in ("train_accuracy", "val_loss", "val_accuracy")},
        "best_epoch": epoch, "stopped_early": lambda v: isinstance(v, bool), "stopped_epoch": epoch,
        "restored_epoch": epoch,
        # recorded by --curvature only, and absent from runs saved before it: empty, or one value per epoch
        **{name: lambda v: v == [] or series(lambda x: x is None or number(x))(v) for name in CURVATURE_FIELDS}}
    assert set(rules) == set(CHECKPOINT_KEYS) and set(history_rules) == {f.name for f in dataclasses.fields(History)}
    checks = [(key, saved.get(key), rule) for key, rule in rules.items()]
    if isinstance(history, dict):
        checks += [(f"history[{key!r}]", history.get(key, [] if key in CURVATURE_FIELDS else None), rule)
                   for key, rule in history_rules.items()]
    for key, value, ok in checks:
        if not ok(value):
            raise RunError(f"--resume {path}: its training state after epoch {done} has {key} = {value!r:.60}, "
                           "which `funcnet train` never saves; resume a checkpoint it wrote")


def resumed_config(saved: dict, given: dict, source: pathlib.Path) -> RunConfig:
    """The saved run's settings with the ``given`` ones applied, or a :class:`RunError` for one that cannot change
    or that is not valid (named as the option it would be on the command line)."""
    try:
        cfg = RunConfig.from_json(saved)
        cfg.validate()
    except RunError as err:
        raise RunError(f"--resume {source}: in the run's saved settings, {err}") from None
    given = {**given, "data": data_source(given["data"])} if "data" in given else given
    for name, value in given.items():
        old = getattr(cfg, name)
        if name in RESUMABLE:
            setattr(cfg, name, value)
        elif value != old:
            option = "--" + name.replace("_", "-")
            shown = (lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v)
            raise RunError(f"--resume {source}: {option} {shown(value)} differs from the run's {shown(old)}, and "
                           f"{option} cannot change when resuming (only {', '.join('--' + r for r in RESUMABLE)} "
                           "can); drop it, or start a new run")
    return cfg


def use_compile_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in the user's cache folder; the folder, or None if off.

    A second run of the same job then loads its compiled programs instead of
    compiling them (most of a short run's time). ``FUNCNET_COMPILE_CACHE`` names
    the folder, or ``off``; the default is ``$XDG_CACHE_HOME/funcnet/xla``
    (``~/.cache/funcnet/xla``). A cache set up through JAX's own
    ``JAX_COMPILATION_CACHE_DIR`` is left as it is.
    """
    import os

    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = os.environ.get("FUNCNET_COMPILE_CACHE")
    if folder is not None and folder.strip().lower() in ("off", "0", "no", "false", ""):
        return None
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "funcnet", "xla")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # a short run's compiles are all small
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


#: The files of a run folder: a folder holding one of them is a run's, and no run is made inside it.
CHECKPOINT_FILE, HISTORY_FILE, CURVES_FILE = RUN_FILES = ("checkpoint.safetensors", "history.json", "curves.png")


def _run_folder_around(folder: pathlib.Path) -> pathlib.Path | None:
    """The run folder that ``folder`` would be inside (nested runs are hard to tell apart and to clean up)."""
    for parent in folder.resolve().parents:
        if any((parent / name).exists() for name in RUN_FILES):
            return parent
    return None


def new_run_folder(root: pathlib.Path) -> pathlib.Path:
    """``root/run-001``, ``run-002``, ...: the first free name, created exclusively."""
    around = _run_folder_around(root / "run")
    if around is not None:
        raise RunError(f"{root}/ is inside the run folder {around}; run from another folder, or give --out DIR")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(1, 100_000):
            folder = root / f"run-{i:03d}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as err:  # a read-only file system, no permission, a file named like the folder, ...
        raise RunError(f"{root}: cannot create a run folder there ({err.strerror or err}); give a folder "
                       "where one can be made with --out DIR") from None
    raise RunError(f"{root}: no free run folder name; give a new one with --out DIR")


def claim_folder(out: pathlib.Path) -> pathlib.Path:
    """Create ``out`` for a run; an existing folder (even empty) is never reused, nor one inside a run folder."""
    around = _run_folder_around(out)
    if around is not None:
        raise RunError(f"--out {out} is inside the run folder {around}; choose a folder outside it (each run has "
                       "a folder of its own)")
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        raise RunError(f"{out}: already exists; choose a new --out folder (runs are never overwritten)") from None
    except OSError as err:  # a parent that is a file, no permission, ...
        raise RunError(f"--out {out}: cannot create the folder: {err.strerror or err}") from None
    return out


def plot_history(history: dict, path: pathlib.Path, title: str) -> None:
    """Loss per epoch (and accuracy, for classification), with the epoch whose parameters were kept marked."""
    history_figure(history, title).savefig(path, dpi=100)


def history_figure(history: dict, title: str):
    """The figure of :func:`plot_history`."""
    from funcnet.apps.plotting import figure

    epochs = history["epoch"]
    classifies = any(a is not None for a in history["train_accuracy"])
    panels = [("loss", "loss", "log")] + ([("accuracy", "accuracy", "linear")] if classifies else [])
    # recorded by --curvature: the Hessian of the data loss on a fixed subset of the training rows
    panels += [(name, label, "linear") for name, label in (("hessian_top_eigenvalue", "top Hessian eigenvalue"),
                                                            ("hessian_trace", "Hessian trace (Hutchinson)"))
               if any(v is not None for v in history.get(name) or [])]
    rows = 2 if len(panels) == 4 else 1  # four panels (a classifier's curves and its curvature) in a square
    columns = len(panels) // rows
    fig = figure(figsize=(5 * columns, 4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    kept = history.get("restored_epoch") or epochs[-1]
    for ax, (metric, label, scale) in zip(axes, panels):
        series = ((("train", "train"), ("val", "validation")) if metric in ("loss", "accuracy")
                  else ((None, "training subset"),))
        for split, name in series:
            values = [float("nan") if v is None else v for v in history[metric if split is None else
                                                                       f"{split}_{metric}"]]
            ax.plot(epochs[:len(values)], values, label=name)
        ax.axvline(kept, color="grey", linestyle=":", label=f"kept: epoch {kept}")
        ax.set(xlabel="epoch", ylabel=label, title=label, yscale=scale)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    # fixed margins (tight_layout measures every label and took longer than drawing the figure), wide enough for
    # a log axis's minor labels (2×10⁻¹) and the axis title (0.1 of a 5-inch panel cut them off)
    fig.subplots_adjust(left=0.19 if columns == 1 else 0.1, right=0.97, bottom=0.13 / rows,
                        top=1 - 0.16 / rows, wspace=0.3, hspace=0.35)
    return fig


def _init_params(model, key, input_shape):
    """The model's initial parameters, drawn in one compiled program (not op by op)."""
    import jax

    return jax.jit(lambda k: model.init(k, input_shape)[1])(key)


def train_run(cfg: RunConfig, folder: pathlib.Path, *, resume: pathlib.Path | None = None, finish: bool = False,
              progress: bool = True, mesh=None, log=print, callback=None) -> dict:
    """Train per ``cfg``, write the run files into ``folder`` and return the final scores.

    ``callback`` is passed to :func:`funcnet.train.fit` (called after every epoch). With ``finish``, the
    ``resume`` checkpoint is of a run that had ended (see :func:`resumed_run`): it is evaluated and its files
    are written, without training. Data whose digest differs from ``cfg.data_digest`` is refused.
    """
    import jax

    from funcnet.apps import plotting as _plotting
    from funcnet import data as datasets
    from funcnet import layers, reference, train
    from funcnet.train.steps import DEFAULT_LOSS, LOSSES

    t0 = time.perf_counter()
    cfg.validate()
    _plotting.preload()  # matplotlib imports while XLA compiles
    ds = datasets.load(cfg.data, seed=cfg.seed)
    digest = data_digest(cfg.data)
    if cfg.data_digest is not None and digest != cfg.data_digest:
        raise RunError(f"--data {cfg.data}: not the data the run was trained on (its sha256 digest differs); "
                       "resume with that data, or start a new run")
    cfg = dataclasses.replace(cfg, data_digest=digest)
    classifies = ds.num_classes is not None
    if ds.num_classes == 1:  # a one-output softmax has loss 0 and gradient 0 whatever the weights: nothing to learn
        raise RunError(f"--data {cfg.data}: every class label is 0, one class; a classifier needs at least two "
                       "(write regression targets as floats, e.g. 0.0)")
    loss = cfg.loss or (DEFAULT_LOSS if classifies else "squared_error")
    if classifies != LOSSES[loss][1]:
        kind = "classification" if classifies else "regression"
        raise RunError(f"--loss {loss} does not fit {ds.name!r}, a {kind} dataset")
    n_in = ds.train.x.shape[1]
    n_out = ds.num_classes if classifies else ds.train.y.shape[1]
    _check_size([n_in, *cfg.hidden, n_out], cfg.hidden)
    model = layers.mlp([n_in, *cfg.hidden, n_out], cfg.activation, dropout=cfg.dropout,
                       ops=reference if cfg.reference else layers.MANUAL)
    params = _init_params(model, jax.random.key(cfg.seed), (-1, n_in))
    log(f"data {ds.name}: {len(ds.train.x)} train / {len(ds.val.x)} validation / {len(ds.test.x)} test examples; "
        f"network {n_in}-{'-'.join(map(str, cfg.hidden))}-{n_out} {cfg.activation} on "
        f"{'autodiff twins' if cfg.reference else 'manual rules'}"
        + (f", data-parallel over {mesh.size} {mesh.devices.flat[0].platform} devices" if mesh is not None else ""))
    ckpt_path = folder / CHECKPOINT_FILE
    if resume is not None:
        from funcnet import checkpoint

        # continue in the new folder from a copy of the saved state; the old run stays untouched, and the
        # copy is complete or absent, never half-written (written like checkpoint.save)
        checkpoint.copy(resume, ckpt_path)
    if finish:
        result = _ended(ckpt_path, params, make_optimizer(cfg, model, loss), cfg.patience)
    else:
        hooks = []
        if cfg.curvature:
            from funcnet.curvature import CurvatureMonitor

            hooks.append(CurvatureMonitor(model, ds.train.x, ds.train.y, loss=loss, seed=cfg.seed, **CURVATURE))
        result = train.fit(model, params, ds, loss=loss, optimizer=make_optimizer(cfg, model, loss), epochs=cfg.epochs,
                           batch_size=cfg.batch_size, penalty=cfg.penalty, lam=cfg.lam, patience=cfg.patience,
                           seed=cfg.seed, progress=progress, checkpoint=str(ckpt_path),
                           resume=str(ckpt_path) if resume is not None else None, config={"run": cfg.to_json()},
                           mesh=mesh, callback=callback, hooks=hooks)
    scores = train.evaluate(model, result.params, {"train": ds.train, "val": ds.val, "test": ds.test}, loss)
    history = result.history.to_dict()
    summary = {"config": cfg.to_json(), "loss": loss, "scores": scores, "history": history,
               "seconds": round(time.perf_counter() - t0, 2)}
    # each file is complete or absent, whenever the run is stopped: written aside, then renamed into place;
    # history.json last, so that a folder without it is one that `--resume` finishes
    with _written(folder / CURVES_FILE) as tmp:
        plot_history(history, tmp, f"{ds.name}: {model.description}")
    with _written(folder / HISTORY_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _ended(path: pathlib.Path, params, optimizer, patience: int | None):
    """The :class:`~funcnet.train.FitResult` that ``fit`` returned for the run saved at ``path``, which had ended."""
    from funcnet.train import EarlyStopping, FitResult, TrainState
    from funcnet.train.state import restore_state

    state, stopper, history = restore_state(path, TrainState.create(params, optimizer), EarlyStopping.create(params))
    params = state.params
    if patience is not None and history.best_epoch is not None:  # as fit ends
        params, history.restored_epoch = stopper.best_params, history.best_epoch
    return FitResult(params, state.opt_state, history)


@contextlib.contextmanager
def _written(path: pathlib.Path):
    """A temporary path beside ``path`` to write to; renamed to ``path`` on success, removed otherwise."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # the suffix tells savefig the format
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a file-size limit, a read-only folder: the checkpoint is kept
        raise RunError(f"{path}: cannot write ({err.strerror or err}); the run's checkpoint is kept: make room "
                       f"and finish the run with funcnet train --resume {path.parent}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
