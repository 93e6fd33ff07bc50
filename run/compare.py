"""`bertrt compare A B`: run two QA models (TF checkpoint, ONNX export, fused ONNX of any target) on the same real
SQuAD features and report the worst absolute and relative error of the logits, optionally per layer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from bertrt.runtimes import (RunOptions, is_checkpoint, open_backend, read_artifact, reference_options,
                             under_test_options)
from bertrt.qa.features import collate, make_features
from bertrt.qa.squad_data import load_squad
from bertrt.surgery.match_model import match_model
from bertrt.surgery.prepare import prepare
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, DataLoader
from polygraphy.logger import G_LOGGER

from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, load_qa_model, stage_of

REL_FLOOR = 1e-3  # relative error is taken only where |reference| >= this (it is meaningless near zero)


@dataclass
class Row:
    tensor: str
    worst_abs: float
    worst_rel: float
    where: tuple[int, ...]  # index of the worst absolute error


def layer_tensors(model_path: Path) -> list[tuple[str, str]]:
    """(label, tensor name) of the embedding output and each encoder layer's output in an unfused export: the
    tensors the fused graphs keep (emitters write the fused node onto the block's original output tensor)."""
    prepared = prepare(model_path)
    matches = match_model(prepared.graph, prepared.cfg)
    if matches.failures():
        raise BertrtError(f"{model_path}: --per-layer needs an unfused BERT export ({matches.failures()[0]})")
    labels = [("embeddings", matches.embedding.output.name)]
    labels += [(f"layer_{layer.index}", layer.ffn_skip.output.name) for layer in matches.layers]
    return labels


def _as_bse(value: np.ndarray, batch: int) -> np.ndarray:
    """Bring an activation to [B, S, E]: the plugin graph carries [S, B, E, 1, 1]."""
    if value.ndim == 5:
        value = value.reshape(value.shape[:3]).transpose(1, 0, 2)
    return value if value.shape[0] == batch else value.transpose(1, 0, 2)


def check_counts(num_features: int, batch_size: int) -> None:
    if num_features < 1 or batch_size < 1:
        raise BertrtError(f"--num-features ({num_features}) and --batch-size ({batch_size}) must be at least 1")


def vocab_size_of(a: Path, b: Path) -> int:
    """The vocabulary size both models were made for (from what `open_backend` reads: ONNX metadata, an engine's
    sidecar, a checkpoint's config), so that a vocab file for another model is refused before anything runs."""
    sizes = {path: read_artifact(path).config.vocab_size for path in (a, b)}
    if len(set(sizes.values())) > 1:
        raise BertrtError(f"{a} and {b} have different vocabulary sizes ({', '.join(map(str, sizes.values()))})")
    return sizes[b]


def feature_batches(squad_json: Path, tokenizer, num_features: int, batch_size: int, seq_len: int,
                    ) -> list[dict[str, np.ndarray]]:
    examples, _ = load_squad(squad_json)
    query = min(64, seq_len // 2)  # SQuAD's 64 / 128, shrunk for a model with fewer positions
    features = make_features(examples[:num_features], tokenizer, max_seq_length=seq_len, max_query_length=query,
                             doc_stride=min(128, max(1, seq_len - query - 4)))[:num_features]
    return [collate(features[i:i + batch_size], seq_len) for i in range(0, len(features), batch_size)]


def synthetic_batches(vocab_size: int, num_features: int, batch_size: int, seq_len: int, seed: int = 1,
                      ) -> list[dict[str, np.ndarray]]:
    """Random int32 feeds from Polygraphy's data loader (no SQuAD file needed): token ids over the whole vocab,
    segment ids 0/1, the mask all ones. Random tokens are not text, so this checks parity, not accuracy."""
    ranges = {"input_ids": (0, vocab_size - 1), "segment_ids": (0, 1), "input_mask": (1, 1)}
    batches = []
    for first in range(0, num_features, batch_size):
        rows = min(batch_size, num_features - first)
        meta = TensorMetadata()
        for name in INPUT_NAMES:
            meta.add(name, np.int32, (rows, seq_len))
        loader = DataLoader(seed=seed + first, iterations=1, input_metadata=meta, val_range=ranges)
        with G_LOGGER.verbosity(G_LOGGER.WARNING):  # not its "[I] Will generate inference input data" line
            feed = loader[0]
        batches.append({name: np.ascontiguousarray(value, dtype=np.int32) for name, value in feed.items()})
    return batches


def compare(a: Path, b: Path, batches: list[dict[str, np.ndarray]], per_layer: bool = False,
            options: RunOptions | None = None) -> list[Row]:
    """Worst errors of B against A (the reference) over the real (unpadded) positions of every batch. Both models
    are opened by `open_backend` with `options` (the same runner, session config and checks as infer/squad/perf)."""
    names: list[tuple[str, str]] = []
    if per_layer:
        unfused = next((p for p in (a, b) if not is_checkpoint(p) and stage_of(load_qa_model(p)[0]) == "export"),
                       None)
        if unfused is None:
            raise BertrtError("--per-layer needs one of the two models to be an unfused export (bertrt export)")
        names = layer_tensors(unfused)
    extra = [name for _, name in names]
    options = replace(options or RunOptions(), extra_outputs=tuple(extra))
    # A is the reference: with no --runtime, it runs on its kind's reference runtime (onnxruntime for ONNX), and so
    # does B, so that `compare A B` checks the graph, not the default runtime's precision (OpenVINO bf16 is ~0.1 off
    # by design). --runtime R runs B on R (A too where R runs it); --precision alone runs B on the runtime taking it.
    backends = [open_backend(a, reference_options(a, options)), open_backend(b, under_test_options(b, options))]
    for path, backend in zip((a, b), backends):  # shapes an engine cannot take: one line before anything runs
        for feed in batches:
            if backend.check_shape(*feed["input_ids"].shape) not in (None, 0):
                raise BertrtError(f"{path}: compare runs an engine on its first profile, which does not take "
                                  f"shape {list(feed['input_ids'].shape)}")
    runners = [backend.runner for backend in backends]
    G_LOGGER.module_severity = G_LOGGER.WARNING  # our table below is the report; Polygraphy's per-run log is noise
    results = Comparator.run(runners, data_loader=batches)
    (_, runs_a), (_, runs_b) = results[0], results[1]
    rows = []
    labels = [(name, name) for name in OUTPUT_NAMES] + names
    for label, tensor in labels:
        worst_abs, worst_rel, where = 0.0, 0.0, ()
        present = True
        for feed, out_a, out_b in zip(batches, runs_a, runs_b):
            if tensor not in out_a or tensor not in out_b:
                present = False
                break
            batch = feed["input_ids"].shape[0]
            va, vb = np.asarray(out_a[tensor], np.float64), np.asarray(out_b[tensor], np.float64)
            if va.ndim >= 3:
                va, vb = _as_bse(va, batch), _as_bse(vb, batch)
            valid = feed["input_mask"].astype(bool)  # padded positions carry no answer: not compared
            diff = np.abs(va - vb)
            diff[~valid] = 0.0
            i = np.unravel_index(int(np.argmax(diff)), diff.shape)
            if diff[i] >= worst_abs:
                worst_abs, where = float(diff[i]), tuple(int(x) for x in i)
            big = (np.abs(va) >= REL_FLOOR) & (valid if diff.ndim == 2 else valid[..., None])
            if big.any():
                worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(va), REL_FLOOR))[big].max()))
        if present:
            rows.append(Row(label, worst_abs, worst_rel, where))
    return rows


def format_rows(rows: list[Row], atol: float) -> str:
    lines = [f"{'tensor':<16} {'worst abs':>12} {'worst rel':>12}  at [batch, pos(, channel)]  (atol {atol:g})"]
    for r in rows:
        flag = "  FAIL" if r.worst_abs > atol else ""
        lines.append(f"{r.tensor:<16} {r.worst_abs:>12.3e} {r.worst_rel:>12.3e}  {list(r.where)}{flag}")
    return "\n".join(lines)
