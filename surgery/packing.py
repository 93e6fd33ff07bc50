"""Variable sequence length for the `ort` target: onnxruntime's packing mode (its transformers tool
`convert_to_packing_mode`), so a padded batch costs its real tokens.

The converter puts `RemovePadding` after the embedding (it packs the real tokens of every row into one [tokens, E]
tensor, using the per-row token count that EmbedLayerNormalization already computes), replaces every `Attention` by
`PackedAttention` (per-row attention over the packed tokens), and puts `RestorePadding` after the last
SkipLayerNormalization, so the QA head and the graph's inputs/outputs keep the bertrt contract (int32 [B, S] in,
[B, S] logits out, padded positions included). The three contrib ops exist only in onnxruntime's CUDA provider
(onnxruntime 1.23 and 1.31: the CPU provider has no kernel for them), so such a model runs with --provider cuda only;
its parity with the padded graph is checked on the GPU.

Run after `quantize --precision fp16` (the FP16 overflow scan runs the model on the CPU, which cannot run these ops).
This module is the conversion only (below the target registry: bertrt/targets/packed.py declares the form);
`bertrt varseqlen` (varseqlen.py) checks its input's target and stamps the output with the `packed` target.
"""

from __future__ import annotations

import onnx

from bertrt.errors import BertrtError

PACKED_OPS = ("RemovePadding", "RestorePadding", "PackedAttention")
VARSEQLEN_KEY = "bertrt.varseqlen"


def is_packed(model: onnx.ModelProto) -> bool:
    return any(node.op_type in PACKED_OPS for node in model.graph.node)


def to_packing_mode(model: onnx.ModelProto) -> onnx.ModelProto:
    """The `ort`-target graph in packing mode (the caller checked the target); raises BertrtError when the converter
    did not convert it."""
    import onnxruntime.transformers  # noqa: F401 -- puts its folder on sys.path: the tool imports siblings by bare name
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    from onnxruntime.transformers.onnx_model import OnnxModel

    attention = sum(node.op_type == "Attention" for node in model.graph.node)
    if not attention:
        raise BertrtError("packing mode needs contrib Attention nodes, and the graph has none")
    wrapped = OnnxModel(model)
    PackingMode(wrapped).convert(use_symbolic_shape_infer=False)
    wrapped.topological_sort()  # the converter appends its new nodes at the end
    out = wrapped.model
    counts = {op: sum(node.op_type == op for node in out.graph.node) for op in PACKED_OPS}
    if counts != {"RemovePadding": 1, "RestorePadding": 1, "PackedAttention": attention}:
        raise BertrtError(f"onnxruntime's packing-mode converter left the graph unconverted ({counts}, "
                          f"{attention} Attention nodes)")
    return out
