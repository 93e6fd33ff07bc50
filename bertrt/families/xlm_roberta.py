"""XLM-RoBERTa: RoBERTa's network with a SentencePiece (Unigram) tokenizer."""

from dataclasses import replace

from bertrt.families.base import TokenizerSpec
from bertrt.families.roberta import FAMILY as ROBERTA

FAMILY = replace(ROBERTA, name="xlm-roberta", model_types=("xlm-roberta",),
                 architectures=("XLMRobertaForQuestionAnswering",),
                 tokenizer=TokenizerSpec("unigram", "<s>", "</s>", "<pad>", pair_seps=2, lowercase=False))
