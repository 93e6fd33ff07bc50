"""SQuAD features: question + sliding windows over the context, as Google BERT's run_squad.py builds them.

Differences from run_squad.py that are on purpose: tokens map back to character offsets in the original
context (from the tokenizer) instead of to whitespace-split words, so answers are exact substrings of the
context; and features are not padded here (see `collate`), so a runtime can batch them at any length.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from bertrt.qa.squad_data import Example

from bertrt.errors import BertrtError


@dataclass
class Feature:
    """One model input: [CLS] question [SEP] context-window [SEP] (the tokenizer's own special tokens), unpadded.
    segment_ids is 1 from the context window on (families without token types ignore it; post-processing reads
    it as "is context")."""

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


@functools.lru_cache(maxsize=4096)
def _cached_layout(n_tokens: int, window: int, doc_stride: int) -> tuple[tuple[int, ...], np.ndarray]:
    starts = _window_starts(n_tokens, window, doc_stride)
    best = _max_context(n_tokens, starts, window)
    best.flags.writeable = False  # shared by every feature made from it
    return tuple(starts), best


def _window_layout(n_tokens: int, window: int, doc_stride: int) -> tuple[Sequence[int], np.ndarray]:
    """The window starts and each token's max-context window for a context of `n_tokens` tokens. It depends on
    three numbers only, and passages of usual lengths recur (a SQuAD paragraph's questions, a served passage):
    remembered for contexts up to 4096 tokens (~10 us a call saved; longer ones would hold megabytes)."""
    if n_tokens > 4096:
        starts = _window_starts(n_tokens, window, doc_stride)
        return starts, _max_context(n_tokens, starts, window)
    return _cached_layout(n_tokens, window, doc_stride)


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


@dataclass(frozen=True)
class PairLayout:
    """Where a tokenizer puts its special tokens around a question/passage pair: ``prefix q middle p suffix``
    (BERT: [CLS] q [SEP] p [SEP]; RoBERTa / XLM-R: <s> q </s></s> p </s>)."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


# pair_layout's answers for the last few tokenizers: id -> (tokenizer, its post-processor's repr, layout). The
# tokenizer is held so that its id stays its own; the repr notices a post-processor replaced since.
_LAYOUTS: dict[int, tuple[object, str, PairLayout]] = {}


def pair_layout(tokenizer) -> PairLayout:
    """The layout the tokenizer's own post-processor gives a pair (read from encoding one), so features match
    what the model's tokenizer makes; [CLS]/[SEP] BERT layout for a tokenizer without a post-processor."""
    # Truncation or padding set on the (mutable) tokenizer would silently drop or pad context tokens.
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        raise BertrtError("tokenizer has truncation or padding enabled; make_features needs it disabled")
    # Remembered: encoding the probe pair is ~10 us, once per make_features call (per request batch when serving).
    processor = repr(tokenizer.post_processor)
    known = _LAYOUTS.get(id(tokenizer))
    if known is not None and known[0] is tokenizer and known[1] == processor:
        return known[2]
    layout = _probed_layout(tokenizer)
    if len(_LAYOUTS) >= 8:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[id(tokenizer)] = (tokenizer, processor, layout)
    return layout


def _probed_layout(tokenizer) -> PairLayout:
    enc = tokenizer.encode("a", "b", add_special_tokens=True)
    seq = enc.sequence_ids
    if 0 in seq and 1 in seq and any(s is None for s in seq):
        first_q, last_q = seq.index(0), len(seq) - 1 - seq[::-1].index(0)
        first_p, last_p = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
        ids = enc.ids
        layout = PairLayout(tuple(ids[:first_q]), tuple(ids[last_q + 1:first_p]), tuple(ids[last_p + 1:]))
        if all(s is None for s in seq[:first_q] + seq[last_q + 1:first_p] + seq[last_p + 1:]) and layout.suffix:
            return layout
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise BertrtError("tokenizer vocabulary lacks [CLS] or [SEP], and its post-processor adds no special "
                          "tokens around a pair")
    return PairLayout((cls_id,), (sep_id,), (sep_id,))


class BadExample(BertrtError):
    """An example that cannot become features (empty or too long question, context without tokens); names it.
    `example_index` is its index in the examples given, so a caller answering many requests can refuse just it."""

    def __init__(self, message: str, example_index: int):
        super().__init__(message)
        self.example_index = example_index

    def __reduce__(self):  # raised in forked feature workers too
        return BadExample, (str(self), self.example_index)


def _check_settings(max_seq_length: int, doc_stride: int, max_query_length: int, specials: int = 3) -> None:
    if doc_stride < 1:
        raise BertrtError(f"doc_stride must be at least 1, got {doc_stride}")
    if max_query_length < 1:
        raise BertrtError(f"max_query_length must be at least 1, got {max_query_length}")
    if max_query_length + specials >= max_seq_length:
        raise BertrtError(
            f"max_seq_length {max_seq_length} leaves no room for context after a question of up to "
            f"{max_query_length} tokens plus {specials} special tokens"
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
             starts: Sequence[int], best_window: np.ndarray, window: int, suffix: np.ndarray) -> list[Feature]:
    """The features of one example: `prefix` ([CLS] question [SEP]) + each context window + `suffix` ([SEP])."""
    n_prefix, n_suffix, n_ctx = len(prefix), len(suffix), len(c_ids)
    features = []
    for span_index, start in enumerate(starts):
        end = min(start + window, n_ctx)
        length = n_prefix + (end - start) + n_suffix
        input_ids = np.concatenate((prefix, c_ids[start:end], suffix))
        segment_ids = np.zeros(length, dtype=np.int32)
        segment_ids[n_prefix:] = 1
        max_context = np.zeros(length, dtype=bool)
        max_context[n_prefix:length - n_suffix] = best_window[start:end] == span_index
        features.append(
            Feature(
                example_index=ex_index,
                span_index=span_index,
                input_ids=input_ids,
                segment_ids=segment_ids,
                token_spans=[None] * n_prefix + c_offsets[start:end] + [None] * n_suffix,
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
    layout = pair_layout(tokenizer)
    _check_settings(max_seq_length, doc_stride, max_query_length, layout.specials)
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
    # Questions need ids only: the encoding without offsets is ~15 % cheaper (tokenizers >= 0.20).
    encode_ids = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    question_enc = encode_ids([ex.question for ex in examples], add_special_tokens=False)

    features: list[Feature] = []
    suffix = np.asarray(layout.suffix, dtype=np.int32)
    for ex_index, (ex, q_enc) in enumerate(zip(examples, question_enc)):
        q_ids = _question_ids(ex_index, ex, q_enc.ids, max_query_length, truncate_question)
        c_ids, c_offsets = context_tokens[ex.context]
        if len(c_ids) == 0:
            raise BadExample(f"example {ex.qas_id!r}: context has no tokens", ex_index)
        window = max_seq_length - len(q_ids) - layout.specials
        starts, best_window = _window_layout(len(c_ids), window, doc_stride)
        prefix = np.asarray([*layout.prefix, *q_ids, *layout.middle], dtype=np.int32)
        features += _windows(ex_index, prefix, c_ids, c_offsets, starts, best_window, window, suffix)
    return features


def collate(features: Sequence[Feature], seq_len: int, rows: int | None = None) -> dict[str, np.ndarray]:
    """Stack features into zero-padded int32 [batch, seq_len] arrays: input_ids, segment_ids, input_mask.

    `rows` pads the batch to a fixed number of rows (fixed shapes for bucketed runtimes); a padding row holds one
    unmasked token, so that no attention row is empty."""
    n = len(features)
    ids = np.zeros((max(n, rows or 0), seq_len), dtype=np.int32)
    segments = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    mask[n:, 0] = 1
    lengths = [len(f.input_ids) for f in features]
    for f, length in zip(features, lengths):
        if length > seq_len:
            raise BertrtError(
                f"feature {f.span_index} of example {f.example_index} has {length} tokens; "
                f"the batch holds at most {seq_len}"
            )
    if n > 8:  # a few numpy calls for the whole batch instead of three per row
        inside = np.arange(seq_len) < np.asarray(lengths)[:, None]
        ids[:n][inside] = np.concatenate([f.input_ids for f in features])
        segments[:n][inside] = np.concatenate([f.segment_ids for f in features])
        mask[:n] = inside
        return {"input_ids": ids, "segment_ids": segments, "input_mask": mask}
    for row, (f, length) in enumerate(zip(features, lengths)):
        ids[row, :length] = f.input_ids
        segments[row, :length] = f.segment_ids
        mask[row, :length] = 1
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
