"""Atomic artifact writes and the JSON sidecars that record what produced each artifact.

Every stage writes to a temporary name beside the target and renames on success, so a failed run leaves the
previous artifact (and its sidecar) intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import bertrt

# Tools whose versions change what an artifact contains.
_TOOLS = ("numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy", "tensorflow-cpu", "tf2onnx", "tokenizers")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    versions = {"bertrt": bertrt.__version__, "python": platform.python_version()}
    for name in _TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    return Path(f"{artifact}.json")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_sidecar(artifact: str | os.PathLike[str], stage: str, parameters: dict[str, Any],
                  inputs: dict[str, str | os.PathLike[str]]) -> dict[str, Any]:
    """Record the stage, its parameters, the hashes of its input files and the tool versions."""
    record = {
        "stage": stage,
        "artifact": Path(artifact).name,
        "sha256": sha256_file(artifact),
        "parameters": parameters,
        "inputs": {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in inputs.items()},
        "tools": tool_versions(),
    }
    write_json_atomic(sidecar_path(artifact), record)
    return record
