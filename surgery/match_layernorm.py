"""LayerNorm over the hidden axis, in both forms exporters produce:

- native: opset-17 ``LayerNormalization(x, gamma, beta, axis=-1, epsilon)`` (torch.onnx.export);
- decomposed (tf2onnx): ``d = x - ReduceMean(x)``, ``var = ReduceMean(d*d | d^2)``, ``s = Sqrt(var + eps)``, then
  ``d * Reciprocal(s) * gamma + beta`` in any association, or ``Div(d, s) * gamma + beta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.pattern import (
    Mismatch,
    const_value,
    consumers,
    ensure_internal,
    product_leaves,
    same_tensors,
    scalar,
    split_const,
)


@dataclass(frozen=True)
class LayerNormMatch:
    """``output = (input - mean) / sqrt(var + epsilon) * gamma + beta`` over the last axis of `input`."""

    input: gs.Variable
    output: gs.Variable
    gamma: np.ndarray  # [E] float32
    beta: np.ndarray  # [E] float32
    epsilon: float
    nodes: tuple[gs.Node, ...]


def _last_axis(node: gs.Node, x: gs.Tensor) -> bool:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:  # opset 18 moved axes to an input
        axes = const_value(node.inputs[1])
    if axes is None or node.attrs.get("keepdims", 1) != 1:
        return False
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    rank = len(x.shape) if x.shape else 3  # hidden states are [B, S, E]
    return axes in ([-1], [rank - 1])


def _vector(value: np.ndarray | None, part: str) -> np.ndarray:
    if value is None or value.ndim != 1:
        raise Mismatch(part, "not a constant vector")
    return value.astype(np.float32)


def _native(node: gs.Node) -> LayerNormMatch:
    part = "LayerNormalization"
    if int(node.attrs.get("axis", -1)) not in (-1, (len(node.inputs[0].shape) - 1) if node.inputs[0].shape else -1):
        raise Mismatch(part, f"axis {node.attrs.get('axis')} is not the hidden axis")
    if len(node.inputs) < 3:
        raise Mismatch(part, "no beta")
    gamma = _vector(const_value(node.inputs[1]), f"{part} scale")
    beta = _vector(const_value(node.inputs[2]), f"{part} bias")
    return LayerNormMatch(node.inputs[0], node.outputs[0], gamma, beta, float(node.attrs.get("epsilon", 1e-5)),
                          (node,))


def _decomposed(mean_node: gs.Node) -> LayerNormMatch:
    """Walk forward from the ReduceMean that computes the mean of x."""
    x = mean_node.inputs[0]
    part = "LayerNorm mean"
    if not _last_axis(mean_node, x):
        raise Mismatch(part, "ReduceMean is not over the last axis with keepdims")
    subs = [n for n in consumers(mean_node.outputs[0], "Sub") if n.inputs[0] is x]
    if len(subs) != 1:
        raise Mismatch(part, "no x - mean")
    d = subs[0].outputs[0]
    nodes = [mean_node, subs[0]]

    part = "LayerNorm variance"
    squares = [n for n in consumers(d, "Mul", "Pow")
               if (n.op == "Mul" and n.inputs[0] is d and n.inputs[1] is d)
               or (n.op == "Pow" and n.inputs[0] is d and scalar(n.inputs[1]) == 2.0)]
    if len(squares) != 1:
        raise Mismatch(part, "no (x - mean)^2")
    var_nodes = consumers(squares[0].outputs[0], "ReduceMean")
    if len(var_nodes) != 1 or not _last_axis(var_nodes[0], d):
        raise Mismatch(part, "no ReduceMean of the square over the last axis")
    adds = consumers(var_nodes[0].outputs[0], "Add")
    eps = split_const(adds[0]) if len(adds) == 1 else None
    if eps is None or eps[0].size != 1:
        raise Mismatch(part, "no var + epsilon")
    sqrts = consumers(adds[0].outputs[0], "Sqrt")
    if len(sqrts) != 1:
        raise Mismatch(part, "no Sqrt(var + epsilon)")
    s = sqrts[0].outputs[0]
    nodes += [squares[0], var_nodes[0], adds[0], sqrts[0]]

    part = "LayerNorm scale"
    y, gamma, scale_nodes = _scaled(d, s)
    nodes += scale_nodes
    part = "LayerNorm shift"
    shifts = consumers(y, "Add")
    beta = split_const(shifts[0]) if len(shifts) == 1 else None
    if beta is None:
        raise Mismatch(part, "no + beta")
    nodes.append(shifts[0])
    out = shifts[0].outputs[0]
    ensure_internal(nodes, out, "LayerNorm")
    return LayerNormMatch(x, out, gamma, _vector(beta[0], part), float(eps[0].reshape(-1)[0]), tuple(nodes))


def _scaled(d: gs.Tensor, s: gs.Tensor) -> tuple[gs.Tensor, np.ndarray, list[gs.Node]]:
    """Find y = d / s * gamma in any association; return (y, gamma, nodes up to y)."""
    for node in consumers(s):
        if node.op == "Reciprocal" or (node.op == "Div" and node.inputs[1] is s and scalar(node.inputs[0]) == 1.0):
            r, wanted = node.outputs[0], [d, node.outputs[0]]
        elif node.op == "Div" and node.inputs[0] is d and node.inputs[1] is s:
            r, wanted = node.outputs[0], [node.outputs[0]]
        else:
            continue
        t = r
        for _ in range(2):  # gamma is applied within two Muls of the reciprocal
            muls = consumers(t, "Mul")
            if len(muls) != 1:
                break
            t = muls[0].outputs[0]
            leaves, consts, muls_used = product_leaves(t, (d, r))
            if same_tensors(leaves, wanted) and len(consts) == 1 and consts[0].ndim == 1:
                return t, consts[0].astype(np.float32), [node, *muls_used]
    raise Mismatch("LayerNorm scale", "no (x - mean) / sqrt(var + eps) * gamma")


def match_layernorm_node(node: gs.Node) -> LayerNormMatch:
    """Match the LayerNorm anchored at `node` (a LayerNormalization, or the ReduceMean computing the mean);
    raises Mismatch."""
    if node.op == "LayerNormalization":
        return _native(node)
    if node.op == "ReduceMean":
        return _decomposed(node)
    raise Mismatch("LayerNorm", f"{node.op} is not a LayerNorm")


def match_layernorm_of(x: gs.Tensor) -> LayerNormMatch:
    """The LayerNorm applied to `x`; raises Mismatch naming the part that broke."""
    anchors = consumers(x, "LayerNormalization", "ReduceMean")
    if not anchors:
        raise Mismatch("LayerNorm", "no LayerNormalization or ReduceMean consumes the residual sum")
    errors = []
    for node in anchors:
        try:
            return match_layernorm_node(node)
        except Mismatch as exc:
            errors.append(exc)
    raise errors[0]


def find_layernorms(graph: gs.Graph) -> list[LayerNormMatch]:
    """Every LayerNorm in the graph, in topological order (the graph must be toposorted)."""
    found = []
    for node in graph.nodes:
        if node.op not in ("LayerNormalization", "ReduceMean"):
            continue
        try:
            found.append(match_layernorm_node(node))
        except Mismatch:
            continue  # e.g. the variance ReduceMean of a decomposed LayerNorm
    return found
