"""Which Pythons can run Triton's Python-backend stub (standard library only: `make setup` runs it before any venv).

The stub (`triton_python_backend_stub`, one build per Python minor version) embeds the interpreter by loading
`libpython3.X.so.1.0` through the dynamic loader, and that interpreter then uses the standard library of the
Python the repository was made for. Both must be the same release: a libpython 3.11.2 running the 3.11.7 standard
library fails in `multiprocessing` (`'_thread.RLock' object has no attribute '_recursion_count'`). bertrt puts the
running Python's own libpython first on the loader path when it was built shared (pyenv's is), so such a Python
always works; a static Python works only when the system's libpython is its exact release (Debian's python3.11 and
libpython3.11 are).

`python3 serve/stub_python.py` prints a Python that works (this one when it does) and whose `venv` module works,
or fails; the Makefile uses it to choose the venv's Python.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# The stub versions nvidia-pytriton 0.7.0 ships (pytriton/tritonserver/python_backend_stubs/<minor>/).
STUB_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
_PROBE_TIMEOUT_S = 20


def own_libpython_dir() -> str | None:
    """The directory holding this Python's own shared libpython, when it was built shared; else None."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and os.path.isfile(os.path.join(libdir, soname)):
        return libdir
    return None


def _system_libpython(minor: str) -> str | None:
    """The libpython3.X.so.1.0 the dynamic loader finds by default (from its cache, `ldconfig -p`)."""
    name = f"libpython{minor}.so.1.0"
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        cache = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in cache.splitlines():
        if line.strip().startswith(name + " ") and "=>" in line:
            return line.rsplit("=>", 1)[-1].strip()
    return None


def stub_libpython() -> str | None:
    """The libpython the stub will load when bertrt starts Triton from this Python."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    own = own_libpython_dir()
    if own is not None:
        return os.path.join(own, sysconfig.get_config_var("INSTSONAME"))
    return _system_libpython(minor)


def _library_version(path: str) -> str | None:
    """The release a libpython was built from (Py_GetVersion), read in a child process: loading a second
    libpython into this interpreter is not safe."""
    code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.Py_GetVersion.restype = ctypes.c_char_p; "
            "print(lib.Py_GetVersion().decode().split()[0])")
    try:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                             timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def stub_problem() -> str | None:
    """Why the stub cannot run with this Python, or None when it can."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    if minor not in STUB_VERSIONS:
        return f"Triton's Python backend ships stubs for Python {', '.join(STUB_VERSIONS)}, not {minor}"
    lib = stub_libpython()
    if lib is None:
        return (f"the stub needs libpython{minor}.so.1.0 and there is none: this Python is not built shared and the "
                f"system has no libpython{minor}")
    version = _library_version(lib)
    if version != platform.python_version():
        return (f"the stub would load {lib} (Python {version or 'of unknown version'}) with the standard library of "
                f"Python {platform.python_version()}; they must be the same release")
    return None


def _candidates() -> list[str]:
    """Python executables on this machine worth probing, most specific first (bounded: a handful of paths)."""
    names = [sys.executable]
    for minor in reversed(STUB_VERSIONS):
        names += [f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}", shutil.which(f"python{minor}") or ""]
    names += [shutil.which("python3") or "", "/usr/bin/python3"]
    seen, out = set(), []
    for name in names:
        if name and os.access(name, os.X_OK):
            real = os.path.realpath(name)
            if real not in seen:
                seen.add(real)
                out.append(name)
    return out


def _probe(python: str, with_venv: bool) -> bool:
    """True when `python` can run the stub (and, with_venv, can make a venv with pip)."""
    script = Path(__file__).resolve()
    code = f"import runpy, sys; m = runpy.run_path({str(script)!r}); sys.exit(m['stub_problem']() is not None)"
    try:
        ok = subprocess.run([python, "-c", code], capture_output=True, timeout=_PROBE_TIMEOUT_S).returncode == 0
        if ok and with_venv:
            # Debian splits `venv`/`ensurepip` into python3.X-venv: check that a venv with pip can be made.
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                ok = subprocess.run([python, "-m", "venv", tmp], capture_output=True,
                                    timeout=120).returncode == 0
        return ok
    except (OSError, subprocess.SubprocessError):
        return False


def working_python(with_venv: bool = False) -> str | None:
    """The first Python on this machine that can run the stub (this one when it can)."""
    return next((p for p in _candidates() if _probe(p, with_venv)), None)


def main() -> int:
    python = working_python(with_venv=True)
    if python is None:
        print("no Python on this machine can run Triton's Python-backend stub", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
