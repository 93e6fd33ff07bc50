"""The runtime seam's contracts: `RunOptions` (how to run), `QARunner` (the protocol every registered runtime's
runner implements) and `QABackend` (a runner plus the bertrt QA contract checks: sequence limits, engine profiles,
buckets). See docs/runtimes.md."""

from __future__ import annotations

import os
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from bertrt.errors import BertrtError
from bertrt.inputs import check_threads
from bertrt.model_config import BertConfig
from bertrt.profiles import QAProfile, covering_profile
from bertrt.qa_contract import INPUT_NAMES

PROVIDERS = ("cpu", "cuda")  # where a runtime that has a choice runs (--provider)
# RunOptions fields that change what a run computes or returns: a runtime that does not take one refuses it in one
# line (rather than silently answer something else). The other fields are settings that a command applies to every
# model it opens (perf and compare open several; the config sets the provider): a runtime with no use for one
# ignores it.
REQUESTS = ("extra_outputs", "precision", "cuda_stream", "device_id")


@dataclass(frozen=True)
class RunOptions:
    """How to run a QA model: what `open_backend` takes (the CLI's shared backend flags, the API, the session)."""

    runtime: str | None = None  # a registered runtime's name (--runtime); None: the default for the model and options
    provider: str = "cpu"  # cpu | cuda, for runtimes that run on either (onnxruntime's execution provider)
    threads: int | None = None  # intra-op threads (None: one per core)
    extra_outputs: tuple[str, ...] = ()  # intermediate tensors to return too, those the model has (compare --per-layer)
    buckets: tuple[int, ...] | None = None  # sequence-length buckets (buckets.py); None: pad to the longest feature
    batch_size: int | None = None  # rows every bucketed batch is padded to (the shapes warmed up on entry)
    # With buckets: smaller row counts that a batch of fewer windows is padded to instead of batch_size, each one
    # more warmed-up shape per bucket (and CUDA graph), e.g. (1, 4, 16) under batch size 64: a server's lone
    # request runs 1 row, a full batch 64. None: every bucketed batch has batch_size rows.
    batch_rows: tuple[int, ...] | None = None
    cuda_graph: bool = False  # replay one CUDA graph per bucket
    precision: str | None = None  # inference precision, for runtimes that take one (Runtime.precisions)
    cuda_stream: int | None = None  # CUDA stream handle to run on (perf's device timer shares it)
    device_id: int | None = None  # the GPU to run on (a Triton instance's device, `serve --gpus`); None: GPU 0

    def __post_init__(self):
        if self.provider not in PROVIDERS:
            raise BertrtError(f"unknown provider {self.provider!r} (choose from {', '.join(PROVIDERS)})")
        if self.device_id is not None and self.device_id < 0:
            raise BertrtError(f"device id must not be negative, got {self.device_id}")
        check_threads("threads", self.threads)
        # lists from callers become tuples: the options stay hashable and cannot change under a runner
        object.__setattr__(self, "extra_outputs", tuple(self.extra_outputs))
        if self.buckets is not None:
            object.__setattr__(self, "buckets", tuple(self.buckets) or None)
        if self.batch_rows is not None:
            rows = tuple(sorted(set(self.batch_rows)))
            if rows and (min(rows) < 1 or (self.batch_size is not None and max(rows) > self.batch_size)):
                raise BertrtError(f"batch rows must be between 1 and the batch size ({self.batch_size}), got "
                                  f"{','.join(map(str, rows))}")
            object.__setattr__(self, "batch_rows", rows or None)

    def requested(self) -> list[str]:
        """The REQUESTS these options make (fields off their default)."""
        defaults = {f.name: f.default for f in fields(self)}
        return [name for name in REQUESTS if getattr(self, name) != defaults[name]]


@dataclass(frozen=True)
class QuantRecipe:
    """How an INT8 Q/DQ model is best made for a runtime (its `Runtime.int8`): what `bertrt quantize --runtime R`
    and `bertrt optimize` use where the model will run on R. The fields are `bertrt quantize`'s options."""

    exclude: tuple[str, ...]  # GEMM groups kept in float (calibration/qdq.py EXCLUDE_GROUPS)
    float_precision: str  # fp16 | fp32: the type of what is not quantized
    smooth_quant: float | None = None  # SmoothQuant alpha (None: no smoothing)
    why: str = ""  # one line: what was measured (docs)


def run_options(options: RunOptions | None = None, **fields) -> RunOptions:
    """`options` with `fields` replaced (RunOptions(**fields) when there are none): the keyword convenience of the
    API functions that take a RunOptions."""
    return replace(options, **fields) if options is not None else RunOptions(**fields)


def qa_input_metadata() -> TensorMetadata:
    """The QA contract's inputs as Polygraphy metadata: int32 [batch, seq]."""
    meta = TensorMetadata()
    for name in INPUT_NAMES:
        meta.add(name, dtype=np.int32, shape=(None, None))
    return meta


def zeros_feed(batch: int, seq: int) -> dict[str, np.ndarray]:
    """A feed of one shape for warm-up runs (one real token per row: no empty attention)."""
    feed = {n: np.zeros((batch, seq), np.int32) for n in INPUT_NAMES}
    feed["input_mask"][:, 0] = 1
    return feed


class QARunner(BaseRunner, metaclass=ABCMeta):
    """The runner protocol: a Polygraphy runner (activate, infer(feed) -> dict of arrays, deactivate; so `compare`
    can hand it to Polygraphy's Comparator) that also declares the shapes it takes (`profiles`), warms up the shapes
    it will see, and says whether it can be timed on the device. Every method has a meaning for every runtime; the
    defaults here are those of a runner that takes any shape and keeps its inputs on the host."""

    # True when inputs and outputs stay in device buffers between runs, so `run_bound` times the device work alone
    # (perf --provider cuda times only such runners).
    device_resident: bool = False

    @property
    def profiles(self) -> tuple[QAProfile, ...]:
        """The shape ranges the runner takes (an engine's optimization profiles); () takes any shape."""
        return ()

    def set_profile(self, index: int) -> None:
        """Switch to profile `index` of `profiles` (only runners with profiles have anything to switch)."""

    def warm_up(self, shapes: Iterable[tuple[int, int]], runs: int = 1) -> None:
        """Run every (batch, seq) shape `runs` times before any timed or answered run (planning, allocation, and
        for CUDA graphs the capture, happen here)."""
        for batch, seq in shapes:
            feed = zeros_feed(batch, seq)
            for _ in range(runs):
                self.infer(feed)

    def run_bound(self, shape: tuple[int, int]) -> None:
        """One run on the inputs the last `infer` of `shape` left in device buffers, with no copies: what a device
        timer times. Only for `device_resident` runners."""
        raise BertrtError(f"{self.name}: this runtime keeps its inputs on the host; it has no device-side run to "
                          f"time")

    def release_shapes(self) -> None:
        """Free the per-shape buffers (and CUDA graphs) made so far; the next run of a shape makes them again."""

    @abstractmethod
    def activate_impl(self) -> None:
        """Load what the runs need (a session, an engine, a network); errors are one-line BertrtErrors."""

    @abstractmethod
    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """int32 [batch, seq] inputs -> the logits (and extra outputs) by name; sets `inference_time`."""

    @abstractmethod
    def deactivate_impl(self) -> None:
        """Release what activate_impl loaded."""

    def get_input_metadata_impl(self):
        return qa_input_metadata()

    def timed(self, run, *args):
        """`run(*args)` with `inference_time` set (Polygraphy's Comparator reads it)."""
        start = time.perf_counter()
        out = run(*args)
        self.inference_time = time.perf_counter() - start
        return out


@dataclass
class QABackend:
    """A runner with the checks the bertrt QA contract needs: batch/sequence limits, engine profiles, buckets."""

    runner: QARunner
    config: BertConfig
    description: str
    profiles: tuple = ()  # engine optimization profiles (bertrt.profiles.QAProfile); () takes any shape
    # Sequence-length buckets (buckets.py): batches are padded to a bucket and to `batch_size` rows, and those
    # shapes are warmed up on entry. None: each batch is padded only to its longest feature.
    buckets: tuple[int, ...] | None = None
    batch_size: int | None = None
    batch_rows: tuple[int, ...] | None = None  # RunOptions.batch_rows: smaller row counts of bucketed batches

    def __post_init__(self):
        self._profile = 0

    @property
    def row_counts(self) -> tuple[int, ...]:
        """The row counts bucketed batches are padded to, ascending: batch_size and the smaller batch_rows."""
        if not self.batch_size:
            return ()
        return tuple(sorted({r for r in self.batch_rows or () if r < self.batch_size} | {self.batch_size}))

    def rows_for(self, windows: int) -> int:
        """The rows a bucketed batch of `windows` windows is padded to: the smallest row count that holds them."""
        return next((r for r in self.row_counts if r >= windows), windows)

    def __enter__(self) -> QABackend:
        self.runner.activate()
        if self.buckets and self.batch_size:
            try:
                self.runner.warm_up([(rows, b) for rows in self.row_counts for b in self.buckets])
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
        return covering_profile(self.profiles, batch, seq)

    def infer(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self.infer_all(feed)
        return (np.asarray(out["start_logits"], dtype=np.float32), np.asarray(out["end_logits"], dtype=np.float32))

    def infer_all(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        profile = self.check_shape(*feed["input_ids"].shape)
        if profile is not None and profile != self._profile:
            self.runner.set_profile(profile)
            self._profile = profile
        # The feed is the QA contract by construction (its names, int32, [batch, seq], the shape checked above), so
        # Polygraphy's own input check is skipped: it rebuilds its dtype tables on every call, ~0.3 ms a run,
        # a fifth of a single request's whole serving time on the GPU.
        return self.runner.infer({name: np.ascontiguousarray(feed[name], dtype=np.int32) for name in INPUT_NAMES},
                                 check_inputs=False)


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
