"""The `bertrt` command: one subcommand per stage. Bad input -> one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort
from polygraphy.logger import G_LOGGER

from bertrt import __version__, api
from bertrt import arg_groups as ag
from bertrt.artifacts import sidecar_path
from bertrt.build.cli import add_build, add_calibrate
from bertrt.calibration.cli import add_quantize
from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, read_text
from bertrt.interrupts import exit_code, interrupted_message, stop_signals_raise
from bertrt.optimize import OptimizeRequest, optimize
from bertrt.optimize import format_report as format_optimize
from bertrt.output import add_json_flag, add_progress_flag, beside, emit
from bertrt.pipeline_config import PipelineConfig, load_config
from bertrt.qa.download import BASE_URL, FILES, fetch
from bertrt.resources import default_config, embedded_vocab
from bertrt.run.compare import format_rows
from bertrt.runtimes import read_artifact
from bertrt.run.perf import format_table, perf_outputs
from bertrt.serve.cli import add_serve, add_serve_bench, add_triton_repo
from bertrt.session import QASession
from bertrt.session.squad import eval_path, summary
from bertrt.surgery.pipeline import fusion_report_path
from bertrt.surgery.report import format_report
from bertrt.surgery.varseqlen import add_varseqlen
from bertrt.targets import TARGETS, surgery_targets


# --- export ---------------------------------------------------------------------------------------------------
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="TF1 checkpoint or HF safetensors -> ONNX (fp32, dynamic batch/seq)")
    p.add_argument("--checkpoint", type=Path, help="TF checkpoint dir, or HF model.safetensors (or its dir) (default: "
                                                   "the config's model.checkpoint, the embedded model)")
    p.add_argument("--output", type=Path, help="ONNX file to write (default out/<config>/model.onnx)")
    p.add_argument("--bert-config", type=Path, help="bert_config.json / config.json (default: beside the checkpoint)")
    p.add_argument("--vocab", type=Path, help="vocab.txt, checked against the config (default: beside the checkpoint)")
    p.add_argument("--gelu", choices=["erf", "tanh"], help="GELU form (default: from hidden_act; 'gelu' = erf)")
    p.add_argument("--opset", type=int, help="ONNX opset: 17 up to the newest the installed tf2onnx converts (18 with "
                                             "tf2onnx 1.17; higher is refused) (default: the config's model.opset, 17)")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=_run_export)


def _run_export(args, cfg: PipelineConfig) -> int:
    checkpoint = Path(ag.required(ag.pick(args.checkpoint, cfg, "model", "checkpoint"), "--checkpoint"))
    if args.checkpoint is None and checkpoint.is_dir() and not any(checkpoint.glob("*.index")) \
            and not any(checkpoint.glob("*.safetensors")):
        # The wheel carries the embedded model's vocab and config, not its 44 MB checkpoint.
        raise BertrtError(f"{checkpoint}: the installed package has no checkpoint of the embedded model (a clone has "
                          f"it in models/): give --checkpoint")
    output = args.output or ag.default_model(cfg)
    vocab = args.vocab
    if vocab is None and args.checkpoint is None and cfg.get("model", "vocab"):
        vocab = Path(cfg.get("model", "vocab"))
    api.export_model(checkpoint, output, bert_config=args.bert_config, vocab=vocab,
                     gelu=ag.pick(args.gelu, cfg, "model", "gelu"), opset=ag.pick(args.opset, cfg, "model", "opset"),
                     progress=not args.no_progress and not args.json)
    emit(args, {"output": str(output), "sidecar": str(sidecar_path(output))}, f"wrote {output} (+ {output.name}.json)")
    return 0


# --- shared by infer / squad ----------------------------------------------------------------------------------
def _answerer(args, cfg: PipelineConfig) -> QASession:
    model, vocab, params, options = ag.session_args(args, cfg)
    # --vocab overrides the tokenizer stored with the model; the config's vocab serves models without one; without
    # --seq-len a model with fewer positions than the config's length runs at its own maximum
    return QASession(model, vocab, params, options=options, fallback_vocab=ag.fallback_vocab(cfg),
                     fit_positions=args.seq_len is None)


# --- infer ----------------------------------------------------------------------------------------------------
def _add_infer(sub) -> None:
    p = sub.add_parser("infer", help="answer questions about a passage")
    ag.add_session_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--passage", help="the passage text")
    src.add_argument("--passage-file", type=Path, help="a UTF-8 text file holding the passage")
    p.add_argument("--question", action="append", required=True, help="a question (repeat for several)")
    p.add_argument("--json", action="store_true", help="print one JSON list with an object per question")
    p.set_defaults(run=_run_infer)


def _run_infer(args, cfg: PipelineConfig) -> int:
    if args.passage_file is not None:
        passage = read_text(args.passage_file, LIMITS["passage"], "passage")
    else:
        passage = args.passage
    with _answerer(args, cfg) as qa:
        answers = qa.answer(passage, args.question)
    rows = [{"question": q, "answer": a.text, "score": round(a.score, 4), "logit": round(a.logit, 4),
             "char_start": a.char_start, "char_end": a.char_end} for q, a in zip(args.question, answers)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, allow_nan=False))  # NaN is not JSON
    else:
        for row in rows:
            print(f"Q: {row['question']}\nA: {row['answer']}  (score {row['score']:.3f})")
    return 0


# --- squad ----------------------------------------------------------------------------------------------------
def _add_squad(sub) -> None:
    p = sub.add_parser("squad", help="run a SQuAD v1.1/v2.0 file; write predictions.json and EM/F1")
    ag.add_session_args(p)
    p.add_argument("--squad-json", type=Path, help="SQuAD JSON, .json or .json.gz (default: the config's data.dev, "
                                                   "the shipped SQuAD v1.1 dev)")
    p.add_argument("--output", type=Path, help="predictions JSON to write (default: <model stem>.predictions.json "
                                               "beside the model; + .eval.json with the scores)")
    p.add_argument("--limit", type=int, help="only the first N questions of the file (default: all)")
    p.add_argument("--null-score-diff-threshold", type=float, default=0.0,
                   help="SQuAD v2: predict no answer when null score - best span score exceeds this "
                        "(default: %(default)s)")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=_run_squad)


def _run_squad(args, cfg: PipelineConfig) -> int:
    squad_json = Path(ag.required(ag.pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
    output = args.output or beside(ag.model_path(args, cfg), "predictions.json")
    with _answerer(args, cfg) as qa:
        report = qa.squad(squad_json, output, limit=args.limit,
                          null_score_diff_threshold=args.null_score_diff_threshold,
                          progress=not args.no_progress and not args.json)
    emit(args, {**report, "output": str(output), "eval": str(eval_path(output))},
         f"{summary(report)}\nwrote {output} and {eval_path(output)}")
    return 0


# --- surgery --------------------------------------------------------------------------------------------------
def _add_surgery(sub) -> None:
    names = surgery_targets()
    p = sub.add_parser("surgery", help=f"fuse BERT blocks for a target: {' | '.join(names)}")
    p.add_argument("--input", type=Path, help="ONNX from bertrt export or torch.onnx.export (default: the export, "
                                              "out/<config>/model.onnx)")
    p.add_argument("--output", type=Path, help="fused ONNX (default: <input stem>.<target>.onnx beside the input)")
    p.add_argument("--target", required=True, metavar="|".join(names), help=" | ".join(
        f"{name}: {TARGETS[name].description}" for name in names))
    # Each target's options, from the registry; a flag is passed on only to the target that takes it (the Target
    # validates it), so one command line can carry the flags of several targets (the Makefile does).
    for option in {o.name: o for name in names for o in TARGETS[name].options}.values():
        owners = ", ".join(name for name in names if option in TARGETS[name].options)
        p.add_argument(option.flag, dest=option.name, metavar="|".join(option.choices),
                       help=f"{owners} target: {option.help} (default {option.default})")
    add_json_flag(p)
    p.set_defaults(run=_run_surgery)


def _run_surgery(args, cfg: PipelineConfig) -> int:
    source = args.input or ag.default_model(cfg)
    output = args.output or beside(source, f"{args.target}.onnx")
    target = TARGETS.get(args.target)
    options = {o.name: getattr(args, o.name) for o in (target.options if target else ())
               if getattr(args, o.name) is not None}
    report = api.fuse(source, output, args.target, **options)
    emit(args, {**report, "output": str(output), "fusion_report": str(fusion_report_path(output))},
         f"{format_report(report)}\nwrote {output} (+ {output.name}.json, {fusion_report_path(output).name})")
    return 0


# --- compare --------------------------------------------------------------------------------------------------
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="worst logit errors of model B against model A on real SQuAD features "
                                       "(or synthetic inputs)")
    p.add_argument("a", type=Path, help="reference: TF checkpoint dir / .safetensors, ONNX, or engine")
    p.add_argument("b", type=Path, help="model to check: ONNX (any target; plugin graphs run on numpy references) "
                                        "or an engine from `bertrt build`")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--squad-json", type=Path, help="SQuAD file the features come from (default: the config's "
                                                      "data.dev, the shipped SQuAD v1.1 dev)")
    data.add_argument("--synthetic", action="store_true",
                      help="random token ids from Polygraphy's data loader instead of SQuAD features (no data file, "
                           "no vocab; parity only)")
    ag.add_vocab_arg(p)
    p.add_argument("--num-features", type=int, default=8, help="features compared (default: %(default)s)")
    ag.add_backend_args(p)
    ag.add_shape_args(p, batch_default=4)
    p.add_argument("--atol", type=float, default=1e-4,
                   help="exit code 1 when a worst abs error exceeds this (default: %(default)g)")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare the embedding and every encoder layer's output (needs an unfused export)")
    add_json_flag(p)
    p.set_defaults(run=_run_compare)


def _run_compare(args, cfg: PipelineConfig) -> int:
    batch_size, seq_len = ag.shapes(args, cfg)
    if args.synthetic:
        squad_json, vocab, inputs = None, None, "synthetic features (Polygraphy data loader)"
    else:
        squad_json = Path(ag.required(ag.pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
        vocab, inputs = ag.vocab_path(args, cfg), f"SQuAD features of {squad_json.name}"
    if args.seq_len is None:  # the default length, or the models' own maximum where they have fewer positions
        seq_len = min([seq_len] + [read_artifact(Path(m)).config.max_position_embeddings for m in (args.a, args.b)])
    rows = api.compare_models(args.a, args.b, squad_json, vocab, args.num_features, batch_size, seq_len,
                              per_layer=args.per_layer, options=ag.backend_options(args, cfg),
                              synthetic=args.synthetic, fallback_vocab=ag.fallback_vocab(cfg))
    failed = any(r.worst_abs > args.atol for r in rows)
    emit(args, {"a": str(args.a), "b": str(args.b), "inputs": inputs, "num_features": args.num_features,
                "seq_len": seq_len, "atol": args.atol, "passed": not failed,
                "rows": [{"tensor": r.tensor, "worst_abs": float(r.worst_abs), "worst_rel": float(r.worst_rel),
                          "where": [int(i) for i in r.where]} for r in rows]},
         f"B = {args.b} against A = {args.a}: {args.num_features} {inputs}, seq {seq_len}, padded positions "
         f"excluded\n{format_rows(rows, args.atol)}")
    return 1 if failed else 0


# --- perf -----------------------------------------------------------------------------------------------------
def _add_perf(sub) -> None:
    p = sub.add_parser("perf", help="latency of one or more models over batch x sequence (same process)")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="QA model (.onnx, or .engine from bertrt build); repeat to compare (no default)")
    p.add_argument("--vocab", type=Path, help="vocab.txt of --random-bert models (default: the config's)")
    ag.add_backend_args(p)
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, nargs="+", default=[1, 8],
                   help="batch sizes (default: 1 8)")
    p.add_argument("--seq-len", "--max-seq-length", "--seq", dest="seq_len", type=int, nargs="+", default=None,
                   help="padded sequence lengths, each at most the model's positions (default: 128 384)")
    p.add_argument("--random-bert", choices=["base", "large"], action="append", default=[],
                   help="--provider cuda: also a random-weight BERT-Base/Large built from its config (needs the "
                        "'torch' extra)")
    p.add_argument("--no-peers", action="store_true", help="--provider cuda: skip the torch eager/CUDA graph peers")
    p.add_argument("--runtimes", nargs="+", metavar="RUNTIME[:PRECISION]",
                   help="CPU: run every model on each of these side by side, e.g. onnxruntime openvino:f32 "
                        "openvino:bf16 (the first is the speed-up's base)")
    p.add_argument("--thread-counts", type=int, nargs="+", metavar="N",
                   help="CPU: repeat the grid per intra-op thread count (0: all cores), e.g. 1 2 0")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per shape (default: %(default)s)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per shape (default: %(default)s)")
    p.add_argument("--output", type=Path, help="perf JSON (+ .csv and .png beside it; default: <first model "
                                               "stem>.perf.json beside the first model)")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=_run_perf)


PERF_SEQS = (128, 384)  # default lengths; a model with fewer positions is timed at its maximum instead


def _run_perf(args, cfg: PipelineConfig) -> int:
    fit_positions = args.seq_len is None
    if fit_positions:
        args.seq_len = list(PERF_SEQS)
    batches, seqs = ag.shapes(args, cfg)
    if args.runs < 1 or args.warmup < 0:
        raise BertrtError("--runs must be positive and --warmup not negative")
    options = ag.backend_options(args, cfg)
    if not args.model and not (args.random_bert and options.provider == "cuda"):
        raise BertrtError("no model given (--model, or --random-bert with --provider cuda)")
    output = args.output or (beside(args.model[0], "perf.json") if args.model else cfg.out_dir / "perf.json")
    if options.provider == "cuda" and (args.runtimes or args.thread_counts):
        raise BertrtError("--runtimes and --thread-counts compare CPU runtimes (leave out --provider cuda)")
    if options.provider == "cuda":  # device-side timing, random-weight models and torch peers (run/perf_gpu.py)
        timings = api.perf_gpu(args.model, args.random_bert, batches, seqs, output, args.warmup, args.runs,
                               bool(args.cuda_graph), peers=not args.no_peers, vocab=args.vocab or ag.fallback_vocab(cfg) or embedded_vocab(),
                               options=options)  # random-weight BERTs have no travelling tokenizer
    else:
        timings = api.perf(args.model, batches, seqs, output, warmup=args.warmup, runs=args.runs, options=options,
                           progress=not args.no_progress and not args.json, fit_positions=fit_positions,
                           runtimes=args.runtimes, thread_counts=args.thread_counts)
    emit(args, {"timings": [asdict(t) for t in timings], "outputs": [str(p) for p in perf_outputs(output)]},
         f"{format_table(timings)}\nwrote {', '.join(map(str, perf_outputs(output)))}")
    return 0


# --- optimize -------------------------------------------------------------------------------------------------
def _add_optimize(sub) -> None:
    p = sub.add_parser("optimize", help="the whole pipeline: export, surgery, precision, optional engine, with a "
                                        "parity/accuracy report and the commands it ran",
                       description="Checkpoint -> every artifact in --output-dir (model.onnx, model.<target>.onnx, "
                                   "model.<target>.<precision>.onnx, optionally the engine), then compare against "
                                   "the export and a SQuAD subset (the shipped dev set) for the export and the final "
                                   "model; writes optimize.json (the report) and commands.sh (the same steps as "
                                   "bertrt commands).")
    p.add_argument("--checkpoint", type=Path, help="TF checkpoint dir, or HF model.safetensors (or its dir) (default: "
                                                   "the config's model.checkpoint, the embedded model)")
    p.add_argument("--output-dir", type=Path, required=True, help="folder for every artifact and the report")
    p.add_argument("--target", default="native", help="surgery target: plugins | native | ort (default: %(default)s)")
    p.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8", "fp8"],
                   help="precision stage; fp32 skips it (default: %(default)s)")
    p.add_argument("--build", action="store_true", help="also build a TensorRT engine (needs the 'tensorrt' or "
                                                        "'rtx' extra) and check that instead of the ONNX")
    p.add_argument("--runtime", choices=["tensorrt", "tensorrt-rtx"], help="engine runtime (default: the installed)")
    p.add_argument("--vocab", type=Path, help="vocab.txt (default: beside the checkpoint, else the embedded model's)")
    p.add_argument("--squad-json", type=Path, help="SQuAD file of the accuracy check (default: the config's data.dev, "
                                                   "the shipped SQuAD v1.1 dev)")
    p.add_argument("--squad-limit", type=int, default=100, help="questions of the accuracy check (default: "
                                                                "%(default)s)")
    p.add_argument("--calib-num", type=int, default=256, help="int8/fp8 calibration features (default: %(default)s)")
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(run=_run_optimize)


def _run_optimize(args, cfg: PipelineConfig) -> int:
    checkpoint = Path(ag.required(ag.pick(args.checkpoint, cfg, "model", "checkpoint"), "--checkpoint"))
    squad_json = ag.pick(args.squad_json, cfg, "data", "dev")
    report = optimize(OptimizeRequest(checkpoint, args.output_dir, args.target, args.precision, args.build,
                                      args.runtime, args.vocab, Path(squad_json) if squad_json else None,
                                      args.squad_limit, calib_num=args.calib_num,
                                      progress=not args.no_progress and not args.json))
    emit(args, report, f"{format_optimize(report)}\nwrote {args.output_dir}/{{optimize.json, commands.sh}} and the "
                       f"artifacts")
    return 0


# --- data -----------------------------------------------------------------------------------------------------
def _add_data(sub) -> None:
    p = sub.add_parser("data", help="fetch other SQuAD files (v2.0 dev, v1.1 train, ...) with pinned SHA-256",
                       description="Download SQuAD files from their public address into a directory, each checked "
                                   "against its pinned SHA-256 before it is published. SQuAD v1.1 dev ships with "
                                   "bertrt (the default data.dev) and needs no download.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"which files: {', '.join(FILES)} (none: list them)")
    p.add_argument("--output-dir", type=Path, default=Path("data/squad"), help="where to write (default: %(default)s)")
    p.add_argument("--base-url", default=BASE_URL, help="a mirror holding the same files (default: %(default)s)")
    p.add_argument("--sha256", help="expected SHA-256 instead of the pinned one (one NAME only; a mirror's own file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(run=_run_data)


def _run_data(args, cfg: PipelineConfig) -> int:
    if not args.names:
        rows = [{"name": f.name, "file": f.filename, "bytes": f.size, "sha256": f.sha256, "what": f.what}
                for f in FILES.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<11} {r['bytes'] / 1e6:6.1f} MB  {r['what']}")
        return 0
    if args.sha256 and len(args.names) != 1:
        raise BertrtError("--sha256 pins one file: give exactly one NAME with it")
    for name in args.names:
        path, downloaded = fetch(name, args.output_dir, base_url=args.base_url, sha256=args.sha256,
                                 progress=not args.no_progress)
        if args.json:
            print(json.dumps({"name": name, "path": str(path), "downloaded": downloaded}))
        else:
            print(f"{'wrote' if downloaded else 'up to date:'} {path} (sha256 checked)")
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """argparse prints the usage and then the error; bertrt's contract is one line on stderr and exit code 2
    (`--help` still shows the usage). Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_global_flags(p, default) -> None:
    """--config, --debug, -v: accepted before the subcommand and after it. On a subcommand their default is
    SUPPRESS, so a flag given before the subcommand is not reset by the subcommand's parser."""
    p.add_argument("--config", type=Path, default=default(None),
                   help=f"pipeline config (default: {default_config()})")
    p.add_argument("--debug", action="store_true", default=default(False), help="show the traceback of an error")
    p.add_argument("-v", "--verbose", action="store_true", default=default(False),
                   help="show third-party logs (TensorFlow, onnxruntime warnings), quiet by default")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="bertrt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bertrt {__version__}")
    _add_global_flags(parser, lambda value: value)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_export, _add_infer, _add_squad, _add_surgery, _add_compare, _add_perf, add_quantize,
                add_varseqlen, add_build, add_calibrate, add_triton_repo, add_serve, add_serve_bench, _add_data,
                _add_optimize):
        add(sub)
    for command in sub.choices.values():
        _add_global_flags(command, lambda value: argparse.SUPPRESS)
    return parser


def _quiet_third_party(verbose: bool) -> None:
    """TensorFlow's C++ and Python logs and onnxruntime's warnings are noise for a user unless asked for (-v)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow is first imported
    for name in ("tensorflow", "tf2onnx", "absl", "h5py", "polygraphy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)  # errors only (the default, 2, prints graph-optimization warnings)
    G_LOGGER.module_severity = G_LOGGER.ERROR  # Polygraphy's [I]/[W] lines (stages that want more set it)
    # onnxruntime.quantization warns on the root logger ("Please consider pre-processing before quantization").
    logging.getLogger().addFilter(_not_onnxruntime_warning)


def _not_onnxruntime_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party(args.verbose)
    try:
        with stop_signals_raise():  # SIGTERM cleans up like Ctrl-C: every stage's temporaries are removed
            return args.run(args, load_config(args.config))
    except BertrtError as exc:
        if args.debug:
            raise
        print(f"bertrt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outputs are published atomically: nothing half-written is left behind
        if args.debug:
            raise
        print(f"bertrt {args.command}: {interrupted_message(exc)}", file=sys.stderr)
        return exit_code(exc)  # 130 for SIGINT, 143 for SIGTERM
    except OSError as exc:  # the environment (disk full, permissions) rather than bertrt: still one line
        if args.debug:
            raise
        print(f"bertrt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of bertrt or of a library: one line here, the traceback with --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"bertrt {args.command}: internal error: {type(exc).__name__}: {first} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
