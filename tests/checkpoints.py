"""Test helper: write random-weight TF1 name-based checkpoints in Google BERT naming, of any shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bertrt.checkpoints.weights import expected_shapes

from bertrt.model_config import BertConfig


def random_weights(cfg: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(cfg).items():
        scale = 1.0 if name.endswith("gamma") else 0.2  # gamma near 1, everything else visibly non-zero
        base = 1.0 if name.endswith("gamma") else 0.0
        weights[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return weights


def write_checkpoint(directory: Path, cfg: BertConfig, weights: dict[str, np.ndarray],
                     dtype=np.float32, extra: dict[str, np.ndarray] | None = None,
                     hidden_act: str = "gelu") -> Path:
    """Save `weights` (+ `extra` variables such as optimizer slots) as `directory/model.ckpt`, with
    bert_config.json and a vocab.txt of cfg.vocab_size lines."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.asarray(value, dtype=dtype) for name, value in weights.items()}
    tensors.update(extra or {})
    names = sorted(tensors)
    prefix = str(directory / "model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    (directory / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("gelu", "layer_norm_eps")}
    config["hidden_act"] = hidden_act
    (directory / "bert_config.json").write_text(json.dumps(config))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + [f"w{i}" for i in range(cfg.vocab_size - len(specials))]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    return directory
