"""Where the Triton server is and how it must be started: the `tritonserver` binary, Python backend and stubs that the
`nvidia-pytriton` wheel bundles (see requirements-triton.lock), and the environment their stub needs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.serve import stub_python

# `make setup` installs requirements-triton.lock here (pip --target), apart from the venv's site-packages.
TRITON_HOME = Path(sys.prefix) / "triton"
HOME_ENV = "BERTRT_TRITON_HOME"  # overrides TRITON_HOME (a directory holding pytriton/ and nvidia_pytriton.libs/)
# The stub reads this (serve/triton_model.py): the site directories of the Python that wrote the launch.
STUB_PATH_ENV = "BERTRT_STUB_PATH"


@dataclass(frozen=True)
class TritonInstall:
    home: Path  # the directory holding pytriton/ and nvidia_pytriton.libs/

    @property
    def server(self) -> Path:
        return self.home / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.home / "pytriton" / "tritonserver" / "backends" / "python"

    @property
    def libs(self) -> Path:
        return self.home / "nvidia_pytriton.libs"

    def stub(self) -> Path:
        return (self.home / "pytriton" / "tritonserver" / "python_backend_stubs"
                / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub")


def locate() -> TritonInstall:
    """The bundled Triton server: $BERTRT_TRITON_HOME, else <venv>/triton (make setup), else an nvidia-pytriton
    installed into this environment."""
    homes = [Path(os.environ[HOME_ENV])] if os.environ.get(HOME_ENV) else [TRITON_HOME]
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.origin:
        homes.append(Path(spec.origin).parent.parent)
    for home in homes:
        install = TritonInstall(home)
        if install.server.is_file():
            return install
    raise BertrtError(f"no Triton server found in {' or '.join(map(str, homes))} (run `make setup`, or install "
                      f"requirements-triton.lock with `pip install --no-deps --target {TRITON_HOME}`)")


def check_python() -> None:
    """One line naming a Python that works when this one cannot run the Python-backend stub."""
    problem = stub_python.stub_problem()
    if problem is None:
        return
    other = stub_python.working_python()
    hint = (f"use {other} (e.g. `make setup PYTHON={other}` in a fresh clone)" if other
            else "no Python on this machine can; install one whose libpython is its own release")
    raise BertrtError(f"Python {sys.executable} cannot run Triton's Python-backend stub: {problem}; {hint}")


def _numpy_major(directory: Path) -> int | None:
    dist = next(directory.glob("numpy-*.dist-info"), None)
    return int(dist.name.split("-")[1].split(".")[0]) if dist else None


def stub_search_path(install: TritonInstall) -> list[str]:
    """The directories the stub's interpreter must search first, in order: one holding a NumPy 1.x (the stub was
    built against NumPy 1.x; the server runs from it, see `start`), then this environment's site directories (with
    their .pth files: editable installs)."""
    site_dirs = list(dict.fromkeys(p for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib")) if p))
    numpy_dir = next((d for d in [str(install.home), *site_dirs] if _numpy_major(Path(d)) == 1), None)
    if numpy_dir is None:
        raise BertrtError(f"Triton's Python-backend stub needs NumPy 1.x and neither {install.home} nor this "
                          f"environment has it (run `make setup`)")
    return list(dict.fromkeys([numpy_dir, *site_dirs]))


def backend_directory(install: TritonInstall, workdir: Path) -> Path:
    """A writable copy of the Python backend with this Python's stub beside it (the backend runs the stub from its
    own directory, and the wheel keeps stubs per Python version elsewhere)."""
    backends = workdir / "backends"
    shutil.copytree(install.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    stub = install.stub()
    if not stub.is_file():
        raise BertrtError(f"{stub}: no Python-backend stub for Python {sys.version_info.major}."
                          f"{sys.version_info.minor}")
    shutil.copy2(stub, backends / "python" / stub.name)
    return backends


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The server's environment: the wheel's libraries (the stub copy loses its $ORIGIN rpath), this Python's own
    libpython first when it is shared (see stub_python), and the stub's search path."""
    env = dict(os.environ)
    libs = [str(install.libs)]
    own = stub_python.own_libpython_dir()
    if own is not None:
        libs.append(own)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    env[STUB_PATH_ENV] = os.pathsep.join(stub_search_path(install))
    # Each instance is its own process tokenizing its own batch: the tokenizers library's thread pool in every stub
    # would only compete with the other stubs for the same cores (on the H200 host, 4 instances: 10,054 vs 9,002
    # req/s at c256 without it, docs/serving.md). A value the user set is kept.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
