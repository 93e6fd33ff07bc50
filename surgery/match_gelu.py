"""The FFN activation: ``GELU(h @ W1 + b1)`` right after the intermediate dense, in either form

- erf:  ``0.5 * x * (1 + erf(x / sqrt(2)))``   (x / 1.41421 or x * 0.70711)
- tanh: ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``   (x^3 as Pow(x, 3) or x*x*x)
- the opset-20 ``Gelu(x, approximate="none" | "tanh")`` op (torch's dynamo exporter)

Products are accepted in any association and operand order (tf2onnx and torch differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.pattern import (
    MatchFailure,
    Mismatch,
    close,
    const_value,
    consumers,
    downstream,
    ensure_internal,
    producer_op,
    product_leaves,
    same_tensors,
    scalar,
    split_const,
)


GELU_OP_FORMS = {"none": "erf", "tanh": "tanh"}  # Gelu's `approximate` attribute -> form


@dataclass(frozen=True)
class GeluMatch:
    """``output = GELU(input + bias)``; `input` is the intermediate dense's MatMul output (the MatMul stays)."""

    form: str  # "erf" | "tanh"
    input: gs.Variable  # [B, S, I]
    bias: np.ndarray  # [I]
    output: gs.Variable
    nodes: tuple[gs.Node, ...]  # bias Add and the activation


def _const_product(consts: list[np.ndarray]) -> float | None:
    if any(c.size != 1 for c in consts):
        return None
    return float(np.prod([c.reshape(-1)[0] for c in consts])) if consts else 1.0


def _one_plus(t: gs.Tensor, part: str) -> gs.Node:
    adds = consumers(t, "Add")
    split = split_const(adds[0]) if len(adds) == 1 else None
    if split is None or not close(_const_product([split[0]]), 1.0):
        raise Mismatch(part, "no 1 + (.)")
    return adds[0]


def _erf_core(x: gs.Tensor) -> list[gs.Node]:
    for node in consumers(x, "Mul", "Div"):
        split = split_const(node)
        if split is None or split[0].size != 1 or split[1] is not x:
            continue
        c = float(split[0].reshape(-1)[0])
        if not close(c if node.op == "Mul" else 1.0 / c, math.sqrt(0.5)):
            continue
        erfs = consumers(node.outputs[0], "Erf")
        if len(erfs) == 1:
            return [node, erfs[0], _one_plus(erfs[0].outputs[0], "GELU 1 + erf")]
    raise Mismatch("GELU erf", "no erf(x / sqrt(2))")


def _tanh_core(x: gs.Tensor) -> list[gs.Node]:
    part = "GELU tanh"
    for tanh in downstream(x, "Tanh", depth=5):
        arg = producer_op(tanh.inputs[0], "Mul")
        split = split_const(arg) if arg is not None else None
        if split is None or not close(_const_product([split[0]]), math.sqrt(2.0 / math.pi)):
            raise Mismatch(part, "tanh argument is not sqrt(2/pi) * (.)")
        inner = producer_op(split[1], "Add")
        if inner is None or x not in inner.inputs:
            raise Mismatch(part, "no x + 0.044715 * x^3")
        cubic = inner.inputs[1] if inner.inputs[0] is x else inner.inputs[0]
        leaves, consts, nodes = product_leaves(cubic, (x,))
        expanded = []
        for leaf in leaves:  # Pow(x, 3) counts as x * x * x
            power = producer_op(leaf, "Pow")
            if power is not None and power.inputs[0] is x and scalar(power.inputs[1]) == 3.0:
                expanded += [x, x, x]
                nodes.append(power)
            else:
                expanded.append(leaf)
        if not same_tensors(expanded, [x, x, x]) or not close(_const_product(consts), 0.044715):
            raise Mismatch(part, "no 0.044715 * x^3")
        return [*nodes, inner, arg, tanh, _one_plus(tanh.outputs[0], "GELU 1 + tanh")]
    raise Mismatch(part, "no Tanh after the intermediate dense")


def _half_product(x: gs.Tensor, one_plus: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]]:
    """The Mul whose product is 0.5 * x * one_plus (within two Muls of one_plus)."""
    t = one_plus
    for _ in range(2):
        muls = consumers(t, "Mul")
        if len(muls) != 1:
            break
        t = muls[0].outputs[0]
        leaves, consts, nodes = product_leaves(t, (x, one_plus))
        if same_tensors(leaves, [x, one_plus]) and close(_const_product(consts), 0.5):
            return t, nodes
    raise Mismatch("GELU product", "no 0.5 * x * (1 + ...)")


def match_gelu(hidden: gs.Tensor, layer: int, form: str | None = None) -> GeluMatch | MatchFailure:
    """The GELU after the intermediate dense that reads `hidden` (the attention block's output). `form` restricts
    the match to "erf" or "tanh" (None: whichever is there)."""
    try:
        dense = [n for n in consumers(hidden, "MatMul") if const_value(n.inputs[1]) is not None]
        if len(dense) != 1:
            raise Mismatch("intermediate dense", f"expected one MatMul by a weight, found {len(dense)}")
        adds = consumers(dense[0].outputs[0], "Add")
        split = split_const(adds[0]) if len(adds) == 1 else None
        if split is None or split[0].ndim != 1:
            raise Mismatch("intermediate dense", "no bias Add after the MatMul")
        x = adds[0].outputs[0]
        ops = consumers(x, "Gelu")
        if len(ops) == 1 and len(x.outputs) == 1:
            approximate = ops[0].attrs.get("approximate", "none")
            if form not in (None, GELU_OP_FORMS.get(approximate)):
                raise Mismatch("GELU", f"Gelu(approximate={approximate!r}), expected the {form} form")
            return GeluMatch(GELU_OP_FORMS[approximate], dense[0].outputs[0], split[0].astype(np.float32),
                             ops[0].outputs[0], (adds[0], ops[0]))
        errors = []
        for name, core in (("erf", _erf_core), ("tanh", _tanh_core)):
            if form not in (None, name):
                continue
            try:
                nodes = core(x)
            except Mismatch as exc:
                errors.append(exc)
                continue
            output, product_nodes = _half_product(x, nodes[-1].outputs[0])
            nodes = [adds[0], *nodes, *product_nodes]
            ensure_internal(nodes, output, "GELU")
            return GeluMatch(name, dense[0].outputs[0], split[0].astype(np.float32), output, tuple(nodes))
        raise errors[0] if len(errors) == 1 else Mismatch("GELU", "neither the erf nor the tanh form")
    except Mismatch as exc:
        return MatchFailure(f"layer {layer}", exc.part, exc.detail)
