#!/usr/bin/env python3
"""The GPU measurements of the README's "GPU runtime" section (issue 8), in one process on a CUDA machine with
onnxruntime-gpu (and torch + transformers for the random-weight BERT-Large): full SQuAD v1.1 dev through
`bertrt.session.squad.run_squad` per runtime variant, packing-mode (varseqlen) parity against the padded graph on
real dev features, and model throughput on the real dev length distribution for BERT-Large.

    python scripts/gpu_measure.py --model model.ort.fp16.onnx --vocab vocab.txt --squad-json dev-v1.1.json \\
        --out results/ [--large]

Every section is independent: a failing one is logged with its traceback and the others still run. Writes
<out>/gpu-measure.json (predictions and built models go to --work)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from bertrt.session.answering import SquadParams, bucketed_logits
from bertrt.runtimes import RunOptions, open_backend
from bertrt.runtimes.buckets import DEFAULT_BUCKETS
from bertrt.qa.features import make_features
from bertrt.qa.squad_data import load_squad
from bertrt.session.squad import run_squad
from bertrt.qa.tokenizer import load_tokenizer
from bertrt.surgery.varseqlen import convert

PROVIDER = "cuda"
LIMIT = None


def squad_run(model: Path, vocab: Path, squad_json: Path, out: Path, tag: str, batch: int, buckets, graph: bool):
    t0 = time.perf_counter()
    backend = open_backend(model, RunOptions(provider=PROVIDER, buckets=buckets, batch_size=batch, cuda_graph=graph))
    tokenizer = load_tokenizer(vocab, expected_vocab_size=backend.config.vocab_size)
    with backend:  # warm-up (and CUDA graph capture) of every bucket happens here
        warm = time.perf_counter() - t0
        r = run_squad(backend, tokenizer, squad_json, out / f"pred-{tag}.json", SquadParams(), batch, limit=LIMIT,
                      progress=False)
    s = r["scores"]
    return {"tag": tag, "batch": batch, "buckets": list(backend.buckets), "cuda_graph": graph,
            "em": round(s["exact_match"], 2), "f1": round(s["f1"], 2), "features": r["features"],
            "wall_s": r["wall_seconds"], "model_s": r["model_seconds"],
            "features_per_s_model": round(r["features"] / r["model_seconds"], 1),
            "features_per_s_end_to_end": round(r["features"] / r["wall_seconds"], 1),
            "open_and_warmup_s": round(warm, 2)}


def logits(model: Path, features, batch: int, buckets, graph: bool):
    backend = open_backend(model, RunOptions(provider=PROVIDER, buckets=buckets, batch_size=batch, cuda_graph=graph))
    with backend:
        _, starts, ends, seconds = bucketed_logits(backend, [features], batch)
    return starts, ends, seconds


def parity(padded: Path, packed: Path, features, batch: int = 64) -> dict:
    """Worst |packed - padded| over the real positions of every feature (both FP16 on the GPU)."""
    a_s, a_e, _ = logits(padded, features, batch, DEFAULT_BUCKETS, False)
    b_s, b_e, _ = logits(packed, features, batch, DEFAULT_BUCKETS, False)
    worst, where, argmax_same = 0.0, None, 0
    for i, f in enumerate(features):
        n = f.length
        d = max(float(np.abs(a_s[i][:n] - b_s[i][:n]).max()), float(np.abs(a_e[i][:n] - b_e[i][:n]).max()))
        if d > worst:
            worst, where = d, i
        argmax_same += int(np.argmax(a_s[i][:n]) == np.argmax(b_s[i][:n]) and
                           np.argmax(a_e[i][:n]) == np.argmax(b_e[i][:n]))
    return {"features": len(features), "worst_abs": worst, "worst_feature": where,
            "max_abs_logit": float(max(np.abs(s[:f.length]).max() for s, f in zip(a_s, features))),
            "argmax_start_end_equal": argmax_same}


def throughput(model: Path, features, batch: int, buckets, graph: bool) -> dict:
    logits(model, features[: batch * 4], batch, buckets, graph)  # one pass over a few batches: allocator warm
    _, _, seconds = logits(model, features, batch, buckets, graph)
    return {"batch": batch, "buckets": list(buckets), "cuda_graph": graph, "features": len(features),
            "model_s": round(seconds, 3), "features_per_s": round(len(features) / seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="embedded model, FP16 ort target")
    ap.add_argument("--vocab", type=Path, required=True)
    ap.add_argument("--squad-json", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--large", action="store_true", help="also BERT-Large (random weights) on real SQuAD lengths")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bertrt-gpu-work"))
    ap.add_argument("--limit", type=int, help="only the first N dev questions (smoke test)")
    ap.add_argument("--provider", default="cuda", help="cpu: smoke test of the script (GPU-only parts fail)")
    args = ap.parse_args()
    global PROVIDER, LIMIT
    PROVIDER, LIMIT = args.provider, args.limit
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    def section(name, fn):
        t0 = time.time()
        try:
            results[name] = fn()
        except Exception as exc:  # keep going: one failure must not cost the other measurements
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        print(f"== {name} ({time.time() - t0:.1f} s): {json.dumps(results[name])}", flush=True)
        (args.out / "gpu-measure.json").write_text(json.dumps(results, indent=1))

    packed = args.work / "embedded.ort.fp16.varseqlen.onnx"
    section("varseqlen_convert", lambda: convert(args.model, packed))
    tokenizer = load_tokenizer(args.vocab)
    examples, _ = load_squad(args.squad_json)
    examples = examples[: args.limit] if args.limit else examples
    features = make_features(examples, tokenizer)
    section("parity_packed_vs_padded_gpu", lambda: parity(args.model, packed, features[:2048]))
    b = DEFAULT_BUCKETS
    for tag, model, batch, buckets, graph in [
        ("iobinding-b64", args.model, 64, b, False),
        ("cudagraph-b64", args.model, 64, b, True),
        ("cudagraph-b256", args.model, 256, b, True),
        ("cudagraph-b256-one-bucket-384", args.model, 256, (384,), True),
        ("varseqlen-b256", packed, 256, b, False),
        ("varseqlen-b256-one-bucket-384", packed, 256, (384,), False),
    ]:
        section(f"squad_{tag}", lambda: squad_run(model, args.vocab, args.squad_json, args.work, tag, batch, buckets,
                                                  graph))
    if args.large:
        from bertrt.run.random_bert import ort_fp16_artifact, torch_bert

        large = args.work / "random-bert-large.ort.fp16.onnx"
        section("large_build", lambda: str(ort_fp16_artifact(torch_bert("large"), args.work, "random-bert-large",
                                                               args.vocab)))
        large_packed = args.work / "random-bert-large.ort.fp16.varseqlen.onnx"
        section("large_varseqlen_convert", lambda: convert(large, large_packed))
        section("large_parity_packed_vs_padded_gpu", lambda: parity(large, large_packed, features[:512]))
        for tag, model, buckets, graph in [("padded-384", large, (384,), True), ("padded-buckets", large, b, True),
                                           ("varseqlen-384", large_packed, (384,), False),
                                           ("varseqlen-buckets", large_packed, b, False)]:
            section(f"large_real_lengths_{tag}", lambda: throughput(model, features, 128, buckets, graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
