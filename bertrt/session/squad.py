"""SQuAD evaluation (`bertrt squad`, `QASession.squad`): run a QA model over a SQuAD file, write predictions.json and
its EM/F1 beside it."""

from __future__ import annotations

import time
from pathlib import Path

from bertrt.session.answering import SquadParams, answer
from bertrt.runtimes import QABackend
from bertrt.qa.squad_data import detect_version, load_squad, select_examples
from bertrt.qa.squad_metrics import evaluate

from bertrt.artifacts import atomic_outputs, check_outputs, sha256_file, write_json


def eval_path(predictions: Path) -> Path:
    return predictions.with_name(predictions.stem + ".eval.json")


def na_probs_path(predictions: Path) -> Path:
    return predictions.with_name(predictions.stem + ".na_probs.json")


def squad_outputs(predictions: Path) -> list[Path]:
    """Every file `run_squad` may write (na_probs for SQuAD v2 only), for `check_outputs`."""
    return [predictions, eval_path(predictions), na_probs_path(predictions)]


def _subset(data: list[dict], qids: set[str]) -> list[dict]:
    """The dataset restricted to the questions that were run (so --limit scores only those)."""
    articles = []
    for article in data:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if qa["id"] in qids]
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return articles


def run_squad(backend: QABackend, tokenizer, squad_json: Path, output: Path, params: SquadParams,
              batch_size: int, limit: int | None = None, null_score_diff_threshold: float = 0.0,
              progress: bool = True, inputs: tuple[Path, ...] = ()) -> dict:
    """Answer every question of `squad_json` (the first `limit`), write `output` (predictions), its .eval.json and,
    for SQuAD v2, its .na_probs.json; return the report. Outputs that would overwrite `squad_json` or one of
    `inputs` (the model and vocabulary files) are refused before any work."""
    check_outputs(squad_outputs(output), [squad_json, *inputs])
    examples, dataset = load_squad(squad_json)
    version = detect_version(dataset)
    examples = select_examples(examples, limit)
    t0 = time.perf_counter()
    result = answer(backend, tokenizer, examples, params, batch_size, truncate_question=True, progress=progress,
                    version_2=version == "2.0", null_score_diff_threshold=null_score_diff_threshold,
                    keep_nbest=False)  # only the answers are written
    wall = time.perf_counter() - t0
    predictions = {ex.qas_id: a.text for ex, a in zip(examples, result.answers)}
    na_probs = None
    if version == "2.0":  # the official v2 script takes a no-answer score per question; ours is the null odds
        na_probs = {ex.qas_id: (a.null_score_diff if a.null_score_diff is not None else 0.0)
                    for ex, a in zip(examples, result.answers)}
    extra = {"na_probs": na_probs} if na_probs is not None else {}
    scores = evaluate(_subset(dataset["data"], set(predictions)), predictions, version, **extra)
    report = {
        "squad_version": version,
        "squad_json": str(squad_json),
        "squad_sha256": sha256_file(squad_json),
        "questions": len(examples),
        "features": len(result.features),
        "scores": scores,
        "wall_seconds": round(wall, 2),
        "model_seconds": round(result.seconds, 2),
        # overlaps model_seconds on a bucketed backend; summed over the workers when made in processes
        "feature_seconds": round(result.feature_seconds, 2),
        "postprocess_seconds": round(result.post_seconds, 2),
        # Two clocks: features per second of model time (the backend's own calls) and end to end (tokenizing,
        # windows, post-processing and scoring included).
        "features_per_second": round(len(result.features) / result.seconds, 2) if result.seconds else None,
        "wall_features_per_second": round(len(result.features) / wall, 2) if wall else None,
        "backend": backend.description,
        "batch_size": batch_size,
        "params": params.__dict__,
    }
    files = {output: predictions, eval_path(output): report}
    if na_probs is not None:
        files[na_probs_path(output)] = na_probs
    with atomic_outputs(*files) as temporaries:
        for tmp, data in zip(temporaries, files.values()):
            write_json(tmp, data)
    return report


def summary(report: dict) -> str:
    s = report["scores"]
    em, f1 = (s["exact_match"], s["f1"]) if "exact_match" in s else (s["exact"], s["f1"])
    other = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()
                      if k not in ("exact_match", "f1", "exact", "total"))
    return (f"SQuAD v{report['squad_version']}: {report['questions']} questions, {report['features']} features: "
            f"EM {em:.2f}  F1 {f1:.2f}" + (f"  ({other})" if other else "") + "\n"
            f"  end to end: {report['wall_seconds']:.1f} s, {_rate(report.get('wall_features_per_second'))} "
            f"features/s\n"
            f"  model time: {report['model_seconds']:.2f} s, {_rate(report['features_per_second'])} features/s "
            f"on {report['backend']}")


def _rate(value) -> str:
    return "-" if value is None else f"{value:,.1f}"
