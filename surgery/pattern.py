"""Small structural helpers shared by the matchers: walking an onnx-graphsurgeon graph by producers and consumers,
reading constants, and the failure type every matcher returns.

Matchers never look at node or tensor names (exporters name things arbitrarily); they only follow edges, op types,
attributes and constant values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class MatchFailure:
    """Why a block did not match: `layer` is "embeddings", "layer N" or "graph"; `part` names the piece of the
    pattern that broke (e.g. "attention: K head split"); `detail` says what was found instead."""

    layer: str
    part: str
    detail: str

    def message(self) -> str:
        return f"{self.layer}: {self.part} did not match ({self.detail})"


class Mismatch(Exception):
    """Raised inside a matcher at the first deviation; the public match function turns it into a MatchFailure."""

    def __init__(self, part: str, detail: str):
        super().__init__(f"{part}: {detail}")
        self.part = part
        self.detail = detail


def producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None


def producer_op(t: gs.Tensor, *ops: str) -> gs.Node | None:
    node = producer(t)
    return node if node is not None and node.op in ops else None


def consumers(t: gs.Tensor, *ops: str) -> list[gs.Node]:
    """Distinct consumer nodes (a node reading `t` twice, as in Mul(d, d), is listed once)."""
    unique = {id(n): n for n in t.outputs if not ops or n.op in ops}
    return list(unique.values())


def const_value(t: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor, also when it comes from a Constant node (folding normally removes those)."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    node = producer_op(t, "Constant")
    if node is not None and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def scalar(t: gs.Tensor) -> float | None:
    value = const_value(t)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def split_const(node: gs.Node) -> tuple[np.ndarray, gs.Tensor] | None:
    """For a binary node with exactly one constant operand: (constant value, the other operand)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    va, vb = const_value(a), const_value(b)
    if va is not None and vb is None:
        return va, b
    if vb is not None and va is None:
        return vb, a
    return None


def other_input(node: gs.Node, t: gs.Tensor) -> gs.Tensor | None:
    """The operand of a binary node that is not `t` (None when `t` is not an operand)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is t:
        return b
    if b is t:
        return a
    return None


def skip_casts(t: gs.Tensor) -> gs.Tensor:
    """Look through Cast nodes (exporters cast ids/masks to int64 or float before using them)."""
    while (node := producer_op(t, "Cast")) is not None:
        t = node.inputs[0]
    return t


def close(value: float | None, target: float, rtol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target)


def ensure_internal(nodes: list[gs.Node], boundary: gs.Tensor, part: str) -> None:
    """A fused block replaces `nodes`: every tensor they produce, except the block output `boundary`, must be used
    only inside the block, or removing the block would break another consumer."""
    inside = {id(n) for n in nodes}
    for node in nodes:
        for out in node.outputs:
            if out is boundary:
                continue
            if any(id(c) not in inside and not _only_shapes_for(c, inside) for c in out.outputs):
                raise Mismatch(part, f"intermediate {node.op} output is also used outside the pattern")


def _only_shapes_for(node: gs.Node, inside: set[int], depth: int = 8) -> bool:
    """A Shape of a block tensor whose results feed only nodes of the block (e.g. the dims of its Reshapes, as
    torch's exporters compute them): once the block is replaced, cleanup removes that computation too."""
    if node.op != "Shape":
        return False

    def feeds_only_inside(n: gs.Node, left: int) -> bool:
        outs = [c for t in n.outputs for c in t.outputs]
        if left == 0 or not outs or any(not t.outputs for t in n.outputs):
            return False  # too deep, or a graph output / dead end: keep it simple and refuse
        return all(id(c) in inside or feeds_only_inside(c, left - 1) for c in outs)

    return feeds_only_inside(node, depth)


def product_leaves(t: gs.Tensor, stops: tuple[gs.Tensor, ...]) -> tuple[list[gs.Tensor], list[np.ndarray], list[gs.Node]]:
    """Flatten a tree of Mul nodes rooted at `t` into (variable leaves, constant leaves, Mul nodes), not expanding
    past the tensors in `stops`; lets a matcher accept any association/operand order of a product."""
    value = const_value(t)
    if value is not None:
        return [], [value], []
    node = producer_op(t, "Mul")
    if node is None or any(t is s for s in stops):
        return [t], [], []
    leaves: list[gs.Tensor] = []
    consts: list[np.ndarray] = []
    nodes = [node]
    for operand in node.inputs:
        v, c, n = product_leaves(operand, stops)
        leaves += v
        consts += c
        nodes += n
    return leaves, consts, nodes


def same_tensors(found: list[gs.Tensor], expected: list[gs.Tensor]) -> bool:
    """Multiset equality by identity."""
    return sorted(map(id, found)) == sorted(map(id, expected))


def downstream(x: gs.Tensor, op: str, depth: int) -> list[gs.Node]:
    """Nodes of type `op` within `depth` steps downstream of `x` (the search stops at each such node)."""
    found, frontier, seen = [], [x], set()
    for _ in range(depth):
        nxt = []
        for t in frontier:
            for node in t.outputs:
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op == op:
                    found.append(node)
                else:
                    nxt.extend(node.outputs)
        frontier = nxt
    return found
