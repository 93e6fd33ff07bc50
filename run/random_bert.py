"""Random-weight BERT-Base/Large question-answering models built from a config, for speed runs without a checkpoint
(latency does not depend on weight values): the torch model (the eager / CUDA-graph peers) and bertrt's FP16 `ort`
artifact made from it by the same stages a user runs (torch.onnx.export -> surgery --target ort -> quantize fp16).
Needs torch and transformers (present on the GPU machines, not a bertrt dependency)."""

from __future__ import annotations

from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.extras import require

# Google's BERT-Base / BERT-Large uncased shapes (vocabulary 30522, 512 positions).
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}


def torch_bert(size: str, seed: int = 0):
    """A random-weight transformers BertForQuestionAnswering (eager attention, as the surgery matchers expect)."""
    if size not in SIZES:
        raise BertrtError(f"unknown random BERT size {size!r} (choose from {', '.join(SIZES)})")
    torch = require("torch", "torch")
    transformers = require("transformers", "torch")
    BertConfig, BertForQuestionAnswering = transformers.BertConfig, transformers.BertForQuestionAnswering
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[size])
    return BertForQuestionAnswering._from_config(config, attn_implementation="eager").eval()


def ort_fp16_artifact(model, out_dir: Path, name: str, vocab: Path | None = None) -> Path:
    """Export `model` (legacy exporter, opset 17, dynamic batch/sequence) and make its FP16 `ort` target (`vocab`
    tokenizes the features that the FP16 overflow scan runs; BERT uncased vocabulary)."""
    import torch

    from bertrt.calibration.quantize import quantize
    from bertrt.surgery.pipeline import run_surgery

    out_dir.mkdir(parents=True, exist_ok=True)
    exported, fused, fp16 = (out_dir / f"{name}.onnx", out_dir / f"{name}.ort.onnx", out_dir / f"{name}.ort.fp16.onnx")
    if not fp16.exists():
        ids = torch.ones((1, 16), dtype=torch.long)
        axes = {0: "batch", 1: "sequence"}
        with torch.no_grad():
            torch.onnx.export(model.float().cpu(), (ids, ids, torch.zeros_like(ids)), str(exported), dynamo=False,
                              opset_version=17, input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["start_logits", "end_logits"],
                              dynamic_axes={n: axes for n in ("input_ids", "attention_mask", "token_type_ids",
                                                              "start_logits", "end_logits")})
        run_surgery(exported, fused, "ort")
        quantize(fused, fp16, "fp16", vocab=vocab)
    return fp16
