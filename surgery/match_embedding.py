"""Embeddings block: ``LayerNorm(word[input_ids] + token_type[segment_ids] + position[0:S])``.

The word and token-type terms are Gathers from constant tables indexed (possibly through Casts) by the contract
inputs. The position term differs per exporter (tf2onnx: Slice of the table by the runtime sequence length; torch:
Gather by a sliced constant position_ids), so it is recognised by what it computes: evaluated on probe inputs it
must equal rows 0..S-1 of a constant table (the only layout the fused ops support).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.match_layernorm import LayerNormMatch
from bertrt.surgery.pattern import (
    MatchFailure,
    Mismatch,
    const_value,
    ensure_internal,
    producer,
    producer_op,
    skip_casts,
)
from bertrt.surgery.probe import evaluate, probe_feed


@dataclass(frozen=True)
class EmbeddingMatch:
    """The embeddings block. Tables are [rows, E] float32; `input_ids`/`segment_ids` are the graph inputs."""

    input_ids: gs.Variable
    segment_ids: gs.Variable
    word_embeddings: np.ndarray  # [vocab, E]
    token_type_embeddings: np.ndarray  # [type_vocab, E]
    position_embeddings: np.ndarray  # [max_positions, E]; row s is added at sequence position s
    layernorm: LayerNormMatch
    nodes: tuple[gs.Node, ...]  # sum tree, gathers and LayerNorm (position indexing nodes are left to cleanup)

    @property
    def output(self) -> gs.Variable:
        return self.layernorm.output


def _sum_leaves(t: gs.Tensor, nodes: list[gs.Node]) -> list[gs.Tensor]:
    node = producer_op(t, "Add")
    if node is None:
        return [t]
    nodes.append(node)
    return _sum_leaves(node.inputs[0], nodes) + _sum_leaves(node.inputs[1], nodes)


def _table_gather(t: gs.Tensor) -> tuple[gs.Node, np.ndarray, gs.Tensor] | None:
    node = producer_op(t, "Gather")
    if node is None or int(node.attrs.get("axis", 0)) != 0:
        return None
    table = const_value(node.inputs[0])
    if table is None or table.ndim != 2:
        return None
    return node, table, skip_casts(node.inputs[1])


def _position_table(graph: gs.Graph, leaf: gs.Tensor, hidden: int) -> np.ndarray:
    part = "position embeddings"
    tables, seen, stack = [], set(), [leaf]
    while stack:  # the float [P, E] constant(s) the position term is computed from
        t = stack.pop()
        value = const_value(t)
        if value is not None:
            if value.ndim == 2 and value.shape[1] == hidden and value.dtype.kind == "f":
                tables.append(value)
            continue
        node = producer(t)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.inputs)
    if len(tables) != 1:
        raise Mismatch(part, f"expected one constant [positions, {hidden}] table, found {len(tables)}")
    table = tables[0].astype(np.float32)
    for batch, seq in ((2, 5), (1, min(3, table.shape[0]))):
        (value,) = evaluate(graph, [leaf], probe_feed(np.ones((batch, seq))))
        want = table[:seq]
        if value.shape[-2:] != want.shape or not np.array_equal(np.broadcast_to(value, (batch, *want.shape))[0], want):
            raise Mismatch(part, f"the position term is not rows 0..S-1 of the table (checked at S={seq})")
    return table


def match_embedding(graph: gs.Graph, layernorms: list[LayerNormMatch]) -> EmbeddingMatch | MatchFailure:
    """The embeddings block: the LayerNorm whose input sums a Gather indexed by the graph input input_ids."""
    inputs = {t.name: t for t in graph.inputs}  # contract input names (see prepare.py), not node names
    ids, segments = inputs.get("input_ids"), inputs.get("segment_ids")
    try:
        for ln in layernorms:
            sum_nodes: list[gs.Node] = []
            leaves = _sum_leaves(ln.input, sum_nodes)
            gathers = {id(leaf): _table_gather(leaf) for leaf in leaves}
            word = [leaf for leaf in leaves if gathers[id(leaf)] and gathers[id(leaf)][2] is ids]
            if not word:
                continue
            if len(leaves) != 3:
                raise Mismatch("embedding sum", f"expected word + token type + position terms, found {len(leaves)}")
            types = [leaf for leaf in leaves if gathers[id(leaf)] and gathers[id(leaf)][2] is segments]
            if len(types) != 1:
                raise Mismatch("token type embeddings", "no Gather of a table by segment_ids")
            (position,) = [leaf for leaf in leaves if leaf is not word[0] and leaf is not types[0]]
            word_node, word_table, _ = gathers[id(word[0])]
            type_node, type_table, _ = gathers[id(types[0])]
            hidden = word_table.shape[1]
            if type_table.shape[1] != hidden or ln.gamma.shape != (hidden,):
                raise Mismatch("embedding sum", "tables and LayerNorm disagree on the hidden size")
            pos_table = _position_table(graph, position, hidden)
            nodes = [*sum_nodes, word_node, type_node, *ln.nodes]
            ensure_internal([*sum_nodes, word_node, type_node], ln.input, "embedding sum")
            return EmbeddingMatch(ids, segments, word_table.astype(np.float32), type_table.astype(np.float32),
                                  pos_table, ln, tuple(nodes))
        raise Mismatch("embedding LayerNorm", "no LayerNorm over a sum with a Gather indexed by input_ids"
                       + ("" if layernorms else " (the graph has no LayerNorm at all)"))
    except Mismatch as exc:
        return MatchFailure("embeddings", exc.part, exc.detail)
