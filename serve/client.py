"""Ask `bertrt_qa` over HTTP or gRPC with tritonclient, and a bounded load client (perf_analyzer does not install
here): N concurrent clients, each sending at most M requests and stopping at a fixed deadline, measuring each
request's latency as the client sees it."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bertrt.serve.repository import INPUTS, MODEL_NAME, OUTPUTS
from bertrt.extras import require

PROTOCOLS = ("http", "grpc")
REQUEST_TIMEOUT_S = 60.0


def _module(protocol: str):
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return require(f"tritonclient.{protocol}", "serve")


class QAClient:
    """A tritonclient client (HTTP or gRPC) for `bertrt_qa` at `url` (host:port, no scheme)."""

    def __init__(self, protocol: str, url: str):
        self.protocol = protocol
        self.module = _module(protocol)
        if protocol == "http":
            self.client = self.module.InferenceServerClient(url, connection_timeout=REQUEST_TIMEOUT_S,
                                                            network_timeout=REQUEST_TIMEOUT_S)
        else:
            self.client = self.module.InferenceServerClient(url)

    def __enter__(self) -> QAClient:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def ask(self, passage: str, question: str) -> tuple[str, float]:
        """One request: the answer and its score (tritonclient raises InferenceServerException on an error)."""
        inputs = []
        for name, text in zip(INPUTS, (passage, question)):
            tensor = self.module.InferInput(name, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
            inputs.append(tensor)
        outputs = [self.module.InferRequestedOutput(name) for name in OUTPUTS]
        kwargs = {"client_timeout": REQUEST_TIMEOUT_S} if self.protocol == "grpc" else {}
        result = self.client.infer(MODEL_NAME, inputs, outputs=outputs, **kwargs)
        return result.as_numpy("answer").reshape(-1)[0].decode("utf-8"), float(result.as_numpy("score").reshape(-1)[0])

    def executed_batch_sizes(self) -> dict[int, int]:
        """How many model executions the server ran at each batch size (its statistics, since it started)."""
        stats = self.client.get_inference_statistics(MODEL_NAME)
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            stats = MessageToDict(stats, preserving_proto_field_name=True)
        sizes: dict[int, int] = {}
        for model in stats["model_stats"]:
            for entry in model.get("batch_stats", []):
                sizes[int(entry["batch_size"])] = int(entry["compute_infer"]["count"])
        return sizes


def _bytes_element(text: str) -> bytes:
    """One element of a BYTES tensor in Triton's raw form: its length (uint32, little-endian), then the bytes."""
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def _answer_and_score(raw: dict[str, bytes]) -> tuple[str, float]:
    """The answer text and score from the raw output tensors of one request (a BYTES element, an FP32)."""
    answer, score = raw[OUTPUTS[0]], raw[OUTPUTS[1]]
    (length,) = struct.unpack_from("<I", answer)
    return answer[4:4 + length].decode("utf-8"), struct.unpack("<f", score[:4])[0]


_IMPORT_LOCK = threading.Lock()


def _grpc_modules():
    """grpc and Triton's generated gRPC modules (optional: the `serve` extra), imported once under a lock: the load
    client's threads start together, and concurrent first imports of one module can deadlock in importlib."""
    with _IMPORT_LOCK:
        return (require("grpc", "serve"), require("tritonclient.grpc.service_pb2", "serve"),
                require("tritonclient.grpc.service_pb2_grpc", "serve"))


class PreparedGrpcAsker:
    """The load generator's gRPC client: one (passage, question) request, its `ModelInferRequest` protobuf built
    once and sent again and again through Triton's generated gRPC stub (what tritonclient.grpc sends underneath).
    tritonclient builds that protobuf from numpy and parses the response into numpy on every call, which cost
    ~0.5 ms of client CPU per request on the H200 host (serve-bench c256, 2026-12-03): the clients, not the server,
    then set the ceiling of a load test on one machine."""

    def __init__(self, url: str, passage: str, question: str):
        grpc, service_pb2, service_pb2_grpc = _grpc_modules()

        request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
        for name, text in zip(INPUTS, (passage, question)):
            tensor = request.inputs.add(name=name, datatype="BYTES")
            tensor.shape.extend([1, 1])
            request.raw_input_contents.append(_bytes_element(text))
        for name in OUTPUTS:
            request.outputs.add(name=name)
        self.request = request
        self.channel = grpc.insecure_channel(url)
        self.rpc_error = grpc.RpcError
        self.infer = service_pb2_grpc.GRPCInferenceServiceStub(self.channel).ModelInfer

    def __enter__(self) -> PreparedGrpcAsker:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def ask(self) -> tuple[str, float]:
        try:
            response = self.infer(self.request, timeout=REQUEST_TIMEOUT_S)
        except self.rpc_error as exc:  # one line, as tritonclient words it: "[StatusCode.X] details"
            raise RuntimeError(f"[{exc.code()}] {exc.details()}") from None
        return _answer_and_score(dict(zip((o.name for o in response.outputs), response.raw_output_contents)))


class PreparedHttpAsker:
    """The load generator's HTTP client: one (passage, question) request as a prebuilt body of Triton's binary
    tensor extension (a JSON header, then the raw tensors), posted again and again on one keep-alive connection
    (http.client), the outputs asked for in binary too. For the same reason as PreparedGrpcAsker."""

    def __init__(self, url: str, passage: str, question: str):
        raw = [_bytes_element(text) for text in (passage, question)]
        header = json.dumps({
            "inputs": [{"name": name, "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(r)}}
                       for name, r in zip(INPUTS, raw)],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
        }).encode()
        self.body = header + b"".join(raw)
        self.headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
        self.path = f"/v2/models/{MODEL_NAME}/infer"
        host, port = url.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)

    def __enter__(self) -> PreparedHttpAsker:
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()

    def ask(self) -> tuple[str, float]:
        self.connection.request("POST", self.path, self.body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300].decode('utf-8', 'replace')}")
        length = int(response.getheader("Inference-Header-Content-Length", len(data)))
        outputs, offset, raw = json.loads(data[:length])["outputs"], length, {}
        for out in outputs:
            size = out["parameters"]["binary_data_size"]
            raw[out["name"]] = data[offset:offset + size]
            offset += size
        return _answer_and_score(raw)


_PREPARED = {"grpc": PreparedGrpcAsker, "http": PreparedHttpAsker}


def _asker(protocol: str, url: str, passage: str, question: str):
    return _PREPARED[protocol](url, passage, question)


@dataclass
class LoadResult:
    concurrency: int
    sent: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the answered requests
    answers: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    processes: int = 1  # client processes the load came from
    client_cpu_s: float = 0.0  # CPU seconds the client processes used (user + system), so a reader sees whether
    # the client, rather than the server, was the limit

    @property
    def throughput(self) -> float:
        return len(self.answers) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def client_cores(self) -> float:
        """Cores the clients kept busy on average over the run."""
        return self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.latencies_s += other.latencies_s
        self.answers += other.answers
        self.errors += other.errors
        self.client_cpu_s += other.client_cpu_s


def _threads_load(protocol: str, url: str, passage: str, question: str, concurrency: int,
                  requests_per_client: int, deadline: float) -> LoadResult:
    """`concurrency` client threads in this process, each sending up to `requests_per_client` requests back to back
    until `deadline` (time.monotonic). Every request is accounted for: answered (latency, answer) or failed."""
    result = LoadResult(concurrency)
    lock = threading.Lock()

    def client_loop() -> None:
        with _asker(protocol, url, passage, question) as client:
            for _ in range(requests_per_client):
                if time.monotonic() >= deadline:
                    return
                with lock:
                    result.sent += 1
                t0 = time.perf_counter()
                try:
                    answer = client.ask()
                except Exception as exc:  # the server's error response, a timeout, a refused connection
                    with lock:
                        result.errors.append(f"{exc} (after {time.perf_counter() - t0:.1f} s)")
                    continue
                latency = time.perf_counter() - t0
                with lock:
                    result.latencies_s.append(latency)
                    result.answers.append(answer)

    if protocol == "grpc":
        _grpc_modules()  # imported here, before the threads (see _grpc_modules)
    cpu0 = time.process_time()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Each request is bounded by REQUEST_TIMEOUT_S, so this join is bounded too.
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT_S + 5)
    result.client_cpu_s = time.process_time() - cpu0
    return result


def _process_load(args: tuple, start, results) -> None:
    """One client process: wait for the common start, run its threads, send the result back."""
    start.wait()
    protocol, url, passage, question, concurrency, per_client, time_limit_s = args
    results.put(_threads_load(protocol, url, passage, question, concurrency, per_client,
                              time.monotonic() + time_limit_s))


def split_concurrency(concurrency: int, processes: int) -> list[int]:
    """Client threads per process: `concurrency` spread as evenly as possible over at most `processes`."""
    processes = max(1, min(processes, concurrency))
    return [concurrency // processes + (i < concurrency % processes) for i in range(processes)]


def load(protocol: str, url: str, passage: str, question: str, concurrency: int, requests_per_client: int,
         time_limit_s: float, processes: int = 1) -> LoadResult:
    """`concurrency` clients spread over `processes` client processes (one Python process saturates its GIL near
    64 concurrent requests, and then the client is what a benchmark measures), each sending up to
    `requests_per_client` requests back to back until the deadline. The processes are started first and released
    together, so their start-up is not timed."""
    shares = split_concurrency(concurrency, processes)
    if len(shares) == 1:
        t0 = time.perf_counter()
        result = _threads_load(protocol, url, passage, question, concurrency, requests_per_client,
                               time.monotonic() + time_limit_s)
        result.wall_s = time.perf_counter() - t0
        return result
    # spawn, not fork: gRPC's channels do not survive a fork, and the parent may hold one
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_process_load, daemon=True,
                               args=((protocol, url, passage, question, share, requests_per_client, time_limit_s),
                                     start, results)) for share in shares]
    for worker in workers:
        worker.start()
    merged = LoadResult(concurrency, processes=len(workers))
    t0 = time.perf_counter()
    start.set()
    try:
        for _ in workers:
            merged.merge(results.get(timeout=time_limit_s + REQUEST_TIMEOUT_S + 30))
    except queue.Empty:
        merged.errors.append("a client process did not report back in time")
    merged.wall_s = time.perf_counter() - t0
    for worker in workers:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
    return merged


def format_table(results: list[LoadResult], protocol: str) -> str:
    rows = ["| concurrency | client processes | requests | errors | throughput (req/s) | p50 latency (ms) | "
            "p99 latency (ms) | client CPU (cores) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rows.append(f"| {r.concurrency} | {r.processes} | {len(r.answers)} | {len(r.errors)} | {r.throughput:.1f} | "
                    f"{r.percentile_ms(50):.1f} | {r.percentile_ms(99):.1f} | {r.client_cores:.2f} |")
    return f"{protocol.upper()}, a prebuilt request, one (passage, question) per request\n" + "\n".join(rows)
