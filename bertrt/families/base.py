"""The `Family` value: everything bertrt needs to know about one Hugging Face model family (in the spirit of
Optimum's per-family ONNX configs). One module per family declares one frozen `Family`; `bertrt.families` keeps the
registry. Stages ask the family (``family.token_types``, ``family.normalize_config(...)``), never its name."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

ABSOLUTE = "absolute"  # position s uses row s of the table
PADDING_OFFSET = "padding-offset"  # RoBERTa: row cumsum(ids != pad) * (ids != pad) + pad, i.e. s + pad + 1 on tokens


@dataclass(frozen=True)
class TokenizerSpec:
    """How the family's tokenizer lays out a question/passage pair: ``cls q sep [sep] p sep``."""

    kind: str  # "wordpiece" | "bpe" (byte-level) | "unigram" (SentencePiece): the tokenizer.json model it ships
    cls_token: str
    sep_token: str
    pad_token: str
    pair_seps: int  # sep tokens between question and passage: 1 (BERT) or 2 (RoBERTa: </s></s>)
    lowercase: bool  # for a bare vocab.txt without tokenizer_config.json (tokenizer.json carries its normalizer)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # Hugging Face config.json model_type values this family covers
    architectures: tuple[str, ...]  # the QA head classes
    hf_inputs: tuple[str, ...]  # the HF forward inputs an export takes, in forward order
    token_types: bool  # False: no token-type embeddings (segment_ids is ignored by the fused model)
    position_scheme: str  # ABSOLUTE | PADDING_OFFSET
    embedding_projection: bool  # ELECTRA: Linear(embedding_size -> hidden) after the embedding LayerNorm
    weight_prefix: str  # "roberta." ...: the backbone's module name in the QA checkpoint
    # HF weight name (without prefix) -> bertrt (Google) name and whether to transpose; None: not part of QA
    weight_map: Callable[[str], tuple[str, bool] | None]
    config_keys: dict[str, str] = field(default_factory=dict)  # HF config key -> BertConfig key where they differ
    tokenizer: TokenizerSpec | None = None

    def position_offset(self, hf_config: dict) -> int:
        """The row of the position table that holds position 0."""
        if self.position_scheme == ABSOLUTE:
            return 0
        return int(hf_config.get("pad_token_id", 1)) + 1

    def normalize_config(self, hf_config: dict, source: str = "config.json") -> BertConfig:
        """bertrt's BertConfig for a Hugging Face config.json of this family."""
        data = {self.config_keys.get(k, k): v for k, v in hf_config.items() if k not in self.config_keys.values()}
        offset = self.position_offset(hf_config)
        if "max_position_embeddings" in data and isinstance(data["max_position_embeddings"], int):
            data["max_position_embeddings"] -= offset  # usable positions
        data["position_offset"] = offset
        data["type_vocab_size"] = data.get("type_vocab_size", 2) if self.token_types else 0
        if self.embedding_projection:
            size = data.get("embedding_size", data.get("hidden_size"))
            data["embedding_size"] = 0 if size == data.get("hidden_size") else size
        data["family"] = self.name
        return BertConfig.from_dict(data, source=source)

    def google_name(self, name: str) -> tuple[str, bool] | None:
        """(bertrt name, transpose?) for a HF checkpoint tensor name; None for tensors QA does not use."""
        if name.startswith("qa_outputs."):
            return ("cls/squad/output_weights" if name.endswith("weight") else "cls/squad/output_bias"), False
        if not name.startswith(self.weight_prefix):
            return None
        return self.weight_map(name[len(self.weight_prefix):])


def bert_weight_map(rest: str) -> tuple[str, bool] | None:
    """BERT / RoBERTa / XLM-R / ELECTRA layout: embeddings.*, encoder.layer.N.attention.self.query, ..."""
    emb = {"word_embeddings.weight": "word_embeddings", "position_embeddings.weight": "position_embeddings",
           "token_type_embeddings.weight": "token_type_embeddings", "LayerNorm.weight": "LayerNorm/gamma",
           "LayerNorm.bias": "LayerNorm/beta", "LayerNorm.gamma": "LayerNorm/gamma", "LayerNorm.beta": "LayerNorm/beta"}
    if rest.startswith("embeddings."):
        key = rest[len("embeddings."):]
        return (f"bert/embeddings/{emb[key]}", False) if key in emb else None
    if rest.startswith("embeddings_project."):  # ELECTRA's projection
        return f"bert/embeddings/project/{'kernel' if rest.endswith('weight') else 'bias'}", rest.endswith("weight")
    m = re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$", rest)
    if not m:
        return None
    layer, module, param = m.groups()
    dense = {"attention.self.query": "attention/self/query", "attention.self.key": "attention/self/key",
             "attention.self.value": "attention/self/value", "attention.output.dense": "attention/output/dense",
             "intermediate.dense": "intermediate/dense", "output.dense": "output/dense"}
    norms = {"attention.output.LayerNorm": "attention/output/LayerNorm", "output.LayerNorm": "output/LayerNorm"}
    prefix = f"bert/encoder/layer_{layer}/"
    if module in dense:
        return prefix + dense[module] + ("/kernel" if param == "weight" else "/bias"), param == "weight"
    if module in norms:
        return prefix + norms[module] + ("/gamma" if param in ("weight", "gamma") else "/beta"), False
    return None


def refuse(model_type: str, known: list[str], what: str) -> BertrtError:
    return BertrtError(f"model family {model_type!r} is not supported: {what} (supported: {', '.join(known)})")
