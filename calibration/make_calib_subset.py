"""Make the shipped calibration subset: `python -m bertrt.calibration.make_calib_subset [--train PATH]`.

Takes the first `--questions` (default 600, what ships) examples of the seeded shuffle of SQuAD v1.1 *train* (the same shuffle
`calib_data` uses) and writes them, grouped by article and paragraph, as SQuAD JSON (gzip, deterministic bytes)
to calibration/data/squad-train-calib.json.gz.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from bertrt.calibration.calib_data import (
    DEFAULT_CALIB_JSON,
    DEFAULT_SEED,
    shuffled_examples,
)

from bertrt.artifacts import atomic_output
from bertrt.qa.squad_data import load_squad

# The shipped file holds 600 questions: the defaults below reproduce it byte for byte (gzip mtime 0, no file
# name; tests/test_calib_subset.py compares the sha256).
DEFAULT_QUESTIONS = 600
DEFAULT_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "train-v1.1.reconstructed.json.gz"


def make_subset(train: Path, output: Path, questions: int = DEFAULT_QUESTIONS, seed: int = DEFAULT_SEED) -> dict:

    chosen = {e.qas_id for e in shuffled_examples(train, seed)[:questions]}
    _, dataset = load_squad(train)
    data = []
    for article in dataset["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if qa["id"] in chosen]
            if qas:
                paragraphs.append({"context": paragraph["context"], "qas": qas})
        if paragraphs:
            data.append({"title": article.get("title", ""), "paragraphs": paragraphs})
    subset = {"version": "1.1", "source": f"SQuAD v1.1 train ({Path(train).name}): first {questions} questions of "
              f"a shuffle with seed {seed}; made by bertrt.calibration.make_calib_subset", "data": data}
    raw = json.dumps(subset, ensure_ascii=False, separators=(",", ":")).encode()
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw)
    return {"questions": len(chosen), "articles": len(data), "bytes": output.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--output", type=Path, default=DEFAULT_CALIB_JSON)
    parser.add_argument("--questions", type=int, default=DEFAULT_QUESTIONS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    print(json.dumps(make_subset(args.train, args.output, args.questions, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
