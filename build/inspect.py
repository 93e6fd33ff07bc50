"""`bertrt build --inspect` / `make inspect`: the TensorRT network the parser makes of a model (layer list and types),
on the CPU. See network.py for why this is not `polygraphy inspect model --display-as=trt`."""

from __future__ import annotations

import json
from pathlib import Path

from bertrt.build import builder_config, network
from bertrt.runtimes import tensorrt_library as runtimes

from bertrt.qa_contract import load_qa_model
from bertrt.targets import target_of


def parse(path: Path, runtime_name: str | None):
    """(runtime, version, (builder, network, parser)) of `path`, parsed strongly typed where the graph carries its
    precision or the runtime has no weak typing."""
    model, _ = load_qa_model(path, load_weights=False)
    runtime = runtimes.resolve(runtime_name)
    network.check_runtime_takes(path, model, target_of(model), runtime)
    trt = runtimes.load(runtime)
    typed = runtime.strongly_typed(trt.__version__) or builder_config.graph_precision(model) != "fp32"
    with runtimes.polygraphy_errors(f"{path}: {runtime.label} {trt.__version__}"):
        return runtime, trt.__version__, network.network_loader(path, typed)()


def inspect_network(path: Path, runtime_name: str | None) -> str:
    runtime, version, (_, parsed, _) = parse(path, runtime_name)
    summary = network.summarize(parsed)
    return (f"{path}: {runtime.label} {version} network, {json.dumps(summary.to_dict())}\n"
            + network.layer_table(parsed))
