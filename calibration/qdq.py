"""Explicit INT8 / FP8 Q/DQ placement for TensorRT's strongly typed (explicit-quantization) path.

Placement and calibration use onnxruntime's quantization tools (`quantize_static`, QDQ format): they put a
QuantizeLinear/DequantizeLinear pair on both inputs of every MatMul/Gemm and nowhere else, which is exactly
where TensorRT fuses Q/DQ into INT8 GEMMs (and, for activation x activation MatMuls, INT8 batched GEMMs of
attention). Activations are symmetric (zero point 0), weights symmetric per output channel (axis -1 of a
MatMul's [K, N] weight). Nodes are chosen by op type and graph structure only, never by node name, so the same
code handles the unfused export and the `native`/`ort` surgery targets.

SmoothQuant (Xiao et al. 2023, NNCF's recipe; `smooth_quant`): before calibration, each group of weight GEMMs that
read the same activation gets per-input-channel scales s = amax_x^alpha / amax_w^(1 - alpha): the activation is
multiplied by 1/s (a Mul in front of the group) and the weight rows by s, which leaves the FP32 function unchanged
and moves the activation outliers (LayerNorm and GELU channels with 10-100x the others' range) into the
per-channel-quantized weights, so one per-tensor INT8 activation scale fits every channel.

FP8 (E4M3) reuses the INT8 placement and calibration ranges: every int8 Q/DQ pair becomes an E4M3 pair with
scale = amax / 448 (the TensorRT / ModelOpt convention), weights re-quantized per channel from the FP32 weights.
onnxruntime's own float8 mode calibrates by standard deviation ("Distribution"), not by amax, which is not
what TensorRT expects, so it is not used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bertrt.errors import BertrtError
from bertrt.interrupts import private_tempdir
from bertrt.output import bar

CALIB_METHODS = ("max", "percentile", "entropy")
GEMM_OPS = ("MatMul", "Gemm")
# Structural groups of GEMMs that can be kept in float (`exclude=`), for sensitivity studies.
EXCLUDE_GROUPS = ("attention_bmm", "ffn_down", "qa_head")
FP8_MAX = 448.0
INT8_MAX = 127.0


# ---------------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------------

def gemm_nodes(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """The model's GEMMs by structural group: 'weight' (an input is an initializer), 'attention_bmm' (both inputs
    activations), 'ffn_down' (weight GEMM whose K is the largest weight K: the FFN output projection) and
    'qa_head' (the weight GEMM with the fewest output channels: start/end logits)."""
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    groups: dict[str, list[onnx.NodeProto]] = {"weight": [], "attention_bmm": [], "ffn_down": [], "qa_head": []}
    for node in model.graph.node:
        if node.op_type not in GEMM_OPS:
            continue
        w = [x for x in node.input[:2] if x in inits]
        if w:
            groups["weight"].append(node)
        elif not any(x in consts for x in node.input[:2]):
            groups["attention_bmm"].append(node)
    shapes = []
    for node in groups["weight"]:
        w = next(inits[x] for x in node.input[:2] if x in inits)
        dims = list(w.dims)
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            dims = dims[::-1]
        shapes.append((node, dims[0] if len(dims) == 2 else 0, dims[-1]))
    if shapes:
        k_max = max(k for _, k, _ in shapes)
        groups["ffn_down"] = [n for n, k, _ in shapes if k == k_max and k > min(k for _, k, _ in shapes)]
        n_min = min(n for _, _, n in shapes)
        groups["qa_head"] = [n for n, _, nn in shapes if nn == n_min]
    return groups


def _node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's quantizer addresses nodes by name: give unnamed nodes unique names (in a copy)."""
    if all(n.name for n in model.graph.node) and len({n.name for n in model.graph.node}) == len(model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_bertrt_{i}"
        seen.add(n.name)
    return model


# ---------------------------------------------------------------------------------------------------------
# SmoothQuant
# ---------------------------------------------------------------------------------------------------------

SMOOTH_CLIP_QUANTILE = 0.1  # scales clipped below at this quantile of a group's scales, above at SMOOTH_MAX (NNCF's)
SMOOTH_MAX = 100.0


def _smoothable(node: onnx.NodeProto, inits: dict) -> bool:
    """A MatMul of an activation (input 0) by a [K, N] weight initializer (input 1): the form the smoothing scales
    rows of."""
    return (node.op_type == "MatMul" and node.input[1] in inits and node.input[0] not in inits
            and len(inits[node.input[1]].dims) == 2)


def smooth_scales(act_amax: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """Per-input-channel scales of one group of GEMMs reading one activation (per-channel |x| max `act_amax`,
    weights [K, N]): per GEMM amax_x^alpha / amax_w^(1-alpha) clipped to [its 10 % quantile, 100]; the group takes
    the flattest (largest min/max ratio), as NNCF does."""
    eps = np.finfo(np.float32).eps
    act = np.maximum(act_amax.astype(np.float64), 1e-5)
    best, best_ratio = None, -1.0
    for w in weights:
        w_amax = np.maximum(np.abs(w).max(axis=1).astype(np.float64), 1e-5)
        scales = act ** alpha / (w_amax ** (1 - alpha) + eps)
        scales = np.clip(scales, np.quantile(scales, SMOOTH_CLIP_QUANTILE), SMOOTH_MAX)
        ratio = scales.min() / (scales.max() + eps)
        if ratio > best_ratio:
            best, best_ratio = scales, ratio
    return best.astype(np.float32)


def smooth_quant(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], alpha: float
                 ) -> tuple[onnx.ModelProto, int]:
    """`model` (a copy) with SmoothQuant applied to every group of weight MatMuls that share an activation; returns
    it and the number of groups smoothed. The per-channel activation maxima come from running the FP32 model on
    `feeds` with onnxruntime."""
    import onnxruntime as ort

    if not 0.0 < alpha < 1.0:
        raise BertrtError(f"the SmoothQuant alpha must be between 0 and 1 (exclusive), got {alpha}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in gemm_nodes(model)["weight"]:
        if _smoothable(node, inits):
            groups.setdefault(node.input[0], []).append(node)
    if not groups:
        return model, 0
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in groups
                              if x not in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors as named
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(groups)
    amax: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            amax[name] = np.maximum(amax[name], channel_max) if name in amax else channel_max
    position = {out: i for i, node in enumerate(graph.node) for out in node.output}
    muls = []
    for x, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        scales = smooth_scales(amax[x], weights, alpha)
        for node, w in zip(nodes, weights):  # a weight shared by two groups would be scaled twice: copy per node
            name = f"{node.input[1]}/smoothed"
            graph.initializer.append(numpy_helper.from_array((w * scales[:, None]).astype(w.dtype), name))
            node.input[1] = name
        scale_name, smoothed = f"{x}/smooth_scale", f"{x}/smoothed"
        graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), scale_name))
        for node in nodes:
            node.input[0] = smoothed
        muls.append((position.get(x, -1), helper.make_node("Mul", [x, scale_name], [smoothed], name=f"{x}/smooth")))
    nodes = list(graph.node)
    for where, mul in sorted(muls, key=lambda m: -m[0]):  # right after each producer: the order stays topological
        nodes.insert(where + 1, mul)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {x for n in graph.node for x in n.input}
    kept = [i for i in graph.initializer if i.name in used or i.name in {g.name for g in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model, len(groups)


# ---------------------------------------------------------------------------------------------------------
# INT8 with onnxruntime's quantizer
# ---------------------------------------------------------------------------------------------------------

class _FeedReader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], progress=None):
        self._feeds = list(feeds)
        self._it = iter(self._feeds)
        self._progress = progress  # a tqdm bar counting calibration batches, or None

    def get_next(self):
        feed = next(self._it, None)
        if feed is not None and self._progress is not None:
            self._progress.update(1)
        return feed

    def rewind(self):
        self._it = iter(self._feeds)

    def __len__(self):
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int):
        self._it = iter(self._feeds[start_index:end_index])


def check_exclude(exclude: Sequence[str]) -> None:
    unknown = set(exclude) - set(EXCLUDE_GROUPS)
    if unknown:
        raise BertrtError(f"unknown GEMM group(s) to exclude {sorted(unknown)} (choose from {', '.join(EXCLUDE_GROUPS)})")


def quantize_int8(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], calib_method: str = "max",
                  exclude: Sequence[str] = (), percentile: float = 99.99, num_bins: int = 2048,
                  progress: bool = False) -> tuple[onnx.ModelProto, dict]:
    """Insert symmetric INT8 Q/DQ on every GEMM input (per-channel weights) calibrated on `feeds`."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if calib_method not in CALIB_METHODS:
        raise BertrtError(f"unknown calibration method {calib_method!r} (choose from {', '.join(CALIB_METHODS)})")
    check_exclude(exclude)
    model = _node_names(model)
    if any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
        # onnx's shape inference knows no contrib ops; without their output types onnxruntime's calibrator skips
        # every activation behind them (weights would be quantized, activations not). ORT's symbolic shape
        # inference knows com.microsoft ops.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        try:
            model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        except Exception as exc:
            raise BertrtError(f"shape inference for quantization failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    groups = gemm_nodes(model)
    if not groups["weight"]:
        raise BertrtError("the model has no MatMul/Gemm with a weight initializer: nothing to quantize")
    excluded = sorted({n.name for g in exclude for n in groups[g]})
    method = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib_method]
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "CalibTensorRangeSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
        "DedicatedQDQPair": False,
        # Q/DQ on GEMM *inputs* only, as TensorRT wants them: onnxruntime would also quantize MatMul outputs,
        # which forces the residual stream and FFN outputs (amax ~190 with outliers) through 8 bits.
        "OpTypesToExcludeOutputQuantization": list(GEMM_OPS),
        # Collect in strides of a few batches: onnxruntime keeps every intermediate output of a collect call in
        # memory (histogram methods), so one call over all features would need gigabytes.
        "CalibStridedMinMax": max(d for d in range(1, 3) if len(feeds) % d == 0),
    }
    if calib_method == "percentile":
        extra["CalibPercentile"] = percentile
        extra["CalibNumBins"] = num_bins
    if calib_method == "entropy":
        extra["CalibNumBins"] = num_bins
    # One bertrt-owned directory for our files and onnxruntime's own (`ort.quant.*`: tempfile.tempdir points here),
    # removed whatever happens (SIGTERM included: the CLI turns it into an interrupt).
    with private_tempdir("bertrt-quant.") as tmp, \
            bar(len(feeds), f"calibrating ({calib_method})", progress, "batch") as calib_bar:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src)
        try:
            quantize_static(src, dst, _FeedReader(feeds, calib_bar), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(GEMM_OPS), per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded, calibrate_method=method, extra_options=extra)
        except BertrtError:
            raise
        except Exception as exc:  # onnxruntime raises assorted types; keep the CLI message on one line
            msg = " ".join(str(exc).split())[:300]
            raise BertrtError(f"onnxruntime quantization failed: {type(exc).__name__}: {msg}") from None
        out = onnx.load(dst)
    rewired = _unquantize_non_gemm_consumers(out)
    info = {"tool": "onnxruntime.quantization.quantize_static (QDQ)", "calib_method": calib_method,
            "non_gemm_consumers_rewired": rewired,
            "excluded_groups": list(exclude), "excluded_nodes": len(excluded),
            "gemms": {g: len(v) for g, v in groups.items()}}
    if calib_method == "percentile":
        info["percentile"] = percentile
    return out, info


def _unquantize_non_gemm_consumers(model: onnx.ModelProto) -> int:
    """onnxruntime's quantizer hands the dequantized tensor to every consumer of a quantized activation, so the
    residual Adds that share the LayerNorm output with the next GEMMs would read the 8-bit value: the residual
    stream itself would be quantized, which TensorRT does not fuse and which costs accuracy. Give every non-GEMM
    consumer the original tensor back, so Q/DQ sit on GEMM inputs only. Returns the number of inputs rewired."""
    inits = {i.name for i in model.graph.initializer}
    source = {}  # DequantizeLinear output -> the float tensor its QuantizeLinear read
    quantized_from = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits and n.input[0] in quantized_from:
            source[n.output[0]] = quantized_from[n.input[0]]
    rewired = 0
    for n in model.graph.node:
        if n.op_type in GEMM_OPS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            if name in source:
                n.input[i] = source[name]
                rewired += 1
    return rewired


# ---------------------------------------------------------------------------------------------------------
# FP8 from the INT8 placement
# ---------------------------------------------------------------------------------------------------------

def _to_e4m3(x: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.clip(x, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)


def int8_to_fp8(qdq: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """Turn every symmetric INT8 Q/DQ pair of `qdq` into an E4M3 pair (scale amax/448); weights are
    re-quantized per channel from `original`'s FP32 weights (matched through the consuming GEMM)."""
    from onnx import version_converter

    orig_inits = {i.name: i for i in original.graph.initializer}
    orig_nodes = {n.name: n for n in _node_names(original).graph.node}
    inits = {i.name: i for i in qdq.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in qdq.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    replaced: dict[str, TensorProto] = {}
    for n in qdq.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale_name, zp_name = n.input[1], n.input[2] if len(n.input) > 2 else ""
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            # Weight: find the FP32 original through the consuming GEMM (same node name and input slot).
            if n.input[0] in replaced:
                continue
            user = consumers[n.output[0]][0]
            slot = list(user.input).index(n.output[0])
            src = orig_nodes.get(user.name)
            if src is None or src.input[slot] not in orig_inits:
                raise BertrtError(f"FP8: cannot find the FP32 weight of {user.op_type} {user.name!r}")
            w = numpy_helper.to_array(orig_inits[src.input[slot]]).astype(np.float32)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1) % w.ndim
            reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
            amax = np.abs(w).max(axis=reduce_axes)
            scale = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            q = _to_e4m3(w / scale.reshape(shape))
            replaced[n.input[0]] = numpy_helper.from_array(q, n.input[0])
            inits[scale_name].CopyFrom(numpy_helper.from_array(scale, scale_name))
        elif scale_name not in replaced:
            s = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
            inits[scale_name].CopyFrom(numpy_helper.from_array((s * INT8_MAX / FP8_MAX).astype(np.float32), scale_name))
            replaced[scale_name] = inits[scale_name]
        if zp_name and zp_name not in replaced:
            zp = numpy_helper.to_array(inits[zp_name])
            if np.any(zp != 0):
                raise BertrtError("FP8: the INT8 placement has a non-zero zero point (expected symmetric)")
            inits[zp_name].CopyFrom(helper.make_tensor(zp_name, TensorProto.FLOAT8E4M3FN, list(zp.shape),
                                                       np.zeros(zp.size, dtype=np.uint8).tobytes(), raw=True))
            replaced[zp_name] = inits[zp_name]
    for name, tensor in replaced.items():
        if name in inits and tensor is not inits[name]:
            inits[name].CopyFrom(tensor)
    # Float8 QuantizeLinear/DequantizeLinear need opset 19.
    opset = next(o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 19:
        qdq = version_converter.convert_version(qdq, 19)
    return qdq


# ---------------------------------------------------------------------------------------------------------
# Checks used by tests and reports
# ---------------------------------------------------------------------------------------------------------

def qdq_summary(model: onnx.ModelProto) -> dict:
    """Count Q/DQ nodes and check symmetry: every zero point is 0, weight DQs are per-channel."""
    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    nonzero = [n.name for n in q + dq if len(n.input) > 2 and n.input[2] in inits
               and np.any(numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) != 0)]
    weight_dq = [n for n in dq if n.input[0] in inits]
    per_channel = [n for n in weight_dq if numpy_helper.to_array(inits[n.input[1]]).size > 1]
    return {"quantize": len(q), "dequantize": len(dq), "weight_dequantize": len(weight_dq),
            "weight_per_channel": len(per_channel), "nonzero_zero_points": nonzero}
