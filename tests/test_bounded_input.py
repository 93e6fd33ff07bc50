"""Every input bounded, every failure one line (issue 16): inputs that are not regular files, sizes and counts out
of range, decompression bombs, deep nesting, a vocabulary without [UNK], serving values that would fail every
request, repeated profile keys, control characters in echoed paths. Through the `bertrt` command: exit code 2, one
line naming the problem, nothing written, every input unchanged."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path

import pytest
from conftest import TENSORRT_PASSAGE
from test_bad_input import assert_refused, tiny_checkpoint, ws  # noqa: F401 (fixtures)
from test_cli import assert_one_line_error, run_cli


# --- inputs that are not regular files -----------------------------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _zero(path: Path) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero: endless
    return path


NOT_REGULAR = {
    "squad-json": lambda w, f: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json", f,
                                "--output", w.root / "p.json"],
    "passage-file": lambda w, f: ["infer", "--model", w.model, "--vocab", w.vocab, "--passage-file", f,
                                  "--question", "What?"],
    "vocab": lambda w, f: ["infer", "--model", w.model, "--vocab", f, "--passage", TENSORRT_PASSAGE,
                           "--question", "What?"],
    "config": lambda w, f: ["--config", f, "infer", "--model", w.model, "--vocab", w.vocab, "--passage",
                            TENSORRT_PASSAGE, "--question", "What?"],
    "calib-json": lambda w, f: ["quantize", "--input", w.model, "--output", w.root / "q.onnx", "--precision", "int8",
                                "--vocab", w.vocab, "--calib-json", f],
    "bert-config": lambda w, f: ["export", "--checkpoint", w.ckpt, "--bert-config", f, "--output",
                                 w.root / "e.onnx"],
    "compare-squad-json": lambda w, f: ["compare", w.model, w.model, "--vocab", w.vocab, "--squad-json", f],
}


@pytest.mark.parametrize("kind", ["fifo", "char-device"])
@pytest.mark.parametrize("flag", list(NOT_REGULAR))
def test_an_input_that_is_not_a_regular_file_is_refused(capsys, ws, embedded_onnx, tmp_path, flag, kind):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    node = (_fifo if kind == "fifo" else _zero)(nodes / "input.json")
    assert_refused(capsys, ws, embedded_onnx, NOT_REGULAR[flag](ws, node), "input.json", "not a regular file",
                   extra=(nodes,))


# --- sizes: decompression, nesting --------------------------------------------------------------------------
def test_a_gzip_bomb_is_refused_after_the_cap(capsys, ws, embedded_onnx, tmp_path):
    """2 MB of gzip members expanding to 2 GiB: decompressed as a stream, refused at the cap (256 MiB), quickly."""
    import time

    member = gzip.compress(b" " * (1 << 20), compresslevel=9)  # 1 MiB of JSON whitespace, ~1 KB compressed
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(member * 2048)
    assert bomb.stat().st_size < 4 << 20
    started = time.monotonic()
    assert_refused(capsys, ws, embedded_onnx, NOT_REGULAR["squad-json"](ws, bomb), "bomb.json.gz",
                   "decompresses to more than bertrt reads (256 MiB)", extra=(tmp_path,))
    assert time.monotonic() - started < 60


def test_gzip_members_and_truncation(tmp_path):
    from bertrt.errors import BertrtError
    from bertrt.inputs import read_bytes

    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(b'{"a": ') + gzip.compress(b"1}"))
    assert read_bytes(two, 100) == b'{"a": 1}'
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(os.urandom(4096))[:-100])
    with pytest.raises(BertrtError, match="corrupt gzip"):
        read_bytes(cut, 1 << 20)
    with pytest.raises(BertrtError, match="larger than bertrt reads"):
        read_bytes(two, 10)
    assert zlib  # (stream decompression is zlib's)


@pytest.mark.parametrize("flag", ["squad-json", "bert-config"])
def test_deeply_nested_json_is_one_line(capsys, ws, embedded_onnx, tmp_path, flag):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    assert_refused(capsys, ws, embedded_onnx, NOT_REGULAR[flag](ws, deep), "deep.json", "nested too deeply",
                   extra=(tmp_path,))


def test_deeply_nested_yaml_config_is_one_line(capsys, ws, embedded_onnx, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    assert_refused(capsys, ws, embedded_onnx, NOT_REGULAR["config"](ws, deep), "deep.yaml", extra=(tmp_path,))


def test_a_vocabulary_without_its_unknown_token(capsys, ws, embedded_onnx):
    lines = ws.vocab.read_text(encoding="utf-8").split("\n")
    no_unk = ws.root / "no-unk.txt"
    no_unk.write_text("\n".join("[UNUSED-UNK]" if line == "[UNK]" else line for line in lines), encoding="utf-8")
    assert_refused(capsys, ws, embedded_onnx, NOT_REGULAR["vocab"](ws, no_unk), "no-unk.txt", "no [UNK] token")


# --- counts ----------------------------------------------------------------------------------------------------
COUNTS = {
    "threads": (lambda w: ["infer", "--model", w.model, "--vocab", w.vocab, "--passage", TENSORRT_PASSAGE,
                           "--question", "What?", "--threads", 1_000_000], "--threads 1000000: must be within 1.."),
    "profile-repeated-key": (lambda w: ["build", "--model", w.model, "--output", w.root / "m.engine", "--profile",
                                        "batch=1:8,batch=2:4,seq=384"], "batch given more than once"),
    "triton-repo-batch-size-0": (lambda w: ["triton-repo", "--model", w.model, "--vocab", w.vocab, "--output",
                                            w.root / "repo", "--batch-size", 0], "batch-size"),
    "triton-repo-negative-queue-delay": (lambda w: ["triton-repo", "--model", w.model, "--vocab", w.vocab, "--output",
                                                    w.root / "repo", "--max-queue-delay-us", -5], "queue delay"),
    "triton-repo-absurd-instances": (lambda w: ["triton-repo", "--model", w.model, "--vocab", w.vocab, "--output",
                                                w.root / "repo", "--instances", 100_000], "instances 100000"),
    "triton-repo-max-input-bytes-0": (lambda w: ["triton-repo", "--model", w.model, "--vocab", w.vocab, "--output",
                                                 w.root / "repo", "--max-input-bytes", 0], "max input bytes 0"),
    "serve-max-batch-size-0": (lambda w: ["serve", "--model", w.model, "--vocab", w.vocab, "--max-batch-size", 0],
                               "max batch size 0"),
}


@pytest.mark.parametrize("case", list(COUNTS))
def test_counts_out_of_range_are_refused_up_front(capsys, ws, embedded_onnx, case):
    argv, needle = COUNTS[case]
    assert_refused(capsys, ws, embedded_onnx, argv(ws), needle)


def test_an_edited_repository_is_checked_before_the_server_starts(capsys, ws, embedded_onnx, monkeypatch):
    from bertrt.serve.server import TritonServer

    repo = ws.root / "repo"
    code, _, err = run_cli(capsys, "triton-repo", "--model", ws.model, "--vocab", ws.vocab, "--output", repo)
    assert code == 0, err
    config = repo / "bertrt_qa" / "config.pbtxt"
    text = config.read_text()
    assert 'key: "batch_size"\n  value {\n    string_value: "' in text
    config.write_text(text.replace('key: "batch_size"\n  value {\n    string_value: "',
                                   'key: "batch_size"\n  value {\n    string_value: "0', 1).replace('"08"', '"0"'))
    monkeypatch.setattr(TritonServer, "_check_ports", lambda self: (_ for _ in ()).throw(AssertionError("started")))
    code, _, err = run_cli(capsys, "serve", "--repository", repo)
    assert_one_line_error(code, err, "config.pbtxt", "batch size")


# --- echoed user text ------------------------------------------------------------------------------------------
def test_control_characters_in_a_path_are_escaped(capsys, ws, embedded_onnx):
    weird = ws.root / "evil\n\x1b[31mname.json"
    code, _, err = run_cli(capsys, "squad", "--model", ws.model, "--vocab", ws.vocab, "--squad-json", weird,
                           "--output", ws.root / "p.json")
    assert_one_line_error(code, err, "evil\\n\\x1b[31mname.json")
    assert "\x1b" not in err


@pytest.mark.parametrize("flags, needle", [(["--concurrency", "1", "1000000"], "--concurrency 1000000"),
                                           (["--requests", "10000000000"], "--requests 10000000000")])
def test_serve_bench_client_counts_are_bounded(capsys, ws, embedded_onnx, monkeypatch, flags, needle):
    from bertrt.serve.server import TritonServer

    monkeypatch.setattr(TritonServer, "start", lambda self: (_ for _ in ()).throw(AssertionError("started")))
    assert_refused(capsys, ws, embedded_onnx, ["serve-bench", "--model", ws.model, "--vocab", ws.vocab,
                                               "--passage", "p", "--question", "q?", *flags], needle)
