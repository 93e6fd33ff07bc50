"""How a QA model runs: the runner protocol (base.py), the one registry of runtimes and `open_backend` (registry.py),
and one module per runtime. See docs/runtimes.md.

    from bertrt.runtimes import RunOptions, open_backend
    with open_backend("out/model.onnx", RunOptions(provider="cuda", buckets=(128, 256, 384), batch_size=32)) as qa:
        start_logits, end_logits = qa.infer(feed)
"""

from __future__ import annotations

from bertrt.runtimes import (onnxruntime, onnxruntime_bound, openvino, plugin_reference, tensorrt_engine,
                             tf_checkpoint)
from bertrt.runtimes.artifact import ARTIFACT_KINDS, Artifact, is_checkpoint, read_artifact
from bertrt.runtimes.base import PROVIDERS, QABackend, QARunner, QuantRecipe, RunOptions, check_fits, run_options
from bertrt.runtimes.registry import (Runtime, choose_runtime, default_runtime, get_runtime, open_backend,
                                      reference_options, register, registered, runtime_names, under_test_options, unregister)

__all__ = ["ARTIFACT_KINDS", "Artifact", "PROVIDERS", "QABackend", "QARunner", "QuantRecipe", "RunOptions",
           "Runtime", "check_fits", "choose_runtime", "default_runtime", "get_runtime", "is_checkpoint", "open_backend", "read_artifact",
           "reference_options", "register", "registered", "run_options", "runtime_names", "under_test_options",
           "unregister"]

# The registered runtimes, one line each. The order is the preference among defaults: a model's default runtime is
# the first of its artifact kind whose `default_when` holds for the options, that is installed here and that can run
# the model's target.
register(onnxruntime_bound.RUNTIME)  # ONNX, default on --provider cuda or with --buckets / --cuda-graph
register(openvino.RUNTIME)  # ONNX, CPU default where installed (onnxruntime stays the reference: compare's A side)
register(onnxruntime.RUNTIME)  # ONNX, default otherwise
register(plugin_reference.RUNTIME)  # ONNX, default for the `plugins` target (which onnxruntime cannot run)
register(tensorrt_engine.RUNTIME)  # engines
register(tf_checkpoint.RUNTIME)  # checkpoints
