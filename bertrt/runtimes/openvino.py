"""OpenVINO on the CPU (the `openvino` runtime): the fastest CPU path, the CPU default where it is installed.

OpenVINO reads bertrt's ONNX artifacts directly: the unfused export, the `native` target, and their Q/DQ INT8/FP8
forms (its low-precision transformations run the Q/DQ GEMMs in INT8). The `ort` and `plugins` targets hold ops it
cannot parse; their targets refuse it (`Target.runs_on`).

Inference precision (`--precision`): `f32`, `bf16`, or `auto` (the default): bf16 where the CPU device reports BF16
among its OPTIMIZATION_CAPABILITIES (AMX or AVX512-BF16), else f32. bf16 here is OpenVINO's inference precision hint:
weights and activations of the heavy ops in bf16, accumulation in f32, inputs and outputs f32 (docs/cpu-runtimes.md
has the accuracy each precision keeps).

Shapes: one model compiled with dynamic batch and sequence axes, each batch padded only to its longest feature
rounded up to a multiple of SEQ_MULTIPLE (OpenVINO compiles kernels per input shape; fewer distinct lengths reuse
them: measured faster than exact lengths and than one compiled model per bucket shape, see docs/cpu-runtimes.md).
With --buckets, batches are padded to buckets and one static-shape model per (batch, bucket) is compiled and warmed
up on entry.

Cores: the dynamic model is compiled STREAMS times, each compilation one stream with its share of the threads
(separate compilations: two requests of one compiled model at once gave wrong logits now and then); every batch is
split by rows across them and the parts run at once (rather than every op of one request split across all threads, which
synchronises the cores after each op: measured slower for this model size on 2 cores, docs/cpu-runtimes.md).
"""

from __future__ import annotations

import os

import numpy as np

from bertrt.errors import BertrtError
from bertrt.extras import require
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, QuantRecipe, RunOptions
from bertrt.runtimes.registry import Runtime

INSTALL = "pip install 'bertrt[openvino]'"
PRECISIONS = ("auto", "f32", "bf16")
DEVICE = "CPU"
SEQ_MULTIPLE = 16  # dynamic shapes: sequence lengths padded up to a multiple of this (masked positions, sliced off)
STREAMS = 2  # dynamic shapes: streams a batch is split across (each with threads // STREAMS threads)


def cores() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ov():
    """The openvino module (optional: imported when a model is opened on this runtime)."""
    return require("openvino", "openvino")


def resolve_precision(precision: str | None, core=None) -> str:
    """`auto` (or None) -> bf16 where OpenVINO's CPU device has BF16 among its optimization capabilities (AMX or
    AVX512-BF16), else f32. bf16 asked of a CPU without it is refused (OpenVINO would quietly run f32)."""
    if precision == "f32":
        return precision
    core = core or _ov().Core()
    has_bf16 = "BF16" in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
    if precision == "bf16" and not has_bf16:
        raise BertrtError("--precision bf16: this CPU has no bf16 units (AMX or AVX512-BF16), OpenVINO would run "
                          "f32 (use --precision f32 or auto)")
    return "bf16" if has_bf16 else "f32"


def _has_fp8(model) -> bool:
    """The model holds FP8 tensors (an FP8 Q/DQ artifact)."""
    fp8 = {_ov().Type.f8e4m3, _ov().Type.f8e5m2}
    return any(out.get_element_type() in fp8 for op in model.get_ops() for out in op.outputs())


class OpenVinoRunner(QARunner):
    """One OpenVINO CPU compiled model (dynamic shapes), or one per input shape (`static`: buckets)."""

    def __init__(self, path, precision: str | None = None, threads: int | None = None,
                 extra_outputs: tuple[str, ...] = (), static: bool = False, name: str | None = None):
        super().__init__(name=name, prefix="openvino-runner")
        self.path = str(path)
        self.requested_precision = precision
        self.threads = threads
        self.extra_outputs = tuple(extra_outputs)
        self.static = static
        self.precision: str | None = None  # resolved on activation

    def activate_impl(self):
        ov = _ov()
        self.core = ov.Core()
        self.precision = resolve_precision(self.requested_precision, self.core)
        try:
            self.model = self.core.read_model(self.path)
        except RuntimeError as exc:  # the ONNX frontend's errors are long; their first line says what
            raise BertrtError(f"{self.path}: OpenVINO cannot read it ({str(exc).strip().splitlines()[0][:300]})"
                              ) from None
        known = {name for op in self.model.get_ops() for out in op.outputs() for name in out.get_names()}
        extra = [n for n in self.extra_outputs if n in known and n not in OUTPUT_NAMES]
        if extra:
            self.model.add_outputs(extra)
        threads = self.threads or cores()
        # Streams and length padding for the dynamic model; per-layer outputs (compare) keep the exact shapes.
        # FP8 Q/DQ graphs run as one stream: two requests of one compiled FP8 model at once returned wrong logits
        # (worst error 12 to 24,000 against 0.97 on one stream; OpenVINO 2026.4.1 CPU, 2026-12-03). So did f32,
        # now and then (see _compile_streams), hence one compilation per stream; FP8 stays on one, to be safe.
        one = self.static or self.extra_outputs or _has_fp8(self.model)
        self.streams = 1 if one else max(1, min(STREAMS, threads))
        self.multiple = 1 if self.static or self.extra_outputs else SEQ_MULTIPLE
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads,
                       "PERFORMANCE_HINT": "LATENCY"}
        self.requests: dict = {}
        if not self.static:
            self.requests[None] = self._compile_streams(threads) if self.streams > 1 else self._compile(self.model)
        # A batch of one row cannot be split over the streams, and one stream has only its share of the threads:
        # such batches (infer, a lone served request) run on a second compilation, one stream on every thread,
        # made on the first of them. (1 x 384, 2 threads, f32: 55 ms on one of two streams, onnxruntime 31 ms.)
        self.single: list | None = None

    def _compile(self, model, config: dict | None = None) -> tuple:
        """([its infer request], output names) of `model` compiled for the CPU."""
        compiled = self.core.compile_model(model, DEVICE, config or self.config)
        # each output by the name the QA contract (or compare --per-layer) asks for (a tensor may have several)
        wanted = set(OUTPUT_NAMES) | set(self.extra_outputs)
        names = [next((n for n in out.get_names() if n in wanted), out.get_any_name()) for out in compiled.outputs]
        return [compiled.create_infer_request()], names

    def _request(self, shape: tuple[int, int]):
        key = shape if self.static else None
        if key not in self.requests:
            model = self.model.clone()
            model.reshape({name: list(shape) for name in INPUT_NAMES})
            self.requests[key] = self._compile(model)
        return self.requests[key]

    def _compile_streams(self, threads: int) -> tuple:
        """One compiled model per stream, each one stream on its share of the threads, run at once on row slices.
        Not one compiled model with NUM_STREAMS requests: two requests of one compiled model running at once
        returned wrong logits now and then (f32: the first 300 dev questions scored EM 77.00, 79.33 and 76.67 in three
        of fourteen runs instead of 80.33; FP8: every time; OpenVINO 2026.4.1 CPU, 2026-12-03)."""
        # Without pinning: each compilation would pin its thread to the same first core.
        config = {**self.config, "INFERENCE_NUM_THREADS": max(1, threads // self.streams), "ENABLE_CPU_PINNING": False}
        compiled = [self._compile(self.model, config) for _ in range(self.streams)]
        return [request for requests, _ in compiled for request in requests], compiled[0][1]

    def _single_row(self) -> tuple:
        if self.single is None:
            self.single = self._compile(self.model)
        return self.single

    def infer_impl(self, feed_dict):
        rows, seq = feed_dict["input_ids"].shape
        requests, names = self._single_row() if rows == 1 and self.streams > 1 else self._request((rows, seq))
        feed = {n: feed_dict[n] for n in INPUT_NAMES}
        padded = -(-seq // self.multiple) * self.multiple
        if padded != seq:  # zero ids, segment and mask: masked positions, whose logits are sliced off below
            feed = {n: np.pad(a, ((0, 0), (0, padded - seq))) for n, a in feed.items()}
        result = self.timed(self._run, requests, feed, rows)
        return {n: a[:, :seq] if padded != seq else a for n, a in zip(names, result)}

    @staticmethod
    def _run(requests, feed, rows) -> list[np.ndarray]:
        """The outputs of `feed` run as row slices on the requests at once (each on its own stream)."""
        if len(requests) == 1:  # (a one-row batch comes with the single-row compilation's one request)
            # share_outputs=False (the default): the arrays are copies, not views that the next run overwrites
            return list(requests[0].infer(feed, True).to_tuple())
        step = -(-rows // len(requests))
        # Inputs shared (no copy), as in the one-request path: a request whose input tensor once wrapped a caller's
        # array cannot copy a larger one into it. The slices stay referenced here until the runs end.
        parts = [{n: np.ascontiguousarray(a[i:i + step]) for n, a in feed.items()} for i in range(0, rows, step)]
        used = requests[:len(parts)]
        for request, part in zip(used, parts):
            request.start_async(part, share_inputs=True)
        for request in used:
            request.wait()
        return [np.concatenate([np.array(r.get_output_tensor(k).data) for r in used])
                for k in range(len(used[0].model_outputs))]

    def release_shapes(self) -> None:
        if self.static:
            self.requests.clear()

    def deactivate_impl(self):
        del self.requests, self.single, self.model, self.core


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    static = bool(options.buckets)
    precision = resolve_precision(options.precision)  # named in the description (auto -> what this CPU runs)
    runner = OpenVinoRunner(artifact.path, precision, options.threads, options.extra_outputs, static,
                            name=f"openvino-{precision}:{artifact.path.name}")
    shapes = f", buckets {','.join(map(str, options.buckets))}" if static else ""
    return QABackend(runner, artifact.config, f"OpenVINO CPU {precision}{shapes}: {artifact.path}",
                     buckets=options.buckets if static else None, batch_size=options.batch_size if static else None,
                     batch_rows=options.batch_rows if static else None)


def _check(artifact: Artifact, options: RunOptions) -> None:
    if options.cuda_graph:
        raise BertrtError(f"{artifact.path}: the openvino runtime runs on the CPU; CUDA graphs need "
                          f"--runtime onnxruntime-bound --provider cuda")


# INT8 for OpenVINO's CPU plugin: every weight GEMM in INT8 (its low-precision transformations run Q/DQ GEMMs on
# VNNI), the attention batched GEMMs and the rest in FP32 graph types (run at the inference precision, bf16 where the
# CPU has it), SmoothQuant alpha 0.95 (NNCF's transformer default) so that the LayerNorm/GELU outlier channels do not
# spoil the per-tensor activation scales. Measured on the first 1000 dev questions (docs/cpu-runtimes.md).
INT8 = QuantRecipe(exclude=("attention_bmm",), float_precision="fp32", smooth_quant=0.95,
                   why="first 1000 dev questions, 2-core EPYC (AVX512-VNNI/BF16): F1 82.29 as FP32, 4.4-4.9 s end to "
                       "end vs onnxruntime FP32 14.0 s")

RUNTIME = Runtime(
    name="openvino", artifact="onnx", open=_open, check=_check,
    description="OpenVINO CPU: bf16 where the CPU has it (AMX, AVX512-BF16), dynamic shapes; the CPU default",
    requires=("openvino",), install=INSTALL, providers=("cpu",),
    takes=frozenset({"extra_outputs", "precision"}), precisions=PRECISIONS,
    default_when=lambda options: not options.buckets and not options.cuda_graph, int8=INT8)
