#!/usr/bin/env python3
"""GPU benchmark for the README: model time of the full SQuAD dev with features made up front (no tokenizer thread
beside the GPU), then the post-processing of those logits with 1, 4, 8 and 16 forked workers (answers compared).

    python scripts/gpu_post_bench.py model.ort.fp16.onnx vocab.txt dev-v1.1.json
"""
import sys, time
from bertrt.session.answering import SquadParams, bucketed_logits, feature_chunks
from bertrt.runtimes import RunOptions, open_backend
from bertrt.qa.postprocess import best_answers
from bertrt.qa.squad_data import load_squad
from bertrt.qa.tokenizer import load_tokenizer
model, vocab, squad = sys.argv[1:4]
examples, _ = load_squad(squad)
tok = load_tokenizer(vocab)
with open_backend(model, RunOptions(provider="cuda", batch_size=256, cuda_graph=True)) as b:
    features, starts, ends, secs = bucketed_logits(b, feature_chunks(examples, tok, SquadParams(), True), 256)
    print("model s", round(secs, 3))
    ref = None
    for w in (1, 4, 8, 16, 8, 1):
        t = time.perf_counter(); a = best_answers(examples, features, starts, ends, workers=w); dt = time.perf_counter() - t
        ref = ref or a
        print("workers", w, "post s", round(dt, 3), "same answers", a == ref)
