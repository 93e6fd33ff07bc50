"""`bertrt build` (and `bertrt calibrate`, its TensorRT 10 INT8 spelling), ready for bertrt/cli.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertrt.profiles import default_profile, parse_profile

from bertrt import arg_groups as ag
from bertrt.calibration import calib_data
from bertrt.artifacts import sidecar_path
from bertrt.errors import BertrtError
from bertrt.output import add_json_flag, add_progress_flag, emit, ticking


def add_build(sub) -> None:
    p = sub.add_parser("build", help="TensorRT engine from a bertrt ONNX (TensorRT 10/11 or TensorRT-RTX, Polygraphy)")
    p.add_argument("--model", type=Path, help="ONNX to build (default out/<config>/model.onnx)")
    p.add_argument("--output", type=Path, help="engine to write (default: the model's name with .engine; + "
                                               "<engine>.json, the engine sidecar)")
    p.add_argument("--runtime", choices=["tensorrt", "tensorrt-rtx", "auto"],
                   help="TensorRT 10/11 or TensorRT-RTX (default: the config's build.runtime; auto = the installed one)")
    p.add_argument("--profile", action="append", help="optimization profile 'batch=MIN:OPT:MAX,seq=MIN:OPT:MAX' "
                                                     "(repeat for several; default batch=1:B:B,seq=S from the config)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "fp8", "best"],
                   help="TensorRT 10: builder flags for an FP32 graph; TensorRT 11 / RTX: must equal the graph's")
    p.add_argument("--calib-cache", type=Path, help="TensorRT 10 INT8 calibration cache (default "
                                                   "<model>.<sha256[:16]>.calib.cache; refused if made for another model)")
    p.add_argument("--timing-cache", type=Path, help="tactic timing cache to load and update")
    p.add_argument("--compute-capability", nargs="+", metavar="MAJOR.MINOR",
                   help="TensorRT-RTX target GPUs (default: all it supports from 8.0 on; 8.9 on for FP8)")
    _add_calibration_data(p)
    p.add_argument("--inspect", action="store_true",
                   help="parse only and print the TensorRT network's layers (what `make inspect` shows); no engine")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_build)


def _add_calibration_data(p) -> None:
    p.add_argument("--calib-json", type=Path, help="TensorRT 10 INT8: SQuAD training JSON (default: the shipped subset)")
    p.add_argument("--calib-num", type=int, default=calib_data.DEFAULT_CALIB_NUM, help="calibration features")
    ag.add_vocab_arg(p, " for the calibration features")


def _profiles(specs, cfg):
    specs = specs if specs is not None else ag.pick(None, cfg, "build", "profiles")
    if specs:
        if not isinstance(specs, list):
            raise BertrtError(f"build.profiles in the config must be a list of profile strings, not {specs!r}")
        return [parse_profile(s) for s in specs]
    batch, seq = ag.shapes(argparse.Namespace(batch_size=None, seq_len=None), cfg)
    return [default_profile(batch, seq)]


def run_build(args, cfg) -> int:
    from bertrt.build.engine_build import BuildRequest, build

    model = ag.model_path(args, cfg)
    if args.inspect:
        from bertrt.build.inspect import inspect_network

        print(inspect_network(model, ag.pick(args.runtime, cfg, "build", "runtime")))
        return 0
    suffix = f".{args.precision}.engine" if args.precision and f".{args.precision}" not in model.name else ".engine"
    output = args.output or model.with_suffix(suffix)
    request = BuildRequest(model, output, _profiles(args.profile, cfg), ag.pick(args.runtime, cfg, "build", "runtime"),
                           args.precision, args.calib_cache, args.timing_cache, args.compute_capability,
                           args.calib_json, args.calib_num, args.vocab or _config_vocab(cfg))
    if args.json:  # the build's log lines go to stderr and stdout holds only the engine's sidecar record
        build(request, log=lambda line: print(line, file=sys.stderr))
    else:  # an elapsed-time line while TensorRT builds (it reports no progress of its own)
        with ticking("building the engine", not args.no_progress) as log:
            build(request, log=log)
    emit(args, {"output": str(output), **json.loads(sidecar_path(output).read_text())},
         f"wrote {output} (+ {output.name}.json)")
    return 0


def _config_vocab(cfg) -> Path | None:
    value = cfg.get("model", "vocab")
    return Path(value) if value else None


def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="TensorRT 10 implicit INT8 (= bertrt build --runtime tensorrt --precision "
                                         "int8): calibration cache + engine")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--cache", type=Path, help="default: <model>.<sha256[:16]>.calib.cache beside the model")
    p.add_argument("--engine", type=Path, help="engine to write (default: <model>.int8.engine)")
    ag.add_shape_args(p)
    _add_calibration_data(p)
    p.set_defaults(run=run_calibrate)


def run_calibrate(args, cfg) -> int:
    from bertrt.build.engine_build import BuildRequest, build

    batch, seq = ag.shapes(args, cfg)
    output = args.engine or args.model.with_suffix(".int8.engine")
    build(BuildRequest(args.model, output, [default_profile(batch, seq)], "tensorrt", "int8", args.cache,
                       calib_json=args.calib_json, calib_num=args.calib_num, vocab=args.vocab or _config_vocab(cfg)))
    print(f"wrote {output} (+ {output.name}.json) and its calibration cache")
    return 0
