"""SQuAD examples: the unit every stage after export consumes (questions over a context)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, parse_json, read_bytes
from bertrt.messages import shown


@dataclass
class Example:
    qas_id: str
    question: str
    context: str
    # Gold answers as in the SQuAD file: [{"text": str, "answer_start": int}, ...]; empty for unanswerable.
    answers: list[dict] = field(default_factory=list)
    is_impossible: bool = False


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def _error(path: str | os.PathLike[str], what: str) -> BertrtError:
    # One line, always: the CLI prints the message as is, so flatten anything multi-line that slipped in.
    return BertrtError(" ".join(f"{os.fspath(path)}: {what}".split()))


def _read_json(path: str | os.PathLike[str]) -> Any:
    """Parse `path` as JSON, gunzipping it first when it is gzip (by its magic bytes, not its name); only a regular
    file, at most inputs.LIMITS["squad"] bytes (also after decompression)."""
    raw = read_bytes(path, LIMITS["squad"], "SQuAD file")
    try:
        # json.loads on bytes detects UTF-8/16/32 itself, as json.load on the official files expects.
        return parse_json(raw, f"{shown(path)}: not SQuAD JSON")
    except UnicodeDecodeError as e:
        raise _error(path, f"not SQuAD JSON: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise _error(path, f"not SQuAD JSON: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _examples_from(dataset: Any, path: str | os.PathLike[str]) -> list[Example]:
    """Validate the SQuAD structure and flatten it into examples in file order."""

    def bad(where: str, what: str) -> BertrtError:
        return _error(path, f"not SQuAD JSON: {where}{what}")

    if not isinstance(dataset, dict):
        raise bad("", f"top level is a JSON {_type_name(dataset)}, expected an object with a 'data' list")
    if "data" not in dataset:
        raise bad("", "top-level object has no 'data' key")
    articles = dataset["data"]
    if not isinstance(articles, list):
        raise bad("", f"'data' is a {_type_name(articles)}, expected a list of articles")

    examples: list[Example] = []
    seen_ids: set[str] = set()
    for a, article in enumerate(articles):
        where_a = f"article {a} "
        if not isinstance(article, dict):
            raise bad(where_a, f"is a {_type_name(article)}, expected an object")
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise bad(where_a, "has no 'paragraphs' list" if paragraphs is None
                      else f"'paragraphs' is a {_type_name(paragraphs)}, expected a list")
        for p, paragraph in enumerate(paragraphs):
            where_p = f"{where_a}paragraph {p} "
            if not isinstance(paragraph, dict):
                raise bad(where_p, f"is a {_type_name(paragraph)}, expected an object")
            if "context" not in paragraph:
                raise bad(where_p, "has no 'context'")
            context = paragraph["context"]
            if not isinstance(context, str):
                raise bad(where_p, f"'context' is a {_type_name(context)}, expected a string")
            if "qas" not in paragraph:
                raise bad(where_p, "has no 'qas'")
            qas = paragraph["qas"]
            if not isinstance(qas, list):
                raise bad(where_p, f"'qas' is a {_type_name(qas)}, expected a list")
            for q, qa in enumerate(qas):
                where_q = f"{where_p}question {q} "
                if not isinstance(qa, dict):
                    raise bad(where_q, f"is a {_type_name(qa)}, expected an object")
                for key in ("id", "question", "answers"):
                    if key not in qa:
                        raise bad(where_q, f"has no '{key}'")
                qid, question, answers = qa["id"], qa["question"], qa["answers"]
                if not isinstance(qid, str) or not qid:
                    raise bad(where_q, f"'id' is {qid!r}, expected a non-empty string")
                where_q = f"{where_p}question {q} (id {qid!r}) "
                if not isinstance(question, str):
                    raise bad(where_q, f"'question' is a {_type_name(question)}, expected a string")
                if not isinstance(answers, list):
                    raise bad(where_q, f"'answers' is a {_type_name(answers)}, expected a list")
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise bad(where_q, f"'is_impossible' is a {_type_name(impossible)}, expected true/false")
                if impossible and answers:
                    # v2.0 marks unanswerable questions with an empty answer list; the scorer relies on it.
                    raise bad(where_q, "is_impossible but has answers")
                gold = []
                for n, answer in enumerate(answers):
                    where_n = f"{where_q}answer {n} "
                    if not isinstance(answer, dict):
                        raise bad(where_n, f"is a {_type_name(answer)}, expected an object")
                    text, start = answer.get("text"), answer.get("answer_start")
                    if not isinstance(text, str):
                        raise bad(where_n, "has no 'text' string")
                    # bool is an int subclass; a true/false offset is a broken file, not offset 0/1.
                    if not isinstance(start, int) or isinstance(start, bool):
                        raise bad(where_n, "has no integer 'answer_start'")
                    gold.append({"text": text, "answer_start": start})
                # Predictions and scores are keyed by id, so a repeated id would silently merge two questions.
                if qid in seen_ids:
                    raise bad(where_q, "repeats an id used by an earlier question")
                seen_ids.add(qid)
                examples.append(Example(qas_id=qid, question=question, context=context, answers=gold,
                                        is_impossible=impossible))
    if not examples:
        raise _error(path, "not SQuAD JSON: it holds no questions")
    return examples


def load_squad(path: str | os.PathLike[str]) -> tuple[list[Example], dict]:
    """Read a SQuAD v1.1 or v2.0 file (plain JSON or gzip-compressed) and validate its structure.

    Returns the examples in file order (article, paragraph, question) and the raw dataset dict; the
    official-style scorers in `squad_metrics` take its `data` list. Any problem with the file raises
    BertrtError with one line naming the file and what is wrong.
    """
    dataset = _read_json(path)
    examples = _examples_from(dataset, path)
    version = dataset.get("version")
    if version is not None and not isinstance(version, str):
        raise _error(path, f"not SQuAD JSON: 'version' is a {_type_name(version)}, expected a string")
    try:
        detect_version(dataset)
    except BertrtError as e:
        raise _error(path, str(e)) from None
    return examples, dataset


def detect_version(dataset: dict) -> str:
    """"1.1" or "2.0" for a (validated) SQuAD dataset dict.

    The `version` field decides when it names 1.x or 2.x (official files carry it); otherwise the file is
    2.0 if any question carries an `is_impossible` key (only v2.0 has them), else 1.1. A 1.x file with an
    unanswerable question is contradictory and raises BertrtError.
    """
    has_impossible_key = False
    any_impossible = False
    for article in dataset.get("data", []):
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                if "is_impossible" in qa:
                    has_impossible_key = True
                    any_impossible = any_impossible or bool(qa["is_impossible"])
    field_value = str(dataset.get("version") or "").strip().lower().removeprefix("v")
    if field_value.startswith("2"):
        return "2.0"
    if field_value.startswith("1"):
        if any_impossible:
            raise BertrtError(f"version {dataset['version']!r} but has unanswerable (is_impossible) questions, "
                              "which only SQuAD 2.0 has")
        return "1.1"
    return "2.0" if has_impossible_key else "1.1"


def select_examples(examples: Sequence[Example], limit: int | None = None) -> list[Example]:
    """The first `limit` examples in file order (all of them when `limit` is None or exceeds the count).

    A prefix rather than a random sample so a subset run is reproducible and its questions are whole
    articles/paragraphs as far as the limit allows.
    """
    if limit is None:
        return list(examples)
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise BertrtError(f"example limit must be a whole number, got {limit!r}")
    if limit < 1:
        raise BertrtError(f"example limit must be at least 1, got {limit}")
    return list(examples[:limit])
