"""The `bertrt_qa` Triton Python-backend model: (passage, question) text per request -> (answer, score), answered by a
`QASession` opened from the repository's parameters (the model, SQuAD parameters and run options of `bertrt squad`).

Runs inside Triton's Python-backend stub (`triton_python_backend_utils` exists only there; it is imported in
`initialize`/`execute`, so this module imports anywhere). One `execute` call gets the requests the dynamic batcher
gathered: their texts are checked request by request (a bad request gets an error response naming the problem, the
others are still answered), then all examples go through the session in one call, as `squad` runs them: one batch
tokenization, windows batched together, one vectorized post-processing.
"""

from __future__ import annotations

import cProfile
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.engine_sidecar import EngineRecord
from bertrt.model_config import BertConfig
from bertrt.qa.features import BadExample
from bertrt.qa.squad_data import Example
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, load_qa_model
from bertrt.runtimes import QABackend, QARunner
from bertrt.runtimes.artifact import ENGINE_SUFFIXES
from bertrt.serve.repository import INPUTS, ServingMode, ServingParams
from bertrt.session import QASession

# A directory: each model instance profiles its `execute` calls (cProfile) and writes <instance name>.pstats there
# when it is unloaded (docs/serving.md, "Where a stub's time goes"). A diagnostic; off unless set.
PROFILE_DIR_ENV = "BERTRT_STUB_PROFILE_DIR"


class TritonModelRunner(QARunner):
    """A Polygraphy runner whose inference is a BLS call to another model of the same Triton server (the tensor
    model that Triton's onnxruntime or TensorRT backend runs)."""

    def __init__(self, model_name: str, pb_utils):
        super().__init__(name=f"triton-bls-{model_name}", prefix="triton-bls-runner")
        self.model_name = model_name
        self.pb_utils = pb_utils

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def warm_up(self, shapes, runs: int = 1) -> None:
        """Nothing: a BLS request may be made only from `execute` (not while the model initializes), and the
        tensor model's backend plans its own shapes."""

    def infer_impl(self, feed_dict):
        pb = self.pb_utils
        request = pb.InferenceRequest(model_name=self.model_name, requested_output_names=list(OUTPUT_NAMES),
                                      inputs=[pb.Tensor(n, feed_dict[n]) for n in INPUT_NAMES])
        response = request.exec()
        if response.has_error():
            raise BertrtError(f"{self.model_name}: {response.error().message()}")
        return {n: pb.get_output_tensor_by_name(response, n).as_numpy() for n in OUTPUT_NAMES}


def _bls_backend(model: Path, params: ServingParams, pb_utils) -> QABackend:
    """The network's contract (BERT config, an engine's profiles) read from the artifact, and the BLS runner: the
    runtime itself is Triton's tensor model, so nothing is loaded here (no onnxruntime session, no TensorRT)."""
    if model.suffix in ENGINE_SUFFIXES:
        record = EngineRecord.read(model)
        config: BertConfig = record.config
        profiles = record.profiles
    else:
        _, config = load_qa_model(model, load_weights=False)
        profiles = ()
    options = params.options
    return QABackend(TritonModelRunner(params.mode.tensor_model, pb_utils), config,
                     f"Triton model {params.mode.tensor_model} (BLS)", profiles,
                     buckets=options.buckets, batch_size=options.batch_size if options.buckets else None,
                     batch_rows=options.batch_rows if options.buckets else None)


def open_session(model_dir: Path, params: ServingParams, pb_utils=None) -> QASession:
    """The QA session of a repository's bertrt_qa model (`model_dir`): the Triton model's, and serve-bench's
    in-process reference. BLS mode needs `pb_utils` (inside Triton); without it the network runs here."""
    backend = None
    if params.mode is ServingMode.BLS and pb_utils is not None:
        backend = _bls_backend(model_dir / params.model, params, pb_utils)
    return QASession(model_dir / params.model, model_dir / params.vocab, params.squad, options=params.options,
                     backend=backend)


def _client_error(pb_utils, message: str):
    """The client's mistake: HTTP 400 / gRPC INVALID_ARGUMENT (a plain TritonError is 500 / INTERNAL)."""
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)


def _texts(pb_utils, request, name: str, max_bytes: int) -> list[str]:
    """The UTF-8 strings of one BYTES input of a request (one per row)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:  # Triton checks inputs against the config first; this is a second line of defence
        raise BertrtError(f"missing input {name!r}")
    texts = []
    for value in tensor.as_numpy().reshape(-1):
        if not isinstance(value, bytes):
            raise BertrtError(f"input {name!r} must be BYTES (UTF-8 text)")
        if len(value) > max_bytes:
            raise BertrtError(f"input {name!r} is {len(value)} bytes; this server accepts at most {max_bytes} "
                              f"(model parameter max_input_bytes)")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BertrtError(f"input {name!r} is not UTF-8 text") from None
        if not text.strip():
            raise BertrtError(f"input {name!r} is empty")
        texts.append(text)
    return texts


def _examples(pb_utils, request, max_bytes: int) -> list[Example]:
    passages, questions = (_texts(pb_utils, request, name, max_bytes) for name in INPUTS)
    if len(passages) != len(questions):
        raise BertrtError(f"{len(passages)} passages but {len(questions)} questions; send one of each per row")
    return [Example(qas_id=str(row), question=q, context=p) for row, (p, q) in enumerate(zip(passages, questions))]


def instance_params(params: ServingParams, args: dict) -> ServingParams:
    """The repository's parameters for one model instance: an instance of a KIND_GPU group (`serve --gpus`) runs
    its session on the GPU Triton gave it (the Python backend passes it as `model_instance_device_id`)."""
    if args.get("model_instance_kind") != "GPU":
        return params
    device = int(args["model_instance_device_id"])
    return dataclasses.replace(params, options=dataclasses.replace(params.options, device_id=device))


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        self.params = instance_params(ServingParams.from_parameters(config.get("parameters", {})), args)
        self.session = open_session(Path(args["model_repository"]), self.params, pb_utils)
        self.profile_to = None
        if os.environ.get(PROFILE_DIR_ENV):
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in args.get("model_instance_name", "model"))
            self.profile_to = Path(os.environ[PROFILE_DIR_ENV]) / f"{name}.pstats"
            self.profiler = cProfile.Profile()

    def _answers(self, examples: list[Example], owner: list[int], errors: dict[int, str]) -> list:
        """Answers of `examples` (example k belongs to request owner[k]) in one session call. A request whose
        question does not fit (the one check that needs the tokenizer) is recorded in `errors` and its examples
        left out, and the rest answered again: one call normally, one more per such request."""
        while True:
            keep = [k for k in range(len(examples)) if owner[k] not in errors]
            if not keep:
                return [None] * len(examples)
            try:
                answers = self.session.answer_examples([examples[k] for k in keep], keep_nbest=False)
            except BadExample as exc:
                errors[owner[keep[exc.example_index]]] = str(exc)
                continue
            out: list = [None] * len(examples)
            for k, a in zip(keep, answers):
                out[k] = a
            return out

    def execute(self, requests):
        if self.profile_to is None:
            return self._execute(requests)
        self.profiler.enable()
        try:
            return self._execute(requests)
        finally:
            self.profiler.disable()

    def _execute(self, requests):
        pb = self.pb_utils
        errors: dict[int, str] = {}  # request index -> why it fails
        failed_run: set[int] = set()
        examples: list[Example] = []
        owner: list[int] = []  # example -> its request
        for i, request in enumerate(requests):
            try:
                request_examples = _examples(pb, request, self.params.max_input_bytes)
            except BertrtError as exc:
                errors[i] = str(exc)
                continue
            examples += request_examples
            owner += [i] * len(request_examples)
        try:
            answers = self._answers(examples, owner, errors) if examples else []
        except Exception as exc:  # one failed run must fail its requests, never the server
            answers = []
            failed_run = {i for i in set(owner) if i not in errors}  # the server's failure, not the client's
            errors.update({i: f"model run failed: {exc}" for i in failed_run})
        texts = np.array([[a.text.encode("utf-8") if a is not None else b""] for a in answers], dtype=np.object_).reshape(-1, 1)
        scores = np.array([[a.score if a is not None else 0.0] for a in answers], dtype=np.float32).reshape(-1, 1)
        bounds = np.searchsorted(np.asarray(owner, dtype=np.int64), np.arange(len(requests) + 1)).tolist()
        responses = []
        for i in range(len(requests)):
            if i in errors:
                responses.append(pb.InferenceResponse(error=pb.TritonError(errors[i]) if i in failed_run
                                                      else _client_error(pb, errors[i])))
            else:
                lo, hi = bounds[i], bounds[i + 1]
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor("answer", texts[lo:hi]),
                                                                      pb.Tensor("score", scores[lo:hi])]))
        return responses

    def finalize(self):
        self.session.close()
        if self.profile_to is not None:
            self.profiler.dump_stats(self.profile_to)
