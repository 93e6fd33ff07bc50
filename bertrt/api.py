"""bertrt's Python API: the functions behind the `bertrt` commands, for notebooks and scripts.

Each function takes paths and plain values and raises `bertrt.errors.BertrtError` on bad input (the CLI prints that
as one line). The CLI calls these same functions, so a notebook and the command line cannot drift apart.

    from bertrt import api
    api.export_model("models/minilm-l6-h384-squad11", "out/model.onnx")
    api.fuse("out/model.onnx", "out/model.ort.onnx", target="ort")
    with api.QuestionAnswerer("out/model.ort.onnx", "models/minilm-l6-h384-squad11/vocab.txt") as qa:
        print(qa.answer(passage, ["What is TensorRT?"])[0].text)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.run.answering import SquadParams, answer, run_logits
from bertrt.qa.postprocess import Answer
from bertrt.qa.squad_data import Example
from bertrt.runtimes import RunOptions, open_backend, run_options

__all__ = ["SquadParams", "Answer", "RunOptions", "TokenProbabilities", "QuestionAnswerer", "export_model", "fuse", "quantize",
           "build_engine",
           "compare_models", "squad_scores", "perf", "perf_gpu", "read_perf"]


def export_model(checkpoint: str | Path, output: str | Path, *, bert_config: str | Path | None = None,
                 vocab: str | Path | None = None, gelu: str | None = None, opset: int = 17) -> Path:
    """TF1 checkpoint directory or Hugging Face safetensors -> bertrt ONNX (`bertrt export`)."""
    from bertrt.export.onnx_export import export

    return export(Path(checkpoint), Path(output), config=Path(bert_config) if bert_config else None,
                  vocab=Path(vocab) if vocab else None, gelu=gelu, opset=opset)


def fuse(model: str | Path, output: str | Path, target: str = "ort", **options) -> dict:
    """Graph surgery for one target (`bertrt surgery`); returns the fusion report. Options: plugin_api, attention."""
    from bertrt.surgery.pipeline import run_surgery

    return run_surgery(Path(model), Path(output), target, **options)


def quantize(model: str | Path, output: str | Path, precision: str, **options) -> dict:
    """FP16 conversion or calibrated INT8/FP8 Q/DQ (`bertrt quantize`); returns what was done."""
    from bertrt.calibration.quantize import quantize as _quantize

    return _quantize(Path(model), Path(output), precision, **options)


def build_engine(model: str | Path, output: str | Path, profiles: list[str] | None = None, batch_size: int = 8,
                 seq_len: int = 384, runtime: str | None = None, precision: str | None = None, **options):
    """TensorRT engine (+ its sidecar) from a bertrt ONNX (`bertrt build`); returns the engine record. `profiles`
    are 'batch=MIN:OPT:MAX,seq=MIN:OPT:MAX' strings (default: batch 1..batch_size at seq_len); `runtime` is
    tensorrt, tensorrt-rtx or None (the installed one); other options are `BuildRequest` fields."""
    from bertrt.build.engine_build import BuildRequest, build
    from bertrt.profiles import default_profile, parse_profile

    parsed = [parse_profile(p) for p in profiles] if profiles else [default_profile(batch_size, seq_len)]
    return build(BuildRequest(Path(model), Path(output), parsed, runtime, precision, **options))


@dataclass
class TokenProbabilities:
    """Where a model puts an answer's start and end, per passage token (the picture behind one answer)."""

    tokens: list[str]  # the passage's WordPiece tokens
    char_spans: list[tuple[int, int]]  # each token's (start, end) in the passage
    start: np.ndarray  # softmax of the start logits over the passage tokens
    end: np.ndarray
    answer: Answer
    answer_tokens: tuple[int, int]  # first and last token of the answer (inclusive); (-1, -1) when none


class QuestionAnswerer:
    """A QA model and its tokenizer, answering questions about passages (`bertrt infer`) or a SQuAD file
    (`bertrt squad`). `model` is any artifact `open_backend` takes (ONNX, engine, checkpoint); `options` says how it
    runs (a `RunOptions`; keyword arguments such as provider=, threads=, runtime= set its fields). Use it as a context
    manager (or call `close()`)."""

    def __init__(self, model: str | Path, vocab: str | Path, params: SquadParams | None = None,
                 batch_size: int = 8, options: RunOptions | None = None, **backend_options):
        from bertrt.qa.tokenizer import load_tokenizer

        self.backend = open_backend(Path(model), options, batch_size=batch_size, **backend_options)
        self.tokenizer = load_tokenizer(Path(vocab), expected_vocab_size=self.backend.config.vocab_size)
        self.params = params or SquadParams()
        self.batch_size = batch_size
        # Before the backend is activated: an engine would need its GPU first, and a batch that cannot fit is
        # refused before any work.
        self.params.check(self.backend, batch_size)
        self.backend.__enter__()

    def close(self) -> None:
        self.backend.__exit__(None, None, None)

    def __enter__(self) -> QuestionAnswerer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def answer(self, passage: str, questions: list[str]) -> list[Answer]:
        """The best answer (with its n-best candidates in `.nbest`) for each question about `passage`. A question
        that does not fit the sequence is an error, not silently truncated as SQuAD evaluation does."""
        examples = [Example(qas_id=str(i), question=q, context=passage) for i, q in enumerate(questions)]
        return answer(self.backend, self.tokenizer, examples, self.params, self.batch_size,
                      truncate_question=False).answers

    def squad(self, squad_json: str | Path, output: str | Path, limit: int | None = None,
              null_score_diff_threshold: float = 0.0, progress: bool = False) -> dict:
        """Run a SQuAD v1.1/v2.0 file: writes `output` (predictions.json) and its .eval.json; returns the report
        (scores, timing, parameters)."""
        from bertrt.run.squad_eval import run_squad

        return run_squad(self.backend, self.tokenizer, Path(squad_json), Path(output), self.params,
                         self.batch_size, limit=limit, null_score_diff_threshold=null_score_diff_threshold,
                         progress=progress)

    def token_probabilities(self, passage: str, question: str) -> TokenProbabilities:
        """Start/end probabilities over the passage tokens. Each token's logits come from the window where it has
        the most context (the window that scores it), then one softmax over the whole passage."""
        from bertrt.qa.features import make_features
        from bertrt.qa.postprocess import best_answers

        examples = [Example(qas_id="0", question=question, context=passage)]
        features = make_features(examples, self.tokenizer, self.params.max_seq_length, self.params.doc_stride,
                                 self.params.max_query_length, truncate_question=False)
        starts, ends, _ = run_logits(self.backend, features, self.batch_size)
        best = best_answers(examples, features, starts, ends, self.params.n_best, self.params.max_answer_length)[0]
        spans: dict[tuple[int, int], tuple[float, float]] = {}
        for f, s, e in zip(features, starts, ends):
            for pos, span in enumerate(f.token_spans):
                if span is not None and f.max_context[pos]:
                    spans[span] = (float(s[pos]), float(e[pos]))
        ordered = sorted(spans)
        logits = np.array([spans[k] for k in ordered], dtype=np.float64).reshape(-1, 2)
        probs = np.exp(logits - logits.max(axis=0))
        probs /= probs.sum(axis=0)
        tokens = self.tokenizer.encode(passage, add_special_tokens=False)
        by_span = dict(zip(map(tuple, tokens.offsets), tokens.tokens))
        first = next((i for i, (a, _) in enumerate(ordered) if a == best.char_start), -1)
        last = next((i for i, (_, b) in enumerate(ordered) if b == best.char_end), -1)
        return TokenProbabilities([by_span.get(k, passage[k[0]:k[1]]) for k in ordered], ordered, probs[:, 0],
                                  probs[:, 1], best, (first, last))


def compare_models(a: str | Path, b: str | Path, squad_json: str | Path, vocab: str | Path, num_features: int = 8,
                   batch_size: int = 4, seq_len: int = 384, per_layer: bool = False, options: RunOptions | None = None,
                   **backend_options) -> list:
    """Worst absolute/relative logit errors of model `b` against reference `a` on real SQuAD features
    (`bertrt compare`); one row per compared tensor. Both models run with `options` (RunOptions fields as keywords
    also work)."""
    from bertrt.run.compare import check_counts, compare, feature_batches, vocab_size_of
    from bertrt.qa.tokenizer import load_tokenizer

    check_counts(num_features, batch_size)
    tokenizer = load_tokenizer(Path(vocab), expected_vocab_size=vocab_size_of(Path(a), Path(b)))
    batches = feature_batches(Path(squad_json), tokenizer, num_features, batch_size, seq_len)
    options = run_options(options, **backend_options)
    return compare(Path(a), Path(b), batches, per_layer=per_layer, options=options)


def squad_scores(model: str | Path, squad_json: str | Path, vocab: str | Path, output: str | Path,
                 limit: int | None = None, params: SquadParams | None = None, batch_size: int = 8,
                 options: RunOptions | None = None, **backend_options) -> dict:
    """`QuestionAnswerer(...).squad(...)` in one call: the report of a SQuAD run (scores, timing, parameters)."""
    with QuestionAnswerer(model, vocab, params, batch_size, options, **backend_options) as qa:
        return qa.squad(squad_json, output, limit=limit)


def perf(models: list[str | Path], batches: list[int], seqs: list[int], output: str | Path, warmup: int = 3,
         runs: int = 20, options: RunOptions | None = None, **backend_options) -> list:
    """Latency of each model over batch x seq (`bertrt perf`), all in one process with models interleaved per
    shape so that drift of the machine affects every model alike; writes `output` JSON and a CSV beside it. Every
    model runs with `options` (RunOptions fields as keywords also work: provider=, threads=, buckets=, ...)."""
    import contextlib

    from bertrt.run.perf import check_shapes, time_backend, write_results

    if not models or min([*batches, *seqs, runs, 1]) < 1 or warmup < 0:
        raise BertrtError("perf needs at least one model, and positive batches, sequence lengths and runs")
    options = run_options(options, **backend_options)
    opened = [(Path(m), open_backend(Path(m), options)) for m in models]
    for _, backend in opened:  # every shape checked (model, profiles, memory) before any model is loaded
        check_shapes(backend.config, batches, seqs)
        for batch in batches:
            for seq in seqs:
                backend.check_shape(batch, seq)
    timings = []
    with contextlib.ExitStack() as stack:
        backends = [(path, stack.enter_context(backend)) for path, backend in opened]
        for batch in batches:
            for seq in seqs:
                for path, backend in backends:
                    timings.append(time_backend(backend, path.name, batch, seq, warmup, runs))
    write_results(timings, Path(output), {"provider": options.provider, "clock": "host", **_machine()})
    return timings


def perf_gpu(models: list[str | Path], random_bert: list[str], batches: list[int], seqs: list[int],
             output: str | Path, warmup: int = 5, runs: int = 100, cuda_graph: bool = False, peers: bool = True,
             vocab: str | Path | None = None, options: RunOptions | None = None) -> list:
    """`bertrt perf --provider cuda`: device-side (CUDA event) latency of the given models and of random-weight
    BERT-Base/Large (`random_bert`, built from their configs; needs torch + transformers) on bertrt's IOBinding
    runner (and CUDA graphs), with torch eager / torch + CUDA graph as peers; writes JSON, CSV and PNG. `options`
    (e.g. its runtime, threads) is how every model is opened; the sweep sets the provider, stream and CUDA graphs."""
    from bertrt.run.perf import write_results
    from bertrt.run.perf_gpu import sweep

    timings, meta = sweep([Path(m) for m in models], list(random_bert), Path(output).parent,
                          Path(vocab) if vocab else None, batches, seqs, warmup, runs, cuda_graph, peers,
                          options=options or RunOptions(provider="cuda"))
    write_results(timings, Path(output), {**meta, **_machine()})
    return timings


def _machine() -> dict:
    """Where a timing was taken (recorded in every perf JSON)."""
    import os
    import platform

    from bertrt.artifacts import tool_versions

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
