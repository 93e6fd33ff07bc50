"""`bertrt build` with the real TensorRT-RTX ONNX parser and builder, on the CPU (ahead-of-time builds), and the
checks that guard opening an engine.

Deserializing and running an engine needs a supported GPU (TensorRT-RTX refuses compute capability 9.0, and this
machine has none), so the engine checks here are the ones made from the sidecar and the engine's sha256 before
TensorRT sees the bytes; the run tests at the end are marked `tensorrt` and skip without a GPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HF_FIXTURES, TENSORRT_PASSAGE, VOCAB, require

from bertrt.artifacts import sidecar_path
from bertrt.cli import main
from bertrt.errors import BertrtError

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")

from bertrt.build.engine_build import BuildRequest, build  # noqa: E402
from bertrt.engine_sidecar import EngineRecord  # noqa: E402
from bertrt.build.inspect import parse  # noqa: E402
from bertrt.build.network import summarize  # noqa: E402
from bertrt.profiles import parse_profile  # noqa: E402

RTX = "tensorrt-rtx"
# Two profiles, one fixed-length (as SQuAD pads) and one dynamic: every build here proves several profiles work.
PROFILES = [parse_profile("batch=1:8:8,seq=384"), parse_profile("batch=1:1:4,seq=16:128:256")]
# The committed Hugging Face fixtures: the legacy-exporter models and the export forms of the newest transformers
# (legacy and dynamo exporter, SDPA and eager attention; tests/fixtures/hf/README.md).
HF_NAMES = sorted([p.name for p in HF_FIXTURES.glob("hf-*")] +
                  [str(p.relative_to(HF_FIXTURES)) for p in HF_FIXTURES.glob("forms/transformers-5.24.0/*-*")])


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def engines(embedded_onnx, embedded_native, quantized, tmp_path_factory):
    """(target, precision) -> (engine, record) of the embedded model, built once per module with TensorRT-RTX."""
    out = tmp_path_factory.mktemp("engines")
    cache = {}

    def get(target: str, precision: str):
        if (target, precision) not in cache:
            if precision == "fp32":
                model = embedded_onnx if target == "export" else embedded_native
            else:
                model, _ = quantized(precision, target)
            engine = out / f"model.{target}.{precision}.engine"
            cache[target, precision] = (engine, build(BuildRequest(model, engine, PROFILES, RTX), log=lambda _: None))
        return cache[target, precision]

    return get


@pytest.mark.parametrize("target", ["export", "native"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "fp8"])
def test_embedded_model_builds_with_profiles(engines, target, precision):
    """Every target TensorRT-RTX takes, in every precision the quantize stage makes, parses without a parser
    error (a parser error fails the build) and builds an engine with both profiles, recorded in its sidecar."""
    engine, record = engines(target, precision)
    assert engine.stat().st_size > 10 * 2**20  # the 22.7 M weights (FP32 91 MB) are inside the engine
    side = json.loads(sidecar_path(engine).read_text())
    assert EngineRecord.read(engine) == record
    assert record.precision == precision and record.target == target and record.strongly_typed
    assert record.profiles == tuple(PROFILES) and record.runtime == RTX
    assert record.config.num_hidden_layers == 6 and side["parameters"]["network"]["layers"] > 500
    # FP8 needs Ada or newer: TensorRT-RTX refuses to compile fp8_e4m3 for 8.0/8.6, so those are not targeted.
    assert record.compute_capabilities == (("8.9", "12.0", "12.1") if precision == "fp8"
                                           else ("8.0", "8.6", "8.9", "12.0", "12.1"))


def test_native_network_layernorm_and_attention(embedded_native, embedded_onnx):
    """The parsed `native` network: one NORMALIZATION layer per LayerNorm (embedding + 2 per layer) and no
    decomposed LayerNorm left (no REDUCE layers); attention as MatMul -> Softmax -> MatMul in every layer. The
    unfused export is the contrast: its LayerNorms are decomposed (ReduceMean) and none is a NORMALIZATION."""
    _, _, (_, native, _) = parse(embedded_native, RTX)
    summary = summarize(native)
    assert summary.normalization == 13 and "REDUCE" not in summary.types
    assert summary.attention == summary.softmax == 6
    _, _, (_, unfused, _) = parse(embedded_onnx, RTX)
    plain = summarize(unfused)
    assert plain.normalization == 0 and plain.types["REDUCE"] == 26  # 13 LayerNorms x (mean, variance)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_qdq_network_keeps_the_quantize_stage_qdq(quantized, precision):
    """Every QuantizeLinear / DequantizeLinear the quantize stage wrote becomes a QUANTIZE / DEQUANTIZE layer."""
    path, _ = quantized(precision, "native")
    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    _, _, (_, network, _) = parse(path, RTX)
    summary = summarize(network)
    assert summary.quantize == ops.count("QuantizeLinear") > 0
    assert summary.dequantize == ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert summary.attention == 6 and summary.normalization == 13


@pytest.fixture(scope="module")
def hf_native(tmp_path_factory):
    """name -> `native` target of a Hugging Face fixture (torch.onnx.export graph)."""
    from bertrt.surgery.pipeline import run_surgery

    out = tmp_path_factory.mktemp("hf-native")
    cache = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = out / f"{name}.native.onnx"
            run_surgery(HF_FIXTURES / name / "model.onnx", cache[name], "native")
        return cache[name]

    return get


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_fixture_native_builds(hf_native, tmp_path, capsys, name):
    """The CLI end to end on the Hugging Face fixtures: `bertrt build` prints the equivalent polygraphy command,
    builds with two profiles and records the parsed network (NORMALIZATION per LayerNorm, fused attention form)."""
    model = hf_native(name)
    layers = onnx.load(str(model), load_external_data=False)
    cfg = json.loads((HF_FIXTURES / name / "config.json").read_text())
    engine = tmp_path / "model.engine"
    capsys.readouterr()  # (the fixture's fusion report)
    code, out, err = run_cli(capsys, "build", "--model", model, "--output", engine, "--runtime", RTX,
                             "--profile", "batch=1:2:4,seq=64", "--profile", "batch=1,seq=8:32:64")
    assert code == 0, err
    assert out.startswith("POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert ") and "--trt-min-shapes" in out
    network = json.loads(sidecar_path(engine).read_text())["parameters"]["network"]
    n = cfg["num_hidden_layers"]
    assert network["normalization"] == 2 * n + 1 and network["attention_matmul_softmax_matmul"] == n
    assert "REDUCE" not in network["types"] and len(layers.graph.node) > 0
    assert EngineRecord.read(engine).profiles == (parse_profile("batch=1:2:4,seq=64"),
                                                  parse_profile("batch=1,seq=8:32:64"))


# --- refusals and bad input: one line, exit 2, nothing written ------------------------------------------------

@pytest.fixture(scope="module")
def small(hf_native, tmp_path_factory):
    """A small `native` model copied beside its engine (built once): the subject of the engine checks."""
    folder = tmp_path_factory.mktemp("small")
    model = folder / "model.native.onnx"
    shutil.copy(hf_native("hf-l2-h64-a2"), model)
    engine = folder / "model.native.engine"
    build(BuildRequest(model, engine, [parse_profile("batch=1:4:4,seq=128")], RTX), log=lambda _: None)
    return model, engine


def copy_engine(engine: Path, folder: Path) -> Path:
    copy = folder / engine.name
    shutil.copy(engine, copy)
    shutil.copy(sidecar_path(engine), sidecar_path(copy))
    return copy


def open_error(path: Path) -> str:
    from bertrt.runtimes import open_backend

    with pytest.raises(BertrtError) as e:
        backend = open_backend(path)
        with backend:
            pass
    assert "\n" not in str(e.value)
    return str(e.value)


def test_plugins_and_ort_are_refused_naming_what_is_missing(capsys, tmp_path, random_fused):
    for target, fragments in (("plugins", ["ships no TensorRT BERT plugins", "CustomQKVToContextPluginDynamic",
                                           "CustomEmbLayerNormPluginDynamic", "CustomSkipLayerNormPluginDynamic"]),
                              ("ort", ["onnxruntime contrib ops", "Attention", "SkipLayerNormalization"])):
        _, fused, _ = random_fused((2, 64, 2, "erf"), target)
        code, _, err = run_cli(capsys, "build", "--model", fused, "--output", tmp_path / "x.engine", "--runtime", RTX,
                               "--profile", "batch=1,seq=128")
        assert_one_line_error(code, err, *fragments)
    assert not list(tmp_path.iterdir())


def test_missing_tensorrt_names_the_package(capsys, small, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed")
    code, _, err = run_cli(capsys, "build", "--model", small[0], "--output", tmp_path / "x.engine",
                           "--runtime", "tensorrt")
    assert_one_line_error(code, err, "TensorRT is not installed: needs the 'tensorrt' extra: "
                                     "pip install 'bertrt[tensorrt]'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, fragment", [
    (["--precision", "fp16"], "is strongly typed: --precision fp16 cannot change it"),
    (["--profile", "batch=8:1:8,seq=128"], "min <= opt <= max"),
    (["--profile", "batch=1,seq=64:128:1024"], "exceeds the model's 512 positions"),
    (["--profile", "batch=1,seq=0:8:8"], "minimum must be at least 1"),
    (["--profile", "batch=1"], "expected 'batch=MIN:OPT:MAX,seq=MIN:OPT:MAX'"),
    (["--compute-capability", "9.0"], "targets only"),
    (["--runtime", "tensorrt", "--compute-capability", "8.6"], "TensorRT-RTX option"),
    (["--timing-cache", "t.cache"], "TensorRT-RTX has no timing cache"),
])
def test_bad_build_input(capsys, small, tmp_path, argv, fragment):
    argv = argv if "--runtime" in argv else [*argv, "--runtime", RTX]
    code, _, err = run_cli(capsys, "build", "--model", small[0], "--output", tmp_path / "x.engine", *argv)
    assert_one_line_error(code, err, fragment)
    assert not list(tmp_path.iterdir())


def test_fixed_sequence_length_enforced_for_plugins(capsys, random_fused, tmp_path):
    _, fused, _ = random_fused((2, 64, 2, "erf"), "plugins")
    code, _, err = run_cli(capsys, "build", "--model", fused, "--output", tmp_path / "x.engine",
                           "--runtime", "tensorrt", "--profile", "batch=1:8,seq=128:384")
    assert_one_line_error(code, err, "needs a fixed sequence length per profile")


@pytest.mark.parametrize("where", ["directory", "unwritable", "input"])
def test_unwritable_output(capsys, small, tmp_path, where):
    output = {"directory": tmp_path, "unwritable": Path("/proc/model.engine"), "input": small[0]}[where]
    before = small[0].read_bytes()
    code, _, err = run_cli(capsys, "build", "--model", small[0], "--output", output, "--runtime", RTX)
    assert_one_line_error(code, err, str(output))
    assert small[0].read_bytes() == before and not list(tmp_path.iterdir())


def test_not_a_bertrt_model(capsys, tmp_path):
    bogus = tmp_path / "x.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(bogus))
    code, _, err = run_cli(capsys, "build", "--model", bogus, "--output", tmp_path / "x.engine", "--runtime", RTX)
    assert_one_line_error(code, err, "not a BERT QA model from bertrt")


def test_engine_checks_without_gpu(small, tmp_path, monkeypatch, capsys):
    """What can be checked before deserializing, each one line: a corrupted engine, a foreign engine, a stale
    sidecar, another runtime version or runtime, a malformed sidecar, another compute capability, no GPU."""
    _, engine = small
    (tmp_path / "corrupted").mkdir()
    corrupted = copy_engine(engine, tmp_path / "corrupted")
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    assert "does not match its sidecar" in open_error(corrupted)
    code, _, err = run_cli(capsys, "perf", "--model", corrupted, "--batch-size", "1", "--seq-len", "128")
    assert_one_line_error(code, err, "does not match its sidecar")

    foreign = tmp_path / "foreign.engine"
    foreign.write_bytes(engine.read_bytes()[:1000])
    assert "no engine sidecar" in open_error(foreign)

    def edited(name: str, change) -> Path:
        (tmp_path / name).mkdir()
        copy = copy_engine(engine, tmp_path / name)
        side = json.loads(sidecar_path(copy).read_text())
        change(side)
        sidecar_path(copy).write_text(json.dumps(side))
        return copy

    assert "this machine has 1." in open_error(edited("version", lambda s: s["engine"].update(runtime_version="1.0.0")))
    assert "TensorRT is not installed" in open_error(edited("runtime", lambda s: s["engine"].update(runtime="tensorrt")))
    assert "not a bertrt engine sidecar" in open_error(edited("malformed", lambda s: s["engine"].update(profiles=[])))
    assert "not a bertrt engine sidecar" in open_error(edited("badhash", lambda s: s.update(sha256="x")))

    monkeypatch.setattr("bertrt.runtimes.tensorrt_library.device_compute_capability", lambda: "9.0")
    assert "this GPU is 9.0" in open_error(engine)
    monkeypatch.undo()
    try:
        from bertrt.runtimes.tensorrt_library import device_compute_capability

        device_compute_capability()
    except BertrtError:
        assert "no CUDA GPU here" in open_error(engine)


def test_stale_engine_after_source_changed(small, tmp_path):
    model, engine = small
    (tmp_path / "m").mkdir()
    source = tmp_path / "m" / "model.native.onnx"
    shutil.copy(model, source)
    copy = tmp_path / "m" / "model.native.engine"
    build(BuildRequest(source, copy, [parse_profile("batch=1,seq=128")], RTX), log=lambda _: None)
    proto = onnx.load(str(source))
    proto.doc_string = "changed"
    onnx.save(proto, str(source))
    assert "stale engine" in open_error(copy)


def test_out_of_profile_shapes_are_one_line(capsys, small):
    _, engine = small
    vocab = HF_FIXTURES / "hf-l2-h64-a2" / "vocab.txt"
    common = ["infer", "--model", engine, "--vocab", vocab, "--passage", "a b c", "--question", "a?"]
    code, _, err = run_cli(capsys, *common, "--batch-size", "8", "--seq-len", "128")
    assert_one_line_error(code, err, "outside the engine's profiles", "batch=1:4:4,seq=128:128:128")
    code, _, err = run_cli(capsys, *common, "--batch-size", "2", "--seq-len", "64")
    assert_one_line_error(code, err, "differs from the model's fixed length 128")
    code, _, err = run_cli(capsys, "perf", "--model", engine, "--batch-size", "1", "--seq-len", "96")
    assert_one_line_error(code, err, "outside the engine's profiles")


# --- running engines: needs TensorRT and a supported GPU ------------------------------------------------------

def _runs_engines() -> str | None:
    from bertrt.runtimes.tensorrt_library import device_compute_capability

    try:
        capability = device_compute_capability()
    except BertrtError as exc:
        return str(exc)
    return None if capability in ("8.0", "8.6", "8.9", "12.0", "12.1") else f"TensorRT-RTX does not run on {capability}"


@pytest.mark.tensorrt
def test_engine_matches_onnxruntime(engines, embedded_native, dev_batch):
    reason = _runs_engines()
    if reason:
        pytest.skip(f"not run: {reason}")
    from bertrt.runtimes import open_backend

    engine, _ = engines("native", "fp32")
    feed = {k: v[:4] for k, v in dev_batch.items()}
    feed = {k: np.pad(v, ((0, 0), (0, 384 - v.shape[1]))) for k, v in feed.items()}
    with open_backend(embedded_native, runtime="onnxruntime") as ref, open_backend(engine) as trt:
        for a, b in zip(ref.infer(feed), trt.infer(feed)):
            valid = feed["input_mask"].astype(bool)
            assert np.abs(a - b)[valid].max() < 1e-3


@pytest.mark.tensorrt
def test_engine_answers_the_classic_question(engines, capsys):
    reason = _runs_engines()
    if reason:
        pytest.skip(f"not run: {reason}")
    engine, _ = engines("native", "fp16")
    code, out, err = run_cli(capsys, "infer", "--model", engine, "--vocab", require(VOCAB), "--passage",
                             TENSORRT_PASSAGE, "--question", "What is TensorRT?")
    assert code == 0, err
    assert "high performance deep learning inference platform" in out


def test_fp8_targets_ada_or_newer():
    from bertrt.runtimes import tensorrt_library as runtimes
    from bertrt.build.builder_config import parse_compute_capabilities

    rtx = runtimes.LIBRARIES[RTX]
    trt = runtimes.load(rtx)
    assert parse_compute_capabilities(["8.9", "12.0"], trt, rtx, "fp8") == ((8, 9), (12, 0))
    assert parse_compute_capabilities(["8.6"], trt, rtx, "int8") == ((8, 6),)
    with pytest.raises(BertrtError, match="FP8 engine needs compute capability 8.9 or newer"):
        parse_compute_capabilities(["8.6"], trt, rtx, "fp8")
    with pytest.raises(BertrtError, match="is not MAJOR.MINOR"):
        parse_compute_capabilities(["sm86"], trt, rtx, "fp32")


@pytest.mark.parametrize("version, graph, requested, expected", [
    ("10.13.0", "fp32", None, ("fp32", False, False, False)),
    ("10.13.0", "fp32", "fp16", ("fp16", False, True, False)),
    ("10.13.0", "fp32", "int8", ("int8", False, True, True)),  # INT8 with FP16 allowed, calibrated
    ("10.13.0", "fp32", "best", ("best", False, True, True)),
    ("10.13.0", "int8", None, ("int8", True, False, False)),  # Q/DQ graph: strongly typed on TensorRT 10 too
    ("11.3.0", "fp16", "fp16", ("fp16", True, False, False)),
    ("11.3.0", "fp32", "int8", "is strongly typed: --precision int8 cannot change it"),
    ("10.13.0", "fp16", "int8", "already carries its precision"),
    ("10.13.0", "fp32", "fp8", "FP8 only as Q/DQ"),
])
def test_precision_per_tensorrt_version(version, graph, requested, expected):
    """What --precision means on TensorRT 10 (weak typing) and 11 (strongly typed); the TensorRT 10 INT8 build's
    polygraphy command carries the SQuAD data loader and the calibration cache."""
    from bertrt.runtimes import tensorrt_library as runtimes
    from bertrt.build.builder_config import plan_precision
    from bertrt.build.engine_build import polygraphy_command

    tensorrt = runtimes.LIBRARIES["tensorrt"]
    if isinstance(expected, str):
        with pytest.raises(BertrtError, match=expected):
            plan_precision(requested, graph, tensorrt, version, Path("m.onnx"))
        return
    plan = plan_precision(requested, graph, tensorrt, version, Path("m.onnx"))
    assert (plan.precision, plan.strongly_typed, plan.fp16, plan.int8) == expected
    request = BuildRequest(Path("m.onnx"), Path("m.engine"), PROFILES, "tensorrt", calib_cache=Path("m.cache"))
    command = polygraphy_command(request, tensorrt, plan, ((9, 0),))
    assert command.startswith("polygraphy convert m.onnx -o m.engine") and command.count("--trt-min-shapes") == 2
    assert ("--int8" in command and "polygraphy_data_loader.py --calibration-cache m.cache" in command) == plan.int8
    assert ("--fp16" in command) == plan.fp16 and ("--strongly-typed" in command) == plan.strongly_typed


def test_inspect_prints_the_parsed_network(hf_native, capsys):
    model = hf_native("hf-l2-h64-a2")
    capsys.readouterr()  # (the fixture's fusion report)
    code, out, err = run_cli(capsys, "build", "--model", model, "--inspect", "--runtime", RTX)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert json.loads(header.split(" network, ", 1)[1])["normalization"] == 5
    assert sum(" NORMALIZATION " in row for row in rows) == 5 and sum(" SOFTMAX " in row for row in rows) == 2
