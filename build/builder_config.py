"""Precision and the Polygraphy builder config: what `--precision` means on each runtime.

- TensorRT 11 and TensorRT-RTX are strongly typed: the precision is the graph's (`bertrt quantize` writes it into
  the graph and its metadata `bertrt.precision`); `--precision` may only repeat it.
- TensorRT 10 builds an FP32 graph with weak typing: `fp16` sets the FP16 flag, `int8` the INT8 and FP16 flags with
  the SQuAD calibrator (Polygraphy's `Calibrator` over calibration/polygraphy_data_loader.py) and a model-hashed
  cache, `best` both. A graph that already carries its precision (FP16 or Q/DQ) is built strongly typed there too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import onnx

from bertrt.calibration.polygraphy_data_loader import load_data
from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES, metadata

META_PRECISION = "bertrt.precision"
WEAK_PRECISIONS = ("fp32", "fp16", "int8", "best")


def graph_precision(model: onnx.ModelProto) -> str:
    """The precision the quantize stage put in the graph ("fp32" for a graph it never touched)."""
    return metadata(model).get(META_PRECISION, "fp32")


@dataclass(frozen=True)
class PrecisionPlan:
    precision: str  # what the engine computes in (recorded in the sidecar)
    strongly_typed: bool
    fp16: bool = False  # weak-typing flags (TensorRT 10 only)
    int8: bool = False

    @property
    def calibrated(self) -> bool:
        return self.int8


def plan_precision(requested: str | None, graph: str, runtime, version: str, path: Path) -> PrecisionPlan:
    if runtime.strongly_typed(version) or graph != "fp32":
        if requested not in (None, graph):
            why = (f"{runtime.label} {version} is strongly typed" if runtime.strongly_typed(version)
                   else "the graph already carries its precision")
            raise BertrtError(f"{path} holds {graph} and {why}: --precision {requested} cannot change it; build "
                              f"the output of `bertrt quantize --precision {requested}`, or omit --precision")
        return PrecisionPlan(graph, strongly_typed=True)
    requested = requested or "fp32"
    if requested not in WEAK_PRECISIONS:
        raise BertrtError(f"--precision {requested} with {runtime.label} {version} takes an FP32 graph and one of "
                          f"{', '.join(WEAK_PRECISIONS)} (FP8 only as Q/DQ from `bertrt quantize --precision fp8`)")
    return PrecisionPlan(requested, strongly_typed=False, fp16=requested in ("fp16", "int8", "best"),
                         int8=requested in ("int8", "best"))


def polygraphy_profiles(profiles):
    from polygraphy.backend.trt import Profile

    result = []
    for p in profiles:
        profile = Profile()
        for name in INPUT_NAMES:
            profile.add(name, min=(p.batch[0], p.seq[0]), opt=(p.batch[1], p.seq[1]), max=(p.batch[2], p.seq[2]))
        result.append(profile)
    return result


# FP8 tensors exist from Ada (8.9) on: TensorRT-RTX refuses to compile an FP8 graph for 8.0/8.6 ("HW-specific
# datatypes: fp8_e4m3"), measured with 1.7.1.116.
_FP8_MIN = (8, 9)


def parse_compute_capabilities(values: list[str] | None, trt, runtime, precision: str) -> tuple[tuple[int, int], ...]:
    """`--compute-capability 8.6 8.9` (TensorRT-RTX): checked against the runtime's list. None: every capability
    the runtime supports from Ampere on (Turing, 7.5, is opt-in: it lacks FP32 GEMMs), from Ada on for FP8 —
    TensorRT-RTX's default targets, spelled out so the sidecar records exactly where the engine runs."""
    available = sorted((int(n[2:-1]), int(n[-1])) for n in dir(trt.ComputeCapability)
                       if n.startswith("SM") and n[2:].isdigit())
    floor = _FP8_MIN if precision == "fp8" else (8, 0)
    if values is None:
        return tuple(cc for cc in available if cc >= floor)
    chosen = []
    for value in values:
        try:
            major, minor = (int(x) for x in value.split("."))
        except ValueError:
            raise BertrtError(f"--compute-capability {value!r} is not MAJOR.MINOR (e.g. 8.6)") from None
        if (major, minor) not in available:
            raise BertrtError(f"--compute-capability {value}: {runtime.label} targets only "
                              f"{', '.join(f'{a}.{b}' for a, b in available)}")
        if precision == "fp8" and (major, minor) < _FP8_MIN:
            raise BertrtError(f"--compute-capability {value}: an FP8 engine needs compute capability "
                              f"{_FP8_MIN[0]}.{_FP8_MIN[1]} or newer")
        chosen.append((major, minor))
    return tuple(chosen)


class TimingCacheBuffer(io.BytesIO):
    """A timing cache in memory, handed to Polygraphy as a file object (which it requires to have a `mode`)."""

    mode = "rb+"


def create_config(runtime, trt, plan: PrecisionPlan, profiles, timing_cache: bytes | None,
                  compute_capabilities: tuple[tuple[int, int], ...], calibrator=None, progress_monitor=None):
    """Polygraphy's lazy builder-config loader: CreateConfigRTX for TensorRT-RTX, CreateConfig otherwise. The
    timing cache to load is handed over as bytes (a file object to Polygraphy, so it leaves no `.lock` file beside
    the user's cache); the build publishes the updated cache with the engine."""
    common = {"profiles": polygraphy_profiles(profiles),
              "load_timing_cache": TimingCacheBuffer(timing_cache) if timing_cache else None,
              "progress_monitor": progress_monitor}
    if runtime.rtx:
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        return CreateConfigRTX(compute_capabilities=list(compute_capabilities), **common)
    from polygraphy.backend.trt import CreateConfig

    return CreateConfig(fp16=plan.fp16, int8=plan.int8, calibrator=calibrator, **common)


def cancelling_monitor(trt, stop):
    """A TensorRT IProgressMonitor that cancels the build (`step_complete` returning False) once `stop.requested`
    (a stop signal arrived: bertrt.interrupts.deferred)."""

    class CancelOnSignal(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            pass

        def step_complete(self, phase_name, step):
            return not stop.requested

        def phase_finish(self, phase_name):
            pass

    return CancelOnSignal()


def calibrator(trt, cache: Path, calib_json, calib_num: int, batch_size: int, seq_len: int, vocab):
    """Polygraphy's Calibrator over the SQuAD-train feature batches (the data loader `polygraphy convert
    --data-loader-script calibration/polygraphy_data_loader.py` uses); it calibrates on the last profile."""
    from polygraphy.backend.trt import Calibrator

    data = load_data(calib_json, calib_num, batch_size, seq_len, vocab)
    return Calibrator(data, cache=str(cache), BaseClass=trt.IInt8EntropyCalibrator2)
