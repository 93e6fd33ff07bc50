"""bertrt's Python API: the functions behind the `bertrt` commands, for notebooks and scripts.

Each function takes paths and plain values and raises `bertrt.errors.BertrtError` on bad input (the CLI prints that
as one line). The CLI calls these same functions (`infer`/`squad` open a `QASession`, alias `QuestionAnswerer`;
`quantize`, `build` and `calibrate` call the same stage functions from their stage's cli module), and every check
(inputs, and outputs that would overwrite an input) happens inside the stage functions, so a notebook is protected
as the command line is and the two cannot drift apart.

    from bertrt import api
    api.export_model("models/minilm-l6-h384-squad11", "out/model.onnx")
    api.fuse("out/model.onnx", "out/model.ort.onnx", target="ort")
    with api.QASession("out/model.ort.onnx", "models/minilm-l6-h384-squad11/vocab.txt") as qa:
        print(qa.answer(passage, ["What is TensorRT?"])[0].text)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from pathlib import Path

from bertrt.artifacts import check_outputs, tool_versions
from bertrt.build.engine_build import BuildRequest, build
from bertrt.calibration.quantize import quantize as _quantize
from bertrt.errors import BertrtError
from bertrt.export.onnx_export import export
from bertrt.output import bar
from bertrt.profiles import default_profile, parse_profile
from bertrt.qa.postprocess import Answer
from bertrt.qa.tokenizer import tokenizer_for
from bertrt.resources import embedded_vocab, squad_dev
from bertrt.run.compare import check_counts, compare, feature_batches, synthetic_batches, vocab_size_of
from bertrt.run.perf import check_shapes, perf_outputs, runtime_variants, time_backend, write_results
from bertrt.run.perf_gpu import sweep
from bertrt.runtimes import open_backend, read_artifact, run_options
from bertrt.session import QASession, RunOptions, SquadParams, TokenProbabilities
from bertrt.surgery.pipeline import run_surgery

__all__ = ["SquadParams", "RunOptions", "Answer", "TokenProbabilities", "QASession", "QuestionAnswerer",
           "export_model", "fuse", "quantize", "build_engine", "compare_models", "squad_scores", "perf", "perf_gpu",
           "read_perf"]


def export_model(checkpoint: str | Path, output: str | Path, *, bert_config: str | Path | None = None,
                 vocab: str | Path | None = None, gelu: str | None = None, opset: int = 17,
                 progress: bool = False) -> Path:
    """TF1 checkpoint directory or Hugging Face safetensors -> bertrt ONNX (`bertrt export`)."""
    return export(Path(checkpoint), Path(output), config=Path(bert_config) if bert_config else None,
                  vocab=Path(vocab) if vocab else None, gelu=gelu, opset=opset, progress=progress)


def fuse(model: str | Path, output: str | Path, target: str = "ort", **options) -> dict:
    """Graph surgery for one target (`bertrt surgery`); returns the fusion report. Options: plugin_api, attention."""
    return run_surgery(Path(model), Path(output), target, **options)


def quantize(model: str | Path, output: str | Path, precision: str, **options) -> dict:
    """FP16 conversion or calibrated INT8/FP8 Q/DQ (`bertrt quantize`); returns what was done."""
    return _quantize(Path(model), Path(output), precision, **options)


def build_engine(model: str | Path, output: str | Path, profiles: list[str] | None = None, batch_size: int = 8,
                 seq_len: int = 384, runtime: str | None = None, precision: str | None = None, **options):
    """TensorRT engine (+ its sidecar) from a bertrt ONNX (`bertrt build`); returns the engine record. `profiles`
    are 'batch=MIN:OPT:MAX,seq=MIN:OPT:MAX' strings (default: batch 1..batch_size at seq_len); `runtime` is
    tensorrt, tensorrt-rtx or None (the installed one); other options are `BuildRequest` fields."""
    parsed = [parse_profile(p) for p in profiles] if profiles else [default_profile(batch_size, seq_len)]
    return build(BuildRequest(Path(model), Path(output), parsed, runtime, precision, **options))


# The QA session is bertrt.session.QASession; `QuestionAnswerer` is its name here (older notebooks use it).
QuestionAnswerer = QASession


def compare_models(a: str | Path, b: str | Path, squad_json: str | Path | None = None,
                   vocab: str | Path | None = None, num_features: int = 8, batch_size: int = 4,
                   seq_len: int | None = None, per_layer: bool = False, options: RunOptions | None = None,
                   synthetic: bool = False, fallback_vocab: str | Path | None = None, **backend_options) -> list:
    """Worst absolute/relative logit errors of model `b` against reference `a` (`bertrt compare`); one row per
    compared tensor. Inputs: real SQuAD features of `squad_json` (default: the shipped SQuAD v1.1 dev) tokenized
    with the tokenizer stored with `a` (`vocab` overrides it; `fallback_vocab`, default the embedded model's, serves
    models without one), or with `synthetic` random token ids (Polygraphy's data loader). `seq_len` None: 384, or
    the models' maximum where they have fewer positions. Both models run with `options` (RunOptions fields as
    keywords also work)."""
    check_counts(num_features, batch_size)
    vocab_size = vocab_size_of(Path(a), Path(b))
    if seq_len is None:
        seq_len = min([384] + [read_artifact(Path(m)).config.max_position_embeddings for m in (a, b)])
    if synthetic:
        batches = synthetic_batches(vocab_size, num_features, batch_size, seq_len)
    else:
        tokenizer = tokenizer_for(Path(a), vocab, vocab_size, fallback_vocab or embedded_vocab())
        batches = feature_batches(Path(squad_json or squad_dev()), tokenizer, num_features, batch_size, seq_len)
    options = run_options(options, **backend_options)
    return compare(Path(a), Path(b), batches, per_layer=per_layer, options=options)


def squad_scores(model: str | Path, squad_json: str | Path, vocab: str | Path | None, output: str | Path,
                 limit: int | None = None, params: SquadParams | None = None, batch_size: int | None = None,
                 options: RunOptions | None = None, **backend_options) -> dict:
    """`QASession(...).squad(...)` in one call: the report of a SQuAD run (scores, timing, parameters). The batch
    size is `batch_size`, else the options', else 8."""
    if batch_size is not None:
        backend_options["batch_size"] = batch_size
    with QASession(model, vocab, params, options=options, **backend_options) as qa:
        return qa.squad(squad_json, output, limit=limit)


def perf(models: list[str | Path], batches: list[int], seqs: list[int], output: str | Path, warmup: int = 3,
         runs: int = 20, options: RunOptions | None = None, progress: bool = False, fit_positions: bool = False,
         runtimes: list[str] | None = None, thread_counts: list[int] | None = None, **backend_options) -> list:
    """Latency of each model over batch x seq (`bertrt perf`), all in one process with models interleaved per
    shape so that drift of the machine affects every model alike; writes `output` JSON and a CSV beside it. Every
    model runs with `options` (RunOptions fields as keywords also work: provider=, threads=, buckets=, ...).
    `fit_positions` (the default lengths, not asked for): lengths beyond the models' positions become that maximum.

    Runtimes side by side: `runtimes` (["onnxruntime", "openvino:f32", "openvino:bf16"]) runs each model on each
    RUNTIME[:PRECISION] (the first is the speed-up's base), and `thread_counts` ([1, 2, 0]; 0: all cores) repeats
    the whole grid per intra-op thread count; the runtime column then reads e.g. `openvino-bf16 2t`."""
    if not models or min([*batches, *seqs, runs, 1]) < 1 or warmup < 0:
        raise BertrtError("perf needs at least one model, and positive batches, sequence lengths and runs")
    if thread_counts and min(thread_counts) < 0:
        raise BertrtError(f"thread counts must be positive (0: all cores), got {thread_counts}")
    check_outputs(perf_outputs(Path(output)), models)
    options = run_options(options, **backend_options)
    variants = runtime_variants(runtimes) if runtimes else [(options.runtime, options.precision)]
    sweep_threads = thread_counts or [options.threads or 0]
    opened = [[(Path(m), t, open_backend(Path(m), dataclasses.replace(options, runtime=r, precision=p,
                                                                    threads=t or None)))
               for m in models for r, p in variants] for t in sweep_threads]
    if fit_positions:
        positions = min(backend.config.max_position_embeddings for _, _, backend in opened[0])
        seqs = sorted({min(seq, positions) for seq in seqs})
    for _, _, backend in opened[0]:  # every shape checked (model, profiles, memory) before any model is loaded
        check_shapes(backend.config, batches, seqs)
        for batch in batches:
            for seq in seqs:
                backend.check_shape(batch, seq)
    timings = []
    for group in opened:  # one thread count at a time (each loaded only while it is timed)
        with contextlib.ExitStack() as stack:
            backends = [(path, t, stack.enter_context(backend)) for path, t, backend in group]
            progress_bar = stack.enter_context(bar(len(batches) * len(seqs) * len(backends), "perf", progress,
                                                   "shape"))
            for batch in batches:
                for seq in seqs:
                    for path, t, backend in backends:
                        label = backend.runner.name.split(":")[0]
                        if thread_counts:
                            label += f" {t or os.cpu_count()}t"
                        progress_bar.set_postfix_str(f"{path.name} {label} batch {batch} seq {seq}")
                        timings.append(time_backend(backend, path.name, batch, seq, warmup, runs, label))
                        progress_bar.update(1)
    write_results(timings, Path(output), {"provider": options.provider, "clock": "host", **_machine()})
    return timings


def perf_gpu(models: list[str | Path], random_bert: list[str], batches: list[int], seqs: list[int],
             output: str | Path, warmup: int = 5, runs: int = 100, cuda_graph: bool = False, peers: bool = True,
             vocab: str | Path | None = None, options: RunOptions | None = None) -> list:
    """`bertrt perf --provider cuda`: device-side (CUDA event) latency of the given models and of random-weight
    BERT-Base/Large (`random_bert`, built from their configs; needs torch + transformers) on bertrt's IOBinding
    runner (and CUDA graphs), with torch eager / torch + CUDA graph as peers; writes JSON, CSV and PNG. `options`
    (e.g. its runtime, threads) is how every model is opened; the sweep sets the provider, stream and CUDA graphs."""
    check_outputs(perf_outputs(Path(output)), [*models, vocab])
    timings, meta = sweep([Path(m) for m in models], list(random_bert), Path(output).parent,
                          Path(vocab) if vocab else None, batches, seqs, warmup, runs, cuda_graph, peers,
                          options=options or RunOptions(provider="cuda"))
    write_results(timings, Path(output), {**meta, **_machine()})
    return timings


def _machine() -> dict:
    """Where a timing was taken (recorded in every perf JSON)."""
    return {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "tools": tool_versions()}


def read_perf(path: str | Path) -> list[dict]:
    """The timings of a `bertrt perf` JSON (one dict per model × batch × seq)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        timings = data["timings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BertrtError(f"{path}: not a bertrt perf JSON ({exc})") from None
    return timings
