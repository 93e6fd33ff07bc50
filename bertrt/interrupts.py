"""Interrupts: Ctrl-C (SIGINT) and SIGTERM end a bertrt command the same way, and leave nothing behind.

- `stop_signals_raise()` (the CLI's main): both signals raise `Interrupted(signum)`, a KeyboardInterrupt, so every
  `finally` and context manager runs (temporaries removed, previous outputs intact); the CLI prints one line and
  exits 128 + the signal (130 for SIGINT, 143 for SIGTERM, as a shell reports them).
- `held()`: a few file operations that must happen together (renaming a set of outputs into place) hold both
  signals off and deliver them right after.
- `deferred()`: around a foreign library's long call that swallows exceptions raised in its Python callbacks
  (TensorRT catches a KeyboardInterrupt raised inside its logger: "Exception caught in log()" and builds on), a
  signal only sets a flag that the library's cancellation hook polls (TensorRT's IProgressMonitor), and is
  delivered when the call returns (the CLI's handler raises `Interrupted`).
A signal the process was started to ignore (SIGINT of a background job) stays ignored throughout.
- `private_tempdir(prefix)`: one bertrt-owned temporary directory that `tempfile` uses for the duration (so a
  library's own temporaries, e.g. onnxruntime's `ort.quant.*`, land inside it), removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) received: a KeyboardInterrupt, so code that cleans up on Ctrl-C cleans up
    on SIGTERM too."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (a plain KeyboardInterrupt too), 143 for SIGTERM."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """"interrupted" for Ctrl-C, "interrupted (SIGTERM)" for SIGTERM."""
    signum = getattr(exc, "signum", signal.SIGINT)
    return "interrupted" if signum == signal.SIGINT else f"interrupted ({signal.Signals(signum).name})"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise(signum, frame):
    raise Interrupted(signum)


_installed = 0  # how many `_handlers` blocks are open in this process


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
    """Install `handler` for SIGINT and SIGTERM for the block, restoring the previous ones (main thread only:
    Python delivers signals there, and elsewhere `signal.signal` is refused)."""
    global _installed
    if not _main_thread():
        yield
        return
    # (a signal the process was started to ignore, e.g. SIGINT of a background job, stays ignored)
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    _installed += 1
    try:
        yield
    finally:
        _installed -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)


def _defaults_in_forked_child() -> None:
    """A forked child (a process pool's worker, bertrt.forking) gets Python's default dispositions back: the pool
    ends its workers with SIGTERM, which must end them, not raise inside them (a traceback per worker), and their
    cleanup is the parent's."""
    global _installed
    if _installed:
        _installed = 0
        with contextlib.suppress(ValueError):  # (a fork from another thread: nothing to reset there)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)


os.register_at_fork(after_in_child=_defaults_in_forked_child)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted(signum)` for the block (SIGTERM would otherwise kill the process
    without running a single `finally`)."""
    with _handlers(_raise):
        yield


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off for a few operations that must happen together, and deliver them right after.
    (A handler, not a signal mask: the kernel may hand the signal to any thread, e.g. one of onnxruntime's.)"""
    received: list[int] = []
    with _handlers(lambda signum, frame: received.append(signum)):
        yield
    for signum in dict.fromkeys(received):
        os.kill(os.getpid(), signum)  # to the handler restored above


class Deferred:
    """What `deferred()` yields: whether a stop signal arrived, for a library's cancellation hook to poll."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise now if a signal arrived (between two foreign calls)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _record(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def deferred() -> Iterator[Deferred]:
    """Record SIGINT/SIGTERM instead of acting on them inside the block; when the block ends, deliver the signal to
    the handler there was before (the CLI's raises `Interrupted`, replacing whatever error the cancelled library
    raised), so the library's result is never used after a signal."""
    state = Deferred()
    try:
        with _handlers(state._record):
            yield state
    finally:
        if state.signum is not None:
            os.kill(os.getpid(), state.signum)


@contextlib.contextmanager
def private_tempdir(prefix: str) -> Iterator[Path]:
    """A new temporary directory that `tempfile` hands out for the block (`tempfile.tempdir`), removed with
    everything in it when the block ends, however it ends."""
    with held():  # made and recorded for the cleanup as one step
        path = Path(tempfile.mkdtemp(prefix=prefix))
    saved = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        with held():
            shutil.rmtree(path, ignore_errors=True)
