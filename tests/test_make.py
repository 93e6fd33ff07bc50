"""make rebuilds exactly when a parameter changes: parameter stamps (scripts/make_params.py) rewritten when the
Makefile's values change or when the artifact's sidecar records other values. `make -q` (question mode: exit 0 when
up to date, 1 when not) on a scratch tree of stand-in artifacts; nothing is built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@pytest.fixture()
def tree(tmp_path):
    """OUT with model.onnx, model.ort.onnx, model.ort.int8.onnx (sidecar: the Makefile's defaults), a venv stamp."""
    out, venv = tmp_path / "out", tmp_path / "venv"
    out.mkdir()
    venv.mkdir()
    (venv / ".installed").touch()
    (tmp_path / "config.yaml").touch()  # stands in for the config (MODEL names no checkpoint folder)
    for name in ("model.onnx", "model.ort.onnx", "model.ort.int8.onnx"):
        (out / name).write_text("stand-in")
    (out / "model.ort.int8.onnx.json").write_text(json.dumps({"parameters": {
        "precision": "int8", "calib_method": "max", "calib_num": 256, "excluded_groups": ["attention_bmm", "ffn_down"],
        "float_precision": "fp16"}}))
    (out / "model.ort.onnx.json").write_text(json.dumps({"parameters": {"target": "ort"}}))
    return out, venv


def up_to_date(tree, *assignments: str) -> bool:
    out, venv = tree
    args = ["make", "-q", "-C", str(ROOT), f"OUT={out}", f"VENV={venv}", f"PYTHON={sys.executable}", "quantize",
            "MODEL=stand-in", f"CONFIG={out.parent / 'config.yaml'}", "TARGET=ort", "PRECISION=int8", *assignments]
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode == 0


def age(tree) -> None:
    """Date the stand-ins in build order, after the stamps there are (as a real build would leave them), in the
    past (a stamp rewritten later is newer)."""
    out, venv = tree
    stamps = [p.stat().st_mtime for p in out.glob(".params-*")]
    start = max([time.time() - 60, *stamps]) + 1
    os.utime(out.parent / "config.yaml", (start - 30, start - 30))
    later = time.time() + 3600  # the venv stamp newer than pyproject.toml and the locks, whenever they changed
    os.utime(venv / ".installed", (later, later))
    for k, name in enumerate(("model.onnx", "model.ort.onnx", "model.ort.int8.onnx"), 1):
        os.utime(out / name, (start + k, start + k))


def test_make_rebuilds_when_a_parameter_changes(tree):
    age(tree)
    # Stamps made on first use from artifacts whose sidecars agree: nothing to rebuild.
    assert up_to_date(tree)
    assert up_to_date(tree)
    assert not up_to_date(tree, "CALIB_METHOD=entropy")
    age(tree)  # "rebuilt" with entropy...
    out, _ = tree
    (out / "model.ort.int8.onnx.json").write_text(json.dumps({"parameters": {"precision": "int8",
                                                                             "calib_method": "entropy",
                                                                             "calib_num": 256}}))
    assert up_to_date(tree, "CALIB_METHOD=entropy")
    assert not up_to_date(tree)  # back to the default: rebuild
    assert not up_to_date(tree, "CALIB_METHOD=entropy", "INT8_EXCLUDE=none")


def test_make_notices_an_artifact_made_with_other_values(tree):
    """The notebook calibrates on 64 features into the same file name: the sidecar says so, make rebuilds."""
    age(tree)
    assert up_to_date(tree)
    out, _ = tree
    sidecar = out / "model.ort.int8.onnx.json"
    sidecar.write_text(sidecar.read_text().replace('"calib_num": 256', '"calib_num": 64'))
    assert not up_to_date(tree)
