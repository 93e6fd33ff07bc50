"""The BERT QA weights in Google's TF naming and layout: the one form every checkpoint reader produces.

Dense kernels are [in, out] (y = x @ kernel + bias); `cls/squad/output_weights` is [2, hidden] as in Google's
run_squad.py. Readers return float32 arrays; `check_weights` proves they fit the config before anything is built.
"""

from __future__ import annotations

import re

import numpy as np

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

Weights = dict[str, np.ndarray]

# Variables a checkpoint may carry that the QA network does not use (optimizer slots, step counter, pooler).
_IGNORED = re.compile(r"(^|/)(adam_m|adam_v|global_step|bad_steps|loss_scale|good_steps)$|^bert/pooler/"
                      r"|/(adam_m|adam_v)$")
_LAYER = re.compile(r"^bert/encoder/layer_(\d+)/")


def is_ignored(name: str) -> bool:
    return bool(_IGNORED.search(name))


def expected_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    h, i = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (cfg.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (cfg.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (cfg.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
        "cls/squad/output_weights": (2, h),
        "cls/squad/output_bias": (2,),
    }
    for n in range(cfg.num_hidden_layers):
        p = f"bert/encoder/layer_{n}/"
        for proj in ("query", "key", "value"):
            shapes[f"{p}attention/self/{proj}/kernel"] = (h, h)
            shapes[f"{p}attention/self/{proj}/bias"] = (h,)
        shapes[f"{p}attention/output/dense/kernel"] = (h, h)
        shapes[f"{p}attention/output/dense/bias"] = (h,)
        shapes[f"{p}attention/output/LayerNorm/gamma"] = (h,)
        shapes[f"{p}attention/output/LayerNorm/beta"] = (h,)
        shapes[f"{p}intermediate/dense/kernel"] = (h, i)
        shapes[f"{p}intermediate/dense/bias"] = (i,)
        shapes[f"{p}output/dense/kernel"] = (i, h)
        shapes[f"{p}output/dense/bias"] = (h,)
        shapes[f"{p}output/LayerNorm/gamma"] = (h,)
        shapes[f"{p}output/LayerNorm/beta"] = (h,)
    return shapes


def check_weights(weights: Weights, cfg: BertConfig, source: str) -> Weights:
    """Return the weights the network needs, or raise naming the first missing / mis-shaped / surplus variable."""
    layers = {int(m.group(1)) for name in weights if (m := _LAYER.match(name))}
    if layers and max(layers) + 1 != cfg.num_hidden_layers:
        raise BertrtError(f"{source}: checkpoint has {max(layers) + 1} encoder layers but the config says "
                          f"num_hidden_layers={cfg.num_hidden_layers}")
    needed = expected_shapes(cfg)
    for name, shape in needed.items():
        if name not in weights:
            raise BertrtError(f"{source}: missing variable {name!r}")
        found = tuple(weights[name].shape)
        if found != shape:
            raise BertrtError(f"{source}: variable {name!r} has shape {list(found)}, expected {list(shape)} "
                              f"from the config")
    unknown = sorted(n for n in weights if n not in needed and not is_ignored(n))
    if unknown:
        raise BertrtError(f"{source}: unexpected variable {unknown[0]!r} ({len(unknown)} unexpected in all): "
                          f"not a BERT QA checkpoint in Google naming?")
    out = {}
    for name in needed:
        arr = np.asarray(weights[name], dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise BertrtError(f"{source}: variable {name!r} holds NaN or Inf")
        out[name] = arr
    return out
