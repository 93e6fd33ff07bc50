"""Hugging Face export forms (tests/fixtures/hf/forms, made by scripts/make_hf_fixtures.py --forms): the legacy and
the dynamo exporter, SDPA and eager attention, two transformers 5.x releases. Every form fuses for every target and
matches torch's own logits on the valid positions of a padded batch (3 rows of 24, 17 and 9 tokens). Plus the
inputs surgery must refuse in one line, leaving the input untouched: an export that ignores the mask only in some
layers, an unknown BERT variant (RoBERTa), an already fused model, a non-BERT graph with Hugging Face's I/O; and an
export that ignores the mask everywhere, which is fused with the mask applied (tested against torch)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from bertrt.runtimes.onnxruntime import ort_session
from bertrt.surgery.mask_use import APPLIED, IGNORED
from bertrt.surgery.pattern import const_value
from bertrt.surgery.pipeline import fusion_report_path, run_surgery
from bertrt.surgery.plugin_reference import reference_ops
from conftest import HF_FIXTURES
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from surgery_common import TOL, assert_report_and_artifacts, worst_valid_error
from test_cli import assert_one_line_error, run_cli

from bertrt.artifacts import sha256_file, sidecar_path
from bertrt.cli import main

FORMS_DIR = HF_FIXTURES / "forms"
FORMS = sorted(p.parent for p in FORMS_DIR.glob("transformers-*/*-*/model.onnx"))  # <version>/<exporter>-<attn>
ROBERTA = sorted(FORMS_DIR.glob("transformers-*/roberta/model.onnx"))
DYNAMO_SDPA = FORMS_DIR / "transformers-5.24.0" / "dynamo-sdpa"
OUTPUTS = ["start_logits", "end_logits"]
TARGETS = ("ort", "native", "plugins")
FUSED_OPS = {"ort": {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization"},
             "plugins": {"CustomEmbLayerNormPluginDynamic", "CustomQKVToContextPluginDynamic",
                         "CustomSkipLayerNormPluginDynamic"},
             "native": {"LayerNormalization", "Softmax"}}
WRONG = 1e-2  # what "differs from torch" means for an export that ignores the mask


def form_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def fused_logits(path: Path, target: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    if target == "plugins":  # numpy references of the TensorRT plugins (see surgery/plugin_reference.py)
        return ReferenceEvaluator(str(path), new_ops=reference_ops(fast_matmul=True)).run(OUTPUTS, feed)
    return ort_session(path, threads=1).run(OUTPUTS, feed)


def torch_reference(form: Path) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    ref = np.load(form / "reference.npz")
    return ({k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")},
            (ref["start_logits"], ref["end_logits"]))


def assert_fuses_like_torch(source: Path, form: Path, target: str, out: Path) -> dict:
    report = run_surgery(source, out, target)
    assert_report_and_artifacts(out, report, target, layers=2)
    model = onnx.load(str(out))
    ops = Counter(n.op_type for n in model.graph.node)
    assert FUSED_OPS[target] <= set(ops) and not {"Gelu", "IsNaN"} & set(ops)
    if target != "native":
        assert "Softmax" not in ops and "LayerNormalization" not in ops
    else:  # plain ONNX at opset 17, or at the export's newer opset (the dynamo exporter's)
        source_opset = next(o.version for o in onnx.load(str(source), load_external_data=False).opset_import
                            if o.domain in ("", "ai.onnx"))
        assert {o.domain: o.version for o in model.opset_import}[""] == max(17, source_opset)
    feed, expected = torch_reference(form)
    error = worst_valid_error(fused_logits(out, target, feed), expected, feed["input_mask"])
    print(f"fused vs torch: {form_id(form)} {source.name} {target} worst {error:.2e}")  # README numbers (pytest -s)
    assert error <= TOL
    return report


def test_fixtures_cover_every_form_for_two_transformers_releases():
    versions = {p.parent.name for p in FORMS}
    assert len(versions) >= 2 and all(v.startswith("transformers-5.") for v in versions)
    for version in versions:
        assert {p.name for p in FORMS if p.parent.name == version} == {
            "legacy-sdpa", "legacy-eager", "dynamo-sdpa", "dynamo-eager"}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", FORMS, ids=form_id)
def test_form_fuses_and_matches_torch(tmp_path, form, target):
    report = assert_fuses_like_torch(form / "model.onnx", form, target, tmp_path / f"model.{target}.onnx")
    assert report["source"] == "huggingface" and report["attention_mask"] == APPLIED


def _drop_mask_bias(graph: gs.Graph, layers: list[int] | None = None) -> None:
    """Feed each (or the listed) layer's Softmax the scores without the mask bias: an export ignoring the mask."""
    softmaxes = [n for n in graph.nodes if n.op == "Softmax"]
    for i, softmax in enumerate(softmaxes):
        if layers is None or i in layers:
            add = softmax.inputs[0].inputs[0]
            softmax.inputs[0] = next(t for t in add.inputs if t.inputs and t.inputs[0].op == "MatMul")


def _unmask_input(graph: gs.Graph) -> None:
    """Build the mask from ones instead of attention_mask: the mask bias is computed, but 0 everywhere."""
    hf_mask = next(t for t in graph.inputs if t.name == "attention_mask")
    ids = next(t for t in graph.inputs if t.name == "input_ids")
    zeros, ones = gs.Variable("zeros_like_ids", np.int64), gs.Variable("ones_like_ids", np.int64)
    graph.nodes += [gs.Node("Mul", inputs=[ids, gs.Constant("zero", np.array(0, np.int64))], outputs=[zeros]),
                    gs.Node("Add", inputs=[zeros, gs.Constant("one", np.array(1, np.int64))], outputs=[ones])]
    for node in list(hf_mask.outputs):
        node.inputs[list(node.inputs).index(hf_mask)] = ones


def _rewritten(tmp_path: Path, rewrite, *args) -> Path:
    model = onnx.load(str(DYNAMO_SDPA / "model.onnx"))
    graph = gs.import_onnx(model)
    rewrite(graph, *args)
    graph.cleanup().toposort()
    path = tmp_path / "ignores-mask.onnx"
    onnx.save(gs.export_onnx(graph, ir_version=model.ir_version), str(path))
    return path


@pytest.mark.parametrize("rewrite", [_drop_mask_bias, _unmask_input], ids=["no-mask-bias", "zero-mask-bias"])
@pytest.mark.parametrize("target", TARGETS)
def test_export_ignoring_the_mask_is_fused_with_the_mask_applied(tmp_path, capsys, rewrite, target):
    source = _rewritten(tmp_path, rewrite)
    feed, expected = torch_reference(DYNAMO_SDPA)
    session = ort_session(source, threads=1)
    hf_feed = {"input_ids": feed["input_ids"].astype(np.int64), "token_type_ids": feed["segment_ids"].astype(np.int64),
               "attention_mask": feed["input_mask"].astype(np.int64)}
    # the export itself is wrong on the padded rows (so the fused result below is not a coincidence)
    assert worst_valid_error(session.run(OUTPUTS, hf_feed), expected, feed["input_mask"]) > WRONG
    report = assert_fuses_like_torch(source, DYNAMO_SDPA, target, tmp_path / f"model.{target}.onnx")
    assert report["attention_mask"] == IGNORED
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "ignores attention_mask" in warning[0] and "dynamo=False" in warning[0]


def _assert_refused(capsys, tmp_path: Path, source: Path, *needles: str) -> None:
    before = sha256_file(source)
    out = tmp_path / "fused.onnx"
    code, _, err = run_cli(capsys, "surgery", "--input", source, "--output", out, "--target", "ort")
    assert_one_line_error(code, err, *needles)
    assert sha256_file(source) == before
    assert not out.exists() and not fusion_report_path(out).exists() and not sidecar_path(out).exists()


def test_mask_ignored_in_some_layers_only_is_refused(capsys, tmp_path):
    _assert_refused(capsys, tmp_path, _rewritten(tmp_path, _drop_mask_bias, [0]),
                    "layer(s) 0 adds no padding mask", "outputs depend on attention_mask")


@pytest.mark.parametrize("roberta", ROBERTA, ids=lambda p: p.parent.parent.name)
def test_roberta_export_is_refused_naming_the_position_embeddings(capsys, tmp_path, roberta):
    _assert_refused(capsys, tmp_path, roberta, "embeddings: position embeddings did not match",
                    "not rows 0..S-1")


def test_already_fused_model_is_refused(capsys, tmp_path):
    fused = tmp_path / "model.ort.onnx"
    assert main(["surgery", "--input", str(DYNAMO_SDPA / "model.onnx"), "--output", str(fused), "--target",
                 "ort"]) == 0
    capsys.readouterr()
    _assert_refused(capsys, tmp_path, fused, "already fused by bertrt (target ort)")
    model = onnx.load(str(fused))  # the same graph from another tool: no bertrt metadata
    del model.metadata_props[:]
    other = tmp_path / "other-tool.onnx"
    onnx.save(model, str(other))
    _assert_refused(capsys, tmp_path, other, "already fused", "com.microsoft::Attention")


def test_non_bert_graph_with_hugging_face_io_is_refused(capsys, tmp_path):
    """Hugging Face's inputs and outputs, no BERT inside: the embeddings block is what did not match."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in OUTPUTS]
    nodes = [helper.make_node("Add", ["input_ids", "token_type_ids"], ["s"]),
             helper.make_node("Cast", ["s"], ["start_logits"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["attention_mask"], ["end_logits"], to=TensorProto.FLOAT)]
    path = tmp_path / "not-bert.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    _assert_refused(capsys, tmp_path, path, "embeddings: embedding LayerNorm did not match",
                    "no LayerNorm at all")


def _retarget_k_view(graph: gs.Graph) -> None:
    """dynamo SDPA: the rank-3 view of K reads the wrong axis of K's shape (H instead of S) for its middle dim."""
    for node in graph.nodes:
        start = node.inputs[1] if node.op == "Slice" else None
        if start is not None and isinstance(start, gs.Constant) and start.values.tolist() == [-2] \
                and node.inputs[0].inputs and node.inputs[0].inputs[0].op == "Shape":
            node.inputs[1] = gs.Constant(f"{node.name}_start", np.array([-1], np.int64))
            node.inputs[2] = gs.Constant(f"{node.name}_end", np.array([np.iinfo(np.int64).max], np.int64))


def _retarget_context_view(graph: gs.Graph) -> None:
    """legacy SDPA: the re-view of the context reads Q's head axis where Q's sequence axis belongs."""
    for node in graph.nodes:
        if node.op == "Gather" and node.inputs[0].inputs and node.inputs[0].inputs[0].op == "Shape":
            source = node.inputs[0].inputs[0].inputs[0]
            index = const_value(node.inputs[1])  # a Constant node's output in the raw export
            if source.inputs and source.inputs[0].op == "Transpose" and index is not None and int(index) == 2:
                node.inputs[1] = gs.Constant(f"{node.name}_index", np.array(1, np.int64))


@pytest.mark.parametrize(("form", "rewrite", "part"), [
    ("dynamo-sdpa", _retarget_k_view, "attention: K head split did not match"),
    ("legacy-sdpa", _retarget_context_view, "attention: merge heads did not match")], ids=["k-view", "context-view"])
def test_reshape_views_are_checked_against_the_shapes_they_read(capsys, tmp_path, form, rewrite, part):
    """The two Reshape idioms of torch's SDPA exports are accepted only when their dims come from the right axes."""
    model = onnx.load(str(FORMS_DIR / "transformers-5.24.0" / form / "model.onnx"))
    graph = gs.import_onnx(model)
    rewrite(graph)
    path = tmp_path / "model.onnx"
    onnx.save(gs.export_onnx(graph, ir_version=model.ir_version), str(path))
    _assert_refused(capsys, tmp_path, path, "layer 0", part)
