"""The `plugins` target: TensorRT's BERT plugins (EmbLN, SkipLN, QKVToContext, see surgery/emit_plugins.py). TensorRT
10/11 runs it (through init_libnvinfer_plugins), the numpy plugin references verify it; TensorRT-RTX ships no plugins
and onnxruntime has no kernels for them."""

from __future__ import annotations

from bertrt.surgery import emit_plugins
from bertrt.surgery.plugin_reference import PLUGIN_DOMAIN

from bertrt.targets.target import Option, Target

TARGET = Target(
    name="plugins",
    description="TensorRT BERT plugins (fixed sequence length)",
    runtimes=frozenset({"tensorrt", "plugin-reference"}),
    precisions=(),
    precision_refusal="TensorRT plugins take their precision from their type_id attribute (and INT8 from TensorRT 10 "
                      "calibration with `bertrt calibrate`), not from Q/DQ; quantize the native target instead",
    emit=emit_plugins.emit,
    options=(Option("plugin_api", tuple(emit_plugins.PLUGIN_VERSIONS), "v3",
                    "v2 (IPluginV2, deprecated) or v3 (IPluginV3)"),),
    op_domain=PLUGIN_DOMAIN,
    recognize=lambda model: any(node.domain == PLUGIN_DOMAIN for node in model.graph.node),
    runtime_refusal="{runtime} ships no TensorRT BERT plugins, and this `plugins` graph needs {ops}; build the "
                    "`native` target instead",
    fixed_seq=True,
)
