"""Logits -> answers: the gold span survives features -> logits -> best_answers, plus run_squad's filters."""

from __future__ import annotations

import dataclasses
import json
import re
import string
import time

import numpy as np
import pytest
from bertrt.qa.features import make_features
from bertrt.qa.postprocess import best_answers
from bertrt.qa.squad_data import Example
from conftest import TENSORRT_PASSAGE, read_dev

from bertrt.errors import BertrtError

PUNCTUATION = set(string.punctuation)


def _dev_examples(limit: int | None = None) -> list[Example]:
    data = read_dev()["data"]
    examples = [
        Example(qa["id"], qa["question"], p["context"], qa["answers"])
        for article in data
        for p in article["paragraphs"]
        for qa in p["qas"]
    ]
    return [ex for ex in examples[:limit] if ex.answers]


def _normalize(s: str) -> str:
    # The official SQuAD v1.1 evaluation's normalize_answer.
    s = "".join(ch for ch in s.lower() if ch not in PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _one_hot_logits(features, target: int, start: int, end: int, pad_to: int | None = None):
    """Zero logits everywhere except 10 at (start, end) of features[target]."""
    starts, ends = [], []
    for i, f in enumerate(features):
        s, e = np.zeros(pad_to or f.length, np.float32), np.zeros(pad_to or f.length, np.float32)
        if i == target:
            s[start], e[end] = 10.0, 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def _gold_target(features, feature_ids, char_start: int, char_end: int) -> tuple[int, int, int] | None:
    """(feature, start position, end position) of the gold span in the window where its start has max context."""
    for i in feature_ids:
        f = features[i]
        ctx = [(p, s) for p, s in enumerate(f.token_spans) if s is not None]
        inside = ctx[0][1][0] <= char_start and char_end <= ctx[-1][1][1]  # not cut off by the window's edges
        first = [p for p, (a, b) in ctx if b > char_start]  # first token touching the answer
        last = [p for p, (a, b) in ctx if a < char_end]  # last token touching it
        if inside and f.max_context[first[0]]:
            return i, first[0], last[-1]
    return None


def _round_trip(examples, tokenizer) -> tuple[float, float, list[str]]:
    """Put logits of 10 on a gold span's first/last token (0 elsewhere) and compare the answer with that gold text.

    Returns (fraction of examples where some gold span comes back as its text, fraction of all gold spans that
    do, misses). A few SQuAD gold spans cut a word ("8" in "20–18"): no token span can reproduce those, which
    is why an example counts when any of its annotators' spans round-trips.
    """
    features = make_features(examples, tokenizer)
    by_example: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_example.setdefault(f.example_index, []).append(i)
    exact = [[] for _ in examples]  # per example, per gold answer: recovered exactly?
    misses = []
    for k in range(max(len(ex.answers) for ex in examples)):
        starts = [np.zeros(f.length, np.float32) for f in features]
        ends = [np.zeros(f.length, np.float32) for f in features]
        has_target = {}
        for ex_index, ex in enumerate(examples):
            if k < len(ex.answers):
                gold = ex.answers[k]
                span = (gold["answer_start"], gold["answer_start"] + len(gold["text"]))
                target = _gold_target(features, by_example[ex_index], *span)
                if target is not None:
                    i, start, end = target
                    starts[i][start], ends[i][end] = 10.0, 10.0
                has_target[ex_index] = target is not None
        for ex_index, answer in enumerate(best_answers(examples, features, starts, ends)):
            if ex_index in has_target:
                ex = examples[ex_index]
                assert answer.text == ex.context[answer.char_start : answer.char_end]
                ok = has_target[ex_index] and _normalize(answer.text) == _normalize(ex.answers[k]["text"])
                exact[ex_index].append(ok)
                if not ok:
                    misses.append(f"{ex.qas_id}[{k}]: {answer.text!r} != {ex.answers[k]['text']!r}")
    per_example = sum(any(e) for e in exact) / len(examples)
    per_span = sum(sum(e) for e in exact) / sum(len(e) for e in exact)
    return per_example, per_span, misses


def test_tensorrt_passage_round_trip(tokenizer):
    ex = Example("trt", "What is TensorRT?", TENSORRT_PASSAGE)
    [f] = make_features([ex], tokenizer)
    want = "a high performance deep learning inference platform"
    char_start = TENSORRT_PASSAGE.index(want)
    inside = range(char_start, char_start + len(want))
    positions = [p for p, s in enumerate(f.token_spans) if s is not None and s[0] in inside]
    starts, ends = _one_hot_logits([f], 0, positions[0], positions[-1], pad_to=384)
    [answer] = best_answers([ex], [f], starts, ends)
    assert answer.text == want
    assert (answer.char_start, answer.char_end) == (char_start, char_start + len(want))
    assert answer.logit == pytest.approx(20.0)
    # The n-best also holds pairs mixing the 10 with zeros (score 10) and zero pairs; the 20 dominates.
    assert 0.99 < answer.score <= 1.0
    assert answer.null_score_diff is None


def test_dev_round_trip(tokenizer):
    examples = _dev_examples(300)
    per_example, per_span, misses = _round_trip(examples, tokenizer)
    print(f"\nround trip, first {len(examples)} dev questions: {per_example:.2%} of questions, "
          f"{per_span:.2%} of gold spans exact after normalization; misses: {misses}")
    assert per_example >= 0.99, misses
    assert per_span >= 0.95, misses  # the rest are gold spans that cut through a word


@pytest.mark.slow
def test_full_dev_round_trip_and_speed(tokenizer):
    examples = _dev_examples()
    t0 = time.perf_counter()
    features = make_features(examples, tokenizer)
    elapsed = time.perf_counter() - t0
    print(f"\nfeaturized {len(examples)} questions -> {len(features)} features in {elapsed:.1f}s")
    assert elapsed < 60
    per_example, per_span, misses = _round_trip(examples, tokenizer)
    print(f"round trip: {per_example:.2%} of questions, {per_span:.2%} of gold spans; first misses: {misses[:20]}")
    assert per_example >= 0.99
    assert per_span >= 0.95


# --- run_squad's filters ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt(tokenizer):
    ex = Example("trt", "What is TensorRT?", TENSORRT_PASSAGE)
    [f] = make_features([ex], tokenizer)
    ctx = [p for p, s in enumerate(f.token_spans) if s is not None]
    return ex, f, ctx


def _answer(ex, f, start, end, **kw):
    return best_answers([ex], [f], [np.asarray(start, np.float32)], [np.asarray(end, np.float32)], **kw)[0]


def test_question_tokens_and_padding_are_never_answers(trt):
    ex, f, ctx = trt
    start, end = np.zeros(f.length + 20), np.zeros(f.length + 20)
    start[1:4] = end[1:4] = 100  # question tokens
    start[f.length :] = end[f.length :] = 100  # padding beyond the feature
    start[ctx[5]], end[ctx[7]] = 5, 5
    answer = _answer(ex, f, start, end)
    assert (answer.char_start, answer.char_end) == (f.token_spans[ctx[5]][0], f.token_spans[ctx[7]][1])
    assert answer.logit == 10


def test_end_before_start_and_too_long_are_rejected(trt):
    ex, f, ctx = trt
    start, end = np.zeros(f.length), np.zeros(f.length)
    start[ctx[40]], end[ctx[39]] = 50, 50  # end before start
    start[ctx[0]], end[ctx[30]] = 40, 40  # 31 tokens > max_answer_length 30
    end[ctx[42]] = 1
    answer = _answer(ex, f, start, end)
    # Best allowed: start ctx[40] (50) with the best end at or after it: ctx[42] (1).
    assert (answer.char_start, answer.char_end) == (f.token_spans[ctx[40]][0], f.token_spans[ctx[42]][1])
    assert answer.logit == 51
    longer = _answer(ex, f, start, end, max_answer_length=31)
    assert (longer.char_start, longer.char_end) == (f.token_spans[ctx[0]][0], f.token_spans[ctx[30]][1])


def test_score_is_softmax_over_distinct_texts(trt):
    ex, f, ctx = trt
    start, end = np.full(f.length, -100.0), np.full(f.length, -100.0)
    start[ctx[0]], end[ctx[0]], end[ctx[1]] = 3, 2, 1  # spans [0,0] = 5 and [0,1] = 4; the rest ~-inf
    answer = _answer(ex, f, start, end, n_best=2)
    assert answer.logit == 5
    assert answer.score == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-6)


def test_no_valid_candidate(trt):
    ex, f, ctx = trt
    start, end = np.zeros(f.length), np.zeros(f.length)
    start[0] = end[0] = 9  # only [CLS] in the top 1
    answer = _answer(ex, f, start, end, n_best=1)
    assert (answer.text, answer.score, answer.char_start, answer.char_end) == ("", 0.0, -1, -1)


def test_only_the_max_context_window_may_start_an_answer(tokenizer):
    words = [w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) > 2]
    context = " ".join(sorted(words)[:200])
    ex = Example("long", "which word?", context)
    features = make_features([ex], tokenizer, max_seq_length=64, doc_stride=20, max_query_length=16)
    f0, f1 = features[0], features[1]
    # A token near the end of window 0 is also in window 1, where it has more context on both sides.
    pos0 = max(p for p, s in enumerate(f0.token_spans) if s is not None) - 1
    span = f0.token_spans[pos0]
    pos1 = f1.token_spans.index(span)
    assert not f0.max_context[pos0] and f1.max_context[pos1]
    starts, ends = _one_hot_logits(features, 0, pos0, pos0)
    starts[1][pos1], ends[1][pos1] = 1.0, 1.0  # much weaker, but in the max-context window
    [answer] = best_answers([ex], features, starts, ends)
    assert (answer.char_start, answer.char_end) == span and answer.logit == 2.0


def test_version_2_null_answer(tokenizer):
    ex = Example("v2", "What is TensorRT?", TENSORRT_PASSAGE * 3)  # long enough for several windows
    features = make_features([ex], tokenizer, max_seq_length=128, doc_stride=64)
    assert len(features) > 1
    starts = [np.zeros(f.length) for f in features]
    ends = [np.zeros(f.length) for f in features]
    ctx = [p for p, s in enumerate(features[0].token_spans) if s is not None]
    starts[0][ctx[2]], ends[0][ctx[4]] = 3, 3  # best span: 6
    for s, e in zip(starts, ends):
        s[0], e[0] = 5, 4  # null 9 in every window ...
    starts[-1][0] = 4  # ... except the last: 8, and the minimum counts
    answer = best_answers([ex], features, starts, ends, version_2=True)[0]
    assert (answer.text, answer.char_start, answer.logit) == ("", -1, 8.0)
    assert answer.null_score_diff == pytest.approx(2.0)
    assert 0 < answer.score < 1
    kept = best_answers([ex], features, starts, ends, version_2=True, null_score_diff_threshold=2.0)[0]
    assert kept.text == ex.context[kept.char_start : kept.char_end] != "" and kept.logit == 6
    assert kept.null_score_diff == pytest.approx(2.0)
    v1 = best_answers([ex], features, starts, ends)[0]
    assert v1.text == kept.text and v1.null_score_diff is None


def test_logit_rows_must_match_features(trt):
    ex, f, _ = trt
    with pytest.raises(BertrtError) as excinfo:
        best_answers([ex], [f], [np.zeros(f.length)], [])
    assert "\n" not in str(excinfo.value)
    with pytest.raises(BertrtError) as excinfo:
        best_answers([ex], [f], [np.zeros(f.length - 1)], [np.zeros(f.length)])
    assert str(f.length) in str(excinfo.value)


@pytest.mark.parametrize("version_2", [False, True])
def test_vectorized_equals_per_example_reference(tokenizer, version_2):
    """best_answers (numpy over all features, forked workers) gives exactly the answers of the per-example reference
    (tests/reference_postprocess.py, the code it replaced) on real dev questions, multi-window ones included:
    same texts, offsets, logits, scores and n-best lists. Logits rounded to FP16, as the GPU model gives them, so
    that ties (where the order rules matter) occur."""
    from reference_postprocess import reference_answers

    examples = _dev_examples(600)
    features = make_features(examples, tokenizer, max_seq_length=192, doc_stride=64)
    assert len(features) > len(examples) * 1.3  # many examples have several windows
    rng = np.random.default_rng(7)
    starts = [(rng.standard_normal(f.length + 3) * 4).astype(np.float16).astype(np.float32) for f in features]
    ends = [(rng.standard_normal(f.length + 3) * 4).astype(np.float16).astype(np.float32) for f in features]
    want = reference_answers(examples, features, starts, ends, version_2=version_2)
    assert sum(a.char_start >= 0 for a in want) > 0.9 * len(examples)
    for workers in (1, 3):
        got = best_answers(examples, features, starts, ends, version_2=version_2, workers=workers)
        assert got == want
    # without the n-best lists (what SQuAD evaluation asks for): the same answers, nothing else
    bare = best_answers(examples, features, starts, ends, version_2=version_2, workers=3, keep_nbest=False)
    assert all(a.nbest == [] for a in bare)
    assert bare == [dataclasses.replace(a, nbest=[]) for a in want]
