"""The wheel works from any directory (scripts/check_wheel.sh): built, installed into a new virtualenv that cannot
see this checkout, and run from an empty folder with only the package's defaults. Slow (a wheel build, an export
and a few commands: ~3 minutes on 2 cores); `make test-slow` and CI run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_from_another_directory(tmp_path):
    # This environment's third-party packages stand in for the wheel's dependencies (no registry in tests).
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "onnx").is_dir())
    run = subprocess.run([str(ROOT / "scripts" / "check_wheel.sh")], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "WORK": str(tmp_path / "w"), "DEPS_SITE": deps,
                              "PYTHON": sys.executable, "HOME": str(tmp_path)}, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "the wheel works from" in run.stdout
