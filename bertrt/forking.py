"""Process pools for the Python parts of a SQuAD run (feature making, post-processing): Python runs under one GIL,
and on the GPU host those parts, not the model, set the end-to-end time."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.pool import Pool


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def fork_pool(workers: int, initializer=None) -> Pool:
    """A pool of `workers` forked processes: fork shares the parent's inputs (module globals set before the call)
    without pickling them; only the results travel back."""
    # The tokenizers library warns in every forked child unless its parallelism is set explicitly; "true" keeps the
    # parent's parallel tokenization as it was (children that tokenize switch it off: see features_in_child).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    return multiprocessing.get_context("fork").Pool(workers, initializer=initializer)
