"""The architecture held to the code: every bertrt module belongs to a layer (bertrt/layers.py), imports only its own
layer and the layers below it, and imports bertrt modules at its top (an import hidden in a function hides the
layering; optional third-party dependencies are imported where they are needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertrt.layers import LAYER_NAMES, bertrt_imports, layer_of, rank, source_modules

ROOT = Path(__file__).resolve().parent.parent
MODULES = source_modules(ROOT)


def test_every_module_has_a_layer():
    assert len(MODULES) > 50, "the module scan found too little: is pyproject's package list read right?"
    unclassified = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unclassified, f"modules in no layer (add them to bertrt/layers.py): {unclassified}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_and_sit_at_the_top(module):
    path = MODULES[module]
    own = layer_of(module)
    upward, hidden = [], []
    for imp in bertrt_imports(path, MODULES):
        imported = layer_of(imp.module)
        where = f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module}"
        if imported is not None and rank(imported) > rank(own):
            upward.append(f"{where} ({imported} is above {own})")
        if not imp.at_top:
            hidden.append(f"{where} inside a function")
    assert not upward, "\n".join(upward)
    assert not hidden, "\n".join(hidden)


def test_a_hidden_or_upward_import_is_caught(tmp_path):
    """The checks themselves can fail: a function-level import and an upward import in a scratch module."""
    source = tmp_path / "m.py"
    source.write_text("from bertrt.errors import BertrtError\n\ndef f():\n    from bertrt.cli import main\n")
    found = bertrt_imports(source, MODULES)
    assert [(i.module, i.at_top) for i in found] == [("bertrt.errors", True), ("bertrt.cli", False)]
    assert rank(layer_of("bertrt.cli")) > rank(layer_of("bertrt.errors"))


def test_layer_table_is_ordered_bottom_up():
    assert LAYER_NAMES[0] == "core" and LAYER_NAMES[-1] == "interface"
