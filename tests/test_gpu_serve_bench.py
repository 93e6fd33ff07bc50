"""scripts/gpu_serve_bench.py end to end on the CPU (the smoke test of the H200 measurement): a real tritonserver,
two configurations, two concurrency levels, tiny time limits; the JSON has every row, no error, the classic answer,
and the two-GPU run is skipped with a line saying why. ~30 s on the 2-core machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import VOCAB
from test_serve import CLASSIC_ANSWER, needs_server

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_serve_bench.py"


@needs_server
def test_gpu_serve_bench_runs_end_to_end_on_the_cpu(embedded_onnx, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(embedded_onnx), "--vocab", str(VOCAB),
                          "--provider", "cpu", "--buckets", "", "--instances", "1", "2", "--max-batch-sizes", "8",
                          "--concurrency", "1", "3", "--seconds", "1.5", "--out", str(out)],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "gpu_serve_bench.json").read_text())
    rows = report["rows"]
    assert [(r["instances"], r["concurrency"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r["answered"] > 0 and r["errors"] == r["wrong_answers"] == 0 for r in rows)
    assert {r["answer"] for r in rows} == {CLASSIC_ANSWER}
    assert report["skipped"] == ["two-GPU run skipped: --provider cpu"] and not report["failed"]
    assert "| GPUs | instances | max batch |" in run.stdout and "two-GPU run skipped" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["gpu_serve_bench.json", "i1-b8.tritonserver.log",
                                                     "i2-b8.tritonserver.log"]  # no model copies travel back


def test_cores_split_between_server_and_clients():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_serve_bench as bench
    finally:
        sys.path.pop(0)
    cores = sorted(os.sched_getaffinity(0))
    server, clients = bench.split_cores(0)
    assert sorted(set(server + clients)) == cores and server and clients
    if len(cores) > 1:
        assert not set(server) & set(clients) and len(server) == max(1, len(cores) // 2)
    assert [bench.client_processes(c, 8) for c in (1, 64, 256, 512)] == [1, 2, 8, 8]
