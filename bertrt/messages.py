"""User text in one-line messages: the one way bertrt quotes a path, a value or a line read from a file."""

from __future__ import annotations

import os

_SHOWN_LIMIT = 200


def shown(value: object, limit: int = _SHOWN_LIMIT) -> str:
    """User text (a path, a value, a line from a file) as it may appear in a one-line message: control characters
    and other unprintable characters escaped (a newline in a file name cannot split the line, an escape sequence
    cannot reach the terminal), cut in the middle to about `limit` characters (a path's file name stays)."""
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                      for c in text)
    if len(escaped) > limit:
        half = limit // 2
        escaped = f"{escaped[:half]}...[{len(text)} characters]...{escaped[-half:]}"
    return escaped
