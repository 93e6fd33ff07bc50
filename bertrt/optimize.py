"""`bertrt optimize`: the whole pipeline in one command (as `optimum-cli export` is for Optimum). From a checkpoint
it writes every artifact into one folder: the export, the fused graph of a target, the precision stage, optionally
a TensorRT engine; then a parity/accuracy report (compare against the export + a SQuAD subset of the shipped dev
set, for the export and for the final model) and the exact `bertrt` commands that make the same artifacts
(commands.sh). Built from the `bertrt.api` functions in this process, not from subprocesses.

INT8 is made for where the final model will run: with --build, the TensorRT placement (quantize's defaults); without,
the recipe of the runtime that runs ONNX models here by default (`Runtime.int8`: OpenVINO's on the CPU, SmoothQuant
with every weight GEMM in INT8, docs/cpu-runtimes.md), so `bertrt optimize` alone gives the CPU its fastest
artifact."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from bertrt import api
from bertrt.artifacts import write_json_atomic
from bertrt.errors import BertrtError
from bertrt.output import bar
from bertrt.resources import embedded_vocab, squad_dev
from bertrt.runtimes import default_runtime

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
REPORT = "optimize.json"
COMMANDS = "commands.sh"


@dataclass
class OptimizeRequest:
    checkpoint: Path
    output_dir: Path
    target: str = "native"
    precision: str = "int8"
    build: bool = False
    runtime: str | None = None  # engine runtime (None: the installed one)
    vocab: Path | None = None  # default: beside the checkpoint, else the embedded model's
    squad_json: Path | None = None  # default: the shipped SQuAD v1.1 dev
    squad_limit: int = 100  # questions of the accuracy check
    compare_features: int = 8
    calib_num: int = 256
    progress: bool = False
    steps: list[dict] = field(default_factory=list)


def _command(*argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in ("bertrt", *argv))


def _step(request: OptimizeRequest, name: str, command: str, run):
    """Run one stage, recording its command, seconds and result."""
    t0 = time.perf_counter()
    result = run()
    request.steps.append({"step": name, "command": command, "seconds": round(time.perf_counter() - t0, 2)})
    return result


def _vocab(request: OptimizeRequest) -> Path:
    if request.vocab is not None:
        return request.vocab
    folder = request.checkpoint if request.checkpoint.is_dir() else request.checkpoint.parent
    return folder / "vocab.txt" if (folder / "vocab.txt").is_file() else embedded_vocab()


def int8_runtime(request: OptimizeRequest) -> str | None:
    """The runtime whose INT8 recipe the quantize stage uses: None with --build (an engine: quantize's defaults, the
    TensorRT placement), else the default ONNX runtime here when it declares one (OpenVINO)."""
    if request.precision != "int8" or request.build:
        return None
    runtime = default_runtime("onnx")
    return runtime.name if runtime is not None and runtime.int8 is not None else None


def optimize(request: OptimizeRequest) -> dict:
    """Run the pipeline of `request`; returns the report (also written to <output_dir>/optimize.json, with the
    commands in <output_dir>/commands.sh). Each stage's own checks apply (one-line BertrtError)."""
    if request.precision not in PRECISIONS:
        raise BertrtError(f"--precision must be one of {', '.join(PRECISIONS)}, not {request.precision!r}")
    if request.squad_limit < 1 or request.compare_features < 1:
        raise BertrtError("--squad-limit and --compare-features must be positive")
    out = request.output_dir
    out.mkdir(parents=True, exist_ok=True)
    vocab, squad_json = _vocab(request), request.squad_json or squad_dev()
    exported, fused = out / "model.onnx", out / f"model.{request.target}.onnx"
    final = fused if request.precision == "fp32" else out / f"model.{request.target}.{request.precision}.onnx"
    names = ["export", "surgery"] + ([] if request.precision == "fp32" else ["quantize"]) + \
        (["build"] if request.build else []) + ["compare", "squad", "squad"]  # squad: the export, then the final
    with bar(len(names), "optimize", request.progress, "stage") as progress:
        def stage(name: str, command: str, run):
            progress.set_postfix_str(name)
            result = _step(request, name, command, run)
            progress.update(1)
            return result

        stage("export", _command("export", "--checkpoint", request.checkpoint, "--output", exported),
              lambda: api.export_model(request.checkpoint, exported))
        stage("surgery", _command("surgery", "--input", exported, "--target", request.target, "--output", fused),
              lambda: api.fuse(exported, fused, target=request.target))
        if request.precision != "fp32":
            recipe = int8_runtime(request)
            stage("quantize", _command("quantize", "--input", fused, "--precision", request.precision, "--output",
                                       final, "--calib-num", request.calib_num, "--vocab", vocab,
                                       *(["--runtime", recipe] if recipe else [])),
                  lambda: api.quantize(fused, final, request.precision, calib_num=request.calib_num, vocab=vocab,
                                       progress=request.progress, runtime=recipe))
        checked, engine_note = final, None
        compare_args = (squad_json, vocab, request.compare_features)
        if request.build:
            engine = final.with_suffix(".engine")
            runtime = ["--runtime", request.runtime] if request.runtime else []
            stage("build", _command("build", "--model", final, "--output", engine, *runtime),
                  lambda: api.build_engine(final, engine, runtime=request.runtime))
            try:  # the engine is what gets checked, where it can run (TensorRT-RTX builds without a GPU)
                rows = _step(request, "compare", _command("compare", exported, engine, "--squad-json", squad_json,
                                                          "--vocab", vocab, "--num-features", request.compare_features),
                             lambda: api.compare_models(exported, engine, *compare_args))
                checked = engine
            except BertrtError as exc:
                engine_note = f"{engine} built, not run here ({exc}); the checks below are of {final}"
        if checked == final:
            rows = stage("compare", _command("compare", exported, final, "--squad-json", squad_json, "--vocab", vocab,
                                             "--num-features", request.compare_features),
                         lambda: api.compare_models(exported, final, *compare_args))
        else:
            progress.update(1)
        scores = {}
        for label, model in (("export", exported), ("final", checked)):
            predictions = out / f"{model.stem}.predictions.json"
            report = stage("squad", _command("squad", "--model", model, "--vocab", vocab, "--squad-json", squad_json,
                                             "--limit", request.squad_limit, "--output", predictions),
                           lambda m=model, p=predictions: api.squad_scores(m, squad_json, vocab, p,
                                                                            limit=request.squad_limit))
            scores[label] = {"model": str(model), **{k: report["scores"][k] for k in ("exact_match", "f1")
                                                      if k in report["scores"]}}
    report = {
        "checkpoint": str(request.checkpoint), "target": request.target, "precision": request.precision,
        "int8_recipe": int8_runtime(request),
        "artifacts": {"export": str(exported), "fused": str(fused), "final": str(final),
                      **({"engine": str(final.with_suffix(".engine"))} if request.build else {})},
        "checked": str(checked), **({"engine_not_run": engine_note} if engine_note else {}),
        "parity": {"against": str(exported), "features": request.compare_features, "squad_json": str(squad_json),
                   "rows": [{"tensor": r.tensor, "worst_abs": float(r.worst_abs), "worst_rel": float(r.worst_rel)}
                            for r in rows]},
        "accuracy": {"questions": request.squad_limit, "squad_json": str(squad_json), **scores,
                     "delta_f1": round(scores["final"]["f1"] - scores["export"]["f1"], 3)},
        "steps": request.steps,
    }
    write_json_atomic(out / REPORT, report)
    lines = ["#!/usr/bin/env bash", f"# The commands `bertrt optimize` ran (as API calls), in order; see {REPORT}.",
             "set -euo pipefail", *(s["command"] for s in request.steps)]
    (out / COMMANDS).write_text("\n".join(lines) + "\n")
    return report


def format_report(report: dict) -> str:
    acc, parity = report["accuracy"], report["parity"]
    worst = max((r["worst_abs"] for r in parity["rows"]), default=0.0)
    lines = [f"{report['target']} {report['precision']}: {report['checked']}"]
    if report.get("engine_not_run"):
        lines.append(f"  engine: {report['engine_not_run']}")
    lines += [f"  parity against the export ({parity['features']} SQuAD features): worst |logit error| {worst:.3e}",
              f"  SQuAD ({acc['questions']} questions): export F1 {acc['export']['f1']:.2f}, final F1 "
              f"{acc['final']['f1']:.2f} ({acc['delta_f1']:+.2f})"]
    lines += [f"  {s['step']:<9}{s['seconds']:>8.1f} s  {s['command']}" for s in report["steps"]]
    return "\n".join(lines)
