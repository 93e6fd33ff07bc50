"""`bertrt export` of a Hugging Face folder of every family (tests/fixtures/families/*/hf: safetensors; ELECTRA's
sharded with its index), the tokenizer travelling with the model through surgery, quantize, an engine sidecar and a
Triton repository, and infer / squad / compare without --vocab at the model's own maximum length."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bertrt.export.onnx_export import export
from bertrt.runtimes.onnxruntime import ort_session
from bertrt.serve.repository import Batching, ServingParams, write_repository
from bertrt.surgery.pipeline import run_surgery
from surgery_common import TOL, worst_valid_error
from test_cli import assert_one_line_error, run_cli

from bertrt.artifacts import sidecar_path
from bertrt.qa.tokenizer import META_TOKENIZER, load_tokenizer, tokenizer_for, tokenizer_json
from bertrt.qa_contract import load_qa_model, metadata
from bertrt.session import RunOptions, SquadParams

FIXTURES = Path(__file__).parent / "fixtures" / "families"
SAMPLE = Path(__file__).parent.parent / "notebooks" / "data" / "squad-dev-sample.json"
NAMES = ("bert-cased", "roberta", "xlm-roberta", "distilbert", "electra")
OUTPUTS = ["start_logits", "end_logits"]


def torch_error(model: Path, name: str) -> float:
    ref = np.load(FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    feed["input_ids"] = np.where(feed["input_mask"] == 1, feed["input_ids"], 0)
    logits = ort_session(model, threads=1).run(OUTPUTS, feed)
    return worst_valid_error(logits, (ref["start_logits"], ref["end_logits"]), feed["input_mask"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exported")
    return {name: export(FIXTURES / name / "hf", out / f"{name}.onnx") for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_torch_and_carries_the_tokenizer(exported, name, tmp_path):
    model, cfg = load_qa_model(exported[name])
    error = torch_error(exported[name], name)
    print(f"export vs torch: {name} {error:.2e}")  # docs/families.md (pytest -s)
    assert error <= TOL
    assert cfg.family == ("bert" if name == "bert-cased" else name)
    own = load_tokenizer(FIXTURES / name / "hf")
    assert tokenizer_for(exported[name]).encode("Super Bowl 50").ids == own.encode("Super Bowl 50").ids
    if name != "bert-cased":
        assert json.loads(sidecar_path(exported[name]).read_text())["parameters"]["builder"] == "onnx"
    for target in ("ort", "native"):
        fused = tmp_path / f"{name}.{target}.onnx"
        run_surgery(exported[name], fused, target)
        assert torch_error(fused, name) <= TOL
        assert metadata(load_qa_model(fused)[0])[META_TOKENIZER] == metadata(model)[META_TOKENIZER]


def test_pickled_weights_are_refused_without_torch(capsys, tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed: pytorch_model.bin is loaded with weights_only=True")
    except ImportError:
        pass
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURES / "roberta" / "hf", folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    code, _, err = run_cli(capsys, "export", "--checkpoint", folder, "--output", tmp_path / "m.onnx")
    assert_one_line_error(code, err, "pickled weights are not loaded without torch", "weights_only=True")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("model_type", "needle"), [("deberta-v2", "relative-position"), ("albert", "sharing")])
def test_other_family_folder_is_refused_in_one_line(capsys, tmp_path, model_type, needle):
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURES / "bert-cased" / "hf", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type=model_type)))
    code, _, err = run_cli(capsys, "export", "--checkpoint", folder, "--output", tmp_path / "m.onnx")
    assert_one_line_error(code, err, f"model family {model_type!r} is not supported", needle)


def test_folder_without_a_qa_head_is_refused_in_one_line(capsys, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURES / "roberta" / "hf", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["RobertaForMaskedLM"])))
    code, _, err = run_cli(capsys, "export", "--checkpoint", folder, "--output", tmp_path / "m.onnx")
    assert_one_line_error(code, err, "no question-answering head", "RobertaForQuestionAnswering")


def test_pipeline_without_vocab_at_the_models_own_length(capsys, exported, tmp_path):
    """RoBERTa (64 usable positions): surgery -> int8 -> infer and squad with no --vocab and no --seq-len; an
    explicit longer --seq-len is one line."""
    fused, int8 = tmp_path / "model.ort.onnx", tmp_path / "model.int8.onnx"
    assert run_cli(capsys, "surgery", "--input", exported["roberta"], "--output", fused, "--target", "ort")[0] == 0
    assert run_cli(capsys, "quantize", "--input", fused, "--output", int8, "--precision", "int8",
                   "--calib-num", "8")[0] == 0
    passage = json.loads(SAMPLE.read_text())["data"][0]["paragraphs"][0]["context"]
    for model in (fused, int8):
        code, out, err = run_cli(capsys, "infer", "--model", model, "--passage", passage, "--question",
                                 "Who won Super Bowl 50?", "--json", "--threads", "1")
        assert code == 0, err
        answer = json.loads(out)[0]
        assert answer["answer"] == passage[answer["char_start"]:answer["char_end"]] and answer["answer"]
    code, out, err = run_cli(capsys, "squad", "--model", int8, "--squad-json", SAMPLE, "--output",
                             tmp_path / "pred.json", "--threads", "1", "--no-progress")
    assert code == 0, err
    predictions = json.loads((tmp_path / "pred.json").read_text())
    assert len(predictions) == 25
    code, _, err = run_cli(capsys, "infer", "--model", fused, "--passage", passage, "--question", "Who?",
                           "--seq-len", "128")
    assert_one_line_error(code, err, "128 exceeds the model's 64 positions")
    code, out, err = run_cli(capsys, "compare", exported["roberta"], fused, "--squad-json", SAMPLE, "--threads", "1")
    assert code == 0, err


def test_tokenizer_travels_into_engine_sidecar_and_triton_repository(exported, tmp_path):
    fused = tmp_path / "model.ort.onnx"
    run_surgery(exported["xlm-roberta"], fused, "ort")
    text = tokenizer_json(tokenizer_for(fused))
    engine = tmp_path / "model.engine"  # what build writes beside an engine (EngineRecord.write(tokenizer=...))
    engine.write_bytes(b"engine")
    sidecar_path(engine).write_text(json.dumps({"stage": "build", "tokenizer": text}))
    assert tokenizer_json(tokenizer_for(engine)) == text
    params = ServingParams("", "", SquadParams(), RunOptions(provider="cpu", batch_size=4), max_input_bytes=100_000)
    repo = write_repository(tmp_path / "repo", fused, None, Batching(4, 100, 1), params)
    assert (repo / "bertrt_qa" / "1" / "tokenizer.json").read_text() == text
    config = (repo / "bertrt_qa" / "config.pbtxt").read_text()  # the model's 128 positions, not 384
    assert 'key: "max_seq_length"\n  value {\n    string_value: "128"' in config


def test_perf_times_a_short_model_at_its_own_maximum(capsys, exported, tmp_path):
    """perf's default lengths (128, 384) become the model's 64 positions; an explicit 128 is one line."""
    out = tmp_path / "perf.json"
    code, stdout, err = run_cli(capsys, "perf", "--model", exported["roberta"], "--batch-size", "1", "--runs", "1",
                                "--warmup", "0", "--threads", "1", "--output", out)
    assert code == 0, err
    assert {row["seq"] for row in json.loads(out.read_text())["timings"]} == {64}
    code, _, err = run_cli(capsys, "perf", "--model", exported["roberta"], "--seq-len", "128", "--runs", "1",
                           "--output", tmp_path / "p2.json")
    assert_one_line_error(code, err, "128 exceeds the model's 64 positions")


def test_engine_is_built_at_the_models_positions_and_carries_the_tokenizer(capsys, exported, tmp_path):
    """TensorRT-RTX (builds on the CPU): the default profile is the model's 64 positions, not 384; the sidecar holds
    the tokenizer, so an engine needs no --vocab either."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX (pip extra rtx)")
    fused, engine = tmp_path / "model.native.onnx", tmp_path / "model.engine"
    run_surgery(exported["roberta"], fused, "native")
    code, _, err = run_cli(capsys, "build", "--model", fused, "--output", engine)
    assert code == 0, err
    record = json.loads(sidecar_path(engine).read_text())
    assert record["engine"]["profiles"][0]["seq"] == [64, 64, 64]
    assert tokenizer_json(tokenizer_for(engine)) == tokenizer_json(tokenizer_for(fused))
