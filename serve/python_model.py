"""The `bertrt_qa` Triton Python-backend model: (passage, question) text per request -> (answer, score), with bertrt's
own pre- and post-processing (features, doc-stride windows, answer extraction) and bertrt's backend selection.

Runs inside Triton's Python-backend stub (`triton_python_backend_utils` exists only there). One `execute` call gets
the requests the dynamic batcher gathered; their windows run through the model together, `batch_size` at a time.
A bad request gets an error response naming the problem; the other requests of the batch are still answered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np

from bertrt.errors import BertrtError
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES
from bertrt.runtimes import QARunner, RunOptions, open_backend
from bertrt.serve.repository import INPUTS, ServingParams


def open_qa_backend(model: Path, provider: str):
    """The model runs through bertrt's one backend selection (`bertrt.runtimes.open_backend`); this is the only
    call into it, so a change of its signature is adapted here."""
    return open_backend(model, RunOptions(provider=provider))


class TritonModelRunner(QARunner):
    """A Polygraphy runner whose inference is a BLS call to another model of the same Triton server (the tensor
    model that Triton's onnxruntime or TensorRT backend runs)."""

    def __init__(self, model_name: str):
        super().__init__(name=f"triton-bls-{model_name}", prefix="triton-bls-runner")
        self.model_name = model_name

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def infer_impl(self, feed_dict):
        import triton_python_backend_utils as pb_utils

        request = pb_utils.InferenceRequest(model_name=self.model_name, requested_output_names=list(OUTPUT_NAMES),
                                            inputs=[pb_utils.Tensor(n, feed_dict[n]) for n in INPUT_NAMES])
        response = request.exec()
        if response.has_error():
            raise BertrtError(f"{self.model_name}: {response.error().message()}")
        return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in OUTPUT_NAMES}


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


class TritonPythonModel:
    def initialize(self, args):
        from bertrt.run.answering import SquadParams
        from bertrt.qa.tokenizer import load_tokenizer

        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"])
        self.params = ServingParams.from_parameters(config.get("parameters", {}))
        self.squad = SquadParams(**self.params.squad)
        self._stack = contextlib.ExitStack()
        backend = open_qa_backend(model_dir / self.params.model, self.params.provider)
        if self.params.tensor_model:
            # Same contract checks and limits as the local backend; only the runner is the BLS call.
            backend = dataclasses.replace(backend, runner=TritonModelRunner(self.params.tensor_model),
                                          description=f"Triton model {self.params.tensor_model} (BLS)")
        self.backend = self._stack.enter_context(backend)
        self.squad.check(self.backend)
        self.tokenizer = load_tokenizer(model_dir / self.params.vocab, expected_vocab_size=self.backend.config.vocab_size)

    def _features(self, pb_utils, request, first_example: int):
        from bertrt.qa.features import make_features
        from bertrt.qa.squad_data import Example

        passages, questions = (_texts(pb_utils, request, name, self.params.max_input_bytes) for name in INPUTS)
        if len(passages) != len(questions):
            raise BertrtError(f"{len(passages)} passages but {len(questions)} questions; send one of each per row")
        examples = [Example(qas_id=str(first_example + i), question=q, context=p)
                    for i, (p, q) in enumerate(zip(passages, questions))]
        # A question that does not fit is an error, as in `bertrt infer`.
        features = make_features(examples, self.tokenizer, self.squad.max_seq_length, self.squad.doc_stride,
                                 self.squad.max_query_length, truncate_question=False)
        return examples, [dataclasses.replace(f, example_index=f.example_index + first_example) for f in features]

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils
        from bertrt.run.answering import run_logits
        from bertrt.qa.postprocess import best_answers

        responses: list = [None] * len(requests)
        examples, features, rows = [], [], {}  # rows: request index -> its example indices
        for i, request in enumerate(requests):
            try:
                request_examples, request_features = self._features(pb_utils, request, len(examples))
            except BertrtError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            rows[i] = range(len(examples), len(examples) + len(request_examples))
            examples += request_examples
            features += request_features
        if rows:
            try:
                starts, ends, _ = run_logits(self.backend, features, self.params.batch_size)
                answers = best_answers(examples, features, starts, ends, self.squad.n_best,
                                       self.squad.max_answer_length)
            except Exception as exc:  # one failed run must fail its requests, never the server
                for i in rows:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"model run failed: {exc}"))
                return responses
            for i, indices in rows.items():
                chosen = [answers[k] for k in indices]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("answer", np.array([[a.text.encode("utf-8")] for a in chosen], dtype=np.object_)),
                    pb_utils.Tensor("score", np.array([[a.score] for a in chosen], dtype=np.float32)),
                ])
        return responses

    def finalize(self):
        self._stack.close()
