"""`bertrt perf`: latency of QA models over batch x sequence grids, measured in one process so that models can be
compared. Each point: p50/p95/p99 of repeated runs after warm-up and sequences/s at the median. On the CPU the host
clock times `backend.infer` (input copies included, as a caller sees them); the GPU sweep (perf_gpu.py) times with
CUDA events on device-resident inputs. Results: a table, JSON (the schema below), CSV and a PNG plot."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from bertrt.runtimes import QABackend, check_fits

from bertrt.artifacts import atomic_outputs, write_json
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

PERF_SCHEMA = "bertrt.perf/2"


@dataclass
class Timing:
    model: str  # model file name, or random-bert-base / random-bert-large
    runtime: str  # e.g. onnxruntime-cpu, ort-iobinding, ort-cuda-graph, torch-eager, torch-cuda-graph
    batch: int
    seq: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    sequences_per_s: float  # batch / p50
    runs: int
    clock: str  # "host" (perf_counter around the call) or "cuda-event" (device events around the device work)


def summarize(model: str, runtime: str, batch: int, seq: int, samples_s: list[float], clock: str) -> Timing:
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return Timing(model, runtime, batch, seq, round(p50, 4), round(p95, 4), round(p99, 4), round(float(ms.mean()), 4),
                  round(batch / (p50 / 1e3), 1), len(ms), clock)


def check_shapes(cfg: BertConfig, batches: list[int], seqs: list[int]) -> None:
    """Refuse, before any run, a grid whose largest shape the model or this machine's memory cannot take."""
    check_fits(cfg, max(batches), max(seqs), batch_flag="--batch", seq_flag="--seq")


def synthetic_feed(batch: int, seq: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length sequences (latency does not depend on token values; padding would only make it look faster)."""
    rng = np.random.default_rng(seed)
    segments = np.zeros((batch, seq), np.int32)
    segments[:, seq // 4:] = 1
    return {"input_ids": rng.integers(1000 % vocab_size, vocab_size, (batch, seq)).astype(np.int32),
            "segment_ids": segments, "input_mask": np.ones((batch, seq), np.int32)}


def runtime_variants(specs: list[str]) -> list[tuple[str, str | None]]:
    """`perf --runtimes` values, RUNTIME or RUNTIME:PRECISION (openvino:bf16), as (runtime, precision) pairs; the
    registry checks the names and precisions when each is opened."""
    variants = []
    for spec in specs:
        runtime, _, precision = spec.partition(":")
        if not runtime or (precision == "" and spec.endswith(":")):
            raise BertrtError(f"--runtimes {spec!r}: expected RUNTIME or RUNTIME:PRECISION, e.g. openvino:bf16")
        variants.append((runtime, precision or None))
    return variants


def time_backend(backend: QABackend, label: str, batch: int, seq: int, warmup: int, runs: int,
                 runtime: str | None = None) -> Timing:
    feed = synthetic_feed(batch, seq, backend.config.vocab_size)
    for _ in range(warmup):
        backend.infer(feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.infer(feed)
        samples.append(time.perf_counter() - t0)
    return summarize(label, runtime or backend.runner.name.split(":")[0], batch, seq, samples, "host")


def format_table(timings: list[Timing]) -> str:
    """One row per timing, with the speed-up against the first runtime of the same model and shape when one model
    runs on several runtimes (the GPU sweep), else against the first model of the same shape (model comparison)."""
    by_model = len({t.model for t in timings}) < len({(t.model, t.runtime) for t in timings})
    base: dict = {}
    lines = [f"{'model':<26} {'runtime':<24} {'batch':>5} {'seq':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} "
             f"{'seq/s':>9} {'speed-up':>8}"]
    for t in timings:
        ref = base.setdefault((t.model if by_model else "", t.batch, t.seq), t.p50_ms)
        lines.append(f"{t.model:<26} {t.runtime:<24} {t.batch:>5} {t.seq:>5} {t.p50_ms:>9.3f} {t.p95_ms:>9.3f} "
                     f"{t.p99_ms:>9.3f} {t.sequences_per_s:>9.1f} {ref / t.p50_ms:>7.2f}x")
    return "\n".join(lines)


def plot_results(timings: list[Timing], output: Path) -> None:
    """PNG: per model, p50 latency vs batch and sequences/s vs batch, one line per runtime and sequence length."""
    # A Figure of its own, not pyplot: no global backend switch (a notebook calling this keeps its inline plots).
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(t.model for t in timings))
    fig = Figure(figsize=(12, 4.2 * len(models)))
    axes = fig.subplots(len(models), 2, squeeze=False)
    for row, model in enumerate(models):
        mine = [t for t in timings if t.model == model]
        for runtime in dict.fromkeys(t.runtime for t in mine):
            for seq in sorted({t.seq for t in mine}):
                pts = sorted((t.batch, t.p50_ms, t.sequences_per_s) for t in mine if t.runtime == runtime and t.seq == seq)
                if pts:
                    b, lat, thr = zip(*pts)
                    axes[row, 0].plot(b, lat, marker="o", label=f"{runtime}, seq {seq}")
                    axes[row, 1].plot(b, thr, marker="o", label=f"{runtime}, seq {seq}")
        for ax, ylabel in zip(axes[row], ("p50 latency (ms)", "sequences / s")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch")
            ax.set_ylabel(ylabel)
            ax.set_title(model)
            ax.grid(True, which="both", alpha=0.3)
        axes[row, 1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output, format="png", dpi=110)


def plot_path(output: Path) -> Path:
    return output.with_suffix(".png")


def perf_outputs(output: Path) -> list[Path]:
    """The files `write_results` writes: the JSON, the CSV and the PNG plot beside it."""
    return [output, output.with_suffix(".csv"), plot_path(output)]


def write_results(timings: list[Timing], output: Path, meta: dict) -> None:
    """perf JSON ({"schema", meta..., "timings": [Timing...]}), the same rows as CSV, and the PNG plot beside it,
    published together."""
    with atomic_outputs(*perf_outputs(output)) as (tmp_json, tmp_csv, tmp_png):
        write_json(tmp_json, {"schema": PERF_SCHEMA, **meta, "timings": [asdict(t) for t in timings]})
        with open(tmp_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Timing)])
            writer.writeheader()
            writer.writerows(asdict(t) for t in timings)
        plot_results(timings, tmp_png)
