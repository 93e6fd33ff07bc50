"""The `onnxruntime-bound` runtime: onnxruntime with device-resident I/O, a runner over an InferenceSession that
keeps one set of preallocated input/output buffers per input shape (IOBinding), copies each input in once and each
output out once, and can replay one onnxruntime CUDA graph per shape.

Polygraphy's OnnxrtRunner feeds numpy arrays through `session.run`, which allocates and copies every call; with a
few fixed shapes (see buckets.py) the buffers can instead live on the device for the whole run, which is also what
onnxruntime's CUDA graphs require (fixed input/output addresses). Written against onnxruntime's public Python API
(OrtValue, IOBinding, RunOptions `gpu_graph_id`, CUDA provider option `enable_cuda_graph`); on the CPU provider the
same runner works with host buffers (so its logic is tested without a GPU).

The default for ONNX models on the CUDA provider, or when sequence-length buckets or CUDA graphs are asked for.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions, zeros_feed
from bertrt.runtimes.buckets import DEFAULT_BUCKETS
from bertrt.runtimes.onnxruntime import artifact_session, check_device, check_packed
from bertrt.runtimes.registry import Runtime

_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class _ShapeBinding:
    """The device buffers and IOBinding of one (batch, seq) shape, and its CUDA graph id."""

    def __init__(self, session, shape: tuple[int, int], device: str, output_types: dict, graph_id: int | None,
                 device_id: int = 0):
        self.binding = session.io_binding()
        self.inputs = {n: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.int32, device, device_id)
                       for n in INPUT_NAMES}
        self.outputs = {n: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), output_types[n], device, device_id)
                        for n in OUTPUT_NAMES}
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)
        self.run_options = ort.RunOptions()
        if graph_id is not None:  # onnxruntime keeps one captured graph per id; the first runs of an id capture it
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))


class OrtBoundRunner(QARunner):
    """Runs the QA contract (int32 [B, S] inputs, float [B, S] logits) through IOBinding.

    `session` is an onnxruntime InferenceSession (made with `enable_cuda_graph` when `cuda_graph` is set);
    `device` is the OrtValue device of the bound buffers: "cuda" or "cpu"; `device_id` the GPU they live on (the
    session's CUDA provider `device_id`: buffers on another GPU than the session's would be copied every run)."""

    def __init__(self, session, device: str = "cuda", cuda_graph: bool = False, name: str | None = None,
                 device_id: int = 0):
        super().__init__(name=name, prefix="ort-bound-runner")
        if cuda_graph and device != "cuda":
            raise BertrtError("CUDA graphs need the CUDA provider (--provider cuda)")
        self.session = session
        self.device = device
        self.device_id = device_id if device == "cuda" else 0
        self.cuda_graph = cuda_graph
        self.output_types = {o.name: _ORT_FLOAT[o.type] for o in session.get_outputs()}
        self.bindings: dict[tuple[int, int], _ShapeBinding] = {}
        self.graphs = 0  # graph ids are never reused: onnxruntime keeps each captured graph (with its addresses)

    # run_bound runs on the bound buffers with no copies (device buffers on the CUDA provider, host ones on the CPU)
    device_resident = True

    def activate_impl(self):
        pass  # the session is made by `open` (so that load errors are reported there)

    def _binding(self, shape: tuple[int, int]) -> _ShapeBinding:
        if shape not in self.bindings:
            graph_id = None
            if self.cuda_graph:
                graph_id, self.graphs = self.graphs, self.graphs + 1
            try:
                self.bindings[shape] = _ShapeBinding(self.session, shape, self.device, self.output_types, graph_id,
                                                     self.device_id)
            except Exception as exc:
                self._raise_if_out_of_memory(exc, shape)
                raise
        return self.bindings[shape]

    def _raise_if_out_of_memory(self, exc: Exception, shape: tuple[int, int]) -> None:
        # onnxruntime raises its own exception types; out-of-memory (or a batch past the kernels' 32-bit indexing,
        # seen on the H200 at 400,000 x 384) is what a user fixes with a smaller batch
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if any(word in message.lower() for word in ("alloc", "out of memory", "32-bit indexing")):
            raise BertrtError(f"batch {shape[0]} x sequence {shape[1]} does not fit ({message}); use a smaller "
                              f"--batch-size") from None

    def run_bound(self, shape: tuple[int, int]) -> None:
        """One run on the buffers already bound for `shape` (no copies): what a device-side timer should time."""
        bound = self.bindings[shape]
        try:
            self.session.run_with_iobinding(bound.binding, bound.run_options)
        except Exception as exc:
            self._raise_if_out_of_memory(exc, shape)
            raise BertrtError(f"onnxruntime failed on batch {shape[0]} x sequence {shape[1]}: "
                              f"{str(exc).splitlines()[0][:300]}") from None

    def infer_impl(self, feed_dict):
        shape = tuple(feed_dict["input_ids"].shape)
        bound = self._binding(shape)
        for name in INPUT_NAMES:
            bound.inputs[name].update_inplace(np.ascontiguousarray(feed_dict[name], dtype=np.int32))
        bound.binding.synchronize_inputs()
        start = time.perf_counter()
        self.run_bound(shape)
        # .numpy() copies a device buffer to the host; a host buffer is copied too, since it is reused next call.
        out = {name: np.array(value.numpy(), copy=True) for name, value in bound.outputs.items()}
        self.inference_time = time.perf_counter() - start
        return out

    def warm_up(self, shapes, runs: int = 3) -> None:
        """Plan (and with CUDA graphs capture) every shape once, before any timed run. onnxruntime's CUDA EP runs a
        graph id normally a couple of times before it captures it, hence several runs."""
        for batch, seq in shapes:
            feed = zeros_feed(batch, seq)
            for _ in range(runs):
                self.infer(feed)

    def release_shapes(self) -> None:
        self.bindings.clear()

    def deactivate_impl(self):
        self.bindings.clear()


def _check(artifact: Artifact, options: RunOptions) -> None:
    check_packed(artifact, options)
    check_device(options)
    if options.cuda_graph and options.provider != "cuda":
        raise BertrtError("CUDA graphs need the CUDA provider (--provider cuda)")


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    """IOBinding on sequence-length buckets, optionally replaying one CUDA graph per bucket: the GPU path (and the
    same feeding on the CPU when buckets are given)."""
    cuda_options = {"enable_cuda_graph": "1"} if options.cuda_graph else {}
    if options.cuda_stream is not None:  # run on the caller's stream (perf's CUDA events are recorded on it)
        cuda_options["user_compute_stream"] = str(options.cuda_stream)
    session = artifact_session(artifact, options, cuda_options=cuda_options or None)
    runner = OrtBoundRunner(session, device="cuda" if options.provider == "cuda" else "cpu",
                            cuda_graph=options.cuda_graph, device_id=options.device_id or 0,
                            name=f"onnxruntime-{options.provider}-iobinding:{artifact.path.name}")
    buckets = tuple(options.buckets or DEFAULT_BUCKETS)
    graph = ", CUDA graphs" if options.cuda_graph else ""
    if options.device_id is not None:
        graph += f", GPU {options.device_id}"
    return QABackend(runner, artifact.config, f"onnxruntime {options.provider} IOBinding, buckets "
                     f"{','.join(map(str, buckets))}{graph}: {artifact.path}", buckets=buckets,
                     batch_size=options.batch_size, batch_rows=options.batch_rows)


RUNTIME = Runtime(
    name="onnxruntime-bound", artifact="onnx", open=_open, check=_check,
    description="onnxruntime with IOBinding: device-resident buffers per shape, batches padded to sequence-length "
                "buckets, optional CUDA graphs",
    requires=("onnxruntime",), install="pip install onnxruntime-gpu (or onnxruntime)", providers=("cpu", "cuda"),
    takes=frozenset({"cuda_stream", "device_id"}),
    default_when=lambda options: options.provider == "cuda" or bool(options.buckets) or options.cuda_graph)
