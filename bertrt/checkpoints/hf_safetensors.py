"""Read a Hugging Face `BertForQuestionAnswering` safetensors file into the Google TF naming and layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from bertrt.checkpoints.weights import Weights
from bertrt.families.base import bert_weight_map

from bertrt.errors import BertrtError
from bertrt.extras import require

# Buffers and heads the QA network does not use.
_IGNORED = re.compile(r"(^|\.)position_ids$|^bert\.pooler\.")


def _google_name(name: str) -> tuple[str, bool] | None:
    """(Google name, transpose?) for an HF tensor name, None if it is not part of BERT QA."""
    if name.startswith("qa_outputs."):
        return ("cls/squad/output_weights" if name.endswith("weight") else "cls/squad/output_bias"), False
    if not name.startswith("bert."):
        return None
    # The family registry's BERT weight map (Linear weights are [out, in] and get transposed). A
    # BertForQuestionAnswering has no embedding projection: that is ELECTRA's, which export reads through hf_folder.
    mapped = bert_weight_map(name[len("bert."):])
    return None if mapped is None or "/project/" in mapped[0] else mapped


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
