"""CPU reference implementations of TensorRT's three fixed-sequence-length BERT plugins.

TensorRT cannot run here, so a plugin graph is executed with
``onnx.reference.ReferenceEvaluator(model, new_ops=REFERENCE_OPS)``. Each op below implements the plugin's
own semantics and layouts in numpy (never an unfused ONNX subgraph). Nodes live in ``PLUGIN_DOMAIN``; the
model needs an opset import for it.

What was verified in NVIDIA/TensorRT and onnx/onnx-tensorrt (stored copies, read 2026-11), and how it
shapes this module:

Versions and fields (IPluginV3 creators in ``plugin/embLayerNormPlugin/embLayerNormPlugin.cpp``,
``plugin/skipLayerNormPlugin/skipLayerNormPlugin.cpp``, ``plugin/bertQKVToContextPlugin/qkvToContextPlugin.cpp``;
IPluginV2 creators in the ``…PluginLegacy.cpp`` next to them; READMEs in the same folders are older than
the code and partly wrong, e.g. they give the outputs as [S, B, E] and [B]):
- CustomEmbLayerNormPluginDynamic: "1" (V2) and "6" (V3), same fields in both:
  ``bert_embeddings_layernorm_beta/_gamma``, ``bert_embeddings_word_embeddings``,
  ``bert_embeddings_token_type_embeddings``, ``bert_embeddings_position_embeddings`` (the five required),
  ints ``output_fp16``, ``full_mask``, ``mha_type_id`` (a ``nvinfer1::DataType`` value, 0..3 accepted).
  Weights are used by element count only (E = beta.count, vocab = count / E), so their shapes do not matter.
- CustomSkipLayerNormPluginDynamic: "1" and "5"; required ``type_id``, ``ld``, ``beta``, ``gamma``; optional
  ``bias``. Both versions overwrite ``ld`` with the input's dim 2 when shapes are configured.
- CustomQKVToContextPluginDynamic: "1" and "4"; required ``type_id`` (0..2), ``hidden_size``, ``num_heads``,
  ``has_mask`` (an INT32 field, 0 or 1; the README's "bool" is wrong); optional ``dq_probs`` (INT8 only).
  The V3 runtime-only fields (S, B, SM, hasUnfusedDispatcher, runnerStateBuffer) never come from ONNX.
- ONNX parser (onnx-tensorrt ``onnxOpImporters.cpp``, FallbackPluginImporter): an op type without an
  importer is looked up as plugin ``(op_type, attr plugin_version or "1", attr plugin_namespace or "")``;
  the creator's declared fields are then filled from the node's attributes (``loadFields``; its body was
  not in the index, so the attribute -> field type mapping is read from the call site only).

Semantics (``plugin/embLayerNormPlugin/embLayerNormKernel.cu``, ``plugin/skipLayerNormPlugin/skipLayerNormKernel.cu``,
``plugin/common/common.cuh``, ``plugin/bertQKVToContextPlugin/mhaRunner.cu`` and ``mhaRunner.h``,
``plugin/common/bertCommon.h``):
- Layout is sequence-major: SDIM = 0, BDIM = 1, HDIM = 2. EmbLN inputs are [S, B]; the embedding output is
  [S, B, E, 1, 1]; SkipLN and QKV work on [S, B, *, 1, 1].
- EmbLN: x = word[id] + token_type[seg] + position[s]; LayerNorm with rsqrt(E[x^2] - mean^2), no epsilon.
  Out-of-range ids leave the row unwritten on the GPU; here they raise.
- Mask index, unfused path (packSize ``unfusedMaskSize`` = 1): an INT32 tensor [B, 1] holding, per batch
  column of the [S, B] mask, the position of the first 0 (S if there is none). For a contiguous mask this
  is the number of valid tokens (110100 gives 2, not 3). When ``full_mask`` is set, or ``mha_type_id`` is
  FP16/INT8 on SM 75..120 with S in {64, 96, 128, 384}, the plugin instead writes the fused kernels' packed
  mask [B, packedSize]; this reference always models the unfused path and rejects ``full_mask``. (A 2023
  copy of the V2 plugin declared this output FLOAT while writing int32; current code declares INT32.)
- SkipLN: LayerNorm(input + skip [+ bias]). Epsilon depends on the kernel path: hidden sizes 768 and 1024
  use ``skipln_vec`` with ``std::numeric_limits<T>::epsilon()`` (2^-23 FP32, 2^-10 FP16); every other hidden
  size uses ``layerNorm``/``layerNormSmall`` from ``common.cuh`` with no epsilon at all.
- QKV (UnfusedMHARunner): per token the 3E inputs are (N, 3, H); scores Q.K^T, softmax of
  (scores - max) * 1/sqrt(H) over keys j < min(S, maskIdx[b]) (probabilities of masked keys are exactly 0);
  output [S, B, N*H, 1, 1]. Without a mask all S keys count. A batch row with maskIdx 0 gets zeros here
  (as the S = 128/384 kernels give; the generic small kernel would produce NaN).
  The fused kernels (FP16/INT8, mask present, head size 64, supported S) ship as cubins; that they compute
  the same function is assumed, not verified.

Precision: ``output_fp16``/``type_id`` = 1 is honoured by computing in float64/float32 and casting the
output to float16. The GPU kernels instead store weights in FP16 and accumulate in half (SkipLN) or mixed
precision, so FP16 results differ from this reference by FP16 rounding. INT8 (type_id 2) needs Q/DQ scales
and is not modelled (NotImplementedError).

Deliberately stricter than TensorRT, to catch surgery bugs: unknown attributes, a non-empty
``plugin_namespace`` (the BERT plugins register in ""), an ``ld`` that disagrees with the input, weights
whose sizes disagree, and ids beyond the tables all raise instead of being ignored or reading garbage.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

PLUGIN_DOMAIN = "trt.plugins"

# Fixed-sequence-length versions: IPluginV2 creator first, IPluginV3 creator second.
EMB_LAYER_NORM_VERSIONS = ("1", "6")
SKIP_LAYER_NORM_VERSIONS = ("1", "5")
QKV_TO_CONTEXT_VERSIONS = ("1", "4")

# nvinfer1::DataType values used by type_id / mha_type_id.
TYPE_FP32, TYPE_FP16, TYPE_INT8 = 0, 1, 2

# Hidden sizes served by skipln_vec, the only SkipLN kernel that adds an epsilon.
_SKIP_LN_VECTORIZED_LD = (768, 1024)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float) -> np.ndarray:
    # Two-pass float64 variance equals the kernels' one-pass E[x^2] - mean^2 without its cancellation.
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + epsilon) + beta


def _vector(name: str, values, size: int | None = None) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or (size is not None and v.size != size):
        raise ValueError(f"{name} has {v.size} elements, expected {size if size is not None else '> 0'}")
    return v


def _table(name: str, values, width: int) -> np.ndarray:
    # The plugins use Weights.count only: rows = count / E, whatever shape the attribute had.
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or v.size % width:
        raise ValueError(f"{name} has {v.size} elements, not a multiple of the hidden size {width}")
    return v.reshape(-1, width)


def _ids(name: str, values, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(values)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer tensor (the plugin takes INT32), got {a.dtype}")
    if a.ndim != 2 or (shape is not None and a.shape != shape):
        raise ValueError(f"{name} must be [S, B]{'' if shape is None else f' = {shape}'}, got {a.shape}")
    return a


def _check_range(name: str, ids: np.ndarray, rows: int) -> None:
    if ids.min() < 0 or ids.max() >= rows:
        raise ValueError(f"{name} must lie in [0, {rows}), got [{ids.min()}, {ids.max()}]")


def _plugin_tensor(name: str, values) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 5 or a.shape[3:] != (1, 1):
        raise ValueError(f"{name} must be [S, B, C, 1, 1], got {a.shape}")
    return a


def mask_index(input_mask) -> np.ndarray:
    """Unfused mask index [B, 1] int32 of an [S, B] mask: position of the first 0 per column, else S."""
    m = _ids("input_mask", input_mask)
    padded = m == 0
    first = np.where(padded.any(axis=0), padded.argmax(axis=0), m.shape[0])
    return first.astype(np.int32)[:, None]


def emb_layer_norm(input_ids, segment_ids, input_mask, word, token_type, position, gamma, beta):
    """EmbLayerNorm: [S, B] ids -> (embedding [S, B, E, 1, 1] float32, mask index [B, 1] int32)."""
    ids = _ids("input_ids", input_ids)
    seg = _ids("segment_ids", segment_ids, ids.shape)
    _ids("input_mask", input_mask, ids.shape)
    beta = _vector("bert_embeddings_layernorm_beta", beta)
    gamma = _vector("bert_embeddings_layernorm_gamma", gamma, beta.size)
    word = _table("bert_embeddings_word_embeddings", word, beta.size)
    token_type = _table("bert_embeddings_token_type_embeddings", token_type, beta.size)
    position = _table("bert_embeddings_position_embeddings", position, beta.size)

    s = ids.shape[0]
    if s > position.shape[0]:
        raise ValueError(f"sequence length {s} (dim 0 of the [S, B] ids) exceeds {position.shape[0]} positions")
    _check_range("input_ids", ids, word.shape[0])
    _check_range("segment_ids", seg, token_type.shape[0])

    x = word[ids] + token_type[seg] + position[:s, None, :]
    emb = _layer_norm(x, gamma, beta, 0.0)  # the embedding kernel adds no epsilon
    return emb[..., None, None].astype(np.float32), mask_index(input_mask)


def skip_layer_norm_epsilon(hidden_size: int, type_id: int) -> float:
    """The epsilon the SkipLayerNorm kernel that serves ``hidden_size`` adds to the variance."""
    if hidden_size not in _SKIP_LN_VECTORIZED_LD:
        return 0.0
    return float(np.finfo(np.float16 if type_id == TYPE_FP16 else np.float32).eps)


def skip_layer_norm(x, skip, gamma, beta, bias=None, epsilon: float = 0.0) -> np.ndarray:
    """SkipLayerNorm on [S, B, E, 1, 1]: LayerNorm(x + skip [+ bias]) over E, float32 result."""
    x = _plugin_tensor("input", x)
    skip = _plugin_tensor("skip", skip)
    if skip.shape != x.shape:
        raise ValueError(f"input {x.shape} and skip {skip.shape} must have the same shape")
    e = x.shape[2]
    h = x[..., 0, 0].astype(np.float64) + skip[..., 0, 0]
    if bias is not None:
        h = h + _vector("bias", bias, e)
    out = _layer_norm(h, _vector("gamma", gamma, e), _vector("beta", beta, e), epsilon)
    return out[..., None, None].astype(np.float32)


def qkv_to_context(qkv, num_heads: int, mask_idx=None) -> np.ndarray:
    """QKVToContext on [S, B, 3E, 1, 1] packed (N, 3, H) per token -> context [S, B, E, 1, 1] float32."""
    x = _plugin_tensor("input", qkv)
    s, b, three_e = x.shape[:3]
    if num_heads <= 0 or three_e % 3 or (three_e // 3) % num_heads:
        raise ValueError(f"input width {three_e} is not 3 * num_heads({num_heads}) * head_size")
    e = three_e // 3
    h = e // num_heads
    x = x[..., 0, 0].astype(np.float64).reshape(s, b, num_heads, 3, h)
    q, k, v = x[:, :, :, 0], x[:, :, :, 1], x[:, :, :, 2]

    scores = np.einsum("ibnh,jbnh->bnij", q, k, optimize=True) / np.sqrt(h)
    if mask_idx is not None:
        m = np.asarray(mask_idx)
        if not np.issubdtype(m.dtype, np.integer):
            raise TypeError(f"mask index must be INT32, got {m.dtype}")
        if m.shape != (b, 1):
            raise ValueError(f"mask index must be the unfused [B, 1] with B = input dim 1 = {b}, got {m.shape}")
        valid_keys = np.arange(s)[None, :] < np.minimum(m[:, 0], s)[:, None]
        scores = np.where(valid_keys[:, None, None, :], scores, -np.inf)

    # Softmax over valid keys only; a row without any valid key yields zeros rather than NaN.
    row_max = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(row_max), row_max, 0.0))
    total = weights.sum(axis=-1, keepdims=True)
    probs = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    ctx = np.einsum("bnij,jbnh->ibnh", probs, v, optimize=True).reshape(s, b, e)
    return ctx[..., None, None].astype(np.float32)


def _plugin_attrs(op: str, attrs: dict, versions: tuple[str, ...], required: set[str], optional: set[str]) -> dict:
    attrs = dict(attrs)
    version = attrs.pop("plugin_version", "1")  # the ONNX parser's default
    namespace = attrs.pop("plugin_namespace", "")
    if version not in versions:
        raise NotImplementedError(f"{op} plugin_version {version!r}: only fixed-length {versions} are modelled")
    if namespace != "":
        raise ValueError(f"{op} is registered in plugin namespace '', got {namespace!r}")
    missing = required - attrs.keys()
    unknown = attrs.keys() - required - optional
    if missing or unknown:
        raise ValueError(f"{op}: missing attributes {sorted(missing)}, unknown attributes {sorted(unknown)}")
    return attrs


def _output_dtype(op: str, type_id: int) -> type:
    if type_id == TYPE_INT8:
        raise NotImplementedError(f"{op}: INT8 needs Q/DQ scales and the fused kernels; not modelled")
    if type_id not in (TYPE_FP32, TYPE_FP16):
        raise ValueError(f"{op}: type id {type_id} is not FP32 (0) or FP16 (1)")
    return np.float16 if type_id == TYPE_FP16 else np.float32


class _PluginOp(OpRun):
    op_domain = PLUGIN_DOMAIN


class CustomEmbLayerNormPluginDynamic(_PluginOp):
    _WEIGHTS = {
        "bert_embeddings_word_embeddings",
        "bert_embeddings_token_type_embeddings",
        "bert_embeddings_position_embeddings",
        "bert_embeddings_layernorm_gamma",
        "bert_embeddings_layernorm_beta",
    }

    def _run(self, input_ids, segment_ids, input_mask, **attrs):
        a = _plugin_attrs(
            self.onnx_node.op_type, attrs, EMB_LAYER_NORM_VERSIONS, self._WEIGHTS,
            {"output_fp16", "full_mask", "mha_type_id"},
        )
        if a.get("full_mask", 0):
            raise NotImplementedError("full_mask selects the fused kernels' packed mask, which is not modelled")
        if a.get("mha_type_id", TYPE_FP32) not in range(4):
            raise ValueError(f"mha_type_id must be a DataType in 0..3, got {a['mha_type_id']}")
        emb, idx = emb_layer_norm(
            input_ids, segment_ids, input_mask,
            a["bert_embeddings_word_embeddings"], a["bert_embeddings_token_type_embeddings"],
            a["bert_embeddings_position_embeddings"], a["bert_embeddings_layernorm_gamma"],
            a["bert_embeddings_layernorm_beta"],
        )
        return emb.astype(np.float16 if a.get("output_fp16", 0) else np.float32), idx


class CustomSkipLayerNormPluginDynamic(_PluginOp):
    def _run(self, input, skip, **attrs):  # noqa: A002 - the plugin's input name
        a = _plugin_attrs(
            self.onnx_node.op_type, attrs, SKIP_LAYER_NORM_VERSIONS, {"type_id", "ld", "gamma", "beta"}, {"bias"},
        )
        dtype = _output_dtype(self.onnx_node.op_type, a["type_id"])
        e = _plugin_tensor("input", input).shape[2]
        if a["ld"] != e:
            raise ValueError(f"ld={a['ld']} disagrees with the input's hidden size {e}")
        out = skip_layer_norm(
            input, skip, a["gamma"], a["beta"], a.get("bias"), skip_layer_norm_epsilon(e, a["type_id"]),
        )
        return (out.astype(dtype),)


class CustomQKVToContextPluginDynamic(_PluginOp):
    def _run(self, qkv, *mask, **attrs):
        a = _plugin_attrs(
            self.onnx_node.op_type, attrs, QKV_TO_CONTEXT_VERSIONS,
            {"type_id", "hidden_size", "num_heads", "has_mask"}, {"dq_probs"},
        )
        dtype = _output_dtype(self.onnx_node.op_type, a["type_id"])
        if a["has_mask"] not in (0, 1) or len(mask) != a["has_mask"]:
            raise ValueError(f"has_mask={a['has_mask']} but the node has {len(mask)} mask input(s)")
        width = _plugin_tensor("input", qkv).shape[2]
        if width != 3 * a["hidden_size"]:
            raise ValueError(f"input width {width} is not 3 * hidden_size ({a['hidden_size']})")
        out = qkv_to_context(qkv, a["num_heads"], mask[0] if mask else None)
        return (out.astype(dtype),)


REFERENCE_OPS = [CustomEmbLayerNormPluginDynamic, CustomSkipLayerNormPluginDynamic, CustomQKVToContextPluginDynamic]


class MatMul(OpRun):
    """onnx's reference MatMul, with [.., K] @ [K, N] run as one 2-D GEMM: the same float32 products, but numpy's
    stacked matmul (what the stock op calls) is ~15x slower on the plugin graph's [S, B, E] activations."""

    op_domain = ""

    def _run(self, a, b):
        if a.ndim > 2 and b.ndim == 2:
            return ((a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1]),)
        return (np.matmul(a, b),)


def reference_ops(fast_matmul: bool = True) -> list[type[OpRun]]:
    """A fresh `new_ops` list for ReferenceEvaluator (it appends to the list it is given)."""
    return [*REFERENCE_OPS, *([MatMul] if fast_matmul else [])]
