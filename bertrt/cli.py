"""The `bertrt` command: one subcommand per stage. Bad input -> one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.pipeline_config import PipelineConfig, load_config


def _pick(value, cfg: PipelineConfig, section: str, key: str):
    """A flag's value, else the config's."""
    return value if value is not None else cfg.get(section, key)


def _required(value, what: str):
    if value is None:
        raise BertrtError(f"no {what} given (use the flag or set it in the config)")
    return value


def _default_model(cfg: PipelineConfig) -> Path:
    return cfg.out_dir / "model.onnx"


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
    from bertrt.export.onnx_export import export

    checkpoint = Path(_required(_pick(args.checkpoint, cfg, "model", "checkpoint"), "--checkpoint"))
    output = args.output or _default_model(cfg)
    vocab = args.vocab
    if vocab is None and args.checkpoint is None and cfg.get("model", "vocab"):
        vocab = Path(cfg.get("model", "vocab"))
    export(checkpoint, output, config=args.bert_config, vocab=vocab, gelu=_pick(args.gelu, cfg, "model", "gelu"),
           opset=_pick(args.opset, cfg, "model", "opset"))
    print(f"wrote {output} (+ {output.name}.json)")
    return 0


# --- shared by infer / squad ----------------------------------------------------------------------------------
def _add_model_args(p) -> None:
    p.add_argument("--model", type=Path, help="QA model (.onnx from bertrt; default out/<config>/model.onnx)")
    p.add_argument("--vocab", type=Path, help="vocab.txt (default: the config's)")
    p.add_argument("--provider", choices=["cpu", "cuda"], help="onnxruntime execution provider")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--doc-stride", type=int)
    p.add_argument("--max-query-length", type=int)
    p.add_argument("--n-best", type=int)
    p.add_argument("--max-answer-length", type=int)
    p.add_argument("--buckets", help="sequence-length buckets, e.g. 128,192,256,320,384 (default with --provider "
                   "cuda; each batch is padded to its bucket and to --batch-size rows)")
    p.add_argument("--cuda-graph", action="store_true", help="replay one onnxruntime CUDA graph per bucket")


def _open(args, cfg: PipelineConfig):
    from bertrt.run.answering import SquadParams
    from bertrt.run.backends import open_backend
    from bertrt.run.tokenizer import load_tokenizer

    model = args.model or _default_model(cfg)
    if args.model is None and not model.exists():
        raise BertrtError(f"{model}: no model yet (run `bertrt export` or `make export` first, or give --model)")
    from bertrt.run.buckets import parse_buckets

    batch_size = _pick(args.batch_size, cfg, "run", "batch_size")
    backend = open_backend(model, provider=_pick(args.provider, cfg, "run", "provider"), batch_size=batch_size,
                           buckets=parse_buckets(args.buckets) if args.buckets else None, cuda_graph=args.cuda_graph)
    vocab = Path(_required(_pick(args.vocab, cfg, "model", "vocab"), "--vocab"))
    tokenizer = load_tokenizer(vocab, expected_vocab_size=backend.config.vocab_size)
    params = SquadParams(**{k: _pick(getattr(args, k), cfg, "squad", k) for k in SquadParams.__dataclass_fields__})
    return backend, tokenizer, params, batch_size


# --- infer ----------------------------------------------------------------------------------------------------
def _add_infer(sub) -> None:
    p = sub.add_parser("infer", help="answer questions about a passage")
    _add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--passage", help="the passage text")
    src.add_argument("--passage-file", type=Path, help="a UTF-8 text file holding the passage")
    p.add_argument("--question", action="append", required=True, help="a question (repeat for several)")
    p.add_argument("--json", action="store_true", help="print one JSON list with an object per question")
    p.set_defaults(run=_run_infer)


def _run_infer(args, cfg: PipelineConfig) -> int:
    from bertrt.run.answering import answer
    from bertrt.run.squad_data import Example

    if args.passage_file is not None:
        try:
            passage = args.passage_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BertrtError(f"{args.passage_file}: cannot read passage ({exc})") from None
    else:
        passage = args.passage
    backend, tokenizer, params, batch_size = _open(args, cfg)
    examples = [Example(qas_id=str(i), question=q, context=passage) for i, q in enumerate(args.question)]
    with backend:
        # A question that does not fit is an error here, not silently truncated as SQuAD evaluation does.
        result = answer(backend, tokenizer, examples, params, batch_size, truncate_question=False)
    rows = [{"question": ex.question, "answer": a.text, "score": round(a.score, 4), "logit": round(a.logit, 4),
             "char_start": a.char_start, "char_end": a.char_end} for ex, a in zip(examples, result.answers)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            print(f"Q: {row['question']}\nA: {row['answer']}  (score {row['score']:.3f})")
    return 0


# --- squad ----------------------------------------------------------------------------------------------------
def _add_squad(sub) -> None:
    p = sub.add_parser("squad", help="run a SQuAD v1.1/v2.0 file; write predictions.json and EM/F1")
    _add_model_args(p)
    p.add_argument("--squad-json", type=Path, help="SQuAD JSON (default: the config's data.dev)")
    p.add_argument("--output", type=Path, help="predictions.json to write (default out/<config>/predictions.json)")
    p.add_argument("--limit", type=int, help="only the first N questions of the file")
    p.add_argument("--null-score-diff-threshold", type=float, default=0.0,
                   help="SQuAD v2: predict no answer when null score - best span score exceeds this")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_squad)


def _run_squad(args, cfg: PipelineConfig) -> int:
    from bertrt.run.squad_eval import eval_path, run_squad, summary

    squad_json = Path(_required(_pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
    output = args.output or cfg.out_dir / "predictions.json"
    backend, tokenizer, params, batch_size = _open(args, cfg)
    with backend:
        report = run_squad(backend, tokenizer, squad_json, output, params, batch_size, limit=args.limit,
                           null_score_diff_threshold=args.null_score_diff_threshold, progress=not args.no_progress)
    print(summary(report))
    print(f"wrote {output} and {eval_path(output)}")
    return 0


# --- surgery --------------------------------------------------------------------------------------------------
def _add_surgery(sub) -> None:
    p = sub.add_parser("surgery", help="fuse BERT blocks for a target: plugins | native | ort")
    p.add_argument("--input", type=Path, help="ONNX from bertrt export or torch.onnx.export (default: the export)")
    p.add_argument("--output", type=Path, help="fused ONNX (default out/<config>/model.<target>.onnx)")
    p.add_argument("--target", required=True, help="plugins | native | ort")
    p.add_argument("--plugin-api", default="v3", help="plugins target: v2 (IPluginV2, deprecated) or v3 (IPluginV3)")
    p.add_argument("--attention", default="matmul",
                   help="native target: matmul (opset 17 MatMul-Softmax-MatMul, TensorRT 10/11) or onnx-attention "
                        "(opset 23 Attention -> IAttention, TensorRT >= 10.14)")
    p.set_defaults(run=_run_surgery)


def _run_surgery(args, cfg: PipelineConfig) -> int:
    from bertrt.surgery.pipeline import fusion_report_path, run_surgery

    source = args.input or _default_model(cfg)
    output = args.output or cfg.out_dir / f"model.{args.target}.onnx"
    run_surgery(source, output, args.target, plugin_api=args.plugin_api, attention=args.attention)
    print(f"wrote {output} (+ {output.name}.json, {fusion_report_path(output).name})")
    return 0


# --- compare --------------------------------------------------------------------------------------------------
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="worst logit errors of model B against model A on real SQuAD features")
    p.add_argument("a", type=Path, help="reference: TF checkpoint dir / .safetensors, or ONNX")
    p.add_argument("b", type=Path, help="model to check: ONNX (any target; plugin graphs run on numpy references)")
    p.add_argument("--squad-json", type=Path, help="SQuAD file the features come from (default: the config's dev)")
    p.add_argument("--vocab", type=Path, help="vocab.txt (default: the config's)")
    p.add_argument("--num-features", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, help="padded sequence length (default: the config's max_seq_length)")
    p.add_argument("--atol", type=float, default=1e-4, help="exit code 1 when a worst abs error exceeds this")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare the embedding and every encoder layer's output (needs an unfused export)")
    p.set_defaults(run=_run_compare)


def _run_compare(args, cfg: PipelineConfig) -> int:
    from bertrt.run.compare import compare, feature_batches, format_rows
    from bertrt.run.tokenizer import load_tokenizer

    squad_json = Path(_required(_pick(args.squad_json, cfg, "data", "dev"), "--squad-json"))
    tokenizer = load_tokenizer(Path(_required(_pick(args.vocab, cfg, "model", "vocab"), "--vocab")))
    seq_len = _pick(args.seq_len, cfg, "squad", "max_seq_length")
    batches = feature_batches(squad_json, tokenizer, args.num_features, args.batch_size, seq_len)
    rows = compare(args.a, args.b, batches, per_layer=args.per_layer)
    print(f"B = {args.b} against A = {args.a}: {args.num_features} SQuAD features, seq {seq_len}, "
          f"padded positions excluded")
    print(format_rows(rows, args.atol))
    return 1 if any(r.worst_abs > args.atol for r in rows) else 0


# --- perf -----------------------------------------------------------------------------------------------------
def _add_perf(sub) -> None:
    p = sub.add_parser("perf", help="latency of one or more models over batch x sequence (same process)")
    p.add_argument("--model", type=Path, action="append", default=[], help="QA model (repeat to compare)")
    p.add_argument("--random-bert", choices=["base", "large"], action="append", default=[],
                   help="--provider cuda: also a random-weight BERT-Base/Large built from its config (needs torch)")
    p.add_argument("--cuda-graph", action="store_true", help="--provider cuda: also time onnxruntime CUDA graphs")
    p.add_argument("--no-peers", action="store_true", help="--provider cuda: skip the torch eager/CUDA graph peers")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seq", type=int, nargs="+", default=[128, 384])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--provider", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--output", type=Path, help="perf JSON (+ .csv beside it; default out/<config>/perf.json)")
    p.set_defaults(run=_run_perf)


def _run_perf(args, cfg: PipelineConfig) -> int:
    import contextlib
    import os
    import platform

    from bertrt.artifacts import tool_versions
    from bertrt.run.backends import open_backend
    from bertrt.run.perf import format_table, time_backend, write_results

    if min(args.batch + args.seq) < 1 or args.runs < 1:
        raise BertrtError("--batch, --seq and --runs must be positive")
    provider = _pick(args.provider, cfg, "run", "provider")
    if not args.model and not (args.random_bert and provider == "cuda"):
        raise BertrtError("no model given (--model, or --random-bert with --provider cuda)")
    output = args.output or cfg.out_dir / "perf.json"
    timings = []
    if provider == "cuda":
        from bertrt.run.perf_gpu import sweep

        timings, meta = sweep(args.model, args.random_bert, output.parent, _pick(None, cfg, "model", "vocab"),
                              args.batch, args.seq, args.warmup, args.runs, args.cuda_graph, not args.no_peers)
    with contextlib.ExitStack() as stack:
        backends = [(path, stack.enter_context(open_backend(path, provider=provider, threads=args.threads)))
                    for path in (args.model if provider != "cuda" else [])]
        # Interleave models inside each shape, so that drift of the machine affects every model alike.
        for batch in args.batch:
            for seq in args.seq:
                for path, backend in backends:
                    timings.append(time_backend(backend, path.name, batch, seq, args.warmup, args.runs))
    print(format_table(timings))
    meta = meta if provider == "cuda" else {"provider": provider, "clock": "host"}
    write_results(timings, output, {**meta, "machine": platform.processor() or platform.machine(),
                                    "cpu_count": os.cpu_count(), "tools": tool_versions()})
    print(f"wrote {output}, {output.with_suffix('.csv')} and {output.with_suffix('.png')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertrt", description=__doc__)
    parser.add_argument("--config", type=Path, help="pipeline config (default configs/minilm-l6-h384-squad11.yaml)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    from bertrt.calibration.cli import add_calibrate, add_quantize
    from bertrt.surgery.packing import add_varseqlen

    for add in (_add_export, _add_infer, _add_squad, _add_surgery, _add_compare, _add_perf, add_quantize,
                add_calibrate, add_varseqlen):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, load_config(args.config))
    except BertrtError as exc:
        if args.debug:
            raise
        print(f"bertrt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
