"""Dump, or compare, every Answer field that best_answers / QASession.answer_examples give on SQuAD dev questions,
so a change to features or post-processing can be checked against the code before it (run `dump` with the old
code, `dump` with the new, then `compare`).

Logits come from a deterministic fake model (a fixed random value per token id plus one per position, so each
feature's logits do not depend on how it was batched), in three flavours: plain, quantized to 0.5 (many exact
ties, for the tie-breaking order) and flat (every logit equal); run as v1.1 and as v2.0 (null answers) with
several thresholds, keep_nbest on and off, one and several examples per call.

    python scripts/post_equality.py dump OUT.pkl [N]
    python scripts/post_equality.py compare OLD.pkl NEW.pkl
"""
import pickle
import sys

import numpy as np
from bertrt.qa.squad_data import load_squad
from bertrt.qa.tokenizer import load_tokenizer
from bertrt.qa_contract import load_qa_model
from bertrt.resources import embedded_vocab, squad_dev
from bertrt.runtimes import QABackend, QARunner
from bertrt.session.answering import SquadParams, answer


class TokenLogits(QARunner):
    def __init__(self, quantum: float | None):
        super().__init__(name="token-logits")
        rng = np.random.default_rng(7)
        self.token, self.position = rng.standard_normal((2, 40000)), rng.standard_normal((2, 4096))
        self.quantum = quantum

    def activate_impl(self): pass
    def deactivate_impl(self): pass

    def infer_impl(self, feed):
        ids = feed["input_ids"]
        logits = self.token[:, ids] + self.position[:, None, :ids.shape[1]]
        if self.quantum == 0:
            logits = np.zeros_like(logits)
        elif self.quantum:
            logits = np.round(logits / self.quantum) * self.quantum
        return {"start_logits": logits[0].astype(np.float32), "end_logits": logits[1].astype(np.float32)}


def _fields(answers):
    return [(a.text, a.score, a.logit, a.char_start, a.char_end, a.null_score_diff,
             [(c.logit, c.text, c.char_start, c.char_end, c.score) for c in a.nbest]) for a in answers]


def dump(out: str, n: int) -> None:
    examples = load_squad(squad_dev())[0][:n]
    tokenizer = load_tokenizer(embedded_vocab())
    _, config = load_qa_model("/work/main/out/minilm-l6-h384-squad11/model.onnx", load_weights=False)
    results = {}
    for quantum in (None, 0.5, 0):
        runner = TokenLogits(quantum)
        runner.activate()
        backend = QABackend(runner, config, "fake")
        for params in (SquadParams(), SquadParams(max_seq_length=96, doc_stride=32, max_query_length=32, n_best=5)):
            for v2, threshold in ((False, 0.0), (True, 0.0), (True, -3.0), (True, 3.0)):
                for keep in (True, False):
                    for per_call in (len(examples), 16, 1):
                        key = (quantum, params, v2, threshold, keep, per_call)
                        got = []
                        for lo in range(0, len(examples), per_call):
                            got += answer(backend, tokenizer, examples[lo:lo + per_call], params, 64, True,
                                          version_2=v2, null_score_diff_threshold=threshold,
                                          keep_nbest=keep).answers
                        results[key] = _fields(got)
                        if per_call == 1 and len(examples) > 200:
                            break
    with open(out, "wb") as f:
        pickle.dump(results, f)
    print(f"{len(results)} runs of {len(examples)} examples -> {out}")


def compare(old: str, new: str) -> None:
    with open(old, "rb") as f:
        a = pickle.load(f)
    with open(new, "rb") as f:
        b = pickle.load(f)
    assert a.keys() == b.keys(), "different runs"
    worst, answers, bit_equal = 0.0, 0, True
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for x, y in zip(a[key], b[key]):
            answers += 1
            if x == y:
                continue
            bit_equal = False
            assert (x[0], x[3], x[4]) == (y[0], y[3], y[4]), (key, x[:6], y[:6])
            assert [c[1:4] for c in x[6]] == [c[1:4] for c in y[6]], (key, x[:6], y[:6])
            floats = [(x[1], y[1]), (x[2], y[2])] + [(c[0], d[0]) for c, d in zip(x[6], y[6])] \
                + [(c[4], d[4]) for c, d in zip(x[6], y[6])]
            if x[5] is not None or y[5] is not None:
                floats.append((x[5], y[5]))
            worst = max(worst, max(abs(p - q) for p, q in floats if p != q))
    print(f"{len(a)} runs, {answers} answers: texts, spans, n-best texts equal; "
          f"{'all fields bit-identical' if bit_equal else f'max abs float difference {worst:.3g}'}")
    assert worst <= 1e-6


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2000)
    else:
        compare(sys.argv[2], sys.argv[3])
