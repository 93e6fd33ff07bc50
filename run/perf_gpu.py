"""The GPU perf sweep of `bertrt perf --provider cuda`: bertrt's onnxruntime runner with device-resident inputs
(IOBinding), with and without onnxruntime CUDA graphs, against torch eager and torch + CUDA graph on the same
random-weight model, over a batch x sequence grid, interleaved per shape.

Timing: CUDA events around each run on one stream that onnxruntime (provider option `user_compute_stream`) and
torch both use, with the stream synchronized after each run, so each sample is one run's latency from an idle GPU
(launches included, input copies excluded). Events come from torch; without torch the host clock times each
(synchronous) onnxruntime run instead, and the JSON says which clock was used."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bertrt.run.perf import Timing, summarize, synthetic_feed

from bertrt.errors import BertrtError


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


def _ort_runner(model: GpuModel, clock: Clock, cuda_graph: bool):
    from bertrt.run.backends import ort_session
    from bertrt.run.ort_cuda import OrtBoundRunner

    options = {"enable_cuda_graph": "1"} if cuda_graph else {}
    if clock.stream_handle() is not None:
        options["user_compute_stream"] = str(clock.stream_handle())
    session = ort_session(model.onnx, "cuda", cuda_options=options or None)
    return OrtBoundRunner(session, "cuda", cuda_graph, name="ort-cuda-graph" if cuda_graph else "ort-iobinding")


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
                cuda_graph: bool = True, peers: bool = True, log=print) -> tuple[list[Timing], str]:
    """Timings of every model x runtime x shape; returns them and the clock used."""
    clock = Clock()
    timings: list[Timing] = []
    for model in models:
        runners = [_ort_runner(model, clock, False)] + ([_ort_runner(model, clock, True)] if cuda_graph else [])
        net = model.torch_model if peers and clock.torch is not None else None
        if net is not None:
            # torch's fastest path as the peer: SDPA attention (the eager form was needed only for the export).
            net.set_attn_implementation("sdpa")
            net.half().cuda().eval()
        vocab = 30522 if net is not None else _vocab_size(model.onnx)
        for batch in batches:
            for seq in seqs:
                feed = synthetic_feed(batch, seq, vocab)
                for runner in runners:
                    try:
                        for _ in range(max(warmup, 3)):  # also captures the CUDA graph of this shape
                            runner.infer_impl(feed)
                        if clock.stream is not None:
                            clock.stream.synchronize()
                        samples = clock.samples(lambda r=runner: r.run_bound((batch, seq)), runs)
                    except BertrtError:
                        raise
                    except Exception as exc:  # e.g. a graph onnxruntime cannot capture: the other runtimes go on
                        log(f"{runner.name} failed for {model.label} {batch}x{seq}: {str(exc).splitlines()[0][:300]}")
                        continue
                    timings.append(summarize(model.label, runner.name, batch, seq, samples, clock.name))
                    log(_line(timings[-1]))
                if net is not None:
                    timings.extend(_torch_timings(model, clock, feed, batch, seq, warmup, runs, log))
                for runner in runners:  # free this shape's device buffers (and graph) before the next shape
                    runner.bindings.clear()
    return timings, clock.name


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
    from bertrt.qa_contract import load_qa_model

    return load_qa_model(path, load_weights=False)[1].vocab_size


def _line(t: Timing) -> str:
    return (f"{t.model} {t.runtime} {t.batch}x{t.seq}: p50 {t.p50_ms:.3f} ms p99 {t.p99_ms:.3f} ms "
            f"{t.sequences_per_s:.0f} seq/s")


def sweep(model_paths: list[Path], random_sizes: list[str], work_dir: Path, vocab: Path | None, batches: list[int],
          seqs: list[int], warmup: int, runs: int, cuda_graph: bool, peers: bool, log=print) -> tuple[list[Timing], dict]:
    """`bertrt perf --provider cuda`: the user's models and/or random-weight BERT models (built from a config,
    made into FP16 `ort` artifacts under `work_dir`), timed on every runtime; returns timings and JSON metadata."""
    import onnxruntime as ort
    from bertrt.run.random_bert import ort_fp16_artifact, torch_bert

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BertrtError("onnxruntime here has no CUDA execution provider (install onnxruntime-gpu)")
    models = [GpuModel(p.name, Path(p)) for p in model_paths]
    for size in random_sizes:
        log(f"building random-weight BERT-{size} and its FP16 ort artifact in {work_dir} ...")
        net = torch_bert(size)
        models.append(GpuModel(f"random-bert-{size}", ort_fp16_artifact(net, work_dir, f"random-bert-{size}", vocab), net))
    timings, clock = gpu_timings(models, batches, seqs, warmup, runs, cuda_graph=cuda_graph, peers=peers, log=log)
    meta = {"provider": "cuda", "clock": clock, "device": _device_name(), "onnxruntime_module": ort.__version__,
            "inputs": "device-resident (IOBinding), full-length synthetic sequences; copies excluded"}
    return timings, meta


def _device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # torch absent or no device: the JSON just lacks the name
        return "unknown"
