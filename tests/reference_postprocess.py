"""The per-example post-processing that run/postprocess.py vectorized, kept as the reference it must equal: each
example's windows one by one, run_squad's (write_predictions) order and filters written out plainly."""

from __future__ import annotations

import math

import numpy as np
from bertrt.qa.postprocess import Answer, Candidate


def _top(logits: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-logits, kind="stable")[:n]  # equal logits keep position order, like run_squad's sorted()


def _valid_pairs(feature, start, end, n_best, max_answer_length):
    is_context = np.array([s is not None for s in feature.token_spans])
    s, e = np.meshgrid(_top(start, n_best), _top(end, n_best), indexing="ij")
    valid = (is_context[s] & is_context[e] & feature.max_context[s] & (e >= s) & (e - s + 1 <= max_answer_length))
    return s[valid], e[valid]


def _answer(context, windows, n_best, max_answer_length, version_2, null_score_diff_threshold) -> Answer:
    window_of, starts, ends, logits = [], [], [], []
    null_score = math.inf
    for w, (f, start, end) in enumerate(windows):
        s, e = _valid_pairs(f, start, end, n_best, max_answer_length)
        window_of.append(np.full(len(s), w))
        starts.append(s)
        ends.append(e)
        logits.append(start[s] + end[e])
        null_score = min(null_score, float(start[0] + end[0]))
    if version_2 and windows:
        window_of.append(np.array([-1]))
        starts.append(np.array([0]))
        ends.append(np.array([0]))
        logits.append(np.array([null_score]))
    if not logits:
        return Answer("", 0.0, -math.inf, -1, -1, None)
    logit = np.concatenate(logits)
    order = np.argsort(-logit, kind="stable")
    ranked = zip(*(np.concatenate(a)[order].tolist() for a in (window_of, starts, ends)), logit[order].tolist())
    nbest: list[Candidate] = []
    seen: set[str] = set()
    for w, s, e, lg in ranked:
        if w < 0:
            c = Candidate(lg, "", -1, -1)
        else:
            spans = windows[w][0].token_spans
            c = Candidate(lg, context[spans[s][0]:spans[e][1]], spans[s][0], spans[e][1])
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
    z = np.exp(np.asarray([c.logit for c in nbest], dtype=np.float64) - max(c.logit for c in nbest))
    probs = z / z.sum()
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


def reference_answers(examples, features, start_logits, end_logits, n_best=20, max_answer_length=30,
                      version_2=False, null_score_diff_threshold=0.0) -> list[Answer]:
    windows = [[] for _ in examples]
    for f, s, e in zip(features, start_logits, end_logits):
        windows[f.example_index].append((f, np.asarray(s[:f.length], np.float64), np.asarray(e[:f.length], np.float64)))
    return [_answer(ex.context, w, n_best, max_answer_length, version_2, null_score_diff_threshold)
            for ex, w in zip(examples, windows)]
