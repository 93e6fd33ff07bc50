"""Surgery of every model family (tests/fixtures/families, scripts/make_family_fixtures.py): RoBERTa, XLM-RoBERTa,
DistilBERT, ELECTRA and cased BERT exported by torch.onnx as users make them (legacy and dynamo exporter, SDPA and
eager attention; ELECTRA has no SDPA in transformers 4.57), for every target, against torch's logits on the valid
tokens of a padded batch made by the model's own tokenizer. segment_ids is fed as bertrt's features make it (1 from
the passage on): families without token types must ignore it. The fused model carries the family, its config and
the tokenizer found beside the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from bertrt.runtimes.onnxruntime import ort_session
from bertrt.surgery.pipeline import run_surgery
from bertrt.surgery.plugin_reference import reference_ops
from onnx.reference import ReferenceEvaluator
from surgery_common import TOL, assert_report_and_artifacts, worst_valid_error

from bertrt.errors import BertrtError
from bertrt.families import get_family
from bertrt.qa.tokenizer import META_TOKENIZER, load_tokenizer, tokenizer_for
from bertrt.qa_contract import load_qa_model, metadata

FIXTURES = Path(__file__).parent / "fixtures" / "families"
FORMS = sorted(FIXTURES.glob("*/forms/*/model.onnx"))
TARGETS = ("ort", "native", "plugins")
OUTPUTS = ["start_logits", "end_logits"]
FAMILY = {"bert-cased": "bert", "roberta": "roberta", "xlm-roberta": "xlm-roberta", "distilbert": "distilbert",
          "electra": "electra"}


def form_id(path: Path) -> str:
    return f"{path.parent.parent.parent.name}/{path.parent.name}"


def fused_logits(path: Path, target: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    if target == "plugins":
        return ReferenceEvaluator(str(path), new_ops=reference_ops(fast_matmul=True)).run(OUTPUTS, feed)
    return ort_session(path, threads=1).run(OUTPUTS, feed)


def test_every_family_and_form_is_covered():
    assert {p.parent.parent.parent.name for p in FORMS} == set(FAMILY)
    assert len(FORMS) == 18  # 4 forms each, ELECTRA 2 (eager only)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", FORMS, ids=form_id)
def test_family_fuses_and_matches_torch(tmp_path, source, target):
    family_dir = source.parent.parent.parent
    out = tmp_path / f"model.{target}.onnx"
    if target == "plugins" and family_dir.name in ("roberta", "xlm-roberta"):  # layer_norm_eps 1e-5
        with pytest.raises(BertrtError, match="no LayerNorm epsilon") as exc:
            run_surgery(source, out, target)
        assert "\n" not in str(exc.value) and "1e-05" in str(exc.value) and not out.exists()
        return
    report = run_surgery(source, out, target)
    assert_report_and_artifacts(out, report, target, layers=2)
    ref = np.load(family_dir / "reference.npz")
    feed = {k: ref[k] for k in ("input_ids", "segment_ids", "input_mask")}
    feed["input_ids"] = np.where(feed["input_mask"] == 1, feed["input_ids"], 0)  # bertrt pads with 0
    error = worst_valid_error(fused_logits(out, target, feed), (ref["start_logits"], ref["end_logits"]),
                              feed["input_mask"])
    print(f"fused vs torch: {form_id(source)} {target} worst {error:.2e}")  # docs/families.md (pytest -s)
    assert error <= TOL
    model, cfg = load_qa_model(out)
    family = get_family(FAMILY[family_dir.name])
    assert cfg.family == family.name and cfg.token_types == family.token_types
    assert cfg.position_offset == (2 if family.name in ("roberta", "xlm-roberta") else 0)
    assert cfg.embedding_size == (32 if family.name == "electra" else 0)
    # the tokenizer travelled from the export's folder (tokenizer.json is not beside the form: the family's hf/)
    if META_TOKENIZER in metadata(model):
        assert tokenizer_for(out).get_vocab() == load_tokenizer(family_dir / "hf").get_vocab()
    if not family.token_types:  # segment_ids all 0 gives the same logits: it is ignored
        again = fused_logits(out, target, dict(feed, segment_ids=np.zeros_like(feed["segment_ids"])))
        assert all(np.array_equal(a, b) for a, b in zip(again, fused_logits(out, target, feed)))
