"""Reading a user's input file: only a regular file (a FIFO would block, /dev/zero never ends), at most a stated
number of bytes, gzip decompressed as a stream with the same cap (a 2 MB .json.gz can expand to gigabytes), JSON
without unbounded recursion. Every failure is one BertrtError line naming the file."""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path
from typing import Any

from bertrt.errors import BertrtError
from bertrt.messages import shown

MiB = 1 << 20
# Generous for what bertrt reads; a file beyond is a mistake or an attack, refused before it fills memory.
LIMITS = {
    "squad": 256 * MiB,  # SQuAD JSON (train v2.0: 40 MB), after decompression
    "passage": 64 * MiB,
    "vocab": 64 * MiB,  # 30522 lines: 230 KB
    "config": 4 * MiB,  # pipeline YAML, bert_config.json
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _size(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def read_bytes(path: str | os.PathLike[str], limit: int, what: str = "input") -> bytes:
    """The bytes of `path` if it is a regular file (links followed) of at most `limit` bytes; gzip content (by its
    magic bytes) decompressed, at most `limit` bytes of it."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the open descriptor.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BertrtError(f"{shown(path)}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise BertrtError(f"{shown(path)}: cannot read {what}: it is {kind}")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise BertrtError(f"{shown(path)}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise BertrtError(f"{shown(path)}: {what} is larger than bertrt reads ({_size(limit)})")
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(path, raw, limit, what)
    return raw


def _gunzip(path: Path, raw: bytes, limit: int, what: str) -> bytes:
    """Stream-decompress (all gzip members) and stop as soon as the output passes `limit`."""
    out, data = [], raw
    total = 0
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            while data:
                chunk = d.decompress(data, _CHUNK)
                data = d.unconsumed_tail
                total += len(chunk)
                if total > limit:
                    raise BertrtError(f"{shown(path)}: {what} decompresses to more than bertrt reads ({_size(limit)})")
                out.append(chunk)
                if d.eof:
                    break
            if not d.eof:
                raise BertrtError(f"{shown(path)}: corrupt gzip file: truncated (compressed file ended before the "
                                  f"end-of-stream marker was reached)")
            data = d.unused_data.lstrip(b"\0")  # another member, or trailing padding
    except zlib.error as exc:
        raise BertrtError(f"{shown(path)}: corrupt gzip file: {exc}") from None
    return b"".join(out)


def read_text(path: str | os.PathLike[str], limit: int, what: str = "input") -> str:
    raw = read_bytes(path, limit, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BertrtError(f"{shown(path)}: cannot read {what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_json(text: str | bytes, source: str, **kwargs) -> Any:
    """json.loads; a document nested too deeply for the parser is one line, not a RecursionError."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise BertrtError(f"{source}: JSON nested too deeply") from None


# --- counts the user asks for --------------------------------------------------------------------------------
THREADS_PER_CORE = 4  # more threads than this per core only adds contention (and 10^6 threads exhaust memory)


def max_threads() -> int:
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_count(name: str, value: int, low: int, high: int, why: str = "") -> int:
    """`value` of the flag or setting `name` within low..high, else one line."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BertrtError(f"{name} must be an integer, not {shown(value, 40)}")
    if not low <= value <= high:
        raise BertrtError(f"{name} {value}: must be within {low}..{high}{f' ({why})' if why else ''}")
    return value


def check_threads(name: str, threads: int | None) -> None:
    if threads is not None:
        check_count(name, threads, 1, max_threads(), f"{THREADS_PER_CORE} x the {os.cpu_count()} cores here")
