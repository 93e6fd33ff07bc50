"""Files that ship inside the bertrt package (so a wheel run from any directory has every default): the default
pipeline config (`configs/`), the embedded model's vocab (`models/`), SQuAD v1.1 dev (`data/`, see data/README.md)
and the calibration subset (`calibration/data/`). In a checkout these are the repository's own folders (they are
mapped to packages `bertrt.configs`, `bertrt.models`, `bertrt.data` in pyproject.toml); in a wheel they are
package data, found through importlib.resources rather than through the working directory."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

EMBEDDED_MODEL = "minilm-l6-h384-squad11"


def _packaged(package: str, *parts: str) -> Path:
    # files() is a real directory for a regular or editable install (bertrt is never imported from a zip).
    return Path(str(files(package).joinpath(*parts)))


def default_config() -> Path:
    """The embedded model's pipeline config, configs/minilm-l6-h384-squad11.yaml."""
    return _packaged("bertrt.configs", f"{EMBEDDED_MODEL}.yaml")


def embedded_vocab() -> Path:
    """The embedded model's WordPiece vocab (the wheel carries the vocab and config, not the 44 MB checkpoint)."""
    return _packaged("bertrt.models", EMBEDDED_MODEL, "vocab.txt")


def squad_dev() -> Path:
    """SQuAD v1.1 dev (gzip; CC BY-SA 4.0, Rajpurkar et al. 2016), shipped for evaluation and `bertrt compare`."""
    return _packaged("bertrt.data", "squad", "dev-v1.1.json.gz")


def calibration_subset() -> Path:
    """The SQuAD v1.1 *train* subset that INT8/FP8 calibration uses by default."""
    return _packaged("bertrt.calibration", "data", "squad-train-calib.json.gz")
