"""The CPU-testable parts of the GPU runtime (issue 8): sequence-length buckets, the IOBinding runner (on the CPU
provider), tokenization overlapped in chunks, the packing-mode (varseqlen) conversion, the perf JSON/CSV/PNG, and
bad input. GPU numbers were measured on an H200 (docs/results.md, "GPU")."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import DEV, require
from test_cli import assert_one_line_error, run_cli

from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES

SMALL = (2, 64, 2, "erf")  # layers, hidden, heads, gelu of a random-weight export


# --- buckets -----------------------------------------------------------------------------------------------------
def test_parse_and_check_buckets():
    from bertrt.runtimes.buckets import bucket_for, check_buckets, parse_buckets

    assert parse_buckets("384,128,256,128") == (128, 256, 384)
    for bad in ("", "128,x", "0,384", "-5"):
        with pytest.raises(BertrtError, match="buckets"):
            parse_buckets(bad)
    check_buckets((128, 384), 384, 512)
    with pytest.raises(BertrtError, match="cannot hold the max sequence length 384"):
        check_buckets((128, 256), 384)
    with pytest.raises(BertrtError, match="exceeds the model's 384 positions"):
        check_buckets((128, 512), 384, 384)
    assert [bucket_for(n, (128, 256, 384)) for n in (1, 128, 129, 384)] == [128, 128, 256, 384]
    with pytest.raises(BertrtError, match="fits no sequence-length bucket"):
        bucket_for(385, (128, 384))


def test_bucket_batcher_on_real_squad_lengths(tokenizer):
    """Every feature lands exactly once, in the smallest bucket that holds it; batches are full except the last
    one of each bucket; a chunked feed gives the same batches' contents as one feed."""
    from bertrt.runtimes.buckets import BucketBatcher
    from bertrt.qa.features import make_features
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    lengths = [f.length for f in make_features(examples[:400], tokenizer)]
    buckets, batch = (128, 192, 256, 384), 16
    batcher = BucketBatcher(buckets, batch)
    items = list(enumerate(lengths))
    batches = [b for chunk in range(0, len(items), 37) for b in batcher.add(items[chunk:chunk + 37])]
    full = len(batches)
    batches += list(batcher.flush())
    assert sorted(i for _, idx in batches for i in idx) == list(range(len(lengths)))
    assert all(len(idx) == batch for _, idx in batches[:full])
    assert len(batches) - full <= len(buckets)
    for bucket, idx in batches:
        for i in idx:
            assert lengths[i] <= bucket and not any(lengths[i] <= b for b in buckets if b < bucket)
    assert {b for b, _ in batches} == set(buckets)  # the dev lengths (p10 110 .. max 384) reach every bucket


def test_collate_pads_rows_with_one_token():
    from bertrt.qa.features import Feature, collate

    f = Feature(0, 0, np.array([101, 7, 102], np.int32), np.array([0, 0, 1], np.int32), [None, (0, 1), None],
                np.array([False, True, False]))
    feed = collate([f], 8, rows=4)
    assert feed["input_ids"].shape == (4, 8)
    assert feed["input_mask"].sum(axis=1).tolist() == [3, 1, 1, 1]  # padding rows: one token, no empty attention


# --- the IOBinding runner on the CPU provider ----------------------------------------------------------------------
def test_bound_runner_matches_session_run(random_fused):
    """Same logits as a plain session.run, for two shapes, and results that survive the next call (the runner
    reuses its buffers)."""
    from bertrt.runtimes.onnxruntime import ort_session
    from bertrt.runtimes.onnxruntime_bound import OrtBoundRunner

    _, fused, cfg = random_fused(SMALL, "ort")
    session = ort_session(fused, "cpu")
    runner = OrtBoundRunner(session, device="cpu")
    rng = np.random.default_rng(0)
    outs = []
    for batch, seq in ((3, 24), (2, 40), (3, 24)):
        feed = {"input_ids": rng.integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32),
                "segment_ids": np.zeros((batch, seq), np.int32), "input_mask": np.ones((batch, seq), np.int32)}
        feed["input_mask"][0, seq // 2:] = 0
        got = runner.infer_impl(feed)
        want = dict(zip(["start_logits", "end_logits"], session.run(["start_logits", "end_logits"], feed)))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-6)
        outs.append((got, want))
    assert len(runner.bindings) == 2  # one set of buffers per shape, reused
    for got, want in outs:  # earlier results were not overwritten by later runs
        np.testing.assert_allclose(got["start_logits"], want["start_logits"], atol=1e-6)
    with pytest.raises(BertrtError, match="CUDA graphs need the CUDA provider"):
        OrtBoundRunner(session, device="cpu", cuda_graph=True)
    bad = {n: np.full((2, 8), cfg.vocab_size + 5, np.int32) for n in INPUT_NAMES}  # ids past the vocabulary
    with pytest.raises(BertrtError, match="onnxruntime failed on batch 2 x sequence 8"):
        runner.infer_impl(bad)


def test_failed_warm_up_releases_the_runner(random_fused, monkeypatch):
    from bertrt.runtimes import open_backend

    _, fused, _ = random_fused(SMALL, "ort")
    backend = open_backend(fused, buckets=(64,), batch_size=4)

    def too_big(shapes):
        raise BertrtError("batch 4 x sequence 64 does not fit")

    monkeypatch.setattr(backend.runner, "warm_up", too_big)
    with pytest.raises(BertrtError, match="does not fit"):
        with backend:
            pass
    assert not backend.runner.is_active


def test_bucketed_squad_equals_length_sorted_batches(embedded_onnx, tokenizer):
    """The bucketed path (IOBinding, batches padded to buckets and rows, features made in overlapped chunks) gives
    the same logits and answers as the length-sorted dynamic batches, on real dev questions."""
    from bertrt.session.answering import SquadParams, answer
    from bertrt.runtimes import open_backend
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    examples = examples[:40]
    with open_backend(embedded_onnx, runtime="onnxruntime") as plain:
        want = answer(plain, tokenizer, examples, SquadParams(), 8, truncate_question=True)
    with open_backend(embedded_onnx, buckets=(128, 192, 384), batch_size=8) as bucketed:
        assert bucketed.buckets == (128, 192, 384)
        got = answer(bucketed, tokenizer, examples, SquadParams(), 8, truncate_question=True)
    assert [a.text for a in got.answers] == [a.text for a in want.answers]
    assert [(f.example_index, f.span_index) for f in got.features] == [(f.example_index, f.span_index)
                                                                       for f in want.features]
    np.testing.assert_allclose([a.logit for a in got.answers], [a.logit for a in want.answers], atol=1e-4)


def test_batch_rows_pad_partial_batches_to_the_smallest_row_count(embedded_onnx, tokenizer, monkeypatch):
    """With batch_rows, a bucketed batch of fewer windows runs padded to the smallest row count that holds it (a
    lone request: 1 row, not --batch-size); every (rows, bucket) shape is warmed up on entry and no other is run;
    the answers equal those of batches padded to the full batch size."""
    from bertrt.runtimes import open_backend
    from bertrt.runtimes.onnxruntime_bound import OrtBoundRunner
    from bertrt.session.answering import SquadParams, answer
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    examples = examples[:10]  # 10 windows in bucket 192: a full batch of 8 and a partial one of 2
    with open_backend(embedded_onnx, buckets=(128, 192, 384), batch_size=8) as full:
        want = answer(full, tokenizer, examples, SquadParams(), 8, truncate_question=True)
    shapes: list[tuple[int, int]] = []
    real = OrtBoundRunner.infer_impl
    monkeypatch.setattr(OrtBoundRunner, "infer_impl", lambda self, feed: (shapes.append(feed["input_ids"].shape),
                                                                          real(self, feed))[1])
    with open_backend(embedded_onnx, buckets=(128, 192, 384), batch_size=8, batch_rows=(1, 2, 4)) as laddered:
        assert laddered.row_counts == (1, 2, 4, 8)
        assert [laddered.rows_for(n) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
        warmed = set(shapes)
        assert warmed == {(r, b) for r in (1, 2, 4, 8) for b in (128, 192, 384)}
        shapes.clear()
        got = answer(laddered, tokenizer, examples, SquadParams(), 8, truncate_question=True)
        one = answer(laddered, tokenizer, examples[:1], SquadParams(), 8, truncate_question=True)
    assert shapes[-1][0] == 1  # the lone question ran one row
    assert sorted(shapes[:-1]) == [(2, 192), (8, 192)]  # the partial batch ran 2 rows, not 8
    assert [a.text for a in got.answers] == [a.text for a in want.answers]
    np.testing.assert_allclose([a.logit for a in got.answers], [a.logit for a in want.answers], atol=1e-4)
    assert one.answers[0].text == want.answers[0].text
    with pytest.raises(BertrtError, match="batch rows must be between 1 and the batch size"):
        open_backend(embedded_onnx, buckets=(128, 384), batch_size=8, batch_rows=(16,))


def test_feature_chunks_equal_make_features(tokenizer):
    """Chunks made in a background thread or in forked worker processes are make_features' features, field by field."""
    from bertrt.session.answering import SquadParams, feature_chunks, prefetched
    from bertrt.qa.features import make_features
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    examples = examples[:300]
    whole = make_features(examples, tokenizer)
    spent: list[float] = []
    for chunked in (prefetched(feature_chunks(examples, tokenizer, SquadParams(), True, chunk_examples=64)),
                    feature_chunks(examples, tokenizer, SquadParams(), True, chunk_examples=64, spent=spent,
                                   workers=3)):
        got = [f for chunk in chunked for f in chunk]
        assert [(f.example_index, f.span_index, f.token_spans) for f in got] == [
            (f.example_index, f.span_index, f.token_spans) for f in whole]
        for a, b in zip(got, whole):
            for name in ("input_ids", "segment_ids", "max_context"):
                assert np.array_equal(getattr(a, name), getattr(b, name)) and getattr(a, name).dtype == getattr(
                    b, name).dtype
    assert len(spent) == 5  # one timing per chunk, from the workers
    # the tokenizer still works in this process after the forks
    assert [f.input_ids.tolist() for f in make_features(examples[:5], tokenizer)] == [
        f.input_ids.tolist() for f in whole[:len(make_features(examples[:5], tokenizer))]]


# --- varseqlen (onnxruntime packing mode) --------------------------------------------------------------------------
def test_packing_mode_conversion(random_fused, tmp_path, capsys):
    """RemovePadding after the embedding, one PackedAttention per layer, RestorePadding before the QA head; the
    contract (inputs, outputs, bertrt metadata) is kept. onnxruntime has these kernels only on CUDA, so on the CPU
    provider the model is refused in one line (parity with the padded graph is measured on the GPU)."""
    from bertrt.qa_contract import load_qa_model
    from bertrt.surgery.packing import VARSEQLEN_KEY

    unfused, fused, cfg = random_fused(SMALL, "ort")
    out = tmp_path / "model.varseqlen.onnx"
    code, stdout, _ = run_cli(capsys, "varseqlen", "--input", fused, "--output", out)
    assert code == 0, stdout
    model, loaded_cfg = load_qa_model(out)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("RemovePadding") == 1 and ops.count("RestorePadding") == 1
    assert ops.count("PackedAttention") == cfg.num_hidden_layers and "Attention" not in ops
    assert ops.index("RemovePadding") < ops.index("PackedAttention") < ops.index("RestorePadding")
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert loaded_cfg == cfg and {p.key for p in model.metadata_props} >= {VARSEQLEN_KEY}
    assert (tmp_path / "model.varseqlen.onnx.json").exists()

    code, _, err = run_cli(capsys, "infer", "--model", out, "--passage", "TensorRT is fast.", "--question", "What?")
    assert_one_line_error(code, err, "runs only on onnxruntime's CUDA provider")
    code, _, err = run_cli(capsys, "varseqlen", "--input", unfused, "--output", tmp_path / "x.onnx")
    assert_one_line_error(code, err, "needs the `ort` target")
    code, _, err = run_cli(capsys, "varseqlen", "--input", out, "--output", tmp_path / "y.onnx")
    assert_one_line_error(code, err, "already in packing mode")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


# --- perf: JSON schema, CSV, PNG ------------------------------------------------------------------------------------
def test_perf_outputs_schema_csv_and_plot(random_fused, tmp_path, capsys):
    from bertrt.run.perf import PERF_SCHEMA, Timing

    _, fused, _ = random_fused(SMALL, "ort")
    out = tmp_path / "perf.json"
    code, stdout, _ = run_cli(capsys, "perf", "--model", fused, "--batch", "1", "2", "--seq", "16", "--runs", "5",
                              "--warmup", "1", "--output", out)
    assert code == 0, stdout
    data = json.loads(out.read_text())
    assert data["schema"] == PERF_SCHEMA and data["provider"] == "cpu" and data["clock"] == "host"
    fields = set(Timing.__dataclass_fields__)
    assert len(data["timings"]) == 2 and all(set(t) == fields for t in data["timings"])
    for t in data["timings"]:
        assert 0 < t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"] and t["runs"] == 5
        assert t["sequences_per_s"] == pytest.approx(t["batch"] / (t["p50_ms"] / 1e3), rel=1e-3)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [int(r["batch"]) for r in rows] == [1, 2]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perf_plot_of_a_gpu_sweep(tmp_path):
    """The plot of a GPU-sweep-shaped result (several runtimes per model, two models) is written."""
    from bertrt.run.perf import summarize, write_results

    timings = [summarize(m, r, b, s, [0.001 * b * s / 128, 0.0011 * b * s / 128], "cuda-event")
               for m in ("random-bert-base", "random-bert-large") for b in (1, 8) for s in (128, 384)
               for r in ("ort-iobinding", "ort-cuda-graph", "torch-eager")]
    write_results(timings, tmp_path / "p.json", {"provider": "cuda", "clock": "cuda-event"})
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "p.json").read_text())["timings"]) == 24


# --- bad input ----------------------------------------------------------------------------------------------------
def test_bad_gpu_input_one_line(embedded_onnx, capsys, tmp_path):
    import onnxruntime as ort

    base = ["--model", embedded_onnx, "--passage", "TensorRT is fast.", "--question", "What is fast?"]
    code, _, err = run_cli(capsys, "infer", *base, "--buckets", "128,256")
    assert_one_line_error(code, err, "cannot hold the max sequence length 384")
    code, _, err = run_cli(capsys, "infer", *base, "--buckets", "128,abc")
    assert_one_line_error(code, err, "comma-separated integers")
    code, _, err = run_cli(capsys, "infer", *base, "--cuda-graph")
    assert_one_line_error(code, err, "CUDA graphs need the CUDA provider")
    code, _, err = run_cli(capsys, "perf", "--output", tmp_path / "p.json")
    assert_one_line_error(code, err, "no model given")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        code, _, err = run_cli(capsys, "infer", *base, "--provider", "cuda")
        assert_one_line_error(code, err, "no CUDA execution provider")
        code, _, err = run_cli(capsys, "perf", "--provider", "cuda", "--random-bert", "base",
                               "--output", tmp_path / "p.json")
        assert_one_line_error(code, err, "no CUDA execution provider")
        assert not (tmp_path / "p.json").exists()


def test_post_processing_in_processes_equals_one_process(tokenizer):
    """The forked post-processing (used for large runs) gives exactly the answers of the single-process loop, on
    real dev questions with logits that vary per feature."""
    from bertrt.qa.features import make_features
    from bertrt.qa.postprocess import best_answers
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    examples = examples[:300]
    features = make_features(examples, tokenizer)
    rng = np.random.default_rng(1)
    starts = [rng.standard_normal(f.length).astype(np.float32) for f in features]
    ends = [rng.standard_normal(f.length).astype(np.float32) for f in features]
    one = best_answers(examples, features, starts, ends)
    forked = best_answers(examples, features, starts, ends, workers=3)
    assert forked == one and len({a.text for a in one}) > 100


def test_gpu_sweep_times_runners_through_the_protocol(random_fused, monkeypatch):
    """The GPU sweep opens bertrt's models with `open_backend` and times `run_bound` of device-resident runners;
    here on the CPU provider (the open is redirected; the host clock times) so its logic runs without a GPU."""
    from dataclasses import replace

    from bertrt.run import perf_gpu
    from bertrt.runtimes import open_backend

    _, fused, _ = random_fused(SMALL, "ort")
    opened = []

    def on_cpu(path, options):
        opened.append(options)
        # the CPU default with buckets is the runtime the CUDA provider gets by default: onnxruntime-bound
        return open_backend(path, replace(options, provider="cpu", cuda_stream=None, buckets=(16,)))

    monkeypatch.setattr(perf_gpu, "open_backend", on_cpu)
    model = perf_gpu.GpuModel("tiny", fused)
    timings, clock = perf_gpu.gpu_timings([model], [1, 2], [16], warmup=1, runs=3, cuda_graph=False, peers=False,
                                          log=lambda _: None)
    assert [(t.runtime, t.batch, t.seq, t.runs) for t in timings] == [("ort-iobinding", 1, 16, 3),
                                                                      ("ort-iobinding", 2, 16, 3)]
    assert [o.provider for o in opened] == ["cuda"] and opened[0].cuda_graph is False
    # a runtime that keeps its inputs on the host cannot be timed on the device: refused in one line
    with pytest.raises(BertrtError, match="onnxruntime-cpu keeps its inputs on the host; perf --provider cuda times "
                                          "runtimes with device-resident inputs"):
        perf_gpu.gpu_timings([model], [1], [16], 1, 3, cuda_graph=False, peers=False, log=lambda _: None,
                             options=perf_gpu.RunOptions(provider="cuda", runtime="onnxruntime"))
