"""`native` surgery: plain opset-17 ONNX in the forms TensorRT fuses by itself (LayerNormalization, one GELU form
with its bias next to the MatMul, packed-QKV MatMul -> Add(mask) -> Softmax -> MatMul attention). Parity with the
unfused graph on onnxruntime CPU for the real model (real SQuAD features) and random-weight exports of several
shapes, parity with torch for Hugging Face exports, and the structure TensorRT's fusions look for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from bertrt.surgery.pipeline import run_surgery
from conftest import HF_FIXTURES
from onnx import numpy_helper
from surgery_common import (
    HF_NAMES,
    SHAPES,
    TOL,
    assert_report_and_artifacts,
    ort_logits,
    random_feed,
    shape_id,
    worst_valid_error,
)

from bertrt.qa_contract import load_qa_model


def assert_native(model: Path | onnx.ModelProto, layers: int, gelu: str) -> None:
    """Op counts, opset/domains and the per-layer shapes TensorRT's fusions need."""
    model = onnx.load(str(model)) if isinstance(model, Path) else model
    nodes = model.graph.node
    ops = Counter(n.op_type for n in nodes)
    assert {o.domain: o.version for o in model.opset_import}.get("", None) == 17
    assert all(n.domain in ("", "ai.onnx") for n in nodes), {n.domain for n in nodes}
    assert ops["LayerNormalization"] == 1 + 2 * layers
    assert ops["Softmax"] == layers
    assert sum(n.op_type == "Split" and len(n.output) == 3 for n in nodes) == layers  # one packed QKV GEMM a layer
    assert ops["Erf" if gelu == "erf" else "Tanh"] == layers and not ops["Tanh" if gelu == "erf" else "Erf"]
    assert not {"ReduceMean", "Sqrt", "Reciprocal", "Attention"} & set(ops)

    producer = {o: n for n in nodes for o in n.output}
    users: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def op(name: str) -> str | None:
        return producer[name].op_type if name in producer else None

    for n in nodes:
        if n.op_type == "LayerNormalization":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs.get("axis", -1) == -1 and n.input[1] in inits and n.input[2] in inits

    mask_biases = set()
    for softmax in (n for n in nodes if n.op_type == "Softmax"):
        add = producer[softmax.input[0]]
        assert add.op_type == "Add"
        scores_name = next(i for i in add.input if op(i) == "MatMul")
        mask_biases.add(next(i for i in add.input if i != scores_name))
        scores = producer[scores_name]  # Q [B,N,S,H] (scaled) @ K^T [B,N,H,S]
        q = producer[scores.input[0]]
        if q.op_type == "Mul":
            q = producer[q.input[0]]
        k = producer[scores.input[1]]
        assert q.op_type == "Transpose" and list(q.attribute[0].ints) == [0, 2, 1, 3]
        assert k.op_type == "Transpose" and list(k.attribute[0].ints) == [0, 2, 3, 1]
        (context,) = users[softmax.output[0]]
        assert context.op_type == "MatMul" and context.input[0] == softmax.output[0]
        # Q and K come out of one Split of one bias Add of one MatMul by an [E, 3E] weight
        splits = {producer[producer[t.input[0]].input[0]].name for t in (q, k)}
        assert len(splits) == 1
        split = producer[producer[q.input[0]].input[0]]
        assert split.op_type == "Split" and op(split.input[0]) == "Add"
        gemm = producer[producer[split.input[0]].input[0]]
        weight = inits[gemm.input[1]]
        assert gemm.op_type == "MatMul" and weight.shape[1] == 3 * weight.shape[0]
    assert len(mask_biases) == 1  # one additive mask bias shared by every layer

    for nonlinearity in (n for n in nodes if n.op_type in ("Erf", "Tanh")):
        x = nonlinearity
        while x.op_type != "Add" or op(x.input[0]) != "MatMul":  # walk back to the bias Add of the dense
            x = producer[x.input[0]]
        assert x.input[1] in inits and producer[x.input[0]].input[1] in inits


@pytest.fixture(scope="session")
def real_native(embedded_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-native") / "model.native.onnx"
    return out, run_surgery(embedded_onnx, out, "native")


def test_real_model_matches_on_squad(embedded_onnx, real_native, dev_batch, dev_features):
    from bertrt.qa.features import collate

    native, _ = real_native
    _, cfg = load_qa_model(embedded_onnx, load_weights=False)
    assert_native(native, cfg.num_hidden_layers, cfg.gelu)
    assert worst_valid_error(ort_logits(embedded_onnx, dev_batch), ort_logits(native, dev_batch),
                             dev_batch["input_mask"]) <= TOL
    full = collate(dev_features[8:11], 384)  # seq 384 with heavy padding
    assert worst_valid_error(ort_logits(embedded_onnx, full), ort_logits(native, full), full["input_mask"]) <= TOL


def test_report_counts_and_artifacts(real_native):
    native, report = real_native
    assert_report_and_artifacts(native, report, "native", layers=6)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize(("batch", "seq"), [(1, 128), (3, 384)])
def test_random_shapes_match(random_fused, shape, batch, seq):
    unfused, native, cfg = random_fused(shape, "native")
    assert_native(native, cfg.num_hidden_layers, cfg.gelu)
    feed = random_feed(batch, seq, cfg.vocab_size, seed=seq + batch)
    assert worst_valid_error(ort_logits(unfused, feed), ort_logits(native, feed), feed["input_mask"]) <= TOL


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_fixture_matches_torch(tmp_path, name):
    out = tmp_path / "model.native.onnx"
    report = run_surgery(HF_FIXTURES / name / "model.onnx", out, "native")
    _, cfg = load_qa_model(out)
    assert report["source"] == "huggingface"
    assert_native(out, cfg.num_hidden_layers, cfg.gelu)
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    assert worst_valid_error(ort_logits(out, feed), (ref["start_logits"], ref["end_logits"]), ref["input_mask"]) <= TOL


def test_onnx_attention_option_matches():
    """The opset-23 Attention form (reached through emit; run_surgery passes no options to this target yet)."""
    from bertrt.surgery import emit_native
    from bertrt.surgery.match_model import match_model
    from bertrt.surgery.prepare import infer_config, prepare

    source = HF_FIXTURES / "hf-l2-h64-a2" / "model.onnx"
    prepared = prepare(source)
    matches = match_model(prepared.graph, prepared.cfg)
    fused = emit_native.emit(prepared.graph, matches, infer_config(matches), attention="onnx-attention")
    assert fused == {"embedding": 1, "skip_layernorm": 4, "attention": 2, "gelu": 2}
    prepared.graph.cleanup().toposort()
    model = gs.export_onnx(prepared.graph, ir_version=prepared.ir_version)
    onnx.checker.check_model(model)
    ops = Counter(n.op_type for n in model.graph.node)
    assert {o.domain: o.version for o in model.opset_import}[""] == 23
    assert ops["Attention"] == 2 and not ops["Softmax"] and ops["LayerNormalization"] == 5
    ref = np.load(HF_FIXTURES / "hf-l2-h64-a2" / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    assert worst_valid_error(ort_logits(model.SerializeToString(), feed), (ref["start_logits"], ref["end_logits"]),
                             ref["input_mask"]) <= TOL
