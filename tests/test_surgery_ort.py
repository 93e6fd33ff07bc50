"""`ort` surgery: full fusion and parity with the unfused graph for our exports (real and random-weight models of
several shapes) and for Hugging Face exports; clean failure on graphs that are not BERT."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.surgery.pipeline import fusion_report_path, run_surgery
from conftest import HF_FIXTURES
from onnx import TensorProto, helper, numpy_helper
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

from bertrt.artifacts import sha256_file, sidecar_path
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import load_qa_model, stamp


def assert_fully_fused(path: Path, layers: int, gelu: str) -> None:
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["EmbedLayerNormalization"] == 1
    assert ops["SkipLayerNormalization"] == 2 * layers
    assert ops["Attention"] == layers
    assert ops["BiasGelu" if gelu == "erf" else "FastGelu"] == layers
    assert not {"Softmax", "Erf", "Tanh", "ReduceMean", "LayerNormalization", "Gather"} & set(ops)


@pytest.fixture(scope="session")
def real_fused(embedded_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "model.ort.onnx"
    report = run_surgery(embedded_onnx, out, "ort")
    return out, report


def test_real_model_fuses_and_matches_on_squad(embedded_onnx, real_fused, dev_batch, dev_features):
    from bertrt.qa.features import collate

    fused, report = real_fused
    _, cfg = load_qa_model(embedded_onnx, load_weights=False)
    assert_fully_fused(fused, cfg.num_hidden_layers, cfg.gelu)
    assert worst_valid_error(ort_logits(embedded_onnx, dev_batch), ort_logits(fused, dev_batch),
                             dev_batch["input_mask"]) < TOL
    full = collate(dev_features[8:11], 384)  # seq 384 with heavy padding
    assert worst_valid_error(ort_logits(embedded_onnx, full), ort_logits(fused, full), full["input_mask"]) < TOL


def test_report_counts_and_artifacts(real_fused):
    fused, report = real_fused
    assert_report_and_artifacts(fused, report, "ort", layers=6)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize(("batch", "seq"), [(1, 128), (3, 384)])
def test_random_shapes_match(random_fused, shape, batch, seq):
    unfused, fused, cfg = random_fused(shape, "ort")
    assert_fully_fused(fused, cfg.num_hidden_layers, cfg.gelu)
    feed = random_feed(batch, seq, cfg.vocab_size, seed=seq + batch)
    assert worst_valid_error(ort_logits(unfused, feed), ort_logits(fused, feed), feed["input_mask"]) < TOL


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_fixture_fuses_and_matches_torch(tmp_path, name):
    out = tmp_path / "model.ort.onnx"
    report = run_surgery(HF_FIXTURES / name / "model.onnx", out, "ort")
    config = json.loads((HF_FIXTURES / name / "config.json").read_text())
    _, cfg = load_qa_model(out)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.max_position_embeddings) == (config["num_hidden_layers"], config["hidden_size"],
                                             config["num_attention_heads"], config["intermediate_size"],
                                             config["max_position_embeddings"])
    assert cfg.gelu == ("tanh" if name.endswith("tanh") else "erf")
    assert report["source"] == "huggingface"
    assert_fully_fused(out, cfg.num_hidden_layers, cfg.gelu)
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    assert worst_valid_error(ort_logits(out, feed), (ref["start_logits"], ref["end_logits"]), ref["input_mask"]) < TOL


def _save(tmp_path: Path, nodes, inputs, outputs, initializers, cfg: BertConfig | None = None) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if cfg is not None:
        stamp(model, "export", cfg)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def _assert_rejected(path: Path, tmp_path: Path, *words: str) -> None:
    before = sha256_file(path)
    out = tmp_path / "out.onnx"
    with pytest.raises(BertrtError) as info:
        run_surgery(path, out, "ort")
    for word in words:
        assert word in str(info.value)
    assert sha256_file(path) == before
    assert not out.exists() and not fusion_report_path(out).exists() and not sidecar_path(out).exists()


def test_mlp_is_rejected(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    path = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    _assert_rejected(path, tmp_path, "not a BERT QA graph", "inputs ['x']")


def test_contract_mlp_is_rejected_naming_the_block(tmp_path):
    """bertrt I/O and metadata, but no BERT inside: the embeddings block is what did not match."""
    cfg = BertConfig(vocab_size=8, hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
                     max_position_embeddings=8)
    table = numpy_helper.from_array(np.ones((8, 4), np.float32), "table")
    w = numpy_helper.from_array(np.ones((4, 1), np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["e"]),
             helper.make_node("MatMul", ["e", "w"], ["l"]),
             helper.make_node("Squeeze", ["l"], ["start_logits"], ),
             helper.make_node("Cast", ["segment_ids"], ["s"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["input_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["s", "m"], ["end_logits"])]
    path = _save(tmp_path, nodes,
                 [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"])
                  for n in ("input_ids", "segment_ids", "input_mask")],
                 [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"])
                  for n in ("start_logits", "end_logits")], [table, w], cfg)
    _assert_rejected(path, tmp_path, "embeddings", "LayerNorm")


def test_broken_attention_names_layer_and_part(tmp_path):
    """An unknown variant (K not transposed for Q.K^T in layer 1) fails naming that layer and part."""
    model = onnx.load(str(HF_FIXTURES / "hf-l2-h64-a2" / "model.onnx"))
    k_transposes = [n for n in model.graph.node if n.op_type == "Transpose"
                    and list(helper.get_attribute_value(n.attribute[0])) == [0, 2, 3, 1]]
    k_transposes[1].attribute[0].ints[:] = [0, 2, 1, 3]
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    _assert_rejected(path, tmp_path, "layer 1", "K head split")


def test_ort_target_squad_f1_equals_unfused_on_ci_subset(real_fused, tokenizer, tmp_path):
    from bertrt.session.answering import SquadParams
    from bertrt.runtimes import open_backend
    from bertrt.session.squad import run_squad
    from conftest import DEV, require

    expected = json.loads((Path(__file__).parent / "expected" / "accuracy.json").read_text())
    with open_backend(real_fused[0]) as backend:
        report = run_squad(backend, tokenizer, require(DEV), tmp_path / "predictions.json", SquadParams(),
                           batch_size=8, limit=expected["ci_subset_questions"], progress=False)
    assert abs(report["scores"]["f1"] - expected["onnxruntime-fp32"]["f1"]) <= 0.05
