"""A model file is untrusted input: its metadata reaches onnxruntime and the stages only through allow-lists and
validation, and every rejection is one line with exit code 2 that names what was rejected."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import TENSORRT_PASSAGE, VOCAB
from test_cli import assert_one_line_error, run_cli

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import META_ORT_SESSION_CONFIG

_CONFIG_KEY = "bertrt.config"


@pytest.fixture(scope="module")
def real_model(embedded_onnx) -> onnx.ModelProto:
    return onnx.load(str(embedded_onnx))


def _with_metadata(model: onnx.ModelProto, path: Path, **entries: str) -> Path:
    """A copy of the real export whose metadata entries are replaced (what a hostile model author can write)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [p for p in copy.metadata_props if p.key not in entries]
    del copy.metadata_props[:]
    copy.metadata_props.extend(kept)
    for key, value in entries.items():
        copy.metadata_props.add(key=key, value=value)
    onnx.save(copy, str(path))
    return path


def _infer(capsys, model: Path):
    return run_cli(capsys, "infer", "--model", model, "--vocab", VOCAB, "--passage", TENSORRT_PASSAGE,
                   "--question", "What is TensorRT?")


def test_session_option_that_writes_a_file_is_refused(capsys, real_model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    hostile = {"session.disable_quant_qdq": "1", "ep.context_enable": "1", "ep.context_file_path": str(victim),
               "session.optimized_model_external_initializers_file_name": str(victim)}
    model = _with_metadata(real_model, tmp_path / "hostile.onnx", **{META_ORT_SESSION_CONFIG: json.dumps(hostile)})
    code, out, err = _infer(capsys, model)
    assert_one_line_error(code, err, "hostile.onnx", "refusing onnxruntime session option", "ep.context_enable")
    assert out == ""
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.onnx", "victim.txt"]


@pytest.mark.parametrize("raw, needle", [
    (json.dumps({"session.disable_quant_qdq": "2"}), "refusing value '2'"),
    (json.dumps({"session.disable_quant_qdq": 1}), "refusing value 1"),
    (json.dumps(["session.disable_quant_qdq", "1"]), "must be a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_malformed_session_config_is_refused(capsys, real_model, tmp_path, raw, needle):
    model = _with_metadata(real_model, tmp_path / "m.onnx", **{META_ORT_SESSION_CONFIG: raw})
    code, _, err = _infer(capsys, model)
    assert_one_line_error(code, err, META_ORT_SESSION_CONFIG, needle)


def test_allowed_session_config_still_runs(capsys, real_model, tmp_path):
    """The one entry bertrt writes itself (FP8 artifacts) passes, and the answer is the real one."""
    model = _with_metadata(real_model, tmp_path / "m.onnx",
                           **{META_ORT_SESSION_CONFIG: json.dumps({"session.disable_quant_qdq": "1"})})
    code, out, _ = _infer(capsys, model)
    assert code == 0 and "a high performance deep learning inference platform" in out


_REAL = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
         "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2, "gelu": "erf",
         "layer_norm_eps": 1e-12}


def _stored(**changes) -> str:
    return json.dumps({**_REAL, **changes})


@pytest.mark.parametrize("raw, needle", [
    ("{\"vocab_size\": ", "not valid JSON"),
    ("[1, 2, 3]", "must be a JSON object, not list"),
    (_stored(hidden_size=float("inf")), "not valid JSON"),  # json.dumps writes Infinity
    (_stored(layer_norm_eps=float("nan")), "not valid JSON"),
    (_stored(hidden_size=10**9), "hidden_size = 1000000000 is outside"),
    (_stored(num_hidden_layers=0), "num_hidden_layers = 0 is outside"),
    (_stored(hidden_size=64.9), "hidden_size must be an integer, not 64.9"),
    (_stored(hidden_size=True), "hidden_size must be an integer, not True"),
    (_stored(max_position_embeddings="384"), "max_position_embeddings must be an integer, not '384'"),
    (_stored(layer_norm_eps=-1), "layer_norm_eps must be a number"),
    (_stored(gelu="relu", hidden_act=["gelu"]), "hidden_act must be a string"),
])
def test_stored_bert_config_is_validated(capsys, real_model, tmp_path, raw, needle):
    model = _with_metadata(real_model, tmp_path / "m.onnx", **{_CONFIG_KEY: raw})
    code, out, err = _infer(capsys, model)
    assert_one_line_error(code, err, "m.onnx", needle)
    assert out == ""


def test_integral_float_sizes_are_accepted():
    """768.0 is an integer written by a JSON tool that has no ints; it is not coerced from anything lossy."""
    assert BertConfig.from_dict({**_REAL, "hidden_size": 384.0}).hidden_size == 384


def test_bert_config_file_rejects_non_json_constants(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(_stored(hidden_size=float("inf")))
    with pytest.raises(BertrtError, match="not a JSON config"):
        BertConfig.from_json(path)
