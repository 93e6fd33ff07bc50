"""Every bad input of the hardening issue (and the ones handled before it), through the `bertrt` command: exit code 2,
one line on stderr naming the problem, no output appeared, no temporary left and every input byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from checkpoints import random_weights, write_checkpoint
from conftest import DEV, TENSORRT_PASSAGE, VOCAB, read_dev, require
from test_cli import TINY, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random TF1 checkpoint (Google naming) with its bert_config.json and vocab.txt."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", TINY, random_weights(TINY))


@dataclass
class Workspace:
    """Inputs a careless or hostile user points bertrt at: a link to the shared exported model, a copy of the
    vocab, a two-question SQuAD file, a tiny checkpoint."""
    root: Path
    model: Path  # symlink to the session's embedded export
    vocab: Path
    squad: Path
    ckpt: Path


@pytest.fixture()
def ws(tmp_path, embedded_onnx, tiny_checkpoint) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    model = root / "model.onnx"
    model.symlink_to(embedded_onnx)
    vocab = root / "vocab.txt"
    shutil.copy(VOCAB, vocab)
    data = read_dev()
    paragraph = data["data"][0]["paragraphs"][0]
    squad = root / "squad.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": paragraph["context"], "qas": paragraph["qas"][:2]}]}]}))
    ckpt = root / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    return Workspace(root, model, vocab, squad, ckpt)


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and link under `roots` -> its content hash (links: their target), so that any new, missing or
    changed file shows."""
    seen = {}
    for root in roots:
        paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink():
                seen[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                seen[str(p)] = _digest(p)
            elif p.is_dir():
                seen[str(p)] = "dir"
    return seen


def assert_refused(capsys, ws: Workspace, embedded_onnx: Path, argv: list, *needles: str,
                   extra: tuple[Path, ...] = ()) -> str:
    """Run `bertrt argv`: exit 2, one line with `needles`, nothing created, changed or left behind."""
    roots = (ws.root, embedded_onnx, *extra)
    before = snapshot(*roots)
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)
    assert "Traceback" not in err
    assert snapshot(*roots) == before
    return err


def _config(ws: Workspace, text: str) -> Path:
    path = ws.root / "bad.yaml"
    path.write_text(text)
    return path


# --- outputs never destroy inputs (resolved: symlinks, `..`, hard links), checked before any work -----------------
def _dotdot(path: Path) -> Path:
    return path.parent / "sub" / ".." / path.name


OVERWRITES = {
    "squad-output-is-the-squad-file": lambda w: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json",
                                                 w.squad, "--output", _dotdot(w.squad)],
    "squad-output-is-the-model": lambda w: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json", w.squad,
                                            "--output", w.model],
    "squad-report-is-the-squad-file": lambda w: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json",
                                                 w.root / "p.eval.json", "--output", w.root / "p.json"],
    "perf-output-is-the-model": lambda w: ["perf", "--model", w.model, "--batch", 1, "--seq", 8, "--output",
                                           _dotdot(w.model)],
    "quantize-output-is-the-input": lambda w: ["quantize", "--input", w.model, "--output", w.model,
                                               "--precision", "fp16"],
    "quantize-sidecar-is-the-vocab": lambda w: ["quantize", "--input", w.model, "--output", w.root / "vocab.txt.x",
                                                "--precision", "int8", "--vocab", w.root / "vocab.txt.x.json"],
    "surgery-output-is-the-input": lambda w: ["surgery", "--input", w.model, "--output", _dotdot(w.model),
                                              "--target", "ort"],
    "export-output-is-the-index": lambda w: ["export", "--checkpoint", w.ckpt, "--output",
                                             w.ckpt / "model.ckpt.index"],
    "export-output-is-a-data-shard": lambda w: ["export", "--checkpoint", w.ckpt, "--output",
                                                w.ckpt / "model.ckpt.data-00000-of-00001"],
    "export-sidecar-is-the-config": lambda w: ["export", "--checkpoint", w.ckpt, "--output", w.ckpt / "bert_config"],
    "calibrate-cache-is-the-model": lambda w: ["calibrate", "--model", w.model, "--cache", _dotdot(w.model)],
    "calibrate-engine-is-the-calib-json": lambda w: ["calibrate", "--model", w.model, "--calib-json", w.squad,
                                                     "--engine", w.squad],
    "export-output-is-the-vocab": lambda w: ["export", "--checkpoint", w.ckpt, "--output", w.ckpt / "vocab.txt"],
}


@pytest.mark.parametrize("case", list(OVERWRITES))
def test_output_never_overwrites_an_input(capsys, ws, embedded_onnx, case):
    argv = OVERWRITES[case](ws)
    if case == "squad-report-is-the-squad-file":
        shutil.copy(ws.squad, ws.root / "p.eval.json")
    if case == "quantize-sidecar-is-the-vocab":
        shutil.copy(ws.vocab, ws.root / "vocab.txt.x.json")
    assert_refused(capsys, ws, embedded_onnx, argv, "the output would overwrite the input")


def test_output_hard_link_to_an_input_is_refused(capsys, ws, embedded_onnx):
    os.link(ws.squad, ws.root / "hard.json")
    assert_refused(capsys, ws, embedded_onnx, ["squad", "--model", ws.model, "--vocab", ws.vocab, "--squad-json",
                                               ws.squad, "--output", ws.root / "hard.json"], "would overwrite")


def test_one_file_written_twice_is_refused(capsys, ws, embedded_onnx):
    assert_refused(capsys, ws, embedded_onnx, ["perf", "--model", ws.model, "--batch", 1, "--seq", 8,
                                               "--output", ws.root / "perf.csv"], "written twice")


# --- an output that cannot be written: refused before the work ---------------------------------------------------
UNWRITABLE = {
    "squad-output-is-a-directory": (lambda w: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json",
                                               w.squad, "--output", w.root], "output is a directory"),
    "perf-output-in-proc": (lambda w: ["perf", "--model", w.model, "--batch", 1, "--seq", 8, "--output",
                                       "/proc/bertrt-perf.json"], "cannot write there"),
    "surgery-output-under-a-file": (lambda w: ["surgery", "--input", w.model, "--output",
                                               w.vocab / "fused.onnx", "--target", "ort"], "is not a directory"),
    "export-output-is-a-directory": (lambda w: ["export", "--checkpoint", w.ckpt, "--output", w.root],
                                     "output is a directory"),
    "quantize-output-in-proc": (lambda w: ["quantize", "--input", w.model, "--output", "/proc/q.onnx",
                                           "--precision", "fp16"], "cannot write there"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_unwritable_output_is_refused_first(capsys, ws, embedded_onnx, monkeypatch, case):
    # The work must not even start: fail loudly if it does.
    import bertrt.session.answering as answering

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(answering, "make_features", no_work)
    monkeypatch.setattr("bertrt.run.perf.time_backend", no_work)
    monkeypatch.setattr("bertrt.surgery.pipeline.prepare", no_work)
    monkeypatch.setattr("bertrt.export.onnx_export.read_weights", no_work)
    monkeypatch.setattr("bertrt.calibration.quantize.load_qa_model", no_work)
    build, needle = UNWRITABLE[case]
    assert_refused(capsys, ws, embedded_onnx, build(ws), needle)


# --- export ------------------------------------------------------------------------------------------------------
def test_export_opset_beyond_tf2onnx(capsys, ws, embedded_onnx):
    for opset, needle in ((99, "tf2onnx converts up to opset"), (11, "opset 17 or newer")):
        assert_refused(capsys, ws, embedded_onnx, ["export", "--checkpoint", ws.ckpt, "--output",
                                                   ws.root / "m.onnx", "--opset", opset], needle)


def test_export_checkpoint_file_pointing_elsewhere(capsys, ws, embedded_onnx, tmp_path):
    """Refused before writing: the previous model and its sidecar stay as they were (no stale mix)."""
    other = tmp_path / "other"
    shutil.copytree(ws.ckpt, other)
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        (ws.ckpt / name).unlink()
    (ws.ckpt / "checkpoint").write_text(f'model_checkpoint_path: "{other}/model.ckpt"\n')
    (ws.root / "m.onnx").write_bytes(b"previous model")
    (ws.root / "m.onnx.json").write_text('{"previous": "sidecar"}\n')
    assert_refused(capsys, ws, embedded_onnx, ["export", "--checkpoint", ws.ckpt, "--output", ws.root / "m.onnx"],
                   "checkpoint: points to", "outside the checkpoint directory", extra=(other,))


def test_export_missing_config_names_the_flag(capsys, ws, embedded_onnx):
    (ws.ckpt / "bert_config.json").unlink()
    assert_refused(capsys, ws, embedded_onnx, ["export", "--checkpoint", ws.ckpt, "--output", ws.root / "m.onnx"],
                   "no bert_config.json beside the checkpoint (give --bert-config)")


@pytest.mark.parametrize("raw, needle", [
    ('"layer_norm_eps": -1', "layer_norm_eps must be a number"),
    ('"hidden_size": Infinity', "not a JSON config"),
    ('"hidden_size": 64.9', "hidden_size must be an integer, not 64.9"),
    ('"hidden_size": true', "hidden_size must be an integer, not True"),
    ('"num_hidden_layers": 1000000', "num_hidden_layers = 1000000 is outside"),
])
def test_export_bert_config_values(capsys, ws, embedded_onnx, raw, needle):
    config = json.loads((ws.ckpt / "bert_config.json").read_text())
    key = raw.split(":")[0].strip('"')
    config.pop(key, None)
    text = json.dumps(config)[:-1] + ", " + raw + "}"
    (ws.ckpt / "bert_config.json").write_text(text)
    assert_refused(capsys, ws, embedded_onnx, ["export", "--checkpoint", ws.ckpt, "--output", ws.root / "m.onnx"],
                   "bert_config.json", needle)


# --- config files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ('squad:\n  max_seq_length: "384"\n', "squad.max_seq_length must be an integer, not '384'"),
    ("run:\n  batch_size: eight\n", "run.batch_size must be an integer, not 'eight'"),
    ("run:\n  batch_size: 0\n", "run.batch_size must be at least 1"),
    ("run:\n  batch_size: true\n", "run.batch_size must be an integer, not True"),
    ("run:\n  provider: gpu\n", "run.provider must be one of cpu, cuda"),
    ("squad: [1]\n", "section 'squad' must be a mapping of keys, not a list"),
    ("squads:\n  n_best: 1\n", "unknown section 'squads'"),
    ("squad:\n  nbest: 1\n", "unknown key squad.nbest"),
    ("model:\n  opset: 17.5\n", "model.opset must be an integer"),
    ("model:\n  vocab: 3\n", "model.vocab must be a path"),
    ("- a\n- b\n", "a config must be a mapping"),
    ("squad: {\n", "not a YAML config"),
])
def test_config_values_are_typed(capsys, ws, embedded_onnx, text, needle):
    config = _config(ws, text)
    assert_refused(capsys, ws, embedded_onnx, ["--config", config, "infer", "--model", ws.model, "--vocab", ws.vocab,
                                               "--passage", TENSORRT_PASSAGE, "--question", "What is TensorRT?"],
                   "bad.yaml", needle)


def test_missing_config_file(capsys, ws, embedded_onnx):
    assert_refused(capsys, ws, embedded_onnx, ["--config", ws.root / "nope.yaml", "infer", "--passage", "x",
                                               "--question", "y"], "config file not found")


# --- compare and perf: refused up front ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--batch-size", 0], "--batch-size must be a positive integer, got 0"),
    (["--num-features", 0], "--num-features (0)"),
    (["--num-features", -1], "--num-features (-1)"),
])
def test_compare_counts(capsys, ws, embedded_onnx, flags, needle):
    assert_refused(capsys, ws, embedded_onnx, ["compare", ws.model, ws.model, "--squad-json", ws.squad, "--vocab",
                                               ws.vocab, *flags], needle)


def test_compare_vocab_of_another_model(capsys, ws, embedded_onnx):
    assert_refused(capsys, ws, embedded_onnx, ["compare", ws.model, ws.model, "--squad-json", ws.squad, "--vocab",
                                               ws.ckpt / "vocab.txt"], "has 50 tokens but the model expects 30522")


@pytest.mark.parametrize("flags, needle", [
    (["--batch", 100000], "GiB of activations per layer; this machine has"),
    (["--seq", 4096], "--seq 4096 exceeds the model's 512 positions"),
    (["--batch", 0], "--batch-size must be a positive integer, got [0]"),
    (["--runs", 0], "--runs must be positive and --warmup not negative"),
    (["--warmup", -1], "--runs must be positive and --warmup not negative"),
])
def test_perf_shapes_refused_up_front(capsys, ws, embedded_onnx, monkeypatch, flags, needle):
    monkeypatch.setattr("bertrt.run.perf.time_backend", lambda *a, **k: pytest.fail("timing started"))
    assert_refused(capsys, ws, embedded_onnx, ["perf", "--model", ws.model, "--output", ws.root / "perf.json",
                                               *flags], needle)


# --- infer / squad -----------------------------------------------------------------------------------------------
def _infer(w: Workspace, *rest, model: Path | None = None, vocab: Path | None = None) -> list:
    return ["infer", "--model", model or w.model, "--vocab", vocab or w.vocab, *rest]


INFER = {
    "empty-passage": (lambda w: _infer(w, "--passage", "", "--question", "What?"), "empty context"),
    "blank-question": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "  "), "empty question"),
    "long-question": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "why " * 70), "question has"),
    "passage-file-missing": (lambda w: _infer(w, "--passage-file", w.root / "nope.txt", "--question", "q?"),
                             "cannot read passage"),
    "passage-file-not-utf8": (lambda w: _infer(w, "--passage-file", w.root / "latin1.txt", "--question", "q?"),
                              "cannot read passage"),
    "doc-stride-0": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?", "--doc-stride", 0),
                     "doc_stride must be at least 1"),
    "batch-size-0": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?", "--batch-size", 0),
                     "--batch-size must be a positive integer, got 0"),
    "batch-beyond-memory": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?", "--batch-size",
                                             100000), "--batch-size 100000 x --max-seq-length 384 needs at least"),
    "seq-beyond-positions": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?",
                                              "--max-seq-length", 1024), "exceeds the model's 512 positions"),
    "vocab-of-another-model": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?",
                                                vocab=w.ckpt / "vocab.txt"), "expects 30522"),
    "model-not-onnx": (lambda w: _infer(w, "--passage", TENSORRT_PASSAGE, "--question", "q?", model=w.squad),
                       "expected .onnx"),
}


@pytest.mark.parametrize("case", list(INFER))
def test_infer_bad_input(capsys, ws, embedded_onnx, case):
    (ws.root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    build, needle = INFER[case]
    assert_refused(capsys, ws, embedded_onnx, build(ws), needle)


def test_non_finite_logits_are_an_error_not_json_nan(capsys, ws, embedded_onnx, monkeypatch):
    """A model that computes NaN (e.g. a LayerNorm epsilon <= 0 from a hand-edited artifact) never reaches the
    JSON output as `NaN`, which is not JSON."""
    from bertrt.runtimes import QABackend

    def nan_logits(self, feed):
        nan = np.full(feed["input_ids"].shape, np.nan, np.float32)
        return nan, nan

    monkeypatch.setattr(QABackend, "infer", nan_logits)
    assert_refused(capsys, ws, embedded_onnx, ["infer", "--model", ws.model, "--vocab", ws.vocab, "--passage",
                                               TENSORRT_PASSAGE, "--question", "What is TensorRT?", "--json"],
                   "non-finite logits")


def test_squad_not_squad_json(capsys, ws, embedded_onnx):
    ws.squad.write_text(json.dumps({"data": [{"title": "x"}]}))
    assert_refused(capsys, ws, embedded_onnx, ["squad", "--model", ws.model, "--vocab", ws.vocab, "--squad-json",
                                               ws.squad, "--output", ws.root / "p.json"], "squad.json")


def test_surgery_unknown_target(capsys, ws, embedded_onnx):
    assert_refused(capsys, ws, embedded_onnx, ["surgery", "--input", ws.model, "--output", ws.root / "f.onnx",
                                               "--target", "tensorrt"], "unknown surgery target")


def test_quantize_already_quantized_or_garbage(capsys, ws, embedded_onnx):
    garbage = ws.root / "garbage.onnx"
    garbage.write_bytes(b"not protobuf" * 10)
    assert_refused(capsys, ws, embedded_onnx, ["quantize", "--input", garbage, "--output", ws.root / "q.onnx",
                                               "--precision", "fp16"], "garbage.onnx")


# --- Ctrl-C: one line, exit 130, no temporary, the previous artifact intact ---------------------------------------
def test_ctrl_c_while_writing_leaves_nothing_half_written(capsys, ws, embedded_onnx, random_export, monkeypatch):
    import bertrt.surgery.pipeline as pipeline

    def interrupted_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    unfused, _ = random_export((2, 64, 2, "erf"))
    source = ws.root / "unfused.onnx"
    shutil.copy(unfused, source)
    monkeypatch.setattr(pipeline.onnx, "save", interrupted_save)
    out = ws.root / "fused.onnx"
    out.write_bytes(b"previous fused model")
    before = snapshot(ws.root)
    code, _, err = run_cli(capsys, "surgery", "--input", source, "--output", out, "--target", "ort")
    assert code == 130 and err.strip() == "bertrt surgery: interrupted"
    assert snapshot(ws.root) == before


def test_ctrl_c_signal_mid_run(ws, embedded_onnx):
    """A real SIGINT while `bertrt squad` runs: one line, exit 130, no output, no temporary."""
    import signal
    import subprocess
    import sys
    import time

    data = read_dev()
    ws.squad.write_text(json.dumps({"version": "1.1", "data": data["data"][:10]}))
    before = snapshot(ws.root)
    argv = ["squad", "--model", ws.model, "--vocab", ws.vocab, "--squad-json", ws.squad, "--output",
            ws.root / "p.json", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "bertrt.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(12)  # past the imports and the model load, into the SQuAD run (10 articles take minutes)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "bertrt squad: interrupted"
    assert snapshot(ws.root) == before


def test_debug_still_shows_the_traceback(ws):
    with pytest.raises(Exception, match="would overwrite the input"):
        from bertrt.cli import main

        main(["--debug", "surgery", "--input", str(ws.model), "--output", str(ws.model), "--target", "ort"])


def test_a_bug_is_one_line_too(capsys, ws, embedded_onnx, monkeypatch):
    """An unexpected exception (a bug, not bad input): one line naming it, exit code 1, the traceback only with
    --debug."""
    def broken(*args, **kwargs):
        raise ValueError("something bertrt did not expect\nsecond line")

    monkeypatch.setattr("bertrt.session.answering.make_features", broken)
    argv = ["infer", "--model", ws.model, "--vocab", ws.vocab, "--passage", TENSORRT_PASSAGE, "--question", "q?"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert err.strip() == ("bertrt infer: internal error: ValueError: something bertrt did not expect (rerun with "
                           "--debug for the traceback)")
    with pytest.raises(ValueError):
        run_cli(capsys, "--debug", *argv)


# --- flags argparse refuses: one line too ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["infer", "--batch-size", "eight", "--passage", "x", "--question", "y"], "invalid int value: 'eight'"),
    (["perf", "--model", "m.onnx", "--runs", "1.5"], "invalid int value: '1.5'"),
    (["surgery-typo"], "invalid choice: 'surgery-typo'"),
    (["infer", "--question", "q?"], "one of the arguments --passage --passage-file is required"),
])
def test_flag_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, *argv)
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
