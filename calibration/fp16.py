"""FP16 conversion with onnxruntime's float16 converter (`onnxruntime.transformers.float16`, the maintained
copy of onnxconverter-common's converter), keeping in FP32 the node groups that overflow or lose accuracy.

Groups are found by op type and structure (never by node name), so the unfused export and the surgery targets
are handled alike:
- "layernorm": LayerNorm statistics: ReduceMean, the squaring Mul/Pow, the epsilon Add, Sqrt, Reciprocal/Div
  of a decomposed LayerNorm, and ONNX LayerNormalization itself (its I/O gets Casts);
- "softmax": Softmax;
- "residual": Adds of two activations that feed a LayerNorm (the residual sums);
- "overflow": any node whose FP32 output exceeds FP16's range (|x| > 65504 / 2) on calibration features
  (measured by `overflow_nodes`).
Graph I/O stays as the model's I/O (int32 inputs, float32 logits).

A Q/DQ graph (INT8/FP8 from qdq.py) is converted too: that is the TensorRT 11 graph a user builds, low-precision
GEMMs and FP16 for the rest. Its QuantizeLinear/DequantizeLinear stay FP32 (float32 scales, a Cast from FP16 in
front of each Q and to FP16 after each DQ), as ONNX requires below opset 19 and as accuracy requires: FP16 Q/DQ
(FP16 scales at opset 19) were tried and, on onnxruntime's CPU provider, gave 6.5x the logit error of the FP32
float parts (mean 0.98 vs 0.15 on 32 dev features; full dev F1 98.05 % of FP32), while FP32 Q/DQ with FP16
elsewhere gave 0.155.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from bertrt.errors import BertrtError
from bertrt.calibration.qdq import _node_names

FP16_GROUPS = ("layernorm", "softmax", "residual", "overflow")
DEFAULT_KEEP_FP32 = ("layernorm", "overflow")
FP16_MAX = 65504.0


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            out.setdefault(x, []).append(n)
    return out


def layernorm_nodes(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    consts = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    producer = {out: n.op_type for n in g.node for out in n.output}
    names = []
    for n in g.node:
        if n.op_type in ("LayerNormalization", "ReduceMean", "Sqrt", "Reciprocal", "Pow"):
            names.append(n.name)
        elif n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]:
            names.append(n.name)  # (x - mean)^2
        elif n.op_type == "Add" and any(x in consts for x in n.input) and any(
                producer.get(x) == "ReduceMean" for x in n.input):
            names.append(n.name)  # variance + epsilon
        elif n.op_type == "Div" and any(producer.get(x) == "Sqrt" for x in n.input[1:]):
            names.append(n.name)
    return names


def residual_nodes(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    consts = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    cons = _consumers(g)
    names = []
    for n in g.node:
        if n.op_type != "Add" or any(x in consts for x in n.input):
            continue
        users = cons.get(n.output[0], [])
        if any(u.op_type in ("ReduceMean", "LayerNormalization") for u in users):
            names.append(n.name)
    return names


def overflow_nodes(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], limit: float = FP16_MAX / 2) -> dict[str, float]:
    """Nodes with a float output whose magnitude exceeds `limit` on `feeds` (FP32 run): {node name: amax}."""
    import onnxruntime as ort

    model = _node_names(model)
    m = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(m)
    float_vals = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
                  if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    existing = {o.name for o in m.graph.output}
    producer = {}
    for n in m.graph.node:
        for o in n.output:
            if o in float_vals:
                producer[o] = n.name
                if o not in existing:
                    m.graph.output.add(name=o)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    amax: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(names, sess.run(None, feed)):
            if name in producer and value.size:
                v = float(np.nanmax(np.abs(value)))
                amax[name] = max(amax.get(name, 0.0), v)
    return {producer[k]: v for k, v in amax.items() if v > limit}


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")  # kept FP32 (see the module docstring)


def _join_fp32_regions(model: onnx.ModelProto) -> int:
    """Let adjacent FP32-kept nodes talk in FP32. The converter casts every blocked node's output to FP16 and back
    to FP32 for each blocked consumer, so a chain of blocked nodes still passes its values through FP16: the
    transformers mask bias (float32 min, kept FP32 because it overflows) became -inf between the mask nodes and
    the masked Adds. onnxruntime's converters also differ in how they name those Casts: 1.31 gives every consumer
    its own Cast with the same output name (a graph that is not SSA, which onnx 1.23's checker rejects), 1.23 and
    1.32 do not. Here identical Casts are merged, and every Cast(FP32 -> FP16) -> Cast(-> FP32) pair is bypassed,
    so the result is the same whichever converter ran. Returns the number of round trips removed."""
    from onnx import TensorProto

    nodes = list(model.graph.node)
    seen: set[bytes] = set()
    unique = []
    for n in nodes:
        key = n.SerializeToString()
        if n.op_type == "Cast" and key in seen:
            continue  # an exact duplicate (same name, input, output, type)
        seen.add(key)
        unique.append(n)
    if len(unique) != len(nodes):
        del model.graph.node[:]
        model.graph.node.extend(unique)
    elem = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    elem.update({i.name: i.data_type for i in model.graph.initializer})
    producer = {o: n for n in model.graph.node for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}

    def cast_to(n) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    bypass: dict[str, str] = {}  # FP32 tensor read back from FP16 -> the FP32 tensor it was cast from
    for n in model.graph.node:
        first = producer.get(n.input[0]) if n.op_type == "Cast" else None
        if (cast_to(n) == TensorProto.FLOAT and first is not None and cast_to(first) == TensorProto.FLOAT16
                and elem.get(first.input[0]) == TensorProto.FLOAT and n.output[0] not in graph_outputs):
            bypass[n.output[0]] = first.input[0]
    for n in model.graph.node:
        for i, x in enumerate(n.input):
            if x in bypass:
                n.input[i] = bypass[x]
    return len(bypass)


def convert_fp16(model: onnx.ModelProto, keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32,
                 feeds: Sequence[dict[str, np.ndarray]] = ()) -> tuple[onnx.ModelProto, dict]:
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    unknown = set(keep_fp32) - set(FP16_GROUPS)
    if unknown:
        raise BertrtError(f"unknown FP32 group(s) {sorted(unknown)} (choose from {', '.join(FP16_GROUPS)})")
    model = _node_names(model)
    blocked: dict[str, list[str]] = {}
    if "layernorm" in keep_fp32:
        blocked["layernorm"] = layernorm_nodes(model)
    if "softmax" in keep_fp32:
        blocked["softmax"] = [n.name for n in model.graph.node if n.op_type == "Softmax"]
    if "residual" in keep_fp32:
        blocked["residual"] = residual_nodes(model)
    overflow: dict[str, float] = {}
    if "overflow" in keep_fp32 and feeds:
        overflow = overflow_nodes(model, feeds)
        blocked["overflow"] = sorted(overflow)
    node_block = sorted({n for v in blocked.values() for n in v})
    try:
        out = convert_float_to_float16(model, keep_io_types=True,
                                       op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(QDQ_OPS),
                                       node_block_list=node_block)
        joined = _join_fp32_regions(out)
        # The converter appends the Casts it inserts around blocked nodes at the end of the node list; the
        # bypassed Casts are dead now.
        import onnx_graphsurgeon as gs

        graph = gs.import_onnx(out)
        graph.cleanup()
        graph.toposort()
        sorted_model = gs.export_onnx(graph)
        sorted_model.ir_version = out.ir_version  # graphsurgeon writes the newest IR, which onnxruntime may not read
        sorted_model.metadata_props.extend(out.metadata_props)
        out = sorted_model
    except Exception as exc:
        raise BertrtError(f"FP16 conversion failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    info = {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_fp32": list(keep_fp32),
            "fp32_nodes": {k: len(v) for k, v in blocked.items()}, "fp16_round_trips_removed": joined,
            "overflow_amax": {k: round(v, 1) for k, v in sorted(overflow.items())}}
    return out, info
