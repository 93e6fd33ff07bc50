"""The architecture held to the code: every bertrt module belongs to a layer (bertrt/layers.py), imports only its own
layer and the layers below it, and imports bertrt modules at its top (an import hidden in a function hides the
layering; optional third-party dependencies are imported where they are needed)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from bertrt.layers import LAYER_NAMES, layer_of, rank

ROOT = Path(__file__).resolve().parent.parent


def _package_dirs() -> dict[str, Path]:
    """Import package -> source folder, from pyproject's package-dir mapping (the stages are top-level folders)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = tool.get("package-dir", {})
    return {pkg: ROOT / mapping.get(pkg, pkg.replace(".", "/")) for pkg in tool["packages"]}


def _modules() -> dict[str, Path]:
    modules = {}
    for pkg, folder in _package_dirs().items():
        for path in folder.glob("*.py"):
            name = pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"
            modules[name] = path
    return modules


MODULES = _modules()


def _bertrt_imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(imported bertrt module, line, at module level) for every import of a bertrt module in `tree`."""
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bertrt.x import y` may import module bertrt.x.y: count the deepest module that exists
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        for name in names:
            if name == "bertrt" or name.startswith("bertrt."):
                found.append((name, node.lineno, id(node) in top or _in_type_checking(tree, node)))
    return found


def _in_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(target is child for child in ast.walk(node)):
                return True
    return False


def test_every_module_has_a_layer():
    assert len(MODULES) > 50, "the module scan found too little: is pyproject's package list read right?"
    unclassified = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unclassified, f"modules in no layer (add them to bertrt/layers.py): {unclassified}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_and_sit_at_the_top(module):
    path = MODULES[module]
    own = layer_of(module)
    upward, hidden = [], []
    for name, line, at_top in _bertrt_imports(ast.parse(path.read_text(), str(path))):
        imported = layer_of(name)
        if imported is not None and rank(imported) > rank(own):
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({imported} above {own})")
        if not at_top:
            hidden.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert not upward, "\n".join(upward)
    assert not hidden, "\n".join(hidden)


def test_layer_table_is_ordered_bottom_up():
    assert LAYER_NAMES[0] == "core" and LAYER_NAMES[-1] == "interface"
