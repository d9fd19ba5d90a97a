"""The ``funcnet`` command line: ``funcnet gradcheck``."""

from __future__ import annotations

import argparse
import sys


class _UsageError(Exception):
    pass


def _gradcheck(args: argparse.Namespace) -> int:
    from funcnet.gradcheck import check_registry, format_table
    from funcnet.registry import OPS

    ops = OPS
    if args.op:
        known = {spec.name for spec in OPS}
        unknown = [name for name in args.op if name not in known]
        if unknown:
            raise _UsageError(f"unknown op {', '.join(map(repr, unknown))}; known ops: {', '.join(sorted(known))}")
        ops = tuple(spec for spec in OPS if spec.name in args.op)
    rows = check_registry(ops, seed=args.seed)
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funcnet", description="Functional neural networks with hand-written gradients.")
    sub = parser.add_subparsers(dest="command", required=True)
    gc = sub.add_parser(
        "gradcheck",
        help="compare every op's manual gradient with autodiff and finite differences",
        description="One row per registry op: max relative error of the manual gradient against autodiff "
        "of its twin and against centred finite differences (float64), with inputs in float32 and float64. "
        "Exits 1 if any row is over tolerance.",
    )
    gc.add_argument("--op", action="append", metavar="NAME", help="check only this op (repeatable)")
    gc.add_argument("--seed", type=int, default=0, help="seed for inputs and cotangents (default 0)")
    gc.set_defaults(run=_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except _UsageError as err:
        print(f"funcnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"funcnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
