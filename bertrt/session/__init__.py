"""The session layer: a QA model opened for answering (`QASession`), the loop from examples to answers through a
runtime (`answering`) and the SQuAD evaluation (`squad`). Used by the API, the CLI (infer, squad), the Triton model
and serve-bench; imports only the layers below it (core, QA data, runtimes)."""

from bertrt.session.answering import SquadParams
from bertrt.session.qa_session import QASession, RunOptions, TokenProbabilities, open_model, run_options

__all__ = ["QASession", "SquadParams", "RunOptions", "TokenProbabilities", "open_model", "run_options"]
