"""`bertrt quantize`: put the precision into the ONNX graph (TensorRT 11 is strongly typed).

- fp16: onnxruntime's float16 converter; FP32 kept where FP16 overflows or loses accuracy (see fp16.py).
- int8: explicit symmetric Q/DQ on GEMM inputs, per-channel weights, activation scales calibrated on SQuAD
  *train* features with onnxruntime's quantizer (see qdq.py). By default the attention batched GEMMs and the
  FFN down-projection stay in float (every GEMM in INT8 misses the 99 %-of-FP32-F1 bar on SQuAD dev) and what
  stays in float is FP16, with the fp16 stage's FP32 exceptions (LayerNorm statistics, overflowing nodes).
- fp8: E4M3 Q/DQ with the INT8 placement (Hopper and newer); every GEMM, FP32 rest by default.
- `runtime`: the runtime the INT8 model will run on; its declared recipe (`Runtime.int8`: placement, float type,
  SmoothQuant alpha) replaces the defaults above (OpenVINO: every weight GEMM, FP32 rest, SmoothQuant 0.95). Options
  given explicitly still win.

Which precisions a graph form takes, and why not the others, is the target's answer (bertrt/targets/).
The output keeps the bertrt metadata (stage `quantize:<precision>`), is written atomically and gets a sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from bertrt.calibration import calib_data
from bertrt.calibration.fp16 import DEFAULT_KEEP_FP32, convert_fp16
from bertrt.calibration.qdq import (CALIB_METHODS, check_exclude, int8_to_fp8, qdq_summary, quantize_int8,
                                    smooth_quant as apply_smooth_quant)

from bertrt.artifacts import atomic_outputs, check_outputs, sha256_file, sidecar_path, sidecar_record, write_json
from bertrt.errors import BertrtError
from bertrt.qa.tokenizer import tokenizer_for
from bertrt.qa_contract import META_ORT_SESSION_CONFIG, load_qa_model, stage_of, stamp
from bertrt.runtimes import QuantRecipe, get_runtime
from bertrt.targets import target_of

PRECISIONS = ("fp16", "int8", "fp8")
FLOAT_PRECISIONS = ("fp16", "fp32")
# Defaults per quantized precision: GEMM groups kept out of the 8-bit types, and the type of what stays float.
# int8: the setting that meets the 99 % bar on the full SQuAD dev set (docs/precision.md); fp8: every GEMM meets its
# bar, and FP32 for the rest is what was measured there.
DEFAULT_EXCLUDE = {"int8": ("attention_bmm", "ffn_down"), "fp8": ()}
DEFAULT_FLOAT = {"int8": "fp16", "fp8": "fp32"}
OVERFLOW_SCAN_FEATURES = 32  # the FP16 overflow scan needs a few batches only


def quantize(input: str | Path, output: str | Path, precision: str, calib_json: str | Path | None = None,
             calib_num: int = calib_data.DEFAULT_CALIB_NUM, calib_method: str = "max",
             vocab: str | Path | None = None, exclude: tuple[str, ...] | None = None,
             keep_fp32: tuple[str, ...] | None = None, batch_size: int = 8, percentile: float = 99.99,
             float_precision: str | None = None, seq_len: int | None = None, progress: bool = False,
             fallback_vocab: str | Path | None = None, smooth_quant: float | None = None,
             runtime: str | None = None) -> dict:
    """Write `output` (atomically, with a sidecar) at `precision`; return a report dict.

    int8/fp8 only: `exclude` (GEMM groups kept in float) and `float_precision` (fp16|fp32, the type of what is not
    quantized) default to DEFAULT_EXCLUDE / DEFAULT_FLOAT; `keep_fp32` applies to every FP16 conversion.
    `seq_len`: calibration sequence length, default 384 clamped to the model's positions (calib_data.calib_seq_len).
    `smooth_quant`: SmoothQuant alpha (int8/fp8; None: none, or the runtime's recipe). `runtime`: the runtime the
    model will run on; its `int8` recipe gives the int8 defaults (exclude, float_precision, smooth_quant).
    `progress`: a bar over the calibration batches on stderr (a terminal only). `vocab` overrides the tokenizer
    stored with the model; `fallback_vocab` (default: the embedded model's) serves models without one."""
    input, output = Path(input), Path(output)
    check_outputs([output, sidecar_path(output)], [input, calib_json or calib_data.DEFAULT_CALIB_JSON, vocab])
    recipe = _recipe(precision, runtime)
    if recipe is not None:  # the runtime's defaults; what the caller gave explicitly wins
        exclude = recipe.exclude if exclude is None else exclude
        float_precision = float_precision or recipe.float_precision
        smooth_quant = recipe.smooth_quant if smooth_quant is None else smooth_quant
    exclude, float_precision = _check_request(precision, calib_method, exclude, float_precision)
    if smooth_quant is not None and precision not in DEFAULT_EXCLUDE:
        raise BertrtError("SmoothQuant applies to int8 and fp8 only")
    model, cfg = load_qa_model(input)
    if stage_of(model).startswith("quantize:"):
        raise BertrtError(f"{input}: already quantized ({stage_of(model)}); quantize the FP32 model")
    target = target_of(model)
    target.check_precision(precision)

    quantized = precision in DEFAULT_EXCLUDE
    calibrated = quantized or (precision == "fp16" and (keep_fp32 is None or "overflow" in keep_fp32))
    calib_json_path = Path(calib_json) if calib_json is not None else calib_data.DEFAULT_CALIB_JSON
    seq_len = calib_data.calib_seq_len(cfg.max_position_embeddings, seq_len)
    feeds = []
    if calibrated:
        count = calib_num if quantized else min(calib_num, OVERFLOW_SCAN_FEATURES)
        tokenizer = tokenizer_for(input, vocab, cfg.vocab_size, fallback_vocab or calib_data.DEFAULT_VOCAB)
        feeds = _calibration_feeds(calib_json_path, count, tokenizer, cfg.vocab_size, seq_len, batch_size)
    keep_fp32 = keep_fp32 if keep_fp32 is not None else DEFAULT_KEEP_FP32
    if quantized:
        out, info, conversion_meta = _quantize_gemms(model, precision, feeds, calib_method, exclude, percentile,
                                                     float_precision, keep_fp32, batch_size, progress, smooth_quant)
        if runtime is not None:
            info["runtime"] = runtime
            conversion_meta["bertrt.quantize.runtime"] = runtime
    else:
        out, info = convert_fp16(model, keep_fp32, feeds)
        conversion_meta = {}
    # Keep everything the input carried (its stage history) and stamp this stage on top.
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    stamp(out, f"quantize:{precision}", cfg, extra={"bertrt.precision": precision,
                                                    "bertrt.quantize.source_sha256": sha256_file(input),
                                                    **conversion_meta})
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        raise BertrtError(f"the {precision} graph is not valid ONNX: {' '.join(str(exc).split())[:300]}") from None

    params = {"precision": precision, "target": target.name,
              "calib_method": calib_method if precision != "fp16" else None,
              "calib_num": sum(f["input_ids"].shape[0] for f in feeds) if feeds else 0,
              "calib_json": str(calib_json_path) if calibrated else None, "batch_size": batch_size,
              "calib_seq_len": seq_len if calibrated else None, **info}
    inputs = {"model": input}
    if calibrated:
        inputs["calib_json"] = calib_json_path
    with atomic_outputs(output, sidecar_path(output)) as (tmp, tmp_sidecar):
        onnx.save(out, str(tmp))
        # Prove the artifact loads as a bertrt model before it replaces anything.
        load_qa_model(tmp, load_weights=False)
        write_json(tmp_sidecar, sidecar_record(output, tmp, f"quantize:{precision}", params, inputs))
    return {"output": str(output), **params}


def _recipe(precision: str, runtime: str | None) -> QuantRecipe | None:
    """The INT8 recipe `runtime` declares (None: quantize's own defaults); int8 only."""
    if runtime is None:
        return None
    declared = get_runtime(runtime).int8
    if precision != "int8":
        raise BertrtError(f"--runtime chooses an INT8 recipe; {precision} has none (drop --runtime)")
    return declared


def _check_request(precision: str, calib_method: str, exclude: tuple[str, ...] | None,
                   float_precision: str | None) -> tuple[tuple[str, ...] | None, str | None]:
    """The arguments' own checks (before the model is read); returns (exclude, float_precision) with the
    precision's defaults filled in."""
    if precision not in PRECISIONS:
        raise BertrtError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if calib_method not in CALIB_METHODS:
        raise BertrtError(f"unknown calibration method {calib_method!r} (choose from {', '.join(CALIB_METHODS)})")
    if precision not in DEFAULT_EXCLUDE:
        if exclude or float_precision not in (None, "fp16"):
            raise BertrtError("GEMM exclusion and the float precision apply to int8 and fp8 only")
        return exclude, float_precision
    exclude = DEFAULT_EXCLUDE[precision] if exclude is None else tuple(exclude)
    check_exclude(exclude)
    float_precision = float_precision or DEFAULT_FLOAT[precision]
    if float_precision not in FLOAT_PRECISIONS:
        raise BertrtError(f"unknown float precision {float_precision!r} (choose from {', '.join(FLOAT_PRECISIONS)})")
    return exclude, float_precision


def _calibration_feeds(calib_json: Path, calib_num: int, tokenizer, vocab_size: int, seq_len: int,
                       batch_size: int) -> list:
    features = calib_data.calibration_features(calib_json, calib_num, tokenizer=tokenizer, vocab_size=vocab_size,
                                               seq_len=seq_len)
    # Padded to `seq_len` tokens, the length TensorRT engines are built for (padding positions are part of the
    # statistics there too), and so histogram calibrators get same-shaped batches.
    return list(calib_data.feed_batches(features, batch_size, seq_len))


def _quantize_gemms(model: onnx.ModelProto, precision: str, feeds: list, calib_method: str, exclude: tuple[str, ...],
                    percentile: float, float_precision: str, keep_fp32: tuple[str, ...],
                    batch_size: int, progress: bool = False, smooth_quant: float | None = None
                    ) -> tuple[onnx.ModelProto, dict, dict[str, str]]:
    """int8 / fp8: SmoothQuant (with an alpha), Q/DQ on the GEMMs not excluded, then what stays float to
    `float_precision`; returns the graph, the report's details and the metadata it adds."""
    meta: dict[str, str] = {}
    smoothed = 0
    if smooth_quant is not None:
        model, smoothed = apply_smooth_quant(model, feeds, smooth_quant)
        meta["bertrt.smooth_quant"] = f"{smooth_quant:g}"
    out, info = quantize_int8(model, feeds, calib_method, exclude=exclude, percentile=percentile, progress=progress)
    if smooth_quant is not None:
        info["smooth_quant"] = {"alpha": smooth_quant, "groups": smoothed}
    if precision == "fp8":
        out = int8_to_fp8(out, model)
        # onnxruntime fuses DQ -> MatMul -> Q into QLinearMatMul, which has no float8 kernel: FP8 runs on its CPU
        # provider only with the Q/DQ fusion off (the GEMM then runs in FP32 on dequantized values).
        meta[META_ORT_SESSION_CONFIG] = json.dumps({"session.disable_quant_qdq": "1"})
    if float_precision == "fp16":
        # On the Q/DQ graph, so the overflow scan and the FP32 exceptions see what the GEMMs will be fed.
        scan = feeds[:max(1, OVERFLOW_SCAN_FEATURES // batch_size)]
        out, fp16_info = convert_fp16(out, keep_fp32, scan)
        info["fp16"] = fp16_info
    info["qdq"] = qdq_summary(out)
    info["float_precision"] = float_precision
    meta.update({"bertrt.calib_method": calib_method,
                 "bertrt.calib_num": str(sum(f["input_ids"].shape[0] for f in feeds)),
                 "bertrt.float_precision": float_precision,
                 "bertrt.quantize.excluded_gemms": ",".join(exclude) or "none"})
    return out, info, meta
