"""`bertrt perf`: latency of QA models over batch x sequence grids, measured in one process so that models can be
compared (median and p90 of repeated runs after warm-up; input copies included, as a caller sees them)."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from bertrt.run.backends import QABackend, check_fits

from bertrt.artifacts import atomic_outputs, write_json
from bertrt.model_config import BertConfig


@dataclass
class Timing:
    model: str
    batch: int
    seq: int
    median_ms: float
    p90_ms: float
    sequences_per_s: float
    runs: int


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


def time_backend(backend: QABackend, label: str, batch: int, seq: int, warmup: int, runs: int) -> Timing:
    feed = synthetic_feed(batch, seq, backend.config.vocab_size)
    for _ in range(warmup):
        backend.infer(feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.infer(feed)
        samples.append(time.perf_counter() - t0)
    median = float(np.median(samples))
    return Timing(label, batch, seq, round(median * 1e3, 3), round(float(np.percentile(samples, 90)) * 1e3, 3),
                  round(batch / median, 2), runs)


def format_table(timings: list[Timing]) -> str:
    """One row per (batch, seq, model) with the speed-up against the first model of that shape."""
    base = {}
    lines = [f"{'model':<28} {'batch':>5} {'seq':>5} {'median ms':>10} {'p90 ms':>9} {'seq/s':>8} {'speed-up':>9}"]
    for t in timings:
        ref = base.setdefault((t.batch, t.seq), t.median_ms)
        lines.append(f"{t.model:<28} {t.batch:>5} {t.seq:>5} {t.median_ms:>10.2f} {t.p90_ms:>9.2f} "
                     f"{t.sequences_per_s:>8.1f} {ref / t.median_ms:>8.2f}x")
    return "\n".join(lines)


def perf_outputs(output: Path) -> list[Path]:
    """The files `write_results` writes: the JSON and the CSV beside it."""
    return [output, output.with_suffix(".csv")]


def write_results(timings: list[Timing], output: Path, meta: dict) -> None:
    with atomic_outputs(*perf_outputs(output)) as (tmp_json, tmp_csv):
        write_json(tmp_json, {**meta, "timings": [asdict(t) for t in timings]})
        with open(tmp_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(timings[0])))
            writer.writeheader()
            writer.writerows(asdict(t) for t in timings)
