"""Export: TF checkpoint / HF safetensors -> ONNX, checked against the TF network and torch references."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.export.onnx_export import export, read_weights, resolve_source
from bertrt.export.tf_model import build_qa_function, run_tf
from bertrt.runtimes.onnxruntime import ort_session
from checkpoints import random_weights, write_checkpoint
from conftest import EMBEDDED, HF_FIXTURES

from bertrt.artifacts import sha256_file, sidecar_path
from bertrt.model_config import BertConfig
from bertrt.qa_contract import load_qa_model

PARITY_TOL = 1e-4  # worst absolute difference of start/end logits, TF vs ONNX (fp32)


def ort_logits(path: Path, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    start, end = ort_session(path).run(["start_logits", "end_logits"], feed)
    return start, end


def worst_valid_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Worst |a - b| over real (unpadded) positions: padded positions carry no answer."""
    return float(np.abs(a - b)[mask.astype(bool)].max())


def test_embedded_parity_tf_vs_onnx_on_real_squad(embedded_onnx, embedded_tf, dev_batch):
    tf_start, tf_end = run_tf(embedded_tf, dev_batch)
    onnx_start, onnx_end = ort_logits(embedded_onnx, dev_batch)
    worst = max(float(np.abs(tf_start - onnx_start).max()), float(np.abs(tf_end - onnx_end).max()))
    print(f"embedded model TF vs ONNX worst abs diff over {dev_batch['input_ids'].shape}: {worst:.3g}")
    assert worst <= PARITY_TOL
    assert float(np.abs(tf_start).max()) > 1.0  # real logits, not a degenerate all-zero comparison


def test_embedded_graph_contract(embedded_onnx):
    model, cfg = load_qa_model(embedded_onnx)
    assert cfg == BertConfig.from_json(EMBEDDED / "bert_config.json")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for value in model.graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT32
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "seq"]
    ops = Counter(n.op_type for n in model.graph.node)
    # tf2onnx's GlobalAveragePool rewrite of LayerNorm means would hide every LayerNorm from surgery.
    assert "GlobalAveragePool" not in ops
    assert ops["Erf"] == cfg.num_hidden_layers and ops["Softmax"] == cfg.num_hidden_layers
    sidecar = json.loads(sidecar_path(embedded_onnx).read_text())
    assert sidecar["stage"] == "export" and sidecar["sha256"] == sha256_file(embedded_onnx)
    assert sidecar["inputs"]["checkpoint"]["sha256"] == sha256_file(EMBEDDED / "model.ckpt.index")
    assert "tf2onnx" in sidecar["tools"] and "tensorflow-cpu" in sidecar["tools"]


def test_dynamic_batch_and_sequence(embedded_onnx):
    _, cfg = load_qa_model(embedded_onnx)
    for batch, seq in ((1, 40), (3, 384), (2, 512)):
        start, end = ort_logits(embedded_onnx, random_feed(cfg, batch, seq))
        assert start.shape == end.shape == (batch, seq)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> tuple[Path, BertConfig]:
    """A random 2-layer, hidden-128, 2-head model with a 300-token vocab and 256 positions, stored as float16
    with the optimizer slots, step counter and pooler a real NGC checkpoint carries."""
    cfg = BertConfig(vocab_size=300, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=256)
    weights = random_weights(cfg, seed=1)
    extra = {"global_step": np.array(1000, np.int64),
             "bert/pooler/dense/kernel": np.zeros((128, 128), np.float32),
             "bert/pooler/dense/bias": np.zeros((128,), np.float32)}
    for name in list(weights)[:4]:
        extra[f"{name}/adam_m"] = np.zeros(weights[name].shape, np.float32)
        extra[f"{name}/adam_v"] = np.zeros(weights[name].shape, np.float32)
    directory = write_checkpoint(tmp_path_factory.mktemp("small") / "ckpt", cfg, weights, dtype=np.float16,
                                 extra=extra)
    return directory, cfg


def random_feed(cfg: BertConfig, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, cfg.vocab_size, (batch, seq)).astype(np.int32)
    segments = np.zeros((batch, seq), np.int32)
    mask = np.zeros((batch, seq), np.int32)
    for row in range(batch):
        valid = seq - row * (seq // (batch + 1))
        mask[row, :valid] = 1
        segments[row, valid // 3:valid] = 1
    return {"input_ids": ids, "segment_ids": segments, "input_mask": mask}


def test_other_shape_checkpoint_exports_with_parity(small_checkpoint, tmp_path):
    directory, cfg = small_checkpoint
    out = export(directory, tmp_path / "small.onnx")
    _, exported_cfg = load_qa_model(out)
    assert exported_cfg == cfg
    qa = build_qa_function(read_weights(resolve_source(directory), cfg), cfg)
    feed = random_feed(cfg, batch=3, seq=200)
    (tf_start, tf_end), (o_start, o_end) = run_tf(qa, feed), ort_logits(out, feed)
    assert max(np.abs(tf_start - o_start).max(), np.abs(tf_end - o_end).max()) <= PARITY_TOL


def test_gelu_tanh_is_selectable(small_checkpoint, tmp_path):
    directory, cfg = small_checkpoint
    erf = export(directory, tmp_path / "erf.onnx")
    tanh = export(directory, tmp_path / "tanh.onnx", gelu="tanh")
    ops = Counter(n.op_type for n in onnx.load(str(tanh)).graph.node)
    assert ops["Tanh"] == cfg.num_hidden_layers and ops["Erf"] == 0
    feed = random_feed(cfg, batch=1, seq=64)
    # Both GELU forms differ by < 1e-3 per activation; the logits must still show they are different graphs.
    assert np.abs(ort_logits(erf, feed)[0] - ort_logits(tanh, feed)[0]).max() > 1e-5


@pytest.mark.parametrize("name", ["hf-l2-h64-a2", "hf-l2-h128-a2-tanh"])
def test_hf_safetensors_export_matches_torch(name, tmp_path):
    fixture = HF_FIXTURES / name
    out = export(fixture / "model.safetensors", tmp_path / "hf.onnx")
    ref = np.load(fixture / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    start, end = ort_logits(out, feed)
    worst = max(worst_valid_error(start, ref["start_logits"], feed["input_mask"]),
                worst_valid_error(end, ref["end_logits"], feed["input_mask"]))
    print(f"{name}: bertrt export vs torch worst abs diff {worst:.3g}")
    assert worst <= PARITY_TOL
