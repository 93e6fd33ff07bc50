"""The `ort` target: onnxruntime's com.microsoft contrib ops (CPU and CUDA providers).

- EmbedLayerNormalization(input_ids, segment_ids, word, position, segment, gamma, beta, mask) -> (output,
  mask_index): position ids are 0..S-1 (what the embedding matcher proved), mask_index[b] is the per-row valid
  length the Attention nodes take (the key-padding MaskMatch, for bertrt's left-aligned masks).
- Attention(input, weights [E, 3E] in Q,K,V order, bias [3E], mask_index) with num_heads, scale, mask_filter_value.
- SkipLayerNormalization(input, skip, gamma, beta[, bias]).
- BiasGelu(input, bias) for erf GELU, FastGelu(input, bias) for the tanh form (FastGelu is that formula).
Contrib ops' epsilon attribute is `epsilon`; all were checked against onnxruntime 1.23's registered schemas.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_model import ModelMatches

from bertrt.model_config import BertConfig

DOMAIN = "com.microsoft"


class _Emitter:
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.counts = {"embedding": 0, "skip_layernorm": 0, "attention": 0, "gelu": 0}

    def const(self, name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(name, np.ascontiguousarray(value, dtype=np.float32))

    def replace(self, block: str, op: str, name: str, inputs: list, output: gs.Variable, attrs: dict,
                extra_outputs: list | None = None) -> None:
        """Make `output` be produced by a new contrib node; the old producers become dead and cleanup drops them."""
        output.inputs.clear()
        self.graph.nodes.append(gs.Node(op, name, attrs, inputs, [output, *(extra_outputs or [])], domain=DOMAIN))
        self.counts[block] += 1


def emit(graph: gs.Graph, matches: ModelMatches, cfg: BertConfig, **options) -> dict[str, int]:
    """Rewrite `graph` in place with fused contrib nodes; return the number of blocks fused per type.
    `matches` must be complete (report.check_matches passed). No options."""
    if options:
        raise TypeError(f"the ort target takes no options, got {sorted(options)}")
    out = _Emitter(graph)
    emb = matches.embedding
    mask_index = gs.Variable("mask_index", np.int32, ["batch"])
    # Families without token types (RoBERTa, DistilBERT) leave segment_ids and its table out (optional inputs); the
    # position table is already shifted to RoBERTa's offset. ELECTRA's projection stays after the output as exported.
    types = emb.token_type_embeddings is not None
    out.replace("embedding", "EmbedLayerNormalization", "embeddings",
                [emb.input_ids, emb.segment_ids if types else gs.Variable.empty(),
                 out.const("word_embeddings", emb.word_embeddings),
                 out.const("position_embeddings", emb.position_embeddings),
                 out.const("token_type_embeddings", emb.token_type_embeddings) if types else gs.Variable.empty(),
                 out.const("embeddings_gamma", emb.layernorm.gamma), out.const("embeddings_beta", emb.layernorm.beta),
                 matches.mask.input_mask],
                emb.output, {"epsilon": emb.layernorm.epsilon}, [mask_index])

    for layer in matches.layers:
        n, att = layer.index, layer.attention
        weight, bias = att.packed_qkv()
        out.replace("attention", "Attention", f"layer{n}_attention",
                    [att.input, out.const(f"layer{n}_qkv_weight", weight), out.const(f"layer{n}_qkv_bias", bias),
                     mask_index],
                    att.output, {"num_heads": att.num_heads, "scale": att.scale,
                                 "mask_filter_value": att.mask.filter_value})
        for name, skip in (("attention", layer.attention_skip), ("ffn", layer.ffn_skip)):
            inputs = [skip.input, skip.skip, out.const(f"layer{n}_{name}_gamma", skip.layernorm.gamma),
                      out.const(f"layer{n}_{name}_beta", skip.layernorm.beta)]
            if skip.bias is not None:
                inputs.append(out.const(f"layer{n}_{name}_bias", skip.bias))
            out.replace("skip_layernorm", "SkipLayerNormalization", f"layer{n}_{name}_skip_layernorm", inputs,
                        skip.output, {"epsilon": skip.layernorm.epsilon})
        gelu = layer.gelu
        out.replace("gelu", "BiasGelu" if gelu.form == "erf" else "FastGelu", f"layer{n}_gelu",
                    [gelu.input, out.const(f"layer{n}_gelu_bias", gelu.bias)], gelu.output, {})
    return out.counts
