"""The shortcuts of post-processing against the plain computation they replace: the integer-key top-k against the
stable argsort, ranking only the pairs near each feature's top against ranking them all, and the one-pass n-best of
examples whose first texts are distinct against the one-by-one read of examples where texts repeat (run_squad's
dedup by text), on passages built so that both kinds occur, with several windows and v2's null answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bertrt.qa import postprocess
from bertrt.qa.candidates import _top_k, near_top, pair_table, ranked
from bertrt.qa.features import make_features
from bertrt.qa.postprocess import best_answers
from bertrt.qa.squad_data import Example

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud".split()


@pytest.mark.parametrize("rows, width", [(1, 7), (3, 120), (64, 115), (40, 384)])
def test_top_k_is_the_stable_argsort(rows, width):
    rng = np.random.default_rng(width)
    for flavour in ("float32", "fp16 ties", "integers and signed zeros", "-inf tail", "float64", "negative"):
        x = rng.standard_normal((rows, width)) * 3 - (30 if flavour == "negative" else 0)
        if flavour != "float64":
            x = x.astype(np.float32)
        if flavour == "fp16 ties":
            x = x.astype(np.float16).astype(np.float32)
        if flavour == "integers and signed zeros":
            x = np.minimum(np.round(x / 4), 0)  # the top k mostly zeros of either sign, in position order
            x[x == 0] = rng.choice([0.0, -0.0], size=int((x == 0).sum()))
        if flavour == "-inf tail":
            x[:, width // 2:] = -np.inf
        x = x.astype(np.float64)
        k = min(20, width)
        assert np.array_equal(_top_k(x, k), np.argsort(-x, axis=1, kind="stable")[:, :k]), flavour


def _repetitive_examples(n: int, rng) -> list[Example]:
    """Passages that say the same few phrases many times (equal texts at many positions), long enough for
    several 64-token windows."""
    examples = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS[: 4 + i % 10], size=rng.integers(3, 9))) + "." for _ in range(12)]
        examples.append(Example(f"q{i}", f"which {WORDS[i % len(WORDS)]}?", " ".join(sentences)))
    return examples


def _logits(features, rng, quantum: float | None):
    """Random start and end logits rounded to `quantum` (ties), one row per feature, a little longer than the
    feature; a token's end logit near its start logit, so that one-word spans (the same word at many positions:
    equal texts) rank high."""
    starts, ends = [], []
    for f in features:
        x = rng.standard_normal(f.length + 5) * 3
        y = x + rng.standard_normal(f.length + 5)
        starts.append((np.round(x / quantum) * quantum if quantum else x).astype(np.float32))
        ends.append((np.round(y / quantum) * quantum if quantum else y).astype(np.float32))
    return starts, ends


@pytest.mark.parametrize("version_2", [False, True])
@pytest.mark.parametrize("quantum", [None, 0.5])
def test_fast_and_repeat_paths_equal_the_plain_reference(tokenizer, monkeypatch, version_2, quantum):
    from reference_postprocess import reference_answers

    rng = np.random.default_rng(11)
    examples = _repetitive_examples(60, rng)
    features = make_features(examples, tokenizer, max_seq_length=64, doc_stride=24, max_query_length=16)
    assert len(features) > 2 * len(examples)
    starts, ends = _logits(features, rng, quantum)
    slow = []
    read_one_by_one = postprocess._kept_slow
    monkeypatch.setattr(postprocess, "_kept_slow", lambda *a: slow.append(a[0]) or read_one_by_one(*a))
    for n_best in (20, 5, 1):
        for threshold in ((0.0, -2.0, 2.0) if version_2 else (0.0,)):
            slow.clear()
            want = reference_answers(examples, features, starts, ends, n_best=n_best, version_2=version_2,
                                     null_score_diff_threshold=threshold)
            got = best_answers(examples, features, starts, ends, n_best=n_best, version_2=version_2,
                               null_score_diff_threshold=threshold)
            assert got == want
            bare = best_answers(examples, features, starts, ends, n_best=n_best, version_2=version_2,
                                null_score_diff_threshold=threshold, keep_nbest=False)
            assert bare == [dataclasses.replace(a, nbest=[]) for a in want]
            if n_best > 1:  # both paths ran: some examples repeat a text among their first n_best, some do not
                assert 0 < len(slow) < 2 * len(examples)
    if version_2:
        assert any(a.text == "" for a in got) and any(a.text != "" for a in got)


def test_ranking_near_the_top_keeps_each_examples_first_n_best(tokenizer):
    rng = np.random.default_rng(3)
    examples = _repetitive_examples(40, rng)
    features = make_features(examples, tokenizer, max_seq_length=64, doc_stride=24, max_query_length=16)
    example_of = np.array([f.example_index for f in features])
    lengths = np.array([f.length for f in features])
    for quantum in (None, 0.5, 100.0):  # 100: nearly every logit 0, ties everywhere
        starts, ends = _logits(features, rng, quantum)
        for n_best in (20, 3):
            table = pair_table(features, starts, ends, lengths, n_best, 30)
            null = np.full(len(examples), np.inf)
            np.minimum.at(null, example_of, table.null)
            full = ranked(table, table.valid, example_of, null, True)
            top = ranked(table, near_top(table, n_best), example_of, null, True)
            assert len(top.feature) <= len(full.feature)
            for x in range(len(examples)):
                a, b = slice(full.bounds[x], full.bounds[x] + n_best), slice(top.bounds[x], top.bounds[x] + n_best)
                for name in ("feature", "start", "end", "logit"):
                    assert np.array_equal(getattr(full, name)[a], getattr(top, name)[b]), (x, name)
