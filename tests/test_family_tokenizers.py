"""Every family's tokenizer (tests/fixtures/families/*/hf: WordPiece cased/uncased, byte-level BPE, Unigram) is
loaded by bertrt.qa.tokenizer and makes SQuAD features with the ids, special tokens and passage offsets the model's
own Hugging Face tokenizer gives (tokenization.json, written by transformers in scripts/make_family_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertrt.errors import BertrtError
from bertrt.qa.features import make_features, pair_layout
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import META_TOKENIZER, load_tokenizer, tokenizer_for, tokenizer_json

FIXTURES = Path(__file__).parent / "fixtures" / "families"
NAMES = ("bert-cased", "roberta", "xlm-roberta", "distilbert", "electra")


def cases(name: str) -> list[dict]:
    return json.loads((FIXTURES / name / "tokenization.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_features_equal_the_models_own_tokenizer(name):
    tokenizer = load_tokenizer(FIXTURES / name / "hf")  # tokenizer.json first
    for case in cases(name):
        (feature,) = make_features([Example("q", case["question"], case["context"])], tokenizer,
                                   max_seq_length=1024, max_query_length=200)
        assert feature.input_ids.tolist() == case["input_ids"]
        seq = case["sequence_ids"]
        passage = [i for i, s in enumerate(seq) if s == 1]
        assert feature.segment_ids.tolist() == [int(i >= passage[0]) for i in range(len(seq))]
        spans = [tuple(case["offsets"][i]) if s == 1 else None for i, s in enumerate(seq)]
        assert feature.token_spans == spans
        for span in filter(None, feature.token_spans):  # answers cut from these are exact substrings
            assert case["context"][span[0]:span[1]] in case["context"]


def test_special_tokens_per_family():
    roberta = pair_layout(load_tokenizer(FIXTURES / "roberta" / "hf"))
    assert (roberta.prefix, roberta.middle, roberta.suffix) == ((0,), (2, 2), (2,))  # <s> q </s></s> p </s>
    bert = load_tokenizer(FIXTURES / "bert-cased" / "hf" / "vocab.txt")
    layout = pair_layout(bert)
    assert layout.specials == 3 and layout.prefix == (bert.token_to_id("[CLS]"),)


def test_cased_vocab_txt_is_not_lower_cased(tmp_path):
    """vocab.txt + tokenizer_config.json do_lower_case false (a cased BERT folder) keeps the case; a bare vocab.txt
    is lower-cased as before."""
    hf = FIXTURES / "bert-cased" / "hf"
    cased = load_tokenizer(hf / "vocab.txt")
    reference = load_tokenizer(hf / "tokenizer.json")
    text = cases("bert-cased")[0]["context"]
    assert cased.encode(text).ids == reference.encode(text).ids
    bare = tmp_path / "vocab.txt"
    bare.write_bytes((hf / "vocab.txt").read_bytes())
    assert load_tokenizer(bare).encode("Super Bowl").ids != reference.encode("Super Bowl").ids
    assert load_tokenizer(bare, lowercase=False).encode("Super Bowl").ids == reference.encode("Super Bowl").ids


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_travels_as_json(name, tmp_path):
    tokenizer = load_tokenizer(FIXTURES / name / "hf")
    text = tokenizer_json(tokenizer)
    again = tokenizer_for({META_TOKENIZER: text}, expected_vocab_size=400)
    case = cases(name)[1]
    assert again.encode(case["question"], case["context"]).ids == case["input_ids"]
    with pytest.raises(BertrtError, match="no tokenizer travels"):
        tokenizer_for({})
    with pytest.raises(BertrtError, match="tokens but the model expects 100"):
        tokenizer_for({META_TOKENIZER: text}, expected_vocab_size=100)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": 3}')
    with pytest.raises(BertrtError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(bad)


def test_window_layout_with_two_separators():
    """A passage longer than the window: every window is <s> q </s></s> window </s>, within max_seq_length."""
    tokenizer = load_tokenizer(FIXTURES / "roberta" / "hf")
    case = cases("roberta")[0]
    features = make_features([Example("q", case["question"], case["context"])], tokenizer, max_seq_length=64,
                             doc_stride=16, max_query_length=20)
    assert len(features) > 2
    for f in features:
        assert f.length <= 64 and f.input_ids[0] == 0 and f.input_ids[-1] == 2
        first = int(np.argmax(f.segment_ids))
        assert f.input_ids[first - 2:first].tolist() == [2, 2] and f.token_spans[first] is not None
