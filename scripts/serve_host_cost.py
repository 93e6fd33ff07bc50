"""Host cost per request of the serving path: QASession.answer_examples(keep_nbest=False) on N classic requests
per call (what one Triton execute does), with a model that returns random logits at once, so that only the host
work is timed (tokenization, features, collate, post-processing, the loop around them). Prints wall and process CPU
time per call and per request, and the features / post-processing split (Run.feature_seconds, Run.post_seconds).

    python scripts/serve_host_cost.py REQUESTS [--calls 200] [--repeat 3] [--prof]
"""
import argparse
import cProfile
import pstats
import time

import numpy as np
from bertrt.qa.squad_data import Example
from bertrt.qa.tokenizer import load_tokenizer
from bertrt.qa_contract import load_qa_model
from bertrt.resources import embedded_vocab
from bertrt.runtimes import QABackend, QARunner
from bertrt.session.answering import SquadParams, answer

PASSAGE = (  # tests/conftest.py's TENSORRT_PASSAGE, the classic request
    "TensorRT is a high performance deep learning inference platform that delivers low latency and high "
    "throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to "
    "import models, and plugins to support novel ops and layers before applying optimizations for inference. "
    "Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can "
    "customize and extend these components to take advantage of powerful TensorRT optimizations for your apps."
)


class RandomLogits(QARunner):
    def __init__(self):
        super().__init__(name="random-logits")

    def activate_impl(self): pass
    def deactivate_impl(self): pass

    def infer_impl(self, feed):
        b, s = feed["input_ids"].shape
        rng = np.random.default_rng(0)
        return {"start_logits": rng.standard_normal((b, s), dtype=np.float32),
                "end_logits": rng.standard_normal((b, s), dtype=np.float32)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("requests", type=int)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prof", action="store_true")
    args = p.parse_args()
    config = load_qa_model("/work/main/out/minilm-l6-h384-squad11/model.onnx", load_weights=False)[1]
    runner = RandomLogits()
    runner.activate()
    backend = QABackend(runner, config, "fake")
    tokenizer = load_tokenizer(embedded_vocab())
    params = SquadParams()
    examples = [Example(qas_id=str(i), question="What is TensorRT?", context=PASSAGE) for i in range(args.requests)]

    def call():
        return answer(backend, tokenizer, examples, params, args.batch_size, truncate_question=False,
                      keep_nbest=False)

    for _ in range(20):
        call()
    n = args.requests
    for _ in range(args.repeat):
        feat = post = 0.0
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.calls):
            run = call()
            feat += run.feature_seconds
            post += run.post_seconds
        wall, cpu = (time.perf_counter() - w0) / args.calls, (time.process_time() - c0) / args.calls
        print(f"{n} requests: wall {wall * 1e3:.3f} ms/call {wall / n * 1e6:.1f} us/request | "
              f"cpu {cpu * 1e3:.3f} ms/call {cpu / n * 1e6:.1f} us/request | "
              f"features {feat / args.calls * 1e3:.3f} ms, post {post / args.calls * 1e3:.3f} ms (wall)")
    if args.prof:
        prof = cProfile.Profile()
        prof.runcall(lambda: [call() for _ in range(50)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
