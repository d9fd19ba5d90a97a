"""The ``funcnet`` command line: ``funcnet train``, ``funcnet gradcheck`` and ``funcnet bench``.

Errors a user can fix (bad arguments, bad files, an existing run folder) are
printed as one line on stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``funcnet train: error: ... (see funcnet train --help)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _check_seed(seed: int) -> None:
    from funcnet.train.loop import SEED_LIMIT

    if not 0 <= seed < SEED_LIMIT:
        raise _UsageError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed}")


def _loss_name(name: str) -> str:
    """``--loss``: a deprecated name is replaced by its new one, with a note on stderr."""
    from funcnet.train.steps import DEPRECATED_LOSSES

    if name in DEPRECATED_LOSSES:
        print(f"funcnet train: --loss {name} is deprecated; use --loss {DEPRECATED_LOSSES[name]}", file=sys.stderr)
    return DEPRECATED_LOSSES.get(name, name)


def _check_at_least(option: str, value: int, low: int) -> None:
    if value < low:
        raise _UsageError(f"{option} must be at least {low}, got {value}")


#: Most devices ``--devices`` and ``--scaling-devices`` may ask for: on a CPU each one is simulated, and JAX
#: takes seconds for thousands of them, and hours (or a traceback, past 2**31) for more.
MAX_DEVICES = 4096


def _check_devices(option: str, value: int, low: int) -> None:
    _check_at_least(option, value, low)
    if value > MAX_DEVICES:
        raise _UsageError(f"{option} must be at most {MAX_DEVICES}, got {value}")


def _check_not_empty(option: str, value: str | None) -> None:
    """An option given as ``""`` is refused, not taken for the option left out."""
    if value is not None and not value.strip():
        raise _UsageError(f"{option} needs a path, got {value!r}")


def _require_matplotlib(why: str) -> None:
    """Checked before the work, so a missing plotting package does not lose a finished run."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise _UsageError(f"{why} needs matplotlib, which is not installed: pip install '.[train]'")


def _custom_ops(name: str) -> list:
    """The :func:`funcnet.custom_op` ops of a module given by dotted name or ``.py`` path (``--module``)."""
    import importlib
    import importlib.util
    import pathlib

    from funcnet.custom import ops_in

    path = pathlib.Path(name)
    try:
        if name.endswith(".py") or path.is_file():
            if not path.is_file():
                raise _UsageError(f"--module {name}: no such file")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(name)
            finally:
                sys.path.pop(0)
    except _UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's module: say what failed, in one line
        raise _UsageError(f"--module {name}: importing it failed: {type(err).__name__}: {err}") from err
    found = ops_in(module)
    if not found:
        raise _UsageError(f"--module {name} defines no op made by funcnet.custom_op at its top level")
    return found


#: The whole models ``funcnet gradcheck`` checks by default (``--all``: one per activation).
QUICK_MODELS = ("relu", "gelu")


def _progress(args: argparse.Namespace, what: str):
    """A progress bar on stderr over an iterable, or nothing with --no-progress."""
    if args.no_progress:
        return iter
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=f"gradcheck {what}", unit=what.rstrip("s"), leave=False, file=sys.stderr)


def _gradcheck(args: argparse.Namespace) -> int:
    import json

    from funcnet.gradcheck import fast_compile

    if not args.all:
        # the default's programs compile 3x faster (70 s -> 38 s); --all keeps XLA's defaults, whose float64
        # rounding gives finite differences more headroom (mlp softmax: 2.5e-7 against 1.1e-6 at level 0)
        fast_compile.request()

    from funcnet.apps.models import check_mlp
    from funcnet.apps.tables import model_table, op_table, summary_row
    from funcnet.gradcheck import check_registry
    from funcnet.layers import ACTIVATIONS
    from funcnet.registry import OPS

    _check_seed(args.seed)
    # whole models in both modes, and Hessian-vector products
    model_modes = ("rev", "fwd")
    only_models = args.model is not None or args.activation is not None
    if args.module is not None and only_models:
        raise _UsageError("--module checks a module's own ops; it does not combine with --model or --activation")
    candidates = OPS if args.module is None else tuple(op.spec for op in _custom_ops(args.module))
    ops = () if only_models and not args.op else candidates
    if args.op:
        known = {spec.name for spec in candidates}
        unknown = [name for name in args.op if name not in known]
        if unknown:
            raise _UsageError(f"unknown op {', '.join(map(repr, unknown))}; known ops: {', '.join(sorted(known))}")
        ops = tuple(spec for spec in candidates if spec.name in args.op)
    progress = _progress(args, "ops")
    # the default checks each op's first input shape and one model; --all every shape and every activation
    rows = check_registry(ops, seed=args.seed, quick=not args.all, progress=progress) if ops else []
    model_rows = []
    if args.module is None and (not args.op or only_models):
        model = args.model or "mlp"
        activations = args.activation or (ACTIVATIONS if args.all else QUICK_MODELS)
        if model == "transformer":  # its MLP is ActivationThenDense: every activation but prelu (a parameter)
            from funcnet.ops.fused_dense import FUSABLE

            unfit = [a for a in args.activation or () if a not in FUSABLE]
            if unfit:
                raise _UsageError(f"--model transformer: its MLP cannot use --activation {unfit[0]} (the activation "
                                  "has a parameter of its own); choose another")
            activations = [a for a in activations if a in FUSABLE]
        for activation in _progress(args, "models")(activations):
            report = check_mlp(activation, model=model, seed=args.seed, modes=model_modes, order=2)
            model_rows.append((summary_row(f"{model} {activation}", report), report))
    ok = all(r.passed for r in rows) and all(row["passed"] for row, _ in model_rows)
    if args.json:
        print(json.dumps({
            "passed": ok,
            "ops": [r.to_dict() for r in rows],
            "models": [{**row, "leaves": report.to_dict()["leaves"]} for row, report in model_rows],
        }, indent=2))
        return 0 if ok else 1
    if rows:
        print(op_table(rows))
    if model_rows:
        print(("\n" if rows else "") + model_table([row for row, _ in model_rows]))
        for row, report in model_rows:
            if not row["passed"]:
                print(f"\n{row['model']}:\n{report}")
    return 0 if ok else 1


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _integer(text: str) -> int:
    """An integer option, in the digits 0-9: ``int()`` also reads ``1_0`` as 10 and full-width or other
    scripts' digits, which are typos or pastes rather than numbers meant."""
    if not _INTEGER.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer in the digits 0-9, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    """A real option, in ASCII (``float()`` also reads ``1_0`` and full-width digits); ``nan`` and ``inf`` are
    read, and refused with the option's own range later."""
    try:
        if not text.isascii() or "_" in text:
            raise ValueError
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.01 or 1e-3, got {text!r}") from None


def _hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(_integer(s) for s in text.split(",") if s.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}")
    return sizes


def _train(args: argparse.Namespace) -> int:
    import pathlib

    from funcnet.apps import run

    given = {k: v for k, v in vars(args).items() if k in {f.name for f in run.dataclasses.fields(run.RunConfig)}
             and v is not None}
    _check_not_empty("--resume", args.resume)
    _check_not_empty("--out", args.out)
    resume = None
    if args.resume is not None:
        resume = run.resumed_run(pathlib.Path(args.resume), given)  # checked before anything is created
        cfg = resume.config
    else:
        cfg = run.RunConfig(**{**run.TASK_DEFAULTS.get(given.get("data", run.RunConfig.data), {}),
                               **run.OPTIMIZER_DEFAULTS.get(given.get("optimizer"), {}), **given})
    cfg.validate()  # every setting, before a folder is made or data is loaded
    _require_matplotlib("funcnet train (it plots the learning curves)")
    mesh = None
    if args.devices is not None:
        from funcnet import parallel

        if args.devices < 1 or args.devices > MAX_DEVICES:
            raise run.RunError(f"--devices must be in [1, {MAX_DEVICES}], got {args.devices}")
        if cfg.batch_size % args.devices:  # before the devices are made
            raise run.RunError(f"--batch-size {cfg.batch_size} does not split over {args.devices} devices; "
                               f"use a multiple of {args.devices}")
        if args.devices > 1:
            parallel.use_cpu_devices(args.devices)  # only affects the CPU backend, simulating host devices
        mesh = parallel.data_mesh(args.devices)
    stop_if_signalled()  # one whose exception was swallowed while JAX started
    folder = run.claim_folder(pathlib.Path(args.out)) if args.out else run.new_run_folder(pathlib.Path("runs"))
    if resume is not None and resume.finish:  # the first line says what this run continues
        print(f"finishing {resume.path}: it had ended after epoch {resume.done} but has no {run.HISTORY_FILE}; "
              f"evaluating it into {folder}/")
    elif resume is not None:
        print(f"resuming {resume.path} after epoch {resume.done}: training up to epoch {cfg.epochs} into {folder}/")
    run.use_compile_cache()
    source = None if resume is None else resume.path
    try:
        summary = run.train_run(cfg, folder, resume=source, finish=resume is not None and resume.finish,
                                progress=not args.no_progress, mesh=mesh, callback=stop_if_signalled)
    except BaseException:
        _drop_unstarted(folder, source)
        raise
    scores, history = summary["scores"], summary["history"]
    if history["stopped_early"]:
        print(f"early stopping after epoch {history['stopped_epoch']}: no lower validation loss for "
              f"{cfg.patience} epochs; kept the parameters of epoch {history['restored_epoch']}")
    if any(v["accuracy"] is not None for v in scores.values()):  # classification
        print("accuracy: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in scores.items()))
    print("loss: " + ", ".join(f"{k} {v['loss']:.4f}" for k, v in scores.items()))
    if history["hessian_top_eigenvalue"]:
        shown = lambda v: "undefined" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"curvature after epoch {history['epoch'][-1]}: top Hessian eigenvalue "
              f"{shown(history['hessian_top_eigenvalue'][-1])}, Hessian trace {shown(history['hessian_trace'][-1])}")
    wall = _process_seconds()
    print(f"run saved in {folder}/ (checkpoint.safetensors, history.json, curves.png) in "
          f"{summary['seconds'] if wall is None else round(wall, 2)} s")
    return 0


def _process_seconds() -> float | None:
    """Wall time since this process started, start-up and imports included (Linux ``/proc``), or None."""
    try:
        with open("/proc/self/stat") as f:  # field 22, after the command name in parentheses: start, in ticks
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - start)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _drop_unstarted(folder, resume) -> None:
    """Remove the folder of a run that failed or was stopped before it had anything of its own: empty, or
    holding only the untouched copy of the checkpoint it resumed (the original stays where it was)."""
    import filecmp

    names = [p.name for p in folder.iterdir()]
    copy = folder / "checkpoint.safetensors"
    if resume is not None and names == [copy.name] and filecmp.cmp(copy, resume, shallow=False):
        copy.unlink()
        names = []
    if not names:
        folder.rmdir()


def _bench(args: argparse.Namespace) -> int:
    import pathlib
    import shlex

    from funcnet.apps.bench import report, steps, suite

    if args.quick:  # about a minute on a 2-core CPU: the small network, the dispatch table, the memory figures
        args.configs = args.configs or "small"
        args.no_sweep = args.no_scan = args.no_roofline = True
        args.scaling_devices = 0 if args.scaling_devices is None else args.scaling_devices
    args.rounds = args.rounds if args.rounds is not None else (5 if args.quick else 10)
    args.steps = args.steps if args.steps is not None else (5 if args.quick else 10)
    args.scaling_devices = 8 if args.scaling_devices is None else args.scaling_devices
    configs = suite.default_configs() if args.configs is None else [c.strip() for c in args.configs.split(",")
                                                                     if c.strip()]
    if not configs:
        raise _UsageError(f"--configs names no configuration; known: {', '.join(steps.CONFIGS)}")
    unknown = [c for c in configs if c not in steps.CONFIGS]
    if unknown:
        raise _UsageError(f"unknown configuration {', '.join(unknown)}; known: {', '.join(steps.CONFIGS)}")
    explicit = args.frameworks is not None
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()] if explicit else list(steps.FRAMEWORKS)
    if not frameworks:
        raise _UsageError(f"--frameworks names no framework; known: {', '.join(steps.FRAMEWORKS)}")
    unknown = [f for f in frameworks if f not in steps.FRAMEWORKS]
    if unknown:
        raise _UsageError(f"unknown framework {', '.join(unknown)}; known: {', '.join(steps.FRAMEWORKS)}")
    missing = steps.missing_packages(frameworks)
    if explicit and missing:  # by default the peers that are not installed are skipped, with a note
        needs = ", ".join(f"{f} needs {pkg}" for f, pkg in missing.items())
        raise _UsageError(f"--frameworks: {needs}, not installed; install the peer frameworks with "
                          "pip install '.[bench]' (from the funcnet checkout)")
    _check_at_least("--rounds", args.rounds, 1)
    _check_at_least("--steps", args.steps, 1)
    _check_devices("--scaling-devices", args.scaling_devices, 0)
    _check_at_least("--head-rounds", args.head_rounds, 0)
    try:
        heads = tuple(_integer(v) for v in args.heads.split(",") if v.strip())
    except argparse.ArgumentTypeError:
        raise _UsageError(f"--heads must be comma-separated class counts, e.g. 8192,32768, got {args.heads!r}") from None
    if any(v < 2 for v in heads):
        raise _UsageError(f"--heads class counts must be at least 2, got {args.heads!r}")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    tables = list(suite.TABLES) if tables == ["all"] else tables
    unknown = [t for t in tables if t not in suite.TABLES]
    if unknown:
        raise _UsageError(f"--tables: unknown table {', '.join(unknown)}; known: {', '.join(suite.TABLES)}, or all")
    _check_not_empty("--markdown", args.markdown)
    _check_not_empty("--plot", args.plot)
    if args.markdown and args.plot and pathlib.Path(args.markdown).resolve() == pathlib.Path(args.plot).resolve():
        raise _UsageError(f"--markdown and --plot are the same file {args.markdown}; the plot would replace the report")
    outputs = [pathlib.Path(p) for p in (args.markdown, args.plot) if p]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:  # checked before minutes of measuring, not after
        verb = "exists" if len(existing) == 1 else "exist"
        raise _UsageError(f"{' and '.join(existing)} already {verb}; pass --overwrite to replace")
    if args.plot:
        _require_matplotlib("--plot")
    for option, path in (("--markdown", args.markdown), ("--plot", args.plot)):
        if path and (pathlib.Path(path).is_dir() or not pathlib.Path(path).resolve().parent.is_dir()):
            what = "is a folder" if pathlib.Path(path).is_dir() else "is in a folder that does not exist"
            raise _UsageError(f"{option} {path} {what}; give a file path in an existing folder")
    result = suite.run(configs, frameworks, rounds=args.rounds, steps=args.steps, memory=not args.no_memory,
                       activations_sweep=not args.no_sweep, scan=not args.no_scan, dispatch=not args.no_dispatch,
                       scaling_devices=args.scaling_devices, roofline=not args.no_roofline,
                       head_vocabs=heads, head_rounds=args.head_rounds, tables=tuple(tables),
                       table_rounds=args.head_rounds, log=lambda m: print(m, file=sys.stderr))
    text = report.markdown(result, "funcnet bench " + shlex.join(sys.argv[2:]))
    print(report.dumps(result) if args.json else text)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    if args.plot:
        report.plot(result, args.plot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from funcnet.apps.run import (CURVATURE, KFAC_SETTINGS, OPTIMIZER_DEFAULTS, OPTIMIZERS, SCHEDULES, TASK_DEFAULTS,
                                  RunConfig)
    from funcnet.layers import ACTIVATIONS
    from funcnet.train.steps import DEFAULT_LOSS, LOSSES

    parser = _Parser(prog="funcnet", description="Functional neural networks with hand-written gradients.")
    from funcnet import __version__

    parser.add_argument("--version", action="version", version=f"funcnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = RunConfig()
    tr = sub.add_parser("train", help="train an MLP (default: the bundled handwritten digits)",
                        description="Train a multilayer perceptron built from funcnet's manual-gradient ops, "
                        "then write a checkpoint, a JSON history and a plot of the learning curves into a new "
                        "run folder. With --resume, a run continues from its checkpoint into a new folder: "
                        "--epochs (the epoch to train up to), --lr, --schedule, --decay, --warmup, --patience, "
                        "--lam and --penalty may change; any other option must equal the run's own. --data sine "
                        "(regression) has defaults of its own: " + "; ".join(
                            f"--{k} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                            for k, v in TASK_DEFAULTS["sine"].items()) + ".")
    tr.add_argument("--data", help=f"digits, xor, spiral, spiral3, sine, or a path (.npz, .csv, MNIST IDX folder) "
                    f"[default: {d.data}]")
    tr.add_argument("--hidden", type=_hidden_sizes, help=f"hidden layer sizes, e.g. 256,128 [default: "
                    f"{','.join(map(str, d.hidden))}]")
    tr.add_argument("--activation", choices=ACTIVATIONS, help=f"hidden activation [default: {d.activation}]")
    tr.add_argument("--loss", type=_loss_name, choices=list(LOSSES), help=f"default: {DEFAULT_LOSS} for "
                    "classes, squared_error for regression")
    tr.add_argument("--optimizer", choices=OPTIMIZERS, help="kfac is K-FAC (funcnet.curvature.kfac) with --lr "
                    f"{OPTIMIZER_DEFAULTS['kfac']['lr']} unless given, "
                    + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in KFAC_SETTINGS.items())
                    + f" [default: {d.optimizer}]")
    tr.add_argument("--lr", type=_number, help=f"learning rate [default: {d.lr}]")
    tr.add_argument("--schedule", choices=SCHEDULES, help="constant, inverse_time lr/(1+decay*t), or power "
                    f"lr*(warmup/t)^decay after a constant warm phase [default: {d.schedule}]")
    tr.add_argument("--decay", type=_number, help=f"decay rate of the schedule [default: {d.decay}]")
    tr.add_argument("--warmup", type=_integer, help=f"constant steps before power decay [default: {d.warmup}]")
    tr.add_argument("--epochs", type=_integer, help=f"[default: {d.epochs}]")
    tr.add_argument("--batch-size", dest="batch_size", type=_integer, help=f"[default: {d.batch_size}]")
    tr.add_argument("--penalty", choices=("l2", "l1"), help=f"weight penalty [default: {d.penalty}]")
    tr.add_argument("--lam", type=_number, help=f"penalty strength lambda [default: {d.lam}]")
    tr.add_argument("--patience", type=_integer, help=f"early-stopping patience in epochs [default: {d.patience}]")
    tr.add_argument("--dropout", type=_number, help=f"dropout rate after each hidden layer [default: {d.dropout}]")
    tr.add_argument("--seed", type=_integer, help=f"[default: {d.seed}]")
    tr.add_argument("--reference", action="store_const", const=True,
                    help="train on autodiff twins (funcnet.reference) instead of the manual rules")
    tr.add_argument("--curvature", action="store_const", const=True,
                    help=f"after every epoch, record the top Hessian eigenvalue ({CURVATURE['iterations']} Lanczos "
                         f"steps) and the Hessian trace ({CURVATURE['samples']} Hutchinson probes) of the data loss "
                         f"on {CURVATURE['rows']} training rows (fixed, drawn with --seed) in history.json and the "
                         f"plot: {CURVATURE['iterations'] + CURVATURE['samples']} Hessian-vector products per epoch")
    tr.add_argument("--resume", metavar="RUN", help="continue a run (its folder or checkpoint) into a new folder; a "
                    "run stopped after its last epoch, before its history.json was written, is finished there")
    tr.add_argument("--out", metavar="DIR", help="new run folder (must not exist) [default: runs/run-NNN]")
    tr.add_argument("--devices", type=_integer, metavar="N", help="data-parallel training over N devices (on a CPU, "
                    "N simulated host devices); the batch size must be a multiple of N")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(run=_train)
    gc = sub.add_parser(
        "gradcheck",
        help="check every op's hand-written rules against autodiff, finite differences and its kinks",
        description="One row per registry op: max relative error of the reverse rule against autodiff of its "
        "twin and against centred finite differences (float64), with inputs in float32 and float64; of the "
        "forward rule against the twin's jax.jvp (float32, float64); the adjoint gap <v, Ju> vs <J^T v, u> "
        "(float64); Hessian-vector products through the reverse rule against the twin's (float64); and the "
        "documented kink conventions (the gradient at each kink, exactly). Then, for whole models, every "
        "parameter leaf in reverse and forward mode, and Hessian-vector products against the twin's. By default "
        "each op's first input shape and two models (about a minute on a 2-core CPU); --all for every shape and "
        "a model per activation. Limits come from funcnet.tolerances. Exits 1 if anything fails.",
    )
    gc.add_argument("--op", action="append", metavar="NAME", help="check only this op (repeatable)")
    gc.add_argument("--module", metavar="MODULE", help="check the ops a module of yours defines with "
                    "funcnet.custom_op instead (a dotted name importable from here, or a .py file)")
    gc.add_argument("--model", choices=("mlp", "digits", "transformer"), help="check only whole models: a small MLP "
                    "on random data, the digits network of `funcnet train`, or a one-block causal transformer "
                    "language model with the fused head (default with no options: every op, then "
                    "an MLP per activation)")
    gc.add_argument("--activation", action="append", choices=ACTIVATIONS,
                    help="activation(s) of the checked models (repeatable; default: all)")
    gc.add_argument("--all", action="store_true", help="the full sweep: every input shape of every op and a model "
                    "per activation, compiled with XLA's default settings (minutes; the default checks each op's "
                    "first input shape and two models, compiled for speed)")
    gc.add_argument("--no-progress", action="store_true", help="no progress bar")
    gc.add_argument("--json", action="store_true", help="print the results as JSON")
    gc.add_argument("--seed", type=_integer, default=0, help="seed for inputs and cotangents (default 0)")
    gc.set_defaults(run=_gradcheck)
    be = sub.add_parser("bench", help="time a training step against plain JAX and peer frameworks",
                        description="One training step of the same MLP in funcnet (manual rules), "
                        "funcnet.reference (autodiff), plain JAX + optax, Flax NNX, Equinox and PyTorch "
                        "(peers need `pip install funcnet[bench]`), interleaved in one process; medians, "
                        "ratios to plain JAX, TFLOP/s, and XLA's temporary memory of the compiled step.")
    be.add_argument("--configs", default=None,
                    help="comma-separated: small, medium, deep, wide (default: small, medium, deep, and wide "
                    "on an accelerator)")
    be.add_argument("--frameworks", default=None,
                    help="comma-separated (default: " + ",".join(("funcnet", "funcnet.reference", "plain_jax",
                                                                  "flax_nnx", "equinox", "pytorch"))
                    + "; peers that are not installed are then skipped)")
    be.add_argument("--quick", action="store_true",
                    help="about a minute: the small network, the dispatch table and the memory figures only (no "
                    "activation sweep, scan, roofline or scaling; 5 rounds of 5 steps)")
    be.add_argument("--rounds", type=_integer, default=None, help="interleaved rounds, the median is over these "
                    "[default: 10, --quick 5]")
    be.add_argument("--steps", type=_integer, default=None, help="steps per framework per round [default: 10, --quick 5]")
    be.add_argument("--no-memory", action="store_true", help="skip the memory analysis")
    be.add_argument("--no-sweep", action="store_true", help="skip the per-activation memory sweep")
    be.add_argument("--no-scan", action="store_true", help="skip scan vs step-at-a-time")
    be.add_argument("--no-dispatch", action="store_true",
                    help="skip the dispatch, trace and compile table (small jitted programs against jax.nn)")
    be.add_argument("--heads", default="", metavar="V,...",
                    help="also compare the fused classifier head with the unfused one for these class counts "
                    "(N = 8192 rows, D = 1024 features), e.g. 8192,32768,131072")
    be.add_argument("--head-rounds", type=_integer, default=3, metavar="N",
                    help="timed rounds per head and per row of --tables (0: memory only) [default: 3]")
    be.add_argument("--tables", default="", metavar="NAME,...",
                    help="also these tables: ctc (CTC loss against optax's, 32 x 500 frames), attention (streaming "
                    "attention against jax.nn's, T = 512 ... 8192), curvature (funcnet.curvature's quantities "
                    "against one gradient, medium and deep networks), or all; minutes each on a CPU")
    be.add_argument("--scaling-devices", type=_integer, default=None, metavar="N",
                    help="throughput on data-parallel meshes of 1, 2, 4, ... N devices and on N devices with a "
                    "model axis (0 to skip)")
    be.add_argument("--no-roofline", action="store_true",
                    help="skip the matmul rates and the bfloat16 mixed-precision steps")
    be.add_argument("--markdown", metavar="PATH", help="also write the report there (e.g. docs/benchmarks.md)")
    be.add_argument("--overwrite", action="store_true", help="allow --markdown and --plot to replace existing files")
    be.add_argument("--plot", metavar="PNG", help="also plot the ratios")
    be.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    be.set_defaults(run=_bench)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that a stopped run cleans up as an interrupted one does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: The signals that stop a command: Ctrl-C, ``kill``, and a closed terminal (SIGHUP, where the platform has it).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

#: Signals received. The handlers raise, and also record: an exception raised while JAX runs one of its own
#: callbacks can be dropped there ("Exception ignored in ..."), and then the run stops at the end of the epoch,
#: or once its files are written (see ``_train`` and ``main``).
_SIGNALS: list[int] = []


def _stop(signum, frame):
    _SIGNALS.append(signum)
    raise _stop_error(signum)


def _record(signum, frame):
    _SIGNALS.append(signum)


def _stop_error(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else _Terminated(signum)


def stop_if_signalled(*_) -> None:
    """Raise the stop of a signal that arrived but whose exception was swallowed (a ``fit`` callback)."""
    if _SIGNALS:
        raise _stop_error(_SIGNALS[-1])


def _stopped(command: str, err: KeyboardInterrupt) -> int:
    """Say that ``command`` was stopped, in one line; the exit status of a process killed by the signal."""
    signum = err.signum if isinstance(err, _Terminated) else signal.SIGINT
    word = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}.get(signum, "hung up")
    print(f"{command}: {word}", file=sys.stderr)
    return 128 + signum


def _unraisable_hook(previous):
    """``sys.unraisablehook`` that drops our own stops (a signal's exception raised inside a finalizer or one of
    JAX's callbacks, which Python would print with a traceback and ignore: the run stops at its next check)."""
    def hook(info):
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _SIGNALS):
            previous(info)

    return hook


def main(argv: list[str] | None = None) -> int:
    """Run ``funcnet *argv`` (by default the process's arguments) and return its exit status.

    Called as the command itself (``argv`` None), the process leaves through ``os._exit`` once its output is
    flushed: a signal can then not land in the interpreter's teardown, and XLA's threads are not torn down
    (which crashed now and then after an interrupt).
    """
    import threading

    command = "funcnet"
    # first of all, before JAX imports: a signal from now on stops the command with one line
    main_thread = threading.current_thread() is threading.main_thread()
    defaults = {signal.SIGINT: signal.default_int_handler}
    ours = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS
            if main_thread and signal.getsignal(sig) == defaults.get(sig, signal.SIG_DFL)}
    _SIGNALS.clear()
    unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(unraisable)
    try:
        for sig in ours:
            signal.signal(sig, _stop)
        args = build_parser().parse_args(argv)
        command = f"funcnet {args.command}"
        code = args.run(args)
        stop_if_signalled()  # one that arrived and was swallowed after the last check of the command
    except _UsageError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        code = 2
    except (ValueError, OSError, FloatingPointError, ImportError) as err:
        # DataError, CheckpointError, RunError and bad settings are ValueErrors with one-line messages
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{command}: error: {message}", file=sys.stderr)
        code = 1
    except (MemoryError, RuntimeError) as err:
        # XLA reports a failed allocation as RESOURCE_EXHAUSTED (a RuntimeError); anything else is a bug
        if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err):
            raise
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        hint = "; try a smaller network or batch (--hidden, --batch-size)" if command == "funcnet train" else ""
        print(f"{command}: error: out of memory ({detail}){hint}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as err:
        code = _stopped(command, err)
    finally:
        for sig, previous in ours.items():  # the command itself only records a signal from here on
            signal.signal(sig, _record if argv is None else previous)
        sys.unraisablehook = unraisable
    if argv is None:
        if _SIGNALS and code < 128:  # arrived while the command was reporting
            code = _stopped(command, _stop_error(_SIGNALS[-1]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
