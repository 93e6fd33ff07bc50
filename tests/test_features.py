"""Tokenizer loading and SQuAD feature construction, with the real MiniLM vocab."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bertrt.qa.features import Feature, batches, collate, make_features
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import load_tokenizer
from conftest import DEV, TENSORRT_PASSAGE, VOCAB, VOCAB_SIZE, require

from bertrt.errors import BertrtError


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- tokenizer -------------------------------------------------------------------------------------------


def test_real_vocab_loads_uncased(tokenizer):
    assert tokenizer.get_vocab_size() == VOCAB_SIZE
    enc = tokenizer.encode("What is TensorRT?", add_special_tokens=False)
    assert enc.tokens == ["what", "is", "tensor", "##rt", "?"]


def test_truncated_vocab_is_rejected(tmp_path):
    short = tmp_path / "vocab.txt"
    short.write_text("\n".join(VOCAB.read_text(encoding="utf-8").split("\n")[:1000]) + "\n", encoding="utf-8")
    assert load_tokenizer(short).get_vocab_size() == 1000  # consistent on its own ...
    with pytest.raises(BertrtError) as excinfo:  # ... but not what the model was trained with
        load_tokenizer(short, expected_vocab_size=VOCAB_SIZE)
    message = _one_line_error(excinfo)
    assert str(short) in message and "1000" in message and str(VOCAB_SIZE) in message


def test_duplicate_vocab_line_is_rejected(tmp_path):
    # A duplicated line collapses in the tokenizer's dict and shifts every later id by one.
    lines = VOCAB.read_text(encoding="utf-8").split("\n")[:1000]
    dup = tmp_path / "vocab.txt"
    dup.write_text("\n".join(lines[:500] + [lines[499]] + lines[500:]) + "\n", encoding="utf-8")
    with pytest.raises(BertrtError) as excinfo:
        load_tokenizer(dup)
    message = _one_line_error(excinfo)
    assert "1001" in message and "1000" in message


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_vocab(tmp_path, content):
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BertrtError) as excinfo:
        load_tokenizer(path)
    assert str(path) in _one_line_error(excinfo)


# --- feature layout --------------------------------------------------------------------------------------


def test_layout_of_a_single_window(tokenizer):
    question = "What is TensorRT?"
    [f] = make_features([Example("q", question, TENSORRT_PASSAGE)], tokenizer)
    q_ids = tokenizer.encode(question, add_special_tokens=False).ids
    c_enc = tokenizer.encode(TENSORRT_PASSAGE, add_special_tokens=False)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    n_prefix = len(q_ids) + 2

    assert f.input_ids.dtype == np.int32 and f.segment_ids.dtype == np.int32 and f.max_context.dtype == bool
    assert f.length == n_prefix + len(c_enc.ids) + 1
    assert f.input_ids.tolist() == [cls_id, *q_ids, sep_id, *c_enc.ids, sep_id]
    assert f.segment_ids.tolist() == [0] * n_prefix + [1] * (len(c_enc.ids) + 1)
    assert f.token_spans[:n_prefix] == [None] * n_prefix and f.token_spans[-1] is None
    assert f.max_context.tolist() == [False] * n_prefix + [True] * len(c_enc.ids) + [False]
    # Offsets point into the original (cased) context: each span, lowercased, spells its wordpiece.
    for token, span in zip(c_enc.tokens, f.token_spans[n_prefix:-1]):
        assert TENSORRT_PASSAGE[span[0] : span[1]].lower() == token.removeprefix("##")


def test_spans_survive_accents_and_case(tokenizer):
    # Lowercasing/accent stripping changes the text the wordpieces see, not the offsets into the original.
    context = "Ünïcode  CAFÉ   Straße İstanbul"
    [f] = make_features([Example("q", "where?", context)], tokenizer)
    pieces = [context[s:e] for s, e in filter(None, f.token_spans)]
    assert pieces == ["Ünïcode", "CAFÉ", "St", "raße", "İstanbul"]  # İ lowercases to 2 chars: offsets still fit


def test_spans_keep_decomposed_accents(tokenizer):
    # The tokenizer strips accents, and a combining mark after a word's last letter falls outside the token's
    # offsets: the span must still cover it, or the answer cut from the passage loses the accent.
    context = "Cafe\u0301 noir, x\u0301y and Ame\u0301lie\u0301\u0301 went home."
    [f] = make_features([Example("q", "where?", context)], tokenizer)
    pieces = [context[s:e] for s, e in filter(None, f.token_spans)]
    assert pieces[:2] == ["Cafe\u0301", "noir"]
    assert "".join(pieces).replace(" ", "") == context.replace(" ", "")  # every character lies in some token


# --- windows ---------------------------------------------------------------------------------------------


def _single_token_words(tokenizer, n):
    # Plain lowercase whole words from the vocab: each is exactly one token, so token index = word index.
    words = [w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) > 2]
    words.sort()
    return words[:n]


@pytest.mark.parametrize(
    "max_seq_length, doc_stride, max_query_length",
    [(64, 16, 16), (64, 45, 16), (40, 100, 8), (128, 1, 8)],  # stride < window, = window, > window, tiny
)
def test_windows_cover_the_context_with_stride(tokenizer, max_seq_length, doc_stride, max_query_length):
    words = _single_token_words(tokenizer, 300)
    context = " ".join(words)
    question = "how far apart are the windows?"
    features = make_features(
        [Example("long", question, context)], tokenizer, max_seq_length, doc_stride, max_query_length
    )
    n_ctx = len(words)
    n_prefix = min(len(tokenizer.encode(question, add_special_tokens=False).ids), max_query_length) + 2
    window = max_seq_length - n_prefix - 1
    word_at = {}  # char start -> word index
    pos = 0
    for i, w in enumerate(words):
        word_at[pos] = i
        pos += len(w) + 1

    starts, covered, best_count = [], np.zeros(n_ctx, int), np.zeros(n_ctx, int)
    for k, f in enumerate(features):
        assert (f.example_index, f.span_index) == (0, k)
        assert f.length <= max_seq_length
        idx = [word_at[s[0]] for s in f.token_spans[n_prefix:-1]]
        assert idx == list(range(idx[0], idx[0] + len(idx)))  # a contiguous run of context tokens
        assert len(idx) == min(window, n_ctx - idx[0])
        starts.append(idx[0])
        covered[idx] += 1
        best_count[np.asarray(idx)[f.max_context[n_prefix:-1]]] += 1
        assert not f.max_context[:n_prefix].any() and not f.max_context[-1]
    assert (covered >= 1).all()
    assert starts[-1] + window >= n_ctx > starts[-1] and (len(starts) == 1 or starts[-2] + window < n_ctx)
    assert np.diff(starts).tolist() == [min(window, doc_stride)] * (len(starts) - 1)
    assert (best_count == 1).all()  # each token is "max context" in exactly one window

    # ... and that window is the one run_squad's _check_is_max_context picks.
    for t, best in enumerate(run_squad_max_context(starts, window, n_ctx)):
        assert features[best].max_context[n_prefix + t - starts[best]]


def run_squad_max_context(starts: list[int], window: int, n_ctx: int) -> list[int]:
    """Google run_squad.py's _check_is_max_context, token by token (the reference; quadratic, small inputs only)."""
    best_windows = []
    for t in range(n_ctx):
        best, best_score = None, None
        for k, s in enumerate(starts):
            length = min(window, n_ctx - s)
            if s <= t < s + length:
                score = min(t - s, s + length - 1 - t) + 0.01 * length
                if best_score is None or score > best_score:
                    best, best_score = k, score
        best_windows.append(best)
    return best_windows


@pytest.mark.parametrize("max_seq_length, doc_stride", [(384, 128), (128, 32), (64, 7)])
def test_max_context_on_real_squad_matches_run_squad(tokenizer, max_seq_length, doc_stride):
    """The linear max-context computation marks the same tokens as run_squad on real SQuAD dev paragraphs."""
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    chosen = list({ex.context: ex for ex in examples}.values())[:12]  # one question per paragraph
    features = make_features(chosen, tokenizer, max_seq_length, doc_stride, max_query_length=32)
    for index, ex in enumerate(chosen):
        windows = [f for f in features if f.example_index == index]
        n_prefix = int((windows[0].segment_ids == 0).sum())
        window = max_seq_length - n_prefix - 1
        n_ctx = len(tokenizer.encode(ex.context, add_special_tokens=False).ids)
        starts = [k * min(window, doc_stride) for k in range(len(windows))]
        expected = np.zeros(n_ctx, int)
        for t, best in enumerate(run_squad_max_context(starts, window, n_ctx)):
            expected[t] = best
        for k, f in enumerate(windows):
            span = slice(starts[k], starts[k] + f.length - n_prefix - 1)
            assert f.max_context[n_prefix:-1].tolist() == (expected[span] == k).tolist()


_LONG_PASSAGE_SCRIPT = """
import json, resource, sys, time
import numpy as np
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from bertrt.qa.features import make_features
from bertrt.qa.postprocess import best_answers
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import load_tokenizer

passage = open(sys.argv[1], encoding="utf-8").read()
tokenizer = load_tokenizer(sys.argv[2])
t0 = time.perf_counter()
examples = [Example("long", "What is TensorRT?", passage)]
features = make_features(examples, tokenizer)
rng = np.random.default_rng(0)
logits = [rng.standard_normal(f.length).astype(np.float32) for f in features]
[answer] = best_answers(examples, features, logits, logits)
assert passage[answer.char_start:answer.char_end] == answer.text
print(json.dumps({"features": len(features), "seconds": time.perf_counter() - t0,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_multi_megabyte_passage_in_bounded_memory(tmp_path):
    """A 3 MB passage (real SQuAD text) through features and answer selection within 1.5 GiB of address space
    (the windows x tokens max-context table alone took 20+ GiB for it)."""
    import json
    import subprocess
    import sys

    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    text = " ".join(dict.fromkeys(ex.context for ex in examples))
    passage = tmp_path / "passage.txt"
    passage.write_text((text * (3_000_000 // len(text) + 1))[:3_000_000], encoding="utf-8")
    limit = 1536 * 2**20
    result = subprocess.run([sys.executable, "-c", _LONG_PASSAGE_SCRIPT, str(passage), str(VOCAB), str(limit)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "RAYON_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    print(report)
    assert report["features"] > 4000


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question, context", [("", "some text"), ("  \n", "some text"), ("why?", " \t ")])
def test_empty_question_or_context(tokenizer, question, context):
    with pytest.raises(BertrtError) as excinfo:
        make_features([Example("empty-1", question, context)], tokenizer)
    assert "empty-1" in _one_line_error(excinfo)


def test_overlong_question(tokenizer):
    question = "why " * 80 + "?"
    ex = Example("long-q", question, TENSORRT_PASSAGE)
    with pytest.raises(BertrtError) as excinfo:
        make_features([ex], tokenizer, truncate_question=False)
    assert "question has 81 tokens; at most 64 fit" in _one_line_error(excinfo)
    [f] = make_features([ex], tokenizer)  # default: cut to max_query_length like run_squad
    assert (f.segment_ids == 0).sum() == 64 + 2


def test_no_room_for_context(tokenizer):
    with pytest.raises(BertrtError) as excinfo:
        make_features([Example("q", "what?", TENSORRT_PASSAGE)], tokenizer, max_seq_length=67, max_query_length=64)
    assert "67" in _one_line_error(excinfo)


# --- batching --------------------------------------------------------------------------------------------


def _feature(length: int) -> Feature:
    ids = np.arange(1, length + 1, dtype=np.int32)
    return Feature(0, 0, ids, (ids % 2).astype(np.int32), [None] * length, np.zeros(length, bool))


def test_collate_pads_with_zeros():
    arrays = collate([_feature(3), _feature(5)], seq_len=6)
    assert set(arrays) == {"input_ids", "segment_ids", "input_mask"}
    assert all(a.dtype == np.int32 and a.shape == (2, 6) for a in arrays.values())
    assert arrays["input_ids"].tolist() == [[1, 2, 3, 0, 0, 0], [1, 2, 3, 4, 5, 0]]
    assert arrays["segment_ids"].tolist() == [[1, 0, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]]
    assert arrays["input_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    with pytest.raises(BertrtError) as excinfo:
        collate([_feature(7)], seq_len=6)
    assert "7" in _one_line_error(excinfo)


def test_batches_pad_to_longest_or_fixed():
    features = [_feature(n) for n in (3, 9, 4, 2, 5)]
    got = list(batches(features, batch_size=2))
    assert [idx for idx, _ in got] == [[0, 1], [2, 3], [4]]
    assert [a["input_ids"].shape for _, a in got] == [(2, 9), (2, 4), (1, 5)]
    assert all(a["input_ids"].shape == (2 if len(i) == 2 else 1, 16) for i, a in batches(features, 2, seq_len=16))
