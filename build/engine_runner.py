"""Open an engine from `bertrt build` for inference: the checks that need no GPU first (sidecar, engine and source
hashes, runtime and version), then a Polygraphy `TrtRunner` over `EngineFromBytes` whose bytes come from a loader
that checks the GPU's compute capability. Nothing is deserialized before the runner is activated.

What the checks rest on: TensorRT engines run only with the TensorRT version (and, for standard TensorRT, the GPU
model) they were built with, and TensorRT-RTX engines only on their target compute capabilities; deserializing a
foreign or damaged engine fails deep inside TensorRT (or crashes). The sidecar and the engine's sha256 catch those
cases before TensorRT sees the bytes — which is how they are verified on machines without a GPU.
"""

from __future__ import annotations

from pathlib import Path

from bertrt.build import runtime as runtimes
from bertrt.engine_sidecar import EngineRecord

from bertrt.artifacts import sha256_file
from bertrt.errors import BertrtError


def check_record(path: Path, record: EngineRecord) -> None:
    """Engine and sidecar belong together, the source ONNX is the one the engine was built from (when it is still
    there), and this machine has the runtime version the engine needs."""
    if sha256_file(path) != record.engine_sha256:
        raise BertrtError(f"{path}: the engine does not match its sidecar (sha256 differs): a corrupted or replaced "
                          f"engine, or a stale sidecar; rebuild it with `bertrt build`")
    source = Path(record.source_path)
    if source.is_file() and sha256_file(source) != record.source_sha256:
        raise BertrtError(f"{path}: stale engine: {source} changed since the engine was built from it; rebuild it")
    runtime = runtimes.RUNTIMES[record.runtime]
    trt = runtimes.load(runtime)
    if trt.__version__ != record.runtime_version:
        raise BertrtError(f"{path}: built with {runtime.label} {record.runtime_version}, this machine has "
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
        check_device(self.path, self.record, runtimes.device_compute_capability())
        data = self.path.read_bytes()
        check_record(self.path, self.record)
        return data


def open_engine(path: Path):
    """(runner, BERT config, profiles) of a built engine; raises one-line errors for everything checkable here."""
    if not path.is_file():
        raise BertrtError(f"{path}: engine file not found")
    record = EngineRecord.read(path)
    check_record(path, record)
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from bertrt.build.network import polygraphy_errors

    engine = EngineFromBytes(_EngineBytesForDevice(path, record))

    def deserialized():
        with polygraphy_errors(f"{path}: {record.runtime} could not deserialize the engine"):
            return engine()

    return TrtRunner(deserialized, name=f"{record.runtime}:{path.name}"), record.config, record.profiles
