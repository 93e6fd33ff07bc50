"""Polygraphy data loader script: SQuAD *training* features for TensorRT 10's implicit-INT8 calibration.

    polygraphy convert model.native.onnx --int8 --fp16 --data-loader-script calibration/polygraphy_data_loader.py \
        --calibration-cache model.calib.cache -o model.int8.plan \
        --trt-min-shapes input_ids:[1,384] segment_ids:[1,384] input_mask:[1,384] ...

`load_data()` yields feed dicts {input_ids, segment_ids, input_mask} (int32 [batch, seq]); features are the
deterministic calibration subset of `bertrt.calibration.calib_data` (first N of a seeded shuffle), padded to a
fixed sequence length so every batch matches the calibration profile. Settings come from the environment:
BERTRT_CALIB_JSON (default: the shipped subset), BERTRT_CALIB_NUM (features, default 256),
BERTRT_CALIB_BATCH (default 8), BERTRT_CALIB_SEQ (default 384), BERTRT_VOCAB (default: the embedded model's).
Polygraphy runs this file by path, so it imports bertrt absolutely (the package must be installed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from bertrt.calibration import calib_data


def settings() -> dict:
    return {
        "calib_json": os.environ.get("BERTRT_CALIB_JSON") or calib_data.DEFAULT_CALIB_JSON,
        "calib_num": int(os.environ.get("BERTRT_CALIB_NUM", str(calib_data.DEFAULT_CALIB_NUM))),
        "batch_size": int(os.environ.get("BERTRT_CALIB_BATCH", "8")),
        "seq_len": int(os.environ.get("BERTRT_CALIB_SEQ", str(calib_data.MAX_SEQ_LENGTH))),
        "vocab": os.environ.get("BERTRT_VOCAB") or calib_data.DEFAULT_VOCAB,
    }


def load_data(calib_json=None, calib_num=None, batch_size=None, seq_len=None, vocab=None) -> Iterator[dict[str, np.ndarray]]:
    """Yield calibration batches (arguments override the environment)."""
    s = settings()
    features = calib_data.calibration_features(calib_json or s["calib_json"], calib_num or s["calib_num"],
                                               vocab=vocab or s["vocab"])
    yield from calib_data.feed_batches(features, batch_size or s["batch_size"], seq_len or s["seq_len"])
