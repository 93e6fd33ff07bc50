"""`bertrt build`: ONNX -> TensorRT engine + sidecar, composed from Polygraphy's lazy loaders
(NetworkFromOnnxPath -> CreateConfig / CreateConfigRTX -> EngineBytesFromNetwork), the one place engines are built
(TensorRT 10's INT8 calibration included). Every check that can fail runs before the builder: bad input is one line,
and the engine, its sidecar and the caches are only published together, as one set, after the build succeeded;
an interrupt (Ctrl-C, SIGTERM) during the build cancels it and publishes nothing (docs/engines.md).
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bertrt.build import builder_config, calib_cache, network
from bertrt.calibration import polygraphy_data_loader
from bertrt.runtimes import tensorrt_library as runtimes
from bertrt.engine_sidecar import EngineRecord
from bertrt.profiles import QAProfile, check_profiles

from bertrt import interrupts
from bertrt.artifacts import atomic_outputs, check_outputs, sha256_file, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES, load_qa_model
from bertrt.targets import target_of


@dataclass(frozen=True)
class BuildRequest:
    """What to build (frozen: `build` works on a copy where it fills in defaults, never on its caller's value)."""
    model: Path
    output: Path
    profiles: list[QAProfile]
    runtime: str | None = None  # tensorrt | tensorrt-rtx | None/auto
    precision: str | None = None
    calib_cache: Path | None = None
    timing_cache: Path | None = None
    compute_capabilities: list[str] | None = None
    calib_json: Path | None = None  # TensorRT 10 INT8 calibration data (default: the shipped SQuAD-train subset)
    calib_num: int = 256
    vocab: Path | None = None
    extra: dict = field(default_factory=dict)


def polygraphy_command(request: BuildRequest, runtime, plan, caps) -> str:
    """The `polygraphy convert` command that builds the same engine (for users who want Polygraphy's CLI)."""
    words = ["polygraphy", "convert", str(request.model), "-o", str(request.output)]
    if plan.strongly_typed:
        words.append("--strongly-typed")
    for key, index in (("min", 0), ("opt", 1), ("max", 2)):
        for p in request.profiles:
            words += [f"--trt-{key}-shapes"] + [f"{n}:[{p.batch[index]},{p.seq[index]}]" for n in INPUT_NAMES]
    if plan.fp16:
        words.append("--fp16")
    if plan.int8:
        words += ["--int8", "--data-loader-script", polygraphy_data_loader.__file__, "--calibration-cache",
                  str(request.calib_cache)]
    if request.timing_cache:
        words += ["--load-timing-cache", str(request.timing_cache), "--save-timing-cache", str(request.timing_cache)]
    if runtime.rtx:
        words += ["--compute-capabilities"] + [f"{a}.{b}" for a, b in caps]
    prefix = "POLYGRAPHY_USE_TENSORRT_RTX=1 " if runtime.rtx else ""
    return prefix + shlex.join(words)


def build(request: BuildRequest, log=print) -> EngineRecord:
    model_path, output = Path(request.model), Path(request.output)
    # The one output check of `bertrt build` / `calibrate` / `api.build_engine`: the engine, its sidecar, and the
    # caches it writes (a calibration cache with its sidecar, the timing cache) against everything it reads.
    cache_sidecar = sidecar_path(request.calib_cache) if request.calib_cache is not None else None
    check_outputs([output, sidecar_path(output), request.calib_cache, cache_sidecar, request.timing_cache],
                  [model_path, request.calib_json, request.vocab])
    model, cfg = load_qa_model(model_path, load_weights=False)
    if request.calib_cache is not None and request.calib_cache.is_file():  # a cache given must be this model's
        calib_cache.check_cache(model_path, request.calib_cache)
    target = target_of(model)
    runtime = runtimes.resolve(request.runtime)
    network.check_runtime_takes(model_path, model, target, runtime)
    check_profiles(request.profiles, cfg, target.fixed_seq, f"`{target.name}` target")
    if request.timing_cache and runtime.rtx:
        raise BertrtError("--timing-cache: TensorRT-RTX has no timing cache (its timing-cache calls are no-ops since "
                          "1.2; it compiles kernels just in time on the GPU instead)")
    if request.compute_capabilities and not runtime.rtx:
        raise BertrtError("--compute-capability is a TensorRT-RTX option; TensorRT builds for the GPU it runs on")
    trt = runtimes.load(runtime)
    version = trt.__version__
    plan = builder_config.plan_precision(request.precision, builder_config.graph_precision(model), runtime, version,
                                         model_path)
    caps = builder_config.parse_compute_capabilities(request.compute_capabilities, trt, runtime,
                                                           plan.precision) if runtime.rtx \
        else (tuple(int(x) for x in runtimes.device_compute_capability().split(".")),)
    source_sha = sha256_file(model_path)
    if plan.calibrated:  # (a copy: the caller's request is not changed)
        request = replace(request, calib_cache=request.calib_cache
                          or calib_cache.default_cache_path(model_path, source_sha))
        if request.calib_cache.is_file():
            calib_cache.check_cache(model_path, request.calib_cache, source_sha)  # (the default path: checked here)
    else:
        request = replace(request, calib_cache=None)
    log(polygraphy_command(request, runtime, plan, caps))

    from polygraphy.backend.trt import EngineBytesFromNetwork  # (after runtimes.load: it binds Polygraphy's trt)

    started = time.perf_counter()
    with runtimes.polygraphy_errors(f"{model_path}: {runtime.label} {version}"):
        # TensorRT swallows an exception raised in its Python callbacks (logger, progress monitor, calibrator):
        # a Ctrl-C or SIGTERM there would be lost and the build carry on. So signals only set a flag while TensorRT
        # runs; the progress monitor cancels the build on it, and `deferred` raises the interrupt when TensorRT
        # returns, before anything is published.
        with interrupts.deferred():
            parsed = network.network_loader(model_path, plan.strongly_typed)()
        summary = network.summarize(parsed[1])
        parse_seconds = time.perf_counter() - started
        log(f"parsed {summary.layers} layers in {parse_seconds:.2f} s; building the engine")
        with _outputs(output, request.calib_cache, request.timing_cache) as tmp:
            calibrator = None
            if plan.calibrated:
                last = request.profiles[-1]  # Polygraphy calibrates with the last profile's opt shape
                calibrator = builder_config.calibrator(trt, tmp["cache"], request.calib_json, request.calib_num,
                                                       last.batch[1], last.seq[1], request.vocab)
            with contextlib.ExitStack() as files, interrupts.deferred() as stop:
                # Polygraphy saves the timing cache into our temporary (an open file: it neither writes the
                # user's cache nor puts a `.lock` file beside it); the previous cache goes in as bytes.
                timing = files.enter_context(open(tmp["timing"], "wb+")) if request.timing_cache else None
                config = builder_config.create_config(
                    runtime, trt, plan, request.profiles,
                    request.timing_cache.read_bytes() if timing is not None and request.timing_cache.is_file()
                    else None, caps, calibrator, builder_config.cancelling_monitor(trt, stop))
                engine = EngineBytesFromNetwork(parsed, config=config, save_timing_cache=timing)()
            build_seconds = time.perf_counter() - started - parse_seconds
            with open(tmp["engine"], "wb") as f:
                f.write(engine)
            record = EngineRecord(
                engine_sha256=sha256_file(tmp["engine"]), runtime=runtime.name, runtime_version=version,
                compute_capabilities=tuple(f"{a}.{b}" for a, b in caps), strongly_typed=plan.strongly_typed,
                precision=plan.precision, target=target.name, profiles=tuple(request.profiles), config=cfg,
                source_path=str(model_path.resolve()), source_sha256=source_sha,
                calib_cache=str(request.calib_cache) if plan.calibrated else None)
            engine_bytes = tmp["engine"].stat().st_size
            write_json(tmp["sidecar"], record.sidecar(output, {
                "network": summary.to_dict(), "parse_seconds": round(parse_seconds, 3),
                "build_seconds": round(build_seconds, 3), "engine_bytes": engine_bytes, **request.extra}))
            if plan.calibrated:
                write_json(tmp["cache_sidecar"], sidecar_record(
                    request.calib_cache, tmp["cache"], calib_cache.STAGE,
                    {"tensorrt": version, "calib_num": request.calib_num, "profile": str(request.profiles[-1])},
                    {"model": model_path}))
    log(f"parsed {summary.layers} layers ({summary.normalization} NORMALIZATION, {summary.attention} "
        f"MatMul-Softmax-MatMul, {summary.quantize}/{summary.dequantize} Q/DQ) in {parse_seconds:.2f} s; built in "
        f"{build_seconds:.2f} s: {engine_bytes / 2**20:.1f} MiB, {plan.precision}, {runtime.label} "
        f"{version}, compute capabilities {', '.join(record.compute_capabilities)}")
    return record


@contextlib.contextmanager
def _outputs(engine: Path, cache: Path | None, timing_cache: Path | None) -> Iterator[dict[str, Path]]:
    """Temporaries for everything a build writes, published as ONE set when the build succeeded (bertrt.artifacts
    .atomic_outputs): the engine and its sidecar, the calibration cache and its sidecar, the timing cache. An
    interrupt or a failure before the end leaves the previous set intact and no temporary behind. An existing
    calibration cache (already checked against the model) is copied in so TensorRT reuses it; an empty one makes
    Polygraphy's Calibrator calibrate."""
    paths = {"engine": engine, "sidecar": sidecar_path(engine)}
    if cache is not None:
        paths.update(cache=cache, cache_sidecar=sidecar_path(cache))
    if timing_cache is not None:
        paths["timing"] = timing_cache
    with atomic_outputs(*paths.values()) as temporaries:
        tmp = dict(zip(paths, temporaries))
        if cache is not None and cache.is_file():
            tmp["cache"].write_bytes(cache.read_bytes())
        yield tmp
