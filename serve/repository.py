"""The Triton model repository bertrt writes (`bertrt triton-repo`), and the parameters its Python model reads.

    REPO/bertrt_qa/config.pbtxt          Python backend: passage, question (BYTES) -> answer (BYTES), score (FP32)
    REPO/bertrt_qa/1/model.py            serve/triton_model.py (the work is bertrt.serve.python_model)
    REPO/bertrt_qa/1/<model>, vocab.txt  the QA artifact (+ its .json sidecar) and the vocabulary
  with --bls (GPU production; the model file moves to the tensor model):
    REPO/bertrt_qa_tensor/config.pbtxt   onnxruntime_onnx (ONNX) or tensorrt_plan (engine), called from bertrt_qa
    REPO/bertrt_qa_tensor/1/<model>

Configs are built as Triton's own `ModelConfig` protobuf (model_config.proto, shipped in tritonclient) and written
in its text format, so a field or value Triton does not know cannot be written; `read_config` parses one back.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.inputs import check_count, max_threads
from bertrt.messages import shown

MODEL_NAME = "bertrt_qa"
TENSOR_MODEL_NAME = "bertrt_qa_tensor"
INPUTS = ("passage", "question")  # BYTES, one per row
OUTPUTS = ("answer", "score")  # BYTES, FP32
ENGINE_SUFFIXES = (".engine", ".plan")
_FICLONE = 0x40049409  # Linux ioctl: share the blocks of another file (btrfs, XFS), copy-on-write


@dataclass(frozen=True)
class ServingParams:
    """What the Python model needs, stored as the config's `parameters` (Triton keeps them as strings)."""

    model: str  # the QA artifact, relative to the model's directory
    vocab: str
    squad: dict  # bertrt.run.answering.SquadParams fields
    provider: str  # onnxruntime execution provider (local runs)
    batch_size: int  # windows per model run
    max_input_bytes: int  # a larger passage or question is refused
    tensor_model: str = ""  # set: run the network through this Triton model (BLS)

    def to_parameters(self) -> dict[str, str]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "squad"}
        values.update(self.squad)
        return {key: str(value) for key, value in values.items()}

    @classmethod
    def from_parameters(cls, parameters: dict) -> ServingParams:
        """From the `parameters` of a model config as the Python backend passes it ({key: {"string_value": v}})."""
        from bertrt.run.answering import SquadParams

        values = {key: value.get("string_value", "") for key, value in parameters.items()}  # proto3: "" may be absent
        try:
            return cls(model=values["model"], vocab=values["vocab"],
                       squad={f.name: int(values[f.name]) for f in fields(SquadParams)},
                       provider=values["provider"], batch_size=int(values["batch_size"]),
                       max_input_bytes=int(values["max_input_bytes"]), tensor_model=values.get("tensor_model", ""))
        except (KeyError, ValueError) as exc:
            raise BertrtError(f"model config parameters incomplete or malformed ({shown(exc)})") from None


@dataclass(frozen=True)
class Batching:
    """Dynamic batching and instances (defaults: the pipeline config's `serve` section)."""

    max_batch_size: int  # requests per execute call
    max_queue_delay_us: int  # how long the dynamic batcher waits to fill a batch
    instances: int  # model instances (each holds its own runtime session)

    def check(self) -> None:
        """Refused up front: values that would start a server failing every request, or one exhausting the
        machine (each instance is a process holding its own runtime session)."""
        check_count("max batch size", self.max_batch_size, 1, MAX_BATCH)
        check_count("queue delay (us)", self.max_queue_delay_us, 0, MAX_QUEUE_DELAY_US, "10 s")
        check_count("instances", self.instances, 1, max_threads(), "4 per core here")


MAX_BATCH = 4096  # requests per execution, windows per model run
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INPUT_BYTES = 64 << 20  # per passage or question


def check_serving(batch_size: int, max_input_bytes: int) -> None:
    check_count("batch size (windows per model run)", batch_size, 1, MAX_BATCH)
    check_count("max input bytes", max_input_bytes, 1, MAX_INPUT_BYTES)


def _model_config_pb2():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def python_model_config(params: ServingParams, batching: Batching):
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=MODEL_NAME, backend="python", max_batch_size=batching.max_batch_size)
    for name in INPUTS:
        config.input.add(name=name, data_type=pb.TYPE_STRING, dims=[1])
    config.output.add(name=OUTPUTS[0], data_type=pb.TYPE_STRING, dims=[1])
    config.output.add(name=OUTPUTS[1], data_type=pb.TYPE_FP32, dims=[1])
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    # The Python model's instances run on the CPU side; the network itself goes where its runtime puts it.
    config.instance_group.add(count=batching.instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    for key, value in params.to_parameters().items():
        config.parameters[key].string_value = value
    return config


def tensor_model_config(model_file: str, platform: str, batching: Batching):
    """The network alone (int32 [batch, seq] ids/segments/mask -> float [batch, seq] start/end logits) for Triton's
    onnxruntime (`onnxruntime_onnx`) or TensorRT (`tensorrt_plan`) backend, on the GPUs."""
    from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES

    pb = _model_config_pb2()
    config = pb.ModelConfig(name=TENSOR_MODEL_NAME, platform=platform, max_batch_size=batching.max_batch_size,
                            default_model_filename=model_file)
    for name in INPUT_NAMES:
        config.input.add(name=name, data_type=pb.TYPE_INT32, dims=[-1])
    for name in OUTPUT_NAMES:
        config.output.add(name=name, data_type=pb.TYPE_FP32, dims=[-1])
    config.dynamic_batching.SetInParent()
    config.instance_group.add(count=batching.instances, kind=pb.ModelInstanceGroup.KIND_GPU)
    return config


def read_config(path: Path):
    """Parse a config.pbtxt against Triton's schema (unknown fields or enum values are errors)."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(path.read_text(), _model_config_pb2().ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise BertrtError(f"{path}: not a valid Triton model config ({exc})") from None


def _write_config(config, directory: Path) -> None:
    from google.protobuf import text_format

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.pbtxt").write_text(text_format.MessageToString(config))


def _place(source: Path, target: Path) -> None:
    """A copy (a reflink where the filesystem shares blocks), never a hard link: editing the repository must not
    edit the source model."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError:
            shutil.copyfileobj(src, dst, 1 << 20)
    shutil.copystat(source, target)


def _tensor_platform(model: Path) -> str:
    """Which Triton backend runs the network alone; refuses what it cannot run as bertrt runs it."""
    if model.suffix in ENGINE_SUFFIXES:
        return "tensorrt_plan"
    from bertrt.qa_contract import load_qa_model, ort_session_config
    from bertrt.targets import target_of

    onnx_model, _ = load_qa_model(model, load_weights=False)
    if not target_of(onnx_model).onnxruntime:
        raise BertrtError(f"{model}: a TensorRT-plugin graph runs on TensorRT; build an engine for --bls")
    if ort_session_config(onnx_model, source=str(model)):
        raise BertrtError(f"{model}: declares onnxruntime session settings that Triton's onnxruntime backend cannot "
                          f"apply; serve it without --bls")
    return "onnxruntime_onnx"


def _check_model(model: Path) -> None:
    if not model.is_file():
        raise BertrtError(f"{model}: no such model file")
    if model.suffix == ".onnx":
        from bertrt.qa_contract import load_qa_model

        load_qa_model(model, load_weights=False)  # the bertrt contract (inputs, outputs, stored BERT config)
    elif model.suffix not in ENGINE_SUFFIXES:
        raise BertrtError(f"{model}: unsupported model file (expected .onnx or {' or '.join(ENGINE_SUFFIXES)})")


def write_repository(output: Path, model: Path, vocab: Path, batching: Batching, squad: dict, provider: str,
                     batch_size: int, max_input_bytes: int, bls: bool = False) -> Path:
    """Write the repository to `output` (which must not exist or be empty): all of it, or nothing."""
    batching.check()
    check_serving(batch_size, max_input_bytes)
    _check_model(model)
    if not vocab.is_file():
        raise BertrtError(f"{vocab}: no such vocabulary file")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BertrtError(f"{output}: exists and is not an empty directory")
    platform = _tensor_platform(model) if bls else None
    sidecar = model.with_name(model.name + ".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        python_dir = tmp / MODEL_NAME / "1"
        model_dir = tmp / TENSOR_MODEL_NAME / "1" if bls else python_dir
        for directory in {python_dir, model_dir}:
            directory.mkdir(parents=True)
        for source in (model, sidecar) if sidecar.is_file() else (model,):
            _place(source, model_dir / source.name)
        shutil.copy2(vocab, python_dir / "vocab.txt")
        shutil.copy2(Path(__file__).with_name("triton_model.py"), python_dir / "model.py")
        model_ref = f"../{TENSOR_MODEL_NAME}/1/{model.name}" if bls else f"1/{model.name}"
        params = ServingParams(model=model_ref, vocab="1/vocab.txt", squad=dict(squad), provider=provider,
                               batch_size=batch_size, max_input_bytes=max_input_bytes,
                               tensor_model=TENSOR_MODEL_NAME if bls else "")
        _write_config(python_model_config(params, batching), tmp / MODEL_NAME)
        if bls:
            _write_config(tensor_model_config(model.name, platform, batching), tmp / TENSOR_MODEL_NAME)
        if output.exists():
            output.rmdir()
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def check_repository(repository: Path) -> None:
    """A repository to serve (written by triton-repo, perhaps edited since): its bertrt_qa config parses and its
    batching and serving values are within bounds, before a server starts that would fail every request."""
    from google.protobuf.json_format import MessageToDict

    path = repository / MODEL_NAME / "config.pbtxt"
    config = read_config(path)
    try:
        params = ServingParams.from_parameters(MessageToDict(config, preserving_proto_field_name=True)
                                               .get("parameters", {}))
        check_serving(params.batch_size, params.max_input_bytes)
        Batching(config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds,
                 sum(group.count for group in config.instance_group) or 1).check()
    except BertrtError as exc:
        raise BertrtError(f"{shown(path)}: {exc}") from None


def uses_tensor_model(repository: Path) -> bool:
    return (repository / TENSOR_MODEL_NAME / "config.pbtxt").is_file()
