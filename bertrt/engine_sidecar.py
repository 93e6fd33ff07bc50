"""The engine sidecar `<engine>.json`: what an engine file cannot tell about itself, read and written only here.

A TensorRT engine holds no BERT config, no record of the ONNX it came from, and (for standard TensorRT) runs only
with the exact TensorRT version and GPU it was built for. The sidecar records that, in the layout of every bertrt
sidecar (stage, artifact, sha256, parameters, inputs, tools), and is untrusted input when read back: every field
is type-checked, and any problem is one line naming the sidecar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bertrt.profiles import QAProfile

from bertrt.artifacts import sidecar_path, tool_versions
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig, parse_json_strict

STAGE = "build"
PRECISIONS = ("fp32", "fp16", "int8", "fp8", "best")
_SHA = re.compile(r"[0-9a-f]{64}")
_CC = re.compile(r"\d{1,2}\.\d")


@dataclass(frozen=True)
class EngineRecord:
    engine_sha256: str
    runtime: str  # "tensorrt" | "tensorrt-rtx"
    runtime_version: str
    compute_capabilities: tuple[str, ...]  # where it runs: RTX targets, or the GPU a TensorRT engine was built on
    strongly_typed: bool
    precision: str
    target: str
    profiles: tuple[QAProfile, ...]
    config: BertConfig
    source_path: str  # the ONNX it was built from (absolute)
    source_sha256: str
    calib_cache: str | None = None  # TensorRT 10 INT8 calibration cache used

    def sidecar(self, engine: str | Path, parameters: dict | None = None) -> dict:
        """The content of `<engine>.json` (written by `bertrt build` together with the engine, as one set)."""
        return {
            "stage": STAGE,
            "artifact": Path(engine).name,
            "sha256": self.engine_sha256,
            "engine": {"runtime": self.runtime, "runtime_version": self.runtime_version,
                       "compute_capabilities": list(self.compute_capabilities),
                       "strongly_typed": self.strongly_typed, "precision": self.precision, "target": self.target,
                       "profiles": [p.to_dict() for p in self.profiles], "calib_cache": self.calib_cache},
            "config": self.config.to_dict(),
            "parameters": parameters or {},
            "inputs": {"model": {"path": self.source_path, "sha256": self.source_sha256}},
            "tools": tool_versions(),
        }

    @classmethod
    def read(cls, engine: str | Path) -> EngineRecord:
        side = sidecar_path(engine)
        if not side.is_file():
            raise BertrtError(f"{engine}: no engine sidecar {side.name} (not an engine from `bertrt build`; "
                              "rebuild it)")
        try:
            data = parse_json_strict(side.read_text())
        except (OSError, ValueError) as exc:
            raise BertrtError(f"{side}: not a bertrt engine sidecar ({str(exc).splitlines()[0][:200]})") from None
        return cls.from_dict(data, str(side))

    @classmethod
    def from_dict(cls, data, source: str) -> EngineRecord:
        def need(cond: bool, what: str):
            if not cond:
                raise BertrtError(f"{source}: not a bertrt engine sidecar ({what})")

        need(isinstance(data, dict) and data.get("stage") == STAGE, "stage is not 'build'")
        engine, inputs = data.get("engine"), data.get("inputs")
        need(isinstance(engine, dict), "no 'engine' object")
        need(isinstance(inputs, dict) and isinstance(inputs.get("model"), dict), "no inputs.model")
        model = inputs["model"]
        for key, value in (("sha256", data.get("sha256")), ("inputs.model.sha256", model.get("sha256"))):
            need(isinstance(value, str) and _SHA.fullmatch(value) is not None, f"{key} is not a sha256")
        need(engine.get("runtime") in ("tensorrt", "tensorrt-rtx"), "unknown runtime")
        for key in ("runtime_version", "precision", "target"):
            need(isinstance(engine.get(key), str) and len(engine[key]) < 64, f"engine.{key} is not a string")
        need(engine["precision"] in PRECISIONS, f"unknown precision {engine['precision']!r}")
        caps = engine.get("compute_capabilities")
        need(isinstance(caps, list) and all(isinstance(c, str) and _CC.fullmatch(c) for c in caps),
             "compute_capabilities must be a list like ['8.6']")
        need(isinstance(engine.get("strongly_typed"), bool), "strongly_typed is not a boolean")
        profiles = engine.get("profiles")
        need(isinstance(profiles, list) and 0 < len(profiles) <= 64, "profiles must be a non-empty list")
        need(isinstance(model.get("path"), str), "inputs.model.path is not a string")
        cache = engine.get("calib_cache")
        need(cache is None or isinstance(cache, str), "calib_cache is not a string")
        return cls(engine_sha256=data["sha256"], runtime=engine["runtime"], runtime_version=engine["runtime_version"],
                   compute_capabilities=tuple(caps), strongly_typed=engine["strongly_typed"],
                   precision=engine["precision"], target=engine["target"],
                   profiles=tuple(QAProfile.from_dict(p, source) for p in profiles),
                   config=BertConfig.from_dict(data.get("config"), source=f"{source}: config"),
                   source_path=model["path"], source_sha256=model["sha256"], calib_cache=cache)

