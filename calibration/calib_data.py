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

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CALIB_JSON = DATA_DIR / "squad-train-calib.json.gz"
DEFAULT_VOCAB = Path(__file__).resolve().parents[1] / "models" / "minilm-l6-h384-squad11" / "vocab.txt"
DEFAULT_CALIB_NUM = 256  # features
DEFAULT_SEED = 0
MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH = 384, 128, 64


def shuffled_examples(calib_json: str | Path | None = None, seed: int = DEFAULT_SEED) -> list:
    """All examples of `calib_json` (a SQuAD file, .json or .json.gz) in a seeded shuffle."""
    from bertrt.run.squad_data import load_squad

    path = Path(calib_json) if calib_json is not None else DEFAULT_CALIB_JSON
    if not path.is_file():
        raise BertrtError(f"calibration file {path} not found")
    examples, _ = load_squad(path)  # BertrtError "<path>: not SQuAD JSON: ..." for anything else
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order]


def calibration_features(calib_json: str | Path | None = None, calib_num: int = DEFAULT_CALIB_NUM,
                         vocab: str | Path | None = None, tokenizer=None, seed: int = DEFAULT_SEED,
                         vocab_size: int | None = None) -> list:
    """The first `calib_num` features (unpadded `bertrt.run.features.Feature`) of the seeded shuffle.

    Raises BertrtError when the file is not SQuAD JSON or holds fewer than `calib_num` features.
    """
    from bertrt.run.features import make_features
    from bertrt.run.tokenizer import load_tokenizer

    if not isinstance(calib_num, int) or isinstance(calib_num, bool) or calib_num < 1:
        raise BertrtError(f"--calib-num must be a positive whole number, got {calib_num!r}")
    path = Path(calib_json) if calib_json is not None else DEFAULT_CALIB_JSON
    examples = shuffled_examples(path, seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(vocab or DEFAULT_VOCAB, expected_vocab_size=vocab_size)
    features: list = []
    # Tokenize in chunks and stop once enough features exist (the full train set has 88k questions).
    step = max(64, calib_num)
    for first in range(0, len(examples), step):
        features.extend(make_features(examples[first:first + step], tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE,
                                      MAX_QUERY_LENGTH))
        if len(features) >= calib_num:
            return features[:calib_num]
    raise BertrtError(f"{path}: --calib-num {calib_num} is larger than the {len(features)} calibration features "
                      f"the file holds ({len(examples)} questions)")


def feed_batches(features: list, batch_size: int = 8, seq_len: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Collated int32 feeds (input_ids/segment_ids/input_mask), padded to `seq_len` or each batch's longest."""
    from bertrt.run.features import batches

    for _, feed in batches(features, batch_size, seq_len):
        yield feed
