"""Questions over passages -> answers, through any QA backend (the core loop of `infer` and `squad`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from bertrt.run.backends import QABackend, check_fits
from bertrt.run.features import Feature, collate, make_features
from bertrt.run.postprocess import Answer, best_answers
from bertrt.run.squad_data import Example
from tqdm import tqdm

from bertrt.errors import BertrtError


@dataclass(frozen=True)
class SquadParams:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30

    def check(self, backend: QABackend, batch_size: int = 1) -> None:
        """Before any work: the model (and an engine's profiles) must take batches padded to max_seq_length."""
        if backend.seq_len is not None and backend.seq_len != self.max_seq_length:
            raise BertrtError(f"max sequence length {self.max_seq_length} differs from the model's fixed "
                              f"length {backend.seq_len}")
        backend.check_shape(batch_size, self.max_seq_length)


@dataclass
class Run:
    answers: list[Answer]
    features: list[Feature]
    seconds: float  # model time (tokenization and post-processing excluded)


def run_logits(backend: QABackend, features: list[Feature], batch_size: int, progress: bool = False
               ) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Logits for each feature. With a dynamic-shape backend, features are batched in length order so that each
    batch is padded only to its own longest feature; results come back in the original order."""
    if batch_size < 1:
        raise BertrtError(f"batch size must be at least 1, got {batch_size}")
    order = (list(range(len(features))) if backend.seq_len is not None
             else sorted(range(len(features)), key=lambda i: features[i].length))
    starts: list[np.ndarray] = [np.empty(0)] * len(features)
    ends: list[np.ndarray] = [np.empty(0)] * len(features)
    seconds = 0.0
    with tqdm(total=len(features), unit="feature", disable=not progress, mininterval=2.0) as bar:
        for first in range(0, len(order), batch_size):
            chunk = order[first:first + batch_size]
            batch = [features[i] for i in chunk]
            feed = collate(batch, backend.padded_length(max(f.length for f in batch)))
            t0 = time.perf_counter()
            start, end = backend.infer(feed)
            seconds += time.perf_counter() - t0
            for row, i in enumerate(chunk):
                n = features[i].length
                if not (np.isfinite(start[row, :n]).all() and np.isfinite(end[row, :n]).all()):
                    raise BertrtError(f"the model gave non-finite logits (NaN or infinity) for feature {i}: "
                                      f"a broken model (e.g. a LayerNorm epsilon <= 0)")
                starts[i], ends[i] = start[row], end[row]
            bar.update(len(chunk))
    return starts, ends, seconds


def answer(backend: QABackend, tokenizer, examples: list[Example], params: SquadParams, batch_size: int,
           truncate_question: bool, progress: bool = False, version_2: bool = False,
           null_score_diff_threshold: float = 0.0) -> Run:
    params.check(backend, batch_size)
    check_fits(backend.config, batch_size, params.max_seq_length)
    features = make_features(examples, tokenizer, params.max_seq_length, params.doc_stride,
                             params.max_query_length, truncate_question=truncate_question)
    starts, ends, seconds = run_logits(backend, features, batch_size, progress)
    answers = best_answers(examples, features, starts, ends, params.n_best, params.max_answer_length,
                           version_2=version_2, null_score_diff_threshold=null_score_diff_threshold)
    return Run(answers, features, seconds)
