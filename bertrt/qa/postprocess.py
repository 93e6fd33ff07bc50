"""Start/end logits -> answer text, following Google BERT's run_squad.py (write_predictions).

The answer text is cut from the original context with the tokens' character offsets, so it is an exact
substring of the context (run_squad.py instead re-aligns a detokenized span with whitespace-split words).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from bertrt.qa.features import Feature
from bertrt.forking import can_fork, fork_pool
from bertrt.qa.squad_data import Example

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

    def __reduce__(self):
        # Pickled as constructor arguments (forked post-processing sends answers back): unpickles ~2x faster than
        # the default instance-dict state.
        return Answer, (self.text, self.score, self.logit, self.char_start, self.char_end, self.null_score_diff,
                        self.nbest)


@dataclass
class Candidate:
    """One of the n-best spans (run_squad's nbest entry); char_start -1 is v2's "no answer"."""

    logit: float
    text: str
    char_start: int
    char_end: int
    score: float = 0.0  # softmax probability among the n-best

    def __reduce__(self):  # as Answer.__reduce__
        return Candidate, (self.logit, self.text, self.char_start, self.char_end, self.score)


def _candidates(
    features: Sequence[Feature], start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
    n_best: int, max_answer_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every allowed (start, end) pair of every feature, as flat arrays in run_squad's order (feature, then rank of
    the start among the feature's n-best starts, then rank of the end): (feature, start, end, logit), plus each
    feature's null score (start[0] + end[0], v2's "no answer").

    numpy over all features at once (rows padded to the longest feature with -inf logits, which sort last) instead
    of a dozen small numpy calls per feature."""
    n, width = len(features), max(f.length for f in features)
    start = np.full((n, width), -np.inf)  # float64, as run_squad adds the logits
    end = np.full((n, width), -np.inf)
    is_context = np.zeros((n, width), dtype=bool)
    max_context = np.zeros((n, width), dtype=bool)
    for i, f in enumerate(features):
        start[i, :f.length] = start_logits[i][:f.length]
        end[i, :f.length] = end_logits[i][:f.length]
        # make_features' layout: the context window is segment 1 except the final [SEP] (token_spans not None)
        is_context[i, :f.length - 1] = f.segment_ids[:f.length - 1]
        max_context[i, :f.length] = f.max_context
    k = min(n_best, width)
    # Stable sort: equal logits keep position order, like run_squad's sorted() over enumerate.
    top_start = np.argsort(-start, axis=1, kind="stable")[:, :k, None]  # [n, k, 1]
    top_end = np.argsort(-end, axis=1, kind="stable")[:, None, :k]  # [n, 1, k]
    rows = np.arange(n)[:, None, None]
    valid = (
        is_context[rows, top_start]
        & is_context[rows, top_end]
        & max_context[rows, top_start]
        & (top_end >= top_start)
        & (top_end - top_start + 1 <= max_answer_length)
    )
    feature, i, j = np.nonzero(valid)  # row-major: feature, start rank, end rank
    s, e = top_start[feature, i, 0], top_end[feature, 0, j]
    return feature, s, e, start[feature, s] + end[feature, e], start[:, 0] + end[:, 0]


def _answer(
    context: str,
    ranked: Iterator[tuple[int, int, int, float]],
    token_spans: Sequence[list],
    null_score: float,
    n_best: int,
    version_2: bool,
    null_score_diff_threshold: float,
    keep_nbest: bool,
) -> Answer:
    """The answer for one example from its candidates (feature, start, end, logit), best first (feature -1 is v2's
    "no answer", at `null_score`); only as many are read as the n-best list needs."""
    # The same text from several windows or positions counts once, at its best score (run_squad's
    # seen_predictions).
    kept: list[tuple[float, str, int, int]] = []  # (logit, text, char_start, char_end)
    seen: set[str] = set()
    for f, s, e, logit in ranked:
        if f < 0:
            text, char_start, char_end = "", -1, -1
        else:
            char_start, char_end = token_spans[f][s][0], token_spans[f][e][1]
            text = context[char_start:char_end]
        if text not in seen:
            seen.add(text)
            kept.append((logit, text, char_start, char_end))
            if len(kept) == n_best:
                break
    if version_2 and "" not in seen:
        kept.append((null_score, "", -1, -1))

    span_ranks = [k for k, c in enumerate(kept) if c[2] >= 0]
    if not span_ranks:
        return Answer("", 0.0, -math.inf, -1, -1, None)
    probs = _softmax([c[0] for c in kept]).tolist()
    nbest = [Candidate(*c, p) for c, p in zip(kept, probs)]
    k = span_ranks[0]
    diff = None
    if version_2:
        diff = null_score - nbest[k].logit
        if diff > null_score_diff_threshold:
            k = next(k for k, c in enumerate(nbest) if c.char_start < 0)
    best = nbest[k]
    return Answer(best.text, probs[k], best.logit, best.char_start, best.char_end, diff,
                  nbest if keep_nbest else [])


def _softmax(x: list[float]) -> np.ndarray:
    z = np.exp(np.asarray(x, dtype=np.float64) - max(x))
    return z / z.sum()


def _answers(
    examples: Sequence[Example],
    features: Sequence[Feature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    example_of: np.ndarray,
    n_best: int,
    max_answer_length: int,
    version_2: bool,
    null_score_diff_threshold: float,
    keep_nbest: bool,
) -> list[Answer]:
    """best_answers' work on checked inputs; example_of[i] is features[i]'s index into `examples`."""
    if not features:
        return [Answer("", 0.0, -math.inf, -1, -1, None) for _ in examples]
    feature, s, e, logit, feature_null = _candidates(features, start_logits, end_logits, n_best, max_answer_length)
    # v2: "no answer" is the [CLS] span; run_squad keeps the smallest over the example's windows.
    null_score = np.full(len(examples), np.inf)
    np.minimum.at(null_score, example_of, feature_null)
    example = example_of[feature]
    if version_2:
        # run_squad ranks "no answer" (feature -1) after the spans, so it takes an n-best slot when good: appended
        # last, the stable sort below puts it after spans of equal logit.
        nulls = np.flatnonzero(np.isfinite(null_score))  # the examples that have windows
        example = np.concatenate([example, nulls])
        feature, s, e = (np.concatenate([a, np.full(len(nulls), v)]) for a, v in ((feature, -1), (s, 0), (e, 0)))
        logit = np.concatenate([logit, null_score[nulls]])
    # Best first within each example; ties keep run_squad's window/start/end order (lexsort is stable; an example's
    # features are in window order).
    order = np.lexsort((-logit, example))
    feature, s, e, logit = feature[order], s[order], e[order], logit[order]
    bounds = np.searchsorted(example[order], np.arange(len(examples) + 1)).tolist()

    def ranked(x: int) -> Iterator[tuple[int, int, int, float]]:
        # Python objects only for the candidates _answer reads: n_best, more only where texts repeat.
        for lo in range(bounds[x], bounds[x + 1], 2 * n_best):
            hi = min(lo + 2 * n_best, bounds[x + 1])
            yield from zip(feature[lo:hi].tolist(), s[lo:hi].tolist(), e[lo:hi].tolist(), logit[lo:hi].tolist())

    token_spans = [f.token_spans for f in features]
    return [_answer(ex.context, ranked(x), token_spans, null, n_best, version_2, null_score_diff_threshold,
                    keep_nbest) for x, (ex, null) in enumerate(zip(examples, null_score.tolist()))]


# What forked workers read (inherited, so nothing is pickled on the way in): best_answers' arguments, and the
# features of each example (indices into `features`, grouped by example).
_FORK_SHARED: tuple | None = None


def _answer_range(bounds: tuple[int, int]) -> list[Answer]:
    lo, hi = bounds
    examples, features, start_logits, end_logits, example_of, by_example, first_feature, options = _FORK_SHARED
    mine = by_example[first_feature[lo]:first_feature[hi]].tolist()
    return _answers(examples[lo:hi], [features[i] for i in mine], [start_logits[i] for i in mine],
                    [end_logits[i] for i in mine], example_of[mine] - lo, *options)


def _answers_in_processes(examples, features, start_logits, end_logits, example_of, options: tuple, workers: int
                          ) -> list[Answer]:
    """_answers over ranges of examples in `workers` forked processes (fork shares the inputs without copying).
    Post-processing is Python under one GIL; on the H200 host it took 1.4 s of a ~2.5 s SQuAD dev run in one
    process."""
    global _FORK_SHARED
    by_example = np.argsort(example_of, kind="stable")
    first_feature = np.searchsorted(example_of[by_example], np.arange(len(examples) + 1))
    _FORK_SHARED = (examples, features, start_logits, end_logits, example_of, by_example, first_feature, options)
    n = len(examples)
    step = -(-n // (4 * workers))  # a few ranges per worker, so one slow range does not hold the rest
    try:
        with fork_pool(workers) as pool:
            parts = pool.map(_answer_range, [(lo, min(lo + step, n)) for lo in range(0, n, step)])
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
    keep_nbest: bool = True,
) -> list[Answer]:
    """One Answer per example from the logits of its features (logits[i] belongs to features[i]).

    Each logits row may be longer than its feature (padding); only the first feature.length entries are used.
    `workers` > 1 spreads the examples over that many forked processes (where the platform can fork).
    `keep_nbest` False leaves each Answer's nbest list empty (its score is still the softmax over the n-best): a
    caller that needs only the answers (SQuAD evaluation) saves building and, from the workers, unpickling ~20
    candidates per question (~0.2 s of the dev set's post-processing in 8 processes).
    """
    if n_best < 1 or max_answer_length < 1:
        raise BertrtError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must be at least 1")
    if not (len(start_logits) == len(end_logits) == len(features)):
        raise BertrtError(
            f"got {len(start_logits)} start and {len(end_logits)} end logit rows for {len(features)} features"
        )
    for i, f in enumerate(features):
        if not 0 <= f.example_index < len(examples):
            raise BertrtError(f"feature {i} refers to example {f.example_index} but there are {len(examples)}")
        for name, row in (("start", start_logits[i]), ("end", end_logits[i])):
            if np.ndim(row) != 1 or len(row) < f.length:
                raise BertrtError(
                    f"{name} logits of feature {i} have shape {np.shape(row)}; need 1-D with at least {f.length}"
                )
    example_of = np.fromiter((f.example_index for f in features), dtype=np.int64, count=len(features))
    options = (n_best, max_answer_length, version_2, null_score_diff_threshold, keep_nbest)
    if workers > 1 and len(examples) > workers and can_fork():
        return _answers_in_processes(examples, features, start_logits, end_logits, example_of, options, workers)
    return _answers(examples, features, start_logits, end_logits, example_of, *options)
