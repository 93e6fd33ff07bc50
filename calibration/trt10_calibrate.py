"""`bertrt calibrate`: TensorRT 10's implicit-INT8 path (builder flags + an INT8 calibrator + a cache).

TensorRT 11 removed this path (no INT8 flag, no calibrators); there, use `bertrt quantize --precision int8`
(explicit Q/DQ). The calibration cache is named after the model's sha256 (`<model>.<sha256[:16]>.calib.cache`)
and a sidecar `<cache>.json` records the model's full hash: a cache made for another model is refused.
TensorRT is imported lazily, so everything except the build itself works without it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bertrt.calibration import calib_data

from bertrt.artifacts import atomic_output, sha256_file, sidecar_path, write_sidecar
from bertrt.errors import BertrtError

HASH_PREFIX = 16
STAGE = "calibrate:trt10-int8"


def default_cache_path(model: str | Path, model_sha256: str | None = None) -> Path:
    model = Path(model)
    sha = model_sha256 or sha256_file(model)
    return model.with_name(f"{model.stem}.{sha[:HASH_PREFIX]}.calib.cache")


def check_cache(model: str | Path, cache: str | Path, model_sha256: str | None = None) -> None:
    """Raise BertrtError unless `cache` was made for `model` (by the sidecar's recorded hash, else by its name)."""
    cache = Path(cache)
    sha = model_sha256 or sha256_file(model)
    side = sidecar_path(cache)
    if side.is_file():
        try:
            recorded = json.loads(side.read_text())["inputs"]["model"]["sha256"]
        except (ValueError, KeyError, TypeError):
            raise BertrtError(f"{side}: not a bertrt calibration-cache record") from None
        if recorded != sha:
            raise BertrtError(f"calibration cache {cache} was made for another model (sha256 {recorded[:HASH_PREFIX]}, "
                              f"this model is {sha[:HASH_PREFIX]}); delete it or calibrate this model")
        return
    parts = cache.name.split(".")
    prefixes = [p for p in parts if len(p) == HASH_PREFIX and all(c in "0123456789abcdef" for c in p)]
    if not prefixes:
        raise BertrtError(f"calibration cache {cache} has no record of its model (no {side.name} and no model hash "
                          "in its name); refusing to use it")
    if prefixes[-1] != sha[:HASH_PREFIX]:
        raise BertrtError(f"calibration cache {cache} was made for another model (sha256 {prefixes[-1]}, this model "
                          f"is {sha[:HASH_PREFIX]}); delete it or calibrate this model")


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BertrtError("TensorRT is not installed (pip install tensorrt~=10.0 on a machine with an NVIDIA GPU); "
                          "`bertrt calibrate` needs it. For TensorRT 11, use `bertrt quantize --precision int8`") from None
    if int(trt.__version__.split(".")[0]) >= 11:
        raise BertrtError(f"TensorRT {trt.__version__} has no implicit INT8 calibration (removed in 11); use "
                          "`bertrt quantize --precision int8` for explicit Q/DQ")
    return trt


def calibrate(model: str | Path, cache_path: str | Path | None = None, calib_json: str | Path | None = None,
              calib_num: int = calib_data.DEFAULT_CALIB_NUM, batch_size: int = 8, seq_len: int = 384,
              engine_path: str | Path | None = None, algorithm: str = "entropy2") -> dict:
    """Calibrate `model` for TensorRT 10 INT8 (with FP16 allowed); write the cache (and the engine if asked)."""
    from bertrt.qa_contract import INPUT_NAMES, load_qa_model

    model = Path(model)
    load_qa_model(model, load_weights=False)
    sha = sha256_file(model)
    cache = Path(cache_path) if cache_path is not None else default_cache_path(model, sha)
    reuse = cache.is_file()
    if reuse:
        check_cache(model, cache, sha)
    trt = _tensorrt()
    from bertrt.calibration.polygraphy_data_loader import load_data
    from polygraphy.backend.trt import (
        Calibrator,
        CreateConfig,
        Profile,
        engine_from_network,
        network_from_onnx_path,
        save_engine,
    )

    base = {"entropy2": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}.get(algorithm)
    if base is None:
        raise BertrtError(f"unknown TensorRT calibrator {algorithm!r} (entropy2 or minmax)")
    profile = Profile()
    for name in INPUT_NAMES:
        profile.add(name, min=(1, seq_len), opt=(batch_size, seq_len), max=(batch_size, seq_len))
    with atomic_output(cache) as tmp:
        if reuse:
            tmp.write_bytes(cache.read_bytes())
        else:
            tmp.unlink()
        data = load_data(calib_json, calib_num, batch_size, seq_len)
        calibrator = Calibrator(data, cache=str(tmp), BaseClass=base)
        # Polygraphy calibrates with the last profile's opt shapes.
        config = CreateConfig(int8=True, fp16=True, calibrator=calibrator, profiles=[profile])
        engine = engine_from_network(network_from_onnx_path(str(model)), config=config)
        if engine is None:
            raise BertrtError(f"{model}: TensorRT failed to build the INT8 engine")
        if engine_path is not None:
            with atomic_output(engine_path) as etmp:
                save_engine(engine, str(etmp))
    params = {"algorithm": algorithm, "calib_num": calib_num, "batch_size": batch_size, "seq_len": seq_len,
              "tensorrt": trt.__version__, "reused_cache": reuse}
    inputs = {"model": model}
    if calib_json is not None:
        inputs["calib_json"] = Path(calib_json)
    write_sidecar(cache, STAGE, params, inputs)
    return {"cache": str(cache), "engine": str(engine_path) if engine_path else None, **params}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--cache", type=Path)
    p.add_argument("--calib-json", type=Path)
    p.add_argument("--calib-num", type=int, default=calib_data.DEFAULT_CALIB_NUM)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--engine", type=Path)
    args = p.parse_args(argv)
    try:
        print(json.dumps(calibrate(args.model, args.cache, args.calib_json, args.calib_num, args.batch_size,
                                   args.seq_len, args.engine)))
    except BertrtError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
