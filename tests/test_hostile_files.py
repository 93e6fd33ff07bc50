"""Hostile files (issue 16, security): external data that is a link, a FIFO or a device; outputs onto device nodes,
FIFOs and sockets. Through the `bertrt` command: exit code 2, one line, nothing written, every input unchanged."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import onnx
import pytest
from conftest import TENSORRT_PASSAGE, VOCAB
from test_bad_input import assert_refused, tiny_checkpoint, ws  # noqa: F401 (fixtures)

from bertrt.errors import BertrtError


@pytest.fixture(scope="module")
def external_model(embedded_onnx, tmp_path_factory) -> Path:
    """The embedded export saved with its weights as external data (weights.bin beside model.onnx)."""
    directory = tmp_path_factory.mktemp("external")
    model = onnx.load(str(embedded_onnx))
    onnx.save(model, str(directory / "model.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=1024)
    return directory / "model.onnx"


@pytest.fixture()
def hostile(tmp_path, external_model) -> Path:
    """A copy of the external-data model whose weights.bin is a symbolic link to a file outside its directory
    (here: the real weights, so that a reader following the link would succeed)."""
    directory = tmp_path / "hostile"
    directory.mkdir()
    shutil.copy(external_model, directory / "model.onnx")
    elsewhere = tmp_path / "elsewhere.bin"
    shutil.copy(external_model.with_name("weights.bin"), elsewhere)
    (directory / "weights.bin").symlink_to(elsewhere)
    return directory / "model.onnx"


def test_external_data_model_is_read(capsys, external_model):
    """The model with regular external data works (the refusals below are about the link, not external data)."""
    from test_cli import run_cli

    code, out, err = run_cli(capsys, "infer", "--model", external_model, "--vocab", VOCAB, "--passage", TENSORRT_PASSAGE, "--question", "What is TensorRT?")
    assert code == 0, err
    assert "inference platform" in out


READERS = {
    "surgery": lambda m, w: ["surgery", "--input", m, "--output", w.root / "fused.onnx", "--target", "ort"],
    "quantize-fp16": lambda m, w: ["quantize", "--input", m, "--output", w.root / "q.onnx", "--precision", "fp16"],
    "quantize-int8": lambda m, w: ["quantize", "--input", m, "--output", w.root / "q8.onnx", "--precision", "int8",
                                   "--vocab", w.vocab],
    "infer": lambda m, w: ["infer", "--model", m, "--vocab", w.vocab, "--passage", TENSORRT_PASSAGE,
                           "--question", "What is TensorRT?"],
    "compare": lambda m, w: ["compare", w.model, m, "--squad-json", w.squad, "--vocab", w.vocab,
                             "--num-features", 2],
    "compare-reference": lambda m, w: ["compare", m, w.model, "--squad-json", w.squad, "--vocab", w.vocab,
                                       "--num-features", 2],
    "squad": lambda m, w: ["squad", "--model", m, "--vocab", w.vocab, "--squad-json", w.squad,
                           "--output", w.root / "p.json"],
    "build": lambda m, w: ["build", "--model", m, "--output", w.root / "m.engine"],
    "triton-repo": lambda m, w: ["triton-repo", "--model", m, "--vocab", w.vocab, "--output", w.root / "repo"],
}


@pytest.mark.parametrize("command", list(READERS))
def test_external_data_through_a_symlink_is_refused(capsys, ws, embedded_onnx, hostile, command):
    assert_refused(capsys, ws, embedded_onnx, READERS[command](hostile, ws), "weights.bin", "symbolic link",
                   extra=(hostile.parent,))


def _with_weights(tmp_path: Path, external_model: Path, make) -> Path:
    directory = tmp_path / "m"
    directory.mkdir()
    shutil.copy(external_model, directory / "model.onnx")
    make(directory / "weights.bin")
    return directory / "model.onnx"


KINDS = {
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "char-device": (lambda p: os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 5)), "not a regular file"),  # /dev/zero
    "directory": (lambda p: p.mkdir(), "not a regular file"),
    "missing": (lambda p: None, "cannot be read"),
    "link-inside-the-directory": (lambda p: (p.with_name("real.bin").write_bytes(b"\0" * 16),
                                             p.symlink_to("real.bin")), "symbolic link"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_external_data_must_be_a_regular_file(capsys, ws, embedded_onnx, tmp_path, external_model, kind):
    make, needle = KINDS[kind]
    model = _with_weights(tmp_path, external_model, make)
    # (a FIFO would block the reader forever: the refusal comes before any open)
    assert_refused(capsys, ws, embedded_onnx, READERS["infer"](model, ws), "weights.bin", needle,
                   extra=(model.parent,))


def test_external_data_in_a_linked_subdirectory_is_refused(tmp_path, external_model):
    from bertrt.onnx_file import load_onnx

    directory = tmp_path / "m"
    directory.mkdir()
    model = onnx.load(str(external_model), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "sub/weights.bin"
    onnx.save(model, str(directory / "model.onnx"))
    (tmp_path / "outside").mkdir()
    shutil.copy(external_model.with_name("weights.bin"), tmp_path / "outside" / "weights.bin")
    (directory / "sub").symlink_to(tmp_path / "outside")
    with pytest.raises(BertrtError, match="symbolic link"):
        load_onnx(directory / "model.onnx")
    (directory / "sub").unlink()
    (directory / "sub").mkdir()
    shutil.copy(external_model.with_name("weights.bin"), directory / "sub" / "weights.bin")
    assert len(load_onnx(directory / "model.onnx").graph.initializer) > 0


# --- outputs: a regular file or nothing (after links); never a device, FIFO, socket -----------------------------
def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


NODES = {
    "char-device": lambda p: os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3)),  # like /dev/null
    "block-device": lambda p: os.mknod(p, 0o600 | stat.S_IFBLK, os.makedev(7, 200)),
    "fifo": lambda p: os.mkfifo(p),
    "socket": _socket,
    "link-to-a-char-device": lambda p: (os.mknod(p.with_name("null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3)),
                                        p.symlink_to("null")),
}

WRITERS = {
    "build": lambda w, out: ["build", "--model", w.model, "--output", out],
    "squad": lambda w, out: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json", w.squad,
                             "--output", out],
    "surgery": lambda w, out: ["surgery", "--input", w.model, "--output", out, "--target", "ort"],
    "quantize": lambda w, out: ["quantize", "--input", w.model, "--output", out, "--precision", "fp16"],
    "export": lambda w, out: ["export", "--checkpoint", w.ckpt, "--output", out],
    "perf": lambda w, out: ["perf", "--model", w.model, "--batch", 1, "--seq", 8, "--output", out],
}


@pytest.mark.parametrize("node", list(NODES))
@pytest.mark.parametrize("command", list(WRITERS))
def test_output_onto_a_device_fifo_or_socket_is_refused(capsys, ws, embedded_onnx, tmp_path, command, node):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    out = nodes / "out.onnx"
    NODES[node](out)
    assert_refused(capsys, ws, embedded_onnx, WRITERS[command](ws, out), "out.onnx", "not a regular file",
                   extra=(nodes,))
    assert not stat.S_ISREG(os.stat(out).st_mode)


def test_output_sidecar_onto_a_device_is_refused(capsys, ws, embedded_onnx, tmp_path):
    """The sidecars are outputs like the artifact: `fused.onnx.json` a device node refuses the whole command."""
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    os.mknod(nodes / "fused.onnx.json", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    assert_refused(capsys, ws, embedded_onnx, WRITERS["surgery"](ws, nodes / "fused.onnx"), "fused.onnx.json",
                   "character device", extra=(nodes,))


# --- data loss: an input's sidecar and fusion report are inputs; the serve log is an output ----------------------
def _sidecar(w) -> Path:
    return Path(f"{w.model}.json")


COMPANION_OVERWRITES = {
    "build-output-is-the-model-sidecar": lambda w: ["build", "--model", w.model, "--output", _sidecar(w)],
    "squad-output-is-the-model-sidecar": lambda w: ["squad", "--model", w.model, "--vocab", w.vocab, "--squad-json",
                                                    w.squad, "--output", _sidecar(w)],
    "quantize-output-is-the-model-sidecar": lambda w: ["quantize", "--input", w.model, "--output", _sidecar(w),
                                                       "--precision", "fp16"],
    "surgery-output-is-the-fusion-report": lambda w: ["surgery", "--input", w.model, "--target", "ort", "--output",
                                                      Path(f"{w.model}.fusion.json")],
    "perf-output-is-the-model-sidecar": lambda w: ["perf", "--model", w.model, "--batch", 1, "--seq", 8,
                                                   "--output", _sidecar(w)],
}


@pytest.mark.parametrize("case", list(COMPANION_OVERWRITES))
def test_an_inputs_sidecar_is_never_an_output(capsys, ws, embedded_onnx, case):
    (ws.root / "model.onnx.json").write_text('{"stage": "export"}\n')  # the model's record, as export writes it
    assert_refused(capsys, ws, embedded_onnx, COMPANION_OVERWRITES[case](ws), "would overwrite the input",
                   "of the input")


@pytest.fixture()
def no_server(monkeypatch):
    """`serve` must refuse before a server starts (else the test would serve forever)."""
    from bertrt.serve.server import TritonServer

    def refuse(self):
        raise AssertionError("the server started before the log file was checked")

    monkeypatch.setattr(TritonServer, "start", refuse)


@pytest.mark.parametrize("which", ["model", "vocab", "model-sidecar", "char-device", "directory"])
def test_serve_log_file_is_an_output(capsys, ws, embedded_onnx, tmp_path, no_server, which):
    log = {"model": ws.model, "vocab": ws.vocab, "model-sidecar": _sidecar(ws), "directory": ws.root,
           "char-device": tmp_path / "null"}[which]
    if which == "char-device":
        os.mknod(log, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    assert_refused(capsys, ws, embedded_onnx, ["serve", "--model", ws.model, "--vocab", ws.vocab, "--log-file", log],
                   log.name)


def test_serve_log_file_is_not_a_served_repository_file(capsys, ws, embedded_onnx, no_server):
    from test_cli import run_cli

    repo = ws.root / "repo"
    code, _, err = run_cli(capsys, "triton-repo", "--model", ws.model, "--vocab", ws.vocab, "--output", repo)
    assert code == 0, err
    # The repository's tokenizer travels as tokenizer.json (the families work), no longer as vocab.txt.
    tokenizer = repo / "bertrt_qa" / "1" / "tokenizer.json"
    assert tokenizer.is_file()
    assert_refused(capsys, ws, embedded_onnx, ["serve", "--repository", repo, "--log-file", tokenizer],
                   "would overwrite the input")


def test_triton_repo_copies_the_model(capsys, ws, embedded_onnx):
    """The repository's model is a file of its own: editing it leaves the source as it was."""
    from test_cli import run_cli

    model = ws.root / "own.onnx"
    shutil.copy(embedded_onnx, model)
    shutil.copy(Path(f"{embedded_onnx}.json"), Path(f"{model}.json"))
    before = (model.read_bytes(), Path(f"{model}.json").read_bytes())
    repo = ws.root / "repo"
    code, _, err = run_cli(capsys, "triton-repo", "--model", model, "--vocab", ws.vocab, "--output", repo)
    assert code == 0, err
    for name in ("own.onnx", "own.onnx.json"):
        served = repo / "bertrt_qa" / "1" / name
        assert not os.path.samefile(served, model.with_name(name))
        assert os.stat(served).st_nlink == 1
        with open(served, "r+b") as f:  # edit in place, as an editor or a careless script would
            f.write(b"edited")
    assert (model.read_bytes(), Path(f"{model}.json").read_bytes()) == before
