"""The `bertrt` command end to end: answers on the real model, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from checkpoints import random_weights, write_checkpoint
from conftest import DEV, EMBEDDED, TENSORRT_PASSAGE, VOCAB, read_dev, require

from bertrt.cli import main
from bertrt.model_config import BertConfig


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_infer_answers_the_classic_question(capsys, embedded_onnx):
    code, out, _ = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage",
                           TENSORRT_PASSAGE, "--question", "What is TensorRT?", "--question",
                           "What does TensorRT include?", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["question"] for r in rows] == ["What is TensorRT?", "What does TensorRT include?"]
    assert rows[0]["answer"] == "a high performance deep learning inference platform"
    assert rows[1]["answer"] == "parsers"
    assert all(0.0 < r["score"] <= 1.0 for r in rows)
    assert TENSORRT_PASSAGE[rows[0]["char_start"]:rows[0]["char_end"]] == rows[0]["answer"]


def test_infer_keeps_decomposed_accents(capsys, embedded_onnx):
    """Answers are cut from the passage by offsets: a combining accent after a word's last letter stays."""
    passage = "The meeting took place at the Cafe\u0301 in Paris, owned by Jose\u0301 Garci\u0301a."
    code, out, _ = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage", passage,
                           "--question", "Who owns the cafe?", "--json")
    assert code == 0
    row = json.loads(out)[0]
    assert row["answer"] == "Jose\u0301 Garci\u0301a" == passage[row["char_start"]:row["char_end"]]


def test_infer_long_passage_file_uses_doc_stride(capsys, embedded_onnx, tmp_path):
    # The answer sits past the first 384-token window: only the sliding windows can find it.
    filler = " ".join(["The weather report said nothing of note about the region that day."] * 60)
    passage = tmp_path / "passage.txt"
    passage.write_text(filler + " " + TENSORRT_PASSAGE)
    code, out, _ = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage-file", passage,
                           "--question", "What is TensorRT?", "--json")
    assert code == 0
    row = json.loads(out)[0]
    assert "high performance deep learning inference platform" in row["answer"]
    assert row["char_start"] > len(filler)


@pytest.mark.parametrize("passage,question,needle", [
    ("", "What is TensorRT?", "empty"),
    (TENSORRT_PASSAGE, "   ", "empty"),
    (TENSORRT_PASSAGE, "why " * 70, "question has"),
])
def test_infer_bad_text(capsys, embedded_onnx, passage, question, needle):
    code, _, err = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage", passage,
                           "--question", question)
    assert_one_line_error(code, err, needle)


def test_infer_wrong_vocab(capsys, embedded_onnx, tmp_path):
    short = tmp_path / "vocab.txt"
    short.write_text("\n".join(VOCAB.read_text().splitlines()[:1000]) + "\n")
    code, _, err = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", short, "--passage",
                           TENSORRT_PASSAGE, "--question", "What is TensorRT?")
    assert_one_line_error(code, err, "1000 tokens", "30522")


def test_infer_rejects_models_not_from_bertrt(capsys, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 10)
    code, _, err = run_cli(capsys, "infer", "--model", garbage, "--vocab", VOCAB, "--passage", "x y z",
                           "--question", "q?")
    assert_one_line_error(code, err, "garbage.onnx")
    # A valid ONNX file that is not a bertrt QA model.
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    other = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])],
                                                            "g", [x], [y])), str(other))
    code, _, err = run_cli(capsys, "infer", "--model", other, "--vocab", VOCAB, "--passage", "x y z",
                           "--question", "q?")
    assert_one_line_error(code, err, "relu.onnx", "not a BERT QA model from bertrt")


def test_squad_subset_writes_predictions_and_scores(capsys, embedded_onnx, tmp_path):
    out = tmp_path / "p" / "predictions.json"
    code, stdout, _ = run_cli(capsys, "squad", "--model", embedded_onnx, "--vocab", VOCAB, "--squad-json",
                              require(DEV), "--output", out, "--limit", 20, "--no-progress")
    assert code == 0 and "EM" in stdout
    predictions = json.loads(out.read_text())
    assert len(predictions) == 20 and all(isinstance(v, str) for v in predictions.values())
    report = json.loads(out.with_name("predictions.eval.json").read_text())
    assert report["questions"] == 20 and report["scores"]["total"] == 20
    assert 50.0 < report["scores"]["f1"] <= 100.0


def test_squad_rejects_non_squad_json(capsys, embedded_onnx, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "x"}]}))
    out = tmp_path / "predictions.json"
    code, _, err = run_cli(capsys, "squad", "--model", embedded_onnx, "--vocab", VOCAB, "--squad-json", bad,
                           "--output", out)
    assert_one_line_error(code, err, "bad.json")
    assert not out.exists()


# --- export errors: one line, exit 2, nothing written, the previous artifact kept -------------------------------
@pytest.fixture()
def previous_output(tmp_path) -> Path:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous artifact")
    return out


def assert_export_fails(capsys, previous: Path, needles: tuple[str, ...], *argv) -> None:
    code, _, err = run_cli(capsys, "export", *argv, "--output", previous)
    assert_one_line_error(code, err, *needles)
    assert previous.read_bytes() == b"previous artifact"
    assert [p.name for p in previous.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)


def test_export_directory_without_checkpoint(capsys, previous_output, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bert_config.json").write_text((EMBEDDED / "bert_config.json").read_text())
    assert_export_fails(capsys, previous_output, ("no TF checkpoint",), "--checkpoint", empty)


def test_export_missing_variable(capsys, previous_output, tmp_path):
    weights = random_weights(TINY)
    del weights["bert/encoder/layer_1/attention/self/key/bias"]
    ckpt = write_checkpoint(tmp_path / "ckpt", TINY, weights)
    assert_export_fails(capsys, previous_output, ("missing variable", "layer_1/attention/self/key/bias"),
                        "--checkpoint", ckpt)


def test_export_wrong_shape(capsys, previous_output, tmp_path):
    weights = random_weights(TINY)
    weights["bert/encoder/layer_0/output/dense/kernel"] = np.zeros((64, 31), np.float32)
    ckpt = write_checkpoint(tmp_path / "ckpt", TINY, weights)
    assert_export_fails(capsys, previous_output, ("layer_0/output/dense/kernel", "[64, 31]", "[64, 32]"),
                        "--checkpoint", ckpt)


def test_export_config_disagrees_with_checkpoint(capsys, previous_output, tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", TINY, random_weights(TINY))
    config = json.loads((ckpt / "bert_config.json").read_text())
    config["num_hidden_layers"] = 3
    (ckpt / "bert_config.json").write_text(json.dumps(config))
    assert_export_fails(capsys, previous_output, ("2 encoder layers", "num_hidden_layers=3"), "--checkpoint", ckpt)


def test_export_vocab_size_differs_from_config(capsys, previous_output, tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", TINY, random_weights(TINY))
    (ckpt / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    assert_export_fails(capsys, previous_output, ("6 tokens", "50"), "--checkpoint", ckpt)


def test_export_corrupt_checkpoint(capsys, previous_output, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(EMBEDDED, ckpt)
    data = ckpt / "model.ckpt.data-00000-of-00001"
    data.chmod(0o644)
    data.write_bytes(data.read_bytes()[:1000])
    assert_export_fails(capsys, previous_output, ("model.ckpt",), "--checkpoint", ckpt)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="checkpoint not found"):
        main(["--debug", "export", "--checkpoint", str(tmp_path / "nope"), "--output", str(tmp_path / "m.onnx")])


def test_surgery_rejects_a_graph_that_is_not_bert(capsys, tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    other = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])],
                                                            "g", [x], [y])), str(other))
    before = other.read_bytes()
    out = tmp_path / "fused.onnx"
    code, _, err = run_cli(capsys, "surgery", "--input", other, "--output", out, "--target", "ort")
    assert_one_line_error(code, err, "relu.onnx")
    assert other.read_bytes() == before and not out.exists()
    code, _, err = run_cli(capsys, "surgery", "--input", other, "--output", out, "--target", "tensorrt")
    assert_one_line_error(code, err, "unknown surgery target")


def test_squad_v2_file_scores_no_answer_questions(capsys, embedded_onnx, tmp_path):
    """A SQuAD v2.0 file (real dev text; one question made unanswerable) goes through the v2 metrics."""
    data = read_dev()
    paragraph = data["data"][0]["paragraphs"][0]
    qas = paragraph["qas"][:3]
    qas.append({"id": "unanswerable-1", "question": "What colour is the moon of Neptune's cheese?", "answers": [],
                "is_impossible": True})
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": paragraph["context"], "qas": qas}]}]}))
    out = tmp_path / "predictions.json"
    code, _, _ = run_cli(capsys, "squad", "--model", embedded_onnx, "--vocab", VOCAB, "--squad-json", v2,
                         "--output", out, "--no-progress", "--null-score-diff-threshold", "-1000")
    assert code == 0
    report = json.loads(out.with_name("predictions.eval.json").read_text())
    scores = report["scores"]
    assert report["squad_version"] == "2.0"
    assert scores["total"] == 4 and scores["HasAns_total"] == 3 and scores["NoAns_total"] == 1
    # A threshold far below every score difference predicts "no answer" everywhere: only the v2 question is right.
    assert json.loads(out.read_text()) == {q["id"]: "" for q in qas}
    assert scores["NoAns_exact"] == 100.0 and scores["HasAns_exact"] == 0.0
    assert set(json.loads(out.with_name("predictions.na_probs.json").read_text())) == {q["id"] for q in qas}
