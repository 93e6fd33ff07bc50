"""What makes an ONNX file a bertrt BERT-QA model: the I/O signature and the metadata every stage stamps on it."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

import bertrt
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

INPUT_NAMES = ("input_ids", "segment_ids", "input_mask")  # int32 [batch, seq], as in NVIDIA's demo
OUTPUT_NAMES = ("start_logits", "end_logits")  # float [batch, seq]
_META_CONFIG = "bertrt.config"
_META_STAGE = "bertrt.stage"
_META_VERSION = "bertrt.version"
# onnxruntime session config entries an artifact needs to run (JSON), e.g. FP8 Q/DQ needs Q/DQ fusion off.
META_ORT_SESSION_CONFIG = "bertrt.ort_session_config"


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
    if not path.is_file():
        raise BertrtError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning or ValueError for non-ONNX bytes
        raise BertrtError(f"{path}: not an ONNX file ({type(exc).__name__})") from None
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
    return model, BertConfig.from_dict(json.loads(meta[_META_CONFIG]), source=str(path))


def stage_of(model: onnx.ModelProto) -> str:
    return metadata(model).get(_META_STAGE, "unknown")


def ort_session_config(model: onnx.ModelProto) -> dict[str, str]:
    """The onnxruntime session config entries the artifact asks for (empty for most)."""
    raw = metadata(model).get(META_ORT_SESSION_CONFIG)
    return json.loads(raw) if raw else {}
