"""Optional dependencies: each is imported through `require`, which names the pip extra that installs it, so a
base install says "needs the 'export' extra: pip install 'bertrt[export]'" (exit 2) instead of an internal error."""

from __future__ import annotations

import importlib
from types import ModuleType

from bertrt.errors import BertrtError

# The extras of pyproject.toml's [project.optional-dependencies], and what each is for (said in the message).
EXTRAS = {
    "export": "TensorFlow, tf2onnx: bertrt export",
    "serve": "tritonclient, Triton: serve, triton-repo, serve-bench",
    "tensorrt": "TensorRT 10/11: build, calibrate on an NVIDIA GPU",
    "rtx": "TensorRT-RTX: build, also without a GPU",
    "notebook": "nbclient, nbformat, ipykernel: the walkthrough notebook",
    "torch": "torch, transformers: perf --random-bert",
    "openvino": "OpenVINO: the fast CPU runtime (a base dependency on x86-64 and arm64)",
}


def missing(extra: str, exc: ImportError | None = None) -> BertrtError:
    """The one-line error for a missing optional dependency."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")  # a bug of ours
    name = getattr(exc, "name", None) if exc is not None else None
    why = f" (no module {name!r})" if name else (f" ({exc})" if exc else "")
    return BertrtError(f"needs the '{extra}' extra ({EXTRAS[extra]}): pip install 'bertrt[{extra}]'{why}")


def require(module: str, extra: str) -> ModuleType:
    """import_module(module), or a BertrtError naming `extra` when it (or a module it needs) is not installed."""
    try:
        importlib.import_module(module.split(".")[0])  # a submodule imported before is cached: check its package
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(extra, exc) from None
