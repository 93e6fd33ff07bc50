"""The export stage: checkpoint (TF1 name-based or HF safetensors) -> TF graph -> tf2onnx -> `model.onnx`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from bertrt.export.weights import Weights, check_weights

from bertrt.artifacts import atomic_outputs, check_outputs, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, stamp
from bertrt.extras import require
from bertrt.output import steps

MIN_OPSET = 17  # LayerNormalization (used by later surgery targets) needs 17
# TensorFlow's C++ info logs (device discovery, grappler sessions) would bury bertrt's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
        from bertrt.export.tf_checkpoint import checkpoint_files

        weights = checkpoint_files(source.path)
    return weights + [source.config] + ([source.vocab] if source.vocab is not None else [])


def max_opset() -> int:
    """The newest opset both tf2onnx and the installed onnx know."""
    constants = require("tf2onnx.constants", "export")
    return min(max(constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())


def read_weights(source: Source, cfg: BertConfig) -> Weights:
    if source.kind == "hf":
        from bertrt.export.hf_safetensors import read_hf_safetensors
        raw = read_hf_safetensors(source.path)
    else:
        from bertrt.export.tf_checkpoint import read_tf_checkpoint
        raw = read_tf_checkpoint(source.path)
    return check_weights(raw, cfg, str(source.path))


@contextlib.contextmanager
def _without_global_pool_rewrite() -> Iterator[None]:
    """tf2onnx rewrites a ReduceMean over the last axis of a rank-3 tensor into GlobalAveragePool, which hides
    every LayerNorm from the surgery matchers and from TensorRT's own normalization fusion. Its public API has no
    switch for one optimizer, so take it out of tf2onnx's optimizer table for the duration of our conversion."""
    optimizer = require("tf2onnx.optimizer", "export")
    saved = optimizer._optimizers.pop("global_pool_optimizer", None)  # noqa: SLF001 (no public switch)
    try:
        yield
    finally:
        if saved is not None:
            optimizer._optimizers["global_pool_optimizer"] = saved  # noqa: SLF001


def _tidy(model: onnx.ModelProto) -> None:
    """Initializers are not inputs; batch and sequence get readable symbolic names."""
    initializers = {t.name for t in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for value in list(model.graph.input) + list(model.graph.output):
        shape = value.type.tensor_type.shape
        del shape.dim[:]  # tf2onnx leaves the outputs' rank unknown
        shape.dim.add(dim_param="batch")
        shape.dim.add(dim_param="seq")
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != list(INPUT_NAMES) or sorted(names_out) != sorted(OUTPUT_NAMES):
        raise RuntimeError(f"tf2onnx produced I/O {names_in} -> {names_out}")  # a bug of ours, not user input


def convert_to_onnx(qa_function, opset: int) -> onnx.ModelProto:
    tf2onnx = require("tf2onnx", "export")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with _without_global_pool_rewrite():
        model, _ = tf2onnx.convert.from_function(qa_function, input_signature=qa_function.input_signature,
                                                 opset=opset)
    _tidy(model)
    return model


def export(checkpoint: Path, output: Path, config: Path | None = None, vocab: Path | None = None,
           gelu: str | None = None, opset: int = MIN_OPSET, progress: bool = False) -> Path:
    """Export a BERT QA checkpoint to `output` (ONNX, fp32, dynamic batch and sequence) with its sidecar."""
    from bertrt.export.tf_model import build_qa_function
    from bertrt.qa.tokenizer import load_tokenizer

    if not MIN_OPSET <= opset <= max_opset():
        raise BertrtError(f"--opset {opset} is not supported: bertrt needs opset {MIN_OPSET} or newer, and tf2onnx "
                          f"converts up to opset {max_opset()}")
    source = resolve_source(checkpoint, config, vocab)
    files = source_files(source)
    check_outputs([output, sidecar_path(output)], [checkpoint, *files])
    cfg = BertConfig.from_json(source.config, gelu=gelu)
    if source.vocab is not None:
        load_tokenizer(source.vocab, expected_vocab_size=cfg.vocab_size)
    # tf2onnx reports no progress of its own: a bar over the steps (the conversion is most of the time).
    # TensorFlow's C++ INFO lines are filtered unless its own log level asks for them (`bertrt -v`; the CLI sets
    # TF_CPP_MIN_LOG_LEVEL=3 otherwise).
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") >= "2"
    with steps(["read weights", "TF graph", "tf2onnx", "check"], "export", progress, quiet_native=quiet) as step:
        step("read weights")
        weights = read_weights(source, cfg)
        step("TF graph")
        function = build_qa_function(weights, cfg)
        step("tf2onnx")
        model = convert_to_onnx(function, opset)
        step("check")
        stamp(model, "export", cfg)
        onnx.checker.check_model(model)
    with atomic_outputs(output, sidecar_path(output)) as (tmp, tmp_sidecar):
        onnx.save(model, str(tmp))
        recorded = {"checkpoint": files[0], "config": source.config}
        if source.vocab is not None:
            recorded["vocab"] = source.vocab
        write_json(tmp_sidecar, sidecar_record(output, tmp, "export", {
            "source_format": source.kind, "opset": opset, "gelu": cfg.gelu, "config": cfg.to_dict()}, recorded))
    return output
