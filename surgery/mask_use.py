"""Does the export apply the padding mask? Some exports never do (measured: dynamo exports of transformers 5.24 /
torch 2.13 whose logits do not change when the padding is unmasked), so they are wrong on every padded batch.

The attention matcher marks a layer whose scores get no key-padding bias (`MaskMatch.exported` False). Such an
export is accepted only when its outputs provably ignore the mask: evaluated on a probe batch with padding and on
the same batch unmasked, they are equal. The fused blocks then take the mask from input_mask, so the fused model
honours padding as the original (torch) network does; the user is told in one line, and the fusion report says so.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_model import ModelMatches
from bertrt.surgery.probe import evaluate, probe_feed

from bertrt.errors import BertrtError

APPLIED = "applied by the export"
IGNORED = "ignored by the export; applied by the fused model (from input_mask)"
_PROBE_MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=np.int32)


def outputs_ignore_mask(graph: gs.Graph) -> bool:
    """True when the graph's outputs are the same with the probe's padding masked and unmasked."""
    masked = evaluate(graph, list(graph.outputs), probe_feed(_PROBE_MASK))
    unmasked = evaluate(graph, list(graph.outputs), probe_feed(np.ones_like(_PROBE_MASK)))
    return all(np.array_equal(a, b) for a, b in zip(masked, unmasked))


def check_mask_use(graph: gs.Graph, matches: ModelMatches, source: str) -> str:
    """APPLIED or IGNORED (see above) for complete `matches`; raise when only some layers apply the mask, or when
    no layer does but the outputs still depend on it (a mask used some other way: not a BERT form we know)."""
    exported = [layer.attention.mask.exported for layer in matches.layers]
    if all(exported):
        return APPLIED
    missing = [str(i) for i, e in enumerate(exported) if not e]
    if any(exported) or not outputs_ignore_mask(graph):
        raise BertrtError(f"{source}: not fused: attention of layer(s) {', '.join(missing)} adds no padding mask, "
                          "yet the outputs depend on attention_mask (an unknown way of masking)")
    return IGNORED


def ignored_mask_warning(source: str) -> str:
    return (f"warning: {source}: the exported graph ignores attention_mask (its logits do not change when padding "
            "is unmasked), so it is wrong on every padded batch; re-export with torch.onnx.export(..., "
            "dynamo=False, opset_version=17) and check it on a padded batch. The fused model applies the mask "
            "from input_mask, as the original network does.")
