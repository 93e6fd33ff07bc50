"""Pipeline configs (configs/*.yaml): defaults for every stage, overridden by command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertrt.errors import BertrtError
from bertrt.resources import default_config


@dataclass(frozen=True)
class Key:
    """A config key: its default and what a value must be. `kind` is "path" (a string), "str", "int" (every
    integer in a config is a size or count: at least 1) or "strs" (a non-empty list of strings)."""
    default: Any
    kind: str
    choices: tuple[str, ...] = ()
    nullable: bool = False


SCHEMA: dict[str, dict[str, Key]] = {
    "model": {"checkpoint": Key(None, "path", nullable=True), "vocab": Key(None, "path", nullable=True),
              "gelu": Key(None, "str", choices=("erf", "tanh"), nullable=True), "opset": Key(17, "int")},
    "squad": {"max_seq_length": Key(384, "int"), "doc_stride": Key(128, "int"), "max_query_length": Key(64, "int"),
              "n_best": Key(20, "int"), "max_answer_length": Key(30, "int")},
    "run": {"batch_size": Key(8, "int"), "provider": Key("cpu", "str", choices=("cpu", "cuda"))},
    "data": {"dev": Key(None, "path", nullable=True)},
    # engine builds: runtime tensorrt | tensorrt-rtx | auto; profiles: list of "batch=MIN:OPT:MAX,seq=MIN:OPT:MAX"
    # (null: batch 1..run.batch_size, seq fixed at squad.max_seq_length)
    "build": {"runtime": Key("auto", "str", choices=("auto", "tensorrt", "tensorrt-rtx")),
              "profiles": Key(None, "strs", nullable=True)},
    # `bertrt triton-repo` / `serve`: Triton dynamic batching, model instances (null: the provider's defaults,
    # serve/repository.py DEFAULT_BATCHING), the largest request accepted
    "serve": {"max_batch_size": Key(None, "int", nullable=True), "max_queue_delay_us": Key(None, "int", nullable=True),
              "instances": Key(None, "int", nullable=True), "max_input_bytes": Key(100_000, "int")},
}
DEFAULTS: dict[str, dict[str, Any]] = {section: {k: key.default for k, key in keys.items()}
                                       for section, keys in SCHEMA.items()}


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
    """Load `path` (default: the embedded model's config, shipped in the package) over the defaults. Relative
    paths in the file are relative to the file, not to the working directory."""
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    path = Path(path) if path is not None else default_config()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise BertrtError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise BertrtError(f"{path}: not a YAML config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BertrtError(f"{path}: a config must be a mapping of sections")
    for section, keys in data.items():
        if section not in SCHEMA:
            raise BertrtError(f"{path}: unknown section {section!r} (known: {', '.join(SCHEMA)})")
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise BertrtError(f"{path}: section {section!r} must be a mapping of keys, not {_type_name(keys)}")
        for key, value in keys.items():
            if key not in SCHEMA[section]:
                raise BertrtError(f"{path}: unknown key {section}.{key} (known: {', '.join(SCHEMA[section])})")
            value = _checked(value, SCHEMA[section][key], f"{path}: {section}.{key}")
            if SCHEMA[section][key].kind == "path" and value is not None:
                value = str(_relative_to(path, Path(value).expanduser()))
            values[section][key] = value
    return PipelineConfig(values, path)


def _relative_to(config: Path, value: Path) -> Path:
    """`value` as written in `config`: absolute stays, relative is taken from the config's folder (shown relative to
    the working directory when it lies below it, so messages stay short)."""
    if value.is_absolute():
        return value
    resolved = Path(os.path.normpath(config.parent.absolute() / value))
    try:
        return resolved.relative_to(Path.cwd())
    except ValueError:
        return resolved


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _checked(value: Any, key: Key, where: str) -> Any:
    """`value` if it is what `key` allows (no coercion: "384" is not 384, and `eight` is a string)."""
    if value is None:
        if key.nullable:
            return None
        raise BertrtError(f"{where} must be set (null is not allowed)")
    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise BertrtError(f"{where} must be an integer, not {value!r}")
        if value < 1:
            raise BertrtError(f"{where} must be at least 1, not {value}")
        return value
    if key.kind == "strs":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise BertrtError(f"{where} must be a list of strings, not {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise BertrtError(f"{where} must be a {'path' if key.kind == 'path' else 'string'}, not {value!r}")
    if key.choices and value not in key.choices:
        raise BertrtError(f"{where} must be one of {', '.join(key.choices)}, not {value!r}")
    return value
