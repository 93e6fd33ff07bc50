"""How commands report: human text by default, one JSON document with --json; progress bars on stderr (tqdm,
shown only on a terminal); default artifact names beside their input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm


def add_json_flag(p) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON (machine-readable) instead of text")


def add_progress_flag(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar (bars show only on a terminal)")


def emit(args, data: Any, text: str) -> None:
    """`data` as JSON with --json, else the human `text`."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False, default=str))
    else:
        print(text)


def beside(source: str | Path, suffix: str) -> Path:
    """The default artifact made from `source`: <source stem>.<suffix> in the source's folder
    (model.onnx + "native.onnx" -> model.native.onnx; model.native.onnx + "fp16.onnx" -> model.native.fp16.onnx)."""
    source = Path(source)
    return source.with_name(f"{source.stem}.{suffix}")


def bar(total: int | None, desc: str, enabled: bool = True, unit: str = "it", file=None) -> tqdm:
    """A tqdm bar on stderr; disabled when not wanted and when stderr is not a terminal (logs, pipes, tests)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False, dynamic_ncols=True,
                file=file)


# Lines C++ libraries log straight to file descriptor 2 (TensorFlow's absl INFO lines), out of Python's reach.
_NATIVE_NOISE = re.compile(r"^(I\d{4} \d\d:\d\d:\d+\.\d+\s|WARNING: All log messages before absl::InitializeLog)")


@contextlib.contextmanager
def native_stderr_filtered(enabled: bool = True) -> Iterator[None]:
    """Hold what is written to file descriptor 2 inside the block and replay it afterwards without the C++ INFO
    noise (TensorFlow logs through absl before any Python setting applies). Errors and warnings are kept."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NATIVE_NOISE.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


@contextlib.contextmanager
def steps(names: Sequence[str], desc: str, enabled: bool = True, quiet_native: bool = False) -> Iterator[Any]:
    """A bar over the named steps of a long call that has no finer progress of its own (export, engine build):
    `with steps([...]) as step: step("convert"); ...`. `quiet_native`: filter C++ INFO logs meanwhile (the bar
    writes to its own copy of stderr, so it still shows)."""
    with contextlib.ExitStack() as stack:
        stream = None
        if enabled and quiet_native and sys.stderr.isatty():  # a bar shows only on a terminal
            stream = stack.enter_context(os.fdopen(os.dup(sys.stderr.fileno()), "w"))
        b = stack.enter_context(bar(len(names), desc, enabled, unit="step", file=stream))
        stack.enter_context(native_stderr_filtered(quiet_native))
        done = []

        def step(name: str) -> None:
            if done:
                b.update(1)
            done.append(name)
            b.set_postfix_str(name)

        yield step
        if done:
            b.update(1)


@contextlib.contextmanager
def ticking(desc: str, enabled: bool = True) -> Iterator[Any]:
    """An elapsed-time line on stderr for one long call with no progress of its own (a TensorRT engine build),
    refreshed every second from a thread; yields a `log(line)` that prints above it (plain print when off)."""
    if not enabled or not sys.stderr.isatty():
        yield print
        return
    with tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed}", leave=False) as b:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(1.0):
                b.refresh()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield lambda line: tqdm.write(str(line), file=sys.stdout)
        finally:
            stop.set()
            thread.join()
