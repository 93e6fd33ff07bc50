"""The Triton model repository bertrt writes (`bertrt triton-repo`), and the parameters its Python model reads.

    REPO/bertrt_qa/config.pbtxt          Python backend: passage, question (BYTES) -> answer (BYTES), score (FP32)
    REPO/bertrt_qa/1/model.py            serve/triton_model.py (the work is bertrt.serve.python_model)
    REPO/bertrt_qa/1/<model>, tokenizer.json  the QA artifact (+ its .json sidecar) and its tokenizer
  with --bls (ServingMode.BLS, GPU production; the model file moves to the tensor model):
    REPO/bertrt_qa_tensor/config.pbtxt   onnxruntime_onnx (ONNX) or tensorrt_plan (engine), called from bertrt_qa
    REPO/bertrt_qa_tensor/1/<model>

Configs are built as Triton's own `ModelConfig` protobuf (model_config.proto, shipped in tritonclient) and written
in its text format, so a field or value Triton does not know cannot be written; `read_config` parses one back.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import errno
import fcntl
import os
import shutil
import tempfile
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from bertrt.engine_sidecar import EngineRecord
from bertrt.errors import BertrtError
from bertrt.extras import require
from bertrt.inputs import check_count, max_threads
from bertrt.interrupts import held
from bertrt.messages import shown
from bertrt.qa.tokenizer import tokenizer_for, tokenizer_json
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, load_qa_model, ort_session_config
from bertrt.session import RunOptions, SquadParams
from bertrt.targets import target_of

MODEL_NAME = "bertrt_qa"
TENSOR_MODEL_NAME = "bertrt_qa_tensor"
INPUTS = ("passage", "question")  # BYTES, one per row
OUTPUTS = ("answer", "score")  # BYTES, FP32
ENGINE_SUFFIXES = (".engine", ".plan")
_FICLONE = 0x40049409  # Linux ioctl: share the blocks of another file (btrfs, XFS), copy-on-write


class ServingMode(enum.Enum):
    """Where the network runs. The one place that knows what each mode means for the repository and the server."""

    LOCAL = "local"  # in bertrt_qa's Python model, through the QA session's runtime (the `squad` path)
    BLS = "bls"  # as its own model (Triton's onnxruntime_onnx/tensorrt_plan backend), called from bertrt_qa

    @property
    def tensor_model(self) -> str | None:
        """The Triton model the network runs in, when not in bertrt_qa."""
        return TENSOR_MODEL_NAME if self is ServingMode.BLS else None

    @property
    def runs_on_bundled_server(self) -> bool:
        """The bundled tritonserver (nvidia-pytriton) has only the Python backend."""
        return self is ServingMode.LOCAL

    def check(self, options: RunOptions) -> None:
        if self is ServingMode.BLS and options.cuda_graph:
            raise BertrtError("CUDA graphs are the local runtime's; with --bls the tensor model's Triton backend "
                              "runs the network (leave out --cuda-graph)")
        if options.extra_outputs or options.cuda_stream is not None:
            raise BertrtError("a served model returns the logits only, on its own stream (no extra outputs, no "
                              "CUDA stream)")


def _encode(value) -> str:
    """One field as a Triton parameter string: "" for None, "true"/"false", comma-joined tuples."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def _decode(text: str, hint, key: str):
    """The inverse of `_encode` for a field annotated `hint` (str, int, bool, enums, tuple[X, ...], X | None)."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        return None if text == "" else _decode(text, inner, key)
    if typing.get_origin(hint) is tuple:
        return tuple(_decode(item, args[0], key) for item in text.split(",")) if text else ()
    if hint is bool:
        if text not in ("true", "false"):
            raise ValueError(f"{key}: expected true or false, got {text!r}")
        return text == "true"
    if hint in (int, str) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return hint(text)
    raise TypeError(f"{key}: no string form for {hint}")


def _fields_to_strings(value) -> dict[str, str]:
    return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}


def _fields_from_strings(cls, values: dict[str, str]):
    """A `cls` from the parameters named as its fields (a field absent keeps its default)."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _decode(values[f.name], hints[f.name], f.name) for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class ServingParams:
    """What the Python model opens its QA session with, stored as the config's `parameters` (Triton keeps them as
    strings): the SQuAD parameters and the run options are those of `bertrt squad`, field by field."""

    model: str  # the QA artifact, relative to the model's directory
    vocab: str
    squad: SquadParams
    options: RunOptions  # provider, threads, buckets, batch_size (windows per model run), cuda_graph, ...
    max_input_bytes: int  # a larger passage or question is refused
    mode: ServingMode = ServingMode.LOCAL

    def to_parameters(self) -> dict[str, str]:
        values = {"model": self.model, "vocab": self.vocab, "max_input_bytes": str(self.max_input_bytes),
                  "mode": self.mode.value}
        for group in (self.squad, self.options):
            values.update(_fields_to_strings(group))
        return values

    @classmethod
    def from_parameters(cls, parameters: dict) -> ServingParams:
        """From the `parameters` of a model config as the Python backend passes it ({key: {"string_value": v}})."""
        # proto3 leaves an empty string out: {"string_value": ""} comes as {}
        values = {key: value.get("string_value", "") for key, value in parameters.items()}
        try:
            return cls(model=values["model"], vocab=values["vocab"],
                       squad=_fields_from_strings(SquadParams, values),
                       options=_fields_from_strings(RunOptions, values),
                       max_input_bytes=int(values["max_input_bytes"]), mode=_mode(values))
        except (KeyError, ValueError, TypeError) as exc:
            raise BertrtError(f"model config parameters incomplete or malformed ({shown(exc)}); rewrite the repository "
                              f"with this bertrt's `bertrt triton-repo`") from None


def _mode(values: dict[str, str]) -> ServingMode:
    # Repositories written before ServingMode said BLS by naming the tensor model.
    return ServingMode(values.get("mode") or ("bls" if values.get("tensor_model") else "local"))


assert not {f.name for f in fields(SquadParams)} & {f.name for f in fields(RunOptions)}, "parameter names collide"


@dataclass(frozen=True)
class Batching:
    """Triton's dynamic batcher and the model's instances (flags, else the config's `serve:` section, else
    `default_batching(provider)`)."""

    max_batch_size: int  # requests per execute call
    max_queue_delay_us: int  # how long the dynamic batcher waits to fill a batch
    instances: int  # model instances (each holds its own QA session); per GPU when `gpus` are listed
    preferred_batch_sizes: tuple[int, ...] = ()  # batch sizes the batcher runs as soon as it has them
    gpus: tuple[int, ...] = ()  # GPUs the instances are placed on (KIND_GPU); (): KIND_CPU, the runtime's GPU 0

    def check(self) -> None:
        """Refused up front: values that would start a server failing every request, or one exhausting the
        machine (each instance is a process holding its own runtime session)."""
        check_count("max batch size", self.max_batch_size, 1, MAX_BATCH)
        check_count("queue delay (us)", self.max_queue_delay_us, 0, MAX_QUEUE_DELAY_US, "10 s")
        check_count("instances", self.instances, 1, max_threads(), "4 per core here")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise BertrtError(f"preferred batch sizes must be between 1 and the max batch size "
                              f"({self.max_batch_size}), got {','.join(map(str, bad))}")

    def check_provider(self, provider: str) -> None:
        if self.gpus and provider != "cuda":
            raise BertrtError(f"instances on GPUs ({','.join(map(str, self.gpus))}) need --provider cuda, not "
                              f"{provider}")


# Defaults per provider when neither a flag nor the config sets them.
# cpu: measured with `serve-bench --processes` on the 2-core development machine (docs/serving.md, 2026-12-03):
#   one instance using both cores batches better than two competing ones; 16 requests per execute.
# cuda: the H200 runs of scripts/gpu_serve_bench.py (docs/serving.md): 4 instances, 15,563-17,563 req/s at c512
#   with p99 34-40 ms. No queue delay: a lone request runs at once (c1 p50 2.30 ms against 2.96 ms with 200 us),
#   and under load the requests that queue while every instance is busy make the batches anyway (mean batch
#   36-55 at c256-c512 either way).
DEFAULT_BATCHING = {
    "cpu": Batching(max_batch_size=16, max_queue_delay_us=2000, instances=1),
    "cuda": Batching(max_batch_size=64, max_queue_delay_us=0, instances=4),
}


def default_batching(provider: str) -> Batching:
    return DEFAULT_BATCHING[provider]


@dataclass(frozen=True)
class SessionDefaults:
    """Run options a served model's QA session gets on a provider where the flags leave them unset (squad's
    defaults suit a SQuAD file, not a server's mix of lone requests and full batches)."""

    batch_size: int | None = None  # windows per model run (None: the config's run.batch_size)
    batch_rows: tuple[int, ...] | None = None  # RunOptions.batch_rows
    cuda_graph: bool = False


# cuda: the H200 runs of 2026-12-03 (docs/serving.md): one model run of up to 64 windows per Triton batch, a lone
#   request padded to 1 row, CUDA graphs. 6 instances, gRPC: 13,918 / 16,667 req/s at c256 / c512 and c1 p50
#   2.58 ms, against 10,994 / 14,604 req/s and 3.35 ms with batches of 16 windows.
DEFAULT_SESSION = {
    "cpu": SessionDefaults(),
    "cuda": SessionDefaults(batch_size=64, batch_rows=(1, 4, 16), cuda_graph=True),
}


def serving_options(options: RunOptions, provider_default: SessionDefaults, batch_size_given: bool,
                    batch_rows_given: bool, cuda_graph_given: bool, mode: ServingMode) -> RunOptions:
    """`options` with the provider's serving defaults for what was not given. In BLS mode the tensor model's
    Triton backend runs the network: no CUDA graphs of ours, and the batch stays as asked."""
    if mode is not ServingMode.LOCAL:
        return options
    changes: dict = {}
    if not batch_size_given and provider_default.batch_size is not None:
        changes["batch_size"] = provider_default.batch_size
    batch = changes.get("batch_size", options.batch_size)
    if not batch_rows_given and provider_default.batch_rows and batch:
        changes["batch_rows"] = tuple(r for r in provider_default.batch_rows if r < batch) or None
    if not cuda_graph_given and provider_default.cuda_graph:
        changes["cuda_graph"] = True
    return dataclasses.replace(options, **changes)


MAX_BATCH = 4096  # requests per execution, windows per model run
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INPUT_BYTES = 64 << 20  # per passage or question


def check_serving(batch_size: int | None, max_input_bytes: int) -> None:
    if batch_size is not None:  # (None: the runtime's default)
        check_count("batch size (windows per model run)", batch_size, 1, MAX_BATCH)
    check_count("max input bytes", max_input_bytes, 1, MAX_INPUT_BYTES)


def _model_config_pb2():
    return require("tritonclient.grpc.model_config_pb2", "serve")


def python_model_config(params: ServingParams, batching: Batching):
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=MODEL_NAME, backend="python", max_batch_size=batching.max_batch_size)
    for name in INPUTS:
        config.input.add(name=name, data_type=pb.TYPE_STRING, dims=[1])
    config.output.add(name=OUTPUTS[0], data_type=pb.TYPE_STRING, dims=[1])
    config.output.add(name=OUTPUTS[1], data_type=pb.TYPE_FP32, dims=[1])
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    if batching.gpus:
        # `instances` on each listed GPU; the Python backend hands each instance its GPU (model_instance_device_id),
        # and the model opens its session there (RunOptions.device_id).
        config.instance_group.add(count=batching.instances, kind=pb.ModelInstanceGroup.KIND_GPU,
                                  gpus=list(batching.gpus))
    else:
        # The Python model's instances run on the CPU side; the network goes where its runtime puts it (GPU 0).
        config.instance_group.add(count=batching.instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    for key, value in params.to_parameters().items():
        config.parameters[key].string_value = value
    return config


def tensor_model_config(model_file: str, platform: str, batching: Batching):
    """The network alone (int32 [batch, seq] ids/segments/mask -> float [batch, seq] start/end logits) for Triton's
    onnxruntime (`onnxruntime_onnx`) or TensorRT (`tensorrt_plan`) backend, on the GPUs."""
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=TENSOR_MODEL_NAME, platform=platform, max_batch_size=batching.max_batch_size,
                            default_model_filename=model_file)
    for name in INPUT_NAMES:
        config.input.add(name=name, data_type=pb.TYPE_INT32, dims=[-1])
    for name in OUTPUT_NAMES:
        config.output.add(name=name, data_type=pb.TYPE_FP32, dims=[-1])
    config.dynamic_batching.SetInParent()
    # no gpus listed: Triton puts `instances` on every GPU it sees
    config.instance_group.add(count=batching.instances, kind=pb.ModelInstanceGroup.KIND_GPU, gpus=list(batching.gpus))
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
    onnx_model, _ = load_qa_model(model, load_weights=False)
    target = target_of(onnx_model)
    if not target.runs_on("onnxruntime"):
        raise BertrtError(f"{model}: the `{target.name}` target ({target.description}) does not run on onnxruntime, "
                          f"Triton's backend for an ONNX model; build an engine for --bls")
    if ort_session_config(onnx_model, source=str(model)):
        raise BertrtError(f"{model}: declares onnxruntime session settings that Triton's onnxruntime backend cannot "
                          f"apply; serve it without --bls")
    return "onnxruntime_onnx"


def _positions(model: Path) -> int:
    """The model's usable positions (ONNX metadata or the engine's sidecar)."""
    if model.suffix == ".onnx":
        return load_qa_model(model, load_weights=False)[1].max_position_embeddings
    return EngineRecord.read(model).config.max_position_embeddings


def _check_model(model: Path) -> None:
    if not model.is_file():
        raise BertrtError(f"{model}: no such model file")
    if model.suffix == ".onnx":
        load_qa_model(model, load_weights=False)  # the bertrt contract (inputs, outputs, stored BERT config)
    elif model.suffix not in ENGINE_SUFFIXES:
        raise BertrtError(f"{model}: unsupported model file (expected .onnx or {' or '.join(ENGINE_SUFFIXES)})")


def is_bertrt_repository(path: Path) -> bool:
    """Whether `path` is a repository `bertrt triton-repo` wrote, with nothing else in it: its `bertrt_qa` model is
    our Python model (config with bertrt's parameters), and besides it at most the BLS tensor model. The only kind
    of directory `--force` replaces."""
    if path.is_symlink() or not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    if MODEL_NAME not in names or not names <= {MODEL_NAME, TENSOR_MODEL_NAME}:
        return False
    try:
        config = read_config(path / MODEL_NAME / "config.pbtxt")
    except BertrtError:
        return False
    return config.name == MODEL_NAME and config.backend == "python" and {"model", "vocab"} <= set(config.parameters)


def _check_replaceable(output: Path, force: bool, inputs: tuple[Path, ...]) -> None:
    if not output.exists() and not output.is_symlink():
        return
    if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
        return
    if not force:
        raise BertrtError(f"{output}: exists and is not an empty directory (--force replaces a repository from "
                          "`bertrt triton-repo`)")
    if not is_bertrt_repository(output):
        raise BertrtError(f"{output}: exists and is not a repository from `bertrt triton-repo`; --force replaces "
                          "only those")
    resolved = output.resolve()
    for source in inputs:
        if source.resolve().is_relative_to(resolved):
            raise BertrtError(f"{source}: is inside the repository {output} that --force would replace; copy it "
                              "elsewhere first")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories: one atomic renameat2(RENAME_EXCHANGE) where the kernel and filesystem have it, else
    three renames (the caller holds signals off). Afterwards `a` holds what was at `b` and `b` what was at `a`."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(b))
    aside = a.with_name(a.name + ".old")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def write_repository(output: Path, model: Path, vocab: Path | None, batching: Batching, params: ServingParams,
                     force: bool = False, fallback_vocab: Path | None = None) -> Path:
    """Write the repository to `output` (which must not exist or be empty; with `force`, may be a repository from
    `bertrt triton-repo`, replaced in one step): all of it, or nothing. `params.model` and `params.vocab` are set
    here (where the files go); the rest of `params` is written as given, except SQuAD lengths beyond the model's
    positions (its maximum instead). The tokenizer is the one stored with the model (`vocab` overrides it,
    `fallback_vocab` serves older models), written as tokenizer.json."""
    batching.check()
    batching.check_provider(params.options.provider)
    params.mode.check(params.options)
    check_serving(params.options.batch_size, params.max_input_bytes)
    _check_model(model)
    if vocab is not None and not vocab.is_file():
        raise BertrtError(f"{vocab}: no such vocabulary file")
    tokenizer = tokenizer_json(tokenizer_for(model, vocab, fallback=fallback_vocab))
    params = dataclasses.replace(params, squad=params.squad.fitted(_positions(model)))
    _check_replaceable(output, force, tuple(p for p in (model, vocab) if p is not None))
    tensor_model = params.mode.tensor_model
    platform = _tensor_platform(model) if tensor_model else None
    sidecar = model.with_name(model.name + ".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    with held():  # made and recorded for the cleanup below as one step
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        python_dir = tmp / MODEL_NAME / "1"
        model_dir = tmp / tensor_model / "1" if tensor_model else python_dir
        for directory in {python_dir, model_dir}:
            directory.mkdir(parents=True)
        for source in (model, sidecar) if sidecar.is_file() else (model,):
            _place(source, model_dir / source.name)
        (python_dir / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
        shutil.copy2(Path(__file__).with_name("triton_model.py"), python_dir / "model.py")
        model_ref = f"../{tensor_model}/1/{model.name}" if tensor_model else f"1/{model.name}"
        params = dataclasses.replace(params, model=model_ref, vocab="1/tokenizer.json")
        _write_config(python_model_config(params, batching), tmp / MODEL_NAME)
        if tensor_model:
            # The Python model sends batches of options.batch_size windows; the dynamic batcher may merge them.
            tensor_batching = dataclasses.replace(batching, max_batch_size=max(batching.max_batch_size,
                                                                               params.options.batch_size or 1))
            _write_config(tensor_model_config(model.name, platform, tensor_batching), tmp / tensor_model)
        with held():
            if output.is_dir() and any(output.iterdir()):  # (--force, checked above): swap, the old one is removed
                _exchange(tmp, output)
            else:
                if output.exists():
                    output.rmdir()
                os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
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
        check_serving(params.options.batch_size, params.max_input_bytes)
        Batching(config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds,
                 sum(group.count for group in config.instance_group) or 1).check()
    except BertrtError as exc:
        raise BertrtError(f"{shown(path)}: {exc}") from None


def read_parameters(repository: Path) -> ServingParams:
    """The ServingParams of a written repository (what its Python model opens its session with)."""
    from google.protobuf.json_format import MessageToDict

    config = MessageToDict(read_config(repository / MODEL_NAME / "config.pbtxt"), preserving_proto_field_name=True)
    return ServingParams.from_parameters(config.get("parameters", {}))


def serving_mode(repository: Path) -> ServingMode:
    """The mode a repository was written for."""
    return read_parameters(repository).mode
