"""The target seam (bertrt/targets/): every fact about a graph form comes from its Target. Options are validated
once, by the target, before any work; quantize's refusals and the packed form's CUDA-only refusal are the
target's; a registered target module is known to `get_target`, the CLI and `target_of` with no other edit."""

from __future__ import annotations

import json

import onnx
import pytest
from fake_target import TARGET as FAKE
from test_calibration import tiny_qa_model
from test_cli import assert_one_line_error, run_cli

from bertrt.artifacts import sidecar_path
from bertrt.calibration.quantize import quantize
from bertrt.cli import build_parser
from bertrt.errors import BertrtError
from bertrt.qa_contract import load_qa_model, metadata, stamp
from bertrt.runtimes import open_backend
from bertrt.surgery.pipeline import run_surgery
from bertrt.surgery.varseqlen import convert
from bertrt.targets import META_TARGET, TARGETS, get_target, register, surgery_targets, target_of

SMALL = (2, 64, 2, "erf")  # layers, hidden, heads, gelu of a random-weight export


# --- the registry ----------------------------------------------------------------------------------------------------
def test_registry_declares_each_form():
    assert list(TARGETS) == ["export", "native", "ort", "plugins", "packed"]
    assert surgery_targets() == ("native", "ort", "plugins")
    runs = {name: t.runtimes and sorted(t.runtimes) for name, t in TARGETS.items()}
    assert runs == {"export": None, "native": None, "ort": ["onnxruntime", "onnxruntime-bound"],
                    "plugins": ["plugin-reference", "tensorrt"], "packed": ["onnxruntime", "onnxruntime-bound"]}
    # plain ONNX runs on any runtime (a new one needs no edit here); the foreign-op forms only where declared
    assert get_target("native").runs_on("openvino") and get_target("export").runs_on("tensorrt-rtx")
    assert not get_target("plugins").runs_on("tensorrt-rtx") and not get_target("ort").runs_on("tensorrt")
    assert [n for n, t in TARGETS.items() if t.fixed_seq] == ["plugins"]
    assert get_target("packed").source == "ort" and get_target("packed").providers == {"cuda"}
    with pytest.raises(BertrtError, match="unknown target 'tensorrt'"):
        get_target("tensorrt")
    with pytest.raises(BertrtError, match="already registered"):
        register(TARGETS["ort"])


# --- options: validated once, by the target, before any work --------------------------------------------------------
@pytest.mark.parametrize("target, options, fragment", [
    ("plugins", {"plugin_api": "v4"}, "--plugin-api (plugins target) must be one of v2, v3, not 'v4'"),
    ("native", {"attention": "flash"}, "--attention (native target) must be one of matmul, onnx-attention"),
    ("ort", {"plugin_api": "v3"}, "the ort target takes no options, not plugin_api"),
    ("native", {"plugin_api": "v3"}, "the native target takes only attention, not plugin_api"),
])
def test_bad_options_refused_by_the_target_before_any_work(tmp_path, target, options, fragment):
    # The input does not exist: the option's refusal comes first, so nothing was read or written.
    with pytest.raises(BertrtError) as e:
        run_surgery(tmp_path / "missing.onnx", tmp_path / "out.onnx", target, **options)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_cli_passes_only_the_targets_own_options(capsys, tmp_path):
    code, _, err = run_cli(capsys, "surgery", "--input", tmp_path / "missing.onnx", "--output", tmp_path / "o.onnx",
                           "--target", "plugins", "--plugin-api", "v9")
    assert_one_line_error(code, err, "--plugin-api (plugins target) must be one of v2, v3, not 'v9'")
    # a flag of another target is not the ort target's (the Makefile passes --plugin-api to every target)
    code, _, err = run_cli(capsys, "surgery", "--input", tmp_path / "missing.onnx", "--output", tmp_path / "o.onnx",
                           "--target", "ort", "--plugin-api", "v9")
    assert_one_line_error(code, err, "missing.onnx")


# --- quantize asks the target ---------------------------------------------------------------------------------------
def _stamped(path, target: str, domain: str = ""):
    model_path = tiny_qa_model(path, domain=domain)
    model = onnx.load(str(model_path))
    stamp(model, f"surgery:{target}", load_qa_model(model_path)[1], extra={META_TARGET: target})
    onnx.save(model, str(model_path))
    return model_path


@pytest.mark.parametrize("target, precision", [("ort", "fp8"), ("plugins", "int8"), ("packed", "fp16")])
def test_quantize_refusals_come_from_the_target(tmp_path, target, precision):
    model = _stamped(tmp_path / "model.onnx", target)
    with pytest.raises(BertrtError) as e:
        quantize(model, tmp_path / "out.onnx", precision)
    declared = get_target(target)
    assert str(e.value).startswith(f"precision {precision} is not supported for the {target} target")
    assert str(e.value).endswith(declared.precision_refusal) and "\n" not in str(e.value)
    assert not (tmp_path / "out.onnx").exists()


# --- packed: a registered target, stamped by varseqlen, CUDA only by its declaration --------------------------------
def test_packed_model_is_the_packed_target(random_fused, tmp_path, capsys):
    _, fused, _ = random_fused(SMALL, "ort")
    out = tmp_path / "model.varseqlen.onnx"
    convert(fused, out)
    model, _ = load_qa_model(out)
    assert metadata(model)[META_TARGET] == "packed" and target_of(model) is get_target("packed")
    # a packed model made before varseqlen stamped it (recorded `ort`) is told by its ops
    for prop in model.metadata_props:
        if prop.key == META_TARGET:
            prop.value = "ort"
    assert target_of(model) is get_target("packed")

    with pytest.raises(BertrtError) as e:
        open_backend(out, provider="cpu")
    assert str(e.value) == f"{out}: {get_target('packed').provider_refusal}"
    with pytest.raises(BertrtError, match="already in packing mode"):
        convert(out, tmp_path / "again.onnx")
    with pytest.raises(BertrtError, match="precision fp16 is not supported for the packed target"):
        quantize(out, tmp_path / "q.onnx", "fp16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.varseqlen.onnx", "model.varseqlen.onnx.json"]


# --- the proof of the seam: one registration, no other edit ---------------------------------------------------------
@pytest.fixture
def fake_registered():
    register(FAKE)
    try:
        yield FAKE
    finally:
        TARGETS.pop(FAKE.name)


def test_a_registered_target_module_is_known_everywhere(fake_registered, random_export, tmp_path, capsys):
    assert get_target("fake") is FAKE and "fake" in surgery_targets()
    help_text = build_parser()._subparsers._group_actions[0].choices["surgery"].format_help()
    assert "native|ort|plugins|fake" in help_text and "--flavour mild|hot" in help_text

    unfused, _ = random_export(SMALL)
    out = tmp_path / "model.fake.onnx"
    code, _, err = run_cli(capsys, "surgery", "--input", unfused, "--output", out, "--target", "fake",
                           "--flavour", "bogus")
    assert_one_line_error(code, err, "--flavour (fake target) must be one of mild, hot, not 'bogus'")
    code, stdout, err = run_cli(capsys, "surgery", "--input", unfused, "--output", out, "--target", "fake",
                                "--flavour", "hot")
    assert code == 0, err
    model, _ = load_qa_model(out)
    # recorded in the metadata, it wins over the ops (the graph holds the ort target's contrib ops)
    assert target_of(model) is FAKE
    assert json.loads(sidecar_path(out).read_text())["parameters"]["flavour"] == "hot"
    with pytest.raises(BertrtError, match="the fake target is made in FP16 only"):
        quantize(out, tmp_path / "q.onnx", "int8")
    with pytest.raises(BertrtError, match=r"TensorRT-RTX cannot run a fake graph \(Attention, "):
        FAKE.check_runs_on("tensorrt-rtx", str(out), model, "TensorRT-RTX")
