"""Which TensorRT library builds and runs engines: TensorRT 10/11 (`tensorrt`) or TensorRT-RTX (`tensorrt_rtx`); used
by `bertrt build` and by the tensorrt-engine runtime (an engine's sidecar names its library).

Polygraphy serves both from one code base; it binds its `trt` module when `polygraphy.backend.trt` is first
imported, by `polygraphy.config.USE_TENSORRT_RTX` (the `POLYGRAPHY_USE_TENSORRT_RTX` variable). So the runtime is
chosen here, before that import, and a process keeps the library it chose first.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from bertrt.errors import BertrtError


@dataclass(frozen=True)
class Library:
    name: str  # as on the command line and in engine sidecars
    module: str
    pip: str  # what installs it
    rtx: bool
    label: str

    def strongly_typed(self, version: str) -> bool:
        """TensorRT 11 and TensorRT-RTX have no weak typing: precision comes from the graph."""
        return self.rtx or int(version.split(".")[0]) >= 11

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


LIBRARIES = {r.name: r for r in (
    Library("tensorrt", "tensorrt", "needs the 'tensorrt' extra: pip install 'bertrt[tensorrt]' (TensorRT 10/11; "
            "engines run on an NVIDIA GPU)", False, "TensorRT"),
    Library("tensorrt-rtx", "tensorrt_rtx", "needs the 'rtx' extra: pip install 'bertrt[rtx]' (TensorRT-RTX, "
            "tensorrt-rtx-cu13)", True, "TensorRT-RTX"),
)}


def resolve(name: str | None) -> Library:
    """The runtime named, or with None / "auto" the installed one (TensorRT first)."""
    if name in (None, "auto"):
        for runtime in LIBRARIES.values():
            if runtime.installed():
                return runtime
        raise BertrtError("no TensorRT installed: " + "; or ".join(r.pip for r in LIBRARIES.values()))
    if name not in LIBRARIES:
        raise BertrtError(f"unknown runtime {name!r} (choose from {', '.join(LIBRARIES)}, or auto)")
    return LIBRARIES[name]


def load(runtime: Library):
    """Import the runtime's module and point Polygraphy's TensorRT backend at it; return the module."""
    if not runtime.installed():
        raise BertrtError(f"{runtime.label} is not installed: {runtime.pip}")
    from polygraphy import config as polygraphy_config

    bound = "polygraphy.backend.trt" in sys.modules
    if bound and polygraphy_config.USE_TENSORRT_RTX != runtime.rtx:
        other = "TensorRT-RTX" if polygraphy_config.USE_TENSORRT_RTX else "TensorRT"
        raise BertrtError(f"this process already loaded {other} through Polygraphy; use {runtime.label} in "
                          "another process")
    polygraphy_config.USE_TENSORRT_RTX = runtime.rtx
    try:
        return importlib.import_module(runtime.module)
    except ImportError as exc:  # e.g. the libraries wheel is missing or does not match the bindings
        raise BertrtError(f"{runtime.label} is installed but does not import ({exc}); reinstall it "
                          f"({runtime.pip})") from None


def device_compute_capability() -> str:
    """The current CUDA device's compute capability ("8.6"), through the CUDA runtime Polygraphy loads."""
    import ctypes

    try:
        from polygraphy import cuda

        handle = cuda.wrapper().handle
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        status = handle.cudaGetDevice(ctypes.byref(device))
        if status == 0:
            status = handle.cudaDeviceGetAttribute(ctypes.byref(major), 75, device)  # ComputeCapabilityMajor
        if status == 0:
            status = handle.cudaDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ComputeCapabilityMinor
    except Exception as exc:  # no CUDA runtime library, no driver: Polygraphy raises its own exception types
        raise BertrtError(f"no CUDA GPU here to run a TensorRT engine ({str(exc).splitlines()[0][:200]})") from None
    if status != 0:
        raise BertrtError(f"no CUDA GPU here to run a TensorRT engine (CUDA error {status})")
    return f"{major.value}.{minor.value}"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@contextlib.contextmanager
def polygraphy_errors(what: str) -> Iterator[_Records]:
    """Polygraphy logs TensorRT's and the parser's errors line by line and then raises a generic exception
    ("Could not parse ONNX correctly"). Route its log into a list for the duration, and turn a failure into one
    line carrying the first error."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    records = _Records()
    logger = logging.getLogger("Polygraphy")
    saved = (G_LOGGER.use_python_logging_system, logger.propagate, logger.level, G_LOGGER.colors)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.colors = False  # (else Polygraphy prints a hint about the `colored` module to stdout)
    logger.addHandler(records)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    except PolygraphyException as exc:
        errors = [m for level, m in records.messages if level >= G_LOGGER.ERROR]
        first = (errors[0] if errors else str(exc)).splitlines()[0].removeprefix("[E] ").removeprefix("[!] ")
        count = sum(1 for m in errors if "In node" in m)
        detail = f"{count} parser errors, first: " if count > 1 else ""
        raise BertrtError(f"{what}: {detail}{first[:400]}") from None
    finally:
        logger.removeHandler(records)
        G_LOGGER.use_python_logging_system, logger.propagate, level, G_LOGGER.colors = saved
        logger.setLevel(level)
