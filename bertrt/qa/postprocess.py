"""Start/end logits -> answer text, following Google BERT's run_squad.py (write_predictions).

The answer text is cut from the original context with the tokens' character offsets, so it is an exact
substring of the context (run_squad.py instead re-aligns a detokenized span with whitespace-split words).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from bertrt.qa.candidates import PairTable, near_top, pair_table, ranked
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


def _kept_slow(
    context: str,
    ranked: Iterator[tuple[int, int, int, float]],
    token_spans: Sequence[list],
    n_best: int,
) -> tuple[list[float], list[str], list[int], list[int]]:
    """The n-best unique texts of one example from its candidates (feature, start, end, logit), best first, as
    (logits, texts, char_starts, char_ends): the same text from several windows or positions counts once, at its
    best score (run_squad's seen_predictions). Only as many candidates are read as the list needs."""
    logits: list[float] = []
    texts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    seen: set[str] = set()
    for f, s, e, logit in ranked:
        char_start, char_end = token_spans[f][s][0], token_spans[f][e][1]  # feature -1: "" at (-1, -1)
        text = context[char_start:char_end]
        if text not in seen:
            seen.add(text)
            logits.append(logit)
            texts.append(text)
            starts.append(char_start)
            ends.append(char_end)
            if len(texts) == n_best:
                break
    return logits, texts, starts, ends


def _softmax_rows(rows: list[list[float]]) -> list[list[float]]:
    """exp(row - max(row)) / its sum, for each row; rows of one length in one numpy call (the same floats as one row
    at a time: np.exp is elementwise, and each row's sum reduces that row alone, pairwise like a 1-D array's)."""
    probs: list[list[float]] = [[] for _ in rows]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    for length, which in by_length.items():
        if length == 0:
            continue
        x = np.array([rows[i] for i in which], dtype=np.float64)
        z = np.exp(x - x.max(axis=1, keepdims=True))
        for i, p in zip(which, (z / z.sum(axis=1, keepdims=True)).tolist()):
            probs[i] = p
    return probs


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
    lengths: np.ndarray | None = None,
) -> list[Answer]:
    """best_answers' work on checked inputs; example_of[i] is features[i]'s index into `examples`, lengths[i] its
    length."""
    if not features:
        return [Answer("", 0.0, -math.inf, -1, -1, None) for _ in examples]
    if lengths is None:
        lengths = np.fromiter((len(f.input_ids) for f in features), dtype=np.int64, count=len(features))
    table = pair_table(features, start_logits, end_logits, lengths, n_best, max_answer_length)
    # v2: "no answer" is the [CLS] span; run_squad keeps the smallest over the example's windows.
    null_score = np.full(len(examples), np.inf)
    np.minimum.at(null_score, example_of, table.null)
    # (a few features have too few candidates for the cut to pay for its numpy calls)
    top = ranked(table, near_top(table, n_best) if len(features) > 4 else table.valid, example_of, null_score,
                 version_2)
    # Feature -1 (v2's "no answer") reads the last entry: the text "" at (-1, -1).
    token_spans = [f.token_spans for f in features] + [[(-1, -1)]]
    contexts = [ex.context for ex in examples]

    # Each example's first n_best candidates as Python values, for all examples in one go: where their texts are
    # distinct (the common case) they are the example's n-best list; where a text repeats, the example's whole
    # ranking is read one by one (_kept_slow), as far as its list needs.
    head = np.flatnonzero(np.arange(len(top.example)) - top.bounds[top.example] < n_best)
    head_bounds = np.searchsorted(top.example[head], np.arange(len(examples) + 1)).tolist()
    head_logits = top.logit[head].tolist()
    head_feature = top.feature[head].tolist()
    char_starts = [token_spans[f][i][0] for f, i in zip(head_feature, top.start[head].tolist())]
    char_ends = [token_spans[f][i][1] for f, i in zip(head_feature, top.end[head].tolist())]
    texts = [contexts[x][a:b] for x, a, b in zip(top.example[head].tolist(), char_starts, char_ends)]

    nulls = null_score.tolist()
    kept: list = [None] * len(examples)  # per example: its n-best (logits, texts, char_starts, char_ends)
    repeats = []
    for x in range(len(examples)):
        lo, hi = head_bounds[x], head_bounds[x + 1]
        mine = texts[lo:hi]
        if len(set(mine)) == hi - lo:
            kept[x] = (head_logits[lo:hi], mine, char_starts[lo:hi], char_ends[lo:hi])
        else:
            repeats.append(x)
    if repeats:
        kept = _with_repeats(kept, repeats, table, example_of, null_score, version_2, contexts, token_spans, n_best)
    if version_2:
        kept = [k if "" in k[1] else (k[0] + [null], k[1] + [""], k[2] + [-1], k[3] + [-1])
                for k, null in zip(kept, nulls)]
    # (a list without a span has no answer and no score: no softmax, whose v2 null may be the +inf of no window)
    probs = _softmax_rows([k[0] if k[2] and (k[2][0] >= 0 or max(k[2]) >= 0) else [] for k in kept])
    return [_answer(*k, p, null, version_2, null_score_diff_threshold, keep_nbest)
            for k, p, null in zip(kept, probs, nulls)]


def _with_repeats(kept: list, repeats: list[int], table: PairTable, example_of: np.ndarray, null_score: np.ndarray,
                  version_2: bool, contexts: list[str], token_spans: list, n_best: int) -> list:
    """`kept` with the n-best lists of the examples in `repeats` filled in from their full rankings."""
    mine = np.isin(example_of, repeats)
    full = ranked(table, table.valid & mine[:, None, None], example_of,
                  np.where(np.isin(np.arange(len(null_score)), repeats), null_score, np.inf), version_2)
    bounds = full.bounds.tolist()

    def candidates(x: int) -> Iterator[tuple[int, int, int, float]]:
        # Python objects only for the candidates _kept_slow reads: n_best, more only where texts repeat.
        for lo in range(bounds[x], bounds[x + 1], 2 * n_best):
            hi = min(lo + 2 * n_best, bounds[x + 1])
            yield from zip(full.feature[lo:hi].tolist(), full.start[lo:hi].tolist(), full.end[lo:hi].tolist(),
                           full.logit[lo:hi].tolist())

    for x in repeats:
        kept[x] = _kept_slow(contexts[x], candidates(x), token_spans, n_best)
    return kept


def _answer(logits: list[float], texts: list[str], char_starts: list[int], char_ends: list[int], probs: list[float],
            null_score: float, version_2: bool, null_score_diff_threshold: float, keep_nbest: bool) -> Answer:
    """One example's answer from its n-best list (char_start -1 is v2's "no answer", at `null_score`)."""
    k = 0 if char_starts and char_starts[0] >= 0 else next((k for k, c in enumerate(char_starts) if c >= 0), None)
    if k is None:  # no span: no answer
        return Answer("", 0.0, -math.inf, -1, -1, None)
    diff = None
    if version_2:
        diff = null_score - logits[k]
        if diff > null_score_diff_threshold:
            k = char_starts.index(-1)
    nbest = [Candidate(*c) for c in zip(logits, texts, char_starts, char_ends, probs)] if keep_nbest else []
    return Answer(texts[k], probs[k], logits[k], char_starts[k], char_ends[k], diff, nbest)


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
    example_of = np.fromiter((f.example_index for f in features), dtype=np.int64, count=len(features))
    lengths = np.fromiter((len(f.input_ids) for f in features), dtype=np.int64, count=len(features))
    if len(features) and (example_of.min() < 0 or example_of.max() >= len(examples)):
        i = int(np.flatnonzero((example_of < 0) | (example_of >= len(examples)))[0])
        raise BertrtError(f"feature {i} refers to example {example_of[i]} but there are {len(examples)}")
    for name, rows in (("start", start_logits), ("end", end_logits)):
        short = _row_lengths(rows) < lengths
        if short.any():
            i = int(np.argmax(short))
            raise BertrtError(f"{name} logits of feature {i} have shape {np.shape(rows[i])}; need 1-D with at least "
                              f"{lengths[i]}")
    options = (n_best, max_answer_length, version_2, null_score_diff_threshold, keep_nbest)
    if workers > 1 and len(examples) > workers and can_fork():
        return _answers_in_processes(examples, features, start_logits, end_logits, example_of, options, workers)
    return _answers(examples, features, start_logits, end_logits, example_of, *options, lengths=lengths)


def _row_lengths(rows: Sequence) -> np.ndarray:
    """len(row) of each row, -1 where a row is not 1-D."""
    try:  # arrays (the usual): attribute reads, not a numpy call per row
        return np.fromiter((len(r) if r.ndim == 1 else -1 for r in rows), dtype=np.int64, count=len(rows))
    except AttributeError:  # lists
        return np.fromiter((len(r) if np.ndim(r) == 1 else -1 for r in rows), dtype=np.int64, count=len(rows))
