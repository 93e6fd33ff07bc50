"""`bertrt quantize`: put the precision into the ONNX graph (TensorRT 11 is strongly typed).

- fp16: onnxruntime's float16 converter; FP32 kept where FP16 overflows or loses accuracy (see fp16.py).
- int8: explicit symmetric Q/DQ on GEMM inputs, per-channel weights, activation scales calibrated on SQuAD
  *train* features with onnxruntime's quantizer (see qdq.py).
- fp8: E4M3 Q/DQ with the INT8 placement (Hopper and newer).

The output keeps the bertrt metadata (stage `quantize:<precision>`), is written atomically and gets a sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from bertrt.calibration import calib_data
from bertrt.calibration.qdq import CALIB_METHODS

from bertrt.artifacts import atomic_outputs, check_outputs, sha256_file, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.qa_contract import META_ORT_SESSION_CONFIG, load_qa_model, stage_of, stamp
from bertrt.targets import target_of

PRECISIONS = ("fp16", "int8", "fp8")


SUPPORTED = {
    "export": PRECISIONS,
    "native": PRECISIONS,
    "ort": ("fp16", "int8"),  # no onnxruntime EP runs FP8 GEMMs, and TensorRT does not take contrib ops
    "plugins": (),  # plugins choose precision by their type_id attribute; see the INT8/plugins notes
}


def check_supported(target: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise BertrtError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    allowed = SUPPORTED.get(target, PRECISIONS)
    if precision not in allowed:
        if target == "plugins":
            raise BertrtError(f"precision {precision} is not supported for the plugins target: TensorRT plugins take "
                              "their precision from their type_id attribute (and INT8 from TensorRT 10 calibration "
                              "with `bertrt calibrate`), not from Q/DQ; quantize the native target instead")
        raise BertrtError(f"precision {precision} is not supported for the {target} target "
                          f"(supported: {', '.join(allowed)})")


def quantize(input: str | Path, output: str | Path, precision: str, calib_json: str | Path | None = None,
             calib_num: int = calib_data.DEFAULT_CALIB_NUM, calib_method: str = "max",
             vocab: str | Path | None = None, exclude: tuple[str, ...] = (), keep_fp32: tuple[str, ...] | None = None,
             batch_size: int = 8, percentile: float = 99.99) -> dict:
    """Write `output` (atomically, with a sidecar) at `precision`; return a report dict."""
    input, output = Path(input), Path(output)
    check_outputs([output, sidecar_path(output)], [input, calib_json or calib_data.DEFAULT_CALIB_JSON, vocab])
    if precision not in PRECISIONS:
        raise BertrtError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if calib_method not in CALIB_METHODS:
        raise BertrtError(f"unknown calibration method {calib_method!r} (choose from {', '.join(CALIB_METHODS)})")
    model, cfg = load_qa_model(input)
    if stage_of(model).startswith("quantize:"):
        raise BertrtError(f"{input}: already quantized ({stage_of(model)}); quantize the FP32 model")
    target = target_of(model).name
    check_supported(target, precision)

    calibrated = precision in ("int8", "fp8") or (precision == "fp16" and (keep_fp32 is None or "overflow" in keep_fp32))
    feeds: list = []
    calib_json_path = Path(calib_json) if calib_json is not None else calib_data.DEFAULT_CALIB_JSON
    if calibrated:
        if precision == "fp16":
            calib_num = min(calib_num, 32)  # overflow scan: a few batches are enough
        features = calib_data.calibration_features(calib_json_path, calib_num, vocab=vocab,
                                                   vocab_size=cfg.vocab_size)
        # Padded to 384 tokens, the length TensorRT engines are built for (padding positions are part of the
        # statistics there too), and so histogram calibrators get same-shaped batches.
        feeds = list(calib_data.feed_batches(features, batch_size, calib_data.MAX_SEQ_LENGTH))

    extra_meta: dict[str, str] = {"bertrt.precision": precision, "bertrt.quantize.source_sha256": sha256_file(input)}
    if precision == "fp16":
        from bertrt.calibration.fp16 import DEFAULT_KEEP_FP32, convert_fp16

        out, info = convert_fp16(model, keep_fp32 if keep_fp32 is not None else DEFAULT_KEEP_FP32, feeds)
    else:
        from bertrt.calibration.qdq import int8_to_fp8, qdq_summary, quantize_int8

        out, info = quantize_int8(model, feeds, calib_method, exclude=exclude, percentile=percentile)
        if precision == "fp8":
            out = int8_to_fp8(out, model)
            # onnxruntime fuses DQ -> MatMul -> Q into QLinearMatMul, which has no float8 kernel: FP8 runs on its CPU
            # provider only with the Q/DQ fusion off (the GEMM then runs in FP32 on dequantized values).
            extra_meta[META_ORT_SESSION_CONFIG] = json.dumps({"session.disable_quant_qdq": "1"})
        info["qdq"] = qdq_summary(out)
        extra_meta.update({"bertrt.calib_method": calib_method,
                           "bertrt.calib_num": str(sum(f["input_ids"].shape[0] for f in feeds))})
    # Keep everything the input carried (its stage history) and stamp this stage on top.
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    stamp(out, f"quantize:{precision}", cfg, extra=extra_meta)
    onnx.checker.check_model(out)

    params = {"precision": precision, "target": target, "calib_method": calib_method if precision != "fp16" else None,
              "calib_num": sum(f["input_ids"].shape[0] for f in feeds) if feeds else 0,
              "calib_json": str(calib_json_path) if calibrated else None, "batch_size": batch_size, **info}
    inputs = {"model": input}
    if calibrated:
        inputs["calib_json"] = calib_json_path
    with atomic_outputs(output, sidecar_path(output)) as (tmp, tmp_sidecar):
        onnx.save(out, str(tmp))
        # Prove the artifact loads as a bertrt model before it replaces anything.
        load_qa_model(tmp, load_weights=False)
        write_json(tmp_sidecar, sidecar_record(output, tmp, f"quantize:{precision}", params, inputs))
    return {"output": str(output), **params}
