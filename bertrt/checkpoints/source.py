"""Where a checkpoint's weights and config are: a TF1 checkpoint directory or Hugging Face safetensors, resolved
once (`resolve_source`) and read into Google's BERT variable names (`read_weights`). Used by `bertrt export` and by
the TF reference runtime, which build the same network from the same reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertrt.checkpoints.hf_safetensors import read_hf_safetensors
from bertrt.checkpoints.tf_checkpoint import checkpoint_files, read_tf_checkpoint
from bertrt.checkpoints.weights import Weights, check_weights
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig


@dataclass
class Source:
    """A resolved checkpoint: what format it is, where its files are."""
    kind: str  # "tf" | "hf"
    path: Path  # checkpoint directory (tf) or safetensors file (hf)
    config: Path
    vocab: Path | None


def resolve_source(checkpoint: Path, config: Path | None = None, vocab: Path | None = None) -> Source:
    if checkpoint.is_file() and checkpoint.suffix == ".safetensors":
        kind, directory = "hf", checkpoint.parent
    elif checkpoint.is_dir() and (checkpoint / "model.safetensors").is_file():
        kind, directory, checkpoint = "hf", checkpoint, checkpoint / "model.safetensors"
    elif checkpoint.is_dir():
        kind, directory = "tf", checkpoint
    else:
        raise BertrtError(f"{checkpoint}: checkpoint not found (expected a TF checkpoint directory or a "
                          f"model.safetensors file)")
    if config is None:
        config = directory / ("config.json" if kind == "hf" else "bert_config.json")
        if not config.is_file():
            raise BertrtError(f"{directory}: no {config.name} beside the checkpoint (give --bert-config)")
    if vocab is None and (directory / "vocab.txt").is_file():
        vocab = directory / "vocab.txt"
    return Source(kind, checkpoint, config, vocab)


def source_files(source: Source) -> list[Path]:
    """Every file export reads: the weights first (the safetensors file, or the TF index, then its data shards and
    `checkpoint` file), then the config and the vocab."""
    if source.kind == "hf":
        weights = [source.path]
    else:
        weights = checkpoint_files(source.path)
    return weights + [source.config] + ([source.vocab] if source.vocab is not None else [])


def read_weights(source: Source, cfg: BertConfig) -> Weights:
    """The checkpoint's weights in Google's names, checked against the config."""
    raw = read_hf_safetensors(source.path) if source.kind == "hf" else read_tf_checkpoint(source.path)
    return check_weights(raw, cfg, str(source.path))
