"""Accuracy guards on real SQuAD v1.1 dev questions (onnxruntime fp32 on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import squad_scores

EXPECTED = json.loads((Path(__file__).parent / "expected" / "accuracy.json").read_text())
# Any drop fails. A rise beyond noise also fails, so that the committed value gets updated with the change.
DROP_TOL, RISE_TOL = 0.01, 0.5


def test_ci_subset_accuracy_fp32(embedded_onnx, tokenizer, tmp_path):
    expected = EXPECTED["onnxruntime-fp32"]
    scores = squad_scores(embedded_onnx, tokenizer, tmp_path / "predictions.json", EXPECTED["ci_subset_questions"])
    for key in ("exact_match", "f1"):
        assert expected[key] - DROP_TOL <= scores[key] <= expected[key] + RISE_TOL, (key, scores[key])


@pytest.mark.slow
def test_full_dev_matches_model_card(embedded_onnx, tokenizer, tmp_path):
    card = EXPECTED["model_card_full_dev"]
    scores = squad_scores(embedded_onnx, tokenizer, tmp_path / "predictions.json", None)
    assert scores["total"] == 10570
    for key in ("exact_match", "f1"):
        assert abs(scores[key] - card[key]) <= 0.3, (key, scores[key], card[key])
