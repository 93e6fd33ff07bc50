"""Start/end logits -> answer text, following Google BERT's run_squad.py (write_predictions).

The answer text is cut from the original context with the tokens' character offsets, so it is an exact
substring of the context (run_squad.py instead re-aligns a detokenized span with whitespace-split words).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from bertrt.run.features import Feature
from bertrt.run.squad_data import Example

from bertrt.errors import BertrtError


@dataclass
class Answer:
    text: str
    score: float  # softmax probability among the n-best candidates; 0 when there was no valid span
    # start_logit + end_logit of the chosen span; the null score when v2 predicts ""; -inf when no valid span
    logit: float
    char_start: int  # in the example's context; -1 for no answer
    char_end: int
    null_score_diff: float | None  # v2 only (and only with a valid span): null score minus best span score
    nbest: list[Candidate] = field(default_factory=list)  # the ranked candidates the score is taken over


@dataclass
class Candidate:
    """One of the n-best spans (run_squad's nbest entry); char_start -1 is v2's "no answer"."""

    logit: float
    text: str
    char_start: int
    char_end: int
    score: float = 0.0  # softmax probability among the n-best


def _top(logits: np.ndarray, n: int) -> np.ndarray:
    # Stable sort: equal logits keep position order, like run_squad's sorted() over enumerate.
    return np.argsort(-logits, kind="stable")[:n]


def _valid_pairs(
    feature: Feature, start: np.ndarray, end: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) positions of the allowed pairs among the n-best starts x n-best ends, in run_squad's order."""
    is_context = np.fromiter((s is not None for s in feature.token_spans), dtype=bool, count=feature.length)
    s, e = np.meshgrid(_top(start, n_best), _top(end, n_best), indexing="ij")
    valid = (
        is_context[s]
        & is_context[e]
        & feature.max_context[s]
        & (e >= s)
        & (e - s + 1 <= max_answer_length)
    )
    return s[valid], e[valid]


def _softmax(x: list[float]) -> np.ndarray:
    z = np.exp(np.asarray(x, dtype=np.float64) - max(x))
    return z / z.sum()


def _answer(
    context: str,
    windows: list[tuple[Feature, np.ndarray, np.ndarray]],
    n_best: int,
    max_answer_length: int,
    version_2: bool,
    null_score_diff_threshold: float,
) -> Answer:
    """The answer for one example from its windows' (feature, start logits, end logits)."""
    # Every allowed pair of every window as flat arrays; only the best few are turned into text.
    window_of, starts, ends, logits = [], [], [], []
    null_score = math.inf
    for w, (f, start, end) in enumerate(windows):
        s, e = _valid_pairs(f, start, end, n_best, max_answer_length)
        window_of.append(np.full(len(s), w))
        starts.append(s)
        ends.append(e)
        logits.append(start[s] + end[e])
        # v2: "no answer" is the [CLS] span; run_squad keeps the smallest over the example's windows.
        null_score = min(null_score, float(start[0] + end[0]))
    if version_2 and windows:
        # run_squad ranks "no answer" (here window -1) after the spans, so it takes an n-best slot when good.
        window_of.append(np.array([-1]))
        starts.append(np.array([0]))
        ends.append(np.array([0]))
        logits.append(np.array([null_score]))
    if not logits:
        return Answer("", 0.0, -math.inf, -1, -1, None)

    logit = np.concatenate(logits)
    order = np.argsort(-logit, kind="stable")  # ties keep run_squad's window/start/end order
    ranked = zip(*(np.concatenate(a)[order].tolist() for a in (window_of, starts, ends)), logit[order].tolist())
    # The same text from several windows or positions counts once, at its best score (run_squad's
    # seen_predictions).
    nbest: list[Candidate] = []
    seen: set[str] = set()
    for w, s, e, lg in ranked:
        if w < 0:
            c = Candidate(lg, "", -1, -1)
        else:
            spans = windows[w][0].token_spans
            c = Candidate(lg, context[spans[s][0] : spans[e][1]], spans[s][0], spans[e][1])
        if c.text not in seen:
            seen.add(c.text)
            nbest.append(c)
            if len(nbest) == n_best:
                break
    if version_2 and "" not in seen:
        nbest.append(Candidate(null_score, "", -1, -1))

    span_ranks = [k for k, c in enumerate(nbest) if c.char_start >= 0]
    if not span_ranks:
        return Answer("", 0.0, -math.inf, -1, -1, None)
    probs = _softmax([c.logit for c in nbest])
    for c, p in zip(nbest, probs):
        c.score = float(p)
    k = span_ranks[0]
    diff = None
    if version_2:
        diff = null_score - nbest[k].logit
        if diff > null_score_diff_threshold:
            k = next(k for k, c in enumerate(nbest) if c.char_start < 0)
    best = nbest[k]
    return Answer(best.text, float(probs[k]), best.logit, best.char_start, best.char_end, diff, nbest)


# What forked workers read (inherited, so nothing is pickled on the way in): contexts, windows, _answer's options.
_FORK_SHARED: tuple | None = None


def _answer_range(bounds: tuple[int, int]) -> list[Answer]:
    contexts, windows, options = _FORK_SHARED
    return [_answer(contexts[i], windows[i], *options) for i in range(*bounds)]


def _answers_in_processes(contexts: list[str], windows: list, options: tuple, workers: int) -> list[Answer]:
    """_answer for every example in `workers` forked processes. Post-processing is Python under one GIL and was the
    largest part of a GPU SQuAD run (1.2-2.0 s of 2.0-2.9 s on the H200 for the dev set), hence processes; fork
    shares the inputs without copying them."""
    import multiprocessing
    import os

    global _FORK_SHARED
    _FORK_SHARED = (contexts, windows, options)
    # The tokenizers library warns in every forked child unless its parallelism is set explicitly; the children do
    # not tokenize, and "true" keeps the parent's parallel tokenization as it was.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    step = -(-len(contexts) // (4 * workers))  # a few ranges per worker, so one slow range does not hold the rest
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_answer_range, [(lo, min(lo + step, len(contexts))) for lo in range(0, len(contexts), step)])
    finally:
        _FORK_SHARED = None
    return [a for part in parts for a in part]


def best_answers(
    examples: Sequence[Example],
    features: Sequence[Feature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    workers: int = 1,
) -> list[Answer]:
    """One Answer per example from the logits of its features (logits[i] belongs to features[i]).

    Each logits row may be longer than its feature (padding); only the first feature.length entries are used.
    `workers` > 1 spreads the examples over that many forked processes (where the platform can fork).
    """
    if n_best < 1 or max_answer_length < 1:
        raise BertrtError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must be at least 1")
    if not (len(start_logits) == len(end_logits) == len(features)):
        raise BertrtError(
            f"got {len(start_logits)} start and {len(end_logits)} end logit rows for {len(features)} features"
        )
    windows: list[list[tuple[Feature, np.ndarray, np.ndarray]]] = [[] for _ in examples]
    for i, f in enumerate(features):
        if not 0 <= f.example_index < len(examples):
            raise BertrtError(f"feature {i} refers to example {f.example_index} but there are {len(examples)}")
        rows = []
        for name, row in (("start", start_logits[i]), ("end", end_logits[i])):
            if np.ndim(row) != 1 or len(row) < f.length:
                raise BertrtError(
                    f"{name} logits of feature {i} have shape {np.shape(row)}; need 1-D with at least {f.length}"
                )
            rows.append(np.asarray(row[: f.length], dtype=np.float64))
        windows[f.example_index].append((f, *rows))
    options = (n_best, max_answer_length, version_2, null_score_diff_threshold)
    if workers > 1 and len(examples) > workers:
        import multiprocessing

        if "fork" in multiprocessing.get_all_start_methods():
            return _answers_in_processes([ex.context for ex in examples], windows, options, workers)
    return [_answer(ex.context, w, *options) for ex, w in zip(examples, windows)]
