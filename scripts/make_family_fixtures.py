#!/usr/bin/env python3
"""Tiny random-weight QA models of every family bertrt accepts, with small trained tokenizers, for
tests/test_families*.py (CI has no torch, so the outputs are committed under tests/fixtures/families/).

    /work/venv-torch/bin/python scripts/make_family_fixtures.py --out tests/fixtures/families

Independent of bertrt on purpose (it runs in a torch virtualenv). For each family it writes ``<out>/<family>/``:

  hf/                 the Hugging Face folder a user has: config.json, model.safetensors (ELECTRA's is sharded,
                      with model.safetensors.index.json), tokenizer.json, tokenizer_config.json,
                      special_tokens_map.json (and vocab.txt for the WordPiece families)
  reference.npz       a padded batch made by the model's own tokenizer from SQuAD text (3 rows of 24, 17 and 9
                      tokens): int32 input_ids (padded with the tokenizer's pad id), segment_ids (0 for the
                      question part, 1 from the passage on, as bertrt's features make them), input_mask, and
                      torch's float32 start_logits / end_logits
  tokenization.json   question/passage pairs with the ids and passage character offsets the model's own
                      (transformers fast) tokenizer gives for them
  forms/<exporter>-<attention>/model.onnx   (with config.json, tokenizer.json, tokenizer_config.json beside it, as in
                      an Optimum export folder) torch.onnx exports as users make them: legacy (dynamo=False, opset 17,
                      dynamic_axes) and dynamo (dynamic_shapes), SDPA and eager attention; the inputs are what the
                      family's forward takes (no token_type_ids for RoBERTa, XLM-R, DistilBERT); self-contained
  versions.json       versions, and onnxruntime-vs-torch error of every form

The tokenizers are trained with the `tokenizers` library on the SQuAD sample in notebooks/data: WordPiece (BERT
cased, DistilBERT and ELECTRA uncased), byte-level BPE (RoBERTa), Unigram (XLM-RoBERTa).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig, BertForQuestionAnswering, DistilBertConfig, DistilBertForQuestionAnswering, ElectraConfig,
    ElectraForQuestionAnswering, PreTrainedTokenizerFast, RobertaConfig, RobertaForQuestionAnswering,
    XLMRobertaConfig, XLMRobertaForQuestionAnswering)

SEED = 20261203
ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT / "notebooks" / "data" / "squad-dev-sample.json"
LENGTHS = (24, 17, 9)
TOLERANCE = 1e-4
VOCAB = 400
COMMON = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.2)
FORMS = {"legacy-sdpa": (False, "sdpa"), "legacy-eager": (False, "eager"), "dynamo-sdpa": (True, "sdpa"),
         "dynamo-eager": (True, "eager")}


def squad_text() -> tuple[list[str], list[tuple[str, str]]]:
    data = json.loads(SQUAD.read_text())
    texts, pairs = [], []
    for article in data["data"]:
        for para in article["paragraphs"]:
            texts.append(para["context"])
            for qa in para["qas"]:
                texts.append(qa["question"])
                pairs.append((qa["question"], para["context"]))
    return texts, pairs


def wordpiece(texts: list[str], lowercase: bool) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def byte_level_bpe(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    return tok


def unigram(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(),
                                           normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=VOCAB - 1, special_tokens=special,
                                                            unk_token="<unk>"))
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok


def families(texts):
    """family -> (config, model class, tokenizer, HF tokenizer kwargs, takes token_type_ids)."""
    wp_special = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                      mask_token="[MASK]")
    rb_special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", pad_token="<pad>",
                      cls_token="<s>", mask_token="<mask>")
    return {
        "bert-cased": (BertConfig(vocab_size=VOCAB, max_position_embeddings=96, type_vocab_size=2, pad_token_id=0,
                                  layer_norm_eps=1e-12, **COMMON),
                       BertForQuestionAnswering, wordpiece(texts, lowercase=False),
                       dict(wp_special, do_lower_case=False, tokenizer_class="BertTokenizer"), True),
        "roberta": (RobertaConfig(vocab_size=VOCAB, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **COMMON),
                    RobertaForQuestionAnswering, byte_level_bpe(texts),
                    dict(rb_special, add_prefix_space=False, tokenizer_class="RobertaTokenizer"), False),
        "xlm-roberta": (XLMRobertaConfig(vocab_size=VOCAB, max_position_embeddings=130, type_vocab_size=1,
                                         pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                                         **COMMON),
                        XLMRobertaForQuestionAnswering, unigram(texts),
                        dict(rb_special, tokenizer_class="XLMRobertaTokenizer"), False),
        "distilbert": (DistilBertConfig(vocab_size=VOCAB, max_position_embeddings=128, n_layers=2, dim=64,
                                        n_heads=4, hidden_dim=128, activation="gelu", dropout=0.1,
                                        attention_dropout=0.1, initializer_range=0.2, pad_token_id=0,
                                        qa_dropout=0.1),
                       DistilBertForQuestionAnswering, wordpiece(texts, lowercase=True),
                       dict(wp_special, do_lower_case=True, tokenizer_class="DistilBertTokenizer"), False),
        "electra": (ElectraConfig(vocab_size=VOCAB, embedding_size=32, max_position_embeddings=512,
                                  type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12, **COMMON),
                    ElectraForQuestionAnswering, wordpiece(texts, lowercase=True),
                    dict(wp_special, do_lower_case=True, tokenizer_class="ElectraTokenizer"), True),
    }


def build(cls, config, seed: int, attn: str):
    torch.manual_seed(seed)
    model = cls._from_config(config, attn_implementation=attn)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # LayerNorm gamma/beta and biases randomised: a mapping bug must change the logits
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def reference_batch(hf_tok, pairs) -> dict[str, np.ndarray]:
    """Three question/passage pairs cut to 24, 17 and 9 tokens by the model's own tokenizer, padded to 24."""
    rows = []
    for (q, c), length in zip(pairs[:3], LENGTHS):
        words = q.split()
        while len(hf_tok(" ".join(words))["input_ids"]) > length // 2 and len(words) > 1:
            words.pop()  # a question short enough to leave passage tokens in the shortest row
        enc = hf_tok(" ".join(words), c, truncation="only_second", max_length=length)
        assert len(enc["input_ids"]) == length, (len(enc["input_ids"]), length)
        seq = enc.sequence_ids()
        first = next(i for i, s in enumerate(seq) if s == 1)
        rows.append((enc["input_ids"], first))
    n = max(LENGTHS)
    ids = np.full((3, n), hf_tok.pad_token_id, np.int32)
    seg = np.zeros((3, n), np.int32)
    mask = np.zeros((3, n), np.int32)
    for b, (row, first) in enumerate(rows):
        ids[b, :len(row)] = row
        seg[b, first:len(row)] = 1
        mask[b, :len(row)] = 1
    return {"input_ids": ids, "segment_ids": seg, "input_mask": mask}


def hf_feed(batch, token_types: bool) -> dict[str, np.ndarray]:
    feed = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["input_mask"].astype(np.int64)}
    if token_types:
        feed["token_type_ids"] = batch["segment_ids"].astype(np.int64)
    return feed


def torch_logits(model, feed) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return out.start_logits.numpy().astype(np.float32), out.end_logits.numpy().astype(np.float32)


def export(model, feed, path: Path, dynamo: bool) -> None:
    names = list(feed)
    args = tuple(torch.from_numpy(feed[n]) for n in names)
    if dynamo:
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        kw = {"dynamic_shapes": {n: {0: batch, 1: seq} for n in names}}
    else:
        axes = {0: "batch", 1: "sequence"}
        kw = {"opset_version": 17, "dynamic_axes": {n: axes for n in (*names, "start_logits", "end_logits")}}
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), dynamo=dynamo, input_names=names,
                          output_names=["start_logits", "end_logits"], **kw)
    m = onnx.load(str(path))
    data = path.with_name(path.name + ".data")
    for node in m.graph.node:  # the dynamo exporter's per-node stack traces: dropped, the graph is unchanged
        del node.metadata_props[:]
    onnx.save(m, str(path))
    if data.exists():
        data.unlink()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def ort_logits(path: Path, feed) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(
        ["start_logits", "end_logits"], feed)


def worst(a, b, mask) -> float:
    return max(float(np.max(np.abs(x - y)[mask.astype(bool)])) for x, y in zip(a, b))


def tokenization_cases(hf_tok, pairs) -> list[dict]:
    cases = []
    for q, c in pairs[::4][:6]:
        enc = hf_tok(q, c, return_offsets_mapping=True)
        seq = enc.sequence_ids()
        cases.append({"question": q, "context": c, "input_ids": enc["input_ids"],
                      "sequence_ids": seq, "offsets": [list(o) for o in enc["offset_mapping"]]})
    return cases


def make_family(out: Path, name: str, spec, pairs, seed: int) -> bool:
    config, cls, tok, tok_kwargs, token_types = spec
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    (d / "hf").mkdir(parents=True)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=config.max_position_embeddings, **{
        k: v for k, v in tok_kwargs.items() if k != "tokenizer_class"})
    hf_tok.save_pretrained(str(d / "hf"))
    cfg_path = d / "hf" / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text())
    tcfg["tokenizer_class"] = tok_kwargs["tokenizer_class"]
    cfg_path.write_text(json.dumps(tcfg, indent=2) + "\n")
    if isinstance(tok.model, models.WordPiece):
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        (d / "hf" / "vocab.txt").write_text("".join(w + "\n" for w, _ in vocab), encoding="utf-8")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(d / "hf"))  # reload: what a user's folder gives
    assert hf_tok.is_fast

    batch = reference_batch(hf_tok, pairs)
    feed = hf_feed(batch, token_types)
    report = {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
              "onnxruntime": ort.__version__, "token_type_ids": token_types, "forms": {}}
    ok = True
    reference = None
    for i, (form, (dynamo, attn)) in enumerate(FORMS.items()):
        try:
            model = build(cls, config, seed, attn)
        except ValueError as exc:  # ELECTRA has no SDPA attention in transformers 4.57
            if "does not support an attention implementation" not in str(exc):
                raise
            report["forms"][form] = {"unsupported": str(exc).split(".")[0]}
            print(f"{name}/{form}: not offered by transformers {transformers.__version__}")
            continue
        start, end = torch_logits(model, feed)
        if reference is None:
            reference = (start, end)
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp, safe_serialization=True,
                                      max_shard_size="150KB" if name == "electra" else "50GB")
                for f in Path(tmp).iterdir():
                    if f.suffix in (".safetensors", ".json") and f.name != "generation_config.json":
                        shutil.copyfile(f, d / "hf" / f.name)
        assert np.array_equal(start, reference[0]) or worst((start, end), reference, batch["input_mask"]) < 1e-5
        fdir = d / "forms" / form
        fdir.mkdir(parents=True)
        export(model, feed, fdir / "model.onnx", dynamo)
        for kept in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # what an Optimum export folder has
            shutil.copyfile(d / "hf" / kept, fdir / kept)
        err = worst(ort_logits(fdir / "model.onnx", feed), reference, batch["input_mask"])
        m = onnx.load(str(fdir / "model.onnx"))
        report["forms"][form] = {"exporter": "dynamo" if dynamo else "legacy", "attn_implementation": attn,
                                 "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                                 "inputs": [i.name for i in m.graph.input],
                                 "onnxruntime_vs_torch": err, "bytes": (fdir / "model.onnx").stat().st_size}
        print(f"{name}/{form}: onnxruntime vs torch {err:.2e}, {(fdir / 'model.onnx').stat().st_size / 1e3:.0f} KB")
        ok &= err <= TOLERANCE
    np.savez(d / "reference.npz", **batch, start_logits=reference[0], end_logits=reference[1])
    (d / "tokenization.json").write_text(json.dumps(tokenization_cases(hf_tok, pairs), indent=0) + "\n")
    (d / "versions.json").write_text(json.dumps(report, indent=1) + "\n")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "families")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    texts, pairs = squad_text()
    ok = True
    for i, (name, spec) in enumerate(families(texts).items()):
        if args.only and name not in args.only:
            continue
        ok &= make_family(args.out, name, spec, pairs, SEED + 100 * i)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
