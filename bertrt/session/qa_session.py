"""`QASession`: one QA model opened for answering (model + tokenizer + SQuAD parameters + run options).

The one object behind `bertrt infer`, `bertrt squad`, `bertrt.api`, the Triton model and serve-bench's in-process
reference: whoever answers questions opens a session, so they all run the same pre-processing, batching, runtime
and post-processing with the same options.

    from bertrt.session import QASession
    with QASession("out/model.ort.onnx", "models/minilm-l6-h384-squad11/vocab.txt", provider="cpu") as qa:
        print(qa.answer(passage, ["What is TensorRT?"])[0].text)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.qa.features import make_features
from bertrt.qa.postprocess import Answer, best_answers
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import load_tokenizer
from bertrt.runtimes import QABackend, RunOptions, open_backend
from bertrt.session.answering import SquadParams, answer, run_logits
from bertrt.session.squad import run_squad

DEFAULT_BATCH_SIZE = 8  # windows per model run when the options leave it unset


def run_options(options: RunOptions | None = None, **fields) -> RunOptions:
    """`options` (default: RunOptions()) with `fields` replaced, and a batch size always set (the session runs
    batches of options.batch_size windows, and a bucketed runtime warms up exactly that many rows)."""
    options = dataclasses.replace(options or RunOptions(), **fields)
    if options.batch_size is None:
        options = dataclasses.replace(options, batch_size=DEFAULT_BATCH_SIZE)
    if options.batch_size < 1:
        raise BertrtError(f"batch size must be at least 1, got {options.batch_size}")
    return options


def open_model(model: Path, options: RunOptions) -> QABackend:
    """The one call into the runtime layer: every session's model is opened here."""
    return open_backend(model, options)


@dataclass
class TokenProbabilities:
    """Where a model puts an answer's start and end, per passage token (the picture behind one answer)."""

    tokens: list[str]  # the passage's WordPiece tokens
    char_spans: list[tuple[int, int]]  # each token's (start, end) in the passage
    start: np.ndarray  # softmax of the start logits over the passage tokens
    end: np.ndarray
    answer: Answer
    answer_tokens: tuple[int, int]  # first and last token of the answer (inclusive); (-1, -1) when none


class QASession:
    """A QA model and its tokenizer, answering questions about passages (`bertrt infer`) or a SQuAD file
    (`bertrt squad`).

    `model` is any artifact the runtimes open (ONNX, engine, checkpoint); `options` a `RunOptions` and keyword
    arguments its fields, replacing those of `options` (provider, threads, buckets, batch_size, cuda_graph).
    `backend` (advanced): a backend opened elsewhere for `model` (the Triton model's BLS backend, whose network
    runs in another Triton model) instead of the one the runtimes open. Use it as a context manager (or call
    `close()`)."""

    def __init__(self, model: str | Path, vocab: str | Path, params: SquadParams | None = None, *,
                 options: RunOptions | None = None, backend: QABackend | None = None, **option_fields):
        if params is not None and not isinstance(params, SquadParams):
            raise BertrtError(f"params must be SquadParams, got {type(params).__name__}")
        if options is not None and not isinstance(options, RunOptions):
            raise BertrtError(f"options must be RunOptions, got {type(options).__name__}")
        self.model, self.vocab = Path(model), Path(vocab)
        self.params = params or SquadParams()
        self.options = run_options(options, **option_fields)
        self.backend = backend if backend is not None else open_model(self.model, self.options)
        self.tokenizer = load_tokenizer(self.vocab, expected_vocab_size=self.backend.config.vocab_size)
        # Before the backend is activated: an engine would need its GPU first, and a batch that cannot fit is
        # refused before any work.
        self.params.check(self.backend, self.batch_size)
        self.backend.__enter__()
        self._open = True

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def description(self) -> str:
        return self.backend.description

    def close(self) -> None:
        if self._open:
            self._open = False
            self.backend.__exit__(None, None, None)

    def __enter__(self) -> QASession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._open:
            raise BertrtError("this QA session is closed")

    def answer(self, passage: str, questions: list[str]) -> list[Answer]:
        """The best answer (with its n-best candidates in `.nbest`) for each question about `passage`. A question
        that does not fit the sequence is an error, not silently truncated as SQuAD evaluation does."""
        return self.answer_examples([Example(qas_id=str(i), question=q, context=passage)
                                     for i, q in enumerate(questions)])

    def answer_examples(self, examples: list[Example], keep_nbest: bool = True) -> list[Answer]:
        """One answer per (question, passage) example, all windows batched together and post-processed in one
        vectorized pass (the path of `squad`); a question that does not fit is an error (`BadExample` names it)."""
        self._check_open()
        return answer(self.backend, self.tokenizer, examples, self.params, self.batch_size, truncate_question=False,
                      keep_nbest=keep_nbest).answers

    def squad(self, squad_json: str | Path, output: str | Path, limit: int | None = None,
              null_score_diff_threshold: float = 0.0, progress: bool = False) -> dict:
        """Run a SQuAD v1.1/v2.0 file: writes `output` (predictions.json) and its .eval.json; returns the report
        (scores, timing, parameters). An output that would overwrite an input (the SQuAD file, the model, the
        vocabulary) is refused before any work."""
        self._check_open()
        return run_squad(self.backend, self.tokenizer, Path(squad_json), Path(output), self.params, self.batch_size,
                         limit=limit, null_score_diff_threshold=null_score_diff_threshold, progress=progress,
                         inputs=(self.model, self.vocab))

    def token_probabilities(self, passage: str, question: str) -> TokenProbabilities:
        """Start/end probabilities over the passage tokens. Each token's logits come from the window where it has
        the most context (the window that scores it), then one softmax over the whole passage."""
        self._check_open()
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
