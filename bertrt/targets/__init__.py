"""The registry of graph forms ("targets") a bertrt model can have; one module per target declares everything about
it (see target.py for the fields and docs/targets.md for the table).

A model records its target in its metadata (`bertrt.target`), apart from the stage that produced it (a quantized
`native` model has stage `quantize:int8` and target `native`). Models made before the key existed are recognised by
their ops, so this is the one place that answers "what form is this graph in". Stages ask the `Target` (its
runtimes, precisions, options, refusals); none compares a target's name.

Adding a target: a module here that builds a `Target`, and one line in `_REGISTERED` below.
"""

from __future__ import annotations

import onnx

from bertrt.errors import BertrtError
from bertrt.qa_contract import metadata, stage_of
from bertrt.targets import export, native, ort, packed, plugins
from bertrt.targets.target import Converter, Emitter, Option, Recognizer, Target

__all__ = ["META_TARGET", "TARGETS", "Converter", "Emitter", "Option", "Recognizer", "Target", "get_target",
           "register", "stamp_target", "surgery_targets", "target_of"]

META_TARGET = "bertrt.target"

TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    """Add `target` to the registry (its name must be new); every stage, the CLI and `target_of` then know it."""
    if target.name in TARGETS:
        raise BertrtError(f"target {target.name!r} is already registered")
    if target.source is not None and target.source not in TARGETS:
        raise BertrtError(f"target {target.name!r} is made from {target.source!r}, which is not registered")
    TARGETS[target.name] = target
    return target


_REGISTERED = (export.TARGET, native.TARGET, ort.TARGET, plugins.TARGET, packed.TARGET)
for _target in _REGISTERED:
    register(_target)


def surgery_targets() -> tuple[str, ...]:
    """Names of the targets `bertrt surgery` makes (those with an emitter), in registration order."""
    return tuple(name for name, t in TARGETS.items() if t.is_surgery)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise BertrtError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    return TARGETS[name]


def _recognized(model: onnx.ModelProto, candidates) -> Target | None:
    return next((t for t in candidates if t.recognize is not None and t.recognize(model)), None)


def target_of(model: onnx.ModelProto) -> Target:
    """The model's target: the recorded one, else the one its ops show (plugin / contrib domains, packed ops), else
    the one its producing stage names (`surgery:<target>`), else `export`. A form converted from the recorded target
    (packed from `ort`, by a bertrt before `varseqlen` stamped its output) is told by its ops."""
    recorded = metadata(model).get(META_TARGET)
    if recorded is not None:
        target = get_target(recorded)
        return _recognized(model, [t for t in TARGETS.values() if t.source == target.name]) or target
    # forms converted from another come first: their ops include their source's (packed holds ort's contrib ops)
    derived_first = sorted(TARGETS.values(), key=lambda t: t.source is None)
    found = _recognized(model, derived_first)
    if found is not None:
        return found
    stage = stage_of(model)
    return get_target(stage.split(":", 1)[1]) if stage.startswith("surgery:") else TARGETS["export"]


def stamp_target(model: onnx.ModelProto, target: Target) -> None:
    """Record `target` in the model's metadata (replacing a recorded one: a converted form keeps its source's)."""
    for prop in model.metadata_props:
        if prop.key == META_TARGET:
            prop.value = target.name
            return
    model.metadata_props.add(key=META_TARGET, value=target.name)
