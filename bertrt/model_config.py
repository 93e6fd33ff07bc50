"""The BERT architecture description shared by every stage (read from Google's bert_config.json or HF config.json)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, read_text

# hidden_act spellings -> the GELU form. "gelu" is the exact erf GELU (as in PyTorch/HF and the embedded model);
# Google's original TF BERT code computed the tanh approximation under the same name, hence the override flag.
GELU_FORMS = {"gelu": "erf", "gelu_exact": "erf", "gelu_tanh": "tanh", "gelu_new": "tanh",
              "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}

_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings")
# Upper bounds well above any published BERT-class model (mT5-sized vocabularies, 4k-wide hidden, 8k positions):
# a config is read from untrusted files (checkpoints, ONNX metadata), and absurd sizes would otherwise surface as
# allocation failures or crashes deep inside TensorFlow or onnxruntime.
_MAX = {"vocab_size": 1_000_000, "hidden_size": 16_384, "num_hidden_layers": 256, "num_attention_heads": 256,
        "intermediate_size": 65_536, "max_position_embeddings": 65_536, "type_vocab_size": 1_024,
        "position_offset": 65_536, "embedding_size": 16_384}
_EPS_RANGE = (0.0, 1e-2)  # layer_norm_eps: positive (a zero or negative epsilon gives NaN on constant rows)


def _size(data: dict, key: str, source: str, default: int | None = None, minimum: int = 1) -> int:
    """An integer size field: a JSON integer (or an integral float such as 768.0), never a bool or a string."""
    value = data.get(key, default)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BertrtError(f"{source}: {key} must be an integer, not {value!r}")
    if not minimum <= value <= _MAX[key]:
        raise BertrtError(f"{source}: {key} = {value} is outside {minimum}..{_MAX[key]}")
    return value


def _epsilon(data: dict, source: str) -> float:
    value = data.get("layer_norm_eps", 1e-12)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not _EPS_RANGE[0] < value <= _EPS_RANGE[1]:
        raise BertrtError(f"{source}: layer_norm_eps must be a number in ({_EPS_RANGE[0]:g}, {_EPS_RANGE[1]:g}], "
                          f"not {value!r}")
    return float(value)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_strict(text: str):
    """json.loads without the NaN/Infinity extension Python accepts by default (not JSON, and never a valid size)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # a document nested thousands deep
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    gelu: str = "erf"  # "erf" | "tanh"
    layer_norm_eps: float = 1e-12
    # Model families (bertrt/families): max_position_embeddings above is the number of *usable* positions; the
    # Hugging Face table of a RoBERTa has position_offset (padding_idx + 1) more rows in front. type_vocab_size 0:
    # no token types (segment_ids is ignored). embedding_size 0: the embeddings are hidden_size wide; else ELECTRA's
    # projection embedding_size -> hidden_size follows the embedding LayerNorm.
    position_offset: int = 0
    embedding_size: int = 0
    family: str = "bert"

    @property
    def token_types(self) -> bool:
        return self.type_vocab_size > 0

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config", gelu: str | None = None) -> BertConfig:
        if not isinstance(data, dict):
            raise BertrtError(f"{source}: the BERT config must be a JSON object, not {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise BertrtError(f"{source}: missing {', '.join(missing)}")
        act = data.get("hidden_act", "gelu")
        if not isinstance(act, str):
            raise BertrtError(f"{source}: hidden_act must be a string, not {act!r}")
        if "gelu" in data and data["gelu"] in ("erf", "tanh"):  # our own to_dict() form
            act_form = data["gelu"]
        elif act in GELU_FORMS:
            act_form = GELU_FORMS[act]
        else:
            raise BertrtError(f"{source}: unsupported hidden_act {act!r} (supported: {', '.join(GELU_FORMS)})")
        if gelu is not None:
            if gelu not in ("erf", "tanh"):
                raise BertrtError(f"--gelu must be 'erf' or 'tanh', not {gelu!r}")
            act_form = gelu
        family = data.get("family", "bert")
        if not isinstance(family, str) or not family.replace("-", "").isalnum():
            raise BertrtError(f"{source}: family must be a family name, not {family!r}")
        cfg = cls(**{k: _size(data, k, source) for k in _REQUIRED},
                  type_vocab_size=_size(data, "type_vocab_size", source, default=2, minimum=0),
                  gelu=act_form, layer_norm_eps=_epsilon(data, source),
                  position_offset=_size(data, "position_offset", source, default=0, minimum=0),
                  embedding_size=_size(data, "embedding_size", source, default=0, minimum=0), family=family)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise BertrtError(f"{source}: hidden_size {cfg.hidden_size} is not a multiple of "
                              f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path, gelu: str | None = None) -> BertConfig:
        path = Path(path)
        if not path.exists():
            raise BertrtError(f"{path}: config file not found")
        try:
            data = parse_json_strict(read_text(path, LIMITS["config"], "config"))
        except (OSError, ValueError) as exc:  # ValueError: bad UTF-8, bad JSON, NaN/Infinity
            raise BertrtError(f"{path}: not a JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise BertrtError(f"{path}: not a JSON object")
        return cls.from_dict(data, source=str(path), gelu=gelu)
