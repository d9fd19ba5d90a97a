"""The documentation site: it builds with ``mkdocs build --strict``, documents every public function the README
names, and every Python block of the README and the docs runs as written, twice, in a fresh folder."""

from __future__ import annotations

import inspect
import os
import re
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
