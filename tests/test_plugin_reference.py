"""The plugin references, run as one-node ONNX graphs, against a plain numpy BERT in [B, S, E] layout."""

from __future__ import annotations

import numpy as np
import pytest
from bertrt.surgery.plugin_reference import (
    PLUGIN_DOMAIN,
    REFERENCE_OPS,
    mask_index,
    skip_layer_norm_epsilon,
)
from bertrt.surgery.qkv_packing import pack_qkv, unpack_qkv
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

TOL = 1e-5
# (hidden size, heads, sequence length, batch)
CASES = [(64, 2, 8, 3), (128, 4, 128, 1), (384, 12, 128, 3), (384, 12, 8, 1)]
SMALL = CASES[0]
VOCAB, TYPES = 50, 2


def value_info(name: str, value: np.ndarray):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)


def run_plugin(op_type: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, **attrs) -> list[np.ndarray]:
    """Run a graph holding one plugin node; numpy attributes become tensor attributes."""
    attrs = {k: numpy_helper.from_array(v, k) if isinstance(v, np.ndarray) else v for k, v in attrs.items()}
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, list(inputs), outputs, domain=PLUGIN_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        "plugin",
        [value_info(n, v) for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)]
    )
    return ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, inputs)


# ---- plain BERT in [B, S, E], float64 -------------------------------------------------------------------

def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def bert_embeddings(ids, seg, w):
    x = w["word"][ids] + w["type"][seg] + w["pos"][: ids.shape[1]][None]
    return layer_norm(x, w["gamma"], w["beta"])


def bert_attention(x, w, mask, heads):
    b, s, _ = x.shape

    def split(t):
        return t.reshape(b, s, heads, -1).transpose(0, 2, 1, 3)

    q, k, v = (split(x @ w[f"w{n}"] + w[f"b{n}"]) for n in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + (1.0 - mask[:, None, None, :]) * -10000.0
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)


# ---- data --------------------------------------------------------------------------------------------------

def valid_lengths(seq, batch):
    # Partly padded, single-token and full rows; contiguous masks, as the plugin requires.
    return np.array([seq - 3, 1, seq][:batch])


def bs_mask(lengths, seq):
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)


def to_plugin(t):  # [B, S, C] -> [S, B, C, 1, 1]
    return np.ascontiguousarray(t.transpose(1, 0, 2)[..., None, None])


def from_plugin(t):  # [S, B, C, 1, 1] -> [B, S, C]
    return t[..., 0, 0].transpose(1, 0, 2)


def embedding_weights(rng, hidden, seq):
    return {
        "word": rng.normal(size=(VOCAB, hidden)).astype(np.float32),
        "type": rng.normal(size=(TYPES, hidden)).astype(np.float32),
        "pos": rng.normal(size=(seq, hidden)).astype(np.float32),
        "gamma": rng.normal(1.0, 0.1, size=hidden).astype(np.float32),
        "beta": rng.normal(0.0, 0.1, size=hidden).astype(np.float32),
    }


def emb_attrs(w, **extra):
    return dict(
        bert_embeddings_word_embeddings=w["word"],
        bert_embeddings_token_type_embeddings=w["type"],
        bert_embeddings_position_embeddings=w["pos"],
        bert_embeddings_layernorm_gamma=w["gamma"],
        bert_embeddings_layernorm_beta=w["beta"],
        output_fp16=0,
        mha_type_id=0,
        **extra,
    )


def token_inputs(rng, seq, batch):
    lengths = valid_lengths(seq, batch)
    ids = rng.integers(0, VOCAB, size=(batch, seq)).astype(np.int32)
    seg = (np.arange(seq)[None, :] >= lengths[:, None] // 2).astype(np.int32)
    return ids, seg, bs_mask(lengths, seq), lengths


def attention_weights(rng, hidden):
    std = 1.0 / np.sqrt(hidden)
    w = {f"w{n}": rng.normal(0.0, std, size=(hidden, hidden)) for n in "qkv"}
    w.update({f"b{n}": rng.normal(0.0, 0.1, size=hidden) for n in "qkv"})
    return w


def packed_qkv(w, heads):
    return pack_qkv(w["wq"], w["wk"], w["wv"], w["bq"], w["bk"], w["bv"], heads)


def run_attention(x, w_packed, b_packed, hidden, heads, lengths=None, **extra):
    """Fused projection as the 1x1 FC computes it, then the QKV plugin; returns the plugin's output."""
    qkv = to_plugin(x @ w_packed.T + b_packed).astype(np.float32)
    inputs = {"qkv": qkv}
    if lengths is not None:
        inputs["mask_idx"] = lengths.astype(np.int32)[:, None]
    attrs = dict(type_id=0, hidden_size=hidden, num_heads=heads, has_mask=int(lengths is not None), **extra)
    return run_plugin("CustomQKVToContextPluginDynamic", inputs, **attrs)[0]


# ---- EmbLayerNorm ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,heads,seq,batch", CASES)
def test_emb_layer_norm_matches_bert(hidden, heads, seq, batch):
    rng = np.random.default_rng(hidden + seq + batch)
    w = embedding_weights(rng, hidden, seq)
    ids, seg, mask, lengths = token_inputs(rng, seq, batch)

    emb, idx = run_plugin(
        "CustomEmbLayerNormPluginDynamic",
        {"input_ids": ids.T.copy(), "segment_ids": seg.T.copy(), "input_mask": mask.T.copy()},
        2,
        **emb_attrs(w),
    )

    assert emb.shape == (seq, batch, hidden, 1, 1) and emb.dtype == np.float32
    assert np.abs(from_plugin(emb) - bert_embeddings(ids, seg, w)).max() <= TOL
    assert idx.dtype == np.int32 and idx.tolist() == lengths[:, None].tolist()


def test_emb_layer_norm_catches_batch_major_inputs():
    hidden, _, seq, batch = SMALL
    rng = np.random.default_rng(1)
    w = embedding_weights(rng, hidden, seq)
    ids, seg, mask, _ = token_inputs(rng, seq, batch)

    # [B, S] fed where [S, B] is expected: positions run along the batch and the mask index has S rows.
    emb, idx = run_plugin(
        "CustomEmbLayerNormPluginDynamic",
        {"input_ids": ids, "segment_ids": seg, "input_mask": mask},
        2,
        **emb_attrs(w),
    )

    assert idx.shape != (batch, 1)
    assert np.abs(emb[..., 0, 0] - bert_embeddings(ids, seg, w)).max() > 0.1


def test_mask_index_is_first_padded_position():
    mask = np.array([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=np.int32)
    # The kernel reports the first 0 per sequence, so the invalid 110100 gives 2, not 3.
    assert mask_index(mask.T).tolist() == [[2], [6], [0]]


# ---- SkipLayerNorm -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,heads,seq,batch", CASES)
def test_skip_layer_norm_matches_bert(hidden, heads, seq, batch):
    rng = np.random.default_rng(hidden * seq + batch)
    x, skip = (rng.normal(size=(batch, seq, hidden)).astype(np.float32) for _ in range(2))
    gamma, beta, bias = (rng.normal(0.5, 0.2, size=hidden).astype(np.float32) for _ in range(3))

    (out,) = run_plugin(
        "CustomSkipLayerNormPluginDynamic",
        {"input": to_plugin(x), "skip": to_plugin(skip)},
        type_id=0,
        ld=hidden,
        gamma=gamma,
        beta=beta,
        bias=bias,
    )

    expected = layer_norm(x.astype(np.float64) + skip + bias, gamma, beta)
    assert out.shape == (seq, batch, hidden, 1, 1) and out.dtype == np.float32
    assert np.abs(from_plugin(out) - expected).max() <= TOL


def test_skip_layer_norm_epsilon_follows_kernel_path():
    assert skip_layer_norm_epsilon(768, 0) == 2.0**-23
    assert skip_layer_norm_epsilon(1024, 1) == 2.0**-10
    assert skip_layer_norm_epsilon(384, 0) == 0.0


# ---- QKVToContext ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,heads,seq,batch", CASES)
def test_qkv_to_context_matches_bert(hidden, heads, seq, batch):
    rng = np.random.default_rng(hidden + 7 * seq + batch)
    x = rng.normal(size=(batch, seq, hidden))
    w = attention_weights(rng, hidden)
    lengths = valid_lengths(seq, batch)

    out = run_attention(x, *packed_qkv(w, heads), hidden, heads, lengths)

    assert out.shape == (seq, batch, hidden, 1, 1) and out.dtype == np.float32
    expected = bert_attention(x, w, bs_mask(lengths, seq), heads)
    got = from_plugin(out)
    for b, n in enumerate(lengths):  # padded query positions are not part of the comparison
        assert np.abs(got[b, :n] - expected[b, :n]).max() <= TOL


def test_qkv_to_context_without_mask_attends_to_all_keys():
    hidden, heads, seq, batch = SMALL
    rng = np.random.default_rng(2)
    x = rng.normal(size=(batch, seq, hidden))
    w = attention_weights(rng, hidden)

    out = run_attention(x, *packed_qkv(w, heads), hidden, heads)

    expected = bert_attention(x, w, np.ones((batch, seq)), heads)
    assert np.abs(from_plugin(out) - expected).max() <= TOL


def test_plainly_packed_qkv_gives_large_error():
    hidden, heads, seq, batch = SMALL
    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, seq, hidden))
    w = attention_weights(rng, hidden)
    lengths = valid_lengths(seq, batch)
    # (3, N, H): [Q | K | V] stacked, the packing the plugin does NOT expect.
    w_plain = np.concatenate([w["wq"], w["wk"], w["wv"]], axis=1).T
    b_plain = np.concatenate([w["bq"], w["bk"], w["bv"]])

    out = run_attention(x, w_plain, b_plain, hidden, heads, lengths)

    expected = bert_attention(x, w, bs_mask(lengths, seq), heads)
    assert np.abs(from_plugin(out)[0, : lengths[0]] - expected[0, : lengths[0]]).max() > 0.1


def test_qkv_to_context_catches_batch_major_inputs():
    hidden, heads, seq, batch = SMALL
    rng = np.random.default_rng(4)
    x = rng.normal(size=(batch, seq, hidden))
    w = attention_weights(rng, hidden)
    w_packed, b_packed = packed_qkv(w, heads)
    qkv_bs = (x @ w_packed.T + b_packed).astype(np.float32)[..., None, None]  # [B, S, 3E, 1, 1]
    attrs = dict(type_id=0, hidden_size=hidden, num_heads=heads)

    # With a mask, the [B, 1] mask index no longer matches dim 1 (read as B).
    mask_idx = valid_lengths(seq, batch).astype(np.int32)[:, None]
    with pytest.raises(ValueError, match="mask index"):
        run_plugin("CustomQKVToContextPluginDynamic", {"qkv": qkv_bs, "mask_idx": mask_idx}, has_mask=1, **attrs)

    # Without one, attention silently runs across the batch: a wrong result.
    (out,) = run_plugin("CustomQKVToContextPluginDynamic", {"qkv": qkv_bs}, has_mask=0, **attrs)
    expected = bert_attention(x, w, np.ones((batch, seq)), heads)
    assert np.abs(out[..., 0, 0] - expected).max() > 0.1


# ---- packing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,heads", [(64, 2), (384, 12)])
def test_pack_unpack_round_trip_and_layout(hidden, heads):
    rng = np.random.default_rng(hidden)
    tensors = [rng.normal(size=(hidden, hidden)) for _ in range(3)] + [rng.normal(size=hidden) for _ in range(3)]
    w_packed, b_packed = pack_qkv(*tensors, heads)

    assert w_packed.shape == (3 * hidden, hidden) and b_packed.shape == (3 * hidden,)
    h = hidden // heads
    for n in range(heads):
        for j in range(3):  # Q, K, V of head n are adjacent: rows n*3H + j*H ...
            rows = slice(n * 3 * h + j * h, n * 3 * h + (j + 1) * h)
            assert np.array_equal(w_packed[rows], tensors[j][:, n * h : (n + 1) * h].T)
            assert np.array_equal(b_packed[rows], tensors[3 + j][n * h : (n + 1) * h])
    for got, want in zip(unpack_qkv(w_packed, b_packed, heads), tensors):
        assert np.array_equal(got, want)


# ---- attribute sets and precision --------------------------------------------------------------------------

def test_v3_attribute_sets_match_v2():
    hidden, heads, seq, batch = SMALL
    rng = np.random.default_rng(5)
    w = embedding_weights(rng, hidden, seq)
    ids, seg, mask, lengths = token_inputs(rng, seq, batch)
    tokens = {"input_ids": ids.T.copy(), "segment_ids": seg.T.copy(), "input_mask": mask.T.copy()}
    v2 = run_plugin("CustomEmbLayerNormPluginDynamic", tokens, 2, **emb_attrs(w))
    v3 = run_plugin(
        "CustomEmbLayerNormPluginDynamic", tokens, 2, plugin_version="6", plugin_namespace="", **emb_attrs(w)
    )
    assert all(np.array_equal(a, b) for a, b in zip(v2, v3))

    x = to_plugin(rng.normal(size=(batch, seq, hidden)).astype(np.float32))
    ln = dict(type_id=0, ld=hidden, gamma=w["gamma"], beta=w["beta"])
    v2 = run_plugin("CustomSkipLayerNormPluginDynamic", {"input": x, "skip": x}, plugin_version="1", **ln)
    v3 = run_plugin("CustomSkipLayerNormPluginDynamic", {"input": x, "skip": x}, plugin_version="5", **ln)
    assert np.array_equal(v2[0], v3[0])

    aw = attention_weights(rng, hidden)
    packed = packed_qkv(aw, heads)
    x = rng.normal(size=(batch, seq, hidden))
    v2 = run_attention(x, *packed, hidden, heads, lengths)
    v3 = run_attention(x, *packed, hidden, heads, lengths, plugin_version="4")
    assert np.array_equal(v2, v3)


def test_fp16_flags_cast_outputs():
    hidden, heads, seq, batch = SMALL
    rng = np.random.default_rng(6)
    w = embedding_weights(rng, hidden, seq)
    ids, seg, mask, lengths = token_inputs(rng, seq, batch)
    tokens = {"input_ids": ids.T.copy(), "segment_ids": seg.T.copy(), "input_mask": mask.T.copy()}
    attrs = emb_attrs(w)
    attrs.update(output_fp16=1, mha_type_id=1)
    emb16, idx = run_plugin("CustomEmbLayerNormPluginDynamic", tokens, 2, **attrs)
    assert emb16.dtype == np.float16 and idx.dtype == np.int32
    assert np.abs(from_plugin(emb16) - bert_embeddings(ids, seg, w)).max() <= 1e-2

    aw = attention_weights(rng, hidden)
    packed = packed_qkv(aw, heads)
    x = rng.normal(size=(batch, seq, hidden))
    qkv = to_plugin(x @ packed[0].T + packed[1]).astype(np.float16)
    (ctx16,) = run_plugin(
        "CustomQKVToContextPluginDynamic",
        {"qkv": qkv, "mask_idx": lengths.astype(np.int32)[:, None]},
        type_id=1, hidden_size=hidden, num_heads=heads, has_mask=1,
    )
    expected = bert_attention(x, aw, bs_mask(lengths, seq), heads)
    assert ctx16.dtype == np.float16
    assert all(np.abs(from_plugin(ctx16)[b, :n] - expected[b, :n]).max() <= 1e-2 for b, n in enumerate(lengths))

    (ln16,) = run_plugin(
        "CustomSkipLayerNormPluginDynamic", {"input": emb16, "skip": emb16},
        type_id=1, ld=hidden, gamma=w["gamma"], beta=w["beta"],
    )
    assert ln16.dtype == np.float16


@pytest.mark.parametrize(
    "attrs,error",
    [
        (dict(plugin_version="5"), NotImplementedError),  # variable-length QKV
        (dict(plugin_namespace="trt"), ValueError),
        (dict(hiddensize=64), ValueError),
        (dict(type_id=2), NotImplementedError),
    ],
)
def test_qkv_attribute_checks(attrs, error):
    hidden, heads, seq, batch = SMALL
    base = dict(type_id=0, hidden_size=hidden, num_heads=heads, has_mask=0)
    base.update(attrs)
    qkv = np.zeros((seq, batch, 3 * hidden, 1, 1), dtype=np.float32)
    with pytest.raises(error):
        run_plugin("CustomQKVToContextPluginDynamic", {"qkv": qkv}, **base)
