"""ELECTRA (the discriminator): BERT's network with a Linear projection embedding_size -> hidden_size after the
embedding LayerNorm when embedding_size < hidden_size."""

from bertrt.families.base import ABSOLUTE, Family, TokenizerSpec, bert_weight_map

FAMILY = Family(
    name="electra", model_types=("electra",), architectures=("ElectraForQuestionAnswering",),
    hf_inputs=("input_ids", "attention_mask", "token_type_ids"), token_types=True, position_scheme=ABSOLUTE,
    embedding_projection=True, weight_prefix="electra.", weight_map=bert_weight_map,
    tokenizer=TokenizerSpec("wordpiece", "[CLS]", "[SEP]", "[PAD]", pair_seps=1, lowercase=True))
