"""Polygraphy runners for what Polygraphy cannot run itself: the TensorRT-plugin graph on the CPU (through the numpy
plugin references and onnx's ReferenceEvaluator) and the TF network of a checkpoint (the export's reference)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from bertrt.qa_contract import INPUT_NAMES


def qa_input_metadata() -> TensorMetadata:
    meta = TensorMetadata()
    for name in INPUT_NAMES:
        meta.add(name, dtype=np.int32, shape=(None, None))
    return meta


class ReferenceRunner(BaseRunner):
    """Runs an ONNX graph with onnx.reference.ReferenceEvaluator plus the TensorRT plugin references (slow: numpy)."""

    def __init__(self, model: onnx.ModelProto, outputs: list[str] | None = None, name: str | None = None):
        super().__init__(name=name, prefix="reference-runner")
        self.model = model
        self.outputs = outputs

    def activate_impl(self):
        from bertrt.surgery.plugin_reference import reference_ops
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(self.model, new_ops=reference_ops())
        self.output_names = self.outputs or [o.name for o in self.model.graph.output]

    def get_input_metadata_impl(self):
        return qa_input_metadata()

    def infer_impl(self, feed_dict):
        start = time.time()
        values = self.evaluator.run(self.output_names, dict(feed_dict))
        self.inference_time = time.time() - start
        return dict(zip(self.output_names, values))

    def deactivate_impl(self):
        del self.evaluator


class TfCheckpointRunner(BaseRunner):
    """The TF network built from a checkpoint (what `bertrt export` converts): the reference of the export."""

    def __init__(self, checkpoint: Path, name: str | None = None):
        super().__init__(name=name, prefix="tf-checkpoint-runner")
        self.checkpoint = Path(checkpoint)

    def activate_impl(self):
        from bertrt.export.onnx_export import read_weights, resolve_source
        from bertrt.export.tf_model import build_qa_function

        from bertrt.model_config import BertConfig

        source = resolve_source(self.checkpoint)
        self.config = BertConfig.from_json(source.config)
        self.qa = build_qa_function(read_weights(source, self.config), self.config)

    def get_input_metadata_impl(self):
        return qa_input_metadata()

    def infer_impl(self, feed_dict):
        from bertrt.export.tf_model import run_tf

        start = time.time()
        start_logits, end_logits = run_tf(self.qa, feed_dict)
        self.inference_time = time.time() - start
        return {"start_logits": start_logits, "end_logits": end_logits}

    def deactivate_impl(self):
        del self.qa
