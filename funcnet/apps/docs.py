"""Generate the Markdown op reference in ``docs/`` from :data:`funcnet.registry.OPS`.

One page per op family (``gates.md``, ``nn.md``, ``losses.md``) and an
``index.md``. Every public op gets its signature, its docstring (formula,
derivative, what the rule saves, kink convention) and a table of its registry
rows. The output depends only on the code, so it can be checked in CI::

    python -m funcnet.apps.docs            # write docs/
    python -m funcnet.apps.docs --check    # exit 1 if a page in docs/ is stale
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from funcnet.registry import OPS, OpSpec

FAMILIES = {"gates": "Gates", "nn": "Activations", "losses": "Losses"}
UPSTREAM_NAMESPACES = {"nn": "jax.nn", "losses": "optax.losses"}

INDEX_INTRO = """\
# funcnet

Functional neural networks in JAX whose every gradient is written by hand and
checked against autodiff. Networks are pure functions over parameter pytrees;
every gate, activation and loss carries a hand-written reverse rule *and* a
hand-written forward rule.

## One declaration per op, both directions

Each op is declared once (`funcnet/ops/*.py`): its value, what it saves, its
reverse rule, its forward (tangent) rule from the same residuals, its autodiff
twin, its kink convention and its input sampler. The public function, the
registry, `layers`' activations, these pages and `funcnet gradcheck` are
derived from that declaration ([Adding an op](adding-an-op.md) shows how).

`jax.grad`, `jax.vjp` and `jax.jacrev` run the hand-written reverse rule;
`jax.jvp`, `jax.jacfwd` and `jax.linearize` run the hand-written forward rule,
in every context: `jit`, `vmap`, `lax.scan` and loop bodies, `jax.checkpoint`
under every policy, `jax.shard_map`. Second order (`jax.hessian`,
grad-of-grad) differentiates the rules themselves. The rules are bound the way
`jax.lax` binds its own: each op is a `jax.custom_jvp` function of its value
(undifferentiated, a jitted program holds ordinary operations and takes JAX's
compiled fast path), whose JVP binds a primitive linear in the tangents: its
evaluation is the forward rule and its transpose is the reverse rule. The
classic `jax.custom_vjp` form of every rule (reverse mode only) is built from
the same declaration (`funcnet.custom_vjp_form()`). Your own op gets
the same binding and checks with `funcnet.custom_op` ([Adding an
op](adding-an-op.md)).

## Manual rules and autodiff twins

Beside each manual op, `funcnet.reference` holds its *autodiff twin* under the
same name: the same forward pass in plain `jax.numpy`, differentiated by JAX.
`funcnet.registry.OPS` lists every op with its twin, an input sampler and
tolerances; the tests and `funcnet gradcheck` compare each hand-written rule
with autodiff of the twin and with centred finite differences, and the two
rules with each other (⟨v, J u⟩ = ⟨Jᵀ v, u⟩). These pages are generated from
the same registry by `python -m funcnet.apps.docs`.

## Ops
"""


def _slug(heading: str) -> str:
    """The anchor that Python-Markdown (mkdocs) and GitHub give a heading."""
    return re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _markdown(doc: str) -> str:
    """A docstring as Markdown.

    Sphinx roles (``:func:`x```) become code spans, and each line opening with
    ``Derivative:``, ``Saves:`` or ``Kink``/``Kinks`` starts a paragraph.
    """
    text = re.sub(r":(?:func|data|mod|class|meth):`~?([^`]+)`", r"`\1`", inspect.cleandoc(doc))
    return re.sub(r"(?<=[^\n])\n(?=(?:Derivative|Saves|Kink)\w*( convention)?:)", "\n\n", text)


class _Named:
    """A placeholder whose repr is a fixed name."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _signature(fn: Callable) -> str:
    """``name(params)``, with any default without a stable repr shown by name."""
    params = []
    for p in inspect.signature(fn).parameters.values():
        default = p.default
        if default is not p.empty and (callable(default) or " at 0x" in repr(default)):
            name = getattr(default, "__qualname__", type(default).__qualname__)
            p = p.replace(default=_Named(f"{getattr(default, '__module__', '')}.{name}".lstrip(".")))
        params.append(p)
    return f"{fn.__name__}{inspect.Signature(params)}"


def upstream_name(spec: OpSpec) -> str | None:
    """The public dotted name of ``spec.upstream`` (``jax.nn.relu``), or None."""
    fn = spec.upstream
    if fn is None:
        return None
    namespace = UPSTREAM_NAMESPACES.get(spec.family)
    if namespace and getattr(importlib.import_module(namespace), fn.__name__, None) is fn:
        return f"{namespace}.{fn.__name__}"
    return f"{fn.__module__}.{fn.__name__}"


def twin_name(spec: OpSpec) -> str:
    """The dotted name of the autodiff twin, ``funcnet.reference.<family>.<name>``."""
    return f"funcnet.reference.{spec.family}.{spec.twin.__name__}"


def ops_by_function(family: str) -> dict[Callable, list[OpSpec]]:
    """The registry rows of ``family`` grouped by public function, in registry order."""
    groups: dict[Callable, list[OpSpec]] = {}
    for spec in OPS:
        if spec.family == family:
            groups.setdefault(spec.fn, []).append(spec)
    return groups


def family_page(family: str) -> str:
    """The Markdown page of one op family."""
    groups = ops_by_function(family)
    module = sys.modules[next(iter(groups)).__module__]
    lines = [f"# {FAMILIES[family]}: `funcnet.{family}`", "", _markdown(module.__doc__ or ""), ""]
    for fn, specs in groups.items():
        lines += [
            f"## {specs[0].qualname}",
            "",
            "```text",
            f"funcnet.{family}.{_signature(fn)}",
            "```",
            "",
            _markdown(fn.__doc__ or ""),
            "",
            "| Registry row | Saves | Kink | Upstream | Differs from upstream | Autodiff twin |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for spec in specs:
            upstream = upstream_name(spec)
            lines.append(
                f"| `{_cell(spec.name)}` | {_cell(spec.saves) or '—'} | {_cell(spec.kink)} "
                f"| {f'`{upstream}`' if upstream else '—'} | {_cell(spec.differs) or ('no' if upstream else '—')} "
                f"| `{twin_name(spec)}` |"
            )
        lines.append("")
    return "\n".join(lines)


def index_page() -> str:
    """The overview page with a table linking every op to its family page."""
    lines = [INDEX_INTRO, "| Op | Page | Registry rows |", "| --- | --- | --- |"]
    for family, title in FAMILIES.items():
        for fn, specs in ops_by_function(family).items():
            qualname = specs[0].qualname
            rows = ", ".join(f"`{_cell(s.name)}`" for s in specs)
            lines.append(f"| [`{qualname}`]({family}.md#{_slug(qualname)}) | [{title}]({family}.md) | {rows} |")
    lines.append("")
    return "\n".join(lines)


#: Examples on each command's page: (command line, what it does).
CLI_EXAMPLES = {
    "train": [("funcnet train", "the main job: the bundled digits, 64-256-10 ReLU, Adam, into runs/run-NNN/"),
              ("funcnet train --data spiral --hidden 32,32 --activation tanh --epochs 100", "another data set and net"),
              ("funcnet train --data my.csv --out runs/mine", "your own data (last column: labels or targets)"),
              ("funcnet train --optimizer kfac", "K-FAC (docs/curvature.md): the digits' accuracy in ~1/4 of Adam's steps"),
              ("funcnet train --resume runs/run-001 --epochs 60", "continue a run into a new folder"),
              ("funcnet train --curvature", "also the top Hessian eigenvalue and trace per epoch"),
              ("FUNCNET_COMPILE_CACHE=off funcnet train", "without the persistent compilation cache")],
    "gradcheck": [("funcnet gradcheck", "every op (its first input shape), then two MLPs: about a minute"),
                  ("funcnet gradcheck --all", "every input shape of every op, an MLP per activation"),
                  ("funcnet gradcheck --op relu --op softmax", "two ops"),
                  ("funcnet gradcheck --model digits --activation gelu --json", "one whole model, as JSON"),
                  ("funcnet gradcheck --module my_ops.py", "the funcnet.custom_op ops of your own module")],
    "bench": [("funcnet bench --quick", "about a minute: the small network, dispatch and memory"),
              ("funcnet bench --configs small --rounds 5", "the small network with the scan and scaling tables"),
              ("funcnet bench --heads 8192,32768 --no-sweep --configs small", "the fused classifier head too"),
              ("funcnet bench --markdown docs/benchmarks.md --plot docs/benchmarks.png --overwrite",
               "the benchmark page")],
}


def cli_page(command: str) -> str:
    """The page of ``funcnet <command>``: what it does, its ``--help`` (at 100 columns) and examples."""
    import os

    from funcnet.apps.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page must not depend on it
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        help_text = sub.format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    lines = [f"# `funcnet {command}`", "", "<!-- generated by `python -m funcnet.apps.docs`; do not edit -->", "",
             "Also `python -m funcnet " + command + " ...`. Errors are one line "
             "on stderr with a non-zero exit status (2 for bad arguments).", "", "## Options", "", "```text",
             help_text.rstrip(), "```", "", "## Examples", "", "```bash"]
    # at least two spaces before the comment: a line as long as the column still pastes as a command
    lines += [f"{line:<76}  # {what}" for line, what in CLI_EXAMPLES[command]]
    lines += ["```", ""]
    return "\n".join(lines)


def generate() -> dict[str, str]:
    """Every page, as ``{file name: Markdown text}`` (op pages, and ``cli/<command>.md``)."""
    pages = {"index.md": index_page()}
    pages.update({f"{family}.md": family_page(family) for family in FAMILIES})
    pages.update({f"cli/{command}.md": cli_page(command) for command in CLI_EXAMPLES})
    return pages


def stale_pages(out: Path) -> list[Path]:
    """The pages under ``out`` that are missing or differ from :func:`generate`."""
    return [
        out / name
        for name, text in generate().items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    ]


def write_pages(out: Path) -> None:
    """Write every page under ``out``."""
    for name, text in generate().items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the pages, or with ``--check`` report stale ones.

    Returns:
      0 on success; 1 with ``--check`` if any page is missing or out of date.
    """
    parser = argparse.ArgumentParser(prog="python -m funcnet.apps.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a page is stale")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: ./docs)")
    args = parser.parse_args(argv)
    if not args.check:
        write_pages(args.out)
        return 0
    stale = stale_pages(args.out)
    for path in stale:
        print(f"stale: {path} (regenerate with: python -m funcnet.apps.docs --out {args.out})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
