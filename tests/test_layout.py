"""The package's layout rules, read from the source: data flows one way.

* no library module imports ``funcnet.apps`` (the library never imports its apps), and each imports alone;
* no import circle between library modules (imports inside functions count);
* a private module (``_name.py``) is imported only from inside its own package;
* ``funcnet.reference`` (the autodiff twins) takes nothing behaviour-bearing from ``funcnet.ops``: only
  numeric constants, so a wrong helper in an op cannot also be in the twin that checks it;
* library modules import their neighbours directly, never the package ``funcnet`` itself.

Each checker is run on a planted violation first.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

import funcnet

PACKAGE = pathlib.Path(funcnet.__file__).parent
# __main__.py is the entry of `python -m funcnet`: it runs the CLI, an app
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "apps" not in p.relative_to(PACKAGE).parts
                 and p.name != "__main__.py")
MODULES = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, list[str], int]]:
    """``(module imported from, names, line)`` for every import in ``source`` (relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((base, [alias.name for alias in node.names], node.lineno))
    return out


def targets(source: str, module: str, is_package: bool = False) -> set[str]:
    """The funcnet modules an import reaches: ``from a import b`` reaches ``a.b`` if that is a module, else ``a``."""
    out = set()
    for base, names, _ in imports(source, module, is_package):
        if not base.startswith("funcnet"):
            continue
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES or f"{base}.{n}.__init__" in MODULES]
        out.update(submodules or [base])
        if len(submodules) < len(names):
            out.add(base)
    return out


def _source(path: pathlib.Path) -> tuple[str, str, bool]:
    return path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"


# ------------------------------------------------------------------- the apps
def apps_imports(source: str, module: str) -> list[str]:
    return sorted(t for t in targets(source, module) if t == "funcnet.apps" or t.startswith("funcnet.apps."))


def test_the_apps_checker_sees_a_planted_import():
    for source in ("from funcnet.apps import cli\n", "import funcnet.apps.run\n",
                   "def f():\n    from .apps.bench import report\n"):
        assert apps_imports(source, "funcnet.planted"), source


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_never_imports_the_apps(path):
    source, module, _ = _source(path)
    assert apps_imports(source, module) == []


@pytest.mark.slow
def test_each_library_module_imports_alone_without_the_apps():
    """In a fresh process: other tests' imports would hide an import that only works in some order."""
    modules = [module_name(p) for p in LIBRARY]
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    for m in [m for m in sys.modules if m == 'funcnet' or m.startswith('funcnet.')]:\n"
              "        del sys.modules[m]\n"
              "    importlib.import_module(name)\n"
              "    apps = [m for m in sys.modules if m.startswith('funcnet.apps')]\n"
              "    assert not apps, (name, apps)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------- circles
def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports), each once, as a path back to its start."""
    found, seen = [], set()

    def walk(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle + [nxt])
            elif len(path) < 40:
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in LIBRARY:
        source, module, is_package = _source(path)
        # a package's __init__ only re-exports its submodules; an import of the package reaches them through it
        graph[module] = {t for t in targets(source, module, is_package) if t != module}
    return graph


def test_the_circle_checker_finds_a_planted_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    planted = {**_graph(), "funcnet.train.state": _graph()["funcnet.train.state"] | {"funcnet.train.hooks"}}
    assert circles(planted)


def test_no_import_circles():
    # a package __init__ that imports its submodules is not a circle with a submodule importing a sibling,
    # so only edges between modules (not into a package's own __init__) are followed
    graph = _graph()
    inner = {m: {t for t in ts if not (m.startswith(t + ".") and MODULES.get(t + ".__init__"))}
             for m, ts in graph.items()}
    assert circles(inner) == []


# ------------------------------------------------------- private modules stay home
def private_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports of a private module (``a._b``) from outside its package ``a``."""
    home = module if is_package else module.rpartition(".")[0]
    bad = []
    for target in targets(source, module, is_package):
        parts = target.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not (home == owner or home.startswith(owner + ".")):
                    bad.append(target)
                break
    return bad


def test_the_private_module_checker_sees_a_planted_import():
    assert private_imports("from funcnet.ops._samples import unary\n", "funcnet.train.steps") == [
        "funcnet.ops._samples"]
    assert private_imports("from funcnet.ops import _samples\n", "funcnet.layers") == ["funcnet.ops._samples"]
    assert private_imports("from funcnet.ops._samples import unary\n", "funcnet.ops.losses.binary") == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_module_is_imported_from_another_package(path):
    assert private_imports(*_source(path)) == []


# ---------------------------------------------------- the twins stand apart
def behaviour_from_ops(source: str, module: str) -> list[str]:
    """Names a twin module takes from ``funcnet.ops`` that are not numeric constants (UPPER_CASE numbers)."""
    import importlib

    bad = []
    for base, names, _ in imports(source, module):
        if base == "funcnet.ops" or base.startswith("funcnet.ops."):
            for name in names or ["<the module>"]:
                value = getattr(importlib.import_module(base), name, None) if names else None
                if not (re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and isinstance(value, (int, float))):
                    bad.append(f"{base}.{name}")
    return bad


def test_the_twin_checker_sees_a_planted_helper():
    assert behaviour_from_ops("from funcnet.ops.numerics import widen, LOG_FLOOR\n", "funcnet.reference.nn") == [
        "funcnet.ops.numerics.widen"]
    assert behaviour_from_ops("import funcnet.ops.numerics\n", "funcnet.reference.nn")


@pytest.mark.parametrize("path", sorted((PACKAGE / "reference").glob("*.py")), ids=lambda p: p.name)
def test_twins_take_only_constants_from_the_ops(path):
    source, module, _ = _source(path)
    assert behaviour_from_ops(source, module) == []


def test_neighbours_are_imported_directly_not_through_the_package():
    # `import funcnet` reaches neighbours through the package, whose import order then matters
    through_package = [str(p.relative_to(PACKAGE)) for p in LIBRARY if p.name != "__init__.py"
                       and any(base == "funcnet" and not names for base, names, _ in imports(*_source(p)[:2]))]
    assert through_package == []


@pytest.mark.slow
def test_every_module_the_readme_names_is_reachable_after_import_funcnet():
    """``import funcnet`` then ``funcnet.<module>.<name>`` works for each library module the README names
    (``funcnet.parallel.data_mesh(4)`` raised AttributeError). Checked in a fresh process: other tests'
    imports would hide a missing one."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    named = sorted({m for m in re.findall(r"funcnet\.([a-z_]+)\.[a-z_]", readme)} - {"apps", "ops"})
    assert "parallel" in named
    code = "import funcnet\n" + "".join(f"assert hasattr(funcnet, {m!r}), {m!r}\n" for m in named)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
