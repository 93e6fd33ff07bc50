"""The GPU perf sweep of `bertrt perf --provider cuda`: bertrt's models opened by `open_backend` on a runtime with
device-resident inputs (by default onnxruntime-bound: IOBinding), with and without CUDA graphs, against torch eager
and torch + CUDA graph on the same random-weight model, over a batch x sequence grid, interleaved per shape.

Timing: CUDA events around each run (`QARunner.run_bound`) on one stream that the runtime (RunOptions.cuda_stream;
onnxruntime's provider option `user_compute_stream`) and torch both use, with the stream synchronized after each run, so each sample is one run's latency from an idle GPU
(launches included, input copies excluded). Events come from torch; without torch the host clock times each
(synchronous) onnxruntime run instead, and the JSON says which clock was used."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from bertrt.run.perf import Timing, summarize, synthetic_feed

from bertrt.errors import BertrtError
from bertrt.qa_contract import load_qa_model
from bertrt.run.random_bert import ort_fp16_artifact, torch_bert
from bertrt.runtimes import QABackend, RunOptions, open_backend
from bertrt.runtimes.onnxruntime import check_cuda_provider


@dataclass
class GpuModel:
    label: str
    onnx: Path  # bertrt QA artifact (FP16 `ort` target for the GPU)
    torch_model: object | None = None  # the same network in torch (random-weight models only): the peers


class Clock:
    """Times one callable per sample: CUDA events on `stream` when torch is there, else the host clock."""

    def __init__(self):
        try:
            import torch
        except ImportError:
            torch = None
        self.torch = torch if torch is not None and torch.cuda.is_available() else None
        self.stream = self.torch.cuda.Stream() if self.torch else None
        self.name = "cuda-event" if self.torch else "host"

    def stream_handle(self) -> int | None:
        return self.stream.cuda_stream if self.stream is not None else None

    def samples(self, fn: Callable[[], None], runs: int) -> list[float]:
        if self.torch is None:
            out = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            return out
        torch, out = self.torch, []
        with torch.cuda.stream(self.stream):
            for _ in range(runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(self.stream)
                fn()
                end.record(self.stream)
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
        return out


def _open(model: GpuModel, clock: Clock, options: RunOptions, cuda_graph: bool) -> tuple[str, QABackend]:
    """(timing label, backend) of `model` on the CUDA provider and the clock's stream, with or without CUDA graphs."""
    backend = open_backend(model.onnx, replace(options, provider="cuda", cuda_graph=cuda_graph, buckets=None,
                                               batch_size=None, cuda_stream=clock.stream_handle()))
    if not backend.runner.device_resident:
        raise BertrtError(f"{model.onnx}: {backend.runner.name.split(':')[0]} keeps its inputs on the host; perf "
                          f"--provider cuda times runtimes with device-resident inputs (e.g. onnxruntime-bound)")
    # the labels of the perf JSON: "ort-iobinding" / "ort-cuda-graph" for the default runtime (as before), else the
    # chosen runtime's name
    name, plain = ("ort", "ort-iobinding") if options.runtime is None else (options.runtime, options.runtime)
    return f"{name}-cuda-graph" if cuda_graph else plain, backend


def _torch_inputs(torch, feed: dict[str, np.ndarray]) -> dict:
    # No attention_mask: the synthetic sequences are full length, and transformers builds a given mask with a
    # host-to-device copy that a CUDA graph cannot capture.
    return {"input_ids": torch.from_numpy(feed["input_ids"]).long().cuda(),
            "token_type_ids": torch.from_numpy(feed["segment_ids"]).long().cuda()}


def _torch_graph(torch, net, inputs: dict, stream):
    """The forward captured as a torch CUDA graph (warm-up on the capture stream first, as torch's guide says)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            net(**inputs)
        stream.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            net(**inputs)
    return graph


def gpu_timings(models: list[GpuModel], batches: list[int], seqs: list[int], warmup: int, runs: int,
                cuda_graph: bool = True, peers: bool = True, log=print, options: RunOptions = RunOptions(provider="cuda")
                ) -> tuple[list[Timing], str]:
    """Timings of every model x runtime x shape; returns them and the clock used."""
    clock = Clock()
    timings: list[Timing] = []
    for model in models:
        opened = [_open(model, clock, options, False)] + ([_open(model, clock, options, True)] if cuda_graph else [])
        net = model.torch_model if peers and clock.torch is not None else None
        if net is not None:
            # torch's fastest path as the peer: SDPA attention (the eager form was needed only for the export).
            net.set_attn_implementation("sdpa")
            net.half().cuda().eval()
        vocab = 30522 if net is not None else _vocab_size(model.onnx)
        for _, backend in opened:
            backend.__enter__()
        try:
            for batch in batches:
                for seq in seqs:
                    feed = synthetic_feed(batch, seq, vocab)
                    for label, backend in opened:
                        timing = _time_runner(backend.runner, label, model, clock, feed, warmup, runs, log)
                        if timing is not None:
                            timings.append(timing)
                            log(_line(timing))
                    if net is not None:
                        timings.extend(_torch_timings(model, clock, feed, batch, seq, warmup, runs, log))
                    for _, backend in opened:  # free this shape's device buffers (and graph) before the next shape
                        backend.runner.release_shapes()
        finally:
            for _, backend in opened:
                backend.__exit__(None, None, None)
    return timings, clock.name


def _time_runner(runner, label: str, model: GpuModel, clock: Clock, feed, warmup: int, runs: int, log
                 ) -> Timing | None:
    """Device-side samples of one runner on one shape (None when the runtime fails on it: the others go on)."""
    batch, seq = feed["input_ids"].shape
    try:
        for _ in range(max(warmup, 3)):  # binds the feed, and captures the CUDA graph of this shape
            runner.infer(feed)
        if clock.stream is not None:
            clock.stream.synchronize()
        samples = clock.samples(lambda: runner.run_bound((batch, seq)), runs)
    except BertrtError:
        raise
    except Exception as exc:  # e.g. a graph onnxruntime cannot capture: the other runtimes go on
        log(f"{label} failed for {model.label} {batch}x{seq}: {str(exc).splitlines()[0][:300]}")
        return None
    return summarize(model.label, label, batch, seq, samples, clock.name)


def _torch_timings(model, clock, feed, batch, seq, warmup, runs, log) -> list[Timing]:
    """torch eager and torch + CUDA graph on the fp16 torch model; a capture that fails is logged and skipped."""
    torch, net = clock.torch, model.torch_model
    out = []
    try:
        inputs = _torch_inputs(torch, feed)

        def eager():
            with torch.no_grad():
                net(**inputs)

        runtimes = [("torch-eager", eager)]
        try:
            graph = _torch_graph(torch, net, inputs, clock.stream)
            runtimes.append(("torch-cuda-graph", graph.replay))
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # torch cannot capture some forwards (host syncs inside); the sweep goes on
            log(f"torch CUDA graph capture failed for {model.label} {batch}x{seq}: {str(exc).splitlines()[0][:200]}")
        for name, fn in runtimes:
            for _ in range(warmup):
                fn()
            out.append(summarize(model.label, name, batch, seq, clock.samples(fn, runs), clock.name))
            log(_line(out[-1]))
        return out
    except torch.cuda.OutOfMemoryError:
        raise BertrtError(f"torch: batch {batch} x sequence {seq} does not fit in GPU memory") from None
    finally:
        torch.cuda.empty_cache()


def _vocab_size(path: Path) -> int:
    return load_qa_model(path, load_weights=False)[1].vocab_size


def _line(t: Timing) -> str:
    return (f"{t.model} {t.runtime} {t.batch}x{t.seq}: p50 {t.p50_ms:.3f} ms p99 {t.p99_ms:.3f} ms "
            f"{t.sequences_per_s:.0f} seq/s")


def sweep(model_paths: list[Path], random_sizes: list[str], work_dir: Path, vocab: Path | None, batches: list[int],
          seqs: list[int], warmup: int, runs: int, cuda_graph: bool, peers: bool, log=print,
          options: RunOptions = RunOptions(provider="cuda")) -> tuple[list[Timing], dict]:
    """`bertrt perf --provider cuda`: the user's models and/or random-weight BERT models (built from a config,
    made into FP16 `ort` artifacts under `work_dir`), timed on every runtime; returns timings and JSON metadata."""
    import onnxruntime as ort

    check_cuda_provider()
    models = [GpuModel(p.name, Path(p)) for p in model_paths]
    for size in random_sizes:
        log(f"building random-weight BERT-{size} and its FP16 ort artifact in {work_dir} ...")
        net = torch_bert(size)
        models.append(GpuModel(f"random-bert-{size}", ort_fp16_artifact(net, work_dir, f"random-bert-{size}", vocab), net))
    timings, clock = gpu_timings(models, batches, seqs, warmup, runs, cuda_graph=cuda_graph, peers=peers, log=log,
                                 options=options)
    meta = {"provider": "cuda", "clock": clock, "device": _device_name(), "onnxruntime_module": ort.__version__,
            "inputs": "device-resident (IOBinding), full-length synthetic sequences; copies excluded"}
    return timings, meta


def _device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # torch absent or no device: the JSON just lacks the name
        return "unknown"
