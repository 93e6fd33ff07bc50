"""What a runtime is handed: a QA artifact read once, with the facts every runtime of its kind needs.

Three kinds: `onnx` (a bertrt ONNX model: its graph, target and onnxruntime session config), `engine` (an engine from
`bertrt build`: its sidecar record) and `checkpoint` (a TF checkpoint directory or HF `.safetensors`, the export's
input). Reading checks only what needs no runtime: a runtime's own checks come when it opens the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from bertrt.engine_sidecar import EngineRecord
from bertrt.errors import BertrtError
from bertrt.export.onnx_export import resolve_source  # the checkpoint's config (the export's own reader)
from bertrt.model_config import BertConfig
from bertrt.qa_contract import load_qa_model, ort_session_config
from bertrt.targets import Target, target_of

ARTIFACT_KINDS = ("onnx", "engine", "checkpoint")
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # one of ARTIFACT_KINDS
    config: BertConfig
    model: onnx.ModelProto | None = field(default=None, repr=False)  # onnx: the graph (weights loaded)
    target: Target | None = None  # onnx: its graph form (bertrt.targets)
    session_config: dict[str, str] = field(default_factory=dict)  # onnx: validated onnxruntime session entries
    record: EngineRecord | None = None  # engine: its sidecar


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".safetensors"


def kind_of(path: Path) -> str:
    if is_checkpoint(path):
        return "checkpoint"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if path.suffix == ".onnx":
        return "onnx"
    raise BertrtError(f"{path}: unsupported model file (expected .onnx, {' or '.join(ENGINE_SUFFIXES)}, or a "
                      f"checkpoint)")


def read_artifact(path: Path) -> Artifact:
    kind = kind_of(path)
    if kind == "checkpoint":
        return Artifact(path, kind, BertConfig.from_json(resolve_source(path).config))
    if kind == "engine":
        if not path.is_file():
            raise BertrtError(f"{path}: engine file not found")
        record = EngineRecord.read(path)
        return Artifact(path, kind, record.config, record=record)
    model, cfg = load_qa_model(path)
    session_config = ort_session_config(model, source=str(path))  # checked for every ONNX model, used by ort ones
    return Artifact(path, kind, cfg, model, target_of(model), session_config)
