"""SQuAD scoring: our own implementation of the official v1.1 and v2.0 evaluation scripts.

The numbers must be comparable with published results, so the semantics follow `evaluate-v1.1.py` and
`evaluate-v2.0.py` exactly (normalisation, token-overlap F1, max over gold answers, the v2.0 no-answer
threshold and best-threshold search). Where the official scripts crash instead (a question without a
prediction in v2.0, an unanswerable question scored as v1.1) we score 0 or raise BertrtError; see each
function. All scores are percentages (0..100) except the per-question `*_score`/`compute_*` values (0..1).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from bertrt.errors import BertrtError

_PUNCTUATION = frozenset(string.punctuation)  # ASCII punctuation only, as the official scripts use
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# ---------------------------------------------------------------------------------------------------------
# Shared normalisation
# ---------------------------------------------------------------------------------------------------------

def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    The order matters and is the official one: punctuation goes before articles, so "the-cat" -> "thecat"
    keeps its article glued on, while "the, cat" -> "cat".
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # Multiset intersection: a token counts as often as it appears in both, not once.
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _articles(dataset_data: Any) -> list:
    # Accept the `data` list (what the official scripts pass around) or the whole dataset dict.
    if isinstance(dataset_data, Mapping):
        if "data" not in dataset_data:
            raise BertrtError("SQuAD dataset has no 'data' list to score against")
        dataset_data = dataset_data["data"]
    if not isinstance(dataset_data, list):
        raise BertrtError(f"SQuAD dataset 'data' is a {type(dataset_data).__name__}, expected a list of articles")
    return dataset_data


def _questions(dataset_data: Any) -> Iterator[dict]:
    for article in _articles(dataset_data):
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def _prediction(predictions: Mapping[str, Any], qid: str) -> str | None:
    pred = predictions.get(qid)
    if pred is not None and not isinstance(pred, str):
        raise BertrtError(f"prediction for question {qid!r} is a {type(pred).__name__}, expected a string")
    return pred


# ---------------------------------------------------------------------------------------------------------
# SQuAD v1.1 (evaluate-v1.1.py)
# ---------------------------------------------------------------------------------------------------------

def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalised strings (v1.1: two empty strings score 0, unlike v2.0)."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def evaluate_v1(dataset_data: Any, predictions: Mapping[str, str]) -> dict:
    """Official v1.1 scores: each question scores its best match over all gold answers.

    A question without a prediction scores 0 and is counted in `missing` (the official script does the
    same, printing a message). Predictions for ids not in the dataset are ignored.
    """
    total = missing = 0
    exact = f1 = 0.0
    for qa in _questions(dataset_data):
        total += 1
        qid = qa["id"]
        golds = [a["text"] for a in qa["answers"]]
        if not golds:
            # The official script crashes here (max of nothing); such questions only exist in v2.0.
            raise BertrtError(f"question {qid!r} has no gold answers (a SQuAD 2.0 unanswerable question?); "
                              "score this dataset as version 2.0")
        pred = _prediction(predictions, qid)
        if pred is None:
            missing += 1
            continue
        exact += max(float(exact_match_score(pred, g)) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    if total == 0:
        raise BertrtError("SQuAD dataset has no questions to score")
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total, "total": total, "missing": missing}


# ---------------------------------------------------------------------------------------------------------
# SQuAD v2.0 (evaluate-v2.0.py)
# ---------------------------------------------------------------------------------------------------------

def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """v2.0 F1: if either side normalises to nothing, 1 when both do (a correct no-answer), else 0."""
    gold_toks, pred_toks = _tokens(a_gold), _tokens(a_pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    return _token_f1(pred_toks, gold_toks)


def _raw_scores_v2(dataset_data: Any, predictions: Mapping[str, str]
                   ) -> tuple[dict[str, bool], dict[str, float], dict[str, float], dict[str, str]]:
    """Per-question (has_ans, exact, f1, pred) before any no-answer threshold; scores only for predicted ids."""
    has_ans: dict[str, bool] = {}
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    preds: dict[str, str] = {}
    for qa in _questions(dataset_data):
        qid = qa["id"]
        has_ans[qid] = bool(qa["answers"])
        # Gold answers that normalise to nothing are dropped; a question left with none is a no-answer
        # question whose only correct prediction is the empty string.
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        pred = _prediction(predictions, qid)
        if pred is None:
            continue
        preds[qid] = pred
        exact[qid] = float(max(compute_exact(g, pred) for g in golds))
        f1[qid] = max(compute_f1(g, pred) for g in golds)
    return has_ans, exact, f1, preds


def _apply_no_ans_threshold(scores: dict[str, float], na_probs: Mapping[str, float], has_ans: dict[str, bool],
                            thresh: float) -> dict[str, float]:
    # Above the threshold the system abstains: right exactly when the question has no answer.
    return {qid: (float(not has_ans[qid]) if na_probs[qid] > thresh else s) for qid, s in scores.items()}


def _find_best_thresh(preds: dict[str, str], scores: dict[str, float], na_probs: Mapping[str, float],
                      has_ans: dict[str, bool], total: int) -> tuple[float, float]:
    """Sweep the no-answer threshold upward through the na_probs, as the official find_best_thresh does.

    Start from "abstain on everything" (every predicted no-answer question right, 0 threshold), then answer
    questions in increasing na_prob order: an answerable question gains its score, an unanswerable one
    loses its point if the system's answer is non-empty. Keep the first threshold reaching the best total.
    Ties in na_prob are walked in na_probs' order one question at a time, as the official script does.
    """
    cur = best = float(sum(1 for qid in scores if not has_ans[qid]))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):  # stable: ties keep na_probs' order
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif preds[qid]:  # raw string, as the official script tests it (not the normalised one)
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / total, best_thresh


def evaluate_v2(dataset_data: Any, predictions: Mapping[str, str], na_probs: Mapping[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict:
    """Official v2.0 scores, with the HasAns/NoAns split and, given `na_probs`, the best-threshold search.

    `na_probs[qid]` is the system's probability (or any score) that the question has no answer; with
    na_prob > na_prob_thresh the prediction counts as "no answer". Without na_probs, nothing is thresholded.
    Unlike the official script (which crashes), a question without a prediction scores 0 everywhere
    (it is neither answered nor abstained on) and is counted in `missing`; with every question predicted
    the numbers are the official ones.
    """
    has_ans, exact_raw, f1_raw, preds = _raw_scores_v2(dataset_data, predictions)
    total = len(has_ans)
    if total == 0:
        raise BertrtError("SQuAD dataset has no questions to score")
    given_probs = na_probs is not None
    if na_probs is None:
        na_probs = {qid: 0.0 for qid in preds}
    else:
        lacking = [qid for qid in preds if qid not in na_probs]
        if lacking:
            raise BertrtError(f"no-answer probabilities lack {len(lacking)} predicted question(s), "
                              f"e.g. {lacking[0]!r}")
        na_probs = {qid: float(p) for qid, p in na_probs.items()}

    exact = _apply_no_ans_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1 = _apply_no_ans_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)

    def summary(qids: list[str]) -> tuple[float, float, int]:
        # Missing predictions are absent from the score dicts and so contribute 0.
        n = len(qids)
        return (100.0 * sum(exact.get(q, 0.0) for q in qids) / n,
                100.0 * sum(f1.get(q, 0.0) for q in qids) / n, n)

    result: dict[str, Any] = {}
    result["exact"], result["f1"], result["total"] = summary(list(has_ans))
    has_ans_qids = [q for q, v in has_ans.items() if v]
    no_ans_qids = [q for q, v in has_ans.items() if not v]
    # As in the official output, a split appears only when the dataset has questions of that kind.
    if has_ans_qids:
        result["HasAns_exact"], result["HasAns_f1"], result["HasAns_total"] = summary(has_ans_qids)
    if no_ans_qids:
        result["NoAns_exact"], result["NoAns_f1"], result["NoAns_total"] = summary(no_ans_qids)
    if given_probs:
        # The search uses the raw (unthresholded) scores: it picks its own threshold.
        best = _find_best_thresh(preds, exact_raw, na_probs, has_ans, total)
        result["best_exact"], result["best_exact_thresh"] = best
        best = _find_best_thresh(preds, f1_raw, na_probs, has_ans, total)
        result["best_f1"], result["best_f1_thresh"] = best
    result["missing"] = total - len(preds)
    return result


# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------

def evaluate(dataset_data: Any, predictions: Mapping[str, str], version: str, **kw: Any) -> dict:
    """Score with the v1.1 or v2.0 rules; `version` as returned by squad_data.detect_version ("1.1"/"2.0").

    Extra keyword arguments go to the version's scorer (na_probs / na_prob_thresh are v2.0 only).
    """
    v = str(version).strip().lower().removeprefix("v")
    if v in ("1.1", "1"):
        return evaluate_v1(dataset_data, predictions, **kw)
    if v in ("2.0", "2"):
        return evaluate_v2(dataset_data, predictions, **kw)
    raise BertrtError(f"unknown SQuAD version {version!r}: expected '1.1' or '2.0'")
