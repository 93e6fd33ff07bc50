"""The `plugins` target: TensorRT's fixed-sequence-length BERT plugins (NVIDIA/TensorRT ``plugin/``), as nodes in
domain ``trt.plugins`` that onnx-tensorrt's fallback importer turns into plugin layers.

Graph (E hidden, N heads, H = E / N head size, I intermediate size; S sequence, B batch)::

    input_ids / segment_ids / input_mask [B, S] int32 --Transpose[1,0]--> [S, B]
    CustomEmbLayerNormPluginDynamic(ids, segments, mask) -> x [S, B, E, 1, 1], mask_index [B, 1] int32
    per layer:
      x3   = Squeeze(x, [3, 4])                                         [S, B, E]
      qkv  = Unsqueeze(x3 @ Wqkv + bqkv, [3, 4])                        [S, B, 3E, 1, 1]  (per-head packed)
      ctx  = CustomQKVToContextPluginDynamic(qkv, mask_index)           [S, B, E, 1, 1]
      a    = CustomSkipLayerNormPluginDynamic(Unsqueeze(Squeeze(ctx) @ Wo), x, bias=bo)
      f    = GELU(Squeeze(a) @ W1 + b1)   as plain ONNX ops             [S, B, I]
      x    = CustomSkipLayerNormPluginDynamic(Unsqueeze(f @ W2), a, bias=b2)
    logits = Transpose(Squeeze(x) @ Wqa + bqa, [1, 0, 2])               [B, S, 2], then the export's own
             Slice/Split + Squeeze to start_logits / end_logits [B, S] (the I/O contract is unchanged).

Layouts. The plugins are sequence-major (SDIM 0, BDIM 1): EmbLN reads [S, B] ids, so the [B, S] contract inputs
are transposed first (feeding [B, S] silently swaps S and B: wrong positions and wrong mask index); every
activation between plugins is [S, B, C, 1, 1]. The fully connected layers are ONNX MatMul(+Add) on the rank-3
view (Squeeze/Unsqueeze of the trailing 1, 1), which TensorRT runs as GEMMs (no 1x1 convolutions needed).
Where the matcher found the dense bias of a residual block, it is the SkipLN plugin's ``bias`` field and the
MatMul has no Add. GELU is re-emitted in one canonical form, ``0.5 * y * (1 + erf(y / sqrt(2)))`` or
``0.5 * y * (1 + tanh(sqrt(2/pi) * (y + 0.044715 * y^3)))`` with ``y = MatMul + b1``: TensorRT fuses the
bias + GELU into the GEMM epilogue or one pointwise kernel.

QKV packing. The QKV plugin slices each token's 3E projection as (N, 3, H): head n's Q, K, V sit at columns
``n*3H + {0, H, 2H}`` (qkv_packing.pack_qkv; the plain [Q | K | V] = (3, N, H) concatenation is wrong for N > 1).
The MatMul weight is the packed [3E, E] [out, in] weight transposed to [E, 3E]. The plugin scales scores by
1/sqrt(H); a graph whose matched scale differs (e.g. scale folded into the weights) gets the ratio folded into
the Q weight and bias.

Mask. EmbLN derives the mask index from input_mask: per batch row, the position of the first 0 (S if none),
an INT32 [B, 1] tensor on the unfused path; the QKV plugin attends to keys j < mask_index[b] and gives padded
keys exactly zero probability (the unfused graph adds -10000 or float32 min, whose exp underflows to 0 too).
This equals the unfused graph's key-padding bias only for contiguous masks (1...1 0...0, what bertrt's features
produce); padded query rows then also match (both attend to the valid keys only). A mask with a hole (1 1 0 1)
is cut at the first 0: keys after the hole are dropped (measured: logits off by ~1 on a random model).

Fused MHA kernels. With FP16/INT8 (``type_id``/``mha_type_id`` 1 or 2) on SM 75+ the EmbLN plugin emits the
packed mask and the QKV plugin runs TensorRT's fused multi-head-attention cubins only for head size 64 and
S in {64, 96, 128, 384} (plus 256 and 512 on sm90+/newer kernels); any other head size or length, and FP32
always, takes the unfused path (cuBLAS batched GEMMs + softmax kernel). The embedded model (head size 32) and
the hidden-64/128 test models therefore always run unfused, whatever the precision; BERT-base/large shapes
(H = 64) at S = 128/384 in FP16 get the fused kernels.

Epsilon. Neither plugin has an epsilon field. EmbLN adds none; SkipLN adds ``numeric_limits<T>::epsilon()``
(2^-23 FP32, 2^-10 FP16) for hidden 768/1024 (skipln_vec kernel) and none for other hidden sizes, where BERT
uses 1e-12. The relative change of the normalised output is about (eps_plugin - eps_model) / (2 var): with the
residual stream's variance of order 1, that is ~6e-8 in FP32 for 768/1024 and ~5e-13 elsewhere (far below FP32
GEMM rounding), and ~5e-4 at FP16 for 768/1024 (FP16 activations round at 2^-11 ~ 4.9e-4 anyway). Measured on
the hidden-768 random model (S 384, B 3): worst logits error 5.15e-5 with the plugin's 2^-23, with 0 and with
1e-12 alike (all of it FP32 evaluation order); even 1e-5 only moves it to 5.34e-5. The embeddings LayerNorm
(no epsilon instead of 1e-12) is likewise invisible.

Precision. ``precision="fp32"`` (default) sets type_id / output_fp16 / mha_type_id to 0 (nvinfer1 FP32);
"fp16" sets them to 1 (FP16) so a later precision stage can reuse this emitter. Only the plugin fields change:
the ONNX MatMul/GELU/Transpose ops and their constants stay FP32, so an "fp16" graph needs the precision stage
to convert them (or insert Casts) before it is type-consistent.

Plugin versions: ``plugin_api="v3"`` -> EmbLN "6", SkipLN "5", QKV "4" (IPluginV3 creators); "v2" -> "1" for
all three (IPluginV2 creators); ``plugin_namespace`` "" always. Field names/types: see plugin_reference.py.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_model import ModelMatches
from bertrt.surgery.pattern import const_value, producer_op
from bertrt.surgery.plugin_reference import (
    EMB_LAYER_NORM_VERSIONS,
    PLUGIN_DOMAIN,
    QKV_TO_CONTEXT_VERSIONS,
    SKIP_LAYER_NORM_VERSIONS,
    TYPE_FP16,
    TYPE_FP32,
)
from bertrt.surgery.qkv_packing import pack_qkv

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

EMB_LN, SKIP_LN, QKV = ("CustomEmbLayerNormPluginDynamic", "CustomSkipLayerNormPluginDynamic",
                        "CustomQKVToContextPluginDynamic")
# plugin_api -> (EmbLN, SkipLN, QKV) plugin_version
PLUGIN_VERSIONS = {api: tuple(v[i] for v in (EMB_LAYER_NORM_VERSIONS, SKIP_LAYER_NORM_VERSIONS,
                                              QKV_TO_CONTEXT_VERSIONS)) for i, api in enumerate(("v2", "v3"))}
PRECISIONS = {"fp32": TYPE_FP32, "fp16": TYPE_FP16}  # -> nvinfer1::DataType for type_id / mha_type_id
SB = ["seq", "batch"]  # symbolic dims of the sequence-major tensors


class _Emitter:
    def __init__(self, graph: gs.Graph, versions: tuple[str, str, str], type_id: int):
        self.graph = graph
        self.versions = dict(zip((EMB_LN, SKIP_LN, QKV), versions))
        self.type_id = type_id
        self.counts = {"embedding": 0, "skip_layernorm": 0, "attention": 0, "gelu": 0}
        self._axes = None

    def const(self, name: str, value, dtype=np.float32) -> gs.Constant:
        return gs.Constant(name, np.ascontiguousarray(value, dtype=dtype))

    def var(self, name: str, shape: list, dtype=np.float32) -> gs.Variable:
        return gs.Variable(name, dtype, shape)

    def op(self, op: str, name: str, inputs: list, shape: list | None, attrs: dict | None = None,
           dtype=np.float32) -> gs.Variable:
        out = self.var(f"{name}:0", shape, dtype)
        self.graph.nodes.append(gs.Node(op, name, attrs or {}, inputs, [out]))
        return out

    def plugin(self, op: str, name: str, inputs: list, outputs: list, fields: dict) -> None:
        attrs = {k: self.const(f"{name}.{k}", v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}
        attrs.update(plugin_version=self.versions[op], plugin_namespace="")
        self.graph.nodes.append(gs.Node(op, name, attrs, inputs, outputs, domain=PLUGIN_DOMAIN))

    def axes(self) -> gs.Constant:
        if self._axes is None:
            self._axes = self.const("plugin_trailing_axes", [3, 4], np.int64)
        return self._axes

    def squeeze(self, x: gs.Variable, name: str) -> gs.Variable:
        return self.op("Squeeze", f"{name}_squeeze", [x, self.axes()], [*SB, x.shape[2]])

    def unsqueeze(self, x: gs.Variable, name: str) -> gs.Variable:
        return self.op("Unsqueeze", f"{name}_unsqueeze", [x, self.axes()], [*SB, x.shape[2], 1, 1])

    def dense(self, x3: gs.Variable, name: str, weight: np.ndarray, bias: np.ndarray | None) -> gs.Variable:
        """[S, B, E_in] @ W [E_in, E_out] (+ b) -> [S, B, E_out]."""
        y = self.op("MatMul", f"{name}_matmul", [x3, self.const(f"{name}_weight", weight)], [*SB, weight.shape[1]])
        if bias is not None:
            y = self.op("Add", f"{name}_bias", [y, self.const(f"{name}_bias", bias)], y.shape)
        return y

    def skip_layernorm(self, name: str, dense3: gs.Variable, skip: gs.Variable, match) -> gs.Variable:
        e = match.layernorm.gamma.shape[0]
        out = self.var(f"{name}:0", [*SB, e, 1, 1])
        fields = {"type_id": self.type_id, "ld": e, "beta": match.layernorm.beta, "gamma": match.layernorm.gamma}
        if match.bias is not None:
            fields["bias"] = match.bias
        self.plugin(SKIP_LN, name, [self.unsqueeze(dense3, name), skip], [out], fields)
        self.counts["skip_layernorm"] += 1
        return out

    def gelu(self, name: str, y: gs.Variable, form: str) -> gs.Variable:
        """Canonical GELU of y (the biased intermediate dense output), elementwise."""
        def c(suffix, value):
            return self.const(f"{name}_{suffix}", np.array(value))

        if form == "erf":
            t = self.op("Div", f"{name}_div", [y, c("sqrt2", math.sqrt(2.0))], y.shape)
            t = self.op("Erf", f"{name}_erf", [t], y.shape)
        else:
            cube = self.op("Mul", f"{name}_cube", [self.op("Mul", f"{name}_square", [y, y], y.shape), y], y.shape)
            t = self.op("Mul", f"{name}_cubic", [cube, c("coef", 0.044715)], y.shape)
            t = self.op("Add", f"{name}_inner", [y, t], y.shape)
            t = self.op("Mul", f"{name}_scale", [t, c("sqrt2pi", math.sqrt(2.0 / math.pi))], y.shape)
            t = self.op("Tanh", f"{name}_tanh", [t], y.shape)
        t = self.op("Add", f"{name}_one_plus", [t, c("one", 1.0)], y.shape)
        t = self.op("Mul", f"{name}_mul", [y, t], y.shape)
        self.counts["gelu"] += 1
        return self.op("Mul", f"{name}_half", [t, c("half", 0.5)], y.shape)


def _dense_weight(t: gs.Tensor, reads: gs.Tensor, what: str) -> np.ndarray:
    """The constant [E_in, E_out] weight of the MatMul producing `t` from `reads`."""
    node = producer_op(t, "MatMul")
    weight = const_value(node.inputs[1]) if node is not None else None
    if weight is None or weight.ndim != 2 or node.inputs[0] is not reads:
        raise BertrtError(f"plugins target: {what} is not a MatMul by a constant weight of the expected input "
                          f"(a dense without a separate bias Add is not supported)")
    return weight.astype(np.float32)


def _qa_head(hidden: gs.Tensor) -> tuple[np.ndarray, np.ndarray, gs.Variable] | None:
    """(weight [E, 2], bias [2], the [B, S, 2] output) of the QA head reading the final hidden states, if it is the
    only consumer and is MatMul + Add of constants; else None (the hidden states are transposed back instead)."""
    if len(hidden.outputs) != 1 or hidden.outputs[0].op != "MatMul":
        return None
    matmul = hidden.outputs[0]
    weight = const_value(matmul.inputs[1])
    adds = matmul.outputs[0].outputs
    if weight is None or weight.ndim != 2 or len(adds) != 1 or adds[0].op != "Add":
        return None
    add = adds[0]
    bias = [const_value(t) for t in add.inputs if t is not matmul.outputs[0]]
    if len(bias) != 1 or bias[0] is None or bias[0].shape != (weight.shape[1],):
        return None
    return weight.astype(np.float32), bias[0].astype(np.float32), add.outputs[0]


def to_sequence_major(out: _Emitter, t: gs.Variable) -> gs.Variable:
    """[B, S] int32 contract input -> [S, B], the layout EmbLN reads."""
    return out.op("Transpose", f"{t.name}_to_sb", [t], SB, {"perm": [1, 0]}, np.int32)


def emit(graph: gs.Graph, matches: ModelMatches, cfg: BertConfig, plugin_api: str = "v3",
         precision: str = "fp32") -> dict[str, int]:
    """Rewrite `graph` in place with TensorRT BERT plugin nodes; return the number of blocks fused per type.
    `plugin_api` "v3" (IPluginV3 versions) or "v2" (IPluginV2): a key of PLUGIN_VERSIONS, validated by the
    `plugins` Target (bertrt/targets/plugins.py); `precision` "fp32" or "fp16" (plugin fields only, not a surgery
    option). `matches` must be complete (report.check_matches passed)."""
    if precision not in PRECISIONS:
        raise BertrtError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    type_id = PRECISIONS[precision]
    out = _Emitter(graph, PLUGIN_VERSIONS[plugin_api], type_id)
    emb = matches.embedding
    e = emb.word_embeddings.shape[1]

    # Embeddings: [B, S] contract inputs -> [S, B] -> EmbLN.
    sb_inputs = [to_sequence_major(out, t) for t in (emb.input_ids, emb.segment_ids, matches.mask.input_mask)]
    x = out.var("embeddings:0", [*SB, e, 1, 1])
    mask_index = out.var("mask_index", ["batch", 1], np.int32)
    out.plugin(EMB_LN, "embeddings", sb_inputs, [x, mask_index], {
        "bert_embeddings_layernorm_beta": emb.layernorm.beta,
        "bert_embeddings_layernorm_gamma": emb.layernorm.gamma,
        "bert_embeddings_word_embeddings": emb.word_embeddings,
        "bert_embeddings_token_type_embeddings": emb.token_type_embeddings,
        "bert_embeddings_position_embeddings": emb.position_embeddings,
        "output_fp16": int(type_id == TYPE_FP16), "full_mask": 0, "mha_type_id": type_id,
    })
    out.counts["embedding"] += 1

    previous = emb.output  # the unfused tensor the next layer reads (for structure checks)
    for layer in matches.layers:
        n, att, a_skip, gelu, f_skip = layer.index, layer.attention, layer.attention_skip, layer.gelu, layer.ffn_skip
        if att.input is not previous or a_skip.skip is not previous or f_skip.skip is not a_skip.output:
            raise BertrtError(f"plugins target: layer {n} is not wired as a post-LN BERT layer")
        name = f"layer{n}"

        # Self-attention: per-head packed QKV projection -> QKV plugin. The plugin scales by 1/sqrt(H).
        correction = att.scale * math.sqrt(att.head_size)
        wq, bq = att.q_weight * correction, att.q_bias * correction
        w_packed, b_packed = pack_qkv(wq, att.k_weight, att.v_weight, bq, att.k_bias, att.v_bias, att.num_heads)
        x3 = out.squeeze(x, name)
        qkv = out.unsqueeze(out.dense(x3, f"{name}_qkv", w_packed.T, b_packed), f"{name}_qkv")
        ctx = out.var(f"{name}_context:0", [*SB, e, 1, 1])
        out.plugin(QKV, f"{name}_attention", [qkv, mask_index], [ctx],
                   {"type_id": type_id, "hidden_size": e, "num_heads": att.num_heads, "has_mask": 1})
        out.counts["attention"] += 1

        # Attention output dense -> SkipLN(+ dense bias) with the layer input as the residual.
        wo = _dense_weight(a_skip.input, att.output, f"layer {n} attention output dense")
        dense = out.dense(out.squeeze(ctx, f"{name}_context"), f"{name}_attention_output", wo, None)
        a = out.skip_layernorm(f"{name}_attention_skip_layernorm", dense, x, a_skip)

        # FFN: intermediate dense + bias + GELU as ONNX ops, output dense -> SkipLN(+ bias).
        a3 = out.squeeze(a, f"{name}_attention_skip_layernorm")
        w1 = _dense_weight(gelu.input, a_skip.output, f"layer {n} intermediate dense")
        y = out.dense(a3, f"{name}_intermediate", w1, gelu.bias)
        f = out.gelu(f"{name}_gelu", y, gelu.form)
        w2 = _dense_weight(f_skip.input, gelu.output, f"layer {n} FFN output dense")
        x = out.skip_layernorm(f"{name}_ffn_skip_layernorm", out.dense(f, f"{name}_ffn_output", w2, None), a, f_skip)
        previous = f_skip.output

    # Back to the contract: QA head on [S, B, E], transpose the [S, B, 2] logits to the export's [B, S, 2] tensor,
    # whose existing Slice/Split + Squeeze produce start/end logits. Without a recognisable head, transpose the
    # hidden states back to [B, S, E] for whatever the export computes from them.
    head = _qa_head(previous)
    x3 = out.squeeze(x, "encoder_output")
    if head is not None:
        weight, bias, head_out = head
        logits = out.dense(x3, "qa_head", weight, bias)
        head_out.inputs.clear()
        graph.nodes.append(gs.Node("Transpose", "qa_logits_to_bs", {"perm": [1, 0, 2]}, [logits], [head_out]))
    else:
        previous.inputs.clear()
        graph.nodes.append(gs.Node("Transpose", "encoder_output_to_bs", {"perm": [1, 0, 2]}, [x3], [previous]))
    return out.counts
