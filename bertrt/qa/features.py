"""SQuAD features: question + sliding windows over the context, as Google BERT's run_squad.py builds them.

Differences from run_squad.py that are on purpose: tokens map back to character offsets in the original
context (from the tokenizer) instead of to whitespace-split words, so answers are exact substrings of the
context; and features are not padded here (see `collate`), so a runtime can batch them at any length.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from bertrt.qa.squad_data import Example

from bertrt.errors import BertrtError


@dataclass
class Feature:
    """One model input: [CLS] question [SEP] context-window [SEP], unpadded."""

    example_index: int
    span_index: int  # which window of the example's context, 0-based
    input_ids: np.ndarray  # int32 [length]
    segment_ids: np.ndarray  # int32 [length]
    # Per position: (char_start, char_end) of the token in the example's context; None for [CLS], question
    # and [SEP] tokens.
    token_spans: list[tuple[int, int] | None]
    # Per position: True when this window gives the token more surrounding context than any other window of
    # the example (run_squad's _check_is_max_context); always False for non-context positions.
    max_context: np.ndarray  # bool [length]

    @property
    def length(self) -> int:
        return len(self.input_ids)

    def __reduce__(self):
        # Pickled as constructor arguments (features made in worker processes travel back): unpickles faster than
        # the default instance-dict state.
        return Feature, (self.example_index, self.span_index, self.input_ids, self.segment_ids, self.token_spans,
                         self.max_context)


def _window_starts(n_tokens: int, window: int, doc_stride: int) -> list[int]:
    # run_squad.py: advance by min(window, stride) until a window reaches the end of the context.
    starts = [0]
    while starts[-1] + window < n_tokens:
        starts.append(starts[-1] + min(window, doc_stride))
    return starts


def _max_context(n_tokens: int, starts: list[int], window: int) -> np.ndarray:
    """Index of the window that is each token's max-context window ([n_tokens] int).

    Time and memory are linear in the features' size (each window scores only its own tokens), not windows x
    tokens: a multi-megabyte passage has thousands of windows."""
    best = np.zeros(n_tokens, dtype=np.int64)
    best_score = np.full(n_tokens, -np.inf)
    for w, start in enumerate(starts):
        length = min(window, n_tokens - start)
        offset = np.arange(length)
        score = np.minimum(offset, length - 1 - offset) + 0.01 * length
        # Strictly greater: the first of equal scores wins, as run_squad's strict ">" does.
        better = score > best_score[start:start + length]
        best_score[start:start + length][better] = score[better]
        best[start:start + length][better] = w
    return best


def _with_combining_marks(context: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token offsets extended over the combining marks that follow them: the tokenizer strips accents, and a
    decomposed accent after a token's last letter ("cafe" + U+0301) would otherwise fall outside every token, so
    the answer cut from the passage would lose it."""
    if context.isascii() or not any(unicodedata.category(ch) == "Mn" for ch in set(context)):
        return offsets
    extended = []
    for start, end in offsets:
        while end < len(context) and unicodedata.category(context[end]) == "Mn":
            end += 1
        extended.append((start, end))
    return extended


def _check_tokenizer(tokenizer) -> tuple[int, int]:
    # Truncation or padding set on the (mutable) tokenizer would silently drop or pad context tokens.
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        raise BertrtError("tokenizer has truncation or padding enabled; make_features needs it disabled")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise BertrtError("tokenizer vocabulary lacks [CLS] or [SEP]")
    return cls_id, sep_id


class BadExample(BertrtError):
    """An example that cannot become features (empty or too long question, context without tokens); names it.
    `example_index` is its index in the examples given, so a caller answering many requests can refuse just it."""

    def __init__(self, message: str, example_index: int):
        super().__init__(message)
        self.example_index = example_index

    def __reduce__(self):  # raised in forked feature workers too
        return BadExample, (str(self), self.example_index)


def _check_settings(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    if doc_stride < 1:
        raise BertrtError(f"doc_stride must be at least 1, got {doc_stride}")
    if max_query_length < 1:
        raise BertrtError(f"max_query_length must be at least 1, got {max_query_length}")
    if max_query_length + 3 >= max_seq_length:
        raise BertrtError(
            f"max_seq_length {max_seq_length} leaves no room for context after a question of up to "
            f"{max_query_length} tokens plus 3 special tokens"
        )


def _question_ids(ex_index: int, ex: Example, ids: list[int], max_query_length: int, truncate_question: bool
                  ) -> list[int]:
    """The question's token ids, cut to max_query_length (or refused when truncation is not allowed)."""
    if not ids:
        raise BadExample(f"example {ex.qas_id!r}: question {ex.question!r} has no tokens", ex_index)
    if len(ids) > max_query_length:
        if not truncate_question:
            raise BadExample(
                f"example {ex.qas_id!r}: question has {len(ids)} tokens; at most {max_query_length} fit "
                "(raise max_query_length or allow truncation)", ex_index
            )
        ids = ids[:max_query_length]
    return ids


def _windows(ex_index: int, prefix: np.ndarray, c_ids: np.ndarray, c_offsets: list[tuple[int, int]],
             starts: list[int], best_window: np.ndarray, window: int, sep_id: int) -> list[Feature]:
    """The features of one example: `prefix` ([CLS] question [SEP]) + each context window + [SEP]."""
    n_prefix, n_ctx = len(prefix), len(c_ids)
    features = []
    for span_index, start in enumerate(starts):
        end = min(start + window, n_ctx)
        length = n_prefix + (end - start) + 1
        input_ids = np.empty(length, dtype=np.int32)
        input_ids[:n_prefix] = prefix
        input_ids[n_prefix:-1] = c_ids[start:end]
        input_ids[-1] = sep_id
        segment_ids = np.zeros(length, dtype=np.int32)
        segment_ids[n_prefix:] = 1
        max_context = np.zeros(length, dtype=bool)
        max_context[n_prefix:-1] = best_window[start:end] == span_index
        features.append(
            Feature(
                example_index=ex_index,
                span_index=span_index,
                input_ids=input_ids,
                segment_ids=segment_ids,
                token_spans=[None] * n_prefix + c_offsets[start:end] + [None],
                max_context=max_context,
            )
        )
    return features


def make_features(
    examples: Sequence[Example],
    tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    truncate_question: bool = True,
) -> list[Feature]:
    """Features for `examples`, in example order then window order.

    `doc_stride` is the step between window starts (run_squad.py's meaning). Questions longer than
    `max_query_length` tokens are cut to it, or rejected when `truncate_question` is False. An example that cannot
    become features raises `BadExample` (naming it and its index).
    """
    _check_settings(max_seq_length, doc_stride, max_query_length)
    cls_id, sep_id = _check_tokenizer(tokenizer)
    for ex_index, ex in enumerate(examples):
        if not ex.question.strip():
            raise BadExample(f"example {ex.qas_id!r} has an empty question", ex_index)
        if not ex.context.strip():
            raise BadExample(f"example {ex.qas_id!r} has an empty context", ex_index)

    # One batch encode each for the contexts and the questions. SQuAD has ~5 questions per paragraph: each distinct
    # context is tokenized once.
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    context_tokens = {
        c: (np.asarray(enc.ids, dtype=np.int32), _with_combining_marks(c, enc.offsets))
        for c, enc in zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False))
    }
    question_enc = tokenizer.encode_batch([ex.question for ex in examples], add_special_tokens=False)

    # The window layout depends on the question length, so cache it by (context, window size).
    layout_cache: dict[tuple[str, int], tuple[list[int], np.ndarray]] = {}
    features: list[Feature] = []
    for ex_index, (ex, q_enc) in enumerate(zip(examples, question_enc)):
        q_ids = _question_ids(ex_index, ex, q_enc.ids, max_query_length, truncate_question)
        c_ids, c_offsets = context_tokens[ex.context]
        if len(c_ids) == 0:
            raise BadExample(f"example {ex.qas_id!r}: context has no tokens", ex_index)
        window = max_seq_length - len(q_ids) - 3
        key = (ex.context, window)
        if key not in layout_cache:
            starts = _window_starts(len(c_ids), window, doc_stride)
            layout_cache[key] = (starts, _max_context(len(c_ids), starts, window))
        starts, best_window = layout_cache[key]
        prefix = np.asarray([cls_id, *q_ids, sep_id], dtype=np.int32)
        features += _windows(ex_index, prefix, c_ids, c_offsets, starts, best_window, window, sep_id)
    return features


def collate(features: Sequence[Feature], seq_len: int, rows: int | None = None) -> dict[str, np.ndarray]:
    """Stack features into zero-padded int32 [batch, seq_len] arrays: input_ids, segment_ids, input_mask.

    `rows` pads the batch to a fixed number of rows (fixed shapes for bucketed runtimes); a padding row holds one
    unmasked token, so that no attention row is empty."""
    ids = np.zeros((max(len(features), rows or 0), seq_len), dtype=np.int32)
    segments = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    mask[len(features):, 0] = 1
    for row, f in enumerate(features):
        if f.length > seq_len:
            raise BertrtError(
                f"feature {f.span_index} of example {f.example_index} has {f.length} tokens; "
                f"the batch holds at most {seq_len}"
            )
        ids[row, : f.length] = f.input_ids
        segments[row, : f.length] = f.segment_ids
        mask[row, : f.length] = 1
    return {"input_ids": ids, "segment_ids": segments, "input_mask": mask}


def batches(
    features: Sequence[Feature], batch_size: int, seq_len: int | None = None
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Yield (feature indices, collated arrays) in order; seq_len None pads each batch to its longest feature."""
    if batch_size < 1:
        raise BertrtError(f"batch size must be at least 1, got {batch_size}")
    for first in range(0, len(features), batch_size):
        indices = list(range(first, min(first + batch_size, len(features))))
        chunk = [features[i] for i in indices]
        yield indices, collate(chunk, seq_len if seq_len is not None else max(f.length for f in chunk))
