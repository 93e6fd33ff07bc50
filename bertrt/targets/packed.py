"""The `packed` target (`bertrt varseqlen`): the `ort` graph in onnxruntime's packing mode (RemovePadding ->
PackedAttention -> RestorePadding, see surgery/packing.py), so a padded batch costs its real tokens. Those three
contrib ops have kernels in onnxruntime's CUDA provider only."""

from __future__ import annotations

from bertrt.surgery.emit_ort import DOMAIN
from bertrt.surgery.packing import is_packed, to_packing_mode

from bertrt.targets.target import Target

TARGET = Target(
    name="packed",
    description="packing mode (onnxruntime, variable sequence length)",
    runtimes=frozenset({"onnxruntime", "onnxruntime-bound"}),
    precisions=(),
    precision_refusal="quantize calibrates on the CPU, which has no kernels for the packed ops; quantize the `ort` "
                      "model (--precision fp16), then run `bertrt varseqlen` on it",
    convert=to_packing_mode,
    source="ort",
    op_domain=DOMAIN,
    recognize=is_packed,
    runtime_refusal="the `packed` target holds onnxruntime contrib ops ({ops}) that {runtime} cannot parse; build the "
                    "`native` target instead",
    providers=frozenset({"cuda"}),
    provider_refusal="a packing-mode (varseqlen) model runs only on onnxruntime's CUDA provider (use --provider cuda)",
)
