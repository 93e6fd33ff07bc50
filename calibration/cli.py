"""The `bertrt quantize` subcommand, ready for bertrt/cli.py (`bertrt calibrate`, TensorRT 10 INT8, is part of the
build stage: bertrt/build/cli.py):

    from bertrt.calibration.cli import add_quantize
    for add in (..., add_quantize): add(sub)

Each `run` takes (args, cfg) like the other subcommands; errors are BertrtError (one line, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

from bertrt import arg_groups as ag
from bertrt.calibration import calib_data


def _vocab(args, cfg) -> Path | None:
    if args.vocab is not None:
        return args.vocab
    value = cfg.get("model", "vocab") if cfg is not None else None
    return Path(value) if value else None


def add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="FP16 / INT8 / FP8 precision into the ONNX graph (TensorRT 11 strong typing)")
    p.add_argument("--input", type=Path, required=True, help="fp32 model.<target>.onnx (export, native or ort)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--precision", required=True, choices=["fp16", "int8", "fp8"])
    p.add_argument("--calib-json", type=Path, help="SQuAD training JSON (.json/.json.gz); default: the shipped "
                                                  "subset calibration/data/squad-train-calib.json.gz")
    p.add_argument("--calib-num", type=int, default=calib_data.DEFAULT_CALIB_NUM, help="calibration features")
    p.add_argument("--calib-method", default="max", choices=["max", "percentile", "entropy"])
    p.add_argument("--calib-seq-len", type=int, help="calibration sequence length (default: 384, or the model's "
                                                     "positions when it has fewer; more than those is an error)")
    p.add_argument("--int8-exclude", help="int8/fp8: GEMM groups kept in float, comma-separated, from attention_bmm, "
                                          "ffn_down, qa_head; 'none' quantizes every GEMM (default: int8 "
                                          "attention_bmm,ffn_down, fp8 none)")
    p.add_argument("--float-precision", choices=["fp16", "fp32"],
                   help="int8/fp8: precision of what is not quantized (default: int8 fp16, fp8 fp32)")
    ag.add_vocab_arg(p, " for the calibration features")
    p.set_defaults(run=run_quantize)


def run_quantize(args, cfg) -> int:
    from bertrt.calibration.quantize import quantize

    exclude = None  # the precision's default
    if args.int8_exclude is not None:
        exclude = tuple(x for x in args.int8_exclude.split(",") if x and x != "none")
    report = quantize(args.input, args.output, args.precision, calib_json=args.calib_json, calib_num=args.calib_num,
                      calib_method=args.calib_method, vocab=_vocab(args, cfg), exclude=exclude,
                      float_precision=args.float_precision, seq_len=args.calib_seq_len)
    report.pop("overflow_amax", None)
    print(json.dumps(report))
    print(f"wrote {args.output} (+ {args.output.name}.json)")
    return 0
