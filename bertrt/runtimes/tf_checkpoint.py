"""The TF checkpoint runtime: the TF network built from a TF1 checkpoint or HF safetensors, exactly what `bertrt
export` converts: the reference of the export (`compare CHECKPOINT model.onnx`). TensorFlow is imported only when the
runner is activated (it is the `export` extra)."""

from __future__ import annotations

from pathlib import Path

from bertrt.export.onnx_export import read_weights, resolve_source  # the export's own reader: the same network
from bertrt.export.tf_model import build_qa_function, run_tf
from bertrt.model_config import BertConfig
from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions
from bertrt.runtimes.registry import Runtime


class TfCheckpointRunner(QARunner):
    """The TF network of a checkpoint; returns the logits only (no per-layer tensors)."""

    def __init__(self, checkpoint: Path, name: str | None = None):
        super().__init__(name=name, prefix="tf-checkpoint-runner")
        self.checkpoint = Path(checkpoint)

    def activate_impl(self):
        source = resolve_source(self.checkpoint)
        self.config = BertConfig.from_json(source.config)
        self.qa = build_qa_function(read_weights(source, self.config), self.config)

    def infer_impl(self, feed_dict):
        start_logits, end_logits = self.timed(run_tf, self.qa, feed_dict)
        return {"start_logits": start_logits, "end_logits": end_logits}

    def deactivate_impl(self):
        del self.qa


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    return QABackend(TfCheckpointRunner(artifact.path, name=f"tf:{artifact.path.name}"), artifact.config,
                     f"TF network: {artifact.path}")


RUNTIME = Runtime(
    name="tf-checkpoint", artifact="checkpoint", open=_open,
    description="the TF network of a checkpoint (the export's reference); TensorFlow on the CPU",
    requires=("tensorflow",), install="pip install 'bertrt[export]'",
    # per-layer outputs: it has none beyond the logits, and says so by returning only those (compare then reports
    # the tensors both models have), as an ONNX graph returns only the extra outputs it has
    takes=frozenset({"extra_outputs"}), default_when=lambda options: True)
