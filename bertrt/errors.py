"""The one exception type users see: the CLI prints its message on one line and exits with code 2."""

from __future__ import annotations

import os

_SHOWN_LIMIT = 120


class BertrtError(Exception):
    """Bad input or a failed check that the user can act on (not a bug in bertrt)."""


def shown(value: object, limit: int = _SHOWN_LIMIT) -> str:
    """User text (a path, a value, a line from a file) as it may appear in a one-line message: control characters
    and other unprintable characters escaped (a newline in a file name cannot split the line, an escape sequence
    cannot reach the terminal), cut to `limit` characters."""
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                      for c in text)
    if len(escaped) > limit:
        escaped = f"{escaped[:limit]}... ({len(text)} characters)"
    return escaped
