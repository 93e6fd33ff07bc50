"""SQuAD v1.1 / v2.0 scoring (bertrt.qa.squad_metrics) against hand-computed cases and the real dev set."""

from __future__ import annotations

import pytest
from bertrt.qa.squad_data import load_squad
from bertrt.qa.squad_metrics import (
    compute_exact,
    compute_f1,
    evaluate,
    evaluate_v1,
    evaluate_v2,
    exact_match_score,
    f1_score,
    normalize_answer,
)
from conftest import DEV, require

from bertrt.errors import BertrtError


def dataset_of(*qas: tuple[str, list[str]]) -> list:
    """A one-paragraph `data` list; each qa is (id, gold texts) and no golds means unanswerable."""
    return [{"title": "t", "paragraphs": [{"context": "ctx", "qas": [
        {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in golds],
         **({} if golds else {"is_impossible": True})}
        for qid, golds in qas]}]}]


# ---------------------------------------------------------------------------------------------------------
# Normalisation and per-answer scores
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, normalized", [
    ("The  Cat, sat!", "cat sat"),
    ("an apple a day", "apple day"),
    ("A", ""),
    ("Theater and anthem", "theater and anthem"),  # articles only as whole words
    ("the-cat", "thecat"),                         # punctuation goes first, so the article stays glued
    ("the, cat", "cat"),
    ("\tDenver\nBroncos. ", "denver broncos"),
    ("U.S.A.", "usa"),
    ("Café ‘quoted’", "café ‘quoted’"),            # only ASCII punctuation is removed
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_f1_hand_computed():
    # [cat, sat] vs [cat, sat, down]: precision 2/2, recall 2/3 -> F1 = 2*(1*2/3)/(1+2/3) = 0.8
    assert f1_score("the cat sat", "A cat sat down") == pytest.approx(0.8)
    # Multiset overlap: [cat, cat, cat] vs [cat] share one token: P 1/3, R 1 -> 2*(1/3)/(4/3) = 0.5
    assert f1_score("cat cat cat", "cat") == pytest.approx(0.5)
    # [denver, broncos, team] vs [broncos]: P 1/3, R 1 -> 0.5
    assert f1_score("Denver Broncos team", "the Broncos") == pytest.approx(0.5)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("The Cat!", "cat") == 1.0


def test_exact_match_strips_punctuation_and_articles():
    assert exact_match_score("The Denver Broncos.", "denver broncos")
    assert exact_match_score("an  (apple)", "Apple")
    assert not exact_match_score("Denver", "Denver Broncos")


def test_v1_empty_strings():
    # v1.1 quirk kept from the official script: empty vs empty is an exact match but has F1 0.
    assert exact_match_score("", "the")
    assert f1_score("", "the") == 0.0


def test_v2_empty_answers():
    assert compute_exact("", "") == 1 and compute_f1("", "") == 1.0
    assert compute_exact("", "Paris") == 0 and compute_f1("", "Paris") == 0.0
    assert compute_exact("Paris", "") == 0 and compute_f1("Paris", "") == 0.0
    assert compute_f1("the", "") == 1.0  # "the" normalises to nothing
    assert compute_f1("A cat sat down", "the cat sat") == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------
# evaluate_v1
# ---------------------------------------------------------------------------------------------------------

def test_evaluate_v1_max_over_golds_and_missing():
    data = dataset_of(
        ("q1", ["Denver Broncos", "Broncos"]),      # pred "the Broncos!" -> EM 1, F1 1 (second gold)
        ("q2", ["Denver Broncos", "the Broncos"]),  # pred "Broncos team": F1 max(1/2, 2/3) = 2/3, EM 0
        ("q3", ["A cat sat down"]),                 # pred "the cat sat": F1 0.8, EM 0
        ("q4", ["Paris"]),                          # no prediction: 0 / 0, missing
    )
    preds = {"q1": "the Broncos!", "q2": "Broncos team", "q3": "the cat sat", "unknown": "ignored"}
    result = evaluate_v1(data, preds)
    assert result["total"] == 4 and result["missing"] == 1
    assert result["exact_match"] == pytest.approx(100 * 1 / 4)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0.8 + 0) / 4)
    # The whole dataset dict works as well as its data list, and evaluate() dispatches to v1.
    assert evaluate({"data": data}, preds, "1.1") == result


def test_evaluate_v1_rejects_unanswerable_and_bad_predictions():
    with pytest.raises(BertrtError, match="version 2.0"):
        evaluate_v1(dataset_of(("q1", ["x"]), ("n1", [])), {"q1": "x", "n1": ""})
    with pytest.raises(BertrtError, match="q1"):
        evaluate_v1(dataset_of(("q1", ["x"])), {"q1": ["x"]})


# ---------------------------------------------------------------------------------------------------------
# evaluate_v2
# ---------------------------------------------------------------------------------------------------------

# q1..q5 with (gold, prediction, na_prob); raw scores worked out by hand:
#   q1 HasAns "Denver Broncos" / "Denver Broncos"  na .1  -> EM 1, F1 1
#   q2 HasAns "blue whale"     / "whale"           na .6  -> EM 0, F1 2*(1*1/2)/(3/2) = 2/3
#   q3 NoAns                   / ""                na .3  -> EM 1, F1 1
#   q4 NoAns                   / "something"       na .8  -> EM 0, F1 0
#   q5 HasAns "Paris"          / "London"          na .9  -> EM 0, F1 0
V2_DATA = dataset_of(("q1", ["Denver Broncos"]), ("q2", ["blue whale"]), ("q3", []), ("q4", []), ("q5", ["Paris"]))
V2_PREDS = {"q1": "Denver Broncos", "q2": "whale", "q3": "", "q4": "something", "q5": "London"}
V2_NA = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.8, "q5": 0.9}


def test_evaluate_v2_without_thresholding():
    result = evaluate_v2(V2_DATA, V2_PREDS)
    assert result == pytest.approx({
        "exact": 100 * 2 / 5, "f1": 100 * (1 + 2 / 3 + 1) / 5, "total": 5,
        "HasAns_exact": 100 * 1 / 3, "HasAns_f1": 100 * (1 + 2 / 3) / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
        "missing": 0,
    })
    assert "best_exact" not in result


def test_evaluate_v2_best_threshold_by_hand():
    # Sweep from "abstain on everything" (q3, q4 right: 2 points, threshold 0), answering in na order:
    #   EM: q1 +1 -> 3 (best, thresh .1), q3 +0 -> 3, q2 +0 -> 3, q4 -1 -> 2, q5 +0 -> 2   => 3/5 at .1
    #   F1: q1 +1 -> 3 (thresh .1), q3 +0, q2 +2/3 -> 11/3 (best, thresh .6), q4 -1, q5 +0 => (11/3)/5 at .6
    result = evaluate_v2(V2_DATA, V2_PREDS, na_probs=V2_NA)
    assert result["best_exact"] == pytest.approx(60.0)
    assert result["best_exact_thresh"] == pytest.approx(0.1)
    assert result["best_f1"] == pytest.approx(100 * (11 / 3) / 5)
    assert result["best_f1_thresh"] == pytest.approx(0.6)
    # With the default threshold 1.0 no na_prob exceeds it, so the main scores are the raw ones.
    assert result["exact"] == pytest.approx(40.0)

    # Applying a threshold abstains where na_prob > thresh: at .6 q4, q5 abstain (q4 right, q5 wrong):
    #   EM q1 1, q2 0, q3 1, q4 1, q5 0 -> 60 ; F1 1 + 2/3 + 1 + 1 + 0 -> (11/3)/5, the best F1 above.
    at_best = evaluate_v2(V2_DATA, V2_PREDS, na_probs=V2_NA, na_prob_thresh=0.6)
    assert at_best["exact"] == pytest.approx(60.0)
    assert at_best["f1"] == pytest.approx(result["best_f1"])
    assert at_best["NoAns_exact"] == 100.0 and at_best["HasAns_exact"] == pytest.approx(100 / 3)
    # evaluate() forwards keyword arguments to v2.
    assert evaluate(V2_DATA, V2_PREDS, "2.0", na_probs=V2_NA, na_prob_thresh=0.6) == at_best


def test_evaluate_v2_abstaining_everywhere_can_be_best():
    # Only wrong answers: answering q1 gains 0, answering n1 ("x" for a no-answer question) loses 1,
    # so the best is to abstain on everything: 1/2 right at threshold 0.
    data = dataset_of(("q1", ["Paris"]), ("n1", []))
    result = evaluate_v2(data, {"q1": "London", "n1": "x"}, na_probs={"q1": 0.2, "n1": 0.5})
    assert result["best_exact"] == pytest.approx(50.0) and result["best_exact_thresh"] == 0.0
    assert result["best_f1"] == pytest.approx(50.0) and result["best_f1_thresh"] == 0.0
    assert result["exact"] == 0.0


def test_evaluate_v2_missing_prediction_scores_zero():
    # n1 is unanswerable; without a prediction it is not an abstention, so it scores 0 (not 1).
    data = dataset_of(("q1", ["Paris"]), ("n1", []))
    result = evaluate_v2(data, {"q1": "paris"})
    assert result["missing"] == 1 and result["total"] == 2
    assert result["exact"] == pytest.approx(50.0) and result["NoAns_exact"] == 0.0


def test_evaluate_v2_gold_that_normalises_to_nothing():
    # Official rule: golds that normalise to "" are dropped; none left -> gold [""] (only "" matches),
    # yet the question still counts as HasAns because its answer list is non-empty.
    data = dataset_of(("q1", ["The", "cat"]), ("q2", ["the"]))
    result = evaluate_v2(data, {"q1": "cat", "q2": ""})
    assert result["exact"] == 100.0 and result["HasAns_total"] == 2 and "NoAns_total" not in result


def test_evaluate_v2_na_probs_must_cover_predictions():
    with pytest.raises(BertrtError, match="q5"):
        evaluate_v2(V2_DATA, V2_PREDS, na_probs={k: v for k, v in V2_NA.items() if k != "q5"})


def test_evaluate_unknown_version_and_empty_dataset():
    with pytest.raises(BertrtError, match="version"):
        evaluate(V2_DATA, V2_PREDS, "3.0")
    with pytest.raises(BertrtError, match="no questions"):
        evaluate_v1([], {})
    with pytest.raises(BertrtError, match="no questions"):
        evaluate_v2([], {})


# ---------------------------------------------------------------------------------------------------------
# Real dev set
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev_data() -> list:
    return load_squad(require(DEV))[1]["data"]


def test_dev_first_gold_scores_100(dev_data):
    preds = {qa["id"]: qa["answers"][0]["text"] for a in dev_data for p in a["paragraphs"] for qa in p["qas"]}
    result = evaluate_v1(dev_data, preds)
    assert result == {"exact_match": 100.0, "f1": 100.0, "total": 10_570, "missing": 0}


def test_dev_empty_predictions_score_0(dev_data):
    preds = {qa["id"]: "" for a in dev_data for p in a["paragraphs"] for qa in p["qas"]}
    result = evaluate_v1(dev_data, preds)
    assert result["f1"] == 0.0 and result["total"] == 10_570 and result["missing"] == 0
    # Not quite 0 EM, as with the official script: 3 dev questions (5725bad5271a42140099d0c1,
    # 5730b7ce069b5314008322c4, 57340d124776f419006617bf) have a gold answer "." that normalises to "",
    # so an empty prediction is an exact match there (while v1.1 F1 of empty vs empty is 0).
    assert result["exact_match"] == pytest.approx(100 * 3 / 10_570)
    assert evaluate_v1(dev_data, {}) == {"exact_match": 0.0, "f1": 0.0, "total": 10_570, "missing": 10_570}
