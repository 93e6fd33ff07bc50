"""Read a Hugging Face `BertForQuestionAnswering` safetensors file into the Google TF naming and layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from bertrt.export.weights import Weights

from bertrt.errors import BertrtError
from bertrt.extras import require

_EMBEDDINGS = {"word_embeddings.weight": "word_embeddings", "position_embeddings.weight": "position_embeddings",
               "token_type_embeddings.weight": "token_type_embeddings"}
# HF per-layer module path -> Google variable path (Linear weights are [out, in] and get transposed).
_LAYER_MODULES = {"attention.self.query": "attention/self/query", "attention.self.key": "attention/self/key",
                  "attention.self.value": "attention/self/value", "attention.output.dense": "attention/output/dense",
                  "intermediate.dense": "intermediate/dense", "output.dense": "output/dense"}
_LAYER_NORMS = {"attention.output.LayerNorm": "attention/output/LayerNorm", "output.LayerNorm": "output/LayerNorm"}
_LN_PARAM = {"weight": "gamma", "gamma": "gamma", "bias": "beta", "beta": "beta"}
# Buffers and heads the QA network does not use.
_IGNORED = re.compile(r"(^|\.)position_ids$|^bert\.pooler\.")


def _google_name(name: str) -> tuple[str, bool] | None:
    """(Google name, transpose?) for an HF tensor name, None if it is not part of BERT QA."""
    if name.startswith("qa_outputs."):
        return ("cls/squad/output_weights" if name.endswith("weight") else "cls/squad/output_bias"), False
    if name.startswith("bert.embeddings."):
        rest = name[len("bert.embeddings."):]
        if rest in _EMBEDDINGS:
            return f"bert/embeddings/{_EMBEDDINGS[rest]}", False
        module, _, param = rest.rpartition(".")
        if module == "LayerNorm" and param in _LN_PARAM:
            return f"bert/embeddings/LayerNorm/{_LN_PARAM[param]}", False
        return None
    m = re.match(r"^bert\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$", name)
    if not m:
        return None
    layer, module, param = m.groups()
    prefix = f"bert/encoder/layer_{layer}/"
    if module in _LAYER_MODULES:
        return prefix + _LAYER_MODULES[module] + ("/kernel" if param == "weight" else "/bias"), param == "weight"
    if module in _LAYER_NORMS:
        return prefix + _LAYER_NORMS[module] + "/" + _LN_PARAM[param], False
    return None


def read_hf_safetensors(path: Path) -> Weights:
    SafetensorError = require("safetensors", "export").SafetensorError
    load_file = require("safetensors.numpy", "export").load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BertrtError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    weights: Weights = {}
    for name, value in tensors.items():
        if _IGNORED.search(name):
            continue
        mapped = _google_name(name)
        if mapped is None:
            raise BertrtError(f"{path}: unexpected tensor {name!r}: not a BertForQuestionAnswering checkpoint?")
        google, transpose = mapped
        arr = np.asarray(value, dtype=np.float32)
        weights[google] = np.ascontiguousarray(arr.T) if transpose else arr
    return weights
