"""notebooks/bertrt.ipynb runs top to bottom on the CPU and answers the classic question correctly."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
pytest.importorskip("nbclient", reason="nbclient not installed (make setup installs it)")
import run_notebook as notebook  # noqa: E402  scripts/run_notebook.py


def test_notebook_is_stored_without_outputs():
    nb = json.loads((ROOT / "notebooks" / "bertrt.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_notebook_runs_top_to_bottom(embedded_onnx, tmp_path):
    # Reuse the session's export (the notebook reuses what is in its artifact folder, as it does with out/).
    shutil.copy(embedded_onnx, tmp_path / "model.onnx")
    nb = notebook.execute(out_dir=tmp_path, timeout=900)
    text = notebook.text_of(nb)
    assert "A: a high performance deep learning inference platform" in text
    # The engine cell: built ahead of time with TensorRT-RTX where it is installed (CI), else skipped in one line.
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        assert "built model.native.rtx.engine" in text and (tmp_path / "model.native.rtx.engine").is_file()
    else:
        assert "skipped: needs TensorRT and an NVIDIA GPU" in text
    # The n-best table, the comparison table (four models) and the two probability plots + the latency chart.
    assert "start + end logit" in text and text.count("<tr><td>fused ort") == 3
    assert len(notebook.figures(nb)) == 3
    for name in ("model.ort.onnx", "model.ort.fp16.onnx", "model.ort.int8.onnx", "perf-notebook.json"):
        assert (tmp_path / name).is_file(), name
