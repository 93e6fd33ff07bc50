"""Calibration data (SQuAD train subset), the Polygraphy data loader and the TensorRT 10 cache checks.
None of these need TensorRT; the real build is marked `tensorrt` and skipped without it."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.calibration import calib_data
from bertrt.build.calib_cache import check_cache, default_cache_path
from onnx import TensorProto, helper

from bertrt.artifacts import sha256_file, sidecar_path, write_sidecar
from bertrt.cli import main
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.qa_contract import INPUT_NAMES, stamp

LOADER = Path(calib_data.__file__).with_name("polygraphy_data_loader.py")


def tiny_qa_model(path: Path, scale: float = 1.0, domain: str = "") -> Path:
    """A stand-in with the bertrt QA contract (int32 inputs, start/end logits, metadata): not a BERT."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"]) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("start_logits", "end_logits")]
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT)]
    if domain:
        nodes.append(helper.make_node("CustomQKVToContextPluginDynamic", ["f"], ["g"], domain=domain))
    else:
        nodes.append(helper.make_node("Identity", ["f"], ["g"]))
    nodes += [helper.make_node("Mul", ["g", "s"], ["start_logits"]), helper.make_node("Identity", ["g"], ["end_logits"])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs,
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [scale])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)
    stamp(model, "surgery:plugins" if domain else "export", cfg)
    onnx.save(model, path)
    return path


# --- calibration data -----------------------------------------------------------------------------------------

def test_shipped_subset_is_small_squad_train():
    path = calib_data.DEFAULT_CALIB_JSON
    assert path.is_file() and path.stat().st_size < 300_000
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert data["version"] == "1.1" and "train" in data["source"]
    assert sum(len(p["qas"]) for a in data["data"] for p in a["paragraphs"]) >= 400


def test_calibration_features_are_deterministic(tokenizer):
    a = calib_data.calibration_features(calib_num=24, tokenizer=tokenizer)
    b = calib_data.calibration_features(calib_num=24, tokenizer=tokenizer)
    assert len(a) == 24
    assert all(np.array_equal(x.input_ids, y.input_ids) for x, y in zip(a, b))
    assert len({(f.example_index, f.span_index) for f in a}) == 24
    other_seed = calib_data.calibration_features(calib_num=24, tokenizer=tokenizer, seed=1)
    assert any(not np.array_equal(x.input_ids, y.input_ids) for x, y in zip(a, other_seed))


def test_calibration_file_not_squad(tmp_path, tokenizer):
    bad = tmp_path / "notsquad.json"
    bad.write_text(json.dumps({"rows": [1, 2, 3]}))
    with pytest.raises(BertrtError, match="not SQuAD JSON") as e:
        calib_data.calibration_features(bad, 8, tokenizer=tokenizer)
    assert "\n" not in str(e.value)
    with pytest.raises(BertrtError, match="not found"):
        calib_data.calibration_features(tmp_path / "missing.json", 8, tokenizer=tokenizer)


def test_calib_num_larger_than_file(tokenizer):
    with pytest.raises(BertrtError, match=r"--calib-num 100000 is larger than the \d+ calibration features the file "
                                          r"holds \(600 questions\)"):
        calib_data.calibration_features(calib_num=100_000, tokenizer=tokenizer)
    with pytest.raises(BertrtError, match="positive whole number"):
        calib_data.calibration_features(calib_num=0, tokenizer=tokenizer)


# --- Polygraphy data loader -----------------------------------------------------------------------------------

def test_polygraphy_data_loader_script(monkeypatch):
    """Load the script by path, as `--data-loader-script` does, and check what load_data() yields."""
    monkeypatch.setenv("BERTRT_CALIB_NUM", "20")
    monkeypatch.setenv("BERTRT_CALIB_BATCH", "8")
    spec = importlib.util.spec_from_file_location("bertrt_calib_loader", LOADER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    batches = list(module.load_data())
    assert [b["input_ids"].shape for b in batches] == [(8, 384), (8, 384), (4, 384)]
    for b in batches:
        assert sorted(b) == sorted(INPUT_NAMES)
        assert all(v.dtype == np.int32 for v in b.values())
        assert (b["input_mask"].sum(axis=1) > 0).all()


def test_polygraphy_imports_the_loader_script(monkeypatch):
    """Polygraphy's `--data-loader-script FILE` imports FILE's `load_data` with mod.import_from_script."""
    from polygraphy import mod

    monkeypatch.setenv("BERTRT_CALIB_NUM", "8")
    load_data = mod.import_from_script(str(LOADER), "load_data")
    batches = list(load_data())
    assert len(batches) == 1 and batches[0]["segment_ids"].shape == (8, 384)


# --- TensorRT 10 calibration cache ----------------------------------------------------------------------------

def test_cache_named_after_model_hash(tmp_path):
    model = tiny_qa_model(tmp_path / "model.native.onnx")
    cache = default_cache_path(model)
    assert cache.name == f"model.native.{sha256_file(model)[:16]}.calib.cache"
    cache.write_text("TRT-10000-EntropyCalibration2\n")
    check_cache(model, cache)  # same model: fine


def test_cache_from_another_model_is_refused(tmp_path):
    a = tiny_qa_model(tmp_path / "a.onnx", 1.0)
    b = tiny_qa_model(tmp_path / "b.onnx", 2.0)
    cache = default_cache_path(a)
    cache.write_text("TRT-10000-EntropyCalibration2\n")
    with pytest.raises(BertrtError, match="made for another model"):
        check_cache(b, cache)
    # The sidecar's recorded hash decides even when the cache was renamed.
    renamed = tmp_path / "shared.calib.cache"
    renamed.write_text("TRT-10000-EntropyCalibration2\n")
    write_sidecar(renamed, "calibrate:trt10-int8", {}, {"model": a})
    check_cache(a, renamed)
    with pytest.raises(BertrtError, match="made for another model") as e:
        check_cache(b, renamed)
    assert "\n" not in str(e.value)
    anonymous = tmp_path / "anon.cache"
    anonymous.write_text("x")
    with pytest.raises(BertrtError, match="no record of its model"):
        check_cache(a, anonymous)


@pytest.mark.parametrize("text", ["{", "[]", '{"inputs": 1}', '{"inputs": {"model": {"sha256": 7}}}',
                                  '{"inputs": {"model": {"sha256": NaN}}}', "\xff"])
def test_malformed_cache_sidecar_is_one_line(tmp_path, text):
    model = tiny_qa_model(tmp_path / "a.onnx")
    cache = default_cache_path(model)
    cache.write_text("TRT-10000-EntropyCalibration2\n")
    sidecar_path(cache).write_text(text)
    with pytest.raises(BertrtError, match="not a bertrt calibration-cache record") as e:
        check_cache(model, cache)
    assert "\n" not in str(e.value)


def calibrate_cli(capsys, *argv) -> tuple[int, str]:
    code = main(["calibrate", *map(str, argv)])
    return code, capsys.readouterr().err


def test_calibrate_refuses_foreign_cache_before_needing_tensorrt(tmp_path, capsys):
    a = tiny_qa_model(tmp_path / "a.onnx", 1.0)
    b = tiny_qa_model(tmp_path / "b.onnx", 2.0)
    cache = default_cache_path(a)
    cache.write_text("TRT-10000-EntropyCalibration2\n")
    code, err = calibrate_cli(capsys, "--model", b, "--cache", cache)
    assert code == 2 and "made for another model" in err and err.count("\n") == 1
    assert not b.with_suffix(".int8.engine").exists()


def test_calibrate_without_tensorrt(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed")
    model = tiny_qa_model(tmp_path / "a.onnx")
    code, err = calibrate_cli(capsys, "--model", model)
    assert code == 2 and "needs the 'tensorrt' extra: pip install 'bertrt[tensorrt]'" in err and err.count("\n") == 1
    assert not default_cache_path(model).exists() and not model.with_suffix(".int8.engine").exists()


@pytest.mark.tensorrt
def test_trt10_calibration_builds_int8_engine(embedded_onnx, tmp_path, capsys):
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT 10 and an NVIDIA GPU")
    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no implicit INT8 calibration")
    model = tmp_path / "model.onnx"
    model.write_bytes(Path(embedded_onnx).read_bytes())
    code, err = calibrate_cli(capsys, "--model", model, "--calib-num", 16, "--engine", tmp_path / "model.plan")
    assert code == 0, err
    cache = default_cache_path(model)
    assert cache.is_file() and cache.stat().st_size > 0 and (tmp_path / "model.plan").is_file()
    check_cache(model, cache)
