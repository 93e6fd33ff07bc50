"""The peer users would otherwise run on a CPU: Hugging Face transformers 4.x `pipeline("question-answering")` (torch),
on the same model and SQuAD questions as `bertrt squad`, for the CPU comparison in docs/cpu-runtimes.md.

Two steps, in two environments (transformers 5 removed the question-answering pipeline, and torch is no bertrt
dependency):

    # 1. bertrt's venv: the embedded TF checkpoint as a transformers BertForQuestionAnswering directory
    .venv/bin/python scripts/hf_qa_peer.py convert --output out/hf-minilm
    # 2. a venv with torch + transformers 4.x: answer the first N dev questions, write predictions and seconds
    /work/venv-torch/bin/python scripts/hf_qa_peer.py run --model out/hf-minilm --squad-json DEV --limit N \
        --output out/hf.predictions.json --threads 2

Step 2 imports nothing from bertrt (it runs where bertrt is not installed); `bertrt.qa.squad_metrics` scores its
predictions (scripts/cpu_bench.py does both and prints the table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def convert(checkpoint: Path, output: Path) -> None:
    """Google-named TF weights -> transformers names and [out, in] Linear layout, written as model.safetensors with
    config.json, vocab.txt and tokenizer_config.json (uncased)."""
    import numpy as np
    from safetensors.numpy import save_file

    from bertrt.export.hf_safetensors import _google_name
    from bertrt.export.onnx_export import read_weights, resolve_source
    from bertrt.model_config import BertConfig

    source = resolve_source(checkpoint)
    cfg = BertConfig.from_json(source.config)
    weights = read_weights(source, cfg)
    names = ["qa_outputs.weight", "qa_outputs.bias", "bert.embeddings.word_embeddings.weight",
             "bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
             "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]
    for layer in range(cfg.num_hidden_layers):
        for module in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                       "intermediate.dense", "output.dense", "attention.output.LayerNorm", "output.LayerNorm"):
            names += [f"bert.encoder.layer.{layer}.{module}.weight", f"bert.encoder.layer.{layer}.{module}.bias"]
    tensors = {}
    for name in names:  # the export's own HF -> Google mapping, read backwards
        google, transpose = _google_name(name)
        value = np.asarray(weights[google], dtype=np.float32)
        tensors[name] = np.ascontiguousarray(value.T if transpose else value)
    output.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(output / "model.safetensors"))
    config = json.loads(Path(source.config).read_text())
    config.update({"architectures": ["BertForQuestionAnswering"], "model_type": "bert"})
    (output / "config.json").write_text(json.dumps(config, indent=1))
    shutil.copy(source.vocab, output / "vocab.txt")
    (output / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    print(f"wrote {output}")


def run(model: Path, squad_json: Path, limit: int | None, output: Path, threads: int | None, batch_size: int) -> None:
    import torch
    from transformers import pipeline

    if threads:
        torch.set_num_threads(threads)
    questions, contexts, ids = [], [], []
    for article in json.loads(squad_json.read_text())["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(qa["question"])
                contexts.append(paragraph["context"])
                ids.append(qa["id"])
    n = limit or len(ids)
    t0 = time.perf_counter()
    qa = pipeline("question-answering", model=str(model), tokenizer=str(model), device="cpu")
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    answers = qa(question=questions[:n], context=contexts[:n], batch_size=batch_size, max_seq_len=384,
                 doc_stride=128, max_question_len=64, max_answer_len=30, top_k=1)
    seconds = time.perf_counter() - t0
    answers = answers if isinstance(answers, list) else [answers]
    output.write_text(json.dumps({i: a["answer"] for i, a in zip(ids[:n], answers)}))
    import transformers
    print(json.dumps({"questions": n, "seconds": round(seconds, 2), "load_seconds": round(loaded, 2),
                      "threads": torch.get_num_threads(), "batch_size": batch_size,
                      "torch": torch.__version__, "transformers": transformers.__version__}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--checkpoint", type=Path, default=Path("models/minilm-l6-h384-squad11"))
    c.add_argument("--output", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("--squad-json", type=Path, required=True)
    r.add_argument("--limit", type=int)
    r.add_argument("--output", type=Path, required=True)
    r.add_argument("--threads", type=int)
    r.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    if a.command == "convert":
        convert(a.checkpoint, a.output)
    else:
        run(a.model, a.squad_json, a.limit, a.output, a.threads, a.batch_size)


if __name__ == "__main__":
    main()
