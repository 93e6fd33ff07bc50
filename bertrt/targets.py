"""The registry of graph forms ("targets") a bertrt model can have, and what each one needs to run.

A model records its target in its metadata (`bertrt.target`), apart from the stage that produced it (a quantized
`native` model has stage `quantize:int8` and target `native`). Models made before the key existed are recognised
by their ops, so this is the one place that answers "what form is this graph in".
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from bertrt.surgery.emit_ort import DOMAIN as CONTRIB_DOMAIN
from bertrt.surgery.plugin_reference import PLUGIN_DOMAIN

from bertrt.errors import BertrtError
from bertrt.qa_contract import metadata, stage_of

META_TARGET = "bertrt.target"


@dataclass(frozen=True)
class Target:
    name: str
    emitter: str | None  # module that emits it from an unfused export (None: the export itself)
    onnxruntime: bool  # onnxruntime runs it (plugin graphs run only on the numpy references)
    tensorrt: bool  # TensorRT 10/11 parse it (plugins through init_libnvinfer_plugins)
    tensorrt_rtx: bool  # TensorRT-RTX parses it (it ships no plugins)
    fixed_seq: bool  # engines need one sequence length per profile (the fixed-length BERT plugins)
    foreign_domain: str | None  # domain of the ops a runtime must provide, for refusals naming them
    description: str
    # The runtimes (bertrt.runtimes names) that run an ONNX model of this target; None: plain ONNX, which every
    # ONNX runtime runs.
    runtimes: tuple[str, ...] | None = None

    def runs_on(self, runtime: str) -> bool:
        """Whether the named runtime can run a model of this target (asked by the runtime registry)."""
        return self.runtimes is None or runtime in self.runtimes


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("export", None, True, True, True, False, None, "unfused export"),
    Target("native", "bertrt.surgery.emit_native", True, True, True, False, None,
           "plain ONNX that TensorRT fuses itself"),
    Target("ort", "bertrt.surgery.emit_ort", True, False, False, False, CONTRIB_DOMAIN, "onnxruntime contrib ops",
           ("onnxruntime", "onnxruntime-bound")),
    Target("plugins", "bertrt.surgery.emit_plugins", False, True, False, True, PLUGIN_DOMAIN,
           "TensorRT BERT plugins (fixed sequence length)", ("plugin-reference",)),
)}
SURGERY_TARGETS = tuple(name for name, t in TARGETS.items() if t.emitter is not None)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise BertrtError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    return TARGETS[name]


def target_of(model: onnx.ModelProto) -> Target:
    """The model's target: from its metadata, else from its ops (plugin / contrib domains) and producing stage."""
    recorded = metadata(model).get(META_TARGET)
    if recorded is not None:
        return get_target(recorded)
    domains = {node.domain for node in model.graph.node}
    if PLUGIN_DOMAIN in domains:
        return TARGETS["plugins"]
    if CONTRIB_DOMAIN in domains:
        return TARGETS["ort"]
    stage = stage_of(model)
    return get_target(stage.split(":", 1)[1]) if stage.startswith("surgery:") else TARGETS["export"]


def foreign_ops(model: onnx.ModelProto, target: Target) -> list[str]:
    """The distinct op types of the target's foreign domain in `model` (what a runtime would have to provide)."""
    return sorted({n.op_type for n in model.graph.node if n.domain == target.foreign_domain})
