#!/usr/bin/env python3
"""The GPU serving measurement of issue 20 in one command: Triton (`bertrt serve`'s TritonServer) on the embedded
FP16 `ort` model with the GPU runtime options (CUDA provider, sequence-length buckets, CUDA graphs), loaded over gRPC
by several client processes at c1, c64, c256 and c512, for each instance count x max batch size; then the same on
two GPUs (`--gpus 0,1`) when the machine has them. One table on stdout, everything in <out>/gpu_serve_bench.json.

    python scripts/gpu_serve_bench.py --model model.ort.fp16.onnx --vocab vocab.txt --out "$OUT"

Cores: the server (tritonserver, its HTTP/gRPC threads and the Python-backend stubs that tokenize and post-process)
is pinned to the first --server-cores cores, the client processes to the rest (default: half each; on 16 cores,
0-7 and 8-15). Client processes per level: one per 32 concurrent requests (one Python client saturates near 64),
at most one per client core. Each level runs --seconds (time-bounded, not request-bounded); every answer is
checked against the server's first answer. A budget (--budget-s) skips what would not fit, saying so.

CPU smoke test (no GPU; what tests/test_gpu_serve_bench.py runs):
    python scripts/gpu_serve_bench.py --model model.onnx --vocab vocab.txt --provider cpu --no-cuda-graph \\
        --instances 1 --max-batch-sizes 8 --concurrency 1 4 --seconds 2 --out /tmp/gsb
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bertrt.runtimes import RunOptions
from bertrt.runtimes.buckets import DEFAULT_BUCKETS, parse_buckets
from bertrt.serve.cli import free_port
from bertrt.serve.client import QAClient, load
from bertrt.serve.gpus import gpu_count
from bertrt.serve.python_model import PROFILE_DIR_ENV
from bertrt.serve.repository import DEFAULT_BATCHING, DEFAULT_SESSION, Batching, ServingParams, write_repository
from bertrt.serve.server import Endpoints, TritonServer
from bertrt.qa.squad_data import Example
from bertrt.session import QASession, SquadParams
from bertrt.session.answering import answer

PASSAGE = ("TensorRT is a high performance deep learning inference platform that delivers low latency and high "
           "throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to "
           "import models, and plugins to support novel ops and layers before applying optimizations for inference. "
           "Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can "
           "customize and extend these components to take advantage of powerful TensorRT optimizations for your "
           "apps.")
QUESTION = "What is TensorRT?"


def _env_list(name: str, default: str) -> list[str]:
    return os.environ.get(name, default).split()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the served QA model (the embedded FP16 `ort` ONNX)")
    p.add_argument("--vocab", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-serve-bench")),
                   help="where the JSON and the Triton logs go (default: $OUT)")
    p.add_argument("--provider", choices=("cuda", "cpu"), default=os.environ.get("GSB_PROVIDER", "cuda"))
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false", help="(CUDA graphs are on with cuda)")
    p.add_argument("--buckets", default=os.environ.get("GSB_BUCKETS", ",".join(map(str, DEFAULT_BUCKETS))))
    serving = DEFAULT_SESSION["cuda"]
    p.add_argument("--batch-size", type=int, default=int(os.environ.get("GSB_BATCH_SIZE", serving.batch_size)),
                   help="windows per model run (default: serving's on cuda, %(default)s)")
    p.add_argument("--batch-rows", default=os.environ.get("GSB_BATCH_ROWS", ",".join(map(str, serving.batch_rows))),
                   help="smaller row counts a batch of fewer windows runs padded to (default: serving's on cuda, "
                        "%(default)s; '' for none)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("GSB_THREADS", 0)) or None,
                   help="onnxruntime intra-op threads per instance (default with cuda: 1, so that idle pool threads "
                        "of several instances do not spin on the server's cores; with cpu: all)")
    p.add_argument("--instances", type=int, nargs="+", default=[int(v) for v in _env_list("GSB_INSTANCES", "4 6")],
                   help="instance counts to measure (per GPU)")
    p.add_argument("--max-batch-sizes", type=int, nargs="+",
                   default=[int(v) for v in _env_list("GSB_MAX_BATCH", "64")])
    p.add_argument("--max-queue-delay-us", type=int, default=int(os.environ.get("GSB_DELAY_US", -1)),
                   help="dynamic batcher delay (default: the provider's serving default)")
    p.add_argument("--concurrency", type=int, nargs="+",
                   default=[int(v) for v in _env_list("GSB_CONCURRENCY", "1 256 384 512")])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("GSB_SECONDS", 6)),
                   help="load time per concurrency level")
    p.add_argument("--server-cores", type=int, default=int(os.environ.get("GSB_SERVER_CORES", 0)),
                   help="cores for the server (default: 10 of 16, half elsewhere); the clients get the others")
    p.add_argument("--multi-gpu-instances", type=int, default=int(os.environ.get("GSB_MULTI_INSTANCES", 6)),
                   help="instances per GPU in the two-GPU run")
    p.add_argument("--multi-gpu-max-batch", type=int, default=int(os.environ.get("GSB_MULTI_MAX_BATCH", 64)))
    p.add_argument("--budget-s", type=float, default=float(os.environ.get("GSB_BUDGET_S", 420)),
                   help="stop starting new configurations after this many seconds")
    p.add_argument("--protocol", choices=("grpc", "http"), default=os.environ.get("GSB_PROTOCOL", "http"),
                   help="HTTP (default): Triton's HTTP front end and the HTTP client cost less CPU per request "
                        "than gRPC's (docs/serving.md)")
    p.add_argument("--in-process", type=int, nargs="*", default=[int(v) for v in _env_list("GSB_IN_PROCESS", "1 16 64")],
                   help="first, the same requests answered in this process by a QASession with the served options: "
                        "these batch sizes (none: skip)")
    p.add_argument("--profile", action="store_true",
                   help="profile every stub's execute (cProfile, %s) and write the top functions per "
                        "configuration to <out>/profile-<config>.txt (slows the stubs)" % PROFILE_DIR_ENV)
    args = p.parse_args(argv)
    if args.provider == "cpu":
        args.cuda_graph = False
    elif args.threads is None:
        args.threads = 1
    return args


def split_cores(server_cores: int) -> tuple[list[int], list[int]]:
    """(server cores, client cores) out of the cores this process may use."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1:
        return cores, cores
    # 10 of 16 measured best on the H200 machine (the clients need ~5 cores at 15,000 req/s); half elsewhere
    n = server_cores or (10 if len(cores) == 16 else len(cores) // 2)
    n = max(1, min(n, len(cores) - 1))
    return cores[:n], cores[n:]


def client_processes(concurrency: int, client_cores: int) -> int:
    return max(1, min(client_cores, math.ceil(concurrency / 32)))


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.startswith("GPU ")]


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for module in ("onnxruntime", "tritonclient", "numpy", "tokenizers"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # absent or without __version__: recorded as such
            versions[module] = None
    return versions


def _batch_counts(client: QAClient) -> dict[int, int]:
    return client.executed_batch_sizes()


def _mean_batch(before: dict[int, int], after: dict[int, int]) -> float | None:
    runs = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    executions = sum(runs.values())
    return sum(b * n for b, n in runs.items()) / executions if executions else None


def served_options(args) -> RunOptions:
    return RunOptions(provider=args.provider, buckets=parse_buckets(args.buckets) if args.buckets else None,
                      batch_size=args.batch_size, cuda_graph=args.cuda_graph, threads=args.threads,
                      batch_rows=parse_buckets(args.batch_rows, "--batch-rows") if args.batch_rows else None)


def in_process(args, server_cores) -> list[dict]:
    """The served requests answered in this process (a QASession with the served options, as one stub runs them),
    n at a time: the floor a Triton instance adds its overhead to. Median of 50 calls after 10 warm-up calls; the
    model, feature and post-processing parts come from the session's own clocks."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, server_cores[:1])  # one core, as one stub's Python has
    rows = []
    try:
        with QASession(args.model, args.vocab, SquadParams(), options=served_options(args)) as qa:
            for n in args.in_process:
                examples = [Example(qas_id=str(i), question=QUESTION, context=PASSAGE) for i in range(n)]
                runs = []
                for k in range(60):
                    t0 = time.perf_counter()
                    run = answer(qa.backend, qa.tokenizer, examples, qa.params, qa.batch_size,
                                 truncate_question=False, keep_nbest=False)
                    if k >= 10:
                        runs.append((time.perf_counter() - t0, run.seconds, run.feature_seconds, run.post_seconds))
                med = [sorted(col)[len(col) // 2] * 1000 for col in zip(*runs)]
                rows.append({"requests": n, "ms": round(med[0], 3), "model_ms": round(med[1], 3),
                             "features_ms": round(med[2], 3), "post_ms": round(med[3], 3),
                             "us_per_request": round(med[0] * 1000 / n, 1), "answer": run.answers[0].text})
                r = rows[-1]
                print(f"in process, {n} requests per call: {r['ms']:.2f} ms ({r['us_per_request']:.0f} us/request; "
                      f"model {r['model_ms']:.2f}, features {r['features_ms']:.2f}, post {r['post_ms']:.2f} ms)",
                      flush=True)
    finally:
        os.sched_setaffinity(0, affinity)
    return rows


def _write_profile(profile_dir: Path, out: Path) -> None:
    """The stubs' profiles of one configuration, merged: the top functions by own time and by cumulative time."""
    files = sorted(profile_dir.glob("*.pstats"))
    if not files:
        return
    text = io.StringIO()
    stats = pstats.Stats(*map(str, files), stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    out.write_text(text.getvalue())
    for f in files:
        f.unlink()


def run_config(args, name: str, batching: Batching, server_cores, client_cores, work: Path) -> list[dict]:
    """One server configuration: start, warm up, every concurrency level; rows of the table."""
    options = served_options(args)
    params = ServingParams(model="", vocab="", squad=SquadParams(), options=options, max_input_bytes=100_000)
    repository = write_repository(work / name / "repository", args.model, args.vocab, batching, params)
    endpoints = Endpoints("127.0.0.1", free_port(), free_port())
    os.sched_setaffinity(0, server_cores)  # tritonserver and its stubs inherit it
    t0 = time.perf_counter()
    server = TritonServer(repository, endpoints, ready_timeout_s=300, log_file=args.out / f"{name}.tritonserver.log")
    try:
        server.__enter__()
    finally:
        os.sched_setaffinity(0, client_cores)  # this process and the spawned clients
    rows = []
    try:
        start_s = time.perf_counter() - t0
        url = endpoints.grpc_url if args.protocol == "grpc" else endpoints.http_url
        with QAClient(args.protocol, url) as client:
            expected = client.ask(PASSAGE, QUESTION)
            for _ in range(20):
                client.ask(PASSAGE, QUESTION)
        # a short burst at the highest level, not recorded: the batcher's and the stubs' first large batches
        load(args.protocol, url, PASSAGE, QUESTION, max(args.concurrency), 10**6, min(2.0, args.seconds),
             processes=client_processes(max(args.concurrency), len(client_cores)))
        for concurrency in args.concurrency:
            with QAClient(args.protocol, url) as client:
                before = _batch_counts(client)
            cpu_before = server.cpu_seconds()
            processes = client_processes(concurrency, len(client_cores))
            result = load(args.protocol, url, PASSAGE, QUESTION, concurrency, 10**6, args.seconds,
                          processes=processes)
            cpu = {k: v - cpu_before[k] for k, v in server.cpu_seconds().items()}
            with QAClient(args.protocol, url) as client:
                after = _batch_counts(client)
            answered = max(1, len(result.answers))
            wrong = sum(a[0] != expected[0] for a in result.answers)
            rows.append({"config": name, "gpus": list(batching.gpus) or None, "instances": batching.instances,
                         "max_batch_size": batching.max_batch_size,
                         "max_queue_delay_us": batching.max_queue_delay_us, "concurrency": concurrency,
                         "client_processes": result.processes, "answered": len(result.answers),
                         "errors": len(result.errors), "wrong_answers": wrong,
                         "first_error": (result.errors or [None])[0],
                         "req_per_s": round(result.throughput, 1), "p50_ms": round(result.percentile_ms(50), 2),
                         "p99_ms": round(result.percentile_ms(99), 2),
                         "mean_batch": round(m, 1) if (m := _mean_batch(before, after)) else None,
                         "client_cpu_cores": round(result.client_cores, 2), "server_start_s": round(start_s, 1),
                         # host CPU per answered request: Triton's own process, and the stubs together
                         "server_cpu_us": round(cpu["server"] / answered * 1e6, 1),
                         "stub_cpu_us": round(cpu["stubs"] / answered * 1e6, 1),
                         "client_cpu_us": round(result.client_cpu_s / answered * 1e6, 1),
                         "answer": expected[0]})
            print(_row(rows[-1]), flush=True)
    finally:
        server.stop()
        if args.profile:
            _write_profile(Path(os.environ[PROFILE_DIR_ENV]), args.out / f"profile-{name}.txt")
    return rows


HEADER = ("| GPUs | instances | max batch | conc. | client procs | answered | errors | req/s | p50 ms | p99 ms | "
          "mean batch | client CPU | CPU µs/request: triton, stubs, client |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def _row(r: dict) -> str:
    gpus = ",".join(map(str, r["gpus"])) if r["gpus"] else "-"
    errors = r["errors"] + r["wrong_answers"]
    return (f"| {gpus} | {r['instances']} | {r['max_batch_size']} | {r['concurrency']} | {r['client_processes']} | "
            f"{r['answered']} | {errors} | {r['req_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['mean_batch'] if r['mean_batch'] is not None else '-'} | {r['client_cpu_cores']:.2f} | "
            f"{r['server_cpu_us']:.0f}, {r['stub_cpu_us']:.0f}, {r['client_cpu_us']:.0f} |")


def _run_plan(args, plan, report: dict, server_cores, client_cores, work: Path, t_start: float) -> None:
    for name, batching in plan:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            line = f"{name} skipped: {elapsed:.0f} s spent of the {args.budget_s:.0f} s budget"
            print(line, flush=True)
            report["skipped"].append(line)
            continue
        try:
            report["rows"] += run_config(args, name, batching, server_cores, client_cores, work)
        except Exception as exc:  # one failed configuration must not lose the others (BertrtError included)
            line = f"{name} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            print(line, flush=True)
            report["failed"].append({"config": name, "error": line, "traceback": traceback.format_exc()})
        (args.out / "gpu_serve_bench.json").write_text(json.dumps(report, indent=1))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    server_cores, client_cores = split_cores(args.server_cores)
    delay = args.max_queue_delay_us if args.max_queue_delay_us >= 0 else \
        DEFAULT_BATCHING[args.provider].max_queue_delay_us
    gpus_here = gpu_count()
    plan = [(f"i{i}-b{b}", Batching(b, delay, i)) for i in args.instances for b in args.max_batch_sizes]
    multi = None
    if args.provider != "cuda":
        multi = "two-GPU run skipped: --provider cpu"
    elif gpus_here < 2:
        multi = f"two-GPU run skipped: {gpus_here} GPU here"
    else:
        plan.append((f"gpus01-i{args.multi_gpu_instances}-b{args.multi_gpu_max_batch}",
                     Batching(args.multi_gpu_max_batch, delay, args.multi_gpu_instances, gpus=(0, 1))))
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "host": socket.gethostname(), "cores": len(os.sched_getaffinity(0)), "server_cores": server_cores,
              "client_cores": client_cores, "gpus": _gpu_names(), "versions": _versions(),
              "command": " ".join([sys.executable, *sys.argv]),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "rows": [], "skipped": [], "failed": []}
    print(f"server cores {server_cores[0]}-{server_cores[-1]}, client cores {client_cores[0]}-{client_cores[-1]}; "
          f"{len(plan)} configurations x concurrency {args.concurrency}, {args.seconds:g} s each; "
          f"{gpus_here} GPU(s)", flush=True)
    if multi:
        print(multi, flush=True)
        report["skipped"].append(multi)
    if args.in_process:
        report["in_process"] = in_process(args, server_cores)
    if args.profile:
        profile_dir = Path(tempfile.mkdtemp(prefix="gsb-profile-"))
        os.environ[PROFILE_DIR_ENV] = str(profile_dir)  # the server and its stubs inherit it
    print(HEADER, flush=True)
    # repositories (hard links of the model) outside --out: on the device machine everything under $OUT travels back
    work = Path(tempfile.mkdtemp(prefix="gpu-serve-bench-"))
    try:
        _run_plan(args, plan, report, server_cores, client_cores, work, t_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    (args.out / "gpu_serve_bench.json").write_text(json.dumps(report, indent=1))
    print(f"\n{HEADER}\n" + "\n".join(_row(r) for r in report["rows"]))
    for line in report["skipped"] + [f["error"] for f in report["failed"]]:
        print(line)
    print(f"done in {report['seconds']:.0f} s; {args.out / 'gpu_serve_bench.json'}")
    bad = report["failed"] or any(r["errors"] or r["wrong_answers"] for r in report["rows"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
