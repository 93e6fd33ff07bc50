"""Where INT8/FP8 error comes from: per-tensor quantization error of every Q/DQ'd activation and weight.

For each QuantizeLinear of a Q/DQ model, the FP32 model's tensor of the same name is fake-quantized with the
artifact's scale and compared: relative error ||x - qdq(x)|| / ||x|| and the fraction of values clipped.
`python -m bertrt.calibration.diagnose --fp32 model.onnx --qdq model.int8.onnx`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bertrt.calibration import calib_data
from bertrt.qa.features import make_features
from bertrt.qa.squad_data import load_squad
from bertrt.qa.tokenizer import load_tokenizer
from bertrt.resources import squad_dev


def _fake_quant(x: np.ndarray, scale: np.ndarray, qmax: float, fp8: bool) -> np.ndarray:
    y = np.clip(x / scale, -qmax, qmax)
    if fp8:
        import ml_dtypes

        return y.astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * scale
    return np.round(y) * scale


def activation_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto, feeds: list[dict]) -> list[dict]:
    import onnxruntime as ort

    inits = {i.name: i for i in qdq.graph.initializer}
    consumers = {}
    for n in qdq.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    qs = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    m = onnx.ModelProto.FromString(fp32.SerializeToString())
    # With FP16 float parts (the INT8 default) a Q reads a Cast of the float tensor: follow Casts back to the
    # tensor the FP32 model has; a Q with no such tensor is left out.
    producer = {o: n for n in qdq.graph.node for o in n.output}
    known = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}

    def source(name: str) -> str | None:
        while name not in known and name in producer and producer[name].op_type == "Cast":
            name = producer[name].input[0]
        return name if name in known else None

    sources = {q.name: source(q.input[0]) for q in qs}
    qs = [q for q in qs if sources[q.name] is not None]
    have = {o.name for o in m.graph.output}
    for q in qs:
        if sources[q.name] not in have:
            have.add(sources[q.name])
            m.graph.output.add(name=sources[q.name])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    stats: dict[str, list] = {}
    for feed in feeds:
        values = dict(zip(names, sess.run(None, feed)))
        mask = feed["input_mask"].astype(bool)
        for q in qs:
            x = values[sources[q.name]].astype(np.float32)
            zp = inits[q.input[2]]
            fp8 = zp.data_type == onnx.TensorProto.FLOAT8E4M3FN
            scale = numpy_helper.to_array(inits[q.input[1]]).astype(np.float32)
            err = x - _fake_quant(x, scale, 448.0 if fp8 else 127.0, fp8)
            if x.shape[:2] == mask.shape:  # [B, S, ...]: count real tokens only
                x, err = x[mask], err[mask]
            s = stats.setdefault(q.input[0], [0.0, 0.0, 0, 0, float(scale) * (448.0 if fp8 else 127.0)])
            s[0] += float((err ** 2).sum())
            s[1] += float((x ** 2).sum())
            s[2] += int((np.abs(x) > s[4]).sum())
            s[3] += x.size
    out = []
    for name, (e2, x2, clipped, size, amax) in stats.items():
        users = sorted({u.op_type for dq in consumers.get(
            next(q.output[0] for q in qs if q.input[0] == name), []) for u in consumers.get(dq.output[0], [])})
        out.append({"tensor": name, "amax": round(amax, 3), "rel_err": round((e2 / max(x2, 1e-30)) ** 0.5, 5),
                    "clipped": clipped / max(size, 1), "feeds": users})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", type=Path, required=True, help="the float model")
    p.add_argument("--qdq", type=Path, required=True, help="its Q/DQ model from bertrt quantize")
    p.add_argument("--squad-json", type=Path, default=squad_dev(),
                   help="questions to measure on (default: the shipped SQuAD v1.1 dev)")
    p.add_argument("--vocab", type=Path, default=calib_data.DEFAULT_VOCAB,
                   help="vocab.txt (default: the embedded model's)")
    p.add_argument("--questions", type=int, default=16, help="how many questions (default: %(default)s)")
    args = p.parse_args(argv)
    examples, _ = load_squad(args.squad_json)
    feats = make_features(examples[:args.questions], load_tokenizer(args.vocab))
    feeds = list(calib_data.feed_batches(feats, 8))
    rows = activation_errors(onnx.load(str(args.fp32)), onnx.load(str(args.qdq)), feeds)
    for r in sorted(rows, key=lambda r: -r["rel_err"]):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
