"""The Triton Python model (serve/python_model.py) run in this process, in both serving modes, on the real embedded
export: `triton_python_backend_utils` (which exists only inside Triton's stub) is a small stand-in put into
sys.modules, and in BLS mode its InferenceRequest.exec runs the tensor model with onnxruntime, as Triton's
onnxruntime backend would. Every answer must equal `bertrt infer`'s."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from conftest import TENSORRT_PASSAGE, VOCAB

from bertrt.cli import main

QUESTIONS = ["What is TensorRT?", "What does TensorRT deliver?", "What is NVIDIA open-sourcing?",
             "What do the plugins support?"]
OTHER_PASSAGE = ("The Amazon rainforest covers much of the Amazon basin of South America. The basin covers seven "
                 "million square kilometres, of which five and a half million are covered by the rainforest.")
OTHER_QUESTION = "How much of the basin is covered by the rainforest?"


class _Tensor:
    def __init__(self, name: str, array):
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _TritonError:
    """As the Python backend's stub defines it (c_python_backend_utils.TritonError, also in the stub that
    nvidia-pytriton 0.7.0 bundles): a message and a code, INTERNAL unless given (HTTP 500; INVALID_ARG is 400)."""
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL):
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self._outputs, self._error = list(output_tensors or []), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error

    def output_tensors(self):
        return self._outputs


class _Request:
    """A request as execute receives it, and a BLS request (exec runs the named model of `_MODELS`)."""

    def __init__(self, inputs=(), model_name: str = "", requested_output_names=()):
        self._inputs, self.model_name, self.requested = list(inputs), model_name, list(requested_output_names)

    def inputs(self):
        return self._inputs

    def exec(self):
        return _MODELS[self.model_name](self)


_MODELS: dict = {}


def _by_name(tensors, name):
    return next((t for t in tensors if t.name() == name), None)


def _fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.TritonError, pb.InferenceResponse, pb.InferenceRequest = _Tensor, _TritonError, _Response, _Request
    pb.get_input_tensor_by_name = lambda request, name: _by_name(request.inputs(), name)
    pb.get_output_tensor_by_name = lambda response, name: _by_name(response.output_tensors(), name)
    return pb


def _text_tensor(name: str, values: list[str | bytes]) -> _Tensor:
    return _Tensor(name, np.array([[v.encode() if isinstance(v, str) else v] for v in values], dtype=np.object_))


def _request(passages: list, questions: list) -> _Request:
    return _Request([_text_tensor("passage", passages), _text_tensor("question", questions)])


@pytest.fixture
def pb_utils(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    _MODELS.clear()
    yield sys.modules["triton_python_backend_utils"]
    _MODELS.clear()


def _tensor_model(model_path, seen: list):
    """Triton's onnxruntime backend, in this process: the tensor model of a BLS repository."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def run(request: _Request) -> _Response:
        feed = {t.name(): t.as_numpy() for t in request.inputs()}
        assert {a.dtype for a in feed.values()} == {np.dtype(np.int32)}
        seen.append(feed["input_ids"].shape)
        outputs = session.run(request.requested, feed)
        return _Response([_Tensor(n, o) for n, o in zip(request.requested, outputs)])

    return run


def _initialize(repository):
    """TritonPythonModel.initialize as the Python backend calls it: the config as JSON, the model's directory."""
    from google.protobuf.json_format import MessageToDict

    from bertrt.serve.python_model import TritonPythonModel
    from bertrt.serve.repository import read_config

    config = MessageToDict(read_config(repository / "bertrt_qa" / "config.pbtxt"), preserving_proto_field_name=True)
    model = TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repository / "bertrt_qa")})
    return model


def _infer(capsys, model, passage: str, questions: list[str], *flags) -> list[dict]:
    # onnxruntime (FP32), named: the CPU default is OpenVINO (bf16 where the CPU has it), whose scores differ from
    # the served runtimes' beyond infer's rounding; the served side names its runtime too.
    argv = ["infer", "--model", str(model), "--vocab", str(VOCAB), "--passage", passage, "--json",
            "--runtime", "onnxruntime", *flags]
    for q in questions:
        argv += ["--question", q]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _answers(response) -> list[tuple[str, float]]:
    assert not response.has_error(), response.error().message()
    texts = _by_name(response.output_tensors(), "answer").as_numpy()
    scores = _by_name(response.output_tensors(), "score").as_numpy()
    assert texts.shape == scores.shape == (texts.shape[0], 1) and scores.dtype == np.float32
    return [(t.decode(), float(s)) for t, s in zip(texts[:, 0], scores[:, 0])]


@pytest.mark.parametrize("mode", ["local", "bls"])
def test_execute_answers_equal_infer_in_both_modes(capsys, embedded_onnx, tmp_path, pb_utils, mode):
    """One execute call with what the dynamic batcher may hand over: single questions, a request of two rows, two
    passages, and bad requests among them (each fails alone, naming its problem)."""
    repository = tmp_path / "repo"
    # local: the session runs onnxruntime, as _infer does (named: the CPU default is OpenVINO); bls: the tensor
    # model runs in Triton's onnxruntime backend (here, _tensor_model)
    flags = ["--bls", "--buckets", "128,384"] if mode == "bls" else ["--runtime", "onnxruntime"]
    assert main(["triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--output", str(repository),
                 "--batch-size", "4", *flags]) == 0
    capsys.readouterr()
    seen: list = []
    if mode == "bls":
        _MODELS["bertrt_qa_tensor"] = _tensor_model(repository / "bertrt_qa_tensor" / "1" / "model.onnx", seen)
    model = _initialize(repository)
    assert not seen, "no BLS request while the model initializes (Triton allows them only in execute)"
    assert model.session.description.startswith("Triton model bertrt_qa_tensor" if mode == "bls" else "onnxruntime")
    requests = [
        _request([TENSORRT_PASSAGE], [QUESTIONS[0]]),
        _request([TENSORRT_PASSAGE], ["   "]),  # empty question
        _request([TENSORRT_PASSAGE] * 2, QUESTIONS[1:3]),  # two rows
        _request([OTHER_PASSAGE], [OTHER_QUESTION]),
        _request([TENSORRT_PASSAGE], ["why " * 100]),  # does not fit: found by the tokenizer, in the batch
        _request([b"\xff\xfe TensorRT"], [QUESTIONS[0]]),  # not UTF-8
        _request([TENSORRT_PASSAGE], [QUESTIONS[3]]),
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    errors = {i: r.error().message() for i, r in enumerate(responses) if r.has_error()}
    assert sorted(errors) == [1, 4, 5]
    assert "input 'question' is empty" in errors[1]
    assert "question has 100 tokens; at most 64 fit" in errors[4]
    assert "not UTF-8" in errors[5]
    codes = {i: responses[i].error().code() for i in errors}  # the client's mistakes: 400 / INVALID_ARGUMENT
    assert codes == {i: pb_utils.TritonError.INVALID_ARG for i in errors}
    expected = _infer(capsys, embedded_onnx, TENSORRT_PASSAGE, QUESTIONS)
    (other,) = _infer(capsys, embedded_onnx, OTHER_PASSAGE, [OTHER_QUESTION])
    got = [*_answers(responses[0]), *_answers(responses[2]), *_answers(responses[6])]
    assert [a for a, _ in got] == [row["answer"] for row in expected]
    assert np.allclose([s for _, s in got], [row["score"] for row in expected], atol=1e-4)  # infer rounds to 1e-4
    ((text, score),) = _answers(responses[3])
    assert text == other["answer"] and score == pytest.approx(other["score"], abs=1e-4)
    if mode == "bls":  # the network ran in the tensor model, in batches of --batch-size rows of a bucket's length
        assert seen and {shape[0] for shape in seen} == {4} and {shape[1] for shape in seen} <= {128, 384}
    model.finalize()


def test_execute_with_buckets_and_threads_from_the_repository(capsys, embedded_onnx, tmp_path, pb_utils):
    """Serving takes squad's run options: --buckets/--threads/--batch-size are recorded in the repository and the
    Triton model's session runs with them (padded to the buckets and batch size), answering as infer does."""
    from bertrt.serve.repository import read_parameters

    repository = tmp_path / "repo"
    assert main(["triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--output", str(repository),
                 "--buckets", "384,128,256", "--threads", "1", "--batch-size", "2", "--doc-stride", "96",
                 "--runtime", "onnxruntime-bound"]) == 0
    capsys.readouterr()
    params = read_parameters(repository)
    assert (params.options.buckets, params.options.threads, params.options.batch_size) == ((128, 256, 384), 1, 2)
    assert params.squad.doc_stride == 96 and not params.options.cuda_graph
    assert params.options.runtime == "onnxruntime-bound"
    model = _initialize(repository)
    assert "buckets 128,256,384" in model.session.description
    responses = model.execute([_request([TENSORRT_PASSAGE], [q]) for q in QUESTIONS])
    expected = _infer(capsys, embedded_onnx, TENSORRT_PASSAGE, QUESTIONS, "--doc-stride", "96")
    assert [_answers(r)[0][0] for r in responses] == [row["answer"] for row in expected]
    model.finalize()


def test_serving_params_round_trip_every_run_option():
    """One serialization, one parse: every SquadParams and RunOptions field survives the config's strings (None,
    tuples and booleans included), and a malformed value is one line."""
    from bertrt.errors import BertrtError
    from bertrt.serve.repository import ServingMode, ServingParams
    from bertrt.session import RunOptions, SquadParams

    for options in (RunOptions(), RunOptions(runtime="onnxruntime-bound", provider="cuda", threads=3,
                                             buckets=(128, 384), batch_size=16, cuda_graph=True)):
        params = ServingParams("1/model.onnx", "1/vocab.txt", SquadParams(max_seq_length=256, doc_stride=64),
                               options, 1000, ServingMode.BLS)
        strings = params.to_parameters()
        assert all(isinstance(v, str) for v in strings.values())
        # as the Python backend passes them; proto3 leaves empty strings out
        parsed = {k: ({"string_value": v} if v else {}) for k, v in strings.items()}
        assert ServingParams.from_parameters(parsed) == params
    # a repository written before ServingMode: tensor_model named the BLS model; no run options but these two
    old = {k: {"string_value": v} for k, v in {"model": "1/model.onnx", "vocab": "1/vocab.txt", "provider": "cpu",
                                               "batch_size": "8", "max_input_bytes": "100",
                                               "tensor_model": "bertrt_qa_tensor"}.items()}
    assert ServingParams.from_parameters(old).mode is ServingMode.BLS
    del old["tensor_model"]
    assert ServingParams.from_parameters(old) == ServingParams("1/model.onnx", "1/vocab.txt", SquadParams(),
                                                               RunOptions(batch_size=8), 100)
    parsed["cuda_graph"] = {"string_value": "maybe"}
    with pytest.raises(BertrtError, match="parameters incomplete or malformed .*cuda_graph"):
        ServingParams.from_parameters(parsed)


def test_bls_repository_refuses_cuda_graphs(embedded_onnx, tmp_path, capsys):
    assert main(["triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--output",
                 str(tmp_path / "repo"), "--bls", "--cuda-graph"]) == 2
    assert "CUDA graphs are the local runtime's" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()



@pytest.mark.parametrize("kind, device, expected", [("GPU", "1", 1), ("CPU", "0", None)])
def test_instance_of_a_gpu_group_opens_its_session_on_its_gpu(embedded_onnx, tmp_path, pb_utils, monkeypatch, kind,
                                                               device, expected):
    """`serve --gpus`: the Python backend passes each KIND_GPU instance its GPU (model_instance_device_id); the
    Triton model opens its QA session with RunOptions.device_id set to it (a KIND_CPU instance: unset)."""
    from google.protobuf.json_format import MessageToDict

    from bertrt.serve import python_model
    from bertrt.serve.repository import read_config

    repository = tmp_path / "repo"
    assert main(["triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--output", str(repository),
                 "--provider", "cuda"]) == 0
    opened = []
    monkeypatch.setattr(python_model, "QASession", lambda model, vocab, squad, options, backend: opened.append(options))
    config = MessageToDict(read_config(repository / "bertrt_qa" / "config.pbtxt"), preserving_proto_field_name=True)
    python_model.TritonPythonModel().initialize({
        "model_config": json.dumps(config), "model_repository": str(repository / "bertrt_qa"),
        "model_instance_kind": kind, "model_instance_device_id": device, "model_instance_name": "bertrt_qa_0_0"})
    (options,) = opened
    assert options.provider == "cuda" and options.device_id == expected
