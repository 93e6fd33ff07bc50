"""onnxruntime, CPU or CUDA provider: one `session.run` per batch (what Polygraphy's OnnxrtRunner does). The default
for ONNX models on the CPU without buckets; the one that returns per-layer outputs (`compare --per-layer`).

`ort_session` is the one place an onnxruntime session is made (this runtime, the bound one, and the tests): the
artifact's session config applied, the execution providers chosen from `EXECUTION_PROVIDERS`.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort

from bertrt.errors import BertrtError
from bertrt.qa_contract import OUTPUT_NAMES
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions
from bertrt.runtimes.dequantize import fold_weight_dequantize
from bertrt.runtimes.registry import Runtime

EXECUTION_PROVIDERS = {"cpu": ["CPUExecutionProvider"],
                       "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def check_cuda_provider() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BertrtError("onnxruntime here has no CUDA execution provider (install onnxruntime-gpu)")


def ort_session(path: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                session_config: dict[str, str] | None = None, cuda_options: dict[str, str] | None = None):
    """An onnxruntime session set up for this machine: all graph optimizations, one intra-op thread per core,
    sequential execution (inter-op threads only compete for the same cores on small machines)."""
    if provider not in EXECUTION_PROVIDERS:
        raise BertrtError(f"unknown onnxruntime provider {provider!r} (choose from {', '.join(EXECUTION_PROVIDERS)})")
    if provider == "cuda":
        check_cuda_provider()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # errors only; with CUDA not even those: a failed run comes back as an exception that bertrt reports in one line
    options.log_severity_level = 4 if provider == "cuda" else 3
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(key, value)
    providers = EXECUTION_PROVIDERS[provider]
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


def with_outputs(model: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of `model` that also outputs `names` (those it produces)."""
    if not names:
        return model
    produced = {out for node in model.graph.node for out in node.output}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        if name in produced and name not in OUTPUT_NAMES:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


def device_cuda_options(options: RunOptions, cuda_options: dict[str, str] | None = None) -> dict[str, str] | None:
    """`cuda_options` with the CUDA provider's `device_id` when the options name a GPU."""
    if options.device_id is None:
        return cuda_options
    return {**(cuda_options or {}), "device_id": str(options.device_id)}


def artifact_session(artifact: Artifact, options: RunOptions, cuda_options: dict[str, str] | None = None):
    """The onnxruntime session of an artifact, with its session config applied (and the extra outputs asked for),
    on the options' GPU (`device_id`) with the CUDA provider."""
    model = with_outputs(artifact.model, options.extra_outputs)
    fold = artifact.session_config.get("session.disable_quant_qdq") == "1"
    if fold:
        model = fold_weight_dequantize(model)
    # The file itself when the graph is unchanged (no 90 MB copy), else the changed graph's bytes.
    source = model.SerializeToString() if fold or options.extra_outputs else artifact.path
    return ort_session(source, options.provider, options.threads, artifact.session_config,
                       device_cuda_options(options, cuda_options))


def check_device(options: RunOptions) -> None:
    if options.device_id is not None and options.provider != "cuda":
        raise BertrtError(f"a GPU device id ({options.device_id}) needs --provider cuda")


def check_packed(artifact: Artifact, options: RunOptions) -> None:
    """The providers the model's target runs on (the packed target: CUDA only)."""
    artifact.target.check_provider(options.provider, str(artifact.path))


class OnnxruntimeRunner(QARunner):
    """`session.run` on the feed; the session is made by `open` (so that load errors are reported there)."""

    def __init__(self, session, name: str):
        super().__init__(name=name, prefix="onnxruntime-runner")
        self.session = session

    def activate_impl(self):
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed_dict):
        values = self.timed(self.session.run, None, dict(feed_dict))
        return dict(zip(self.output_names, values))

    def deactivate_impl(self):
        del self.output_names


def _check(artifact: Artifact, options: RunOptions) -> None:
    check_packed(artifact, options)
    check_device(options)
    if options.cuda_graph:
        raise BertrtError("CUDA graphs need the IOBinding runner (--runtime onnxruntime-bound, --provider cuda)")


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    runner = OnnxruntimeRunner(artifact_session(artifact, options), name=f"onnxruntime-{options.provider}:"
                                                                         f"{artifact.path.name}")
    return QABackend(runner, artifact.config, f"onnxruntime {options.provider}: {artifact.path}")


RUNTIME = Runtime(
    name="onnxruntime", artifact="onnx", open=_open, check=_check,
    description="onnxruntime session.run per batch, CPU or CUDA provider; returns per-layer outputs",
    requires=("onnxruntime",), install="pip install onnxruntime (or onnxruntime-gpu)", providers=("cpu", "cuda"),
    takes=frozenset({"extra_outputs", "device_id"}), default_when=lambda options: True, reference=True)
