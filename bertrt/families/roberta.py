"""RoBERTa: byte-level BPE, no token types (one type row, added to every token), positions offset by
padding_idx + 1 (HF computes cumsum(ids != pad) * (ids != pad) + pad: s + pad + 1 on real tokens)."""

from bertrt.families.base import PADDING_OFFSET, Family, TokenizerSpec, bert_weight_map

FAMILY = Family(
    name="roberta", model_types=("roberta", "camembert"), architectures=("RobertaForQuestionAnswering",),
    hf_inputs=("input_ids", "attention_mask"), token_types=False, position_scheme=PADDING_OFFSET,
    embedding_projection=False, weight_prefix="roberta.", weight_map=bert_weight_map,
    tokenizer=TokenizerSpec("bpe", "<s>", "</s>", "<pad>", pair_seps=2, lowercase=False))
