"""Serving with Triton: a real tritonserver (bundled in nvidia-pytriton) on free ports of 127.0.0.1, the embedded model
behind it, asked over HTTP and gRPC with tritonclient. All traffic stays on this machine; every loop is bounded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TENSORRT_PASSAGE, VOCAB

from bertrt.errors import BertrtError

QUESTION = "What is TensorRT?"
CLASSIC_ANSWER = "a high performance deep learning inference platform"


def _skip_reason() -> str | None:
    try:
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError as exc:
        return f"tritonclient not installed ({exc}); run `make setup`"
    from bertrt.serve import stub_python, triton_install

    try:
        triton_install.locate()
    except BertrtError as exc:
        return str(exc)
    problem = stub_python.stub_problem()
    if problem is not None:
        return f"this Python cannot run Triton's Python-backend stub: {problem}"
    return None


needs_server = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _params(tmp: Path, model: Path, bls: bool = False, max_batch_size: int = 16) -> Path:
    from bertrt.serve.repository import Batching, ServingMode, ServingParams, write_repository
    from bertrt.session import RunOptions, SquadParams

    params = ServingParams("", "", SquadParams(), RunOptions(provider="cpu", batch_size=8), max_input_bytes=100_000,
                           mode=ServingMode.BLS if bls else ServingMode.LOCAL)
    return write_repository(tmp / "repo", model, VOCAB, Batching(max_batch_size, 20_000, 1), params)


@pytest.fixture(scope="module")
def server(embedded_onnx, tmp_path_factory):
    """One server for the module (start ~3 s); a generous batching delay so that concurrent requests batch."""
    from bertrt.serve.cli import free_port
    from bertrt.serve.server import Endpoints, TritonServer

    tmp = tmp_path_factory.mktemp("serve")
    with TritonServer(_params(tmp, embedded_onnx), Endpoints("127.0.0.1", free_port(), free_port()),
                      log_file=tmp / "tritonserver.log") as running:
        yield running


@pytest.fixture(scope="module")
def infer_answer(embedded_onnx) -> dict:
    """`bertrt infer --json`'s answer to the classic question (the reference every served answer must equal)."""
    out = subprocess.run([sys.executable, "-m", "bertrt.cli", "infer", "--model", str(embedded_onnx), "--vocab",
                          str(VOCAB), "--passage", TENSORRT_PASSAGE, "--question", QUESTION, "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    (row,) = json.loads(out.stdout)
    assert row["answer"] == CLASSIC_ANSWER
    return row


def _client(server, protocol: str):
    from bertrt.serve.client import QAClient

    url = server.endpoints.http_url if protocol == "http" else server.endpoints.grpc_url
    return QAClient(protocol, url)


@needs_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classic_question_equals_infer(server, infer_answer, protocol):
    with _client(server, protocol) as client:
        answer, score = client.ask(TENSORRT_PASSAGE, QUESTION)
    assert answer == infer_answer["answer"]
    assert score == pytest.approx(infer_answer["score"], abs=1e-4)  # infer --json rounds to 4 decimals


@needs_server
def test_bounded_load_loses_nothing_and_batches(server, infer_answer):
    from bertrt.serve.client import load

    clients, per_client = 8, 50
    result = load("http", server.endpoints.http_url, TENSORRT_PASSAGE, QUESTION, clients, per_client,
                  time_limit_s=240)
    assert result.errors == [], (f"{len(result.errors)} failed, first: {result.errors[0]}; server log:\n"
                                 + server.log.read_text()[-3000:])
    assert result.sent == len(result.answers) == clients * per_client, "requests lost or not sent in time"
    assert {a for a, _ in result.answers} == {infer_answer["answer"]}
    scores = np.array([s for _, s in result.answers])
    assert np.abs(scores - infer_answer["score"]).max() < 1e-4
    with _client(server, "grpc") as client:
        sizes = client.executed_batch_sizes()
    assert max(sizes) > 1, f"no execution had more than one request: {sizes}"
    print(f"load: {result.throughput:.1f} req/s, p50 {result.percentile_ms(50):.1f} ms, "
          f"p99 {result.percentile_ms(99):.1f} ms; executions by batch size {sorted(sizes.items())}")


@needs_server
def test_load_from_several_client_processes_loses_nothing(server, infer_answer):
    """serve-bench's multi-process load: every request of every process is counted and answered alike, and the
    clients' CPU time comes back with them."""
    from bertrt.serve.client import load, split_concurrency

    assert split_concurrency(10, 3) == [4, 3, 3] and split_concurrency(2, 8) == [1, 1]
    result = load("grpc", server.endpoints.grpc_url, TENSORRT_PASSAGE, QUESTION, concurrency=4,
                  requests_per_client=10, time_limit_s=240, processes=2)
    assert result.processes == 2 and result.errors == [], result.errors[:1]
    assert result.sent == len(result.answers) == 40
    assert {a for a, _ in result.answers} == {infer_answer["answer"]}
    assert result.client_cpu_s > 0 and result.wall_s > 0


def _raw_request(server, inputs: dict[str, np.ndarray]):
    """An HTTP request with exactly these inputs (any dtype), bypassing QAClient's checks."""
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, value in inputs.items():
        tensor = http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    client = http.InferenceServerClient(server.endpoints.http_url, network_timeout=60)
    try:
        return client.infer("bertrt_qa", tensors)
    finally:
        client.close()


def _text(value: str | bytes) -> np.ndarray:
    return np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)


BAD_REQUESTS = {
    "missing input": ({"question": _text(QUESTION)}, "passage"),
    "wrong type": ({"passage": np.ones((1, 1), np.float32), "question": _text(QUESTION)}, "passage"),
    "empty passage": ({"passage": _text("   "), "question": _text(QUESTION)}, "input 'passage' is empty"),
    "multi-megabyte passage": ({"passage": _text("TensorRT is fast. " * 200_000), "question": _text(QUESTION)},
                               "input 'passage' is 3600000 bytes; this server accepts at most 100000"),
    "not UTF-8": ({"passage": _text(b"\xff\xfe TensorRT"), "question": _text(QUESTION)}, "not UTF-8"),
    "overlong question": ({"passage": _text(TENSORRT_PASSAGE), "question": _text("why " * 100)},
                          "question has 100 tokens; at most 64 fit"),
}


@needs_server
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_error_and_server_keeps_serving(server, case):
    from tritonclient.utils import InferenceServerException

    inputs, expected = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as error:
        _raw_request(server, inputs)
    assert expected in str(error.value)
    with _client(server, "http") as client:
        assert client.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER


@needs_server
def test_bad_request_in_a_batch_fails_alone(server):
    """Requests batched with a bad one are still answered (the error is per request)."""
    import threading

    outcomes: dict[int, object] = {}

    def send(i: int) -> None:
        passage = " " if i == 0 else TENSORRT_PASSAGE
        try:
            outcomes[i] = _raw_request(server, {"passage": _text(passage), "question": _text(QUESTION)}
                                       ).as_numpy("answer")[0, 0].decode()
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert "empty" in str(outcomes[0])
    assert [outcomes[i] for i in range(1, 6)] == [CLASSIC_ANSWER] * 5


def _descendants(pid: int) -> set[int]:
    """The processes below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _shm_regions() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("triton_python_backend_shm_region_*")} if shm.is_dir() else set()


@needs_server
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_command_stops_cleanly(embedded_onnx, tmp_path, stop):
    """`bertrt serve` answers, then SIGTERM or SIGINT (Ctrl-C) leaves no process, no temporary directory and no
    shared memory."""
    from bertrt.serve.cli import free_port
    from bertrt.serve.client import QAClient

    http_port, grpc_port = free_port(), free_port()
    shm_before = _shm_regions()
    log = tmp_path / "serve.out"
    with open(log, "w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "bertrt.cli", "serve", "--model", str(embedded_onnx), "--vocab",
                                  str(VOCAB), "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "ready" not in log.read_text() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        text = log.read_text()
        assert "ready" in text and f"127.0.0.1:{http_port}" in text and f"127.0.0.1:{grpc_port}" in text, text
        with QAClient("http", f"127.0.0.1:{http_port}") as client:
            assert client.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER
        processes = _descendants(serve.pid)
        assert len(processes) >= 2, "expected tritonserver and its Python-backend stub"
        commands = " ".join(Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in processes)
        temp_dirs = set()  # bertrt's temporary repository and backend copy, named in the processes' arguments
        for word in commands.split():
            parts = Path(word).parts
            temp_dirs |= {Path(*parts[: i + 1]) for i, part in enumerate(parts) if part.startswith("bertrt-")}
        assert temp_dirs, commands
        serve.send_signal(stop)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert "stopped" in log.read_text()
    assert not [p for p in processes if _alive(p)], "processes left behind"
    assert not [d for d in temp_dirs if d.exists()], "temporary directories left behind"
    assert _shm_regions() <= shm_before, "shared-memory regions left behind"


def test_repository_configs_follow_tritons_schema(embedded_onnx, tmp_path):
    """Both configs parse against Triton's ModelConfig schema; the BLS variant (generated and schema-checked here,
    not run: the onnxruntime/TensorRT backends are not in the wheel) points bertrt_qa at the tensor model."""
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf.json_format import MessageToDict

    from bertrt.serve.repository import ServingParams, read_config

    repo = _params(tmp_path, embedded_onnx, bls=True)
    qa = read_config(repo / "bertrt_qa" / "config.pbtxt")
    tensor = read_config(repo / "bertrt_qa_tensor" / "config.pbtxt")
    assert (qa.backend, [i.name for i in qa.input], [o.name for o in qa.output]) == (
        "python", ["passage", "question"], ["answer", "score"])
    assert qa.max_batch_size == 16 and qa.dynamic_batching.max_queue_delay_microseconds == 20_000
    params = ServingParams.from_parameters(MessageToDict(qa, preserving_proto_field_name=True)["parameters"])
    assert params.mode.tensor_model == "bertrt_qa_tensor"
    assert (repo / "bertrt_qa" / params.model).resolve() == (repo / "bertrt_qa_tensor" / "1" / "model.onnx").resolve()
    assert tensor.platform == "onnxruntime_onnx" and tensor.default_model_filename == "model.onnx"
    assert [i.name for i in tensor.input] == ["input_ids", "segment_ids", "input_mask"]
    assert {i.data_type for i in tensor.input} == {tensor.input[0].data_type} and tensor.input[0].data_type == 8
    local = read_config(_params(tmp_path / "local", embedded_onnx) / "bertrt_qa" / "config.pbtxt")
    local_params = MessageToDict(local, preserving_proto_field_name=True)["parameters"]
    assert ServingParams.from_parameters(local_params).mode.tensor_model is None
    (repo / "bertrt_qa" / "config.pbtxt").write_text("name: \"bertrt_qa\"\nmax_batchsize: 4\n")
    with pytest.raises(BertrtError, match="not a valid Triton model config"):
        read_config(repo / "bertrt_qa" / "config.pbtxt")


def test_triton_repo_refuses_existing_output_and_writes_nothing_on_error(embedded_onnx, tmp_path):
    from bertrt.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["triton-repo", "--model", str(embedded_onnx), "--output", str(tmp_path / "taken")]) == 2
    assert main(["triton-repo", "--model", str(tmp_path / "missing.onnx"), "--output", str(tmp_path / "new")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_stub_python_detects_a_libpython_of_another_release(monkeypatch):
    """The stub must load the libpython of this very release; a different one is named in a one-line error."""
    import platform

    from bertrt.serve import stub_python, triton_install

    system = stub_python._system_libpython(f"{sys.version_info.major}.{sys.version_info.minor}")
    other = system and stub_python._library_version(system)
    if not other or other == platform.python_version():
        pytest.skip("no system libpython of another release on this machine")
    monkeypatch.setattr(stub_python, "stub_libpython", lambda: system)
    problem = stub_python.stub_problem()
    assert problem is not None and other in problem and platform.python_version() in problem
    monkeypatch.setattr(stub_python, "working_python", lambda with_venv=False: "/usr/bin/python3.x")
    with pytest.raises(BertrtError, match=r"cannot run Triton's Python-backend stub: .* use /usr/bin/python3.x"):
        triton_install.check_python()


@needs_server
def test_port_in_use_is_one_line_error_and_leaves_nothing(server):
    """A second server on the first one's HTTP port is refused before it starts (the first one would otherwise
    answer its readiness probe)."""
    from bertrt.serve.cli import free_port
    from bertrt.serve.server import Endpoints, TritonServer

    second = TritonServer(server.repository, Endpoints("127.0.0.1", server.endpoints.http_port, free_port()))
    with pytest.raises(BertrtError, match=f"127.0.0.1:{server.endpoints.http_port} \\(HTTP\\) is already in use"):
        with second:
            pass
    assert second.process is None and second.workdir is None
    with _client(server, "grpc") as client:
        assert client.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER
