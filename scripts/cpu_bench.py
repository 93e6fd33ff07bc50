"""End-to-end CPU comparison in one run (docs/cpu-runtimes.md): the same SQuAD v1.1 dev questions answered by
`bertrt squad` on each CPU runtime x precision, and by the Hugging Face transformers 4.x `pipeline("question-
answering")` (torch) as the peer users would otherwise run. Prints seconds end to end (tokenize -> model -> answers,
model load excluded), EM/F1 and the speed-up against `bertrt squad` on onnxruntime FP32 (the default before
OpenVINO) and against the pipeline.

    .venv/bin/python scripts/cpu_bench.py --limit 1000 --torch-python /work/venv-torch/bin/python \
        [--int8 out/.../model.native.int8.onnx] [--only ort-fp32 ov-int8 ...] [--output bench.json]

The export, the `native` target and the OpenVINO INT8 artifact (`bertrt quantize --precision int8 --runtime
openvino`, out/<config>/model.int8-openvino.onnx) are made first if missing; the pipeline's model directory is
converted from the embedded checkpoint by scripts/hf_qa_peer.py. Runs are sequential: on a shared machine, repeat
with --rounds 2 and read the best of each; the `others` column is the CPU seconds other processes used meanwhile
(0 on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bertrt import api
from bertrt.pipeline_config import load_config
from bertrt.qa.squad_data import load_squad, select_examples
from bertrt.qa.squad_metrics import evaluate
from bertrt.runtimes import RunOptions

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (feature workers, the pipeline's process): on a shared
    machine the work done, where wall time also counts waiting for the cores."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def busy_seconds() -> float:
    """CPU seconds every process of the machine has used (user + system, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def bertrt_run(model: Path, dev: Path, vocab: Path, limit: int | None, batch: int, options: RunOptions,
               work: Path) -> dict:
    t0, c0, b0 = time.perf_counter(), cpu_seconds(), busy_seconds()
    report = api.squad_scores(model, dev, vocab, work / "p.json", limit=limit, batch_size=batch, options=options)
    mine = cpu_seconds() - c0
    return {"seconds": report["wall_seconds"], "model_seconds": report["model_seconds"],
            "with_load": round(time.perf_counter() - t0, 2), "cpu_seconds_with_load": round(mine, 1),
            "others_cpu_seconds": round(busy_seconds() - b0 - mine, 1),
            "em": report["scores"]["exact_match"], "f1": report["scores"]["f1"], "backend": report["backend"]}


def pipeline_run(torch_python: str, hf_model: Path, dev: Path, limit: int | None, threads: int, work: Path) -> dict:
    out = work / "hf.json"
    cmd = [torch_python, str(ROOT / "scripts" / "hf_qa_peer.py"), "run", "--model", str(hf_model), "--squad-json",
           str(dev), "--output", str(out), "--threads", str(threads)] + (["--limit", str(limit)] if limit else [])
    c0 = cpu_seconds()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    cpu = round(cpu_seconds() - c0, 1)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    predictions = json.loads(out.read_text())
    examples, dataset = load_squad(dev)
    qids = {ex.qas_id for ex in select_examples(examples, limit)}
    data = [{**a, "paragraphs": [{**p, "qas": [q for q in p["qas"] if q["id"] in qids]} for p in a["paragraphs"]]}
            for a in dataset["data"]]
    scores = evaluate(data, predictions, "1.1")
    return {"seconds": info["seconds"], "with_load": round(info["seconds"] + info["load_seconds"], 2),
            "cpu_seconds_with_load": cpu,
            "em": scores["exact_match"], "f1": scores["f1"],
            "backend": f"transformers {info['transformers']} pipeline, torch {info['torch']}, batch {info['batch_size']}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="first N dev questions (default: all 10,570)")
    p.add_argument("--torch-python", help="a Python with torch + transformers 4.x for the pipeline peer")
    p.add_argument("--int8", type=Path, help="also an INT8 Q/DQ artifact on onnxruntime and OpenVINO")
    p.add_argument("--only", nargs="+", help="run only these runners (keys: ort-fp32 ov-f32 ov-bf16 ov-bf16-native "
                                             "ov-bf16-native-b32 ov-int8 ort-int8-arg ov-int8-arg pipeline)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--output", type=Path)
    a = p.parse_args()
    cfg = load_config(None)
    out = cfg.out_dir
    export, native = out / "model.onnx", out / "model.native.onnx"
    if not export.exists():
        api.export_model(cfg.get("model", "checkpoint"), export)
    if not native.exists():
        api.fuse(export, native, target="native")
    dev, vocab = Path(cfg.get("data", "dev")), Path(cfg.get("model", "vocab"))
    hf_model = out / "hf-minilm"
    if a.torch_python and not (hf_model / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "hf_qa_peer.py"), "convert", "--output",
                        str(hf_model)], check=True)
    ov_int8 = out / "model.int8-openvino.onnx"
    if not ov_int8.exists():  # what `bertrt optimize` makes for the CPU default
        api.quantize(export, ov_int8, "int8", runtime="openvino")
    t = a.threads
    runs = [  # (key, label, model, batch, options); the first is `bertrt squad` as it was before OpenVINO
        ("ort-fp32", "bertrt squad, onnxruntime FP32 (unfused)", export, 8, RunOptions(runtime="onnxruntime",
                                                                                       threads=t)),
        ("ov-f32", "bertrt squad, OpenVINO f32 (unfused)", export, 8,
         RunOptions(runtime="openvino", precision="f32", threads=t)),
        ("ov-bf16", "bertrt squad, OpenVINO bf16 (unfused)", export, 8,
         RunOptions(runtime="openvino", precision="bf16", threads=t)),
        ("ov-bf16-native", "bertrt squad, OpenVINO bf16 (native)", native, 8,
         RunOptions(runtime="openvino", precision="bf16", threads=t)),
        ("ov-bf16-native-b32", "bertrt squad, OpenVINO bf16 (native), batch 32", native, 32,
         RunOptions(runtime="openvino", precision="bf16", threads=t)),
        ("ov-int8", "bertrt squad, OpenVINO INT8 (quantize --runtime openvino, unfused)", ov_int8, 8,
         RunOptions(runtime="openvino", threads=t)),
    ]
    if a.int8:
        runs += [("ort-int8-arg", "bertrt squad, onnxruntime INT8 Q/DQ", a.int8, 8,
                  RunOptions(runtime="onnxruntime", threads=t)),
                 ("ov-int8-arg", "bertrt squad, OpenVINO INT8 Q/DQ (bf16 float parts)", a.int8, 8,
                  RunOptions(runtime="openvino", precision="bf16", threads=t))]
    runs = [r for r in runs if not a.only or r[0] in a.only]
    peer_wanted = a.torch_python and (not a.only or "pipeline" in a.only)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            for _, label, model, batch, options in runs:
                results.setdefault(label, []).append(bertrt_run(model, dev, vocab, a.limit, batch, options, Path(tmp)))
                print(label, results[label][-1], flush=True)
            if peer_wanted:
                label = "transformers pipeline (peer), batch 8"
                results.setdefault(label, []).append(pipeline_run(a.torch_python, hf_model, dev, a.limit, t,
                                                                  Path(tmp)))
                print(label, results[label][-1], flush=True)
    best = {label: min(rs, key=lambda r: r["seconds"]) for label, rs in results.items()}
    base = best[runs[0][1]]["seconds"]
    peer = best.get("transformers pipeline (peer), batch 8", {}).get("seconds")
    print(f"\n{a.limit or 'all'} questions, {t} threads, best of {a.rounds}; seconds end to end, model load excluded")
    print("| runner | seconds | model s | CPU seconds (with load) | others' CPU s | EM | F1 | vs bertrt squad FP32 "
          "| vs pipeline |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, r in best.items():
        vs_peer = f"{peer / r['seconds']:.2f}x" if peer else ""
        print(f"| {label} | {r['seconds']:.1f} | {r.get('model_seconds', '')} | {r['cpu_seconds_with_load']:.1f} | "
              f"{r.get('others_cpu_seconds', '')} | {r['em']:.2f} | {r['f1']:.2f} | {base / r['seconds']:.2f}x | "
              f"{vs_peer} |")
    if a.output:
        a.output.write_text(json.dumps({"limit": a.limit, "threads": t, "rounds": results}, indent=1))


if __name__ == "__main__":
    main()
