"""`plugins` surgery: TensorRT BERT plugin graphs, executed with the numpy plugin references
(``ReferenceEvaluator(model, new_ops=REFERENCE_OPS)``), must reproduce the unfused export's onnxruntime logits;
deliberately wrong emissions (plain QKV packing, [B, S] inputs fed to EmbLN) must be caught by the same check.

The reference evaluator is numpy: batches stay small (<= 3) and every plugin graph is built once per session."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.runtimes.onnxruntime import ort_session
from bertrt.surgery import emit_plugins
from bertrt.surgery.match_model import match_model
from bertrt.surgery.pipeline import fusion_report_path, run_surgery
from bertrt.surgery.plugin_reference import PLUGIN_DOMAIN, reference_ops
from bertrt.surgery.prepare import HF_INPUTS, infer_config, prepare
from conftest import HF_FIXTURES
from onnx import AttributeProto, helper
from onnx.reference import ReferenceEvaluator
from surgery_common import (
    SHAPES,
    TOL,
    ort_logits,
    random_feed,
    shape_id,
    worst_valid_error,
)

from bertrt.artifacts import sidecar_path
from bertrt.qa_contract import load_qa_model, stage_of

WRONG = 1e-2  # a wrong emission must be off by more than this
OUTPUTS = ["start_logits", "end_logits"]
VERSIONS = {"v2": {"CustomEmbLayerNormPluginDynamic": "1", "CustomSkipLayerNormPluginDynamic": "1",
                   "CustomQKVToContextPluginDynamic": "1"},
            "v3": {"CustomEmbLayerNormPluginDynamic": "6", "CustomSkipLayerNormPluginDynamic": "5",
                   "CustomQKVToContextPluginDynamic": "4"}}
HF_PLUGIN_NAMES = ["hf-l2-h64-a2", "hf-l2-h128-a2-tanh"]  # the stock-MatMul runs are slow: two suffice
INT_FIELDS = {"CustomEmbLayerNormPluginDynamic": {"output_fp16", "full_mask", "mha_type_id"},
              "CustomSkipLayerNormPluginDynamic": {"type_id", "ld"},
              "CustomQKVToContextPluginDynamic": {"type_id", "hidden_size", "num_heads", "has_mask"}}
TENSOR_FIELDS = {"CustomEmbLayerNormPluginDynamic": {"bert_embeddings_layernorm_beta",
                                                     "bert_embeddings_layernorm_gamma",
                                                     "bert_embeddings_word_embeddings",
                                                     "bert_embeddings_token_type_embeddings",
                                                     "bert_embeddings_position_embeddings"},
                 "CustomSkipLayerNormPluginDynamic": {"beta", "gamma", "bias"},
                 "CustomQKVToContextPluginDynamic": set()}


def plugin_logits(path: Path, feed: dict[str, np.ndarray], stock: bool = False) -> list[np.ndarray]:
    """Run a plugin graph with the plugin references (and, unless `stock`, the fast MatMul). ReferenceEvaluator
    appends to the new_ops list it is given, hence the copy."""
    return ReferenceEvaluator(str(path), new_ops=reference_ops(fast_matmul=not stock)).run(OUTPUTS, feed)


@pytest.fixture(scope="session")
def plugin_graph(tmp_path_factory):
    """(source, plugin_api) -> the plugins-target output, one surgery per pair."""
    cache = {}

    def get(source: Path, plugin_api: str = "v3") -> Path:
        key = (str(source), plugin_api)
        if key not in cache:
            out = tmp_path_factory.mktemp("plugins") / "model.plugins.onnx"
            run_surgery(source, out, "plugins", plugin_api=plugin_api)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def short_real_batch(dev_features):
    """3 real features (166-171 tokens) padded to seq 192: every row carries a different amount of padding."""
    from bertrt.qa.features import collate

    return collate([dev_features[i] for i in (0, 2, 9)], 192)


# ---- (1) the real embedded model on SQuAD dev features ---------------------------------------------------------

def test_real_model_v3_matches_at_seq384(embedded_onnx, plugin_graph, dev_features):
    from bertrt.qa.features import collate

    feed = collate(dev_features[8:11], 384)  # batch 3, seq 384, heavy padding
    err = worst_valid_error(ort_logits(embedded_onnx, feed), plugin_logits(plugin_graph(embedded_onnx, "v3"), feed),
                      feed["input_mask"])
    assert err < TOL


def test_real_model_v2_matches_at_short_seq(embedded_onnx, plugin_graph, short_real_batch):
    feed = short_real_batch
    assert feed["input_mask"].shape[1] < 384 and len(set(feed["input_mask"].sum(1))) > 1
    err = worst_valid_error(ort_logits(embedded_onnx, feed), plugin_logits(plugin_graph(embedded_onnx, "v2"), feed),
                      feed["input_mask"])
    assert err < TOL


# ---- (2) other shapes: random-weight exports and Hugging Face exports -----------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize(("batch", "seq"), [(1, 128), (3, 384)])
def test_random_shapes_match(random_export, plugin_graph, shape, batch, seq):
    unfused, cfg = random_export(shape)
    feed = random_feed(batch, seq, cfg.vocab_size, seed=seq + batch)
    err = worst_valid_error(ort_logits(unfused, feed), plugin_logits(plugin_graph(unfused), feed), feed["input_mask"])
    assert err < TOL


@pytest.mark.parametrize("name", HF_PLUGIN_NAMES)
def test_hf_fixture_matches_torch_and_unfused(plugin_graph, name):
    source = HF_FIXTURES / name / "model.onnx"
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    got = plugin_logits(plugin_graph(source), feed, stock=True)  # onnx's own MatMul, too
    assert worst_valid_error([ref["start_logits"], ref["end_logits"]], got, feed["input_mask"]) < TOL
    session = ort_session(source, threads=1)  # the unfused HF export: HF input names and types
    types = {i.name: np.int64 if i.type == "tensor(int64)" else np.int32 for i in session.get_inputs()}
    hf_feed = {hf: feed[ours].astype(types[hf]) for hf, ours in HF_INPUTS.items()}
    assert worst_valid_error(session.run(OUTPUTS, hf_feed), got, feed["input_mask"]) < TOL


# ---- (3) wrong emissions are caught by the same parity check ---------------------------------------------------

def _plain_qkv(wq, wk, wv, bq, bk, bv, num_heads):
    """The wrong (3, N, H) order: [Q | K | V] concatenated, in the [out, in] layout pack_qkv returns."""
    return np.concatenate([wq, wk, wv], axis=1).T, np.concatenate([bq, bk, bv])


def _wrong_graph(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "wrong.plugins.onnx"
    run_surgery(source, out, "plugins")
    return out


def test_plain_qkv_packing_is_caught(embedded_onnx, short_real_batch, tmp_path, monkeypatch):
    monkeypatch.setattr(emit_plugins, "pack_qkv", _plain_qkv)
    feed = short_real_batch
    got = plugin_logits(_wrong_graph(embedded_onnx, tmp_path), feed)
    assert worst_valid_error(ort_logits(embedded_onnx, feed), got, feed["input_mask"]) > WRONG


def test_batch_major_inputs_are_caught(embedded_onnx, short_real_batch, tmp_path, monkeypatch):
    """EmbLN fed the [B, S] inputs as they come: S and B swap. Even with the (then [S, B]) logits transposed back
    to [B, S] the values are far off."""
    monkeypatch.setattr(emit_plugins, "to_sequence_major", lambda out, t: t)
    feed = short_real_batch
    got = [g.T for g in plugin_logits(_wrong_graph(embedded_onnx, tmp_path), feed)]
    assert worst_valid_error(ort_logits(embedded_onnx, feed), got, feed["input_mask"]) > WRONG


def test_wrong_packing_is_caught_on_small_random_model(random_export, tmp_path, monkeypatch):
    unfused, cfg = random_export(SHAPES[0])  # 2 heads: the smallest case where the order matters
    monkeypatch.setattr(emit_plugins, "pack_qkv", _plain_qkv)
    feed = random_feed(3, 128, cfg.vocab_size, seed=1)
    got = plugin_logits(_wrong_graph(unfused, tmp_path), feed)
    assert worst_valid_error(ort_logits(unfused, feed), got, feed["input_mask"]) > WRONG


def test_non_contiguous_mask_is_cut_at_the_first_zero(random_export, plugin_graph):
    """Documented limitation: the plugin's mask index is the first 0, so a mask with a hole drops later keys."""
    unfused, cfg = random_export(SHAPES[0])
    feed = random_feed(3, 128, cfg.vocab_size, seed=2)
    assert worst_valid_error(ort_logits(unfused, feed), plugin_logits(plugin_graph(unfused), feed), feed["input_mask"]) < TOL
    feed["input_mask"][1, 10] = 0  # row 1: 1..1 0 1..1 0..0
    got = plugin_logits(plugin_graph(unfused), feed)
    assert worst_valid_error(ort_logits(unfused, feed), got, feed["input_mask"]) > WRONG


# ---- (4) structure: node counts, plugin fields and versions, contract, report ----------------------------------

def _attr_types(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: a.type for a in node.attribute}


@pytest.mark.parametrize("plugin_api", ["v2", "v3"])
def test_nodes_fields_and_versions(embedded_onnx, plugin_graph, plugin_api):
    path = plugin_graph(embedded_onnx, plugin_api)
    model, cfg = load_qa_model(path)  # the I/O contract holds
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    assert stage_of(model) == "surgery:plugins"
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["CustomEmbLayerNormPluginDynamic"] == 1
    assert ops["CustomSkipLayerNormPluginDynamic"] == 2 * layers
    assert ops["CustomQKVToContextPluginDynamic"] == layers
    assert ops["Erf"] == layers  # the GELU stays as ONNX ops, once per layer
    assert not {"Softmax", "ReduceMean", "LayerNormalization", "Gather", "Sqrt"} & set(ops)
    assert {o.domain: o.version for o in model.opset_import}[PLUGIN_DOMAIN] == 1

    for node in (n for n in model.graph.node if n.domain == PLUGIN_DOMAIN):
        types = _attr_types(node)
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert values["plugin_version"] == VERSIONS[plugin_api][node.op_type].encode()
        assert values["plugin_namespace"] == b""
        assert types.pop("plugin_version") == types.pop("plugin_namespace") == AttributeProto.STRING
        ints = {k for k, t in types.items() if t == AttributeProto.INT}
        tensors = {k for k, t in types.items() if t == AttributeProto.TENSOR}
        assert ints == INT_FIELDS[node.op_type] and ints | tensors == set(types)
        # every dense bias was matched, so every SkipLN carries one
        assert tensors == TENSOR_FIELDS[node.op_type]
        assert all(values[k] == 0 for k in ints & {"type_id", "output_fp16", "full_mask", "mha_type_id"})
        if node.op_type == "CustomSkipLayerNormPluginDynamic":
            assert values["ld"] == hidden
        if node.op_type == "CustomQKVToContextPluginDynamic":
            assert (values["hidden_size"], values["num_heads"], values["has_mask"]) == (hidden, 12, 1)
            assert list(node.input)[1] == "mask_index"

    report = json.loads(fusion_report_path(path).read_text())
    assert report["target"] == "plugins"
    assert report["blocks"] == {"embedding": {"fused": 1, "expected": 1},
                                "skip_layernorm": {"fused": 2 * layers, "expected": 2 * layers},
                                "attention": {"fused": layers, "expected": layers},
                                "gelu": {"fused": layers, "expected": layers}}
    assert json.loads(sidecar_path(path).read_text())["parameters"]["plugin_api"] == plugin_api


def test_fp16_precision_sets_the_plugin_type_fields():
    prepared = prepare(HF_FIXTURES / "hf-l2-h64-a2" / "model.onnx")
    matches = match_model(prepared.graph, prepared.cfg)
    emit_plugins.emit(prepared.graph, matches, infer_config(matches), plugin_api="v3", precision="fp16")
    fields = {}
    for node in prepared.graph.nodes:
        if node.domain == PLUGIN_DOMAIN:
            fields.setdefault(node.op, set()).update(
                (k, v) for k, v in node.attrs.items() if k in {"type_id", "output_fp16", "mha_type_id"})
    assert fields == {"CustomEmbLayerNormPluginDynamic": {("output_fp16", 1), ("mha_type_id", 1)},
                      "CustomSkipLayerNormPluginDynamic": {("type_id", 1)},
                      "CustomQKVToContextPluginDynamic": {("type_id", 1)}}


def test_scale_folded_into_weights_is_refolded_for_the_plugin(tmp_path):
    """The QKV plugin always scales by 1/sqrt(H): a graph that scales differently (here: Q weights x4, scale / 4,
    the same function) must come out with the ratio folded back into the packed Q weights."""
    import dataclasses

    import onnx_graphsurgeon as gs

    name = "hf-l2-h64-a2"
    prepared = prepare(HF_FIXTURES / name / "model.onnx")
    matches = match_model(prepared.graph, prepared.cfg)
    for layer in matches.layers:
        att = layer.attention
        layer.attention = dataclasses.replace(att, q_weight=att.q_weight * 4, q_bias=att.q_bias * 4,
                                              scale=att.scale / 4)
    emit_plugins.emit(prepared.graph, matches, infer_config(matches))
    prepared.graph.cleanup().toposort()
    path = tmp_path / "model.onnx"
    onnx.save(gs.export_onnx(prepared.graph), str(path))
    ref = np.load(HF_FIXTURES / name / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    got = plugin_logits(path, feed)
    assert worst_valid_error([ref["start_logits"], ref["end_logits"]], got, feed["input_mask"]) < TOL
