"""Run the bundled `tritonserver` on a model repository: start, wait until ready, stop leaving nothing behind.

The server and its Python-backend stubs run in a session of their own, so a Ctrl-C in the terminal reaches only
bertrt, which then stops them in order: SIGTERM (Triton unloads the models and removes its shared-memory regions),
SIGKILL to the whole session after a grace period. The writable backend copy and the log live in one temporary
directory that is removed on exit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.serve import triton_install
from bertrt.serve.repository import serving_mode

EXIT_TIMEOUT_S = 10  # Triton's own wait for in-flight requests on shutdown
_KILL_GRACE_S = EXIT_TIMEOUT_S + 10


@dataclass(frozen=True)
class Endpoints:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None  # Triton's Prometheus metrics (/metrics over HTTP) on `host`; None: off

    def triton_args(self) -> list[str]:
        """tritonserver's endpoint flags: HTTP and gRPC on `host`, metrics off or on `host` too (never on Triton's
        default 0.0.0.0)."""
        args = ["--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port)]
        if self.metrics_port is None:
            return args + ["--allow-metrics", "false"]
        return args + ["--allow-metrics", "true", "--metrics-address", self.host, "--metrics-port",
                       str(self.metrics_port)]

    @property
    def ports(self) -> list[tuple[int, str]]:
        named = [(self.http_port, "HTTP"), (self.grpc_port, "gRPC")]
        return named + ([(self.metrics_port, "metrics")] if self.metrics_port is not None else [])

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:  # tritonclient.http's form (no scheme)
        return f"{self.client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.grpc_port}"


# Triton's log lines: glog format, e.g. `E1129 00:22:22.383130 1473 model_lifecycle.cc:642] "failed to load ..."`.
_ERROR_LINE = re.compile(r'^E\d{4} \S+\s+\d+ \S+\] "?(.*?)"?$')
# Logged as an error on every machine without a GPU, whatever else happens.
_NOISE = ("CudaDriverHelper has not been initialized",)


def _last_error(log: Path) -> str:
    """The last error of Triton's log, first line only, for a one-line message."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [m.group(1).split("\\n")[0] for line in lines if (m := _ERROR_LINE.match(line))
              and not any(noise in line for noise in _NOISE)]
    return (errors or [line for line in lines if "error" in line.lower()] or lines or ["empty log"])[-1].strip()[:500]


class TritonServer:
    """`with TritonServer(repo, endpoints) as server:` -- ready on exit of __enter__, gone after __exit__."""

    def __init__(self, repository: Path, endpoints: Endpoints = Endpoints(), ready_timeout_s: float = 120,
                 log_file: Path | None = None, log_verbose: int = 0):
        self.repository = Path(repository).resolve()
        self.endpoints = endpoints
        self.ready_timeout_s = ready_timeout_s
        self.log_file = log_file  # Triton's output, kept; None: in the temporary directory, removed on exit
        self.log_verbose = log_verbose
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None

    @property
    def log(self) -> Path:
        assert self.workdir is not None
        return self.log_file or self.workdir / "tritonserver.log"

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _check_ports(self) -> None:
        """Both ports must be free: otherwise another server there would answer our readiness probe."""
        e = self.endpoints
        if len({port for port, _ in e.ports}) < len(e.ports):
            raise BertrtError(f"HTTP, gRPC and metrics need different ports ({', '.join(f'{w} {p}' for p, w in e.ports)})")
        for port, what in e.ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # Like a server's own bind: a port left in TIME_WAIT by a stopped server counts as free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((e.host, port))
                except OSError as exc:
                    raise BertrtError(f"{e.host}:{port} ({what}) is already in use ({exc.strerror})") from None

    def start(self) -> None:
        if not (self.repository / "bertrt_qa" / "config.pbtxt").is_file():
            raise BertrtError(f"{self.repository}: not a bertrt model repository (no bertrt_qa/config.pbtxt)")
        mode = serving_mode(self.repository)
        if not mode.runs_on_bundled_server:
            raise BertrtError(f"{self.repository}/{mode.tensor_model} needs Triton's onnxruntime or TensorRT backend, "
                              f"which the bundled tritonserver lacks; run this repository with NVIDIA's Triton "
                              f"container")
        self._check_ports()
        triton_install.check_python()
        install = triton_install.locate()
        env = triton_install.server_environment(install)
        self.workdir = Path(tempfile.mkdtemp(prefix="bertrt-triton-"))
        try:
            backends = triton_install.backend_directory(install, self.workdir)
            cmd = [str(install.server), "--model-repository", str(self.repository),
                   "--backend-directory", str(backends),
                   *self.endpoints.triton_args(), "--exit-timeout-secs", str(EXIT_TIMEOUT_S),
                   "--disable-auto-complete-config", "--log-verbose", str(self.log_verbose)]
            # The stub's interpreter searches its working directory first: run from the directory holding the
            # NumPy 1.x that the stub was built against (see triton_install.stub_search_path).
            cwd = env[triton_install.STUB_PATH_ENV].split(os.pathsep)[0]
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            self._remove_workdir()
            raise

    def ready(self) -> bool:
        url = f"http://{self.endpoints.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BertrtError(f"tritonserver exited with code {self.process.returncode}: {_last_error(self.log)}")
            if self.ready():
                return
            time.sleep(0.25)
        raise BertrtError(f"tritonserver not ready after {self.ready_timeout_s:.0f} s: {_last_error(self.log)}")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=_KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
            # The server's session: whatever is left of it (a stub that did not exit) goes too.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
            self.process = None
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
