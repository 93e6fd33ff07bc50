"""Which TensorRT builds and runs engines: TensorRT 10/11 (`tensorrt`) or TensorRT-RTX (`tensorrt_rtx`).

Polygraphy serves both from one code base; it binds its `trt` module when `polygraphy.backend.trt` is first
imported, by `polygraphy.config.USE_TENSORRT_RTX` (the `POLYGRAPHY_USE_TENSORRT_RTX` variable). So the runtime is
chosen here, before that import, and a process keeps the runtime it chose first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass

from bertrt.errors import BertrtError


@dataclass(frozen=True)
class Runtime:
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


RUNTIMES = {r.name: r for r in (
    Runtime("tensorrt", "tensorrt", "needs the 'tensorrt' extra: pip install 'bertrt[tensorrt]' (TensorRT 10/11; "
            "engines run on an NVIDIA GPU)", False, "TensorRT"),
    Runtime("tensorrt-rtx", "tensorrt_rtx", "needs the 'rtx' extra: pip install 'bertrt[rtx]' (TensorRT-RTX, "
            "tensorrt-rtx-cu13)", True, "TensorRT-RTX"),
)}


def resolve(name: str | None) -> Runtime:
    """The runtime named, or with None / "auto" the installed one (TensorRT first)."""
    if name in (None, "auto"):
        for runtime in RUNTIMES.values():
            if runtime.installed():
                return runtime
        raise BertrtError("no TensorRT installed: " + "; or ".join(r.pip for r in RUNTIMES.values()))
    if name not in RUNTIMES:
        raise BertrtError(f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)}, or auto)")
    return RUNTIMES[name]


def load(runtime: Runtime):
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
