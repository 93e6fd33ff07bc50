"""The tensorrt-engine runtime: an engine from `bertrt build`, run by Polygraphy's `TrtRunner` with the TensorRT
library its sidecar names (TensorRT or TensorRT-RTX). The checks that need no GPU come first (sidecar, engine and
source hashes, library and version), when the engine is opened; the engine bytes come from a loader that checks the
GPU's compute capability, and nothing is deserialized before the runner is activated.

What the checks rest on: TensorRT engines run only with the TensorRT version (and, for standard TensorRT, the GPU
model) they were built with, and TensorRT-RTX engines only on their target compute capabilities; deserializing a
foreign or damaged engine fails deep inside TensorRT (or crashes). The sidecar and the engine's sha256 catch those
cases before TensorRT sees the bytes — which is how they are verified on machines without a GPU.
"""

from __future__ import annotations

from pathlib import Path

from bertrt.artifacts import sha256_file
from bertrt.engine_sidecar import EngineRecord
from bertrt.errors import BertrtError
from bertrt.profiles import QAProfile
from bertrt.runtimes import tensorrt_library as libraries
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions
from bertrt.runtimes.registry import Runtime


def check_record(path: Path, record: EngineRecord) -> None:
    """Engine and sidecar belong together, the source ONNX is the one the engine was built from (when it is still
    there), and this machine has the library version the engine needs."""
    if sha256_file(path) != record.engine_sha256:
        raise BertrtError(f"{path}: the engine does not match its sidecar (sha256 differs): a corrupted or replaced "
                          f"engine, or a stale sidecar; rebuild it with `bertrt build`")
    source = Path(record.source_path)
    if source.is_file() and sha256_file(source) != record.source_sha256:
        raise BertrtError(f"{path}: stale engine: {source} changed since the engine was built from it; rebuild it")
    library = libraries.LIBRARIES[record.runtime]
    trt = libraries.load(library)
    if trt.__version__ != record.runtime_version:
        raise BertrtError(f"{path}: built with {library.label} {record.runtime_version}, this machine has "
                          f"{trt.__version__}; rebuild the engine here")


def check_device(path: Path, record: EngineRecord, capability: str) -> None:
    if capability not in record.compute_capabilities:
        raise BertrtError(f"{path}: built for compute capability {', '.join(record.compute_capabilities)}, this "
                          f"GPU is {capability}; rebuild it (TensorRT-RTX: --compute-capability {capability})")


class _EngineBytesForDevice:
    """Lazy loader of the engine bytes: checks the GPU (and the bytes, again) when the runner is activated."""

    def __init__(self, path: Path, record: EngineRecord):
        self.path, self.record = path, record

    def __call__(self) -> bytes:
        check_device(self.path, self.record, libraries.device_compute_capability())
        data = self.path.read_bytes()
        check_record(self.path, self.record)
        return data


class EngineRunner(QARunner):
    """Polygraphy's TrtRunner over the engine (made on activation: importing `polygraphy.backend.trt` binds the
    TensorRT library, which `check_record` chose first), with the engine's optimization profiles."""

    def __init__(self, path: Path, record: EngineRecord):
        super().__init__(name=f"{record.runtime}:{path.name}", prefix="tensorrt-engine-runner")
        self.path, self.record = path, record

    @property
    def profiles(self) -> tuple[QAProfile, ...]:
        return tuple(self.record.profiles)

    def set_profile(self, index: int) -> None:
        self.trt.set_profile(index)  # switch the execution context's optimization profile

    def activate_impl(self):
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner  # after the library is chosen (see above)

        engine = EngineFromBytes(_EngineBytesForDevice(self.path, self.record))

        def deserialized():
            with libraries.polygraphy_errors(f"{self.path}: {self.record.runtime} could not deserialize the engine"):
                return engine()

        self.trt = TrtRunner(deserialized, name=self.name)
        self.trt.activate()

    def infer_impl(self, feed_dict):
        out = self.trt.infer(feed_dict)
        self.inference_time = self.trt.last_inference_time()
        return out

    def deactivate_impl(self):
        self.trt.deactivate()
        del self.trt


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    check_record(artifact.path, artifact.record)
    runner = EngineRunner(artifact.path, artifact.record)
    return QABackend(runner, artifact.config, f"TensorRT engine: {artifact.path}", runner.profiles)


RUNTIME = Runtime(
    name="tensorrt-engine", artifact="engine", open=_open,
    description="an engine from `bertrt build` on Polygraphy's TrtRunner, with the TensorRT or TensorRT-RTX library "
                "its sidecar names (NVIDIA GPU)",
    requires=("polygraphy",), requires_any=("tensorrt", "tensorrt_rtx"),
    install="pip install 'bertrt[tensorrt]' or 'bertrt[rtx]'",
    default_when=lambda options: True)
