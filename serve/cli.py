"""`bertrt triton-repo`, `bertrt serve` and `bertrt serve-bench`, ready for bertrt/cli.py:

    from bertrt.serve.cli import add_serve, add_serve_bench, add_triton_repo
    for add in (..., add_triton_repo, add_serve, add_serve_bench): add(sub)

Each `run` takes (args, cfg) like the other subcommands; errors are BertrtError (one line, exit 2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bertrt import arg_groups as ag
from bertrt.artifacts import check_outputs
from bertrt.errors import BertrtError
from bertrt.inputs import check_count
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import sibling_tokenizer
from bertrt.serve.client import QAClient, format_table, load
from bertrt.serve.gpus import parse_gpus
from bertrt.serve.python_model import open_session
from bertrt.serve.repository import (DEFAULT_SESSION, MODEL_NAME, Batching, ServingMode, ServingParams,
                                     default_batching, read_parameters, serving_options, write_repository)
from bertrt.serve.server import Endpoints, TritonServer


def _add_repository_args(p) -> None:
    """What a generated repository is made of (triton-repo, and serve/serve-bench without --repository): the QA
    session's flags, as `bertrt squad` takes them (model, runtime options, shapes, SQuAD parameters), and batching."""
    ag.add_session_args(p)
    p.add_argument("--max-batch-size", type=int, help="requests the dynamic batcher gathers per execution (default: "
                                                      "the config's serve.max_batch_size, else the provider's)")
    p.add_argument("--max-queue-delay-us", type=int, help="how long the batcher waits to fill a batch (default as "
                                                          "--max-batch-size)")
    p.add_argument("--preferred-batch-sizes", help="batch sizes the batcher runs as soon as it has them, e.g. 32,64 "
                                                   "(default: none)")
    p.add_argument("--instances", type=int, help="model instances, each with its own QA session; per GPU with "
                                                 "--gpus (default as --max-batch-size)")
    p.add_argument("--gpus", help="`all` or GPU ids such as 0,1: --instances model instances on each (Triton "
                                  "KIND_GPU instance groups; --provider cuda). Default: KIND_CPU instances, GPU 0")
    p.add_argument("--max-input-bytes", type=int, help="larger passages or questions are refused")


def batching_args(args, cfg, provider: str) -> Batching:
    """Batching and instance placement: each flag, else the config's `serve:` key, else the provider's default."""
    default = default_batching(provider)
    values = {}
    for key in ("max_batch_size", "max_queue_delay_us", "instances"):
        value = ag.pick(getattr(args, key), cfg, "serve", key)
        values[key] = value if value is not None else getattr(default, key)
    try:
        preferred = tuple(int(b) for b in args.preferred_batch_sizes.split(",")) if args.preferred_batch_sizes \
            else default.preferred_batch_sizes
    except ValueError:
        raise BertrtError(f"--preferred-batch-sizes takes comma-separated integers, not "
                          f"{args.preferred_batch_sizes!r}") from None
    return Batching(**values, preferred_batch_sizes=preferred, gpus=parse_gpus(args.gpus, provider))


def _write(args, cfg, output: Path, mode: ServingMode = ServingMode.LOCAL, force: bool = False) -> Path:
    model, vocab, squad, options = ag.session_args(args, cfg)
    options = serving_options(options, DEFAULT_SESSION[options.provider], batch_size_given=args.batch_size is not None,
                              batch_rows_given=args.batch_rows is not None,
                              cuda_graph_given=args.cuda_graph is not None, mode=mode)
    batching = batching_args(args, cfg, options.provider)
    params = ServingParams(model="", vocab="", squad=squad, options=options, mode=mode,
                           max_input_bytes=ag.pick(args.max_input_bytes, cfg, "serve", "max_input_bytes"))
    return write_repository(output, model, vocab, batching, params, force=force,
                            fallback_vocab=ag.fallback_vocab(cfg))


# --- triton-repo ----------------------------------------------------------------------------------------------
def add_triton_repo(sub) -> None:
    p = sub.add_parser("triton-repo", help="write a Triton model repository (model bertrt_qa)")
    _add_repository_args(p)
    p.add_argument("--output", type=Path, required=True, help="repository directory to create (new or empty)")
    p.add_argument("--force", action="store_true", help="replace --output if it is a repository from `bertrt "
                                                        "triton-repo` (in one step; any other directory is refused)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--mode", choices=[m.value for m in ServingMode], default=ServingMode.LOCAL.value,
                       help="local (default): the network runs in bertrt_qa on the QA session's runtime; bls: see "
                            "--bls")
    modes.add_argument("--bls", dest="mode", action="store_const", const=ServingMode.BLS.value,
                       help="GPU production (--mode bls): the network as its own model for Triton's "
                            "onnxruntime_onnx/tensorrt_plan backend, called from bertrt_qa (BLS); not runnable with "
                            "the bundled server")
    p.set_defaults(run=run_triton_repo)


def run_triton_repo(args, cfg) -> int:
    output = _write(args, cfg, args.output, ServingMode(args.mode), force=args.force)
    print(f"wrote {output}")
    return 0


# --- serve ----------------------------------------------------------------------------------------------------
def _add_endpoint_args(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, help="serve Triton's Prometheus metrics at http://HOST:PORT/metrics, "
                                                    "on --host like the other ports (default: metrics off)")


@contextlib.contextmanager
def _repository(args, cfg) -> Iterator[Path]:
    """The given --repository, or one generated into a temporary directory removed on exit."""
    if args.repository is not None:
        yield args.repository
        return
    with tempfile.TemporaryDirectory(prefix="bertrt-repo-") as tmp:
        yield _write(args, cfg, Path(tmp) / "repository")


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT end `serve` through the same cleanup (SIGINT explicitly too: a shell starts background
    jobs with it ignored)."""
    interrupted = []

    def interrupt(signum, frame):
        if not interrupted:  # the first one stops serving; later ones must not cut the cleanup short
            interrupted.append(signum)
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a QA model with Triton Inference Server (HTTP + gRPC, KServe v2)")
    _add_repository_args(p)
    p.add_argument("--repository", type=Path, help="serve this repository (from triton-repo) instead of --model")
    _add_endpoint_args(p)
    p.add_argument("--log-file", type=Path, help="keep Triton's log here (default: discarded on exit)")
    p.set_defaults(run=run_serve)


def _check_log_file(args, cfg) -> None:
    """The log is an output like any other: never a file served (nor its sidecar), a device or a directory."""
    if args.log_file is None:
        return
    if args.repository is not None:
        inputs = [p for p in args.repository.rglob("*") if p.is_file()]
    else:  # --vocab may be None: the tokenizer then comes from the model, a file beside it or the config's vocab
        model = ag.model_path(args, cfg)
        inputs = [model, ag.vocab_path(args, cfg), sibling_tokenizer(model), ag.fallback_vocab(cfg)]
    check_outputs([args.log_file], inputs)


def run_serve(args, cfg) -> int:
    _check_log_file(args, cfg)
    endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)
    with _stop_signals_interrupt(), _repository(args, cfg) as repository:
        try:
            with TritonServer(repository, endpoints, log_file=args.log_file) as server:
                print(f"Triton serving bertrt_qa from {repository}\n"
                      f"  HTTP  http://{endpoints.host}:{endpoints.http_port}/v2/models/bertrt_qa/infer\n"
                      f"  gRPC  {endpoints.host}:{endpoints.grpc_port}\n"
                      f"  health  http://{endpoints.host}:{endpoints.http_port}/v2/health/ready (and /live)\n"
                      + (f"  metrics http://{endpoints.host}:{endpoints.metrics_port}/metrics\n"
                         if endpoints.metrics_port is not None else "") +
                      f"ready (Ctrl-C or SIGTERM stops it)", flush=True)
                raise BertrtError(server.watch())  # returns when the server can no longer answer
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0


# --- serve-bench ----------------------------------------------------------------------------------------------
MAX_CLIENTS = 4096  # serve-bench client threads per level
MAX_REQUESTS = 10_000_000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_serve_bench(sub) -> None:
    p = sub.add_parser("serve-bench", help="throughput and p50/p99 latency of bertrt_qa under concurrent clients")
    _add_repository_args(p)
    p.add_argument("--repository", type=Path, help="serve this repository instead of one made from --model")
    p.add_argument("--passage", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=256, help="requests per concurrency level (split over clients)")
    p.add_argument("--time-limit", type=float, default=120, help="seconds per concurrency level, at most")
    p.add_argument("--processes", type=int, help="client processes the load comes from (default: one per 32 "
                                                 "concurrent requests, at most the cores; one process saturates near "
                                                 "64)")
    p.add_argument("--url", help="benchmark an already running server at HOST:PORT (of --protocol) instead of "
                                 "starting one; its answers are checked against its first answer")
    p.set_defaults(run=run_serve_bench)


def client_processes(concurrency: int, asked: int | None) -> int:
    """Client processes for one concurrency level: as asked, else one per 32 concurrent requests (measured: one
    Python client process tops out near 64), at most one per core."""
    if asked is not None:
        return asked
    return max(1, min(os.cpu_count() or 1, -(-concurrency // 32)))


def _in_process_ms(repository: Path, passage: str, question: str, runs: int = 20) -> float:
    """Median time of the same question answered in this process by the QA session the Triton model opens (same
    model, parameters and run options; no server): what the server adds shows against it."""
    times = []
    with open_session(repository / MODEL_NAME, read_parameters(repository)) as session:
        examples = [Example("0", question, passage)]
        for _ in range(runs + 3):  # the first runs allocate
            t0 = time.perf_counter()
            session.answer_examples(examples, keep_nbest=False)  # as the Triton model answers
            times.append(time.perf_counter() - t0)
    return statistics.median(times[3:]) * 1000


def run_serve_bench(args, cfg) -> int:
    """Starts its own server on free ports of 127.0.0.1, sends only there, and checks every answer."""
    if min(args.concurrency) < 1 or args.requests < 1 or args.time_limit <= 0:
        raise BertrtError("--concurrency, --requests and --time-limit must be positive")
    for concurrency in args.concurrency:  # one client thread each: bounded like any resource asked for
        check_count("--concurrency", concurrency, 1, MAX_CLIENTS)
    check_count("--requests", args.requests, 1, MAX_REQUESTS)
    if args.processes is not None and not 1 <= args.processes <= 4 * (os.cpu_count() or 1):
        raise BertrtError(f"--processes must be between 1 and {4 * (os.cpu_count() or 1)}, got {args.processes}")
    with contextlib.ExitStack() as stack:
        if args.url:
            url, baseline_ms = args.url, None
        else:
            endpoints = Endpoints("127.0.0.1", free_port(), free_port())
            url = endpoints.http_url if args.protocol == "http" else endpoints.grpc_url
            repository = stack.enter_context(_repository(args, cfg))
            stack.enter_context(TritonServer(repository, endpoints))
            baseline_ms = _in_process_ms(repository, args.passage, args.question)
        with QAClient(args.protocol, url) as client:
            expected = client.ask(args.passage, args.question)
            for _ in range(3):  # warm-up: first runs allocate
                client.ask(args.passage, args.question)
        results = []
        for concurrency in args.concurrency:
            per_client = -(-args.requests // concurrency)
            result = load(args.protocol, url, args.passage, args.question, concurrency, per_client, args.time_limit,
                          processes=client_processes(concurrency, args.processes))
            wrong = sum(answer[0] != expected[0] for answer in result.answers)
            if result.errors or wrong:
                raise BertrtError(f"concurrency {concurrency}: {len(result.errors)} failed and {wrong} different "
                                  f"answers (first error: {(result.errors or ['-'])[0]})")
            results.append(result)
        with QAClient(args.protocol, url) as client:
            sizes = client.executed_batch_sizes()
    print(f"answer: {expected[0]!r} (score {expected[1]:.3f})")
    print(format_table(results, args.protocol))
    if baseline_ms is not None:
        print(f"in-process reference (same model and parameters, no server, one request at a time): "
              f"median {baseline_ms:.1f} ms")
    print("model executions by batch size: " + ", ".join(f"{b}: {n}" for b, n in sorted(sizes.items())))
    return 0
