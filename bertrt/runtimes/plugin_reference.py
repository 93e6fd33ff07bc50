"""The numpy plugin reference runtime: an ONNX graph run by onnx's ReferenceEvaluator plus bertrt's numpy references
of the TensorRT BERT plugins (bertrt/surgery/plugin_reference.py). The only runtime for the `plugins` target on a
machine without TensorRT (slow: numpy; for verification, e.g. `compare`)."""

from __future__ import annotations

import onnx
from onnx.reference import ReferenceEvaluator

from bertrt.runtimes.artifact import Artifact
from bertrt.runtimes.base import QABackend, QARunner, RunOptions
from bertrt.runtimes.onnxruntime import with_outputs
from bertrt.runtimes.registry import Runtime
from bertrt.surgery.plugin_reference import reference_ops


class ReferenceRunner(QARunner):
    """Runs an ONNX graph with onnx.reference.ReferenceEvaluator plus the TensorRT plugin references."""

    def __init__(self, model: onnx.ModelProto, outputs: list[str] | None = None, name: str | None = None):
        super().__init__(name=name, prefix="reference-runner")
        self.model = model
        self.outputs = outputs

    def activate_impl(self):
        self.evaluator = ReferenceEvaluator(self.model, new_ops=reference_ops())
        self.output_names = self.outputs or [o.name for o in self.model.graph.output]

    def infer_impl(self, feed_dict):
        values = self.timed(self.evaluator.run, self.output_names, dict(feed_dict))
        return dict(zip(self.output_names, values))

    def deactivate_impl(self):
        del self.evaluator


def _open(artifact: Artifact, options: RunOptions) -> QABackend:
    model = with_outputs(artifact.model, options.extra_outputs)
    runner = ReferenceRunner(model, [o.name for o in model.graph.output], name=f"plugin-reference:{artifact.path.name}")
    return QABackend(runner, artifact.config, f"numpy plugin references: {artifact.path}")


RUNTIME = Runtime(
    name="plugin-reference", artifact="onnx", open=_open,
    description="onnx ReferenceEvaluator + numpy references of the TensorRT BERT plugins (slow; verification)",
    requires=("onnx",), install="pip install onnx", takes=frozenset({"extra_outputs"}),
    default_when=lambda options: True)
