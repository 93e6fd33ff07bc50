"""Match the whole encoder by walking the residual stream: embeddings LayerNorm -> per layer (attention, attention
skip-LayerNorm, GELU, FFN skip-LayerNorm) -> next layer, until no residual LayerNorm follows.

This is the matcher API the emitters consume: ``match_model(graph, cfg)`` -> ``ModelMatches``. Each block is a
dataclass of the nodes it covers, its weights (numpy) and its boundary tensors, or a ``MatchFailure``. Emitters
replace a block by writing new nodes whose output is the block's `output` tensor (after detaching the old
producer), then ``graph.cleanup()`` drops the unused originals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs
from bertrt.surgery.match_attention import AttentionMatch, MaskMatch, match_attention
from bertrt.surgery.match_embedding import EmbeddingMatch, match_embedding
from bertrt.surgery.match_gelu import GeluMatch, match_gelu
from bertrt.surgery.match_layernorm import find_layernorms
from bertrt.surgery.match_skip_layernorm import SkipLayerNormMatch, match_skip_layernorm
from bertrt.surgery.pattern import MatchFailure

from bertrt.model_config import BertConfig


@dataclass
class LayerMatches:
    index: int
    attention: AttentionMatch | MatchFailure
    attention_skip: SkipLayerNormMatch | MatchFailure
    gelu: GeluMatch | MatchFailure
    ffn_skip: SkipLayerNormMatch | MatchFailure

    def blocks(self) -> list:
        return [self.attention, self.attention_skip, self.gelu, self.ffn_skip]


@dataclass
class ModelMatches:
    embedding: EmbeddingMatch | MatchFailure
    layers: list[LayerMatches] = field(default_factory=list)
    failure: MatchFailure | None = None  # why the residual walk stopped early, if it did

    @property
    def mask(self) -> MaskMatch | None:
        found = [la.attention.mask for la in self.layers if isinstance(la.attention, AttentionMatch)]
        return found[0] if found else None

    def failures(self) -> list[MatchFailure]:
        blocks = [self.embedding] + [b for la in self.layers for b in la.blocks()]
        return [b for b in blocks if isinstance(b, MatchFailure)] + ([self.failure] if self.failure else [])


def match_model(graph: gs.Graph, cfg: BertConfig | None = None) -> ModelMatches:
    """Match every block. With `cfg`, the walk covers cfg.num_hidden_layers layers and the GELU must have cfg's
    form; without it (a foreign export being adapted) it follows the residual stream while it continues."""
    layernorms = find_layernorms(graph)
    matches = ModelMatches(match_embedding(graph, layernorms))
    if isinstance(matches.embedding, MatchFailure):
        return matches
    x = matches.embedding.encoder_input
    masks: dict[int, MaskMatch] = {}
    expected = cfg.num_hidden_layers if cfg is not None else (len(layernorms) - 1) // 2
    for n in range(expected):
        attention = match_attention(graph, x, n, masks)
        attention_skip = match_skip_layernorm(x, n, "attention")
        if isinstance(attention_skip, MatchFailure):
            gelu, ffn_skip = (MatchFailure(f"layer {n}", "FFN", "not reached: the attention block's end did not "
                                           "match"),) * 2
        else:
            gelu = match_gelu(attention_skip.output, n, cfg.gelu if cfg is not None else None)
            ffn_skip = match_skip_layernorm(attention_skip.output, n, "ffn")
        matches.layers.append(LayerMatches(n, attention, attention_skip, gelu, ffn_skip))
        if isinstance(ffn_skip, MatchFailure):
            break
        x = ffn_skip.output
    if len(matches.layers) < expected and not matches.failures():
        matches.failure = MatchFailure(f"layer {len(matches.layers)}", "encoder layer", "the residual stream ended")
    elif not matches.failures() and len(layernorms) > 1 + 2 * expected:
        matches.failure = MatchFailure("graph", "LayerNorm", f"{len(layernorms)} LayerNorms, but {expected} layers "
                                       f"account for {1 + 2 * expected}")
    return matches
