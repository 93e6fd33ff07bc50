#!/usr/bin/env python3
"""Generate small random-weight Hugging Face BERT QA fixtures for bertrt's tests.

CI has no torch, so the outputs of this script are committed under tests/fixtures/hf/.
Run it (in a virtualenv with torch, transformers 5, safetensors, onnx, onnxruntime) as:

    /work/hfvenv/bin/python scripts/make_hf_fixtures.py --out tests/fixtures/hf

For every config below it writes ``<out>/<name>/``:

  config.json        HF ``BertConfig`` as written by ``save_pretrained``
  model.safetensors  HF ``BertForQuestionAnswering`` weights (``save_pretrained(safe_serialization=True)``)
  vocab.txt          ``vocab_size`` lines; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then made-up pieces
  model.onnx         ``torch.onnx.export(..., dynamo=False, opset_version=17)`` exactly as a user would do it
                     (int64 inputs input_ids/attention_mask/token_type_ids, outputs start_logits/end_logits,
                     dynamic batch and sequence axes, self-contained: no external data)
  reference.npz      int32 ``input_ids``, ``segment_ids``, ``input_mask`` (batch 3 x seq 24, different padding)
                     and torch's float32 ``start_logits``, ``end_logits`` (3 x 24) for them

The script checks that onnxruntime reproduces torch's logits on model.onnx (non-padded positions, max abs
error <= 1e-4) and that reloading the safetensors checkpoint reproduces them exactly; it exits non-zero otherwise.

``--forms DIR`` instead writes the export forms users produce today, for the installed transformers version, into
``DIR/transformers-<version>/<exporter>-<attention>/`` (one small model, FORM_CONFIG): ``legacy`` is
``dynamo=False, opset_version=17``, ``dynamo`` is ``dynamo=True`` with torch's default opset and
``dynamic_shapes``; attention ``sdpa`` is transformers' default, ``eager`` is ``attn_implementation="eager"``.
Each directory holds config.json, model.onnx (self-contained), reference.npz (as above) and versions.json (torch,
transformers, onnxscript, onnx, opset). It also writes ``DIR/transformers-<version>/roberta/`` (a tiny
RobertaForQuestionAnswering, legacy exporter) for the "unknown BERT variant" test. Run it once per transformers
version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from transformers import BertConfig, BertForQuestionAnswering, RobertaConfig, RobertaForQuestionAnswering

SEED = 20240611
SEQ_LEN = 24  # batch of 3 (len(LENGTHS))
# Non-padded lengths of the three reference sequences and the length of their first segment
# ([CLS] question [SEP]); the rest up to the length is the second segment (context [SEP]).
LENGTHS = (24, 17, 9)
FIRST_SEGMENT = (8, 6, 4)
ORT_TOLERANCE = 1e-4

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4

CONFIGS = {
    "hf-l2-h64-a2": dict(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=256,
        vocab_size=512,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
    ),
    "hf-l4-h128-a4": dict(
        num_hidden_layers=4,
        hidden_size=128,
        num_attention_heads=4,
        intermediate_size=256,
        vocab_size=512,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_act="gelu",
    ),
    # max_position_embeddings 128 (not 512) keeps the directory smaller and makes sure nothing
    # downstream assumes a 512-row position table.
    "hf-l2-h128-a2-tanh": dict(
        num_hidden_layers=2,
        hidden_size=128,
        num_attention_heads=2,
        intermediate_size=512,
        vocab_size=512,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_act="gelu_new",
    ),
}

KEEP_FILES = ("config.json", "model.safetensors")

# The export-form fixtures: small (about 300 KB each) so that every form x transformers version can be committed.
# The eager forms use torch's tanh GELU (F.gelu(approximate="tanh"), which the dynamo exporter emits as one Gelu
# op) so both GELU forms are covered in every exporter.
FORM_CONFIG = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                   vocab_size=128, max_position_embeddings=64, type_vocab_size=2)
FORMS = {  # name -> (dynamo, attn_implementation, hidden_act)
    "legacy-sdpa": (False, "sdpa", "gelu"),
    "legacy-eager": (False, "eager", "gelu_pytorch_tanh"),
    "dynamo-sdpa": (True, "sdpa", "gelu"),
    "dynamo-eager": (True, "eager", "gelu_pytorch_tanh"),
}
ROBERTA_CONFIG = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                      vocab_size=128, max_position_embeddings=48, type_vocab_size=2)  # 2: the shared inputs have segments 0 and 1


def make_vocab(vocab_size: int) -> list[str]:
    """A made-up lowercase WordPiece vocabulary of exactly ``vocab_size`` entries.

    Ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then single letters, ``##``+letter, digits, some
    punctuation (so any lowercase ASCII text tokenizes without [UNK]), a few common words, and
    filler pieces ``tokN`` / ``##xN`` (N = the id) up to ``vocab_size``.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += letters
    words += ["##" + c for c in letters]
    words += [str(d) for d in range(10)] + ["##" + str(d) for d in range(10)]
    words += list(".,?!'\"-:;()")
    words += [
        "the", "an", "of", "and", "in", "to", "is", "was", "what", "who", "when", "where",
        "which", "how", "did", "does", "on", "at", "by", "for", "with", "from", "it", "he", "she",
        "they", "born", "city", "year", "name", "river", "capital", "world", "first",
        "##ed", "##ing", "##er", "##ly",
    ]
    assert len(words) == len(set(words))
    i = len(words)
    while len(words) < vocab_size:
        words.append(f"##x{i}" if i % 3 == 0 else f"tok{i}")
        i += 1
    assert len(words) == vocab_size
    assert words[PAD_ID] == "[PAD]" and words[UNK_ID] == "[UNK]" and words[CLS_ID] == "[CLS]"
    assert words[SEP_ID] == "[SEP]" and words[MASK_ID] == "[MASK]"
    return words


def make_inputs(
    vocab_size: int, seed: int, lengths=LENGTHS, first_segment=FIRST_SEGMENT, seq_len: int = SEQ_LEN
) -> dict[str, np.ndarray]:
    """Batch of 3 x 24: [CLS] q.. [SEP] | c.. [SEP] | [PAD].. ; mask 1s then 0s; types 0, then 1, pads 0."""
    rng = np.random.default_rng(seed)
    batch = len(lengths)
    input_ids = np.full((batch, seq_len), PAD_ID, dtype=np.int32)
    segment_ids = np.zeros((batch, seq_len), dtype=np.int32)
    input_mask = np.zeros((batch, seq_len), dtype=np.int32)
    for b, (length, first) in enumerate(zip(lengths, first_segment)):
        ids = rng.integers(MASK_ID + 1, vocab_size, size=length)
        ids[0] = CLS_ID
        ids[first - 1] = SEP_ID
        ids[length - 1] = SEP_ID
        input_ids[b, :length] = ids
        segment_ids[b, first:length] = 1
        input_mask[b, :length] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask}


def build_model(name: str, params: dict, seed: int, attn: str = "eager", roberta: bool = False):
    torch.manual_seed(seed)
    config = (RobertaConfig if roberta else BertConfig)(
        **params,
        initializer_range=0.2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        layer_norm_eps=1e-12,
        pad_token_id=PAD_ID,
    )
    model = (RobertaForQuestionAnswering if roberta else BertForQuestionAnswering)._from_config(
        config, attn_implementation=attn)
    # Random init gives LayerNorm gamma=1/beta=0 and all biases 0: randomize them so that a
    # mapping bug (e.g. gamma/beta swapped, a bias dropped) changes the logits.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "LayerNorm.bias" in pname or pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.eval()
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model


def torch_logits(model, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(feeds["input_ids"]).long(),
            attention_mask=torch.from_numpy(feeds["input_mask"]).long(),
            token_type_ids=torch.from_numpy(feeds["segment_ids"]).long(),
        )
    return out.start_logits.numpy().astype(np.float32), out.end_logits.numpy().astype(np.float32)


def export_onnx(model, feeds: dict[str, np.ndarray], path: Path, dynamo: bool = False) -> None:
    args = (
        torch.from_numpy(feeds["input_ids"]).long(),
        torch.from_numpy(feeds["input_mask"]).long(),
        torch.from_numpy(feeds["segment_ids"]).long(),
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if dynamo:  # torch's default opset; dynamic dims the way torch.export wants them
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = {"dynamic_shapes": {name: {0: batch, 1: seq} for name in names}}
    else:
        axes = {0: "batch", 1: "sequence"}
        shapes = {"opset_version": 17,
                  "dynamic_axes": {name: axes for name in (*names, "start_logits", "end_logits")}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,  # forward(input_ids, attention_mask, token_type_ids, ...) in transformers 5
            str(path),
            dynamo=dynamo,
            input_names=names,
            output_names=["start_logits", "end_logits"],
            **shapes,
        )
    # Make the file self-contained: the dynamo exporter writes the weights as external data (model.onnx.data).
    # It also stores the Python stack trace of every node as node metadata (40 % of a small file): dropped, the
    # graph itself is unchanged.
    m = onnx.load(str(path))
    data = path.with_name(path.name + ".data")
    if data.exists():
        for node in m.graph.node:
            del node.metadata_props[:]
        onnx.save(m, str(path))
        data.unlink()
        m = onnx.load(str(path))
    for init in m.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise SystemExit(f"{path}: initializer {init.name} uses external data")
    onnx.checker.check_model(m, full_check=True)
    stray = [p for p in path.parent.iterdir() if p.name not in ("model.onnx", *KEEP_FILES, "vocab.txt")]
    if stray:
        raise SystemExit(f"unexpected files next to {path}: {stray}")


def ort_logits(path: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    start, end = sess.run(
        ["start_logits", "end_logits"],
        {
            "input_ids": feeds["input_ids"].astype(np.int64),
            "attention_mask": feeds["input_mask"].astype(np.int64),
            "token_type_ids": feeds["segment_ids"].astype(np.int64),
        },
    )
    return start, end


def max_err_on_valid(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)[mask.astype(bool)]))


def other_shapes_error(model, path: Path, vocab_size: int, seed: int) -> float:
    """The graph must not have baked in the export shapes: worst onnxruntime vs torch error on other batch sizes /
    sequence lengths, including a batch without any padding."""
    worst = 0.0
    for lengths, first, seq_len in (((40, 13), (9, 5), 40), ((7,), (3,), 7)):
        f2 = make_inputs(vocab_size, seed + 7, lengths, first, seq_len)
        ts, te = torch_logits(model, f2)
        os2, oe2 = ort_logits(path, f2)
        err = max(max_err_on_valid(os2, ts, f2["input_mask"]), max_err_on_valid(oe2, te, f2["input_mask"]))
        print(f"  onnxruntime vs torch, batch {len(lengths)} x seq {seq_len}: max abs err {err:.3e}")
        worst = max(worst, err)
    return worst


def mask_effect(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """How much the exported graph's logits change when the padding is unmasked (0: it ignores attention_mask)."""
    unmasked = dict(feeds, input_mask=np.ones_like(feeds["input_mask"]))
    return max(float(np.max(np.abs(a - b))) for a, b in zip(ort_logits(path, feeds), ort_logits(path, unmasked)))


def make_form_fixture(out_root: Path, name: str, dynamo: bool, attn: str, params: dict, seed: int,
                      roberta: bool = False) -> bool:
    """One export form of one small model: config.json, model.onnx, reference.npz, versions.json."""
    d = out_root / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model = build_model(name, params, seed, attn=attn, roberta=roberta)
    feeds = make_inputs(params["vocab_size"], seed)
    start, end = torch_logits(model, feeds)
    export_onnx(model, feeds, d / "model.onnx", dynamo=dynamo)
    model.config.to_json_file(str(d / "config.json"))
    mask = feeds["input_mask"]
    ort_err = max(max_err_on_valid(a, b, mask) for a, b in zip(ort_logits(d / "model.onnx", feeds), (start, end)))
    print(f"{out_root.name}/{name}:")
    print(f"  onnxruntime vs torch, reference batch 3 x seq {SEQ_LEN}: max abs err {ort_err:.3e}")
    ort_err = max(ort_err, other_shapes_error(model, d / "model.onnx", params["vocab_size"], seed))
    effect = mask_effect(d / "model.onnx", feeds)
    print(f"  logits change when the padding is unmasked: {effect:.3e}" + (" (the export IGNORES attention_mask)"
                                                                          if effect == 0.0 else ""))
    np.savez(d / "reference.npz", input_ids=feeds["input_ids"], segment_ids=feeds["segment_ids"],
             input_mask=mask, start_logits=start, end_logits=end)
    exported = onnx.load(str(d / "model.onnx"), load_external_data=False)
    import onnxscript

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "onnxscript": onnxscript.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                "exporter": "dynamo" if dynamo else "legacy", "attn_implementation": attn,
                "hidden_act": params.get("hidden_act", "gelu"),
                "opset": next(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx")),
                "onnxruntime_vs_torch_max_abs_err": ort_err, "mask_effect": effect}
    (d / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"  WORST onnxruntime vs torch max abs err (non-padded positions, all batches): {ort_err:.3e}; "
          f"{size / 1e3:.0f} KB")
    # An export that ignores the mask is kept (it is a form users produce); its padded rows differ from torch.
    ok = ort_err <= ORT_TOLERANCE or effect == 0.0
    if not ok:
        print(f"  FAILED (tolerance {ORT_TOLERANCE})", file=sys.stderr)
    return ok


def make_forms(out_root: Path) -> bool:
    """Every export form (FORMS) for the installed transformers, and the RoBERTa export, under
    out_root/transformers-<version>/."""
    root = out_root / f"transformers-{transformers.__version__}"
    ok = True
    for i, (name, (dynamo, attn, act)) in enumerate(FORMS.items()):
        ok &= make_form_fixture(root, name, dynamo, attn, dict(FORM_CONFIG, hidden_act=act), SEED + 100 * i)
    ok &= make_form_fixture(root, "roberta", False, "eager", dict(ROBERTA_CONFIG, hidden_act="gelu"), SEED,
                            roberta=True)
    return ok


def make_fixture(out_root: Path, name: str, params: dict, seed: int) -> bool:
    d = out_root / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    model = build_model(name, params, seed)
    feeds = make_inputs(params["vocab_size"], seed)
    start, end = torch_logits(model, feeds)

    # --- HF checkpoint: keep only config.json + model.safetensors -------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        written = sorted(os.listdir(tmp))
        for fname in KEEP_FILES:
            if fname not in written:
                raise SystemExit(f"save_pretrained did not write {fname} (wrote {written})")
            shutil.copyfile(os.path.join(tmp, fname), d / fname)
        dropped = [f for f in written if f not in KEEP_FILES]
        if dropped:
            print(f"  dropped files written by save_pretrained: {dropped}")
    (d / "vocab.txt").write_text("\n".join(make_vocab(params["vocab_size"])) + "\n", encoding="utf-8")

    # Round trip: the checkpoint must reproduce the logits (guards against unsaved tied/buffer state).
    reloaded = BertForQuestionAnswering.from_pretrained(str(d), attn_implementation="eager").eval()
    rs, re_ = torch_logits(reloaded, feeds)
    rt_err = max(float(np.max(np.abs(rs - start))), float(np.max(np.abs(re_ - end))))

    # --- ONNX (legacy TorchScript exporter) ------------------------------------------------------
    export_onnx(model, feeds, d / "model.onnx")
    os_, oe = ort_logits(d / "model.onnx", feeds)
    mask = feeds["input_mask"]
    ort_err = max(max_err_on_valid(os_, start, mask), max_err_on_valid(oe, end, mask))
    print(f"{name}:")
    print(f"  onnxruntime vs torch, reference batch 3 x seq {SEQ_LEN}: max abs err {ort_err:.3e}")

    ort_err = max(ort_err, other_shapes_error(model, d / "model.onnx", params["vocab_size"], seed))

    np.savez(
        d / "reference.npz",
        input_ids=feeds["input_ids"],
        segment_ids=feeds["segment_ids"],
        input_mask=feeds["input_mask"],
        start_logits=start,
        end_logits=end,
    )

    sizes = {p.name: p.stat().st_size for p in sorted(d.iterdir())}
    total = sum(sizes.values())
    valid = mask.astype(bool)
    print(
        f"  logits |max| start {np.abs(start[valid]).max():.3f} end {np.abs(end[valid]).max():.3f}, "
        f"std {start[valid].std():.3f}"
    )
    print(f"  safetensors reload max abs err: {rt_err:.3e}")
    print(f"  WORST onnxruntime vs torch max abs err (non-padded positions, all batches): {ort_err:.3e}")
    print("  files: " + ", ".join(f"{k} {v/1e6:.3f} MB" for k, v in sizes.items()) + f"; total {total/1e6:.3f} MB")
    ok = ort_err <= ORT_TOLERANCE and rt_err == 0.0
    if not ok:
        print(f"  FAILED (tolerance {ORT_TOLERANCE})", file=sys.stderr)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/hf"))
    ap.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="generate only these fixtures")
    ap.add_argument("--forms", type=Path, help="write the export-form fixtures for the installed transformers "
                    "under this directory instead")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}")
    if args.forms:
        return 0 if make_forms(args.forms) else 1
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    for i, (name, params) in enumerate(CONFIGS.items()):
        if args.only and name not in args.only:
            continue
        ok &= make_fixture(args.out, name, params, SEED + 1000 * i)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
