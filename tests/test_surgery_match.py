"""Matcher robustness: rewrite a Hugging Face fixture into the other forms exporters produce (K^T as two
Transposes, scale on Q or folded into the weights, bias second in the Add, decomposed LayerNorm with Pow and Div)
and check that it still fuses fully and matches torch's logits; plus what the matchers extract."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from bertrt.surgery.match_attention import AttentionMatch
from bertrt.surgery.match_model import match_model
from bertrt.surgery.pattern import scalar
from bertrt.surgery.pipeline import run_surgery
from bertrt.surgery.prepare import prepare
from conftest import HF_FIXTURES

TOL = 1e-4
FIXTURE = HF_FIXTURES / "hf-l2-h64-a2"


def _var(name: str) -> gs.Variable:
    return gs.Variable(name, np.float32)


def _swap_output(node: gs.Node, new: gs.Variable) -> gs.Variable:
    old = node.outputs[0]
    node.outputs.clear()
    node.outputs.append(new)
    return old


def split_k_transpose(graph: gs.Graph) -> None:
    """perm [0,2,3,1] -> [0,2,1,3] then [0,1,3,2] (tf.matmul(q, k, transpose_b=True) style)."""
    for i, node in enumerate([n for n in graph.nodes if n.op == "Transpose" and n.attrs["perm"] == [0, 2, 3, 1]]):
        mid = _var(f"k_heads_{i}")
        graph.nodes.append(gs.Node("Transpose", inputs=[node.inputs[0]], outputs=[mid], attrs={"perm": [0, 2, 1, 3]}))
        node.inputs[0] = mid
        node.attrs["perm"] = [0, 1, 3, 2]


def _score_scales(graph: gs.Graph) -> list[tuple[gs.Node, gs.Node]]:
    """(scores MatMul, scale Mul after it) per layer."""
    pairs = []
    for softmax in (n for n in graph.nodes if n.op == "Softmax"):
        add = softmax.inputs[0].inputs[0]
        mul = next(t.inputs[0] for t in add.inputs if t.inputs and t.inputs[0].op == "Mul")
        pairs.append((mul.inputs[0].inputs[0], mul))
    return pairs


def scale_on_q(graph: gs.Graph) -> None:
    """Mul(MatMul(q, kT), c) -> MatMul(Mul(q, c), kT)."""
    for i, (qk, mul) in enumerate(_score_scales(graph)):
        scores = _swap_output(mul, _var(f"q_scaled_{i}"))
        q = qk.inputs[0]
        qk.inputs[0] = mul.outputs[0]
        mul.inputs[0] = q
        _swap_output(qk, scores)


def fold_scale(graph: gs.Graph) -> None:
    """Drop the scale Mul and multiply Wq and bq by it instead."""
    for qk, mul in _score_scales(graph):
        c = scalar(mul.inputs[1])
        add = mul.outputs[0].outputs[0]
        add.inputs[list(add.inputs).index(mul.outputs[0])] = qk.outputs[0]
        transpose = qk.inputs[0].inputs[0]
        reshape = transpose.inputs[0].inputs[0]
        bias_add = reshape.inputs[0].inputs[0]
        for t in bias_add.inputs:
            if isinstance(t, gs.Constant):
                t.values = (t.values * c).astype(np.float32)
            else:
                w = t.inputs[0].inputs[1]
                w.values = (w.values * c).astype(np.float32)


def bias_second(graph: gs.Graph) -> None:
    for node in graph.nodes:
        if node.op == "Add" and isinstance(node.inputs[0], gs.Constant) and node.inputs[0].values.ndim == 1:
            node.inputs[0], node.inputs[1] = node.inputs[1], node.inputs[0]


def decompose_layernorm(graph: gs.Graph) -> None:
    """Native LayerNormalization -> ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add."""
    for i, ln in enumerate([n for n in graph.nodes if n.op == "LayerNormalization"]):
        x, gamma, beta = ln.inputs
        out = _swap_output(ln, _var(f"unused_{i}"))
        t = [_var(f"ln{i}_{k}") for k in range(8)]
        eps = gs.Constant(f"ln{i}_eps", np.array(ln.attrs["epsilon"], np.float32))
        two = gs.Constant(f"ln{i}_two", np.array(2.0, np.float32))
        graph.nodes += [
            gs.Node("ReduceMean", inputs=[x], outputs=[t[0]], attrs={"axes": [-1], "keepdims": 1}),
            gs.Node("Sub", inputs=[x, t[0]], outputs=[t[1]]),
            gs.Node("Pow", inputs=[t[1], two], outputs=[t[2]]),
            gs.Node("ReduceMean", inputs=[t[2]], outputs=[t[3]], attrs={"axes": [-1], "keepdims": 1}),
            gs.Node("Add", inputs=[t[3], eps], outputs=[t[4]]),
            gs.Node("Sqrt", inputs=[t[4]], outputs=[t[5]]),
            gs.Node("Div", inputs=[t[1], t[5]], outputs=[t[6]]),
            gs.Node("Mul", inputs=[t[6], gamma], outputs=[t[7]]),
            gs.Node("Add", inputs=[t[7], beta], outputs=[out]),
        ]
        ln.inputs.clear()


VARIANTS = {"k_transpose_b": [split_k_transpose], "scale_on_q": [scale_on_q], "scale_folded": [fold_scale],
            "bias_second": [bias_second], "decomposed_layernorm": [decompose_layernorm],
            "all": [split_k_transpose, scale_on_q, bias_second, decompose_layernorm]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_fuses_and_matches_torch(tmp_path, variant):
    graph = gs.import_onnx(onnx.load(str(FIXTURE / "model.onnx")))
    for rewrite in VARIANTS[variant]:
        rewrite(graph)
    graph.cleanup().toposort()
    path = tmp_path / "model.onnx"
    onnx.save(gs.export_onnx(graph, ir_version=8), str(path))

    matches = match_model(prepare(path).graph)
    assert not matches.failures()
    scale = matches.layers[0].attention.scale
    assert scale == pytest.approx(1.0 if variant == "scale_folded" else 32 ** -0.5, rel=1e-6)

    out = tmp_path / "model.ort.onnx"
    run_surgery(path, out, "ort")
    ref = np.load(FIXTURE / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    from bertrt.runtimes.onnxruntime import ort_session

    got = ort_session(out, threads=1).run(["start_logits", "end_logits"], feed)
    valid = ref["input_mask"].astype(bool)
    for name, value in zip(("start_logits", "end_logits"), got):
        assert np.abs(value - ref[name])[valid].max() < TOL


def test_extracted_values_hf():
    matches = match_model(prepare(FIXTURE / "model.onnx").graph)
    att = matches.layers[0].attention
    assert isinstance(att, AttentionMatch)
    assert (att.num_heads, att.head_size) == (2, 32)
    assert att.mask.filter_value == np.finfo(np.float32).min
    assert att.q_weight.shape == (64, 64) and att.packed_qkv()[0].shape == (64, 192)
    assert matches.embedding.layernorm.epsilon == pytest.approx(1e-12)
    assert matches.embedding.position_embeddings.shape == (512, 64)
    assert all(la.attention_skip.bias is not None and la.ffn_skip.bias is not None for la in matches.layers)
    assert [la.gelu.form for la in matches.layers] == ["erf", "erf"]
