"""The export stage: checkpoint (TF1 name-based or HF safetensors) -> TF graph -> tf2onnx -> `model.onnx`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from bertrt.export import hf_folder
from bertrt.checkpoints.source import Source, read_weights, resolve_source, source_files
from bertrt.checkpoints.tf_model import build_qa_function

from bertrt.artifacts import atomic_outputs, check_outputs, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa.tokenizer import META_TOKENIZER, load_tokenizer, sibling_tokenizer, tokenizer_json
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, stamp
from bertrt.extras import require
from bertrt.output import steps

MIN_OPSET = 17  # LayerNormalization (used by later surgery targets) needs 17
# TensorFlow's C++ info logs (device discovery, grappler sessions) would bury bertrt's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def max_opset() -> int:
    """The newest opset both tf2onnx and the installed onnx know."""
    constants = require("tf2onnx.constants", "export")
    return min(max(constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())


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
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if config is None and hf_folder.is_hf_folder(folder) and _family_folder(folder):  # no TensorFlow needed
        return _export_hf_folder(folder, output, vocab, gelu)
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
        tokenizer_file = source.vocab or sibling_tokenizer(source.config)  # vocab.txt, else a tokenizer.json
        tokenizer = tokenizer_file and tokenizer_json(load_tokenizer(tokenizer_file,
                                                                     expected_vocab_size=cfg.vocab_size))
        stamp(model, "export", cfg, extra={META_TOKENIZER: tokenizer} if tokenizer else None)
        onnx.checker.check_model(model)
    with atomic_outputs(output, sidecar_path(output)) as (tmp, tmp_sidecar):
        onnx.save(model, str(tmp))
        recorded = {"checkpoint": files[0], "config": source.config}
        if source.vocab is not None:
            recorded["vocab"] = source.vocab
        write_json(tmp_sidecar, sidecar_record(output, tmp, "export", {
            "source_format": source.kind, "opset": opset, "gelu": cfg.gelu, "config": cfg.to_dict()}, recorded))
    return output


def _family_folder(folder: Path) -> bool:
    """A Hugging Face folder the ONNX builder exports (export/hf_folder.py): every family but BERT, and BERT where
    the tf2onnx path cannot read it (sharded or pickled weights, or TensorFlow not installed)."""
    family, _, _ = hf_folder.read_config(folder)
    if family.name != "bert" or not (folder / "model.safetensors").is_file():
        return True
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return True
    return False


def _export_hf_folder(folder: Path, output: Path, vocab: Path | None, gelu: str | None) -> Path:
    """Export through export/hf_folder.py: config.json + weights -> the unfused contract graph, with the folder's
    tokenizer (tokenizer.json, else vocab.txt; `vocab` overrides) stamped into it."""
    family, cfg, _ = hf_folder.read_config(folder)
    if gelu is not None:
        cfg = BertConfig.from_dict({**cfg.to_dict(), "gelu": gelu}, source=str(folder / "config.json"))
    files = hf_folder.weight_files(folder)
    tokenizer_file = vocab or sibling_tokenizer(folder / "config.json")
    check_outputs([output, sidecar_path(output)], [folder, *files, folder / "config.json", tokenizer_file])
    tokenizer = tokenizer_file and tokenizer_json(load_tokenizer(tokenizer_file, expected_vocab_size=cfg.vocab_size))
    model = hf_folder.build_model(hf_folder.read_weights(folder, family, cfg), cfg)
    stamp(model, "export", cfg, extra={META_TOKENIZER: tokenizer} if tokenizer else None)
    onnx.checker.check_model(model)
    with atomic_outputs(output, sidecar_path(output)) as (tmp, tmp_sidecar):
        onnx.save(model, str(tmp))
        recorded = {"checkpoint": files[0], "config": folder / "config.json"}
        if tokenizer_file is not None:
            recorded["vocab"] = tokenizer_file
        write_json(tmp_sidecar, sidecar_record(output, tmp, "export", {
            "source_format": "hf", "family": family.name, "builder": "onnx", "opset": hf_folder.OPSET,
            "gelu": cfg.gelu, "config": cfg.to_dict()}, recorded))
    return output
