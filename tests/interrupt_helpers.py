"""Run `bertrt` as a real process and stop it with a signal at a chosen moment (tests of interrupts)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_cli(argv, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m bertrt.cli ARGV` with unbuffered output (so a progress line arrives when it is printed); its
    stdout lines are collected in `proc.lines` by a reader thread."""
    proc = subprocess.Popen([sys.executable, "-m", "bertrt.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    proc.lines, proc.errors = [], []

    def read(stream, lines):
        for line in stream:
            lines.append(line)

    proc.readers = [threading.Thread(target=read, args=(proc.stdout, proc.lines), daemon=True),
                    threading.Thread(target=read, args=(proc.stderr, proc.errors), daemon=True)]
    for reader in proc.readers:  # (both pipes drained: a full stderr pipe would block the process)
        reader.start()
    return proc


def _finish(proc: subprocess.Popen, signum: int | None) -> tuple[int, str]:
    if signum is not None and proc.poll() is None:
        proc.send_signal(signum)
    proc.wait(timeout=120)
    for reader in proc.readers:
        reader.join(timeout=10)
    return proc.returncode, "".join(proc.errors)


def stop_when(proc: subprocess.Popen, condition: Callable[[], bool], signum: int, delay: float = 0.0,
              timeout: float = 300) -> tuple[int, str]:
    """Send `signum` `delay` seconds after `condition()` holds (polled every 10 ms); (exit code, stderr). Fails
    if the process ends first: the moment to interrupt never came."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            rc, err = _finish(proc, None)
            raise AssertionError(f"the process ended (exit {rc}) before the moment to interrupt it: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to interrupt")
        time.sleep(0.01)
    time.sleep(delay)
    return _finish(proc, signum)


def stop_at_line(proc: subprocess.Popen, fragment: str, signum: int, delay: float = 0.0) -> tuple[int, str]:
    """Send `signum` `delay` seconds after a stdout line holding `fragment` was printed."""
    return stop_when(proc, lambda: any(fragment in line for line in proc.lines), signum, delay)


def assert_no_temporaries(folder: Path, expected: set[str]) -> None:
    """`folder` holds exactly `expected` (no `.name.xxxx.tmp` temporary, no probe, no lock file)."""
    names = {p.name for p in folder.iterdir()}
    assert names == set(expected), f"{folder}: {sorted(names ^ set(expected))}"
