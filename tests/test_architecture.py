"""Both arrows of the plugin architecture, checked on the source (an import-linter contract).

* Plugins import only probecore's public API: ``probecore``, ``probecore.hookspec`` and
  ``probecore.testing`` — never a private ``probecore._module``.
* The core imports no plugin: ``probecore_plugins`` is named only as strings in the one tuple
  of built-ins, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import probecore
from probecore._plugins import BUILTIN_PLUGINS

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"probecore", "probecore.hookspec", "probecore.testing"}


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if node.module == "probecore" and alias.name.startswith("_")]
    return found


def python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def test_plugins_import_only_the_public_api():
    offences = []
    files = python_files(ROOT / "plugins")
    assert files, "no plugin sources found"
    for path in files:
        for line, name in imports(path):
            if name.split(".")[0] == "probecore" and name not in PUBLIC and not name.startswith("probecore.testing."):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offences == []


def test_core_imports_no_plugin():
    offences = []
    for path in python_files(ROOT / "probecore"):
        for line, name in imports(path):
            if name.split(".")[0] in {"probecore_plugins", "plugins"}:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offences == []


def test_builtins_are_named_in_one_tuple_and_all_exist():
    package = ROOT / "plugins" / "probecore_plugins"
    # Modules whose names start with "_" are helpers shared by built-in plugins, not plugins.
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}  # plugins that are packages
    assert {name.rsplit(".", 1)[1] for name in BUILTIN_PLUGINS} == modules
    # Plugin module names appear as code (string constants) in one module only.
    mentions = []
    for path in python_files(ROOT / "probecore"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        body_strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                        and isinstance(n.value, str) and n.value.startswith("probecore_plugins.")]
        if body_strings:
            mentions.append(path.name)
    assert mentions == ["_plugins.py"]


def test_the_checker_catches_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from probecore._scheduler import Scheduler\nfrom probecore import _record\nimport probecore_plugins.tcp\n")
    assert [name for _, name in imports(bad)] == ["probecore._scheduler", "probecore", "probecore._record",
                                                   "probecore_plugins.tcp"]


def test_public_api_is_exported():
    for name in probecore.__all__:
        assert hasattr(probecore, name), name
