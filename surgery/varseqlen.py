"""`bertrt varseqlen`: an `ort`-target model -> the `packed` target (onnxruntime's packing mode, see packing.py),
written atomically with its sidecar. The input's target is checked, and the output's stamped, by the `packed` Target."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from bertrt.surgery.packing import PACKED_OPS, VARSEQLEN_KEY

from bertrt.artifacts import atomic_outputs, check_outputs, sidecar_path, sidecar_record, write_json
from bertrt.output import add_json_flag, beside, emit
from bertrt.qa_contract import load_qa_model
from bertrt.targets import stamp_target, target_of
from bertrt.targets.packed import TARGET as PACKED


def convert(input_path: Path, output_path: Path) -> dict:
    check_outputs([output_path, sidecar_path(output_path)], [input_path])
    model, _ = load_qa_model(input_path)
    PACKED.check_convertible(target_of(model), str(input_path))
    packed = PACKED.convert(model)
    packed.metadata_props.add(key=VARSEQLEN_KEY, value="packing-mode")
    stamp_target(packed, PACKED)
    # The model and its sidecar are published together.
    with atomic_outputs(output_path, sidecar_path(output_path)) as (tmp, tmp_sidecar):
        onnx.save(packed, str(tmp))
        write_json(tmp_sidecar, sidecar_record(output_path, tmp, "varseqlen",
                                               {"tool": "onnxruntime.transformers.convert_to_packing_mode"},
                                               {"input": input_path}))
    return {"output": str(output_path), **{op: sum(n.op_type == op for n in packed.graph.node) for op in PACKED_OPS}}


def add_varseqlen(sub) -> None:
    p = sub.add_parser("varseqlen", help="ort target -> packed target: packing mode (padding removed inside; CUDA "
                                         "provider only)")
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
