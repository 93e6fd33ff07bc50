"""The fusion report: fused blocks per type against the counts the model's config implies. Any shortfall is an
error naming the layer and the part of the pattern that did not match: surgery never writes a partial fusion."""

from __future__ import annotations

from bertrt.surgery.match_model import ModelMatches
from bertrt.surgery.pattern import MatchFailure

from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig

BLOCKS = ("embedding", "skip_layernorm", "attention", "gelu")


def expected_counts(cfg: BertConfig) -> dict[str, int]:
    layers = cfg.num_hidden_layers
    return {"embedding": 1, "skip_layernorm": 2 * layers, "attention": layers, "gelu": layers}


def check_matches(matches: ModelMatches, source: str, cfg: BertConfig | None) -> None:
    """Raise (before anything is emitted) if any expected block did not match, or matched with other sizes than
    the stamped config's."""
    failures = matches.failures()
    if not failures and cfg is not None:
        emb = matches.embedding
        width = cfg.embedding_size or cfg.hidden_size  # ELECTRA's embeddings are narrower than the encoder
        if emb.word_embeddings.shape != (cfg.vocab_size, width):
            failures.append(MatchFailure("embeddings", "word embeddings", f"table {list(emb.word_embeddings.shape)} "
                                         f"is not [{cfg.vocab_size}, {width}] as the config says"))
        for layer in matches.layers:
            if layer.attention.num_heads != cfg.num_attention_heads:
                failures.append(MatchFailure(f"layer {layer.index}", "attention head split",
                                             f"{layer.attention.num_heads} heads, the config says "
                                             f"{cfg.num_attention_heads}"))
    if failures:
        shown = "; ".join(f.message() for f in failures[:3])
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        raise BertrtError(f"{source}: not fused, {len(failures)} block(s) did not match: {shown}{more}")


def build_report(cfg: BertConfig, fused: dict[str, int], target: str) -> dict:
    """The report dict (the JSON beside the output); raises if the emitter's counts differ from the expected."""
    expected = expected_counts(cfg)
    report = {"target": target, "num_hidden_layers": cfg.num_hidden_layers,
              "blocks": {name: {"fused": fused.get(name, 0), "expected": expected[name]} for name in BLOCKS}}
    short = [f"{name} {row['fused']}/{row['expected']}" for name, row in report["blocks"].items()
             if row["fused"] != row["expected"]]
    if short:
        raise BertrtError(f"fusion for target {target!r} is incomplete: {', '.join(short)}")
    return report


def format_report(report: dict) -> str:
    lines = [f"fusion report (target {report['target']}, {report['num_hidden_layers']} layers)",
             f"  {'block':<16}{'fused':>7}{'expected':>10}"]
    for name, row in report["blocks"].items():
        lines.append(f"  {name:<16}{row['fused']:>7}{row['expected']:>10}")
    if "attention_mask" in report:
        lines.append(f"  attention mask: {report['attention_mask']}")
    return "\n".join(lines)
