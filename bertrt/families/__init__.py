"""The model-family registry: one module per family (bert, roberta, xlm_roberta, distilbert, electra), one line
each below. `get_family(model_type)` refuses any other family in one line naming it and what bertrt lacks for it."""

from __future__ import annotations

from bertrt.families import bert, distilbert, electra, roberta, xlm_roberta
from bertrt.families.base import ABSOLUTE, PADDING_OFFSET, Family, TokenizerSpec, refuse

FAMILIES: dict[str, Family] = {f.name: f for f in (
    bert.FAMILY,
    roberta.FAMILY,
    xlm_roberta.FAMILY,
    distilbert.FAMILY,
    electra.FAMILY,
)}

# Families users bring that bertrt knows it cannot run, and the one thing missing for each.
_MISSING = {
    "deberta": "disentangled relative-position attention (c2p/p2c terms) has no fused form here",
    "deberta-v2": "disentangled relative-position attention (c2p/p2c terms) has no fused form here",
    "albert": "cross-layer parameter sharing and factorized embeddings are not matched",
    "modernbert": "rotary position embeddings, GeGLU and local/global alternating attention are not matched",
    "longformer": "sliding-window + global attention is not matched",
    "bigbird": "block-sparse attention is not matched",
    "mpnet": "relative position bias in attention is not matched",
    "xlnet": "two-stream relative attention is not a BERT encoder",
    "funnel": "pooling between blocks is not a BERT encoder",
    "mobilebert": "bottleneck layers and NoNorm are not matched",
}

__all__ = ["ABSOLUTE", "PADDING_OFFSET", "FAMILIES", "Family", "TokenizerSpec", "family_of_config", "get_family",
           "register"]


def register(family: Family) -> Family:
    """Add a family (what each module's registry line does); returns it."""
    for other in FAMILIES.values():
        clash = set(other.model_types) & set(family.model_types)
        if clash and other.name != family.name:
            raise ValueError(f"model_type(s) {sorted(clash)} already belong to family {other.name!r}")
    FAMILIES[family.name] = family
    return family


def get_family(model_type: str) -> Family:
    """The family covering a Hugging Face model_type (or a family name); a one-line BertrtError otherwise."""
    key = str(model_type).lower().replace("_", "-")
    for family in FAMILIES.values():
        if key == family.name or key in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise refuse(model_type, known, _MISSING.get(key, "no bertrt family module declares it (its inputs, positions, "
                                                      "embedding layout and weight names are unknown)"))


def family_of_config(hf_config: dict) -> Family:
    """The family of a Hugging Face config.json dict (its model_type; BERT when a config has none, as Google's
    bert_config.json)."""
    model_type = hf_config.get("model_type", "bert")
    if not isinstance(model_type, str):
        raise refuse(repr(model_type), [], "model_type is not a string")
    return get_family(model_type)
