"""Loading and validating SQuAD files (bertrt.qa.squad_data)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest
from bertrt.qa.squad_data import Example, detect_version, load_squad, select_examples
from conftest import DEV, DEV_SHA256, SHARED, require

from bertrt.errors import BertrtError


def squad_file(name: str) -> Path:
    return require(SHARED / "data" / "squad" / name)


def tiny_v1() -> dict:
    return {
        "version": "1.1",
        "data": [
            {"title": "A", "paragraphs": [
                {"context": "Denver Broncos won Super Bowl 50.",
                 "qas": [
                     {"id": "q1", "question": "Who won?",
                      "answers": [{"text": "Denver Broncos", "answer_start": 0},
                                  {"text": "Broncos", "answer_start": 7, "extra": "ignored"}]},
                     {"id": "q2", "question": "Which Super Bowl?",
                      "answers": [{"text": "Super Bowl 50", "answer_start": 19}]},
                 ]},
                {"context": "The cat sat on the mat.",
                 "qas": [{"id": "q3", "question": "Where did the cat sit?",
                          "answers": [{"text": "the mat", "answer_start": 15}]}]},
            ]},
            {"title": "B", "paragraphs": [
                {"context": "Paris is the capital of France.",
                 "qas": [{"id": "q4", "question": "Capital of France?",
                          "answers": [{"text": "Paris", "answer_start": 0}]}]},
            ]},
        ],
    }


def tiny_v2() -> dict:
    return {
        "version": "v2.0",
        "data": [{"title": "A", "paragraphs": [
            {"context": "Paris is the capital of France.",
             "qas": [
                 {"id": "h1", "question": "Capital of France?", "is_impossible": False,
                  "answers": [{"text": "Paris", "answer_start": 0}]},
                 {"id": "n1", "question": "Capital of Mars?", "is_impossible": True, "answers": [],
                  "plausible_answers": [{"text": "Paris", "answer_start": 0}]},
             ]},
        ]}],
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------------------

def test_dev_v11_loads():
    examples, dataset = load_squad(DEV)
    assert len(examples) == 10_570
    assert len(dataset["data"]) == 48
    assert detect_version(dataset) == "1.1"
    first = examples[0]
    assert first.qas_id == "56be4db0acb8001400a502ec"
    assert first.answers[0] == {"text": "Denver Broncos", "answer_start": 177}
    assert first.context[177:177 + len("Denver Broncos")] == "Denver Broncos"
    assert not any(e.is_impossible for e in examples)
    assert all(e.answers for e in examples)
    # File order: the examples follow the articles/paragraphs/qas nesting.
    flat = [qa["id"] for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert [e.qas_id for e in examples] == flat


def test_shipped_dev_is_the_official_file():
    """data/squad/dev-v1.1.json.gz decompresses to the official SQuAD v1.1 dev file (data/README.md's sha256),
    and the installed package finds the same file (bertrt.resources)."""
    import hashlib

    from bertrt.resources import squad_dev

    assert hashlib.sha256(gzip.decompress(DEV.read_bytes())).hexdigest() == DEV_SHA256
    assert squad_dev().resolve() == DEV.resolve()
    assert DEV.stat().st_size < 2_000_000


def test_train_gz_loads():
    examples, dataset = load_squad(squad_file("train-v1.1.reconstructed.json.gz"))
    assert len(examples) == 87_599
    assert len(dataset["data"]) == 442
    assert detect_version(dataset) == "1.1"
    assert len({e.qas_id for e in examples}) == 87_599


# ---------------------------------------------------------------------------------------------------------
# Small synthetic files
# ---------------------------------------------------------------------------------------------------------

def test_example_dataclass_unchanged():
    assert [f.name for f in dataclasses.fields(Example)] == ["qas_id", "question", "context", "answers",
                                                            "is_impossible"]
    assert Example("i", "q", "c").answers == [] and Example("i", "q", "c").is_impossible is False


def test_tiny_v1_plain_and_gzip_agree(tmp_path):
    data = tiny_v1()
    plain = write_json(tmp_path / "tiny.json", data)
    gz = tmp_path / "tiny.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(data).encode()))
    ex_plain, ds_plain = load_squad(plain)
    ex_gz, ds_gz = load_squad(str(gz))  # str paths work too
    assert ex_plain == ex_gz and ds_plain == ds_gz == data
    assert [e.qas_id for e in ex_plain] == ["q1", "q2", "q3", "q4"]
    assert ex_plain[2] == Example(qas_id="q3", question="Where did the cat sit?", context="The cat sat on the mat.",
                                  answers=[{"text": "the mat", "answer_start": 15}], is_impossible=False)
    # Answers keep only text/answer_start.
    assert ex_plain[0].answers[1] == {"text": "Broncos", "answer_start": 7}


def test_tiny_v2(tmp_path):
    examples, dataset = load_squad(write_json(tmp_path / "v2.json", tiny_v2()))
    assert detect_version(dataset) == "2.0"
    assert [(e.qas_id, e.is_impossible, e.answers) for e in examples] == [
        ("h1", False, [{"text": "Paris", "answer_start": 0}]), ("n1", True, [])]


@pytest.mark.parametrize("dataset, expected", [
    ({"version": "1.1", "data": []}, "1.1"),
    ({"version": "2.0", "data": []}, "2.0"),
    ({"version": "v2.0", "data": []}, "2.0"),
    # No version field: decided by whether questions carry is_impossible.
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": []}]}]}]}, "1.1"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": [], "is_impossible": False}]}]}]},
     "2.0"),
])
def test_detect_version(dataset, expected):
    assert detect_version(dataset) == expected


def test_detect_version_contradiction():
    ds = {"version": "1.1",
          "data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": [], "is_impossible": True}]}]}]}
    with pytest.raises(BertrtError, match="is_impossible"):
        detect_version(ds)


def test_select_examples():
    examples = [Example(str(i), "q", "c") for i in range(5)]
    assert select_examples(examples) == examples
    assert select_examples(examples) is not examples
    assert [e.qas_id for e in select_examples(examples, 2)] == ["0", "1"]
    assert select_examples(examples, 1) == examples[:1]
    assert select_examples(examples, 99) == examples
    for bad in (0, -3, True, 2.5):
        with pytest.raises(BertrtError):
            select_examples(examples, bad)


# ---------------------------------------------------------------------------------------------------------
# Malformed input: always BertrtError, one line, naming the file
# ---------------------------------------------------------------------------------------------------------

def _drop(d: dict, key: str) -> dict:
    del d[key]
    return d


def _qa(data: dict, a=0, p=0, q=0) -> dict:
    return data["data"][a]["paragraphs"][p]["qas"][q]


def _mutated(fn):
    data = tiny_v1()
    fn(data)
    return data


MALFORMED_JSON = {
    "json_list": ([tiny_v1()], "top level is a JSON list"),
    "no_data": ({"version": "1.1"}, "no 'data'"),
    "data_not_list": ({"data": {"x": 1}}, "'data' is a dict"),
    "no_paragraphs": ({"data": [{"title": "x"}]}, "article 0 has no 'paragraphs'"),
    "no_context": (_mutated(lambda d: _drop(d["data"][1]["paragraphs"][0], "context")),
                   "article 1 paragraph 0 has no 'context'"),
    "context_not_str": (_mutated(lambda d: d["data"][0]["paragraphs"][1].update(context=7)),
                        "article 0 paragraph 1 'context' is a int"),
    "no_qas": (_mutated(lambda d: _drop(d["data"][0]["paragraphs"][0], "qas")), "has no 'qas'"),
    "no_question": (_mutated(lambda d: _drop(_qa(d, 0, 0, 1), "question")),
                    "article 0 paragraph 0 question 1 has no 'question'"),
    "no_id": (_mutated(lambda d: _drop(_qa(d, 1), "id")), "has no 'id'"),
    "no_answers": (_mutated(lambda d: _drop(_qa(d), "answers")), "has no 'answers'"),
    "answers_not_list": (_mutated(lambda d: _qa(d).update(answers="Denver")), "'answers' is a str"),
    "answer_without_text": (_mutated(lambda d: _qa(d)["answers"][0].pop("text")), "answer 0 has no 'text'"),
    "answer_start_str": (_mutated(lambda d: _qa(d)["answers"][1].update(answer_start="7")),
                         "answer 1 has no integer 'answer_start'"),
    "impossible_not_bool": (_mutated(lambda d: _qa(d).update(is_impossible="no")), "'is_impossible' is a str"),
    "impossible_with_answers": (_mutated(lambda d: _qa(d).update(is_impossible=True)),
                                "is_impossible but has answers"),
    "duplicate_id": (_mutated(lambda d: _qa(d, 1).update(id="q1")), "repeats an id"),
    "zero_questions": ({"version": "1.1", "data": [{"paragraphs": [{"context": "c", "qas": []}]}]}, "no questions"),
    "version_not_str": (_mutated(lambda d: d.update(version=1.1)), "'version' is a float"),
    "v1_with_impossible": (_mutated(lambda d: d["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "n", "question": "?", "answers": [], "is_impossible": True})), "unanswerable"),
}


def _assert_one_line_naming(err: BertrtError, path: Path, fragment: str):
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg
    assert path.name in msg
    assert fragment in msg


@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
def test_malformed_structure(tmp_path, case):
    data, fragment = MALFORMED_JSON[case]
    path = write_json(tmp_path / f"{case}.json", data)
    with pytest.raises(BertrtError) as info:
        load_squad(path)
    _assert_one_line_naming(info.value, path, fragment)


def test_not_json(tmp_path):
    path = tmp_path / "notes.json"
    path.write_text("this is not\njson at all\n")
    with pytest.raises(BertrtError) as info:
        load_squad(path)
    _assert_one_line_naming(info.value, path, "not SQuAD JSON")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"data": "\xe9\xe9\xe9"}')
    with pytest.raises(BertrtError) as info:
        load_squad(path)
    _assert_one_line_naming(info.value, path, "not SQuAD JSON")


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(json.dumps(tiny_v1()).encode())
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(good[:10] + b"\x00garbage-not-deflate" * 8)
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(good[: len(good) // 2])
    for path in (garbage, truncated):
        with pytest.raises(BertrtError) as info:
            load_squad(path)
        _assert_one_line_naming(info.value, path, "gzip")


def test_gz_name_with_plain_content_is_fine(tmp_path):
    # Compression is detected from the content, so a mislabelled plain file still loads.
    examples, _ = load_squad(write_json(tmp_path / "plain.json.gz", tiny_v1()))
    assert len(examples) == 4


def test_unreadable(tmp_path):
    for path in (tmp_path / "missing.json", tmp_path):
        with pytest.raises(BertrtError) as info:
            load_squad(path)
        _assert_one_line_naming(info.value, path, "cannot read")
