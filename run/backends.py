"""The one place that chooses how a QA model runs (`open_backend`), used by infer, squad, compare and perf.

Every backend is a Polygraphy runner (an engine's from lazy loaders: it is deserialized only when the runner is
activated, after every check that needs no GPU), wrapped in a `QABackend` with the checks the bertrt contract needs
(batch/sequence limits, engine profiles, output names). The artifact decides the runner:

| artifact | runner |
| --- | --- |
| TF checkpoint dir / `.safetensors` | `TfCheckpointRunner` (the export's reference) |
| `.engine` / `.plan` from `bertrt build` | Polygraphy `TrtRunner` over `EngineFromBytes`, after the sidecar checks |
| `.onnx` with TensorRT plugin nodes | `ReferenceRunner` (numpy plugin references; slow, for verification) |
| other `.onnx` | `ONNX_RUNNERS[provider]` (onnxruntime; the artifact's session config always applied) |

ONNX models on the `cuda` provider (or given sequence-length buckets) run on `OrtBoundRunner` (run/ort_cuda.py):
IOBinding with device-resident buffers per shape, batches padded to buckets and warmed up on entry, optionally one
onnxruntime CUDA graph per bucket. To add a backend for ONNX models, register a factory
`(OnnxArtifact, RunOptions) -> QABackend` in `ONNX_RUNNERS` under its provider name (and add the options it needs
to `RunOptions` and `open_backend`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, load_qa_model, ort_session_config

ORT_PROVIDERS = {"cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass(frozen=True)
class RunOptions:
    provider: str = "cpu"  # onnxruntime execution provider (ONNX models)
    threads: int | None = None  # onnxruntime intra-op threads
    extra_outputs: tuple[str, ...] = ()  # intermediate tensors to return too (compare --per-layer)
    buckets: tuple[int, ...] | None = None  # sequence-length buckets (run/buckets.py); None: pad to the longest
    batch_size: int | None = None  # rows every bucketed batch is padded to (the shapes warmed up on entry)
    cuda_graph: bool = False  # one onnxruntime CUDA graph per bucket


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    model: onnx.ModelProto  # with the extra outputs added
    config: BertConfig
    session_config: dict[str, str]  # validated onnxruntime session entries from the artifact's metadata


@dataclass
class QABackend:
    runner: object  # polygraphy.backend.base.BaseRunner
    config: BertConfig
    description: str
    profiles: tuple = ()  # engine optimization profiles (bertrt.profiles.QAProfile); () takes any shape
    # Sequence-length buckets (run/buckets.py): batches are padded to a bucket and to `batch_size` rows, and those
    # shapes are warmed up on entry. None: each batch is padded only to its longest feature.
    buckets: tuple[int, ...] | None = None
    batch_size: int | None = None

    def __post_init__(self):
        self._profile = 0

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

    @property
    def seq_len(self) -> int | None:
        """The one sequence length the backend takes, or None when it takes a range."""
        fixed = {p.fixed_seq for p in self.profiles}
        return fixed.pop() if len(fixed) == 1 and None not in fixed else None

    def padded_length(self, longest: int) -> int:
        """The length to pad a batch whose longest feature has `longest` tokens to."""
        if self.seq_len is not None:
            return self.seq_len
        floors = [p.seq[0] for p in self.profiles if p.seq[2] >= longest]
        return max(longest, min(floors)) if floors else longest

    def check_shape(self, batch: int, seq: int) -> int | None:
        """Raise a one-line error for a shape the model cannot take; return the engine profile that takes it."""
        if seq > self.config.max_position_embeddings:
            raise BertrtError(f"sequence length {seq} exceeds the model's {self.config.max_position_embeddings} "
                              f"positions")
        if not self.profiles:
            return None
        from bertrt.profiles import covering_profile

        return covering_profile(self.profiles, batch, seq)

    def infer(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self.infer_all(feed)
        return (np.asarray(out["start_logits"], dtype=np.float32), np.asarray(out["end_logits"], dtype=np.float32))

    def infer_all(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        profile = self.check_shape(*feed["input_ids"].shape)
        if profile is not None and profile != self._profile:
            self.runner.set_profile(profile)  # TrtRunner: switch the execution context's optimization profile
            self._profile = profile
        return self.runner.infer({name: np.ascontiguousarray(feed[name], dtype=np.int32) for name in INPUT_NAMES})


def activation_bytes(cfg: BertConfig, batch: int, seq: int) -> int:
    """A lower bound of one encoder layer's float32 activations: attention scores and the FFN's wide tensor."""
    return 4 * batch * seq * (cfg.num_attention_heads * seq + cfg.intermediate_size)


def check_fits(cfg: BertConfig, batch: int, seq: int, batch_flag: str = "--batch-size",
               seq_flag: str = "--max-seq-length") -> None:
    """Refuse up front a shape the model cannot take or whose activations exceed this machine's memory (rather
    than discover it as an allocation failure or the OOM killer, minutes in)."""
    if seq > cfg.max_position_embeddings:
        raise BertrtError(f"{seq_flag} {seq} exceeds the model's {cfg.max_position_embeddings} positions")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = activation_bytes(cfg, batch, seq)
    if need > memory:
        raise BertrtError(f"{batch_flag} {batch} x {seq_flag} {seq} needs at least {need / 2**30:.0f} GiB of "
                          f"activations per layer; this machine has {memory / 2**30:.0f} GiB")


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


def _session(artifact: OnnxArtifact, options: RunOptions, cuda_options: dict[str, str] | None = None):
    """The onnxruntime session of an artifact, with its session config applied."""
    model = artifact.model
    fold = artifact.session_config.get("session.disable_quant_qdq") == "1"
    if fold:
        from bertrt.run.dequantize import fold_weight_dequantize

        model = fold_weight_dequantize(model)
    # The file itself when the graph is unchanged (no 90 MB copy), else the changed graph's bytes.
    source = model.SerializeToString() if fold or options.extra_outputs else artifact.path
    return ort_session(source, options.provider, options.threads, artifact.session_config, cuda_options)


def _ort_backend(artifact: OnnxArtifact, options: RunOptions) -> QABackend:
    """onnxruntime through Polygraphy's OnnxrtRunner (the bound runner when buckets are asked for)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    if options.buckets or options.cuda_graph:
        return _bound_backend(artifact, options)
    return QABackend(OnnxrtRunner(_session(artifact, options), name=f"onnxruntime-{options.provider}:{artifact.path.name}"),
                     artifact.config, f"onnxruntime {options.provider}: {artifact.path}")


def _bound_backend(artifact: OnnxArtifact, options: RunOptions) -> QABackend:
    """onnxruntime through IOBinding on sequence-length buckets (run/ort_cuda.py), optionally replaying one CUDA
    graph per bucket: the GPU path (and the same feeding on the CPU when buckets are given)."""
    from bertrt.run.buckets import DEFAULT_BUCKETS
    from bertrt.run.ort_cuda import OrtBoundRunner

    if options.cuda_graph and options.provider != "cuda":
        raise BertrtError("CUDA graphs need the CUDA provider (--provider cuda)")
    if options.extra_outputs:
        raise BertrtError("per-layer outputs are compared on the plain onnxruntime runner (leave out --buckets and "
                          "--cuda-graph)")
    session = _session(artifact, options, cuda_options={"enable_cuda_graph": "1"} if options.cuda_graph else None)
    runner = OrtBoundRunner(session, device="cuda" if options.provider == "cuda" else "cpu",
                            cuda_graph=options.cuda_graph, name=f"onnxruntime-{options.provider}-iobinding:{artifact.path.name}")
    buckets = tuple(options.buckets or DEFAULT_BUCKETS)
    graph = ", CUDA graphs" if options.cuda_graph else ""
    return QABackend(runner, artifact.config, f"onnxruntime {options.provider} IOBinding, buckets "
                     f"{','.join(map(str, buckets))}{graph}: {artifact.path}", buckets=buckets,
                     batch_size=options.batch_size)


# provider -> factory of the backend for ONNX models (see the module docstring)
ONNX_RUNNERS: dict[str, Callable[[OnnxArtifact, RunOptions], QABackend]] = {"cpu": _ort_backend,
                                                                             "cuda": _bound_backend}


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


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".safetensors"


def _open_checkpoint(path: Path, options: RunOptions) -> QABackend:
    from bertrt.export.onnx_export import resolve_source
    from bertrt.run.runners import TfCheckpointRunner

    config = BertConfig.from_json(resolve_source(path).config)
    return QABackend(TfCheckpointRunner(path, name=f"tf:{path.name}"), config, f"TF network: {path}")


def _open_engine(path: Path, options: RunOptions) -> QABackend:
    from bertrt.build.engine_runner import open_engine

    if options.extra_outputs:
        raise BertrtError(f"{path}: an engine returns only the logits (per-layer comparison needs ONNX models)")
    runner, config, profiles = open_engine(path)
    return QABackend(runner, config, f"TensorRT engine: {path}", profiles)


def _open_onnx(path: Path, options: RunOptions) -> QABackend:
    from bertrt.run.runners import ReferenceRunner
    from bertrt.targets import target_of

    model, cfg = load_qa_model(path)
    session_config = ort_session_config(model, source=str(path))  # checked for every ONNX model, used by ort ones
    target = target_of(model)
    target.check_provider(options.provider, str(path))  # (packed: CUDA only)
    model = with_outputs(model, options.extra_outputs)
    if not target.runs_on("onnxruntime"):
        return QABackend(ReferenceRunner(model, [o.name for o in model.graph.output],
                                         name=f"plugin-reference:{path.name}"),
                         cfg, f"numpy plugin references: {path}")
    if options.provider not in ONNX_RUNNERS:
        raise BertrtError(f"unknown provider {options.provider!r} (choose from {', '.join(ONNX_RUNNERS)})")
    return ONNX_RUNNERS[options.provider](OnnxArtifact(path, model, cfg, session_config), options)


def open_backend(model: str | Path, provider: str = "cpu", threads: int | None = None,
                 extra_outputs: tuple[str, ...] | list[str] = (), buckets: tuple[int, ...] | None = None,
                 batch_size: int | None = None, cuda_graph: bool = False) -> QABackend:
    """Open any QA artifact for inference (see the module docstring for which runner each gets). Checks that need
    no device happen here; an engine is deserialized on activation (`with backend:`)."""
    path = Path(model)
    options = RunOptions(provider, threads, tuple(extra_outputs), tuple(buckets) if buckets else None, batch_size,
                         cuda_graph)
    if is_checkpoint(path):
        return _open_checkpoint(path, options)
    if path.suffix in ENGINE_SUFFIXES:
        return _open_engine(path, options)
    if path.suffix == ".onnx":
        return _open_onnx(path, options)
    raise BertrtError(f"{path}: unsupported model file (expected .onnx, {' or '.join(ENGINE_SUFFIXES)}, or a "
                      f"checkpoint)")
