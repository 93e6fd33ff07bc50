"""Backend-neutral inference: load a QA artifact, feed int32 [B, S] input_ids/segment_ids/input_mask, get
start/end logits. Each backend is a Polygraphy runner (one interface for onnxruntime now, TensorRT later), wrapped
with the checks the bertrt contract needs (batch and sequence limits, output names)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import INPUT_NAMES, load_qa_model

ORT_PROVIDERS = {"cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


@dataclass
class QABackend:
    runner: object  # polygraphy.backend.base.BaseRunner
    config: BertConfig
    description: str
    seq_len: int | None = None  # fixed sequence length (TensorRT profiles), None when dynamic
    max_batch: int | None = None
    # Sequence-length buckets (run/buckets.py): batches are padded to a bucket and to `batch_size` rows, and those
    # shapes are warmed up on entry. None: each batch is padded only to its longest feature.
    buckets: tuple[int, ...] | None = None
    batch_size: int | None = None

    def __enter__(self) -> QABackend:
        self.runner.activate()
        if self.buckets and self.batch_size and hasattr(self.runner, "warm_up"):
            try:
                self.runner.warm_up([(self.batch_size, b) for b in self.buckets])
            except BaseException:  # e.g. a batch that does not fit: release the runner, report one line
                self.runner.deactivate()
                raise
        return self

    def __exit__(self, *exc) -> None:
        self.runner.deactivate()

    def infer(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch, seq = feed["input_ids"].shape
        if self.max_batch is not None and batch > self.max_batch:
            raise BertrtError(f"batch {batch} is larger than the model's profile allows ({self.max_batch})")
        if self.seq_len is not None and seq != self.seq_len:
            raise BertrtError(f"sequence length {seq} differs from the model's fixed length {self.seq_len}")
        if seq > self.config.max_position_embeddings:
            raise BertrtError(f"sequence length {seq} exceeds the model's {self.config.max_position_embeddings} "
                              f"positions")
        out = self.runner.infer({name: np.ascontiguousarray(feed[name], dtype=np.int32) for name in INPUT_NAMES})
        return (np.asarray(out["start_logits"], dtype=np.float32), np.asarray(out["end_logits"], dtype=np.float32))


def ort_session(path: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                session_config: dict[str, str] | None = None, cuda_options: dict[str, str] | None = None):
    """An onnxruntime session set up for this machine: all graph optimizations, one intra-op thread per core,
    sequential execution (inter-op threads only compete for the same cores on small machines)."""
    import onnxruntime as ort

    if provider not in ORT_PROVIDERS:
        raise BertrtError(f"unknown onnxruntime provider {provider!r} (choose from {', '.join(ORT_PROVIDERS)})")
    if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BertrtError("onnxruntime here has no CUDA execution provider (install onnxruntime-gpu)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # errors only; with CUDA not even those: a failed run comes back as an exception that bertrt reports in one line
    options.log_severity_level = 4 if provider == "cuda" else 3
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(key, value)
    providers = ORT_PROVIDERS[provider]
    if provider == "cuda":
        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: load CUDA/cuDNN from the nvidia-* wheels if there
            ort.preload_dlls()
        if cuda_options:
            providers = [("CUDAExecutionProvider", cuda_options), *providers[1:]]
    where = "model" if isinstance(path, bytes) else path
    try:
        session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise BertrtError(f"{where}: onnxruntime cannot load it ({str(exc).splitlines()[0][:300]})") from None
    if provider == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise BertrtError(f"{where}: onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing?)")
    return session


def open_backend(path: str | Path, provider: str = "cpu", threads: int | None = None,
                 buckets: tuple[int, ...] | None = None, batch_size: int | None = None,
                 cuda_graph: bool = False) -> QABackend:
    """Open a QA model for inference; the backend is chosen by the artifact: ONNX -> onnxruntime, except a graph of
    TensorRT plugin nodes, which runs on the CPU through the numpy plugin references (slow; for verification).
    With `provider="cuda"` (or any `buckets`) onnxruntime runs through IOBinding on sequence-length buckets
    (run/ort_cuda.py), optionally replaying one CUDA graph per bucket."""
    from bertrt.run.runners import ReferenceRunner, uses_trt_plugins
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from bertrt.qa_contract import ort_session_config

    path = Path(path)
    if path.suffix != ".onnx":
        raise BertrtError(f"{path}: unsupported model file (expected .onnx)")
    model, cfg = load_qa_model(path)
    if uses_trt_plugins(model):
        return QABackend(ReferenceRunner(model, name="plugin-reference"), cfg, f"numpy plugin references: {path}")
    from bertrt.surgery.packing import is_packed

    if is_packed(model) and provider != "cuda":
        raise BertrtError(f"{path}: a packing-mode (varseqlen) model runs only on onnxruntime's CUDA provider "
                          f"(use --provider cuda)")
    session_config = ort_session_config(model, source=str(path))
    source: Path | bytes = path
    if session_config.get("session.disable_quant_qdq") == "1":
        from bertrt.run.dequantize import fold_weight_dequantize

        source = fold_weight_dequantize(model).SerializeToString()
    if provider == "cuda" or buckets or cuda_graph:
        return _bound_backend(source, path, cfg, provider, threads, session_config, buckets, batch_size, cuda_graph)
    session = ort_session(source, provider, threads, session_config)
    return QABackend(OnnxrtRunner(session, name=f"onnxruntime-{provider}"), cfg, f"onnxruntime {provider}: {path}")


def _bound_backend(source, path, cfg, provider, threads, session_config, buckets, batch_size, cuda_graph) -> QABackend:
    from bertrt.run.buckets import DEFAULT_BUCKETS
    from bertrt.run.ort_cuda import OrtBoundRunner

    if cuda_graph and provider != "cuda":
        raise BertrtError("CUDA graphs need the CUDA provider (--provider cuda)")
    session = ort_session(source, provider, threads, session_config,
                          cuda_options={"enable_cuda_graph": "1"} if cuda_graph else None)
    runner = OrtBoundRunner(session, device="cuda" if provider == "cuda" else "cpu", cuda_graph=cuda_graph,
                            name=f"onnxruntime-{provider}-iobinding")
    buckets = tuple(buckets or DEFAULT_BUCKETS)
    graph = ", CUDA graphs" if cuda_graph else ""
    return QABackend(runner, cfg, f"onnxruntime {provider} IOBinding, buckets {','.join(map(str, buckets))}{graph}: "
                     f"{path}", buckets=buckets, batch_size=batch_size)
