"""BERT (uncased and cased: the case comes from the tokenizer, not the weights)."""

from bertrt.families.base import ABSOLUTE, Family, TokenizerSpec, bert_weight_map

FAMILY = Family(
    name="bert", model_types=("bert",), architectures=("BertForQuestionAnswering",),
    hf_inputs=("input_ids", "attention_mask", "token_type_ids"), token_types=True, position_scheme=ABSOLUTE,
    embedding_projection=False, weight_prefix="bert.", weight_map=bert_weight_map,
    tokenizer=TokenizerSpec("wordpiece", "[CLS]", "[SEP]", "[PAD]", pair_seps=1, lowercase=True))
