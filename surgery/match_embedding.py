"""Embeddings block: ``LayerNorm(word[input_ids] + token_type[segment_ids] + position[offset:offset+S])``, then,
for ELECTRA, a projection ``x @ W + b`` (embedding_size -> hidden_size).

The word and token-type terms are Gathers from constant tables indexed (possibly through Casts) by the contract
inputs. The other terms differ per exporter and family (tf2onnx: Slice of the table by the runtime sequence length;
torch: Gather by a sliced constant position_ids; RoBERTa: Gather by cumsum(ids != pad) * (ids != pad) + pad; a
RoBERTa or DistilBERT export without token_type_ids: a constant token-type row), so they are recognised by what
they compute: evaluated on probe inputs, exactly one must equal rows offset..offset+S-1 of a constant table, and any
other must be the same row at every position (it is folded into the position table). A token-type table of one row
is such a constant too: the family has no token types and the fused model ignores segment_ids.
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
    consumers,
    ensure_internal,
    producer,
    producer_op,
    skip_casts,
    split_const,
)
from bertrt.surgery.probe import evaluate, probe_feed


@dataclass(frozen=True)
class Projection:
    """ELECTRA's ``embeddings_project``: ``output = input @ weight + bias`` after the embedding LayerNorm (left in
    the graph as the exporter wrote it; every target fuses around it)."""

    weight: np.ndarray  # [E, H]
    bias: np.ndarray  # [H]
    output: gs.Variable


@dataclass(frozen=True)
class EmbeddingMatch:
    """The embeddings block. Tables are [rows, E] float32; `input_ids`/`segment_ids` are the graph inputs."""

    input_ids: gs.Variable
    segment_ids: gs.Variable
    word_embeddings: np.ndarray  # [vocab, E]
    token_type_embeddings: np.ndarray | None  # [type_vocab, E]; None: no token types (segment_ids ignored)
    position_embeddings: np.ndarray  # [positions, E]; row s is added at sequence position s (offset and constants in)
    layernorm: LayerNormMatch
    nodes: tuple[gs.Node, ...]  # sum tree, gathers and LayerNorm (position indexing nodes are left to cleanup)
    position_offset: int = 0  # the row of the source table holding position 0 (RoBERTa: padding_idx + 1)
    canonical: bool = True  # the export's sum is word + type + table[0:S] as is (nothing shifted or folded)
    projection: Projection | None = None

    @property
    def output(self) -> gs.Variable:
        return self.layernorm.output

    @property
    def encoder_input(self) -> gs.Variable:
        """What the first layer reads: the LayerNorm output, or the projection's."""
        return self.projection.output if self.projection is not None else self.layernorm.output


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


def _tables_under(leaf: gs.Tensor, hidden: int) -> list[np.ndarray]:
    """The float [rows, E] constants a term is computed from."""
    tables, seen, stack = [], set(), [leaf]
    while stack:
        t = stack.pop()
        value = const_value(t)
        if value is not None:
            if value.ndim == 2 and value.shape[1] == hidden and value.dtype.kind == "f":
                tables.append(value.astype(np.float32))
            continue
        node = producer(t)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.inputs)
    return tables


def _probe(graph: gs.Graph, leaves: list[gs.Tensor], seq: int, token: int) -> list[np.ndarray]:
    """The terms at batch 2 x `seq`, every token `token` (not a padding id), full mask; [S, E] each."""
    feed = probe_feed(np.ones((2, seq)))
    feed["input_ids"] = np.full((2, seq), token, np.int32)
    values = evaluate(graph, leaves, feed)
    return [np.broadcast_to(v, (2, seq, v.shape[-1]))[0] if v.ndim >= 2 else v for v in values]


def _rows_at(table: np.ndarray, value: np.ndarray) -> int | None:
    """The offset at which `value` [S, E] is rows offset..offset+S-1 of `table`, if any."""
    seq = value.shape[0]
    for offset in np.flatnonzero((table == value[0]).all(axis=1)):
        if offset + seq <= table.shape[0] and np.array_equal(table[offset:offset + seq], value):
            return int(offset)
    return None


def _position_terms(graph: gs.Graph, others: list[gs.Tensor], hidden: int, vocab: int,
                    ) -> tuple[np.ndarray, int, bool]:
    """(position table with row 0 at position 0 and constant terms added, offset, whether anything was folded)."""
    part = "position embeddings"
    seqs = (5, 3)
    tokens = (vocab - 1, vocab - 2)  # ids 0/1 are the padding id of BERT/RoBERTa vocabularies: never probe with them
    probes = {(s, t): _probe(graph, others, s, t) for s in seqs for t in tokens}
    table, offset, constants = None, None, []
    for i, leaf in enumerate(others):
        values = [probes[key][i] for key in probes]
        if any(v.shape[-1] != hidden for v in values):
            raise Mismatch(part, f"a term of the embedding sum is not {hidden} wide")
        if all(np.array_equal(v, np.broadcast_to(values[0][0], v.shape)) for v in values):
            constants.append(values[0][0])  # the same row everywhere: a constant (one-row token-type) term
            continue
        if table is not None:
            raise Mismatch(part, "two terms of the embedding sum vary with the position")
        candidates = [t for t in _tables_under(leaf, hidden) if t.shape[0] >= max(seqs)]
        for candidate in candidates:
            found = {key: _rows_at(candidate, probes[key][i]) for key in probes}
            if len(set(found.values())) == 1 and None not in found.values():
                table, offset = candidate, next(iter(found.values()))
                break
        else:
            raise Mismatch(part, "the position term is not rows offset..offset+S-1 of one constant table (checked "
                           f"at S={', '.join(map(str, seqs))})")
    if table is None:
        raise Mismatch(part, "no term of the embedding sum varies with the position")
    shifted = table[offset:]
    for row in constants:
        shifted = shifted + row.astype(np.float32)
    return np.ascontiguousarray(shifted, dtype=np.float32), offset, bool(constants) or offset != 0


def _projection(ln: LayerNormMatch) -> Projection | None:
    """ELECTRA: the LayerNorm output goes only into ``x @ W + b`` (BERT's feeds Q, K, V and the residual)."""
    users = consumers(ln.output)
    if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not ln.output:
        return None
    weight = const_value(users[0].inputs[1])
    adds = consumers(users[0].outputs[0], "Add")
    split = split_const(adds[0]) if len(adds) == 1 else None
    if weight is None or weight.ndim != 2 or split is None or split[0].shape != (weight.shape[1],):
        return None
    return Projection(weight.astype(np.float32), split[0].astype(np.float32), adds[0].outputs[0])


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
            if not 2 <= len(leaves) <= 4:
                raise Mismatch("embedding sum", f"expected word + token type + position terms, found {len(leaves)}")
            types = [leaf for leaf in leaves if gathers[id(leaf)] and gathers[id(leaf)][2] is segments]
            if len(types) > 1:
                raise Mismatch("token type embeddings", "two Gathers by segment_ids")
            word_node, word_table, _ = gathers[id(word[0])]
            hidden = word_table.shape[1]
            type_table = gathers[id(types[0])][1] if types and gathers[id(types[0])][1].shape[0] > 1 else None
            # a one-row token-type table is a constant term (RoBERTa), probed with the position terms
            others = [leaf for leaf in leaves if leaf is not word[0] and (type_table is None or leaf is not types[0])]
            if (type_table is not None and type_table.shape[1] != hidden) or ln.gamma.shape != (hidden,):
                raise Mismatch("embedding sum", "tables and LayerNorm disagree on the hidden size")
            pos_table, offset, folded = _position_terms(graph, others, hidden, word_table.shape[0])
            gather_nodes = [word_node] + ([gathers[id(types[0])][0]] if type_table is not None else [])
            nodes = [*sum_nodes, *gather_nodes, *ln.nodes]
            ensure_internal([*sum_nodes, *gather_nodes], ln.input, "embedding sum")
            return EmbeddingMatch(ids, segments, word_table.astype(np.float32),
                                  None if type_table is None else type_table.astype(np.float32), pos_table, ln,
                                  tuple(nodes), offset, canonical=not folded and type_table is not None,
                                  projection=_projection(ln))
        raise Mismatch("embedding LayerNorm", "no LayerNorm over a sum with a Gather indexed by input_ids"
                       + ("" if layernorms else " (the graph has no LayerNorm at all)"))
    except Mismatch as exc:
        return MatchFailure("embeddings", exc.part, exc.detail)
