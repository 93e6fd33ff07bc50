"""`bertrt optimize`: the whole pipeline in one command on the embedded checkpoint (fp16 to keep it fast): every
artifact, the parity/accuracy report, and commands.sh whose commands remake the same artifacts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
from pathlib import Path

from conftest import EMBEDDED
from test_cli import run_cli

from bertrt.cli import main


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_optimize_embedded_fp16(capsys, tmp_path):
    """With TensorRT-RTX installed, --build too: the engine is built (RTX needs no GPU to build); where it cannot
    run (no GPU) the report says so and the checks are of the ONNX it was built from."""
    build = importlib.util.find_spec("tensorrt_rtx") is not None
    out = tmp_path / "opt"
    code, stdout, err = run_cli(capsys, "optimize", "--checkpoint", EMBEDDED, "--output-dir", out, "--target",
                                "native", "--precision", "fp16", "--squad-limit", 10, "--no-progress",
                                *(["--build", "--runtime", "tensorrt-rtx"] if build else []))
    assert code == 0, err
    for name in ("model.onnx", "model.native.onnx", "model.native.fp16.onnx", "optimize.json", "commands.sh",
                 "model.predictions.json", *(["model.native.fp16.engine"] if build else [])):
        assert (out / name).is_file(), name
    report = json.loads((out / "optimize.json").read_text())
    assert report["artifacts"]["final"] == str(out / "model.native.fp16.onnx")
    steps = [s["step"] for s in report["steps"]]
    assert steps == ["export", "surgery", "quantize", *(["build"] if build else []), "compare", "squad", "squad"]
    checked = Path(report["checked"])
    assert (out / f"{checked.stem}.predictions.json").is_file()
    if build and checked.suffix == ".onnx":
        assert "not run here" in report["engine_not_run"] and "engine: " in stdout
    # FP16 against the FP32 export: logits close, accuracy within a point on the subset.
    assert 0 < max(r["worst_abs"] for r in report["parity"]["rows"]) < 0.1
    assert report["accuracy"]["export"]["f1"] > 50 and abs(report["accuracy"]["delta_f1"]) < 5
    assert "parity against the export" in stdout and "SQuAD (10 questions)" in stdout

    # commands.sh holds the exact commands: its surgery line remakes the same fused model.
    lines = (out / "commands.sh").read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and all(line.startswith("bertrt ") for line in lines[3:])
    surgery = next(line for line in lines if line.startswith("bertrt surgery"))
    before = sha(out / "model.native.onnx")
    (out / "model.native.onnx").unlink()
    assert main(shlex.split(surgery)[1:]) == 0
    assert sha(out / "model.native.onnx") == before


def test_optimize_refuses_bad_requests_before_any_work(capsys, tmp_path):
    import pytest

    from bertrt.errors import BertrtError
    from bertrt.optimize import OptimizeRequest, optimize

    with pytest.raises(SystemExit) as exc:
        main(["optimize", "--checkpoint", str(EMBEDDED), "--output-dir", str(tmp_path), "--precision", "int4"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'int4'" in err
    with pytest.raises(BertrtError, match="--squad-limit"):
        optimize(OptimizeRequest(EMBEDDED, tmp_path / "o", squad_limit=0))
    assert not (tmp_path / "o").exists()


def test_optimize_int8_follows_where_the_model_runs():
    """INT8 is made with the recipe of the runtime the final model runs on: without --build the default ONNX runtime
    here (OpenVINO where installed: SmoothQuant, every weight GEMM), with --build an engine (quantize's defaults)."""
    from bertrt.optimize import OptimizeRequest, int8_runtime
    from bertrt.runtimes import default_runtime

    cpu = default_runtime("onnx")
    expected = cpu.name if cpu is not None and cpu.int8 is not None else None
    assert expected == ("openvino" if importlib.util.find_spec("openvino") else None)
    assert int8_runtime(OptimizeRequest(EMBEDDED, Path("o"))) == expected
    assert int8_runtime(OptimizeRequest(EMBEDDED, Path("o"), build=True)) is None
    assert int8_runtime(OptimizeRequest(EMBEDDED, Path("o"), precision="fp8")) is None
