"""The `bertrt` command: one subcommand per stage. Bad input -> one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertrt import api
from bertrt import arg_groups as ag
from bertrt.build.cli import add_build, add_calibrate
from bertrt.calibration.cli import add_quantize
from bertrt.errors import BertrtError
from bertrt.interrupts import exit_code, interrupted_message, stop_signals_raise
from bertrt.pipeline_config import PipelineConfig, load_config
from bertrt.run.compare import format_rows
from bertrt.run.perf import format_table, perf_outputs
from bertrt.serve.cli import add_serve, add_serve_bench, add_triton_repo
from bertrt.session import QASession
from bertrt.session.squad import eval_path, summary
from bertrt.surgery.pipeline import fusion_report_path
from bertrt.surgery.varseqlen import add_varseqlen
from bertrt.targets import TARGETS, surgery_targets


# --- export ---------------------------------------------------------------------------------------------------
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="TF1 checkpoint or HF safetensors -> ONNX (fp32, dynamic batch/seq)")
    p.add_argument("--checkpoint", type=Path, help="TF checkpoint dir, or HF model.safetensors (or its dir)")
    p.add_argument("--output", type=Path, help="ONNX file to write (default out/<config>/model.onnx)")
    p.add_argument("--bert-config", type=Path, help="bert_config.json / config.json (default: beside the checkpoint)")
    p.add_argument("--vocab", type=Path, help="vocab.txt, checked against the config (default: beside the checkpoint)")
    p.add_argument("--gelu", choices=["erf", "tanh"], help="GELU form (default: from hidden_act; 'gelu' = erf)")
    p.add_argument("--opset", type=int, help="ONNX opset (>= 17)")
    p.set_defaults(run=_run_export)


def _run_export(args, cfg: PipelineConfig) -> int:
    checkpoint = Path(ag.required(ag.pick(args.checkpoint, cfg, "model", "checkpoint"), "--checkpoint"))
    output = args.output or ag.default_model(cfg)
    vocab = args.vocab
    if vocab is None and args.checkpoint is None and cfg.get("model", "vocab"):
        vocab = Path(cfg.get("model", "vocab"))
    api.export_model(checkpoint, output, bert_config=args.bert_config, vocab=vocab,
                     gelu=ag.pick(args.gelu, cfg, "model", "gelu"), opset=ag.pick(args.opset, cfg, "model", "opset"))
    print(f"wrote {output} (+ {output.name}.json)")
    return 0


# --- shared by infer / squad ----------------------------------------------------------------------------------
def _answerer(args, cfg: PipelineConfig) -> QASession:
    model, vocab, params, options = ag.session_args(args, cfg)
    return QASession(model, vocab, params, options=options)


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
        try:
            passage = args.passage_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BertrtError(f"{args.passage_file}: cannot read passage ({exc})") from None
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
    p.add_argument("--squad-json", type=Path, help="SQuAD JSON (default: the config's data.dev)")
    p.add_argument("--output", type=Path, help="predictions.json to write (default out/<config>/predictions.json)")
    p.add_argument("--limit", type=int, help="only the first N questions of the file")
    p.add_argument("--null-score-diff-threshold", type=float, default=0.0,
                   help="SQuAD v2: predict no answer when null score - best span score exceeds this")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_squad)


def _run_squad(args, cfg: PipelineConfig) -> int:
    squad_json = Path(ag.required(ag.pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
    output = args.output or cfg.out_dir / "predictions.json"
    with _answerer(args, cfg) as qa:
        report = qa.squad(squad_json, output, limit=args.limit,
                          null_score_diff_threshold=args.null_score_diff_threshold, progress=not args.no_progress)
    print(summary(report))
    print(f"wrote {output} and {eval_path(output)}")
    return 0


# --- surgery --------------------------------------------------------------------------------------------------
def _add_surgery(sub) -> None:
    names = surgery_targets()
    p = sub.add_parser("surgery", help=f"fuse BERT blocks for a target: {' | '.join(names)}")
    p.add_argument("--input", type=Path, help="ONNX from bertrt export or torch.onnx.export (default: the export)")
    p.add_argument("--output", type=Path, help="fused ONNX (default out/<config>/model.<target>.onnx)")
    p.add_argument("--target", required=True, metavar="|".join(names), help=" | ".join(
        f"{name}: {TARGETS[name].description}" for name in names))
    # Each target's options, from the registry; a flag is passed on only to the target that takes it (the Target
    # validates it), so one command line can carry the flags of several targets (the Makefile does).
    for option in {o.name: o for name in names for o in TARGETS[name].options}.values():
        owners = ", ".join(name for name in names if option in TARGETS[name].options)
        p.add_argument(option.flag, dest=option.name, metavar="|".join(option.choices),
                       help=f"{owners} target: {option.help} (default {option.default})")
    p.set_defaults(run=_run_surgery)


def _run_surgery(args, cfg: PipelineConfig) -> int:
    source = args.input or ag.default_model(cfg)
    output = args.output or cfg.out_dir / f"model.{args.target}.onnx"
    target = TARGETS.get(args.target)
    options = {o.name: getattr(args, o.name) for o in (target.options if target else ())
               if getattr(args, o.name) is not None}
    api.fuse(source, output, args.target, **options)
    print(f"wrote {output} (+ {output.name}.json, {fusion_report_path(output).name})")
    return 0


# --- compare --------------------------------------------------------------------------------------------------
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="worst logit errors of model B against model A on real SQuAD features")
    p.add_argument("a", type=Path, help="reference: TF checkpoint dir / .safetensors, ONNX, or engine")
    p.add_argument("b", type=Path, help="model to check: ONNX (any target; plugin graphs run on numpy references) "
                                        "or an engine from `bertrt build`")
    p.add_argument("--squad-json", type=Path, help="SQuAD file the features come from (default: the config's dev)")
    ag.add_vocab_arg(p)
    p.add_argument("--num-features", type=int, default=8)
    ag.add_backend_args(p)
    ag.add_shape_args(p, batch_default=4)
    p.add_argument("--atol", type=float, default=1e-4, help="exit code 1 when a worst abs error exceeds this")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare the embedding and every encoder layer's output (needs an unfused export)")
    p.set_defaults(run=_run_compare)


def _run_compare(args, cfg: PipelineConfig) -> int:
    squad_json = Path(ag.required(ag.pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
    batch_size, seq_len = ag.shapes(args, cfg)
    rows = api.compare_models(args.a, args.b, squad_json, ag.vocab_path(args, cfg), args.num_features, batch_size,
                              seq_len, per_layer=args.per_layer, options=ag.backend_options(args, cfg))
    print(f"B = {args.b} against A = {args.a}: {args.num_features} SQuAD features, seq {seq_len}, "
          f"padded positions excluded")
    print(format_rows(rows, args.atol))
    return 1 if any(r.worst_abs > args.atol for r in rows) else 0


# --- perf -----------------------------------------------------------------------------------------------------
def _add_perf(sub) -> None:
    p = sub.add_parser("perf", help="latency of one or more models over batch x sequence (same process)")
    ag.add_model_args(p, several=True, vocab=False, required=False)
    ag.add_backend_args(p)
    ag.add_shape_args(p, several=True, batch_default=[1, 8], seq_default=[128, 384])
    p.add_argument("--random-bert", choices=["base", "large"], action="append", default=[],
                   help="--provider cuda: also a random-weight BERT-Base/Large built from its config (needs torch)")
    p.add_argument("--no-peers", action="store_true", help="--provider cuda: skip the torch eager/CUDA graph peers")
    p.add_argument("--runtimes", nargs="+", metavar="RUNTIME[:PRECISION]",
                   help="CPU: run every model on each of these side by side, e.g. onnxruntime openvino:f32 "
                        "openvino:bf16 (the first is the speed-up's base)")
    p.add_argument("--thread-counts", type=int, nargs="+", metavar="N",
                   help="CPU: repeat the grid per intra-op thread count (0: all cores), e.g. 1 2 0")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--output", type=Path, help="perf JSON (+ .csv and .png beside it; default out/<config>/perf.json)")
    p.set_defaults(run=_run_perf)


def _run_perf(args, cfg: PipelineConfig) -> int:
    batches, seqs = ag.shapes(args, cfg)
    if args.runs < 1 or args.warmup < 0:
        raise BertrtError("--runs must be positive and --warmup not negative")
    options = ag.backend_options(args, cfg)
    if not args.model and not (args.random_bert and options.provider == "cuda"):
        raise BertrtError("no model given (--model, or --random-bert with --provider cuda)")
    output = args.output or cfg.out_dir / "perf.json"
    if options.provider == "cuda" and (args.runtimes or args.thread_counts):
        raise BertrtError("--runtimes and --thread-counts compare CPU runtimes (leave out --provider cuda)")
    if options.provider == "cuda":  # device-side timing, random-weight models and torch peers (run/perf_gpu.py)
        timings = api.perf_gpu(args.model, args.random_bert, batches, seqs, output, args.warmup, args.runs,
                               args.cuda_graph, peers=not args.no_peers, vocab=cfg.get("model", "vocab"),
                               options=options)
    else:
        timings = api.perf(args.model, batches, seqs, output, warmup=args.warmup, runs=args.runs, options=options,
                           runtimes=args.runtimes, thread_counts=args.thread_counts)
    print(format_table(timings))
    print(f"wrote {', '.join(map(str, perf_outputs(output)))}")
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """argparse prints the usage and then the error; bertrt's contract is one line on stderr and exit code 2
    (`--help` still shows the usage). Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="bertrt", description=__doc__)
    parser.add_argument("--config", type=Path, help="pipeline config (default configs/minilm-l6-h384-squad11.yaml)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_export, _add_infer, _add_squad, _add_surgery, _add_compare, _add_perf, add_quantize,
                add_varseqlen, add_build, add_calibrate, add_triton_repo, add_serve, add_serve_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
