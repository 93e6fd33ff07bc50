"""Accuracy guards on real SQuAD v1.1 dev questions (onnxruntime fp32 on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertrt.run.answering import SquadParams
from bertrt.run.backends import open_backend
from bertrt.run.squad_eval import run_squad
from conftest import DEV, require

EXPECTED = json.loads((Path(__file__).parent / "expected" / "accuracy.json").read_text())
# Any drop fails. A rise beyond noise also fails, so that the committed value gets updated with the change.
DROP_TOL, RISE_TOL = 0.01, 0.5


def squad_scores(model: Path, tokenizer, output: Path, limit: int | None) -> dict:
    with open_backend(model) as backend:
        report = run_squad(backend, tokenizer, require(DEV), output, SquadParams(), batch_size=8, limit=limit,
                           progress=False)
    print(json.dumps({k: report[k] for k in ("questions", "features", "scores", "wall_seconds",
                                             "features_per_second")}))
    return report["scores"]


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
