"""The layers of bertrt, bottom to top: a module may import its own layer and the layers below it, never above.

This table is the one statement of the architecture (docs/architecture.md explains it); `tests/test_layers.py`
holds the code to it by reading every module's imports, and `scripts/architecture_picture.py` draws it.
"""

from __future__ import annotations

# (layer, description, module prefixes). A module belongs to the layer of the longest prefix that matches its
# dotted name; stages (the top-level folders) are one layer and may use each other's public functions.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("core", "contracts and artifacts every layer shares",
     ("bertrt.errors", "bertrt.model_config", "bertrt.qa_contract", "bertrt.artifacts", "bertrt.pipeline_config",
      "bertrt.forking", "bertrt.profiles", "bertrt.engine_sidecar", "bertrt.layers", "bertrt.inputs",
      "bertrt.messages", "bertrt.resources", "bertrt.signals", "bertrt.extras")),
    ("qa", "QA data: tokenization, SQuAD examples, windows, answers, metrics", ("bertrt.qa",)),
    ("families", "model families: inputs, positions, weights, tokenizer of each", ("bertrt.families",)),
    ("graph", "graph forms: the surgery that makes them and the target registry", ("bertrt.surgery", "bertrt.targets")),
    ("runtimes", "how a model runs: runner protocol and registry", ("bertrt.runtimes",)),
    ("session", "a model + its tokenizer + SQuAD parameters + run options", ("bertrt.session",)),
    ("stages", "export, calibration, build, run, serve",
     ("bertrt.export", "bertrt.calibration", "bertrt.build", "bertrt.run", "bertrt.serve", "bertrt.data")),
    ("interface", "the command line and the Python API", ("bertrt.cli", "bertrt.api", "bertrt.arg_groups",
                                                          "bertrt.__main__")),
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
