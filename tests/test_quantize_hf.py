"""`bertrt quantize` on the `native` target of the Hugging Face fixtures (transformers exports): a float32-min
mask bias that overflows FP16, and a model with fewer positions (128) than the calibration default (384)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.calibration.quantize import quantize
from bertrt.surgery.pipeline import run_surgery
from conftest import HF_FIXTURES
from onnx import TensorProto
from surgery_common import ort_logits, worst_valid_error
from test_quantize import _fails

from bertrt.qa_contract import load_qa_model

# FP16 logits vs torch's (fp32) on the valid positions of the fixture's padded batch; random-weight logits are
# O(1). Measured 2026-11-29 (onnxruntime 1.23.2 CPU): 0.0137 (hf-l4-h128-a4), 0.0135 (hf-l2-h64-a2).
FP16_TOL = 0.05


@pytest.fixture(scope="module")
def hf_native(tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(name) / "model.native.onnx"
            run_surgery(HF_FIXTURES / name / "model.onnx", out, "native")
            cache[name] = out
        return cache[name]

    return get


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def fp16_round_trips(model: onnx.ModelProto) -> list[str]:
    """FP32 tensors that are cast to FP16 and straight back to FP32 (a lossy no-op)."""
    typed = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    producer = {o: n for n in model.graph.node for o in n.output}
    trips = []
    for n in model.graph.node:
        first = producer.get(n.input[0]) if n.op_type == "Cast" else None
        if (_cast_to(n) == TensorProto.FLOAT and first is not None and _cast_to(first) == TensorProto.FLOAT16
                and elem.get(first.input[0]) == TensorProto.FLOAT):
            trips.append(first.input[0])
    return trips


@pytest.mark.parametrize("name", ["hf-l4-h128-a4", "hf-l2-h64-a2"])
def test_fp16_of_hf_native_keeps_the_mask_bias_fp32(hf_native, tmp_path, name):
    """Regression for issue 11: the FP16 graph is SSA (onnxruntime 1.31's converter gave each FP32-kept consumer
    of the mask bias its own Cast with one shared output name, which onnx 1.23 rejects), and nodes kept in FP32
    pass FP32 to each other (every converter version round-tripped the float32-min bias through FP16, -inf)."""
    out = tmp_path / "model.fp16.onnx"
    report = quantize(hf_native(name), out, "fp16", vocab=HF_FIXTURES / name / "vocab.txt")
    model = onnx.load(str(out))
    outputs = [o for n in model.graph.node for o in n.output if o]
    assert len(outputs) == len(set(outputs)), "graph is not SSA"
    onnx.checker.check_model(model, full_check=True)
    assert not fp16_round_trips(model)
    # The mask bias (0 / float32 min) overflows FP16: kept FP32, and read in FP32 by every layer's masked scores.
    kept = set(report["overflow_amax"])
    masked = [n for n in model.graph.node if n.name in kept and n.op_type == "Add"]
    _, cfg = load_qa_model(out, load_weights=False)
    assert "mask_bias" in kept and len(masked) == cfg.num_hidden_layers
    producer = {o: n for n in model.graph.node for o in n.output}
    assert all(any(producer[x].name == "mask_bias" for x in n.input if x in producer) for n in masked)
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    err = worst_valid_error(ort_logits(out, feed), (ref["start_logits"], ref["end_logits"]), ref["input_mask"])
    print(f"{name} fp16 vs torch: worst valid-position error {err:.4f}")
    assert err <= FP16_TOL


def test_calibration_length_clamped_to_model_positions(hf_native, tmp_path):
    """hf-l4-h128-a4 has 128 positions: calibration runs at 128 (not the 384 default, which failed deep inside
    onnxruntime) and says so in its report and sidecar."""
    name = "hf-l4-h128-a4"
    out = tmp_path / "model.int8.onnx"
    report = quantize(hf_native(name), out, "int8", calib_num=8, vocab=HF_FIXTURES / name / "vocab.txt")
    assert report["calib_seq_len"] == 128
    assert json.loads(Path(f"{out}.json").read_text())["parameters"]["calib_seq_len"] == 128
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    start, end = ort_logits(out, feed)
    assert np.isfinite(start).all() and np.isfinite(end).all()


def test_calibration_length_over_model_positions_is_refused(hf_native, tmp_path):
    name = "hf-l4-h128-a4"
    _fails(tmp_path, hf_native(name), precision="int8", seq_len=384, vocab=HF_FIXTURES / name / "vocab.txt",
           match="calibration sequence length 384 exceeds the model's 128 positions")


def test_cli_flags_reach_the_former_default_and_refuse_long_calibration(hf_native, tmp_path, capsys):
    """`--int8-exclude none --float-precision fp32` is the former INT8 default (every GEMM, FP32 float parts);
    a calibration length over the model's positions is one line on stderr, exit 2, nothing written."""
    from test_cli import assert_one_line_error, run_cli

    name = "hf-l4-h128-a4"
    vocab = HF_FIXTURES / name / "vocab.txt"
    out = tmp_path / "model.int8.onnx"
    code, stdout, _ = run_cli(capsys, "quantize", "--input", hf_native(name), "--output", out, "--precision", "int8",
                              "--calib-num", "8", "--vocab", vocab, "--int8-exclude", "none",
                              "--float-precision", "fp32", "--json")
    assert code == 0
    report = json.loads(stdout[:stdout.rindex("}") + 1])
    assert report["excluded_nodes"] == 0 and report["float_precision"] == "fp32" and "fp16" not in report
    model = onnx.load(str(out))
    producer = {o: n for n in model.graph.node for o in n.output}
    gemms = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert gemms and all(producer[x].op_type == "DequantizeLinear" for g in gemms for x in g.input[:2])
    bad = tmp_path / "bad.onnx"
    code, _, err = run_cli(capsys, "quantize", "--input", hf_native(name), "--output", bad, "--precision", "int8",
                           "--vocab", vocab, "--calib-seq-len", "384")
    assert_one_line_error(code, err, "calibration sequence length 384 exceeds the model's 128 positions")
    assert not bad.exists()
