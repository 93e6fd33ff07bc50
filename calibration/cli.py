"""The `bertrt quantize` subcommand, ready for bertrt/cli.py (`bertrt calibrate`, TensorRT 10 INT8, is part of the
build stage: bertrt/build/cli.py):

    from bertrt.calibration.cli import add_quantize
    for add in (..., add_quantize): add(sub)

Each `run` takes (args, cfg) like the other subcommands; errors are BertrtError (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path

from bertrt import arg_groups as ag
from bertrt.calibration import calib_data
from bertrt.calibration.quantize import quantize
from bertrt.output import add_json_flag, add_progress_flag, beside, emit
from bertrt.runtimes import runtime_names


def _vocab(args, cfg) -> Path | None:
    """The config's vocab: for models made before the tokenizer travelled with them (--vocab overrides both)."""
    value = cfg.get("model", "vocab") if cfg is not None else None
    return Path(value) if value else None


def add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="FP16 / INT8 / FP8 precision into the ONNX graph (TensorRT 11 strong typing)")
    p.add_argument("--input", type=Path, required=True, help="fp32 model.<target>.onnx (export, native or ort)")
    p.add_argument("--output", type=Path, help="default: <input stem>.<precision>.onnx beside the input")
    p.add_argument("--precision", required=True, choices=["fp16", "int8", "fp8"])
    p.add_argument("--calib-json", type=Path, help="SQuAD training JSON (.json/.json.gz); default: the shipped "
                                                  "subset calibration/data/squad-train-calib.json.gz")
    p.add_argument("--calib-num", type=int, default=calib_data.DEFAULT_CALIB_NUM,
                   help="calibration features (default: %(default)s)")
    p.add_argument("--calib-method", default="max", choices=["max", "percentile", "entropy"],
                   help="int8/fp8 calibration (default: %(default)s)")
    p.add_argument("--calib-seq-len", type=int, help="calibration sequence length (default: 384, or the model's "
                                                     "positions when it has fewer; more than those is an error)")
    p.add_argument("--int8-exclude", help="int8/fp8: GEMM groups kept in float, comma-separated, from attention_bmm, "
                                          "ffn_down, qa_head; 'none' quantizes every GEMM (default: int8 "
                                          "attention_bmm,ffn_down, fp8 none)")
    p.add_argument("--float-precision", choices=["fp16", "fp32"],
                   help="int8/fp8: precision of what is not quantized (default: int8 fp16, fp8 fp32)")
    p.add_argument("--smooth-quant", type=float, metavar="ALPHA",
                   help="int8/fp8: SmoothQuant with this alpha (0..1) before calibration (default: none, or the "
                        "--runtime recipe's)")
    p.add_argument("--runtime", choices=runtime_names(),
                   help="int8: the runtime the model will run on; its INT8 recipe gives the defaults of "
                        "--int8-exclude, --float-precision and --smooth-quant (openvino: every weight GEMM, fp32 "
                        "rest, SmoothQuant 0.95; default: the TensorRT placement above)")
    ag.add_vocab_arg(p, " for the calibration features")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_quantize)


def run_quantize(args, cfg) -> int:
    exclude = None  # the precision's default
    if args.int8_exclude is not None:
        exclude = tuple(x for x in args.int8_exclude.split(",") if x and x != "none")
    output = args.output or beside(args.input, f"{args.precision}.onnx")
    report = quantize(args.input, output, args.precision, calib_json=args.calib_json, calib_num=args.calib_num,
                      calib_method=args.calib_method, vocab=args.vocab, exclude=exclude,
                      float_precision=args.float_precision, seq_len=args.calib_seq_len,
                      progress=not args.no_progress and not args.json,
                      fallback_vocab=_vocab(args, cfg), smooth_quant=args.smooth_quant, runtime=args.runtime)
    report.pop("overflow_amax", None)
    emit(args, report, f"{describe(report)}\nwrote {output} (+ {output.name}.json)")
    return 0


def describe(report: dict) -> str:
    """The quantize report in a few human lines (--json prints all of it)."""
    lines = [f"{report['precision']} {report['target']} model"]
    if report.get("calib_method"):
        lines[0] += (f", calibrated ({report['calib_method']}) on {report['calib_num']} features of "
                     f"{Path(report['calib_json']).name} at seq {report['calib_seq_len']}")
    qdq = report.get("qdq")
    if qdq:
        excluded = report.get("excluded_groups") or ["none"]
        lines.append(f"  Q/DQ: {qdq['quantize']} quantize, {qdq['dequantize']} dequantize "
                     f"({qdq['weight_per_channel']} per-channel weights); GEMM groups kept in float: "
                     f"{', '.join(excluded)} ({report.get('excluded_nodes', 0)} GEMMs); float parts "
                     f"{report.get('float_precision')}")
    smooth = report.get("smooth_quant")
    if smooth:
        lines.append(f"  SmoothQuant alpha {smooth['alpha']:g} on {smooth['groups']} GEMM groups"
                     + (f" (the {report['runtime']} recipe)" if report.get("runtime") else ""))
    fp16 = report.get("fp16") or (report if report["precision"] == "fp16" else None)
    if fp16 and fp16.get("fp32_nodes"):
        kept = ", ".join(f"{k} {v}" for k, v in fp16["fp32_nodes"].items() if v)
        lines.append(f"  FP16, nodes kept in FP32: {kept or 'none'}")
    return "\n".join(lines)
