"""The `export` target: the unfused graph `bertrt export` (or torch.onnx.export) writes; every runtime parses it."""

from __future__ import annotations

from bertrt.targets.target import Target

TARGET = Target(
    name="export",
    description="unfused export",
    runtimes=None,  # plain ONNX: every runtime
    precisions=("fp16", "int8", "fp8"),
)
