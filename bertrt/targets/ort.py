"""The `ort` target: onnxruntime's contrib ops (EmbedLayerNormalization, Attention, SkipLayerNormalization, see
surgery/emit_ort.py); onnxruntime only."""

from __future__ import annotations

from bertrt.surgery import emit_ort

from bertrt.targets.target import Target

TARGET = Target(
    name="ort",
    description="onnxruntime contrib ops",
    runtimes=frozenset({"onnxruntime", "onnxruntime-bound"}),
    precisions=("fp16", "int8"),
    precision_refusal="no onnxruntime execution provider runs FP8 GEMMs and TensorRT does not take contrib ops; "
                      "quantize the native target instead",
    emit=emit_ort.emit,
    op_domain=emit_ort.DOMAIN,
    recognize=lambda model: any(node.domain == emit_ort.DOMAIN for node in model.graph.node),
    runtime_refusal="the `ort` target holds onnxruntime contrib ops ({ops}) that {runtime} cannot parse; build the "
                    "`native` target instead",
)
