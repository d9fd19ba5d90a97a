"""The library apart from its apps: no library module imports funcnet.apps, and each imports on its own."""

import ast
import pathlib
import subprocess
import sys

import pytest

import funcnet

PACKAGE = pathlib.Path(funcnet.__file__).parent
# __main__.py is the entry of `python -m funcnet`: it runs the CLI, an app
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "apps" not in p.relative_to(PACKAGE).parts
                 and p.name != "__main__.py")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: pathlib.Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``path`` names (relative imports resolved)."""
    names = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def apps_imports(path: pathlib.Path) -> list[str]:
    return sorted(n for n in imported(path) if n == "funcnet.apps" or n.startswith("funcnet.apps."))


def test_the_checker_sees_an_import_of_the_apps(tmp_path):
    planted = PACKAGE / "_planted_for_test.py"
    for source in ("from funcnet.apps import cli\n", "import funcnet.apps.run\n",
                   "def f():\n    from .apps.bench import markdown\n"):
        planted.write_text(source)
        try:
            assert apps_imports(planted), source
        finally:
            planted.unlink()


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_never_imports_the_apps(path):
    assert apps_imports(path) == []


def test_library_modules_import_neighbours_directly():
    # `import funcnet` reaches neighbours through the package, whose import order then matters; only layers
    # takes the package itself, as the manual op namespace (ops=funcnet), and reads it when a layer is built
    through_package = [str(p.relative_to(PACKAGE)) for p in LIBRARY if p.name != "__init__.py"
                       and "funcnet" in imported(p) and any(isinstance(n, ast.Import) and any(a.name == "funcnet"
                       for a in n.names) for n in ast.walk(ast.parse(p.read_text())))]
    assert through_package == ["layers.py"]


def test_each_library_module_imports_alone_without_the_apps():
    modules = [module_name(p) for p in LIBRARY if p.name != "__main__.py"]
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


def test_every_module_the_readme_names_is_reachable_after_import_funcnet():
    """``import funcnet`` then ``funcnet.<module>.<name>`` works for each library module the README names
    (``funcnet.parallel.data_mesh(4)`` raised AttributeError). Checked in a fresh process: other tests'
    imports would hide a missing one."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    named = sorted({m for m in __import__("re").findall(r"funcnet\.([a-z_]+)\.[a-z_]", readme)} - {"apps", "ops"})
    assert "parallel" in named
    code = "import funcnet\n" + "".join(f"assert hasattr(funcnet, {m!r}), {m!r}\n" for m in named)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
