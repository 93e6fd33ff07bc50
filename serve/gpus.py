"""`--gpus all|0,1`: the GPUs a served model's instances are placed on (Triton instance groups of KIND_GPU).

The GPUs counted are those CUDA reports to a process here (the driver's cuDeviceGetCount, which honours
CUDA_VISIBLE_DEVICES as Triton does), else `nvidia-smi -L`; none when neither is there.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

from bertrt.errors import BertrtError


def _cuda_device_count() -> int | None:
    """cuDeviceGetCount through the driver library; None when there is no driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    return count.value


def _nvidia_smi_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def gpu_count() -> int:
    """How many GPUs a process here can use."""
    count = _cuda_device_count()
    return count if count is not None else _nvidia_smi_count()


def parse_gpus(text: str | None, provider: str, available: int | None = None) -> tuple[int, ...]:
    """The GPU ids of `--gpus` (`all` or comma-separated ids), each checked to exist; () without the flag.
    `available` defaults to `gpu_count()`."""
    if text is None:
        return ()
    if provider != "cuda":
        raise BertrtError(f"--gpus places instances on GPUs; it needs --provider cuda (not {provider})")
    available = gpu_count() if available is None else available
    if available == 0:
        raise BertrtError("--gpus: no GPU here (CUDA and nvidia-smi report none)")
    if text.strip() == "all":
        return tuple(range(available))
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BertrtError(f"--gpus takes `all` or comma-separated GPU ids such as 0,1, not {text!r}") from None
    missing = [i for i in ids if not 0 <= i < available]
    if missing:
        raise BertrtError(f"--gpus {text}: no GPU {', '.join(map(str, missing))} here (GPUs 0..{available - 1})")
    if len(set(ids)) != len(ids):
        raise BertrtError(f"--gpus {text}: a GPU is listed twice")
    return ids
