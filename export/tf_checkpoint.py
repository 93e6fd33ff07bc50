"""Read a TF1 name-based BERT checkpoint (Google / NGC naming; float32 or float16 variables)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from bertrt.export.weights import Weights, is_ignored

from bertrt.errors import BertrtError
from bertrt.extras import require


def checkpoint_prefix(directory: Path) -> str:
    """The checkpoint prefix inside `directory` (from its `checkpoint` file, else the single *.index file)."""
    tf = require("tensorflow", "export")  # heavy import: only the export stage needs TensorFlow

    if not directory.is_dir():
        raise BertrtError(f"{directory}: checkpoint directory not found")
    prefix = tf.train.latest_checkpoint(str(directory))
    if prefix is None:
        indexes = sorted(directory.glob("*.index"))
        if len(indexes) != 1:
            raise BertrtError(f"{directory}: no TF checkpoint found (no 'checkpoint' file and "
                              f"{len(indexes)} *.index files)")
        prefix = str(indexes[0].with_suffix(""))
    # The `checkpoint` file may name any path; the files exported (and recorded in the sidecar) must be this
    # directory's own.
    if Path(prefix).resolve().parent != directory.resolve():
        raise BertrtError(f"{directory / 'checkpoint'}: points to {prefix}, outside the checkpoint directory")
    return prefix


def checkpoint_files(directory: Path) -> list[Path]:
    """The files of the checkpoint in `directory` that export reads: the `checkpoint` file (if any), the index
    (first) and the data shards."""
    prefix = Path(checkpoint_prefix(directory))
    index = prefix.with_name(prefix.name + ".index")
    files = [index, *sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}.data-*"))]
    if (directory / "checkpoint").is_file():
        files.append(directory / "checkpoint")
    return files


def read_tf_checkpoint(directory: Path) -> Weights:
    tf = require("tensorflow", "export")
    prefix = checkpoint_prefix(directory)
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: np.asarray(reader.get_tensor(name)).astype(np.float32)
                for name in reader.get_variable_to_shape_map() if not is_ignored(name)}
    except Exception as exc:  # TF raises several unrelated types (IndexError, DataLossError, ...) for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BertrtError(f"{prefix}: unreadable TF checkpoint ({first})") from None
