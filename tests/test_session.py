"""The QA session (bertrt.session.QASession) and the API around it: one object for infer, squad and serving, and the
output-versus-input checks inside the functions, so a notebook is protected as the CLI is."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import DEV, EMBEDDED, TENSORRT_PASSAGE, VOCAB, read_dev, require

from bertrt import api
from bertrt.cli import main
from bertrt.errors import BertrtError
from bertrt.session import QASession, RunOptions, SquadParams


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_dev(tmp_path) -> Path:
    """The first article of SQuAD dev, copied (the file a wrong output would destroy)."""
    require(DEV)
    data = read_dev()
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"version": data["version"], "data": data["data"][:1]}))
    return path


@pytest.fixture
def model_copy(embedded_onnx, tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    shutil.copy2(embedded_onnx, path)
    return path


def test_session_answers_like_infer_and_is_the_api_answerer(capsys, embedded_onnx):
    assert api.QuestionAnswerer is QASession and api.SquadParams is SquadParams
    assert main(["infer", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--passage", TENSORRT_PASSAGE,
                 "--question", "What is TensorRT?", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    with QASession(embedded_onnx, VOCAB, options=RunOptions(threads=1), batch_size=2) as qa:
        assert (qa.options.threads, qa.batch_size) == (1, 2)  # keyword fields replace those of `options`
        (answer,) = qa.answer(TENSORRT_PASSAGE, ["What is TensorRT?"])
        probs = qa.token_probabilities(TENSORRT_PASSAGE, "What is TensorRT?")
    assert answer.text == row["answer"] and answer.score == pytest.approx(row["score"], abs=1e-4)
    assert answer.nbest and probs.answer.text == answer.text
    with pytest.raises(BertrtError, match="closed"):
        qa.answer(TENSORRT_PASSAGE, ["What is TensorRT?"])


def test_session_refuses_options_of_the_wrong_type(embedded_onnx):
    with pytest.raises(BertrtError, match="options must be RunOptions"):
        QASession(embedded_onnx, VOCAB, options={"provider": "cpu"})
    with pytest.raises(BertrtError, match="batch size must be at least 1"):
        QASession(embedded_onnx, VOCAB, batch_size=0)


@pytest.mark.parametrize("victim", ["squad_json", "model", "vocab"])
def test_session_squad_refuses_to_overwrite_an_input(embedded_onnx, small_dev, tmp_path, victim):
    vocab = tmp_path / "vocab.txt"
    shutil.copy2(VOCAB, vocab)
    model = tmp_path / "model.onnx"
    shutil.copy2(embedded_onnx, model)
    target = {"squad_json": small_dev, "model": model, "vocab": vocab}[victim]
    before = _digest(target)
    with QASession(model, vocab) as qa:
        with pytest.raises(BertrtError, match="the output would overwrite the input"):
            qa.squad(small_dev, target)
    assert _digest(target) == before
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.squad_scores(model, small_dev, vocab, target)
    assert _digest(target) == before


def test_perf_refuses_to_overwrite_a_model(model_copy):
    before = _digest(model_copy)
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.perf([model_copy], [1], [8], output=model_copy, runs=1)
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.perf_gpu([model_copy], [], [1], [8], output=model_copy, runs=1, peers=False)
    assert _digest(model_copy) == before


def test_stage_functions_refuse_to_overwrite_their_input(model_copy, tmp_path):
    """export, surgery and quantize check inside their stage functions (api calls the same ones as the CLI)."""
    before = _digest(model_copy)
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.fuse(model_copy, model_copy, target="ort")
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.quantize(model_copy, model_copy, "fp16")
    assert _digest(model_copy) == before
    ckpt = tmp_path / "ckpt"
    shutil.copytree(EMBEDDED, ckpt)
    config = ckpt / "bert_config.json"
    config_before = _digest(config)
    with pytest.raises(BertrtError, match="the output would overwrite the input"):
        api.export_model(ckpt, config)
    assert _digest(config) == config_before


def test_squad_params_live_in_the_session_layer():
    from bertrt.session.answering import SquadParams as Defined

    assert SquadParams is Defined and SquadParams().max_seq_length == 384
