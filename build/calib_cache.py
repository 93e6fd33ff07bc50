"""TensorRT 10 INT8 calibration caches, tied to the model they were made for.

A cache is named `<model>.<sha256[:16]>.calib.cache` and its sidecar `<cache>.json` records the model's full hash:
a cache made for another model is refused (TensorRT would silently apply its scales to the wrong tensors). The
sidecar is untrusted input: anything malformed is one line naming it.
"""

from __future__ import annotations

from pathlib import Path

from bertrt.artifacts import sha256_file, sidecar_path
from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, read_text
from bertrt.model_config import parse_json_strict

HASH_PREFIX = 16
STAGE = "calibrate:trt10-int8"
_HEX = set("0123456789abcdef")


def default_cache_path(model: str | Path, model_sha256: str | None = None) -> Path:
    model = Path(model)
    sha = model_sha256 or sha256_file(model)
    return model.with_name(f"{model.stem}.{sha[:HASH_PREFIX]}.calib.cache")


def _recorded_hash(side: Path) -> str:
    where = f"{side}: not a bertrt calibration-cache record"
    try:
        data = parse_json_strict(read_text(side, LIMITS["config"], "calibration-cache record"))
    except (OSError, ValueError) as exc:
        raise BertrtError(f"{where} ({str(exc).splitlines()[0][:200]})") from None
    model = data.get("inputs", {}).get("model") if isinstance(data, dict) and isinstance(data.get("inputs"), dict) \
        else None
    sha = model.get("sha256") if isinstance(model, dict) else None
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
        raise BertrtError(f"{where} (no inputs.model.sha256)")
    return sha


def check_cache(model: str | Path, cache: str | Path, model_sha256: str | None = None) -> None:
    """Raise BertrtError unless `cache` was made for `model` (by the sidecar's recorded hash, else by its name)."""
    cache = Path(cache)
    sha = model_sha256 or sha256_file(model)
    side = sidecar_path(cache)
    if side.is_file():
        recorded = _recorded_hash(side)
        if recorded != sha:
            raise BertrtError(f"calibration cache {cache} was made for another model (sha256 {recorded[:HASH_PREFIX]}, "
                              f"this model is {sha[:HASH_PREFIX]}); delete it or calibrate this model")
        return
    prefixes = [p for p in cache.name.split(".") if len(p) == HASH_PREFIX and set(p) <= _HEX]
    if not prefixes:
        raise BertrtError(f"calibration cache {cache} has no record of its model (no {side.name} and no model hash "
                          "in its name); refusing to use it")
    if prefixes[-1] != sha[:HASH_PREFIX]:
        raise BertrtError(f"calibration cache {cache} was made for another model (sha256 {prefixes[-1]}, this model "
                          f"is {sha[:HASH_PREFIX]}); delete it or calibrate this model")
