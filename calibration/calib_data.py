"""SQuAD *training* features for calibration (calibrate on train, report on dev).

The calibration set is deterministic: the examples of a SQuAD file are shuffled with a fixed seed, turned into
features exactly as inference builds them (384 tokens, stride 128, question <= 64 tokens), and the first N
features are taken. Without `--calib-json` the shipped subset `calibration/data/squad-train-calib.json.gz`
(made by `python -m bertrt.calibration.make_calib_subset` from SQuAD v1.1 train) is used, so a fresh clone can
calibrate without the full training set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.resources import calibration_subset, embedded_vocab

# Package data (bertrt.resources): found in a checkout and in an installed wheel alike.
DEFAULT_CALIB_JSON = calibration_subset()
DATA_DIR = DEFAULT_CALIB_JSON.parent
DEFAULT_VOCAB = embedded_vocab()
DEFAULT_CALIB_NUM = 256  # features
DEFAULT_SEED = 0
MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH = 384, 128, 64


def calib_seq_len(positions: int, requested: int | None = None) -> int:
    """The calibration sequence length for a model with `positions` position embeddings.

    Default: 384 (what TensorRT engines are built for), clamped to the model's positions, since the model can
    never see longer inputs and calibrating at its longest input is the distribution its engines run. A length
    asked for explicitly must fit the model: BertrtError naming both numbers otherwise."""
    if requested is None:
        return min(MAX_SEQ_LENGTH, positions)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise BertrtError(f"calibration sequence length must be a positive whole number, got {requested!r}")
    if requested > positions:
        raise BertrtError(f"calibration sequence length {requested} exceeds the model's {positions} positions "
                          f"(max_position_embeddings); use {positions} or less")
    return requested


def window(seq_len: int) -> tuple[int, int]:
    """(doc stride, max query length) for features of `seq_len` tokens: SQuAD's 128 / 64 at 384, scaled down for
    shorter lengths so a window still holds context after the question."""
    query = min(MAX_QUERY_LENGTH, seq_len // 2)
    return min(DOC_STRIDE, max(1, seq_len - query - 3)), query


def shuffled_examples(calib_json: str | Path | None = None, seed: int = DEFAULT_SEED) -> list:
    """All examples of `calib_json` (a SQuAD file, .json or .json.gz) in a seeded shuffle."""
    from bertrt.qa.squad_data import load_squad

    path = Path(calib_json) if calib_json is not None else DEFAULT_CALIB_JSON
    if not path.is_file():
        raise BertrtError(f"calibration file {path} not found")
    examples, _ = load_squad(path)  # BertrtError "<path>: not SQuAD JSON: ..." for anything else
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order]


def calibration_features(calib_json: str | Path | None = None, calib_num: int = DEFAULT_CALIB_NUM,
                         vocab: str | Path | None = None, tokenizer=None, seed: int = DEFAULT_SEED,
                         vocab_size: int | None = None, seq_len: int = MAX_SEQ_LENGTH) -> list:
    """The first `calib_num` features (unpadded `bertrt.qa.features.Feature`, at most `seq_len` tokens) of the
    seeded shuffle.

    Raises BertrtError when the file is not SQuAD JSON or holds fewer than `calib_num` features.
    """
    from bertrt.qa.features import make_features
    from bertrt.qa.tokenizer import load_tokenizer

    if not isinstance(calib_num, int) or isinstance(calib_num, bool) or calib_num < 1:
        raise BertrtError(f"--calib-num must be a positive whole number, got {calib_num!r}")
    path = Path(calib_json) if calib_json is not None else DEFAULT_CALIB_JSON
    examples = shuffled_examples(path, seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(vocab or DEFAULT_VOCAB, expected_vocab_size=vocab_size)
    features: list = []
    doc_stride, max_query = window(seq_len)
    # Tokenize in chunks and stop once enough features exist (the full train set has 88k questions).
    step = max(64, calib_num)
    for first in range(0, len(examples), step):
        features.extend(make_features(examples[first:first + step], tokenizer, seq_len, doc_stride, max_query))
        if len(features) >= calib_num:
            return features[:calib_num]
    raise BertrtError(f"{path}: --calib-num {calib_num} is larger than the {len(features)} calibration features "
                      f"the file holds ({len(examples)} questions)")


def feed_batches(features: list, batch_size: int = 8, seq_len: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Collated int32 feeds (input_ids/segment_ids/input_mask), padded to `seq_len` or each batch's longest."""
    from bertrt.qa.features import batches

    for _, feed in batches(features, batch_size, seq_len):
        yield feed
