"""Ask `bertrt_qa` over HTTP or gRPC with tritonclient, and a bounded load client (perf_analyzer does not install
here): N concurrent clients, each sending at most M requests and stopping at a fixed deadline, measuring each
request's latency as the client sees it."""

from __future__ import annotations

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


@dataclass
class LoadResult:
    concurrency: int
    sent: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the answered requests
    answers: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.answers) / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


def load(protocol: str, url: str, passage: str, question: str, concurrency: int, requests_per_client: int,
         time_limit_s: float) -> LoadResult:
    """`concurrency` clients, each sending up to `requests_per_client` requests back to back until the deadline.
    Every request is accounted for: answered (latency, answer) or failed (error text)."""
    result = LoadResult(concurrency)
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s

    def client_loop() -> None:
        with QAClient(protocol, url) as client:
            for _ in range(requests_per_client):
                if time.monotonic() >= deadline:
                    return
                with lock:
                    result.sent += 1
                t0 = time.perf_counter()
                try:
                    answer = client.ask(passage, question)
                except Exception as exc:  # the server's error response, a timeout, a refused connection
                    with lock:
                        result.errors.append(f"{exc} (after {time.perf_counter() - t0:.1f} s)")
                    continue
                latency = time.perf_counter() - t0
                with lock:
                    result.latencies_s.append(latency)
                    result.answers.append(answer)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        # Each request is bounded by REQUEST_TIMEOUT_S, so this join is bounded too.
        thread.join(timeout=time_limit_s + REQUEST_TIMEOUT_S + 5)
    result.wall_s = time.perf_counter() - t0
    return result


def format_table(results: list[LoadResult], protocol: str) -> str:
    rows = ["| concurrency | requests | errors | throughput (req/s) | p50 latency (ms) | p99 latency (ms) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rows.append(f"| {r.concurrency} | {len(r.answers)} | {len(r.errors)} | {r.throughput:.1f} | "
                    f"{r.percentile_ms(50):.1f} | {r.percentile_ms(99):.1f} |")
    return f"{protocol.upper()}, tritonclient, one (passage, question) per request\n" + "\n".join(rows)
