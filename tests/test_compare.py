"""`bertrt compare`: worst errors between two models on real SQuAD features, exit code 1 over tolerance."""

from __future__ import annotations

import re

from conftest import DEV, EMBEDDED, VOCAB, require

from bertrt.cli import main


def compare_cli(capsys, *argv) -> tuple[int, str]:
    code = main(["compare", *map(str, argv), "--vocab", str(VOCAB), "--squad-json", str(require(DEV)),
                 "--num-features", "4", "--batch-size", "2", "--seq-len", "256"])
    return code, capsys.readouterr().out


def worst(out: str, tensor: str) -> float:
    return float(re.search(rf"^{tensor}\s+(\S+)", out, re.M).group(1))


def test_checkpoint_vs_export(capsys, embedded_onnx):
    code, out = compare_cli(capsys, EMBEDDED, embedded_onnx, "--runtime", "onnxruntime")  # the export's parity
    assert code == 0, out
    assert 0.0 < worst(out, "start_logits") <= 1e-4 and 0.0 < worst(out, "end_logits") <= 1e-4


def test_export_vs_fused_per_layer_and_tolerance(capsys, embedded_onnx, tmp_path):
    from bertrt.surgery.pipeline import run_surgery

    fused = tmp_path / "model.ort.onnx"
    run_surgery(embedded_onnx, fused, "ort")
    capsys.readouterr()
    code, out = compare_cli(capsys, embedded_onnx, fused, "--per-layer")
    assert code == 0, out
    for tensor in ["embeddings"] + [f"layer_{i}" for i in range(6)]:
        assert worst(out, tensor) <= 1e-4
    code, out = compare_cli(capsys, embedded_onnx, fused, "--atol", "1e-9")
    assert code == 1 and "FAIL" in out


def test_fp8_artifact_runs_with_its_session_config(capsys, embedded_native, quantized):
    """compare opens both models through the one backend selection, so the FP8 artifact's onnxruntime session
    config (Q/DQ fusion off) is applied; compare used to build its own session and failed with INVALID_GRAPH."""
    fp8, _ = quantized("fp8", "native")
    code, out = compare_cli(capsys, embedded_native, fp8, "--atol", "5", "--runtime", "onnxruntime")
    assert code == 0, out
    # FP8 changes the logits (an unchanged model would mean the Q/DQ were skipped), within the FP8 test bound.
    assert 1e-3 < worst(out, "start_logits") < 5 and 1e-3 < worst(out, "end_logits") < 5
