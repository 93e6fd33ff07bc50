"""A target module as a new one would be written (see docs/targets.md, "How to add a target"): the test registers
it (one `register` call, no other edit) and checks that the registry, the CLI and `target_of` know it."""

from __future__ import annotations

from bertrt.surgery import emit_ort

from bertrt.targets import Option, Target


def emit(graph, matches, cfg, flavour: str) -> dict[str, int]:
    """The ort emitter; `flavour` only travels to the sidecar (proves the options reach the emitter, validated)."""
    assert flavour in ("mild", "hot")
    return emit_ort.emit(graph, matches, cfg)


TARGET = Target(
    name="fake",
    description="a test target (the ort graph under another name)",
    runtimes=frozenset({"onnxruntime"}),
    precisions=("fp16",),
    precision_refusal="the fake target is made in FP16 only",
    emit=emit,
    options=(Option("flavour", ("mild", "hot"), "mild", "how fake"),),
    op_domain=emit_ort.DOMAIN,
    runtime_refusal="{runtime} cannot run a fake graph ({ops})",
)
