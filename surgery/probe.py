"""Evaluate a few tensors of a graph on small probe inputs (onnxruntime, CPU).

Some parts of a BERT graph are computed from shapes and the mask by exporter-specific subgraphs (tf2onnx's
Slice of the position table, transformers' Range/Gather/Where mask builder). Rather than pattern-matching every
such variant, matchers check what those subgraphs *compute*: they run them on probe inputs and compare with the
semantics the fused op assumes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bertrt.qa_contract import INPUT_NAMES

MAX_ORT_IR_VERSION = 11  # the newest IR onnxruntime 1.23 loads (onnx 1.19 would stamp 12)


def evaluate(graph: gs.Graph, tensors: list[gs.Tensor], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Values of `tensors` (produced from the contract inputs) for int32 `feed`."""
    import onnxruntime as ort

    sub = graph.copy()
    copies = sub.tensors()
    outputs = []
    for t in tensors:
        copy = copies[t.name]  # names identify the copies of the same tensors; they carry no meaning here
        if copy.dtype is None:  # a Cast says its type; anything else untyped here is float (scores, biases)
            copy.dtype = _output_dtype(copy.inputs[0] if copy.inputs else None)
        outputs.append(copy)
    sub.outputs = outputs
    sub.cleanup()
    model = gs.export_onnx(sub, ir_version=MAX_ORT_IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})


def _output_dtype(node: gs.Node | None):
    """The type an untyped output has where its producer states it (Cast, ConstantOfShape, Shape); else float."""
    if node is not None and node.op == "Cast":
        return onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    if node is not None and node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return value.values.dtype if value is not None and hasattr(value, "values") else np.float32
    if node is not None and node.op in ("Shape", "Size"):
        return np.int64
    return np.float32


def probe_feed(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Contract inputs of the mask's shape: token 1 everywhere, segments 0, the given mask."""
    mask = np.asarray(mask, dtype=np.int32)
    return dict(zip(INPUT_NAMES, (np.ones_like(mask), np.zeros_like(mask), mask)))
