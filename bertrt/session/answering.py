"""Questions over passages -> answers, through any QA backend: the loop under `QASession` (infer, squad, the Triton
model), and `SquadParams`, the pre- and post-processing settings."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from bertrt.runtimes import QABackend, check_fits
from bertrt.runtimes.buckets import BucketBatcher, check_buckets
from bertrt.qa.features import BadExample, Feature, collate, make_features
from bertrt.forking import can_fork, fork_pool
from bertrt.qa.postprocess import Answer, best_answers
from bertrt.qa.squad_data import Example
from tqdm import tqdm

from bertrt.errors import BertrtError


@dataclass(frozen=True)
class SquadParams:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30

    def fitted(self, positions: int) -> SquadParams:
        """These parameters for a model with `positions` usable positions (fewer than max_seq_length): the sequence
        at the model's maximum, the question and the stride shrunk so a window still holds context."""
        if self.max_seq_length <= positions:
            return self
        query = min(self.max_query_length, positions // 2)
        stride = min(self.doc_stride, max(1, positions - query - 4))
        return replace(self, max_seq_length=positions, max_query_length=query, doc_stride=stride)

    def check(self, backend: QABackend, batch_size: int = 1) -> None:
        """Before any work: the model (and an engine's profiles, a backend's buckets, this machine's memory) must
        take batches of `batch_size` padded to max_seq_length."""
        if backend.seq_len is not None and backend.seq_len != self.max_seq_length:
            raise BertrtError(f"max sequence length {self.max_seq_length} differs from the model's fixed "
                              f"length {backend.seq_len}")
        if backend.buckets:
            check_buckets(backend.buckets, self.max_seq_length, backend.config.max_position_embeddings)
        backend.check_shape(batch_size, self.max_seq_length)
        check_fits(backend.config, batch_size, self.max_seq_length)


@dataclass
class Run:
    answers: list[Answer]
    features: list[Feature]
    seconds: float  # model time (tokenization and post-processing excluded)
    feature_seconds: float = 0.0  # tokenization + windows (overlapping the model time on a bucketed backend;
    # summed over the worker processes when made in processes)
    post_seconds: float = 0.0  # logits -> answers


def _infer_rows(backend: QABackend, feed: dict[str, np.ndarray], indices: list[int], starts: list, ends: list
                ) -> float:
    """Run one batch, store row r's logits at position indices[r]; return the seconds spent in the backend."""
    t0 = time.perf_counter()
    start, end = backend.infer(feed)
    seconds = time.perf_counter() - t0
    lengths = feed["input_mask"].sum(axis=1)  # the features are left-aligned: 1s, then padding
    real = np.arange(start.shape[1]) < lengths[:, None]  # one check per batch, not per row (Python under the GIL)
    broken = ~((np.isfinite(start) & np.isfinite(end)) | ~real).all(axis=1)[:len(indices)]
    if broken.any():
        raise BertrtError(f"the model gave non-finite logits (NaN or infinity) for feature "
                          f"{indices[int(np.argmax(broken))]}: a broken model (e.g. a LayerNorm epsilon <= 0)")
    for row, i in enumerate(indices):
        starts[i], ends[i] = start[row], end[row]
    return seconds


class _NoBar:
    """What run_logits needs of a progress bar, doing nothing: a disabled tqdm still costs ~15-50 us to build, once
    per call, which is once per request batch when serving."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def _progress_bar(progress: bool, total: int | None = None):
    # disable=None: shown only on a terminal
    return tqdm(total=total, unit="feature", disable=None, mininterval=2.0) if progress else _NoBar()


def run_logits(backend: QABackend, features: list[Feature], batch_size: int, progress: bool = False
               ) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Logits for each feature. With a dynamic-shape backend, features are batched in length order so that each
    batch is padded only to its own longest feature; results come back in the original order."""
    if batch_size < 1:
        raise BertrtError(f"batch size must be at least 1, got {batch_size}")
    lengths = [len(f.input_ids) for f in features]
    order = (list(range(len(features))) if backend.seq_len is not None
             else sorted(range(len(features)), key=lengths.__getitem__))
    starts: list[np.ndarray] = [np.empty(0)] * len(features)
    ends: list[np.ndarray] = [np.empty(0)] * len(features)
    seconds = 0.0
    with _progress_bar(progress, total=len(features)) as bar:
        for first in range(0, len(order), batch_size):
            chunk = order[first:first + batch_size]
            batch = [features[i] for i in chunk]
            feed = collate(batch, backend.padded_length(max(lengths[i] for i in chunk)))
            seconds += _infer_rows(backend, feed, chunk, starts, ends)
            bar.update(len(chunk))
    return starts, ends, seconds


def bucketed_logits(backend: QABackend, chunks: Iterable[list[Feature]], batch_size: int, progress: bool = False
                    ) -> tuple[list[Feature], list[np.ndarray], list[np.ndarray], float]:
    """Features (concatenated from `chunks`, in order) and their logits, run in batches of `batch_size` rows of one
    sequence-length bucket each, so the backend sees only the shapes it warmed up. Batches start as soon as a
    chunk completes one; the partial batch of each bucket runs at the end, padded to the backend's smallest row
    count that holds it (`batch_size` unless the backend has smaller `batch_rows`)."""
    features: list[Feature] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    batcher = BucketBatcher(backend.buckets, batch_size)
    seconds = 0.0
    with _progress_bar(progress) as bar:
        def run(bucket: int, indices: list[int]) -> None:
            nonlocal seconds
            feed = collate([features[i] for i in indices], bucket, rows=backend.rows_for(len(indices)))
            seconds += _infer_rows(backend, feed, indices, starts, ends)
            bar.update(len(indices))

        for chunk in chunks:
            first = len(features)
            features.extend(chunk)
            starts.extend([np.empty(0)] * len(chunk))
            ends.extend([np.empty(0)] * len(chunk))
            for bucket, indices in batcher.add((first + k, len(f.input_ids)) for k, f in enumerate(chunk)):
                run(bucket, indices)
        for bucket, indices in batcher.flush():
            run(bucket, indices)
    return features, starts, ends, seconds


def _features_from(examples: list[Example], tokenizer, params: SquadParams, truncate_question: bool, first: int,
                   count: int) -> tuple[list[Feature], float]:
    """make_features for examples[first:first + count] (example_index stays an index into `examples`), and the
    seconds it took."""
    t0 = time.perf_counter()
    try:
        chunk = make_features(examples[first:first + count], tokenizer, params.max_seq_length, params.doc_stride,
                              params.max_query_length, truncate_question=truncate_question)
    except BadExample as exc:  # its index into `examples`, not into the chunk
        raise BadExample(str(exc), exc.example_index + first) from None
    for f in chunk:
        f.example_index += first
    return chunk, time.perf_counter() - t0


CHUNK_EXAMPLES = 1024  # examples per feature chunk (in one process)

# What forked feature workers read (inherited, so nothing is pickled on the way in): _features_from's arguments.
_FEATURE_SHARED: tuple | None = None


def _features_in_child() -> None:
    # Pool initializer. The tokenizers library's thread pool does not survive a fork (its threads stay in the
    # parent; with TOKENIZERS_PARALLELISM set it would wait for them forever), so each worker tokenizes on one thread.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _chunk_in_child(first: int) -> tuple[list[Feature], float]:
    examples, tokenizer, params, truncate_question, count = _FEATURE_SHARED
    return _features_from(examples, tokenizer, params, truncate_question, first, count)


def _chunks_in_processes(args: tuple, firsts: range, workers: int) -> Iterator[tuple[list[Feature], float]]:
    global _FEATURE_SHARED
    _FEATURE_SHARED = args
    try:
        with fork_pool(workers, initializer=_features_in_child) as pool:
            yield from pool.imap(_chunk_in_child, firsts)  # in order; every chunk is queued at once
    finally:
        _FEATURE_SHARED = None


def feature_chunks(examples: list[Example], tokenizer, params: SquadParams, truncate_question: bool,
                   chunk_examples: int = CHUNK_EXAMPLES, spent: list[float] | None = None, workers: int = 1
                   ) -> Iterator[list[Feature]]:
    """make_features over consecutive chunks of examples (example_index stays an index into `examples`); the
    seconds each chunk took are appended to `spent`. `workers` > 1 makes the chunks in that many forked processes
    (where the platform can fork), all running ahead of the caller: feature making is mostly Python, and in a thread
    it held the GIL that the GPU loop needs (on the H200 it stretched the model time from 0.29 to ~0.55 s)."""
    firsts = range(0, len(examples), chunk_examples)
    args = (examples, tokenizer, params, truncate_question, chunk_examples)
    if workers > 1 and len(firsts) > 1 and can_fork():
        made = _chunks_in_processes(args, firsts, workers)
    else:
        made = (_features_from(*args[:4], first, chunk_examples) for first in firsts)
    for chunk, seconds in made:
        if spent is not None:
            spent.append(seconds)
        yield chunk


def prefetched(items: Iterator) -> Iterator:
    """The items of `items`, each next one computed in a background thread while the caller works on the current
    one: tokenization (Rust, GIL released) overlaps the GPU runs (onnxruntime releases the GIL while it runs)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def workers_for(n_examples: int) -> int:
    """Processes for feature making and post-processing: one per core up to 8 for a large run (forking costs tens
    of ms each, more than a few hundred examples take in one process)."""
    return min(8, os.cpu_count() or 1) if n_examples >= 2000 else 1


@contextmanager
def interpreter_tuned() -> Iterator[None]:
    """Two interpreter settings for the block (restored after it):
    - the cyclic garbage collector off: a SQuAD run allocates millions of small acyclic objects (token spans,
      answer candidates) and the collector rescans them over and over (with it on, make_features took ~15 % and
      post-processing ~40 % longer on the dev set, measured on a 2-core host). Nothing here makes reference cycles;
      what the block leaves is collected later as usual;
    - a 0.5 ms GIL switch interval instead of 5 ms: when a GPU batch returns, the loop waits for the GIL while
      another thread (unpickling features from the workers) holds it, up to the interval, once per batch."""
    enabled, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(min(interval, 0.0005))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


def answer(backend: QABackend, tokenizer, examples: list[Example], params: SquadParams, batch_size: int,
           truncate_question: bool, progress: bool = False, version_2: bool = False,
           null_score_diff_threshold: float = 0.0, keep_nbest: bool = True) -> Run:
    params.check(backend, batch_size)
    with interpreter_tuned():
        spent: list[float] = []
        workers = workers_for(len(examples))
        if backend.buckets:
            # Features in chunks, made while the GPU runs the batches of earlier chunks: in processes for a large
            # run, else in a background thread (tokenization is Rust and releases the GIL). One chunk (a request,
            # a Triton batch) has nothing to overlap: no thread.
            if workers > 1:
                chunks = feature_chunks(examples, tokenizer, params, truncate_question, 256, spent, workers)
            else:
                chunks = feature_chunks(examples, tokenizer, params, truncate_question, CHUNK_EXAMPLES, spent=spent)
                chunks = prefetched(chunks) if len(examples) > CHUNK_EXAMPLES else chunks
            features, starts, ends, seconds = bucketed_logits(backend, chunks, batch_size, progress)
        else:
            # all features exist before the length-sorted batches are formed
            chunk = 256 if workers > 1 else max(len(examples), 1)
            features = [f for c in feature_chunks(examples, tokenizer, params, truncate_question, chunk, spent,
                                                  workers) for f in c]
            starts, ends, seconds = run_logits(backend, features, batch_size, progress)
        t0 = time.perf_counter()
        answers = best_answers(examples, features, starts, ends, params.n_best, params.max_answer_length,
                               version_2=version_2, null_score_diff_threshold=null_score_diff_threshold,
                               workers=workers, keep_nbest=keep_nbest)
        return Run(answers, features, seconds, sum(spent), time.perf_counter() - t0)
