"""The server's exposure (issue 16): a real tritonserver on free ports of 127.0.0.1 with the embedded model. Client
shared memory (system and CUDA) and the APIs that change server state (trace and log settings, which name files the
server writes; model load/unload) are refused over HTTP and gRPC, while inference, health and statistics work."""

from __future__ import annotations

import os
import uuid

import pytest
from conftest import TENSORRT_PASSAGE
from test_serve import CLASSIC_ANSWER, QUESTION, _client, needs_server, server  # noqa: F401 (fixture)


@pytest.fixture
def shm_object():
    """An existing /dev/shm object, as a local attacker would name it."""
    name = f"bertrt-test-{uuid.uuid4().hex[:8]}"
    path = f"/dev/shm/{name}"
    with open(path, "wb") as f:
        f.write(b"secret passage text " * 64)
    yield "/" + name
    os.unlink(path)


@needs_server
def test_system_shared_memory_registration_refused_over_http(server, shm_object):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(server.endpoints.http_url)
    try:
        with pytest.raises(InferenceServerException) as error:
            client.register_system_shared_memory("x", shm_object, 1024)
        assert "restricted" in str(error.value).lower() or "not allowed" in str(error.value).lower(), error.value
        with pytest.raises(InferenceServerException):
            client.register_cuda_shared_memory("y", b"\0" * 64, 0, 1024)
        with pytest.raises(InferenceServerException):
            client.get_system_shared_memory_status()
        with pytest.raises(InferenceServerException):
            client.update_trace_settings(settings={"trace_file": "/tmp/bertrt-trace-should-not-exist"})
        with pytest.raises(InferenceServerException):
            client.update_log_settings(settings={"log_file": "/tmp/bertrt-log-should-not-exist"})
        with pytest.raises(InferenceServerException):
            client.unload_model("bertrt_qa")
        assert client.is_model_ready("bertrt_qa")
    finally:
        client.close()
    with _client(server, "http") as qa:
        assert qa.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER


@needs_server
def test_system_shared_memory_registration_refused_over_grpc(server, shm_object):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(server.endpoints.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as error:
            client.register_system_shared_memory("x", shm_object, 1024)
        assert "restricted" in str(error.value).lower() or "unavailable" in str(error.value).lower() \
            or "permission" in str(error.value).lower(), error.value
        with pytest.raises(InferenceServerException):
            client.register_cuda_shared_memory("y", b"\0" * 64, 0, 1024)
        with pytest.raises(InferenceServerException):
            client.update_trace_settings(settings={"trace_file": "/tmp/bertrt-trace-should-not-exist"})
        with pytest.raises(InferenceServerException):
            client.update_log_settings(settings={"log_file": "/tmp/bertrt-log-should-not-exist"})
        with pytest.raises(InferenceServerException):
            client.unload_model("bertrt_qa")
        assert client.is_model_ready("bertrt_qa")
    finally:
        client.close()
    with _client(server, "grpc") as qa:
        assert qa.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER
        assert qa.executed_batch_sizes() is not None  # statistics stay open (serve-bench reads them)
    assert not os.path.exists("/tmp/bertrt-trace-should-not-exist")
    assert not os.path.exists("/tmp/bertrt-log-should-not-exist")


def _closing_header(server) -> tuple[str, str]:
    """The header Triton requires for the closed APIs, as any local user reads it from the server's command line."""
    argv = open(f"/proc/{server.process.pid}/cmdline", "rb").read().decode().split("\0")
    (closed,) = [a for a in argv if a.startswith("--http-restricted-api=")]
    key, value = closed.split(":", 1)[1].split("=", 1)
    return key, value


@needs_server
def test_the_header_read_from_the_command_line_does_not_open_shared_memory(server, shm_object):
    """Whoever reads the server's arguments (`ps`) still cannot send the header: over HTTP/1.1 neither as one line
    nor folded, over gRPC not at all."""
    import socket

    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    key, value = _closing_header(server)
    assert "\n" in value
    body = b'{"key": "%s", "offset": 0, "byte_size": 64}' % shm_object.encode()
    first, last = value.split("\n")
    for header in (f"{key}: {value}", f"{key}: {first}\r\n {last}", f"{key}: {first}{last}", f"{key}: {first}"):
        with socket.create_connection(("127.0.0.1", server.endpoints.http_port), timeout=30) as s:
            s.sendall(b"POST /v2/systemsharedmemory/region/x/register HTTP/1.1\r\nHost: x\r\n"
                      + header.encode() + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        assert not reply.startswith(b"HTTP/1.1 200"), (header, reply)
    client = grpc.InferenceServerClient(server.endpoints.grpc_url)
    try:
        for name in (f"triton-grpc-protocol-{key}", f"triton-grpc-protocol-{key.lower()}"):
            for sent in (first + last, first):
                with pytest.raises(InferenceServerException):
                    client.register_system_shared_memory("x", shm_object, 64, headers={name: sent})
        assert client.is_server_live()
    finally:
        client.close()
    with _client(server, "http") as qa:
        assert qa.ask(TENSORRT_PASSAGE, QUESTION)[0] == CLASSIC_ANSWER
