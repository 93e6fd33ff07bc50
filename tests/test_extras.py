"""A missing optional dependency is one line naming the pip extra, exit 2 (not an internal error). Each import is
made to fail with sys.modules[name] = None, which is how Python spells "not installed" to an import."""

from __future__ import annotations

import sys

import pytest
from conftest import EMBEDDED
from test_calibration import tiny_qa_model

from bertrt.cli import main
from bertrt.errors import BertrtError
from bertrt.extras import EXTRAS, require


def one_line(capsys, code: int, extra: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and f"needs the '{extra}' extra" in err and f"pip install 'bertrt[{extra}]'" in err
    assert "internal error" not in err
    return err


def test_export_without_tf2onnx(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    code = main(["export", "--checkpoint", str(EMBEDDED), "--output", str(tmp_path / "m.onnx")])
    assert "tf2onnx" in one_line(capsys, code, "export")
    assert not list(tmp_path.iterdir())


def test_triton_repo_and_serve_without_tritonclient(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tritonclient", None)
    model = tiny_qa_model(tmp_path / "a.onnx")
    one_line(capsys, main(["triton-repo", "--model", str(model), "--output", str(tmp_path / "repo")]), "serve")
    one_line(capsys, main(["serve", "--model", str(model), "--http-port", "0", "--grpc-port", "0"]), "serve")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(("runtime", "module", "extra"), [("tensorrt", "tensorrt", "tensorrt"),
                                                          ("tensorrt-rtx", "tensorrt_rtx", "rtx")])
def test_build_without_tensorrt(monkeypatch, capsys, tmp_path, runtime, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    model = tiny_qa_model(tmp_path / "a.onnx")
    code = main(["build", "--model", str(model), "--output", str(tmp_path / "a.engine"), "--runtime", runtime])
    one_line(capsys, code, extra)


@pytest.mark.parametrize(("module", "extra"), [("nbclient", "notebook"), ("torch", "torch"),
                                               ("tritonclient.grpc", "serve"), ("safetensors.numpy", "export")])
def test_require_names_the_extra(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    with pytest.raises(BertrtError, match=rf"needs the '{extra}' extra.*pip install 'bertrt\[{extra}\]'"):
        require(module, extra)


def test_extras_match_pyproject():
    """Every extra the messages name is one pip can install."""
    import tomllib
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
