"""A make prerequisite that changes exactly when an artifact's parameters change: `make_params.py STAMP ARTIFACT
key=value ...` prints STAMP, and rewrites it (so it is newer than ARTIFACT and make rebuilds) only when

- the parameters differ from those STAMP holds (the Makefile was called with other values), or
- ARTIFACT's sidecar (<artifact>.json) records another value for one of them (something else made the file:
  the notebook, a hand-run bertrt command).

A rewritten stamp whose values the sidecar records exactly is dated just before ARTIFACT (nothing to rebuild).

An empty value means "bertrt's default" and is not compared with the sidecar. Standard library only (it runs every
time make reads the Makefile)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _recorded(artifact: Path) -> dict:
    try:
        return json.loads(Path(f"{artifact}.json").read_text()).get("parameters", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _same(wanted: str, recorded) -> bool:
    if isinstance(recorded, list):
        recorded = ",".join(map(str, recorded)) or "none"
    return wanted == str(recorded)


def main(argv: list[str]) -> int:
    stamp, artifact, pairs = Path(argv[0]), Path(argv[1]), argv[2:]
    params = dict(p.split("=", 1) for p in pairs)
    content = "".join(f"{k}={v}\n" for k, v in sorted(params.items()))
    recorded = _recorded(artifact)
    given = {k: v for k, v in params.items() if v}
    stale = any(k in recorded and not _same(v, recorded[k]) for k, v in given.items())
    agrees = artifact.exists() and all(k in recorded and _same(v, recorded[k]) for k, v in given.items())
    if stale or not stamp.is_file() or stamp.read_text() != content:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(content)
        if artifact.exists() and (stale or agrees):
            # Stale: newer than the artifact (rebuild), also on a coarse-clock filesystem. Agrees (the artifact was
            # made with exactly these values, e.g. before the stamp existed): older, so nothing is rebuilt for it.
            mtime = artifact.stat().st_mtime + (1 if stale else -1)
            os.utime(stamp, (mtime, mtime))
    print(stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
