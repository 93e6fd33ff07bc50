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
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from bertrt.artifacts import atomic_outputs, check_outputs, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.output import add_json_flag, beside, emit
from bertrt.qa_contract import load_qa_model

PACKED_OPS = ("RemovePadding", "RestorePadding", "PackedAttention")
VARSEQLEN_KEY = "bertrt.varseqlen"


def is_packed(model: onnx.ModelProto) -> bool:
    return any(node.op_type in PACKED_OPS for node in model.graph.node)


def to_packing_mode(model: onnx.ModelProto) -> onnx.ModelProto:
    """The `ort`-target graph in packing mode; raises BertrtError when the converter did not convert it."""
    import onnxruntime.transformers  # noqa: F401 -- puts its folder on sys.path: the tool imports siblings by bare name
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    from onnxruntime.transformers.onnx_model import OnnxModel

    if is_packed(model):
        raise BertrtError("the model is already in packing mode")
    attention = sum(node.op_type == "Attention" for node in model.graph.node)
    if not attention:
        raise BertrtError("varseqlen needs the `ort` target (contrib Attention nodes); run `bertrt surgery --target "
                          "ort` first")
    wrapped = OnnxModel(model)
    PackingMode(wrapped).convert(use_symbolic_shape_infer=False)
    wrapped.topological_sort()  # the converter appends its new nodes at the end
    out = wrapped.model
    counts = {op: sum(node.op_type == op for node in out.graph.node) for op in PACKED_OPS}
    if counts != {"RemovePadding": 1, "RestorePadding": 1, "PackedAttention": attention}:
        raise BertrtError(f"onnxruntime's packing-mode converter left the graph unconverted ({counts}, "
                          f"{attention} Attention nodes)")
    return out


def convert(input_path: Path, output_path: Path) -> dict:
    check_outputs([output_path, sidecar_path(output_path)], [input_path])
    model, _ = load_qa_model(input_path)
    packed = to_packing_mode(model)
    packed.metadata_props.add(key=VARSEQLEN_KEY, value="packing-mode")
    # The model and its sidecar are published together.
    with atomic_outputs(output_path, sidecar_path(output_path)) as (tmp, tmp_sidecar):
        onnx.save(packed, str(tmp))
        write_json(tmp_sidecar, sidecar_record(output_path, tmp, "varseqlen",
                                               {"tool": "onnxruntime.transformers.convert_to_packing_mode"},
                                               {"input": input_path}))
    return {"output": str(output_path), **{op: sum(n.op_type == op for n in packed.graph.node) for op in PACKED_OPS}}


def add_varseqlen(sub) -> None:
    p = sub.add_parser("varseqlen", help="ort target -> packing mode (padding removed inside; CUDA provider only)")
    p.add_argument("--input", type=Path, required=True, help="`ort`-target ONNX (fp32 or fp16)")
    p.add_argument("--output", type=Path, help="default: <input stem>.varseqlen.onnx beside the input")
    add_json_flag(p)
    p.set_defaults(run=run_varseqlen)


def run_varseqlen(args: argparse.Namespace, cfg) -> int:
    output = args.output or beside(args.input, "varseqlen.onnx")
    report = convert(args.input, output)
    ops = ", ".join(f"{report[op]} {op}" for op in PACKED_OPS)
    emit(args, report, f"packing mode: {ops}\nwrote {output} (+ {output.name}.json)")
    return 0
