"""Evaluate a few tensors of a graph on small probe inputs (onnxruntime, CPU).

Some parts of a BERT graph are computed from shapes and the mask by exporter-specific subgraphs (tf2onnx's
Slice of the position table, transformers' Range/Gather/Where mask builder). Rather than pattern-matching every
such variant, matchers check what those subgraphs *compute*: they run them on probe inputs and compare with the
semantics the fused op assumes.
"""

from __future__ import annotations

import numpy as np
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
        if copy.dtype is None:
            copy.dtype = np.float32
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


def probe_feed(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Contract inputs of the mask's shape: token 1 everywhere, segments 0, the given mask."""
    mask = np.asarray(mask, dtype=np.int32)
    return dict(zip(INPUT_NAMES, (np.ones_like(mask), np.zeros_like(mask), mask)))
