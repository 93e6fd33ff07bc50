"""Per-head QKV weight packing expected by TensorRT's ``CustomQKVToContextPluginDynamic``.

The plugin reads one fused projection of width 3E per token and slices it as (N, 3, H): the Q, K and V
slices of head n sit next to each other at columns ``n*3H + {0, H, 2H}``. The plain concatenation
[Q | K | V], i.e. (3, N, H), is wrong for every model with more than one head.

Verified against NVIDIA/TensorRT (stored copies read 2026-11):
- ``plugin/bertQKVToContextPlugin/README.md``: "reshaping [W_tmp] into [E, 3, N, H] ... transposing it
  into [E, N, 3, H]" where W_tmp = [W_q', W_k', W_v']' in [in, out] layout.
- ``plugin/bertQKVToContextPlugin/mhaRunner.cu`` (UnfusedMHARunner::run, tuneBatchedGemm: "input:
  SxBx3xNxH", ``kptr = qptr + headSize``, ``vptr = kptr + headSize``) and ``mhaRunner.h``
  (``mStrideQKV = 3 * mHeadSize``, ``mLdQKV = 3 * B * N * H``): per token the 3E values are (N, 3, H).

Kernels here are TF-layout ([in, out], y = x @ W + b); the packed weight is in [out, in] layout, the
layout of the 1x1 convolution / MatMul-with-transposed-B that produces the plugin's input.
"""

from __future__ import annotations

import numpy as np


def _split_heads(hidden_size: int, num_heads: int) -> int:
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"hidden size {hidden_size} is not divisible by num_heads={num_heads}")
    return hidden_size // num_heads


def pack_qkv(wq, wk, wv, bq, bk, bv, num_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack TF-layout Q/K/V kernels [E_in, E] and biases [E] into ([3E, E_in], [3E]) per head."""
    kernels = [np.asarray(w) for w in (wq, wk, wv)]
    biases = [np.asarray(b) for b in (bq, bk, bv)]
    if kernels[0].ndim != 2 or any(w.shape != kernels[0].shape for w in kernels):
        raise ValueError(f"Q/K/V kernels must share one 2-D shape, got {[w.shape for w in kernels]}")
    e_in, e = kernels[0].shape
    if any(b.shape != (e,) for b in biases):
        raise ValueError(f"Q/K/V biases must have shape ({e},), got {[b.shape for b in biases]}")
    h = _split_heads(e, num_heads)

    # [in, out] -> [out, in], then (3, N, H, in) -> (N, 3, H, in) on the output axis.
    w = np.stack([k.T for k in kernels]).reshape(3, num_heads, h, e_in).transpose(1, 0, 2, 3)
    b = np.stack(biases).reshape(3, num_heads, h).transpose(1, 0, 2)
    return np.ascontiguousarray(w.reshape(3 * e, e_in)), np.ascontiguousarray(b.reshape(3 * e))


def unpack_qkv(w_packed, b_packed, num_heads: int) -> tuple[np.ndarray, ...]:
    """Inverse of :func:`pack_qkv`: returns TF-layout (wq, wk, wv, bq, bk, bv)."""
    w = np.asarray(w_packed)
    b = np.asarray(b_packed)
    if w.ndim != 2 or w.shape[0] % 3 or b.shape != (w.shape[0],):
        raise ValueError(f"expected packed weight [3E, E_in] and bias [3E], got {w.shape} and {b.shape}")
    e = w.shape[0] // 3
    h = _split_heads(e, num_heads)

    w3 = w.reshape(num_heads, 3, h, w.shape[1]).transpose(1, 0, 2, 3).reshape(3, e, w.shape[1])
    b3 = b.reshape(num_heads, 3, h).transpose(1, 0, 2).reshape(3, e)
    wq, wk, wv = (np.ascontiguousarray(k.T) for k in w3)
    bq, bk, bv = (np.ascontiguousarray(x) for x in b3)
    return wq, wk, wv, bq, bk, bv
