"""The `native` target: plain ONNX (default domain, opset 17 — or the export's own opset where it is newer, as the
dynamo exporter's 18-20: lowering it would mean rewriting ops such as Split-18 — no plugins, no contrib ops) in the
forms TensorRT 10 and 11 fuse by themselves, and that onnxruntime runs on any provider.

- Every LayerNorm is one ``LayerNormalization(x, gamma, beta, axis=-1, epsilon)`` (opset 17): the embeddings LN
  reads the embedding sum as the exporter built it (the Gathers and the position slice stay); each residual
  closes as ``Add(Add(MatMul, bias), residual)`` -> LayerNormalization, the dense bias kept next to its MatMul.
- GELU is rebuilt in one canonical form with its bias Add right after the intermediate MatMul, so TensorRT can
  fuse MatMul + bias + GELU into one GEMM epilogue:
  erf:  ``y = (x + b); y * (1 + Erf(y / sqrt2)) * 0.5``  (torch.onnx's node order: Div, Erf, Add, Mul, Mul);
  tanh: ``y * (1 + Tanh(sqrt(2/pi) * (y + 0.044715 * Pow(y, 3)))) * 0.5``.
  (ONNX ``Gelu`` only exists from opset 20; this target stays on 17.)
- The key-padding mask is one additive bias computed once from input_mask and shared by all layers:
  ``Unsqueeze((1 - Cast(input_mask)) * filter_value, [1, 2])`` -> [B, 1, 1, S] (0 for tokens, the source model's
  large negative filter value, e.g. -10000, for padding), broadcast over heads and query rows.
- Attention (default ``attention="matmul"``): ONE packed QKV GEMM ``x @ W[E, 3E] + b[3E]`` (Q, K, V order),
  ``Split`` on the last axis, per part ``Reshape [0, 0, N, H]`` + ``Transpose`` (Q, V: [B, N, S, H]; K: [B, N, H, S]),
  ``Mul(Q, scale)``, then ``MatMul -> Add(mask bias) -> Softmax(-1) -> MatMul`` and the head merge
  ``Transpose [0, 2, 1, 3] -> Reshape [0, 0, E]``.
  ``attention="onnx-attention"`` instead emits the opset-23 ``Attention(Q, K, V, attn_mask)`` op on the 3-D
  [B, S, E] Q/K/V of the same packed GEMM (q_num_heads = kv_num_heads = N, scale attribute) and raises the
  model's default opset to 23. The mask is expanded to [B, 1, S, S] for it (see _full_mask). onnx's versioning
  table pairs opset 23 with IR 11, so run_surgery raises the model's IR to 11 with it (pipeline._IR_FOR_OPSET).
  The option is `bertrt surgery --target native --attention onnx-attention`; its choices are ATTENTION_FORMS,
  validated by the `native` Target (bertrt/targets/native.py) before any work.

Why this attention form (sources read 2026-11, stored copies):
- TensorRT "Fused Attention" guide (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
  transformers-fused-attention.html): fusion is triggered either by IAttention (method 1) or by "an attention
  graph using primitive INetwork layers like IMatrixMultiplyLayer and ISoftMaxLayer" (method 2), computing
  softmax(Q*K^T + mask)*V with an *add* mask (or a boolean one) on Q of shape [B, N_q, S_q, H] and K/V of
  [B, N_kv, S_kv, H]; "TensorRT requires Q or K to be multiplied with attention scale ... before going into
  IAttention or the first Batched Matrix Multiply (BMM)". Hence the explicit ``Mul(Q, scale)`` before the first
  MatMul (rather than a Mul on the scores) and the Add mask between the first MatMul and the Softmax. The same
  MatMul -> Add -> Softmax -> MatMul graph is what Myelin's MHA fusion consumed in TensorRT 8.x/10.x
  (NVIDIA/TensorRT issue #2576: "Myelin provides TRT with the capability of doing ... MHA fusions"), and the
  TensorRT 10.10 release notes list "Improved MHA fusion logic to detect wider variants of MHA patterns".
- The ONNX ``Attention`` op: the onnx-tensorrt parser added it in the TensorRT 10.14 GA parser update ("Added
  support for the Attention operator"); its importer (onnx-tensorrt onnxOpImporters.cpp,
  ``DEFINE_BUILTIN_OP_IMPORTER(Attention)``) maps it to ``network->addAttention`` (IAttention), rejecting past
  key/value and extra outputs, and makes it non-decomposable unless the non-standard ``TRT_decomposable``
  attribute is set (so an engine build fails where no fused kernel exists, e.g. some FP32 shapes). onnxruntime
  1.23 runs Attention-23 on CPU (microsoft/onnxruntime PR #25156). TensorRT < 10.14 cannot parse it at all.
So the default is the opset-17 primitive form: it parses on every TensorRT 10/11 and onnxruntime, and TensorRT
fuses it (method 2) on both; ``onnx-attention`` is offered for TensorRT >= 10.14 where IAttention is wanted.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_layernorm import LayerNormMatch
from bertrt.surgery.match_model import ModelMatches

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

OPSET = 17
ATTENTION_OPSET = 23  # the ONNX Attention op
MIN_UPGRADABLE_OPSET = 13  # from 13 to 17 no op this graph keeps changes its inputs/attributes (axes-as-input etc.)
ATTENTION_FORMS = ("matmul", "onnx-attention")


class _Builder:
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.counts = {"embedding": 0, "skip_layernorm": 0, "attention": 0, "gelu": 0}
        self._scalars: dict[tuple[str, float], gs.Constant] = {}

    def const(self, name: str, value, dtype=np.float32) -> gs.Constant:
        return gs.Constant(name, np.ascontiguousarray(value, dtype=dtype))

    def scalar(self, value: float) -> gs.Constant:
        """A shared float32 0-d constant (one initializer per distinct value)."""
        key = ("f", float(value))
        if key not in self._scalars:
            self._scalars[key] = self.const(f"native_scalar_{len(self._scalars)}", np.float32(value))
        return self._scalars[key]

    def ints(self, name: str, values: list[int]) -> gs.Constant:
        return self.const(name, np.array(values, dtype=np.int64), np.int64)

    def node(self, op: str, name: str, inputs: list, attrs: dict | None = None,
             output: gs.Variable | None = None, dtype=np.float32, outputs: int = 1):
        """Append a node; `output` (an existing tensor, detached from its old producer) or new variable(s)."""
        if output is not None:
            output.inputs.clear()
            outs = [output]
        else:
            outs = [gs.Variable(f"{name}_out{i}" if outputs > 1 else f"{name}_out", dtype) for i in range(outputs)]
        self.graph.nodes.append(gs.Node(op, name, attrs or {}, inputs, outs))
        return outs[0] if outputs == 1 else outs

    def layernorm(self, name: str, x: gs.Tensor, ln: LayerNormMatch, output: gs.Variable) -> None:
        self.node("LayerNormalization", name,
                  [x, self.const(f"{name}_gamma", ln.gamma), self.const(f"{name}_beta", ln.beta)],
                  {"axis": -1, "epsilon": float(ln.epsilon)}, output=output)


def _set_opset(graph: gs.Graph, opset: int) -> None:
    current = int(graph.opset or 0)
    if current < MIN_UPGRADABLE_OPSET:
        raise BertrtError(f"the native target needs a default-domain opset >= {MIN_UPGRADABLE_OPSET} to raise to "
                          f"{opset}, the model has {current}")
    if current < opset:
        graph.opset = opset
        # graphsurgeon exports the imported opset_import list when there is one: raise the default domain there too
        for opsetid in graph.import_domains or []:
            if opsetid.domain in ("", "ai.onnx"):
                opsetid.version = opset


def _mask_bias(b: _Builder, matches: ModelMatches) -> gs.Variable:
    """[B, 1, 1, S] additive key-padding bias: 0 on tokens, the model's filter value on padding."""
    mask = matches.mask
    m = b.node("Cast", "mask_float", [mask.input_mask], {"to": 1})
    padding = b.node("Sub", "mask_padding", [b.scalar(1.0), m])
    bias = b.node("Mul", "mask_bias_2d", [padding, b.scalar(mask.filter_value)])
    return b.node("Unsqueeze", "mask_bias", [bias, b.ints("mask_bias_axes", [1, 2])])


def _full_mask(b: _Builder, matches: ModelMatches, bias: gs.Variable) -> gs.Variable:
    """The bias expanded to [B, 1, S, S] for the Attention op: onnxruntime 1.23's CPU Attention gives wrong
    results for a [B, 1, 1, S] attn_mask (measured: a 2.0 max error on a 2x6 probe), though the spec allows it."""
    shape = b.node("Shape", "mask_input_shape", [matches.mask.input_mask], dtype=np.int64)
    batch = b.node("Gather", "mask_batch", [shape, b.ints("mask_batch_index", [0])], {"axis": 0}, dtype=np.int64)
    seq = b.node("Gather", "mask_seq2", [shape, b.ints("mask_seq2_index", [1, 1])], {"axis": 0}, dtype=np.int64)
    dims = b.node("Concat", "mask_full_shape", [batch, b.ints("mask_one_head", [1]), seq], {"axis": 0},
                  dtype=np.int64)
    return b.node("Expand", "mask_bias_full", [bias, dims])


def _attention(b: _Builder, n: int, att, mask_bias: gs.Variable, form: str) -> None:
    p = f"layer{n}_attention"
    e = att.num_heads * att.head_size
    weight, bias = att.packed_qkv()
    qkv = b.node("MatMul", f"{p}_qkv_matmul", [att.input, b.const(f"{p}_qkv_weight", weight)])
    qkv = b.node("Add", f"{p}_qkv_bias", [qkv, b.const(f"{p}_qkv_bias_value", bias)])
    q, k, v = b.node("Split", f"{p}_qkv_split", [qkv, b.ints(f"{p}_qkv_split_sizes", [e, e, e])], {"axis": -1},
                     outputs=3)
    if form == "onnx-attention":
        b.node("Attention", f"{p}_attention", [q, k, v, mask_bias],
               {"q_num_heads": att.num_heads, "kv_num_heads": att.num_heads, "scale": float(att.scale)},
               output=att.output)
        b.counts["attention"] += 1
        return
    heads = b.ints(f"{p}_heads_shape", [0, 0, att.num_heads, att.head_size])
    qh = b.node("Transpose", f"{p}_q_heads", [b.node("Reshape", f"{p}_q_split", [q, heads])], {"perm": [0, 2, 1, 3]})
    kt = b.node("Transpose", f"{p}_k_heads_t", [b.node("Reshape", f"{p}_k_split", [k, heads])],
                {"perm": [0, 2, 3, 1]})
    vh = b.node("Transpose", f"{p}_v_heads", [b.node("Reshape", f"{p}_v_split", [v, heads])], {"perm": [0, 2, 1, 3]})
    if att.scale != 1.0:  # TensorRT wants the scale on Q (or K) before the first BMM
        qh = b.node("Mul", f"{p}_q_scale", [qh, b.scalar(att.scale)])
    scores = b.node("MatMul", f"{p}_scores", [qh, kt])
    scores = b.node("Add", f"{p}_scores_masked", [scores, mask_bias])
    probs = b.node("Softmax", f"{p}_softmax", [scores], {"axis": -1})
    ctx = b.node("MatMul", f"{p}_context", [probs, vh])
    ctx = b.node("Transpose", f"{p}_merge_heads", [ctx], {"perm": [0, 2, 1, 3]})
    b.node("Reshape", f"{p}_merge", [ctx, b.ints(f"{p}_merge_shape", [0, 0, e])], output=att.output)
    b.counts["attention"] += 1


def _gelu(b: _Builder, n: int, gelu) -> None:
    p = f"layer{n}_gelu"
    y = b.node("Add", f"{p}_bias", [gelu.input, b.const(f"{p}_bias_value", gelu.bias)])
    if gelu.form == "erf":
        inner = b.node("Erf", f"{p}_erf", [b.node("Div", f"{p}_div_sqrt2", [y, b.scalar(math.sqrt(2.0))])])
    else:
        cube = b.node("Pow", f"{p}_cube", [y, b.scalar(3.0)])
        arg = b.node("Add", f"{p}_cubic", [y, b.node("Mul", f"{p}_cube_coef", [cube, b.scalar(0.044715)])])
        inner = b.node("Tanh", f"{p}_tanh",
                       [b.node("Mul", f"{p}_tanh_arg", [arg, b.scalar(math.sqrt(2.0 / math.pi))])])
    one_plus = b.node("Add", f"{p}_one_plus", [inner, b.scalar(1.0)])
    product = b.node("Mul", f"{p}_times_x", [y, one_plus])
    b.node("Mul", f"{p}_half", [product, b.scalar(0.5)], output=gelu.output)
    b.counts["gelu"] += 1


def _skip_layernorm(b: _Builder, n: int, name: str, skip) -> None:
    p = f"layer{n}_{name}"
    x = skip.input
    if skip.bias is not None:
        x = b.node("Add", f"{p}_dense_bias", [x, b.const(f"{p}_dense_bias_value", skip.bias)])
    total = b.node("Add", f"{p}_residual", [x, skip.skip])
    b.layernorm(f"{p}_layernorm", total, skip.layernorm, skip.output)
    b.counts["skip_layernorm"] += 1


def emit(graph: gs.Graph, matches: ModelMatches, cfg: BertConfig, attention: str = "matmul",
         **options) -> dict[str, int]:
    """Rewrite `graph` in place into the native forms; return the number of blocks rewritten per type.
    `matches` must be complete (report.check_matches passed). `attention`: one of ATTENTION_FORMS, "matmul" (opset
    17, default) or "onnx-attention" (opset-23 Attention op), validated by the `native` Target."""
    if options:
        raise TypeError(f"the native target takes only the `attention` option, got {sorted(options)}")
    _set_opset(graph, ATTENTION_OPSET if attention == "onnx-attention" else OPSET)
    b = _Builder(graph)
    emb = matches.embedding
    b.layernorm("embeddings_layernorm", emb.layernorm.input, emb.layernorm, emb.output)
    b.counts["embedding"] += 1
    mask_bias = _mask_bias(b, matches)
    if attention == "onnx-attention":
        mask_bias = _full_mask(b, matches, mask_bias)
    for layer in matches.layers:
        _attention(b, layer.index, layer.attention, mask_bias, attention)
        _skip_layernorm(b, layer.index, "attention", layer.attention_skip)
        _gelu(b, layer.index, layer.gelu)
        _skip_layernorm(b, layer.index, "ffn", layer.ffn_skip)
    return b.counts
