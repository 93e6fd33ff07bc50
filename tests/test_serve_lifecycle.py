"""`bertrt serve` heals or stops, and leaves nothing behind (issue 16): a dead Python stub or server ends it with one
line; a killed `bertrt serve` takes tritonserver with it; its shared-memory regions, temporary directories and no
__pycache__ are left after SIGINT, SIGTERM, a second Ctrl-C or a crash; in-flight requests finish on SIGTERM; a
client's mistake is HTTP 400 / gRPC INVALID_ARGUMENT. Real servers on free ports of 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TENSORRT_PASSAGE, VOCAB
from test_serve import CLASSIC_ANSWER, QUESTION, _alive, _descendants, needs_server


class Serve:
    """`bertrt serve ...` in a subprocess, ready."""

    def __init__(self, tmp: Path, *flags):
        from bertrt.serve.cli import free_port

        self.http, self.grpc = free_port(), free_port()
        self.out = tmp / "serve.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bertrt.cli", "serve", *map(str, flags),
                                          "--http-port", str(self.http), "--grpc-port", str(self.grpc)],
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while "ready" not in self.out.read_text() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "ready" in self.out.read_text(), self.out.read_text()
            self.processes = _descendants(self.proc.pid)
            self.server = next(p for p in self.processes if _comm(p) == "tritonserver")
            argv = _cmdline(self.server)
            self.shm_prefix = next(a for a in argv if "shm-region-prefix-name=" in a).split("prefix-name=", 1)[1]
            self.temp_dirs = {Path(*Path(a).parts[:3]) for a in argv if a.startswith("/tmp/bertrt-")}
            assert self.temp_dirs, argv
            assert self.shm_regions(), "the server's shared-memory regions carry its prefix"
        except BaseException:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            raise

    def stubs(self) -> list[int]:
        return [p for p in self.processes if _comm(p).startswith("triton_python")]

    def shm_regions(self) -> list[str]:
        return [p.name for p in Path("/dev/shm").glob(f"{self.shm_prefix}*")]

    def ask(self, protocol: str = "http"):
        from bertrt.serve.client import QAClient

        with QAClient(protocol, f"127.0.0.1:{self.http if protocol == 'http' else self.grpc}") as client:
            return client.ask(TENSORRT_PASSAGE, QUESTION)

    def wait(self, timeout: float = 90) -> int:
        return self.proc.wait(timeout=timeout)

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 30
        while [p for p in self.processes if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in self.processes if _alive(p)], "processes left behind"
        assert not self.shm_regions(), "shared-memory regions left behind"
        assert not [d for d in self.temp_dirs if d.exists()], f"temporary directories left: {self.temp_dirs}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.processes:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.fixture()
def serve_model(embedded_onnx, tmp_path):
    started = []

    def start(*flags) -> Serve:
        started.append(Serve(tmp_path, "--model", embedded_onnx, "--vocab", VOCAB, *flags))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _last_line(serve: Serve) -> str:
    return serve.out.read_text().strip().splitlines()[-1]


@needs_server
def test_a_dead_stub_stops_serve_with_one_line(serve_model):
    serve = serve_model()
    assert serve.ask()[0] == CLASSIC_ANSWER
    (stub,) = serve.stubs()
    os.kill(stub, signal.SIGKILL)
    assert serve.wait() == 2
    assert "Python stub" in _last_line(serve) and "gone" in _last_line(serve), serve.out.read_text()
    serve.assert_nothing_left()


@needs_server
def test_a_crashed_server_stops_serve_and_its_shared_memory_goes(serve_model):
    serve = serve_model()
    os.kill(serve.server, signal.SIGKILL)
    assert serve.wait() == 2
    assert "tritonserver exited" in _last_line(serve), serve.out.read_text()
    serve.assert_nothing_left()


@needs_server
def test_killing_serve_takes_the_server_with_it(serve_model):
    """`kill -9` of `bertrt serve`: tritonserver gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and shuts down,
    its ports free and its shared memory gone (the temporary directories of a SIGKILLed process cannot be removed
    by it)."""
    serve = serve_model()
    serve.proc.kill()
    serve.proc.wait()
    deadline = time.monotonic() + 40
    while [p for p in serve.processes if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in serve.processes if _alive(p)], "tritonserver outlived bertrt serve"
    assert not serve.shm_regions()
    for d in serve.temp_dirs:
        shutil.rmtree(d, ignore_errors=True)


@needs_server
def test_sigterm_finishes_requests_in_flight(serve_model):
    serve = serve_model()
    answers: list = []
    worker = threading.Thread(target=lambda: answers.append(serve.ask()))
    worker.start()
    time.sleep(0.05)  # the request is on its way (an answer takes ~100 ms here)
    serve.proc.send_signal(signal.SIGTERM)
    worker.join(timeout=60)
    assert answers and answers[0][0] == CLASSIC_ANSWER
    assert serve.wait() == 0
    serve.assert_nothing_left()


@needs_server
def test_a_second_ctrl_c_leaves_nothing_behind(serve_model):
    """Ctrl-C pressed again while serve stops (Triton's shutdown takes longer than 0.1 s) hurries the stop but
    cannot cut the cleanup short. (A Ctrl-C after the cleanup may still end the exiting process by SIGINT.)"""
    serve = serve_model()
    for _ in range(3):
        serve.proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert serve.wait() in (0, 130, -signal.SIGINT)
    serve.assert_nothing_left()


@needs_server
def test_bad_requests_are_400_and_invalid_argument_and_no_pycache(embedded_onnx, tmp_path):
    """A served repository stays as written (no __pycache__ from the stub); an empty passage is the client's
    mistake: HTTP 400, gRPC INVALID_ARGUMENT."""
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from bertrt.serve.cli import run_triton_repo  # noqa: F401 (the command, through the CLI below)

    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "bertrt.cli", "triton-repo", "--model", str(embedded_onnx), "--vocab",
                    str(VOCAB), "--output", str(repo)], check=True, capture_output=True, timeout=300)
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    serve = Serve(tmp_path, "--repository", repo)
    try:
        body = (b'{"inputs": [{"name": "passage", "shape": [1, 1], "datatype": "BYTES", "data": [" "]}, '
                b'{"name": "question", "shape": [1, 1], "datatype": "BYTES", "data": ["What?"]}]}')
        request = urllib.request.Request(f"http://127.0.0.1:{serve.http}/v2/models/bertrt_qa/infer", data=body)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=60)
        assert error.value.code == 400, error.value.read()
        inputs = []
        for name, text in (("passage", b" "), ("question", b"What?")):
            tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
            import numpy as np

            tensor.set_data_from_numpy(np.array([[text]], dtype=np.object_))
            inputs.append(tensor)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc}")
        with pytest.raises(InferenceServerException) as error:
            client.infer("bertrt_qa", inputs)
        client.close()
        assert error.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT), error.value
        assert serve.ask("grpc")[0] == CLASSIC_ANSWER
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.wait() == 0
    finally:
        serve.close()
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before, "the repository was changed"


@pytest.mark.parametrize("flags, needle", [
    (["--http-port", "70000"], "HTTP port 70000: a TCP port is 1..65535"),
    (["--grpc-port", "0"], "gRPC port 0: a TCP port is 1..65535"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address or a name of this machine"),
    (["--host", "192.0.2.1"], "--host 192.0.2.1: not an address of this machine"),
])
def test_endpoint_flags_are_checked_up_front(capsys, embedded_onnx, flags, needle):
    from test_cli import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "serve", "--model", embedded_onnx, "--vocab", VOCAB, *flags)
    assert_one_line_error(code, err, needle)
    assert "in use" not in err


@needs_server
def test_a_repository_path_with_a_space_is_refused_up_front(capsys, embedded_onnx, tmp_path):
    from test_cli import assert_one_line_error, run_cli

    repo = tmp_path / "my models" / "répo"
    code, _, err = run_cli(capsys, "triton-repo", "--model", embedded_onnx, "--vocab", VOCAB, "--output", repo)
    assert code == 0, err
    code, _, err = run_cli(capsys, "serve", "--repository", repo)
    assert_one_line_error(code, err, "répo", "has a space")


@needs_server
def test_a_failed_start_leaves_no_shared_memory(embedded_onnx, tmp_path):
    """A model that fails to load (its file replaced by garbage after triton-repo): one line, exit 2, and neither the
    regions of this server (named after its pid) nor its temporary directories are left."""
    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "bertrt.cli", "triton-repo", "--model", str(embedded_onnx), "--vocab",
                    str(VOCAB), "--output", str(repo)], check=True, capture_output=True, timeout=300)
    (repo / "bertrt_qa" / "1" / "model.onnx").write_bytes(b"not an onnx model" * 10)
    from bertrt.serve.cli import free_port

    serve = subprocess.Popen([sys.executable, "-m", "bertrt.cli", "serve", "--repository", str(repo), "--http-port",
                              str(free_port()), "--grpc-port", str(free_port())], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _, err = serve.communicate(timeout=300)
    assert serve.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(Path("/dev/shm").glob(f"bertrt_{serve.pid}_*")), "shared-memory regions left behind"
