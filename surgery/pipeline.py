"""`bertrt surgery`: prepare -> match every block -> emit the target's fused ops -> cleanup -> check -> stamp ->
save atomically, with the sidecar and the fusion report (`<output>.fusion.json`) beside the output.

The target (bertrt/targets/) gives the emitter, ``emit(graph, matches, cfg, **options) -> {block: fused count}``,
which rewrites the graph in place from complete `ModelMatches` (see match_model.py), and validates its options
before any work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from bertrt.surgery.mask_use import IGNORED, check_mask_use, ignored_mask_warning
from bertrt.surgery.match_model import match_model
from bertrt.surgery.prepare import infer_config, prepare
from bertrt.surgery.report import build_report, check_matches, format_report

from bertrt.artifacts import atomic_outputs, check_outputs, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.qa_contract import stamp
from bertrt.targets import META_TARGET, TARGETS, surgery_targets

# The IR version onnx pairs with an opset (the `native` target's onnx-attention form raises the opset to 23).
_IR_FOR_OPSET = {23: 11}


def fusion_report_path(output: str | Path) -> Path:
    return Path(f"{output}.fusion.json")


def run_surgery(input_path: str | Path, output_path: str | Path, target: str, **options: str) -> dict:
    """Fuse `input_path` for `target` into `output_path`; return the fusion report. `options`: the target's
    (plugins: plugin_api; native: attention), the others at their defaults. On any unmatched block raise BertrtError
    and write nothing."""
    input_path, output_path = Path(input_path), Path(output_path)
    if target not in surgery_targets():
        raise BertrtError(f"unknown surgery target {target!r} (available: {', '.join(surgery_targets())})")
    form = TARGETS[target]
    options = form.resolve_options(options)
    outputs = [output_path, sidecar_path(output_path), fusion_report_path(output_path)]
    check_outputs(outputs, [input_path])

    prepared = prepare(input_path)
    matches = match_model(prepared.graph, prepared.cfg)
    check_matches(matches, str(input_path), prepared.cfg)
    mask_use = check_mask_use(prepared.graph, matches, str(input_path))
    cfg = prepared.cfg or infer_config(matches)

    fused = form.emit(prepared.graph, matches, cfg, **options)
    report = build_report(cfg, fused, target)
    report["source"] = prepared.source
    report["attention_mask"] = mask_use

    graph = prepared.graph
    graph.cleanup().toposort()
    model = gs.export_onnx(graph, ir_version=max(prepared.ir_version, _IR_FOR_OPSET.get(int(graph.opset), 0)))
    onnx.checker.check_model(model)
    stamp(model, f"surgery:{target}", cfg, extra={META_TARGET: target})
    # The model, its sidecar and its fusion report are published together (two runs to one output never mix).
    with atomic_outputs(*outputs) as (tmp, tmp_sidecar, tmp_report):
        onnx.save(model, str(tmp))
        write_json(tmp_sidecar, sidecar_record(output_path, tmp, f"surgery:{target}",
                                               {"target": target, **options, "source_format": prepared.source,
                                                "config": cfg.to_dict(), "blocks": report["blocks"]},
                                               {"model": input_path}))
        write_json(tmp_report, report)
    if mask_use == IGNORED:
        print(ignored_mask_warning(str(input_path)), file=sys.stderr)
    return report
