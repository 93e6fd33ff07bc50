"""Several GPUs on the CPU: `--gpus` becomes Triton KIND_GPU instance groups (parsed back with Triton's schema),
the Triton model opens its session on the GPU Triton gives each instance, and the runtimes pass that device to
onnxruntime's CUDA provider and IOBinding buffers (or refuse it in one line). Serving defaults per provider."""

from __future__ import annotations

import pytest
from conftest import VOCAB

from bertrt.cli import main
from bertrt.errors import BertrtError
from bertrt.runtimes import RunOptions, open_backend
from bertrt.runtimes import onnxruntime as ort_runtime
from bertrt.runtimes.artifact import read_artifact
from bertrt.runtimes.registry import Runtime, check_options, choose_runtime
from bertrt.serve import gpus
from bertrt.serve.repository import DEFAULT_BATCHING, read_config, read_parameters

pytest.importorskip("tritonclient.grpc")


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(gpus, "gpu_count", lambda: 2)


def _repo(tmp_path, embedded_onnx, *flags, name="repo") -> int:
    return main(["triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB), "--output",
                 str(tmp_path / name), *flags])


@pytest.mark.parametrize("flag, ids", [("0,1", [0, 1]), ("all", [0, 1]), ("1", [1])])
def test_gpus_become_kind_gpu_instance_groups(embedded_onnx, tmp_path, two_gpus, capsys, flag, ids):
    from tritonclient.grpc import model_config_pb2 as pb

    assert _repo(tmp_path, embedded_onnx, "--provider", "cuda", "--gpus", flag, "--instances", "3",
                 "--max-batch-size", "128", "--preferred-batch-sizes", "64,128") == 0, capsys.readouterr().err
    config = read_config(tmp_path / "repo" / "bertrt_qa" / "config.pbtxt")
    (group,) = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (pb.ModelInstanceGroup.KIND_GPU, 3, ids)
    assert config.max_batch_size == 128 and list(config.dynamic_batching.preferred_batch_size) == [64, 128]
    assert read_parameters(tmp_path / "repo").options.device_id is None  # each instance gets its own


def test_without_gpus_instances_are_kind_cpu_with_the_providers_defaults(embedded_onnx, tmp_path, capsys):
    from tritonclient.grpc import model_config_pb2 as pb

    for provider in ("cpu", "cuda"):
        assert _repo(tmp_path, embedded_onnx, "--provider", provider, name=provider) == 0
        config = read_config(tmp_path / provider / "bertrt_qa" / "config.pbtxt")
        (group,) = config.instance_group
        default = DEFAULT_BATCHING[provider]
        assert (group.kind, group.count, list(group.gpus)) == (pb.ModelInstanceGroup.KIND_CPU, default.instances, [])
        assert config.max_batch_size == default.max_batch_size
        assert config.dynamic_batching.max_queue_delay_microseconds == default.max_queue_delay_us
    # flags win over the provider's defaults
    assert _repo(tmp_path, embedded_onnx, "--provider", "cuda", "--instances", "1", "--max-queue-delay-us", "0",
                 name="flags") == 0
    config = read_config(tmp_path / "flags" / "bertrt_qa" / "config.pbtxt")
    assert config.instance_group[0].count == 1 and config.dynamic_batching.max_queue_delay_microseconds == 0


def test_cuda_serving_gets_the_measured_session_defaults_unless_flags_say_otherwise(embedded_onnx, tmp_path):
    """On cuda, a served session runs batches of up to 64 windows, a smaller batch padded to 1, 4 or 16 rows, with
    CUDA graphs (DEFAULT_SESSION); each flag wins, --no-cuda-graph turns graphs off, the CPU and BLS keep squad's."""
    from bertrt.serve.repository import DEFAULT_SESSION

    cuda = DEFAULT_SESSION["cuda"]
    cases = {"default": ([], (cuda.batch_size, cuda.batch_rows, True)),
             "flags": (["--batch-size", "8", "--no-cuda-graph"], (8, (1, 4), False)),
             "rows": (["--batch-rows", "2"], (64, (2,), True))}
    for name, (flags, want) in cases.items():
        assert _repo(tmp_path, embedded_onnx, "--provider", "cuda", *flags, name=name) == 0
        options = read_parameters(tmp_path / name).options
        assert (options.batch_size, options.batch_rows, options.cuda_graph) == want, name
    for name, flags in (("cpu", ["--provider", "cpu"]), ("bls", ["--provider", "cuda", "--bls"])):
        assert _repo(tmp_path, embedded_onnx, *flags, name=name) == 0
        options = read_parameters(tmp_path / name).options
        assert (options.batch_size, options.batch_rows, options.cuda_graph) == (8, None, False), name


def test_bls_tensor_model_goes_on_the_listed_gpus(embedded_onnx, tmp_path, two_gpus):
    assert _repo(tmp_path, embedded_onnx, "--provider", "cuda", "--gpus", "1", "--bls") == 0
    tensor = read_config(tmp_path / "repo" / "bertrt_qa_tensor" / "config.pbtxt")
    assert list(tensor.instance_group[0].gpus) == [1]


@pytest.mark.parametrize("flags, count, message", [
    (["--provider", "cuda", "--gpus", "0,2"], 2, "--gpus 0,2: no GPU 2 here (GPUs 0..1)"),
    (["--provider", "cuda", "--gpus", "0,0"], 2, "a GPU is listed twice"),
    (["--provider", "cuda", "--gpus", "first"], 2, "takes `all` or comma-separated GPU ids"),
    (["--provider", "cpu", "--gpus", "all"], 2, "it needs --provider cuda (not cpu)"),
    (["--provider", "cuda", "--gpus", "all"], 0, "no GPU here"),
    (["--provider", "cuda", "--preferred-batch-sizes", "8,128", "--max-batch-size", "64"], 2,
     "preferred batch sizes must be between 1 and the max batch size (64), got 128"),
])
def test_gpus_refusals_are_one_line(embedded_onnx, tmp_path, monkeypatch, capsys, flags, count, message):
    monkeypatch.setattr(gpus, "gpu_count", lambda: count)
    assert _repo(tmp_path, embedded_onnx, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "repo").exists()


def test_device_id_reaches_the_cuda_provider_and_the_bound_buffers(embedded_onnx, monkeypatch):
    """On the CPU: onnxruntime's session is made on the CPU provider, recording the CUDA options it was asked for."""
    asked = []
    real = ort_runtime.ort_session

    def session(source, provider, threads, config, cuda_options=None):
        asked.append((provider, cuda_options))
        return real(source, "cpu", threads, config)

    monkeypatch.setattr(ort_runtime, "ort_session", session)
    backend = open_backend(embedded_onnx, RunOptions(provider="cuda", device_id=1, cuda_graph=True, buckets=(128,),
                                                     batch_size=1))
    assert asked == [("cuda", {"enable_cuda_graph": "1", "device_id": "1"})]
    assert backend.runner.device_id == 1 and "GPU 1" in backend.description
    open_backend(embedded_onnx, RunOptions(provider="cuda", device_id=0, runtime="onnxruntime"))
    assert asked[-1] == ("cuda", {"device_id": "0"})


def test_device_id_refused_in_one_line(embedded_onnx):
    # onnxruntime takes a device id, on CUDA only
    with pytest.raises(BertrtError, match=r"a GPU device id \(1\) needs --provider cuda") as refused:
        open_backend(embedded_onnx, RunOptions(provider="cpu", device_id=1, runtime="onnxruntime"))
    assert "\n" not in str(refused.value)
    # the CPU default (OpenVINO where installed, issue 18) does not take one: the registry refuses it in one line
    options = RunOptions(provider="cpu", device_id=1)
    default = choose_runtime(read_artifact(embedded_onnx), options)
    expected = (r"a GPU device id \(1\) needs --provider cuda" if "device_id" in default.takes else
                rf"the {default.name} runtime \(the default for these options; choose another with --runtime\) "
                r"does not take a GPU device id \(serve --gpus\)")
    with pytest.raises(BertrtError, match=expected) as refused:
        open_backend(embedded_onnx, options)
    assert "\n" not in str(refused.value)
    # a runtime that does not declare it takes a device id refuses it (the registry's `takes`, no names compared)
    fake = Runtime(name="fake", artifact="onnx", description="", open=lambda a, o: None)
    with pytest.raises(BertrtError, match=r"the fake runtime .*does not take a GPU device id \(serve --gpus\) "
                                          r"\(runtimes that do: onnxruntime-bound, onnxruntime\)"):
        check_options(fake, read_artifact(embedded_onnx), RunOptions(provider="cuda", device_id=0))
    with pytest.raises(BertrtError, match="must not be negative"):
        RunOptions(device_id=-1)


def test_gpu_count_without_a_gpu_is_zero(monkeypatch):
    monkeypatch.setattr(gpus, "_cuda_device_count", lambda: None)
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    assert gpus.gpu_count() == 0


def test_config_serve_keys_override_the_providers_defaults(embedded_onnx, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("serve:\n  instances: 3\n  max_batch_size: 32\n")
    assert main(["--config", str(config), "triton-repo", "--model", str(embedded_onnx), "--vocab", str(VOCAB),
                 "--output", str(tmp_path / "repo"), "--provider", "cuda", "--max-batch-size", "48"]) == 0
    qa = read_config(tmp_path / "repo" / "bertrt_qa" / "config.pbtxt")
    assert (qa.instance_group[0].count, qa.max_batch_size) == (3, 48)  # config over default, flag over config
    assert qa.dynamic_batching.max_queue_delay_microseconds == DEFAULT_BATCHING["cuda"].max_queue_delay_us
