"""The generated op reference in docs/: up to date, complete, and its checker works."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import funcnet
from funcnet.apps import docs
from funcnet.registry import OPS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("index.md", "gates.md", "nn.md", "losses.md", "cli/train.md", "cli/gradcheck.md", "cli/bench.md")

PUBLIC_OPS = list(dict.fromkeys(spec.fn for spec in OPS))
FAMILY_OF = {spec.fn: spec.family for spec in OPS}


def test_committed_docs_are_up_to_date():
    generated = docs.generate()
    assert sorted(generated) == sorted(PAGES)
    assert generated == docs.generate(), "the generator is not deterministic"
    for name, text in generated.items():
        assert " at 0x" not in text, f"{name} contains a memory address"
        on_disk = (DOCS / name).read_text(encoding="utf-8") if (DOCS / name).is_file() else None
        assert on_disk == text, f"docs/{name} is stale: run `python -m funcnet.apps.docs` from the repository root"


@pytest.mark.parametrize("spec", OPS, ids=[s.name for s in OPS])
def test_every_registry_op_is_on_its_family_page(spec):
    page = (DOCS / f"{spec.family}.md").read_text(encoding="utf-8")
    assert f"\n## {spec.qualname}\n" in page
    signature = str(inspect.signature(spec.fn))
    if " at 0x" in signature:  # a function as a default (ranking's reduce_fn=jnp.mean) is shown by its name
        signature = docs._signature(spec.fn).removeprefix(spec.fn.__name__)
        assert " at 0x" not in signature
    assert f"{spec.qualname}{signature}" in page
    assert f"| `{spec.name}` |" in page
    assert f"`{docs.twin_name(spec)}`" in page
    if spec.upstream is not None:
        assert f"`{docs.upstream_name(spec)}`" in page
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert f"[`{spec.qualname}`]({spec.family}.md#" in index


@pytest.mark.parametrize("spec", [s for s in OPS if s.upstream is not None], ids=lambda s: s.name)
def test_upstream_names_resolve_to_the_upstream_function(spec):
    module, _, name = docs.upstream_name(spec).rpartition(".")
    assert module in ("jax.nn", "optax.losses")
    assert getattr(sys.modules[module], name) is spec.upstream


def test_every_public_op_docstring_states_its_derivative_by_hand():
    """The hand-written part (before the facts the declaration appends) gives the derivative."""
    missing = [f"funcnet.{FAMILY_OF[fn]}.{fn.__name__}" for fn in PUBLIC_OPS
               if "Derivative" not in (fn.__doc__ or "").split("\nRules: a hand-written")[0]]
    assert missing == []
    assert all("\nSaves: " in fn.__doc__ and "\nKink convention: " in fn.__doc__ for fn in PUBLIC_OPS)


@pytest.fixture
def fresh_docs(tmp_path):
    assert docs.main(["--out", str(tmp_path)]) == 0
    assert docs.main(["--check", "--out", str(tmp_path)]) == 0
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_check_names_a_planted_stale_page(fresh_docs, page, capsys):
    path = fresh_docs / page
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n", "\nedited by hand\n", 1), encoding="utf-8")
    capsys.readouterr()
    assert docs.main(["--check", "--out", str(fresh_docs)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert all(str(fresh_docs / other) not in err for other in PAGES if other != page)


def test_check_names_a_missing_page(fresh_docs, capsys):
    (fresh_docs / "losses.md").unlink()
    capsys.readouterr()
    assert docs.main(["--check", "--out", str(fresh_docs)]) == 1
    assert "losses.md" in capsys.readouterr().err


def test_check_sees_a_changed_docstring(fresh_docs, monkeypatch):
    monkeypatch.setattr(funcnet.nn.relu, "__doc__", funcnet.nn.relu.__doc__ + "\nEdited.\n")
    assert docs.stale_pages(fresh_docs) == [fresh_docs / "nn.md"]


@pytest.mark.slow
def test_check_command_exits_1_on_a_stale_page(fresh_docs):
    (fresh_docs / "gates.md").write_text("# out of date\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "funcnet.apps.docs", "--check", "--out", str(fresh_docs)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "gates.md" in proc.stderr and "nn.md" not in proc.stderr


@pytest.mark.slow
def test_adding_an_op_worked_example_runs_and_declares_the_op():
    """The Python block of docs/adding-an-op.md, run as written, in a fresh process."""
    text = (DOCS / "adding-an-op.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "def soft_sign" in b]
    assert len(blocks) == 1
    check = (
        "\nfrom funcnet.ops.declaration import DECLARED\n"
        "assert DECLARED[-1].fn is soft_sign and DECLARED[-1].family == 'nn'\n"
        "print('declared')\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocks[0] + check], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "both rules agree" in proc.stdout and "declared" in proc.stdout


def test_a_docstring_that_restates_a_declared_fact_is_refused():
    from funcnet.ops.declaration import DECLARED, Checks, declarer
    from funcnet.ops.activations import _RELU

    declare = declarer("nn", twins=None, upstream=None)
    before = len(DECLARED)
    for restated in ("Saves: the input.", "Kink convention: 0 at 0.", "Kinks: none."):
        def planted(x):
            return x
        planted.__doc__ = f"A planted op.\n\n    Derivative: 1.\n    {restated}\n"
        with pytest.raises(ValueError, match="restates"):
            declare(forms=_RELU, saves="x", twin=lambda x: x, checks=Checks(sample=None, cases=()))(planted)
    assert len(DECLARED) == before
