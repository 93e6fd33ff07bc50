"""OpenVINO on the CPU (the `openvino` runtime): the fastest CPU path, the CPU default where it is installed.

OpenVINO reads bertrt's ONNX artifacts directly: the unfused export, the `native` target, and their Q/DQ INT8/FP8
forms (its low-precision transformations run the Q/DQ GEMMs in INT8). The `ort` and `plugins` targets hold ops it
cannot parse; their targets refuse it (`Target.runs_on`).

Inference precision (`--precision`): `f32`, `bf16`, or `auto` (the default): bf16 where the CPU device reports BF16
among its OPTIMIZATION_CAPABILITIES (AMX or AVX512-BF16), else f32. bf16 here is OpenVINO's inference precision hint:
weights and activations of the heavy ops in bf16, accumulation in f32, inputs and outputs f32 (docs/cpu-runtimes.md
has the accuracy each precision keeps).

Shapes: one model compiled with dynamic batch and sequence axes, each batch padded only to its longest feature
(measured faster than one compiled model per bucket shape on SQuAD's length distribution, see
docs/cpu-runtimes.md). With --buckets, batches are padded to buckets and one static-shape model per (batch, bucket)
is compiled and warmed up on entry.
"""

from __future__ import annotations

from bertrt.errors import BertrtError
from bertrt.extras import require
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions
from bertrt.runtimes.registry import Runtime

INSTALL = "pip install 'bertrt[openvino]'"
PRECISIONS = ("auto", "f32", "bf16")
DEVICE = "CPU"


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
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            self.config["INFERENCE_NUM_THREADS"] = self.threads
        self.requests: dict = {}
        if not self.static:
            self.requests[None] = self._compile(self.model)

    def _compile(self, model) -> tuple:
        """(infer request, output names) of `model` compiled for the CPU."""
        compiled = self.core.compile_model(model, DEVICE, self.config)
        # each output by the name the QA contract (or compare --per-layer) asks for (a tensor may have several)
        wanted = set(OUTPUT_NAMES) | set(self.extra_outputs)
        names = [next((n for n in out.get_names() if n in wanted), out.get_any_name()) for out in compiled.outputs]
        return compiled.create_infer_request(), names

    def _request(self, shape: tuple[int, int]):
        key = shape if self.static else None
        if key not in self.requests:
            model = self.model.clone()
            model.reshape({name: list(shape) for name in INPUT_NAMES})
            self.requests[key] = self._compile(model)
        return self.requests[key]

    def infer_impl(self, feed_dict):
        request, names = self._request(feed_dict["input_ids"].shape)
        # share_outputs=False (the default): the arrays are copies, not views that the next run overwrites
        result = self.timed(request.infer, {n: feed_dict[n] for n in INPUT_NAMES}, True)
        return dict(zip(names, result.to_tuple()))

    def release_shapes(self) -> None:
        if self.static:
            self.requests.clear()

    def deactivate_impl(self):
        del self.requests, self.model, self.core


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


RUNTIME = Runtime(
    name="openvino", artifact="onnx", open=_open, check=_check,
    description="OpenVINO CPU: bf16 where the CPU has it (AMX, AVX512-BF16), dynamic shapes; the CPU default",
    requires=("openvino",), install=INSTALL, providers=("cpu",),
    takes=frozenset({"extra_outputs", "precision"}), precisions=PRECISIONS,
    default_when=lambda options: not options.buckets and not options.cuda_graph)
