"""Pipeline configs (configs/*.yaml): defaults for every stage, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bertrt.errors import BertrtError

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"checkpoint": None, "vocab": None, "gelu": None, "opset": 17},
    "squad": {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "n_best": 20,
              "max_answer_length": 30},
    "run": {"batch_size": 8, "provider": "cpu"},
    "data": {"dev": None},
    "serve": {"max_batch_size": 16, "max_queue_delay_us": 2000, "instances": 1, "max_input_bytes": 100_000},
}
DEFAULT_CONFIG = Path("configs/minilm-l6-h384-squad11.yaml")


class PipelineConfig:
    def __init__(self, values: dict[str, dict[str, Any]], path: Path | None):
        self.values = values
        self.path = path

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "default"

    @property
    def out_dir(self) -> Path:
        """Where this config's artifacts go: out/<config name>/ (ignored by git)."""
        return Path("out") / self.name

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]


def load_config(path: str | Path | None) -> PipelineConfig:
    """Load `path` (or the embedded model's config when it exists and no path is given) over the defaults."""
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return PipelineConfig(values, None)
        path = DEFAULT_CONFIG
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise BertrtError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise BertrtError(f"{path}: not a YAML config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BertrtError(f"{path}: a config must be a mapping of sections")
    for section, keys in data.items():
        if section not in DEFAULTS or not isinstance(keys, dict):
            raise BertrtError(f"{path}: unknown section {section!r} (known: {', '.join(DEFAULTS)})")
        for key, value in keys.items():
            if key not in DEFAULTS[section]:
                raise BertrtError(f"{path}: unknown key {section}.{key}")
            values[section][key] = value
    return PipelineConfig(values, path)
