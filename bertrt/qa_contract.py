"""What makes an ONNX file a bertrt BERT-QA model: the I/O signature and the metadata every stage stamps on it."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

import bertrt
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig, parse_json_strict
from bertrt.onnx_file import load_onnx

INPUT_NAMES = ("input_ids", "segment_ids", "input_mask")  # int32 [batch, seq], as in NVIDIA's demo
OUTPUT_NAMES = ("start_logits", "end_logits")  # float [batch, seq]
_META_CONFIG = "bertrt.config"
_META_STAGE = "bertrt.stage"
_META_VERSION = "bertrt.version"
# onnxruntime session config entries an artifact needs to run (JSON), e.g. FP8 Q/DQ needs Q/DQ fusion off.
META_ORT_SESSION_CONFIG = "bertrt.ort_session_config"
# A model file is untrusted input: of its metadata, only these session entries (the ones bertrt itself writes) and
# these values reach onnxruntime. Other entries can make onnxruntime write files (e.g. an optimized-model path).
ALLOWED_ORT_SESSION_CONFIG = {"session.disable_quant_qdq": ("0", "1")}


def stamp(model: onnx.ModelProto, stage: str, cfg: BertConfig, extra: dict[str, str] | None = None) -> None:
    """Record the producing stage and the BERT config in the model's metadata (read back by later stages)."""
    props = {_META_STAGE: stage, _META_VERSION: bertrt.__version__, _META_CONFIG: json.dumps(cfg.to_dict())}
    props.update(extra or {})
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "bertrt"
    model.producer_version = bertrt.__version__


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def load_qa_model(path: str | Path, load_weights: bool = True) -> tuple[onnx.ModelProto, BertConfig]:
    """Load an ONNX file and prove it is a bertrt QA model; return it with its BERT config."""
    path = Path(path)
    model = load_onnx(path, load_weights)  # external data checked before it is read (also for later readers)
    meta = metadata(model)
    if _META_CONFIG not in meta:
        raise BertrtError(f"{path}: not a BERT QA model from bertrt (no bertrt metadata; export it with "
                          f"`bertrt export`)")
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    for name in INPUT_NAMES:
        if inputs.get(name) != onnx.TensorProto.INT32:
            raise BertrtError(f"{path}: input {name!r} missing or not int32: not a bertrt BERT QA model")
    if sorted(outputs) != sorted(OUTPUT_NAMES):
        raise BertrtError(f"{path}: outputs {outputs} are not {list(OUTPUT_NAMES)}")
    try:
        stored = parse_json_strict(meta[_META_CONFIG])
    except ValueError as exc:
        raise BertrtError(f"{path}: metadata {_META_CONFIG} is not valid JSON ({exc})") from None
    return model, BertConfig.from_dict(stored, source=f"{path}: metadata {_META_CONFIG}")


def stage_of(model: onnx.ModelProto) -> str:
    return metadata(model).get(_META_STAGE, "unknown")


def ort_session_config(model: onnx.ModelProto, source: str = "model") -> dict[str, str]:
    """The onnxruntime session config entries the artifact asks for (empty for most), checked against the
    allow-list: anything else is refused, naming the entry, rather than passed to onnxruntime."""
    raw = metadata(model).get(META_ORT_SESSION_CONFIG)
    if not raw:
        return {}
    where = f"{source}: metadata {META_ORT_SESSION_CONFIG}"
    try:
        entries = parse_json_strict(raw)
    except ValueError as exc:
        raise BertrtError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(entries, dict):
        raise BertrtError(f"{where} must be a JSON object of strings")
    for key, value in entries.items():
        if key not in ALLOWED_ORT_SESSION_CONFIG:
            raise BertrtError(f"{where}: refusing onnxruntime session option {key!r} (bertrt only applies "
                              f"{', '.join(ALLOWED_ORT_SESSION_CONFIG)})")
        if value not in ALLOWED_ORT_SESSION_CONFIG[key]:
            raise BertrtError(f"{where}: refusing value {value!r} for {key!r} (allowed: "
                              f"{', '.join(ALLOWED_ORT_SESSION_CONFIG[key])})")
    return entries
