"""Per-precision accuracy guard on the CI subset (first 300 SQuAD v1.1 dev questions), onnxruntime CPU.

Each setting is quantized with `quantize()`'s defaults (shipped SQuAD-train subset, 256 calibration
features) and the calibration method, GEMM exclusions and float precision of the expected file, and scored;
the F1/EM must stay within tolerance of the committed values in tests/expected/precision_accuracy.json. Slow (calibration takes minutes on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bertrt.calibration.quantize import quantize
from conftest import squad_scores

EXPECTED = json.loads((Path(__file__).parent / "expected" / "precision_accuracy.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k in EXPECTED if not k.startswith("_") and k not in ("ci_subset_questions", "tolerance")])
def test_ci_subset_precision_accuracy(name, embedded_onnx, tokenizer, tmp_path):
    expected = EXPECTED[name]
    model = tmp_path / f"model.{name}.onnx"
    exclude = tuple(expected["exclude"]) if "exclude" in expected else None  # None: the precision's default
    quantize(embedded_onnx, model, expected["precision"], calib_method=expected.get("calib_method", "max"),
             calib_num=expected.get("calib_num", 256), exclude=exclude,
             float_precision=expected.get("float_precision"))
    scores = squad_scores(model, tokenizer, tmp_path / "predictions.json", EXPECTED["ci_subset_questions"])
    print(name, scores)
    tol = EXPECTED["tolerance"]
    for key in ("exact_match", "f1"):
        assert expected[key] - tol["drop"] <= scores[key] <= expected[key] + tol["rise"], (key, scores[key], expected)
