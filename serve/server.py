"""Run the bundled `tritonserver` on a model repository: start, wait until ready, stop leaving nothing behind.

The server and its Python-backend stubs run in a session of their own, so a Ctrl-C in the terminal reaches only
bertrt, which then stops them in order: SIGTERM (Triton unloads the models and removes its shared-memory regions),
SIGKILL to the whole session after a grace period. The writable backend copy and the log live in one temporary
directory that is removed on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.messages import shown
from bertrt.serve import triton_install
from bertrt.serve.repository import check_repository, serving_mode

EXIT_TIMEOUT_S = 10  # Triton's own wait for in-flight requests on shutdown
# Triton API categories bertrt never uses, closed to every client: client shared memory (system and CUDA: a client
# could make the server read or write any /dev/shm object, e.g. the Python stub's own region), model load/unload,
# and trace and log settings (they name files the server writes). Triton has no switch to turn them off; it can
# only require a header. The required header cannot be sent at all (so reading it in `ps` does not help): its
# value holds a newline (an HTTP/1.1 header ends there; gRPC refuses it as an illegal metadata value) and its name
# an upper-case letter (gRPC metadata names are lower-case on the wire). The random part is generated per start.
RESTRICTED_APIS = ("shared-memory", "model-repository", "trace", "logging")
_RESTRICTED_HEADER = "Bertrt-Closed"
_KILL_GRACE_S = EXIT_TIMEOUT_S + 10
# What Triton can start its Python stub from (it builds an unquoted shell line from these paths).
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./@%+=:,-]+")


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


def _restricted_api_args() -> list[str]:
    """HTTP and gRPC: the RESTRICTED_APIS behind a header no client can send."""
    closed = f"{','.join(RESTRICTED_APIS)}:{_RESTRICTED_HEADER}={secrets.token_hex(16)}\n{secrets.token_hex(16)}"
    return [f"--http-restricted-api={closed}", f"--grpc-restricted-protocol={closed}"]


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
        self.stubs: set[int] = set()  # the Python-backend stubs, once ready
        self._pycache_before: set[Path] = set()
        # This server's own name for the Python backend's /dev/shm regions, so that exactly these are cleaned.
        self.shm_prefix = f"bertrt_{os.getpid()}_{secrets.token_hex(4)}_"

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
        """Both ports must be valid and free: otherwise another server there would answer our readiness probe."""
        e = self.endpoints
        for port, what in e.ports:
            if not 1 <= port <= 65535:
                raise BertrtError(f"{what} port {port}: a TCP port is 1..65535")
        if len({port for port, _ in e.ports}) < len(e.ports):
            raise BertrtError(f"HTTP, gRPC and metrics need different ports ({', '.join(f'{w} {p}' for p, w in e.ports)})")
        try:
            family = socket.getaddrinfo(e.host, None, type=socket.SOCK_STREAM)[0][0]
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise BertrtError(f"--host {shown(e.host, 80)}: not an address or a name of this machine "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
        for port, what in e.ports:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # Like a server's own bind: a port left in TIME_WAIT by a stopped server counts as free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((e.host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise BertrtError(f"{e.host}:{port} ({what}) is already in use") from None
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise BertrtError(f"--host {shown(e.host, 80)}: not an address of this machine") from None
                    raise BertrtError(f"{shown(e.host, 80)}:{port} ({what}): cannot listen there "
                                      f"({exc.strerror or exc})") from None

    def _check_paths(self) -> None:
        """Triton starts the Python stub through a shell line built from the repository's and the backend's paths,
        unquoted: a space (or a shell character, or non-ASCII text) there breaks the stub's start. Refused up front."""
        for path, what in ((self.repository, "the model repository"),
                           (Path(tempfile.gettempdir()), "the temporary directory ($TMPDIR)")):
            if not _SAFE_PATH.fullmatch(str(path)):
                raise BertrtError(f"{shown(path)}: {what} has a space, a shell character or non-ASCII text in its "
                                  f"path, which Triton's Python backend cannot start its stub from; use a plain path")

    def start(self) -> None:
        if not (self.repository / "bertrt_qa" / "config.pbtxt").is_file():
            raise BertrtError(f"{shown(self.repository)}: not a bertrt model repository (no bertrt_qa/config.pbtxt)")
        mode = serving_mode(self.repository)
        if not mode.runs_on_bundled_server:
            raise BertrtError(f"{shown(self.repository)}/{mode.tensor_model} needs Triton's onnxruntime or TensorRT "
                              f"backend, which the bundled tritonserver lacks; run this repository with NVIDIA's "
                              f"Triton container")
        check_repository(self.repository)
        self._check_paths()
        self._check_ports()
        triton_install.check_python()
        install = triton_install.locate()
        env = triton_install.server_environment(install)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # (for the stub's children; the stub itself ignores it, see below)
        self._pycache_before = set(self.repository.glob("*/*/__pycache__"))
        self.workdir = Path(tempfile.mkdtemp(prefix="bertrt-triton-"))
        try:
            backends = triton_install.backend_directory(install, self.workdir)
            cmd = [str(install.server), "--model-repository", str(self.repository),
                   "--backend-directory", str(backends),
                   *self.endpoints.triton_args(), "--allow-sagemaker", "false", "--allow-vertex-ai", "false",
                   "--exit-timeout-secs", str(EXIT_TIMEOUT_S),
                   "--disable-auto-complete-config", "--log-verbose", str(self.log_verbose),
                   f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                   *_restricted_api_args()]
            # The stub's interpreter searches its working directory first: run from the directory holding the
            # NumPy 1.x that the stub was built against (see triton_install.stub_search_path).
            cwd = env[triton_install.STUB_PATH_ENV].split(os.pathsep)[0]
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=_die_with_parent(os.getpid()))
        except BaseException:
            self._remove_workdir()
            raise

    def _get(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoints.http_url}{path}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def ready(self) -> bool:
        return self._get("/v2/health/ready")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BertrtError(f"tritonserver exited with code {self.process.returncode}: {_last_error(self.log)}")
            if self.ready():
                self.stubs = _stubs(self.process.pid)
                self._remove_new_pycache()
                return
            time.sleep(0.25)
        raise BertrtError(f"tritonserver not ready after {self.ready_timeout_s:.0f} s: {_last_error(self.log)}")

    def _remove_new_pycache(self) -> None:
        """The stub's embedded interpreter ignores PYTHONDONTWRITEBYTECODE and writes model.py's bytecode into the
        repository when it loads the model (before ready): what was not there before the start is removed."""
        for directory in self.repository.glob("*/*/__pycache__"):
            if directory not in self._pycache_before:
                shutil.rmtree(directory, ignore_errors=True)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by tritonserver itself (its HTTP/gRPC front end and batcher) and by its
        Python-backend stubs together (tokenizing, the runtime's host side, post-processing): where a serving
        benchmark's host time goes."""
        server = _cpu_seconds(self.process.pid) if self.process is not None else 0.0
        return {"server": server, "stubs": sum(_cpu_seconds(pid) for pid in self.stubs)}

    def problem(self) -> str | None:
        """Why the server cannot answer any more, or None. Triton keeps /v2/health/ready at 200 when a model's
        Python stub dies (every request then fails), so the stubs it started with are watched too."""
        if self.process.poll() is not None:
            return f"tritonserver exited with code {self.process.returncode}: {_last_error(self.log)}"
        gone = sorted(pid for pid in self.stubs if not _alive(pid))
        if gone:
            return f"the model's Python stub (pid {gone[0]}) is gone; every request would fail"
        return None

    def watch(self, interval_s: float = 1.0) -> str:
        """Block while the server can answer; return the one-line reason when it no longer can."""
        while (reason := self.problem()) is None:
            time.sleep(interval_s)
        return reason

    def stop(self) -> None:
        """SIGTERM (Triton stops taking requests, finishes those in flight, unloads the models), SIGKILL to what is
        left after the grace period; then the shared-memory regions of this server and the temporary directory go.
        A second Ctrl-C or SIGTERM meanwhile cuts the grace period short but not the cleanup."""
        hurry = threading.Event()
        with _signals_set(hurry):
            if self.process is not None:
                if self.process.poll() is None:
                    self.process.send_signal(signal.SIGTERM)
                    deadline = time.monotonic() + _KILL_GRACE_S
                    while self.process.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                        time.sleep(0.1)
                # The server's session: whatever is left of it (a stub that did not exit) goes too.
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.process.wait()
                self.process = None
            _remove_shm(self.shm_prefix)
            self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --- processes and shared memory ------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """preexec_fn: the server gets SIGTERM when bertrt dies, even by SIGKILL (Linux), so it never outlives it."""
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _stubs(server_pid: int) -> set[int]:
    """The Python-backend stubs the server runs (its children named triton_python_backend_stub)."""
    found = set()
    for pid in _children(server_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("triton_python"):
                found.add(pid)
        except OSError:
            continue
    return found


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), 0 once it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0  # utime, stime


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _remove_shm(prefix: str) -> None:
    """The Python backend's shared-memory regions of this server (named with its own prefix): Triton removes them
    on a clean shutdown, not when it or a stub is killed."""
    shm = Path("/dev/shm")
    for region in shm.glob(f"{prefix}*") if shm.is_dir() else ():
        region.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_set(event: threading.Event):
    """SIGINT and SIGTERM only set `event` for the duration (main thread; elsewhere signals are not ours)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: event.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
