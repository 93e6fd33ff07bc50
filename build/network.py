"""The TensorRT network of a bertrt model: parsed by Polygraphy's `NetworkFromOnnxPath`, refused up front where the
runtime cannot take the target, and summarised from the parsed `INetworkDefinition` (on the CPU, no GPU needed).

Why our own summary instead of `polygraphy inspect model --display-as=trt`: that tool imports `tensorrt` even with
POLYGRAPHY_USE_TENSORRT_RTX=1 and fails under TensorRT-RTX; the few facts we check (layer types, LayerNorm as
NORMALIZATION, attention as MatMul -> Softmax -> MatMul, Q/DQ layers) are read directly from the network here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from bertrt.errors import BertrtError
from bertrt.targets import Target

# Layers a path from an attention GEMM to the softmax (and on to the next GEMM) may pass through: the mask Add, the
# Q/DQ pairs of an INT8/FP8 graph, casts of an FP16 graph.
_PASS_THROUGH = {"ELEMENTWISE", "QUANTIZE", "DEQUANTIZE", "CAST", "SHUFFLE"}


def check_runtime_takes(path: Path, model: onnx.ModelProto, target: Target, runtime) -> None:
    """Refuse, before any parsing, a target the runtime (a build/runtime.py `Runtime`, whose name is a runtime name
    of the targets registry: tensorrt or tensorrt-rtx) cannot parse, naming the ops it lacks."""
    target.check_runs_on(runtime.name, str(path), model, runtime.label)


def network_loader(path: Path, strongly_typed: bool):
    """Polygraphy's lazy ONNX parser loader (builder, network, parser)."""
    from polygraphy.backend.trt import NetworkFromOnnxPath

    return NetworkFromOnnxPath(str(path), strongly_typed=strongly_typed)


def _type(layer) -> str:
    return str(layer.type).rsplit(".", 1)[-1]


@dataclass(frozen=True)
class NetworkSummary:
    layers: int
    types: dict[str, int]  # layer type -> count, most frequent first
    normalization: int
    attention: int  # softmax layers fed by a MatMul (through mask Add / Q/DQ) and feeding a MatMul
    softmax: int
    quantize: int
    dequantize: int

    def to_dict(self) -> dict:
        return {"layers": self.layers, "normalization": self.normalization, "attention_matmul_softmax_matmul":
                self.attention, "softmax": self.softmax, "quantize": self.quantize, "dequantize": self.dequantize,
                "types": self.types}


def summarize(network) -> NetworkSummary:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer, consumers = {}, {}
    for layer in layers:
        for i in range(layer.num_outputs):
            producer[layer.get_output(i).name] = layer
        for i in range(layer.num_inputs):
            tensor = layer.get_input(i)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(layer)

    def reaches(start, step, limit=6) -> bool:
        """Whether a MATRIX_MULTIPLY is reached from `start` through pass-through layers (breadth first)."""
        frontier = step(start)
        for _ in range(limit):
            if any(_type(layer) == "MATRIX_MULTIPLY" for layer in frontier):
                return True
            frontier = [n for layer in frontier if _type(layer) in _PASS_THROUGH for n in step(layer)]
        return False

    def upstream(layer):
        return [producer[t.name] for t in (layer.get_input(i) for i in range(layer.num_inputs))
                if t is not None and t.name in producer]

    def downstream(layer):
        return [c for i in range(layer.num_outputs) for c in consumers.get(layer.get_output(i).name, [])]

    types = Counter(_type(layer) for layer in layers)
    softmaxes = [layer for layer in layers if _type(layer) == "SOFTMAX"]
    attention = sum(1 for s in softmaxes if reaches(s, upstream) and reaches(s, downstream))
    return NetworkSummary(len(layers), dict(types.most_common()), types["NORMALIZATION"], attention,
                          len(softmaxes), types["QUANTIZE"], types["DEQUANTIZE"])


def layer_table(network) -> str:
    """One line per layer: index, type, name, output shapes and types (what `make inspect` prints)."""
    lines = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        shown = ", ".join(f"{tuple(t.shape)} {str(t.dtype).rsplit('.', 1)[-1]}" for t in outs)
        lines.append(f"{i:4d} {_type(layer):<16} {layer.name}  -> {shown}")
    return "\n".join(lines)
