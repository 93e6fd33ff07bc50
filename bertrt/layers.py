"""The layers of bertrt, bottom to top: a module may import its own layer and the layers below it, never above.

This table is the one statement of the architecture (docs/architecture.md explains it); `tests/test_layers.py`
holds the code to it by reading every module's imports, and `scripts/architecture_picture.py` draws it.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

# (layer, description, module prefixes). A module belongs to the layer of the longest prefix that matches its
# dotted name; stages (the top-level folders) are one layer and may use each other's public functions.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("core", "contracts and artifacts every layer shares",
     ("bertrt.errors", "bertrt.model_config", "bertrt.qa_contract", "bertrt.artifacts", "bertrt.pipeline_config",
      "bertrt.forking", "bertrt.profiles", "bertrt.engine_sidecar", "bertrt.layers", "bertrt.inputs",
      "bertrt.messages", "bertrt.resources", "bertrt.signals", "bertrt.extras", "bertrt.interrupts",
      "bertrt.output",  # how commands report: text or --json, progress bars, default names beside the input
      "bertrt.configs", "bertrt.models")),  # shipped files: configs, the embedded model's vocab
    ("qa", "QA data: tokenization, SQuAD examples, windows, answers, metrics", ("bertrt.qa",)),
    ("families", "model families: inputs, positions, weights, tokenizer of each", ("bertrt.families",)),
    ("graph", "graph forms: the surgery that makes them and the target registry", ("bertrt.surgery", "bertrt.targets")),
    ("runtimes", "how a model runs: runner protocol and registry", ("bertrt.runtimes",)),
    ("session", "a model + its tokenizer + SQuAD parameters + run options", ("bertrt.session",)),
    ("stages", "export, calibration, build, run, serve",
     ("bertrt.export", "bertrt.calibration", "bertrt.build", "bertrt.run", "bertrt.serve", "bertrt.data")),
    ("interface", "the command line and the Python API", ("bertrt.cli", "bertrt.api", "bertrt.arg_groups",
                                                          "bertrt.__main__", "bertrt.optimize")),
)
LAYER_NAMES = tuple(name for name, _, _ in LAYERS)


def layer_of(module: str) -> str | None:
    """The layer of a dotted bertrt module name (None for a module no layer names: classify it here)."""
    if module == "bertrt":  # the package itself: its version
        return "core"
    if module.endswith(".cli"):  # a stage's subcommands belong with the command line
        return "interface"
    best, best_len = None, -1
    for name, _, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def rank(layer: str) -> int:
    return LAYER_NAMES.index(layer)


# --- reading the code's imports (for tests/test_layers.py and scripts/architecture_picture.py) ------------------
def source_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for a checkout at `root`, from pyproject's package list and package-dir
    mapping (the stages are top-level folders mapped into `bertrt.<stage>`)."""
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = tool.get("package-dir", {})
    modules = {}
    for package in tool["packages"]:
        folder = root / mapping.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


@dataclass(frozen=True)
class Import:
    module: str  # the bertrt module imported
    line: int
    at_top: bool  # at module level (or under `if TYPE_CHECKING`), not inside a function or class


def bertrt_imports(path: Path, known: Collection[str]) -> list[Import]:
    """Every import of a bertrt module in the file at `path`; `from bertrt.x import y` counts as module
    bertrt.x.y where that module is in `known`."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found += [Import(name, node.lineno, id(node) in top) for name in names
                  if name == "bertrt" or name.startswith("bertrt.")]
    return found
