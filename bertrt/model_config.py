"""The BERT architecture description shared by every stage (read from Google's bert_config.json or HF config.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bertrt.errors import BertrtError

# hidden_act spellings -> the GELU form. "gelu" is the exact erf GELU (as in PyTorch/HF and the embedded model);
# Google's original TF BERT code computed the tanh approximation under the same name, hence the override flag.
GELU_FORMS = {"gelu": "erf", "gelu_exact": "erf", "gelu_tanh": "tanh", "gelu_new": "tanh",
              "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}

_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings")


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

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config", gelu: str | None = None) -> BertConfig:
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise BertrtError(f"{source}: missing {', '.join(missing)}")
        act = data.get("hidden_act", "gelu")
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
        try:
            cfg = cls(**{k: int(data[k]) for k in _REQUIRED}, type_vocab_size=int(data.get("type_vocab_size", 2)),
                      gelu=act_form, layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)))
        except (TypeError, ValueError) as exc:
            raise BertrtError(f"{source}: non-numeric size field ({exc})") from None
        if min(cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
               cfg.intermediate_size, cfg.max_position_embeddings, cfg.type_vocab_size) < 1:
            raise BertrtError(f"{source}: sizes must be positive")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise BertrtError(f"{source}: hidden_size {cfg.hidden_size} is not a multiple of "
                              f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path, gelu: str | None = None) -> BertConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BertrtError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BertrtError(f"{path}: not a JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise BertrtError(f"{path}: not a JSON object")
        return cls.from_dict(data, source=str(path), gelu=gelu)
