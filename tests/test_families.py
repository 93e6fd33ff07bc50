"""The model-family seam (bertrt/families): each family's declaration, config normalisation from the committed
Hugging Face folders (tests/fixtures/families, scripts/make_family_fixtures.py), one-line refusals of other
families, and that adding a family is one module + one registry line."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

import bertrt.families as families
from bertrt.errors import BertrtError
from bertrt.families import ABSOLUTE, PADDING_OFFSET, family_of_config, get_family, register
from bertrt.families.base import Family, TokenizerSpec, bert_weight_map

FIXTURES = Path(__file__).parent / "fixtures" / "families"
NAMES = ("bert-cased", "roberta", "xlm-roberta", "distilbert", "electra")


def hf_config(name: str) -> dict:
    return json.loads((FIXTURES / name / "hf" / "config.json").read_text())


def test_registry_covers_the_five_families():
    assert set(families.FAMILIES) == {"bert", "roberta", "xlm-roberta", "distilbert", "electra"}
    assert get_family("xlm_roberta").name == "xlm-roberta" and get_family("camembert").name == "roberta"
    with pytest.raises(FrozenInstanceError):
        get_family("bert").token_types = False


@pytest.mark.parametrize("name", NAMES)
def test_config_normalisation_from_hugging_face_folders(name):
    raw = hf_config(name)
    family = family_of_config(raw)
    cfg = family.normalize_config(raw)
    assert cfg.family == family.name and cfg.num_hidden_layers == 2 and cfg.hidden_size == 64
    assert cfg.num_attention_heads == 4 and cfg.intermediate_size == 128 and cfg.vocab_size == 400
    assert cfg.token_types == family.token_types == (name in ("bert-cased", "electra"))
    if family.position_scheme == PADDING_OFFSET:  # RoBERTa: rows 0..pad are never used by real tokens
        assert cfg.position_offset == raw["pad_token_id"] + 1 == 2
        assert cfg.max_position_embeddings == raw["max_position_embeddings"] - 2
    else:
        assert family.position_scheme == ABSOLUTE and cfg.position_offset == 0
    assert cfg.embedding_size == (32 if name == "electra" else 0)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg  # the stamped form reads back


def test_distilbert_config_keys_and_weight_names():
    d = get_family("distilbert")
    cfg = d.normalize_config(hf_config("distilbert"))
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.gelu) == (64, 128, "erf")
    assert d.google_name("distilbert.transformer.layer.1.sa_layer_norm.weight") == (
        "bert/encoder/layer_1/attention/output/LayerNorm/gamma", False)
    assert d.google_name("distilbert.transformer.layer.0.ffn.lin1.weight") == (
        "bert/encoder/layer_0/intermediate/dense/kernel", True)
    assert get_family("electra").google_name("electra.embeddings_project.weight") == (
        "bert/embeddings/project/kernel", True)
    assert get_family("roberta").google_name("roberta.encoder.layer.0.output.LayerNorm.bias") == (
        "bert/encoder/layer_0/output/LayerNorm/beta", False)


@pytest.mark.parametrize(("model_type", "missing"), [
    ("deberta-v2", "relative-position"), ("albert", "parameter sharing"), ("modernbert", "rotary"),
    ("gpt2", "no bertrt family module declares it")])
def test_other_families_are_refused_in_one_line(model_type, missing):
    with pytest.raises(BertrtError) as exc:
        family_of_config({"model_type": model_type})
    message = str(exc.value)
    assert "\n" not in message and repr(model_type) in message and missing in message and "roberta" in message


def test_adding_a_family_is_one_module_and_one_registry_line(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    with pytest.raises(BertrtError):
        get_family("fakebert")
    fake = register(Family(  # what a module bertrt/families/fakebert.py would declare
        name="fakebert", model_types=("fakebert",), architectures=("FakeBertForQuestionAnswering",),
        hf_inputs=("input_ids", "attention_mask"), token_types=False, position_scheme=PADDING_OFFSET,
        embedding_projection=False, weight_prefix="fake.", weight_map=bert_weight_map,
        tokenizer=TokenizerSpec("bpe", "<s>", "</s>", "<pad>", pair_seps=2, lowercase=False)))
    assert get_family("fakebert") is fake
    cfg = fake.normalize_config(dict(hf_config("roberta"), model_type="fakebert"))
    assert cfg.family == "fakebert" and cfg.position_offset == 2 and not cfg.token_types
    with pytest.raises(ValueError, match="already belong"):
        register(replace(fake, name="other", model_types=("roberta",)))
