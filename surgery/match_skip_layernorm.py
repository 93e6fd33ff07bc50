"""Residual + LayerNorm closing each sublayer: ``LayerNorm(dense_out [+ bias] + residual)``.

The residual is the sublayer's input (the previous block's output), which is how the two operands of the Add are
told apart; the dense bias Add, when it feeds the residual Add directly, is folded into the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_layernorm import LayerNormMatch, match_layernorm_of
from bertrt.surgery.pattern import (
    MatchFailure,
    Mismatch,
    consumers,
    ensure_internal,
    other_input,
    producer_op,
    split_const,
)


@dataclass(frozen=True)
class SkipLayerNormMatch:
    """``output = LayerNorm(input + skip [+ bias])``; `input` is the sublayer's dense MatMul output when the bias
    was found (bias not None), else the whole sublayer output."""

    input: gs.Variable  # [B, S, E]
    skip: gs.Variable  # the residual: the sublayer's input
    bias: np.ndarray | None  # [E]
    layernorm: LayerNormMatch
    nodes: tuple[gs.Node, ...]

    @property
    def output(self) -> gs.Variable:
        return self.layernorm.output


def match_skip_layernorm(residual: gs.Tensor, layer: int, sublayer: str) -> SkipLayerNormMatch | MatchFailure:
    """The residual Add + LayerNorm that closes the sublayer ("attention" or "ffn") whose input is `residual`."""
    part = f"{sublayer} residual Add + LayerNorm"
    try:
        adds = consumers(residual, "Add")
        if not adds:
            raise Mismatch(part, "the sublayer input feeds no residual Add")
        errors = []
        for add in adds:
            try:
                ln = match_layernorm_of(add.outputs[0])
            except Mismatch as exc:
                errors.append(exc)
                continue
            branch = other_input(add, residual)
            nodes = [add]
            bias = None
            bias_add = producer_op(branch, "Add")
            split = split_const(bias_add) if bias_add is not None else None
            if split is not None and split[0].ndim == 1 and producer_op(split[1], "MatMul") is not None:
                bias, branch = split[0].astype(np.float32), split[1]
                nodes.append(bias_add)
            nodes += ln.nodes
            ensure_internal(nodes, ln.output, part)
            return SkipLayerNormMatch(branch, residual, bias, ln, tuple(nodes))
        raise Mismatch(f"{sublayer} {errors[0].part}", errors[0].detail)
    except Mismatch as exc:
        return MatchFailure(f"layer {layer}", exc.part, exc.detail)
