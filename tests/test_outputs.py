"""Consistent outputs: artifacts beside their input by default, human text by default and one JSON document with
--json, both clocks in `squad`'s summary, `compare` on the shipped dev set by default or on synthetic inputs."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import TENSORRT_PASSAGE
from test_cli import run_cli
from test_quantize_hf import hf_native  # noqa: F401 (a fixture: the small `native` HF models)


@pytest.fixture(scope="module")
def workdir(embedded_onnx, tmp_path_factory):
    """A copy of the embedded export (and its sidecar) in a folder of its own: defaults land beside it."""
    root = tmp_path_factory.mktemp("outputs")
    for path in (embedded_onnx, embedded_onnx.with_name(embedded_onnx.name + ".json")):
        shutil.copy(path, root / path.name)
    return root


def test_surgery_writes_beside_its_input(capsys, workdir):
    code, out, _ = run_cli(capsys, "surgery", "--input", workdir / "model.onnx", "--target", "native", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["output"] == str(workdir / "model.native.onnx") and (workdir / "model.native.onnx").is_file()
    assert report["blocks"]["attention"]["fused"] == report["blocks"]["attention"]["expected"]


def test_quantize_output_is_optional_and_text_by_default(capsys, workdir):
    source = workdir / "model.native.onnx"
    if not source.exists():
        run_cli(capsys, "surgery", "--input", workdir / "model.onnx", "--target", "native")
    code, out, _ = run_cli(capsys, "quantize", "--input", source, "--precision", "fp16")
    assert code == 0 and (workdir / "model.native.fp16.onnx").is_file()
    assert out.startswith("fp16 native model") and "{" not in out
    assert out.rstrip().endswith(f"wrote {workdir / 'model.native.fp16.onnx'} (+ model.native.fp16.onnx.json)")


def test_squad_json_both_clocks_and_predictions_beside_the_model(capsys, workdir):
    code, out, _ = run_cli(capsys, "squad", "--model", workdir / "model.onnx", "--limit", 10, "--no-progress")
    assert code == 0
    assert "end to end:" in out and "model time:" in out and out.count("features/s") == 2
    assert (workdir / "model.predictions.json").is_file() and (workdir / "model.predictions.eval.json").is_file()
    (workdir / "model.predictions.json").unlink()
    code, out, _ = run_cli(capsys, "squad", "--model", workdir / "model.onnx", "--limit", 10, "--json")
    report = json.loads(out)
    assert code == 0 and report["questions"] == 10 and report["output"] == str(workdir / "model.predictions.json")
    # The two clocks: model time is a part of the wall time, so its rate is the higher one.
    assert report["features_per_second"] >= report["wall_features_per_second"] > 0
    assert report["model_seconds"] <= report["wall_seconds"]


def test_compare_defaults_to_the_shipped_dev_set(capsys, workdir, embedded_native):
    code, out, _ = run_cli(capsys, "compare", workdir / "model.onnx", embedded_native, "--num-features", 4,
                           "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["inputs"] == "SQuAD features of dev-v1.1.json.gz"
    assert [r["tensor"] for r in report["rows"]] == ["start_logits", "end_logits"]


def test_compare_synthetic_needs_no_data(capsys, workdir, embedded_native, tmp_path):
    """--synthetic: Polygraphy's data loader feeds random token ids; no SQuAD file or vocab is read (a config
    whose data and vocab point nowhere proves it)."""
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  vocab: /nowhere/vocab.txt\ndata:\n  dev: /nowhere/dev.json\n")
    code, out, err = run_cli(capsys, "compare", workdir / "model.onnx", embedded_native, "--synthetic",
                             "--num-features", 3, "--batch-size", 2, "--seq-len", 64, "--config", config)
    assert code == 0, err
    assert "synthetic features (Polygraphy data loader)" in out and "FAIL" not in out


def test_synthetic_batches_cover_the_vocab():
    from bertrt.run.compare import synthetic_batches

    batches = synthetic_batches(vocab_size=100, num_features=5, batch_size=2, seq_len=16)
    assert [b["input_ids"].shape for b in batches] == [(2, 16), (2, 16), (1, 16)]
    ids = [b["input_ids"] for b in batches]
    assert all(i.dtype.name == "int32" and i.min() >= 0 and i.max() <= 99 for i in ids)
    assert all(set(b["input_mask"].ravel()) == {1} and set(b["segment_ids"].ravel()) <= {0, 1} for b in batches)


def test_perf_writes_beside_the_first_model(capsys, workdir):
    code, out, _ = run_cli(capsys, "perf", "--model", workdir / "model.onnx", "--batch", 1, "--seq", 16,
                           "--runs", 2, "--warmup", 0, "--json")
    report = json.loads(out)
    assert code == 0 and report["outputs"][0] == str(workdir / "model.perf.json")
    assert (workdir / "model.perf.csv").is_file() and report["timings"][0]["batch"] == 1


def test_infer_with_everything_default_but_the_model(capsys, workdir):
    code, out, _ = run_cli(capsys, "infer", "--model", workdir / "model.onnx", "--passage", TENSORRT_PASSAGE,
                           "--question", "What is TensorRT?")
    assert code == 0 and "deep learning inference platform" in out


def test_help_shows_defaults(capsys):
    from bertrt.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    perf = " ".join(sub["perf"].format_help().split())
    assert "(default: 1 8)" in perf and "(default: 128 384)" in perf and "(default: 20)" in perf
    assert "out/<config>/model.onnx" not in perf  # perf has no default model
    export = " ".join(sub["export"].format_help().split())
    assert "17 up to the newest the installed tf2onnx converts" in export


def test_build_json_is_the_engine_record(capsys, hf_native, tmp_path):
    """`bertrt build --json`: stdout is one JSON document (the engine's sidecar record), the build's log on stderr."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed")
    model = tmp_path / "model.native.onnx"
    shutil.copy(hf_native("hf-l2-h64-a2"), model)
    code, out, err = run_cli(capsys, "build", "--model", model, "--runtime", "tensorrt-rtx", "--profile",
                             "batch=1:1:1,seq=64", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["output"] == str(tmp_path / "model.native.engine") and record["engine"]["target"] == "native"
    assert "parsed" in err and (tmp_path / "model.native.engine").is_file()
