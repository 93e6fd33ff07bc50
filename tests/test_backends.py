"""The runtime seam (bertrt.runtimes): which runtime each artifact and option set gets, the one-line refusals of the
registry, a runtime registered by a test (one `register` call) reaching `open_backend` and the CLI flags, and the
shape rules a backend with engine profiles applies (pure logic: no TensorRT needed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EMBEDDED, TENSORRT_PASSAGE, VOCAB
from test_cli import assert_one_line_error, run_cli

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.profiles import parse_profile
from bertrt.runtimes import (QABackend, QARunner, RunOptions, Runtime, choose_runtime, get_runtime, open_backend,
                             read_artifact, register, registered, runtime_names, unregister)
from bertrt.runtimes.onnxruntime import OnnxruntimeRunner, artifact_session

CFG = BertConfig(vocab_size=100, hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256,
                 max_position_embeddings=512)
SMALL = (2, 64, 2, "erf")
# The default for plain ONNX on the CPU: OpenVINO where installed (a base dependency), else onnxruntime.
CPU_DEFAULT = "openvino" if get_runtime("openvino").missing() is None else "onnxruntime"


def runtime_of(path, **options) -> str:
    return choose_runtime(read_artifact(path), RunOptions(**options)).name


def test_runner_per_artifact(random_fused, tmp_path):
    unfused, plugins, _ = random_fused(SMALL, "plugins")
    assert open_backend(unfused).runner.name.startswith(CPU_DEFAULT)
    assert open_backend(unfused, runtime="onnxruntime").runner.name.startswith("onnxruntime-cpu")
    assert open_backend(plugins).runner.name.startswith("plugin-reference")
    assert open_backend(EMBEDDED).runner.name.startswith("tf:")
    with pytest.raises(BertrtError, match="unsupported model file"):
        open_backend(tmp_path / "model.pt")
    with pytest.raises(BertrtError, match="engine file not found"):
        open_backend(tmp_path / "model.engine")
    with pytest.raises(BertrtError, match="unknown provider 'tpu'"):
        open_backend(unfused, provider="tpu")


def test_default_runtime_per_target_and_options(random_fused):
    unfused, plugins, _ = random_fused(SMALL, "plugins")
    _, ort_model, _ = random_fused(SMALL, "ort")
    assert runtime_of(unfused) == CPU_DEFAULT and runtime_of(ort_model) == "onnxruntime"  # OpenVINO cannot run ort
    assert runtime_of(unfused, provider="cuda") == "onnxruntime-bound"
    assert runtime_of(unfused, buckets=(64,)) == runtime_of(ort_model, provider="cuda") == "onnxruntime-bound"
    assert runtime_of(plugins) == runtime_of(plugins, provider="cuda") == "plugin-reference"  # onnxruntime cannot
    assert runtime_of(EMBEDDED) == "tf-checkpoint"
    backend = open_backend(unfused, RunOptions(buckets=(32, 64), batch_size=2))
    assert backend.buckets == (32, 64) and backend.runner.name.startswith("onnxruntime-cpu-iobinding")


def test_registry_refusals_are_one_line_and_name_the_way_out(random_fused):
    unfused, plugins, _ = random_fused(SMALL, "plugins")
    _, ort_model, _ = random_fused(SMALL, "ort")
    cases = [
        (unfused, {"runtime": "nope"}, "unknown runtime 'nope' (registered: onnxruntime-bound, openvino, onnxruntime, "),
        (plugins, {"runtime": "onnxruntime"},
         "the onnxruntime runtime cannot run the `plugins` target (runtimes that can: plugin-reference)"),
        (ort_model, {"runtime": "plugin-reference"},
         "cannot run the `ort` target (runtimes that can: onnxruntime-bound, onnxruntime)"),
        (unfused, {"runtime": "tensorrt-engine"},
         "the tensorrt-engine runtime runs engines, not ONNX models (runtimes for those: onnxruntime-bound, "),
        (EMBEDDED, {"runtime": "onnxruntime"}, "runs ONNX models, not checkpoints (runtimes for those: tf-checkpoint)"),
        (ort_model, {"precision": "bf16"}, "the onnxruntime runtime (the default for these options; choose another "
                                         "with --runtime) does not take --precision (runtimes that do: none "),
        (unfused, {"buckets": (64,), "extra_outputs": ("x",)},
         "the onnxruntime-bound runtime (the default for these options; choose another with --runtime) does not take "
         "per-layer outputs (--per-layer) (runtimes that do: openvino, onnxruntime, plugin-reference)"),
        (unfused, {"cuda_graph": True}, "CUDA graphs need the CUDA provider (--provider cuda)"),
    ]
    for path, options, message in cases:
        with pytest.raises(BertrtError) as e:
            open_backend(path, RunOptions(**options))
        assert "\n" not in str(e.value) and message in str(e.value), (options, str(e.value))
    # chosen by name where the target allows it: the numpy references run plain ONNX too
    assert open_backend(unfused, RunOptions(runtime="plugin-reference")).runner.name.startswith("plugin-reference")
    assert open_backend(ort_model, runtime="onnxruntime").runner.name.startswith("onnxruntime-cpu:")


def test_every_registered_runner_implements_the_protocol(random_fused):
    """Each ONNX runtime's runner is a QARunner and gives the same logits through the protocol (activate, warm_up,
    infer, profiles, release_shapes, deactivate)."""
    unfused, _, cfg = random_fused(SMALL, "ort")
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(0, cfg.vocab_size, (2, 24)).astype(np.int32),
            "segment_ids": np.zeros((2, 24), np.int32), "input_mask": np.ones((2, 24), np.int32)}
    logits = {}
    for runtime in registered("onnx"):  # at f32 where a runtime takes a precision (bf16 has its own bounds)
        backend = open_backend(unfused, runtime=runtime.name, precision="f32" if "f32" in runtime.precisions else None)
        runner = backend.runner
        assert isinstance(runner, QARunner) and runner.profiles == () and not runner.is_active
        with backend:
            runner.warm_up([(1, 16)])
            logits[runtime.name] = backend.infer(feed)
            runner.release_shapes()
        assert not runner.is_active
    reference = logits.pop("onnxruntime")
    for name, (start, end) in logits.items():
        np.testing.assert_allclose(start, reference[0], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(end, reference[1], atol=1e-4, err_msg=name)

    class Incomplete(QARunner):  # no infer_impl: the protocol is enforced at construction
        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

    with pytest.raises(TypeError, match="infer_impl"):
        Incomplete(name="incomplete")


# --- the seam: a runtime added by one `register` call ------------------------------------------------------------
SEEN: list[RunOptions] = []


def _open_fake(artifact, options: RunOptions) -> QABackend:
    SEEN.append(options)
    runner = OnnxruntimeRunner(artifact_session(artifact, RunOptions()), name=f"fake:{artifact.path.name}")
    return QABackend(runner, artifact.config, f"fake runtime ({options.precision}): {artifact.path}")


FAKE = Runtime(name="fake", artifact="onnx", open=_open_fake, description="a test runtime (onnxruntime inside)",
               takes=frozenset({"precision"}), precisions=("f32", "bf16"), providers=("cpu",),
               default_when=lambda options: options.precision is not None)


@pytest.fixture
def fake_runtime():
    SEEN.clear()
    register(FAKE)
    yield FAKE
    unregister(FAKE.name)


def test_a_registered_runtime_is_opened_and_offered_by_the_flags(fake_runtime, embedded_onnx, capsys):
    assert "fake" in runtime_names() and registered("onnx")[-1] is FAKE
    backend = open_backend(embedded_onnx, RunOptions(runtime="fake", precision="bf16"))
    assert backend.runner.name.startswith("fake:") and SEEN[-1].precision == "bf16"

    base = ["infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage", TENSORRT_PASSAGE, "--question",
            "What is TensorRT?"]
    code, want, err = run_cli(capsys, *base, "--runtime", "onnxruntime")
    assert code == 0, err
    code, got, err = run_cli(capsys, *base, "--runtime", "fake", "--precision", "f32")
    assert code == 0, err
    assert got == want and SEEN[-1].runtime == "fake" and SEEN[-1].precision == "f32"

    code, _, err = run_cli(capsys, *base, "--runtime", "fake", "--precision", "int4")
    assert_one_line_error(code, err, "the fake runtime takes --precision f32, bf16, not 'int4'")
    code, _, err = run_cli(capsys, *base, "--runtime", "fake", "--provider", "cuda")
    assert_one_line_error(code, err, "the fake runtime runs on cpu, not --provider cuda")
    code, _, err = run_cli(capsys, *base, "--runtime", "onnxruntime", "--precision", "f32")
    assert_one_line_error(code, err, "the onnxruntime runtime does not take --precision (runtimes that do: openvino, "
                                     "fake)")


def test_unavailable_runtime_names_what_to_install(embedded_onnx, capsys):
    missing = Runtime(name="missing", artifact="onnx", open=_open_fake, description="needs a module not here",
                      requires=("bertrt_no_such_module",), install="pip install 'bertrt[missing]'",
                      default_when=lambda options: True)
    register(missing)
    try:
        code, _, err = run_cli(capsys, "infer", "--model", embedded_onnx, "--vocab", VOCAB, "--passage", "a b",
                               "--question", "a?", "--runtime", "missing")
        assert_one_line_error(code, err, "the missing runtime needs bertrt_no_such_module, not installed here "
                                         "(pip install 'bertrt[missing]')")
        assert runtime_of(embedded_onnx) == CPU_DEFAULT  # a default candidate that is not installed is passed over
    finally:
        unregister("missing")
    assert "missing" not in runtime_names()
    with pytest.raises(BertrtError, match="already registered"):
        register(registered()[0])


def test_unknown_runtime_flag_is_one_line(embedded_onnx, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: the choices are the registered names
        run_cli(capsys, "infer", "--model", embedded_onnx, "--passage", "a", "--question", "b?", "--runtime", "nope")
    assert_one_line_error(exc.value.code, capsys.readouterr().err, "--runtime: invalid choice: 'nope'",
                          "'onnxruntime-bound', 'openvino', 'onnxruntime', 'plugin-reference', 'tensorrt-engine', 'tf-checkpoint'")


# --- shapes -------------------------------------------------------------------------------------------------------
def test_profile_shape_rules():
    fixed = QABackend(None, CFG, "", (parse_profile("batch=1:8:8,seq=384"), parse_profile("batch=1:4,seq=128")))
    assert fixed.seq_len is None  # two different fixed lengths: no single S
    assert fixed.check_shape(8, 384) == 0 and fixed.check_shape(2, 128) == 1
    with pytest.raises(BertrtError, match=r"outside the engine's profiles \(batch=1:8:8,seq=384:384:384; "):
        fixed.check_shape(5, 128)
    single = QABackend(None, CFG, "", (parse_profile("batch=1:8,seq=384"),))
    assert single.seq_len == 384 and single.padded_length(17) == 384
    ranged = QABackend(None, CFG, "", (parse_profile("batch=1:8,seq=64:128:256"),))
    assert ranged.seq_len is None and ranged.padded_length(17) == 64 and ranged.padded_length(200) == 200
    onnx_like = QABackend(None, CFG, "")
    assert onnx_like.check_shape(1000, 100) is None and onnx_like.padded_length(17) == 17
    with pytest.raises(BertrtError, match="exceeds the model's 512 positions"):
        onnx_like.check_shape(1, 513)
