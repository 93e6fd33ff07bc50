"""What the surgery tests of every target share: the random-weight shapes, inputs and error measure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bertrt.runtimes.onnxruntime import ort_session
from bertrt.surgery.pipeline import fusion_report_path

from bertrt.artifacts import sha256_file, sidecar_path
from bertrt.qa_contract import load_qa_model, metadata, stage_of
from bertrt.targets import META_TARGET, target_of

TOL = 1e-4  # worst abs logits error over valid tokens, fused vs unfused (fp32)
# (layers, hidden, heads, gelu): head sizes 32, 32, 64 (768/12 is BERT-base's attention); the tanh one covers
# tf2onnx's x*x*x GELU form.
SHAPES = [(2, 64, 2, "erf"), (4, 128, 4, "tanh"), (2, 768, 12, "erf")]
HF_NAMES = ["hf-l2-h64-a2", "hf-l4-h128-a4", "hf-l2-h128-a2-tanh"]


def shape_id(shape) -> str:
    return f"l{shape[0]}-h{shape[1]}-a{shape[2]}-{shape[3]}"


def ort_logits(model: Path | bytes, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    start, end = ort_session(model, threads=1).run(["start_logits", "end_logits"], feed)
    return start, end


def worst_valid_error(a, b, mask: np.ndarray) -> float:
    """Worst |a - b| over the real (unpadded) positions of start and end logits."""
    valid = mask.astype(bool)
    assert all(x.shape == y.shape for x, y in zip(a, b)), [(x.shape, y.shape) for x, y in zip(a, b)]
    return max(float(np.abs(x - y)[valid].max()) for x, y in zip(a, b))


def random_feed(batch: int, seq: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Rows with different padding: full, partly padded, mostly padded."""
    rng = np.random.default_rng(seed)
    lengths = [seq, seq - seq // 3, 5][:batch]
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, (batch, seq)).astype(np.int32) * mask
    segments = ((np.arange(seq)[None, :] >= np.array(lengths)[:, None] // 3) * mask).astype(np.int32)
    return {"input_ids": ids, "segment_ids": segments, "input_mask": mask}


def assert_report_and_artifacts(fused: Path, report: dict, target: str, layers: int) -> None:
    """Exact block counts, the fusion JSON, the sidecar and the stamped stage of a surgery output."""
    assert report["blocks"] == {"embedding": {"fused": 1, "expected": 1},
                                "skip_layernorm": {"fused": 2 * layers, "expected": 2 * layers},
                                "attention": {"fused": layers, "expected": layers},
                                "gelu": {"fused": layers, "expected": layers}}
    assert json.loads(fusion_report_path(fused).read_text()) == report
    sidecar = json.loads(sidecar_path(fused).read_text())
    assert sidecar["stage"] == f"surgery:{target}" and sidecar["sha256"] == sha256_file(fused)
    model, cfg = load_qa_model(fused)
    assert stage_of(model) == f"surgery:{target}" and cfg.num_hidden_layers == layers
    assert metadata(model)[META_TARGET] == target and target_of(model).name == target  # target apart from stage
