"""DistilBERT: no token types, its own module names (q_lin, sa_layer_norm, ffn.lin1, output_layer_norm) and config
keys (dim, n_layers, n_heads, hidden_dim, activation); the same computation as a BERT layer."""

from __future__ import annotations

import re

from bertrt.families.base import ABSOLUTE, Family, TokenizerSpec

_DENSE = {"attention.q_lin": "attention/self/query", "attention.k_lin": "attention/self/key",
          "attention.v_lin": "attention/self/value", "attention.out_lin": "attention/output/dense",
          "ffn.lin1": "intermediate/dense", "ffn.lin2": "output/dense"}
_NORMS = {"sa_layer_norm": "attention/output/LayerNorm", "output_layer_norm": "output/LayerNorm"}


def weight_map(rest: str) -> tuple[str, bool] | None:
    emb = {"embeddings.word_embeddings.weight": "word_embeddings",
           "embeddings.position_embeddings.weight": "position_embeddings",
           "embeddings.LayerNorm.weight": "LayerNorm/gamma", "embeddings.LayerNorm.bias": "LayerNorm/beta"}
    if rest in emb:
        return f"bert/embeddings/{emb[rest]}", False
    m = re.match(r"^transformer\.layer\.(\d+)\.(.+)\.(weight|bias)$", rest)
    if not m:
        return None
    layer, module, param = m.groups()
    prefix = f"bert/encoder/layer_{layer}/"
    if module in _DENSE:
        return prefix + _DENSE[module] + ("/kernel" if param == "weight" else "/bias"), param == "weight"
    if module in _NORMS:
        return prefix + _NORMS[module] + ("/gamma" if param == "weight" else "/beta"), False
    return None


FAMILY = Family(
    name="distilbert", model_types=("distilbert",), architectures=("DistilBertForQuestionAnswering",),
    hf_inputs=("input_ids", "attention_mask"), token_types=False, position_scheme=ABSOLUTE,
    embedding_projection=False, weight_prefix="distilbert.", weight_map=weight_map,
    config_keys={"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                 "hidden_dim": "intermediate_size", "activation": "hidden_act"},
    tokenizer=TokenizerSpec("wordpiece", "[CLS]", "[SEP]", "[PAD]", pair_seps=1, lowercase=True))
