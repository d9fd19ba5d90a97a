"""The documentation site: it builds with ``mkdocs build --strict``, documents every public function the README
names, and every Python block of the README and the docs runs as written, twice, in a fresh folder."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import funcnet

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def documented_ids(site: Path) -> set[str]:
    """Every object anchor of the API pages, e.g. ``funcnet.train.fit``."""
    ids = set()
    for page in (site / "api").rglob("index.html"):
        ids.update(re.findall(r'id="(funcnet\.[\w.]+)"', page.read_text(encoding="utf-8")))
    return ids


def readme_names(text: str) -> dict[str, object]:
    """The functions and classes the README names in backticks.

    A dotted name (``train.fit``, ``funcnet.check_gradients``, ``train.fit(..., mesh="auto")``) anywhere, and a
    plain one (``fit``) inside a bullet about a module (a line starting ``* `funcnet.train`:`` and the lines
    indented under it).
    """
    found, module = {}, None
    for line in text.splitlines():
        bullet = re.match(r"\* `(funcnet\.[a-z_.]+)`:", line)
        if bullet:
            module = bullet.group(1)
        elif not line.startswith("  "):
            module = None
        for token in re.findall(r"`([A-Za-z_][\w.]*)(?:\(|`)", line):
            candidates = [token] + ([f"{module}.{token}"] if module and "." not in token else [])
            for name in candidates:
                obj = funcnet
                for part in name.removeprefix("funcnet.").split("."):
                    obj = getattr(obj, part, None)
                public = not any(part.startswith("_") for part in name.split("."))
                if public and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                        and getattr(obj, "__module__", "").startswith("funcnet"):
                    found[name] = obj
                    break
    return found


def undocumented(names: dict[str, object], ids: set[str]) -> list[str]:
    """The names whose object has no anchor on any API page (under its README path or where it is defined)."""
    missing = []
    for name, obj in names.items():
        where = {"funcnet." + name.removeprefix("funcnet."), f"{obj.__module__}.{obj.__qualname__}"}
        if not where & ids:
            missing.append(name)
    return missing


@pytest.mark.slow
def test_the_site_documents_every_public_function_the_readme_names(site):
    names = readme_names((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {"train.fit", "check_gradients", "funcnet.train.make_step", "funcnet.layers.mlp"} <= set(names)
    assert len(names) >= 30
    assert undocumented(names, documented_ids(site)) == []
    for command in ("train", "gradcheck", "bench"):
        assert "usage: funcnet " + command in (site / "cli" / command / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_check_reports_a_function_the_site_does_not_document(site):
    ids = documented_ids(site)
    names = readme_names("`train.fit`, `data.load`, `layers.mlp`")
    assert undocumented(names, ids) == []
    assert undocumented(names, ids - {"funcnet.train.fit"}) == ["train.fit"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_block_finder_sees_every_python_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n```bash\nls\n```\n```python\nprint(x)\n```\n")
    assert python_blocks(page) == ["x = 1\n", "print(x)\n"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in MARKDOWN if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_runs_as_written_twice_in_a_fresh_folder(path, tmp_path):
    # run twice in one fresh process: the second run meets the files of the first (a checkpoint that exists, ...)
    blocks = "\n\n".join(python_blocks(path))
    script = tmp_path / "blocks.py"
    script.write_text(f"{blocks}\n\nprint('second run', flush=True)\n\n{blocks}", encoding="utf-8")
    work = tmp_path / "fresh"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUNCNET_COMPILE_CACHE": "off", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=600,
                          env=env)
    run = 2 if "second run" in proc.stdout else 1
    assert proc.returncode == 0, f"run {run} of the Python blocks of {path.name}:\n{proc.stderr[-3000:]}"


# ------------------------------------------------------------------ every shell command pastes
def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands(line: str) -> list[list[str]]:
    """The commands of one line as bash reads them: a comment starts at a ``#`` that begins a word (so
    ``--overwrite# text`` is one word, as in bash, where shlex would cut it), ``&&`` separates commands,
    and leading ``NAME=value`` assignments are the environment, not the command."""
    quote, cut = None, len(line)
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            cut = i
            break
    out, words = [], []
    for word in shlex.split(line[:cut]) + ["&&"]:
        if word == "&&":
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words:
                out.append(words)
            words = []
        else:
            words.append(word)
    return out


def why_it_fails(argv: list[str]) -> str | None:
    """``None`` if the command would run as pasted (in the repository, after the README's install),
    else why not. Unknown commands fail, so that each new kind of command gets its own check."""
    import tomllib

    import jax

    from funcnet.apps import cli

    name = argv[0].rsplit("/", 1)[-1]
    if name == "funcnet":
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                cli.build_parser().parse_args(argv[1:])
        except SystemExit as exit:
            return f"exit {exit.code}: {err.getvalue().strip().splitlines()[-1]}"
        return None
    if argv[:3] == ["python3", "-m", "venv"]:
        return None
    if name == "pip" and argv[1] == "install":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        wanted = [e for a in argv[2:] for group in re.findall(r"\[([\w,]+)\]", a) for e in group.split(",")]
        missing = [e for e in wanted if e not in extras]
        return f"no extra {missing} in pyproject.toml" if missing else None
    if name in ("python", "python3") and argv[1:3] == ["-m", "pytest"]:
        plugins = [argv[i + 1] for i, a in enumerate(argv) if a == "-p"]
        missing = [p for p in plugins if not (ROOT / "tests" / f"{p}.py").exists()]
        return f"no plugin {missing} in tests/" if missing else None
    if name in ("python", "python3") and argv[1].endswith(".py"):
        script = ROOT / argv[1]
        if not script.exists():
            return f"no script {argv[1]}"
        text = script.read_text(encoding="utf-8")
        unknown = [a for a in argv[2:] if a.startswith("-") and f'"{a}"' not in text]
        return f"{argv[1]} takes no {unknown}" if unknown or any(a.startswith("[") for a in argv[2:]) else None
    if argv[:2] == ["git", "clone"] and "jax-ml/jax" in " ".join(argv):
        tag = argv[argv.index("--branch") + 1]
        return None if tag == f"jax-v{jax.__version__}" else f"jax's tests at {tag}, funcnet runs on {jax.__version__}"
    return f"no check for the command {argv[0]!r}"


SHELL_LINES = [(p, line) for p in MARKDOWN for block in bash_blocks(p) for line in block.splitlines() if line.strip()]


def test_every_shell_command_of_the_docs_pastes_as_written():
    """Every line of every ``bash`` block (README, docs, the command pages): each ``funcnet`` command is
    parsed by the command's own parser, each other command checked against what it names (extras,
    scripts and their options, pytest plugins, the jax tag). Running them all would take an hour (the
    benchmark page's command alone); the tests of each command run them (tests/test_cli_*.py)."""
    assert len(SHELL_LINES) >= 20
    failures = [f"{p.relative_to(ROOT)}: {line!r}: {why}" for p, line in SHELL_LINES
                for argv in commands(line) for why in [why_it_fails(argv)] if why]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("line", [
    "funcnet bench --markdown docs/benchmarks.md --overwrite# the benchmark page",  # the pasted line of issue 22
    "python benchmarks/main_job_plain_jax.py [--bundled]",
    "pip install '.[trian]'",
    "funcnet train --epochs three",
    "git clone --depth 1 --branch jax-v0.4.0 https://github.com/jax-ml/jax /tmp/jax",
    "make docs",
])
def test_the_shell_check_catches_a_line_that_would_not_run(line):
    assert any(why_it_fails(argv) for argv in commands(line))
