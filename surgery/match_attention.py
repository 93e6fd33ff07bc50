"""Multi-head self-attention of one BERT layer, from the hidden states x to the merged context (before the output
dense):

    q/k/v = x @ W + b                   (MatMul + Add, bias first or second)
    heads = Transpose(Reshape(q/k/v, [B, S, N, H]))   Q and V: perm [0,2,1,3]; K^T: [0,2,3,1], or [0,2,1,3] then
                                                      [0,1,3,2] (transpose_b style), where the last swap may be
                                                      done on a rank-3 view (torch's dynamo exporter:
                                                      Reshape [-1, S, H] -> Transpose [0,2,1] -> Reshape back;
                                                      accepted when the dims are read from K's own shape)
    probs = Softmax(scale * (Qh @ KhT) + mask_bias)   scalar Mul/Div on Qh, KhT or the scores, in any place
                                                      (SDPA exports scale Q and K by sqrt(scale) each), or none
                                                      (scale folded into the weights: scale 1)
    probs = Where(IsNaN(probs), 0, probs)             optional: torch SDPA's guard for fully masked rows
    ctx   = Reshape(Transpose(probs @ Vh, [0,2,1,3]), [B, S, E])   (torch's legacy SDPA export first re-views
                                                      probs @ Vh as [B, -1, S, H], dims read from its shapes)

The mask bias is recognised by what it computes (see MaskMatch), since every exporter builds it differently. An
export that adds no mask bias (or one that is 0 everywhere) is matched with `MaskMatch.exported` False; the
pipeline accepts it only when the graph's outputs do not depend on the mask at all (mask_use.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from bertrt.surgery.pattern import (
    MatchFailure,
    Mismatch,
    const_value,
    consumers,
    downstream,
    ensure_internal,
    producer,
    producer_op,
    skip_casts,
    split_const,
)
from bertrt.surgery.probe import evaluate, probe_feed

Q_PERM = [0, 2, 1, 3]  # [B, S, N, H] -> [B, N, S, H]
KT_PERM = [0, 2, 3, 1]  # [B, S, N, H] -> [B, N, H, S]


@dataclass(frozen=True)
class MaskMatch:
    """A key-padding mask: ``bias[b, ..., j] = 0`` where ``input_mask[b, j] == 1`` and `filter_value` where it
    is 0, the same for every head and query row. For the contiguous masks bertrt feeds (1s then 0s) this is the
    per-row valid length ``sum(input_mask[b])``: keys j >= length get no attention."""

    input_mask: gs.Variable  # the graph input
    bias: gs.Tensor | None  # the additive bias tensor of the unfused graph (None: it adds none)
    filter_value: float  # e.g. -10000 (Google BERT) or float32 min (transformers; also used for -inf)
    exported: bool = True  # False: the unfused graph applies no padding mask here (the fused ops will)


# The filter value the fused ops get where the export applies no mask, or masks with -inf (torch SDPA): transformers'
# own value. -inf itself would give NaN in the native target's (1 - mask) * filter bias (0 * -inf); the softmax of a
# row with at least one real key is the same for both.
DEFAULT_FILTER = float(np.finfo(np.float32).min)


@dataclass(frozen=True)
class AttentionMatch:
    """One layer's self-attention. Weights are in ``x @ W`` layout [E_in, E]; Q/K/V columns are head-major
    (head n owns columns n*H .. n*H+H-1), as the Reshape to [B, S, N, H] implies."""

    input: gs.Variable  # hidden states [B, S, E] feeding Q, K and V
    output: gs.Variable  # merged context [B, S, E]
    q_weight: np.ndarray
    k_weight: np.ndarray
    v_weight: np.ndarray
    q_bias: np.ndarray
    k_bias: np.ndarray
    v_bias: np.ndarray
    num_heads: int
    head_size: int
    scale: float  # multiplier of Q.K^T before the mask is added (1/sqrt(H) unless folded into the weights)
    mask: MaskMatch
    nodes: tuple[gs.Node, ...]

    def packed_qkv(self) -> tuple[np.ndarray, np.ndarray]:
        """([E_in, 3E], [3E]) in Q, K, V order: onnxruntime's Attention layout."""
        return (np.concatenate([self.q_weight, self.k_weight, self.v_weight], axis=1),
                np.concatenate([self.q_bias, self.k_bias, self.v_bias]))


@dataclass(frozen=True)
class _Projection:
    x: gs.Tensor
    weight: np.ndarray
    bias: np.ndarray
    num_heads: int
    head_size: int
    perm: list[int]  # composed Transpose perms from [B, S, N, H]
    nodes: list[gs.Node]


def _projection(t: gs.Tensor, part: str) -> tuple[gs.Tensor, np.ndarray, np.ndarray, list[gs.Node]]:
    add = producer_op(t, "Add")
    split = split_const(add) if add is not None else None
    if split is None or split[0].ndim != 1:
        raise Mismatch(part, "no MatMul + bias before the head split")
    bias, mm_out = split
    matmul = producer_op(mm_out, "MatMul")
    weight = const_value(matmul.inputs[1]) if matmul is not None else None
    if weight is None or weight.ndim != 2 or weight.shape[1] != bias.shape[0]:
        raise Mismatch(part, "no MatMul by a constant [E, E] weight")
    return matmul.inputs[0], weight.astype(np.float32), bias.astype(np.float32), [matmul, add]


def _reshape_dims(reshape: gs.Node) -> list[int | None]:
    """The target shape of a Reshape, None where only known at runtime."""
    shape = skip_casts(reshape.inputs[1])  # tf2onnx computes it in int32 and casts
    value = const_value(shape)
    if value is not None:
        return [int(v) for v in value.reshape(-1)]
    concat = producer_op(shape, "Concat")
    if concat is None:
        return []
    dims: list[int | None] = []
    for piece in concat.inputs:
        value = const_value(piece)
        dims += [int(v) for v in value.reshape(-1)] if value is not None else [None]
    return dims


_DimTerm = int | tuple[gs.Tensor, int]  # a constant, or axis `i` of a tensor's runtime shape


def _dim_terms(shape: gs.Tensor) -> list[_DimTerm] | None:
    """The entries of a Reshape's target shape as constants or (tensor, axis) read through Shape -> Gather/Slice ->
    Unsqueeze -> Concat, the way torch's exporters compute them; None where anything else computes them. Shapes
    are taken as rank 4 unless the tensor's rank is known (only head tensors [B, N, S, H] are compared)."""
    t = skip_casts(shape)
    value = const_value(t)
    if value is not None:
        return [int(v) for v in value.reshape(-1)]
    node = producer(t)
    if node is None:
        return None
    if node.op == "Shape":
        src = node.inputs[0]
        axes = list(range(len(src.shape) if src.shape else 4))
        return [(src, a) for a in axes[int(node.attrs.get("start", 0)):node.attrs.get("end")]]
    base = _dim_terms(node.inputs[0]) if node.inputs else None
    if base is None:
        return None
    if node.op in ("Unsqueeze", "Squeeze"):
        return base
    if node.op == "Concat":
        parts = [base] + [_dim_terms(piece) for piece in node.inputs[1:]]
        return None if any(p is None for p in parts) else [term for p in parts for term in p]
    if node.op == "Gather" and (index := const_value(node.inputs[1])) is not None:
        return [base[int(i)] for i in index.reshape(-1)] if all(-len(base) <= i < len(base) for i in
                                                                index.reshape(-1)) else None
    if node.op == "Slice" and len(node.inputs) in (3, 4, 5):
        starts, ends = const_value(node.inputs[1]), const_value(node.inputs[2])
        steps = const_value(node.inputs[4]) if len(node.inputs) == 5 else np.ones(1)
        if starts is None or ends is None or steps is None or starts.size != 1 or int(steps.reshape(-1)[0]) != 1:
            return None
        return base[int(starts.reshape(-1)[0]):int(ends.reshape(-1)[0])]  # Python slicing clamps as ONNX does
    return None


def _is_term(term: _DimTerm, *allowed: _DimTerm) -> bool:
    return any(term == a if isinstance(a, int) else (isinstance(term, tuple) and term[0] is a[0] and term[1] == a[1])
               for a in allowed)


def _rank3_swap(t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node], int | None] | None:
    """``Reshape(Transpose(Reshape(x, [-1, S, H]), [0, 2, 1]), [B, N, H, S])`` with S, B, N read from x's shape:
    the last two axes of a rank-4 x swapped on a rank-3 view (torch's dynamo exporter writes K^T so). Returns
    (x, nodes, H where the targets state it as a constant: the caller checks it is the head size) or None."""
    outer = producer_op(t, "Reshape")
    transpose = producer_op(outer.inputs[0], "Transpose") if outer is not None else None
    if transpose is None or [int(p) for p in transpose.attrs["perm"]] != [0, 2, 1]:
        return None
    inner = producer_op(transpose.inputs[0], "Reshape")
    if inner is None:
        return None
    x = inner.inputs[0]
    view, back = _dim_terms(inner.inputs[1]), _dim_terms(outer.inputs[1])
    if view is None or back is None or len(view) != 3 or len(back) != 4:
        return None
    head = view[2] if isinstance(view[2], int) else None  # H as a constant, or x's axis 3
    if view[0] != -1 or not _is_term(view[1], (x, 2)) or not (_is_term(view[2], (x, 3)) or (head or 0) > 0):
        return None
    if not (_is_term(back[0], (x, 0)) and _is_term(back[1], (x, 1), -1) and _is_term(back[2], (x, 3), view[2])
            and _is_term(back[3], (x, 2))):
        return None
    return x, [outer, transpose, inner], head


def _same_4d_view(reshape: gs.Node, context: gs.Tensor, q: gs.Tensor, v: gs.Tensor) -> bool:
    """A Reshape of the context [B, N, S, H] = probs @ V to [B, -1, S, H], each dim read from the runtime shape of
    the context, of Q (B, N, S) or of V (B, N, H): a no-op view (torch's legacy exporter writes SDPA's output so)."""
    dims = _dim_terms(reshape.inputs[1])
    return (dims is not None and len(dims) == 4 and dims.count(-1) <= 1
            and _is_term(dims[0], (context, 0), (q, 0), (v, 0))
            and _is_term(dims[1], (context, 1), (q, 1), (v, 1), -1)
            and _is_term(dims[2], (context, 2), (q, 2))
            and _is_term(dims[3], (context, 3), (v, 3)))


def _heads(t: gs.Tensor, part: str) -> _Projection:
    """Walk back from a head tensor through Transposes and the head-split Reshape to the projection."""
    perm = [0, 1, 2, 3]
    nodes = []
    stated_heads = []  # head sizes the rank-3 views state as constants
    while True:
        if (node := producer_op(t, "Transpose")) is not None:
            inner, walked, t = [int(p) for p in node.attrs["perm"]], [node], node.inputs[0]
        elif (swap := _rank3_swap(t)) is not None:
            inner, (t, walked, head) = [0, 1, 3, 2], swap
            stated_heads += [head] if head is not None else []
        else:
            break
        perm = [inner[p] for p in perm]
        nodes += walked
    reshape = producer_op(t, "Reshape")
    if reshape is None:
        raise Mismatch(part, "no Reshape to [B, S, N, H] before the transpose")
    x, weight, bias, proj_nodes = _projection(reshape.inputs[0], part)
    dims = _reshape_dims(reshape)
    hidden = bias.shape[0]
    if len(dims) != 4:
        raise Mismatch(part, "head split Reshape target is not [B, S, N, H]")
    n, h = dims[2], dims[3]
    if n == -1 and h:
        n = hidden // h
    if h == -1 and n:
        h = hidden // n
    if not n or not h or n * h != hidden:
        raise Mismatch(part, f"head split Reshape target {dims} does not split {hidden} into heads")
    if any(stated != h for stated in stated_heads):
        raise Mismatch(part, f"a rank-3 view states head size {stated_heads}, the head split {h}")
    return _Projection(x, weight, bias, n, h, perm, [*proj_nodes, reshape, *nodes])


def _strip_scalars(t: gs.Tensor) -> tuple[gs.Tensor, float, list[gs.Node]]:
    """Walk back through Mul/Div by scalar constants; return (tensor, product of the factors, nodes)."""
    factor, nodes = 1.0, []
    while (node := producer_op(t, "Mul", "Div")) is not None:
        split = split_const(node)
        if split is None or split[0].size != 1 or (node.op == "Div" and split[1] is not node.inputs[0]):
            break
        value = float(split[0].reshape(-1)[0])
        factor *= value if node.op == "Mul" else 1.0 / value
        nodes.append(node)
        t = split[1]
    return t, factor, nodes


def match_mask(graph: gs.Graph, bias: gs.Tensor) -> MaskMatch:
    """Prove that `bias` is a key-padding bias computed from input_mask by evaluating it on probe masks."""
    part = "attention mask bias"
    mask_input = _mask_input(graph)
    if const_value(bias) is not None:
        if np.all(const_value(bias) == 0):
            return MaskMatch(mask_input, bias, DEFAULT_FILTER, exported=False)
        raise Mismatch(part, "the bias added to the scores is not computed from input_mask")
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1]], dtype=np.int32)
    try:
        (value,) = evaluate(graph, [bias], probe_feed(mask))
    except Exception as exc:  # noqa: BLE001 (whatever onnxruntime raises, the subgraph is not a mask builder)
        raise Mismatch(part, f"cannot evaluate it from the inputs ({type(exc).__name__})") from None
    batch, seq = mask.shape
    if value.ndim != 4 or value.shape[0] != batch or value.shape[1] != 1 or value.shape[3] != seq:
        raise Mismatch(part, f"shape {list(value.shape)} is not [B, 1, 1 or S, S]")
    if np.all(value == 0):
        return MaskMatch(mask_input, bias, DEFAULT_FILTER, exported=False)
    keys = np.broadcast_to(mask[:, None, None, :].astype(bool), value.shape)
    filters = np.unique(value[~keys])
    if np.any(value[keys] != 0) or filters.size != 1 or filters[0] > -1e4:
        raise Mismatch(part, "not 0 on real tokens and one large negative value on padded keys")
    return MaskMatch(mask_input, bias, max(float(filters[0]), DEFAULT_FILTER))


def _masked_fill(t: gs.Tensor) -> tuple[gs.Node, gs.Node, float, list[gs.Node]] | None:
    """``Where(condition, fill, scale * scores)`` with a scalar constant fill: (Where, scores MatMul, scale,
    scale nodes), else None."""
    where = producer_op(t, "Where")
    if where is None:
        return None
    fill = const_value(where.inputs[1])
    raw, factor, scale_nodes = _strip_scalars(where.inputs[2])
    matmul = producer_op(raw, "MatMul")
    if fill is None or fill.size != 1 or matmul is None:
        return None
    return where, matmul, factor, scale_nodes


def match_fill_mask(graph: gs.Graph, condition: gs.Tensor, fill: float) -> MaskMatch:
    """Prove that `condition` (where the scores are replaced by `fill`) is True exactly on padded keys."""
    part = "attention mask fill"
    mask_input = _mask_input(graph)
    if fill > -1e4:
        raise Mismatch(part, f"padded keys are filled with {fill}, not a large negative value")
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1]], dtype=np.int32)
    try:
        (value,) = evaluate(graph, [condition], probe_feed(mask))
    except Exception as exc:  # noqa: BLE001 (whatever onnxruntime raises, the subgraph is not a mask builder)
        raise Mismatch(part, f"cannot evaluate it from the inputs ({type(exc).__name__})") from None
    batch, seq = mask.shape
    if value.ndim != 4 or value.shape[0] != batch or value.shape[3] != seq:
        raise Mismatch(part, f"shape {list(value.shape)} is not [B, 1 or N, 1 or S, S]")
    padded = np.broadcast_to(mask[:, None, None, :] == 0, value.shape)
    if not np.array_equal(value.astype(bool), padded):
        raise Mismatch(part, "the filled positions are not the padded keys")
    return MaskMatch(mask_input, condition, max(fill, DEFAULT_FILTER))


def _mask_input(graph: gs.Graph) -> gs.Variable:
    mask_input = next((t for t in graph.inputs if t.name == "input_mask"), None)
    if mask_input is None:
        raise Mismatch("attention mask bias", "the graph has no input_mask input")
    return mask_input


def _nan_guard(probs: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]]:
    """Look through ``Where(IsNaN(p), 0, p)`` after the Softmax (torch SDPA zeroes fully masked rows so); the fused
    ops never produce NaN on rows with a real key."""
    for isnan in consumers(probs, "IsNaN"):
        for where in consumers(isnan.outputs[0], "Where"):
            zero = const_value(where.inputs[1])
            if where.inputs[0] is isnan.outputs[0] and where.inputs[2] is probs and zero is not None \
                    and np.all(zero == 0):
                return where.outputs[0], [isnan, where]
    return probs, []


def match_attention(graph: gs.Graph, x: gs.Tensor, layer: int,
                    masks: dict[int, MaskMatch] | None = None) -> AttentionMatch | MatchFailure:
    """The self-attention whose Q, K and V projections read `x`. `masks` caches mask proofs across layers."""
    masks = {} if masks is None else masks
    try:
        return _match(graph, x, masks)
    except Mismatch as exc:
        return MatchFailure(f"layer {layer}", f"attention: {exc.part}", exc.detail)


def _match(graph: gs.Graph, x: gs.Tensor, masks: dict[int, MaskMatch]) -> AttentionMatch:
    part = "Q.K^T scores"
    # The scores MatMul: both operands lead back (through scalar scaling) to head splits of projections of x.
    scores = None
    # Within 10 steps: this layer's Softmax, not a later layer's (that one is further downstream).
    for softmax in downstream(x, "Softmax", depth=10):
        t, factor, scale_nodes = _strip_scalars(softmax.inputs[0])
        if producer_op(t, "MatMul") is not None:  # no mask bias at all
            scores = (softmax, None, producer_op(t, "MatMul"), factor, scale_nodes, None)
            break
        fill = _masked_fill(softmax.inputs[0])
        if fill is not None:  # DistilBERT (eager): scores.masked_fill(padding, finfo.min)
            scores = (softmax, fill[0], fill[1], fill[2], fill[3], fill[0].inputs[0])
            break
        add = producer_op(softmax.inputs[0], "Add")
        if add is None:
            raise Mismatch("softmax input", "the softmax input is not scores + mask bias (nor scores with padded "
                           "keys filled)")
        for raw, other in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            t, factor, scale_nodes = _strip_scalars(raw)
            if producer_op(t, "MatMul") is not None:
                scores = (softmax, add, producer_op(t, "MatMul"), factor, scale_nodes, other)
                break
        if scores is not None:
            break
    if scores is None:
        raise Mismatch(part, "no Softmax(scale * MatMul + mask) downstream of the layer input")
    softmax, add, qk, factor, scale_nodes, bias = scores
    axis = int(softmax.attrs.get("axis", -1))
    if axis not in (-1, 3):
        raise Mismatch("softmax", f"axis {axis} is not the key axis")

    q_t, q_factor, q_scale_nodes = _strip_scalars(qk.inputs[0])
    k_t, k_factor, k_scale_nodes = _strip_scalars(qk.inputs[1])
    q = _heads(q_t, "Q head split")
    k = _heads(k_t, "K head split")
    if q.perm != Q_PERM:
        raise Mismatch("Q head split", f"transpose perm {q.perm} is not {Q_PERM}")
    if k.perm != KT_PERM:
        raise Mismatch("K head split", f"transposes compose to {k.perm}, not K^T {KT_PERM}")

    part = "context"
    probs, guard_nodes = _nan_guard(softmax.outputs[0])
    ctx_mm = [n for n in consumers(probs, "MatMul") if n.inputs[0] is probs]
    if len(ctx_mm) != 1:
        raise Mismatch(part, "the probabilities do not feed one MatMul with V")
    v = _heads(ctx_mm[0].inputs[1], "V head split")
    if v.perm != Q_PERM:
        raise Mismatch("V head split", f"transpose perm {v.perm} is not {Q_PERM}")
    if not (q.x is x and k.x is x and v.x is x):
        raise Mismatch("Q/K/V projections", "Q, K and V do not all read the layer input")
    if len({(p.num_heads, p.head_size) for p in (q, k, v)}) != 1:
        raise Mismatch("Q/K/V projections", "Q, K and V are split into different head counts")

    part = "merge heads"
    context, identity = ctx_mm[0].outputs[0], []
    reshapes = consumers(context, "Reshape")
    if len(reshapes) == 1 and _same_4d_view(reshapes[0], context, q_t, ctx_mm[0].inputs[1]):  # legacy SDPA
        context, identity = reshapes[0].outputs[0], reshapes
    merge_t = consumers(context, "Transpose")
    if len(merge_t) != 1 or [int(p) for p in merge_t[0].attrs["perm"]] != Q_PERM:
        raise Mismatch(part, f"no Transpose {Q_PERM} of the context")
    merge_r = consumers(merge_t[0].outputs[0], "Reshape")
    dims = _reshape_dims(merge_r[0]) if len(merge_r) == 1 else []
    if len(dims) != 3 or dims[2] not in (-1, q.bias.shape[0]):
        raise Mismatch(part, "no Reshape of the context to [B, S, E]")
    output = merge_r[0].outputs[0]

    key = id(bias)
    if key not in masks:
        if add is not None and add.op == "Where":
            masks[key] = match_fill_mask(graph, bias, float(const_value(add.inputs[1]).reshape(-1)[0]))
        else:
            masks[key] = (match_mask(graph, bias) if bias is not None
                          else MaskMatch(_mask_input(graph), None, DEFAULT_FILTER, exported=False))

    nodes = [*q.nodes, *k.nodes, *v.nodes, *q_scale_nodes, *k_scale_nodes, qk, *scale_nodes,
             *([add] if add is not None else []), softmax, *guard_nodes, ctx_mm[0], *identity, merge_t[0],
             merge_r[0]]
    ensure_internal(nodes, output, "attention")
    return AttentionMatch(x, output, q.weight, k.weight, v.weight, q.bias, k.bias, v.bias, q.num_heads, q.head_size,
                          q_factor * k_factor * factor, masks[key], tuple(nodes))

