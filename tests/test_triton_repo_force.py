"""`bertrt triton-repo --force`: replaces a repository that `bertrt triton-repo` wrote, in one step; never any
other directory, never one holding the model or vocabulary it reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import HF_FIXTURES
from interrupt_helpers import assert_no_temporaries

from bertrt.cli import main

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install -e '.[triton]')")

from bertrt.serve import repository  # noqa: E402
from bertrt.serve.repository import MODEL_NAME, read_config  # noqa: E402

VOCAB = HF_FIXTURES / "hf-l2-h64-a2" / "vocab.txt"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small bertrt model (the `native` target of a 2-layer Hugging Face fixture)."""
    from bertrt.surgery.pipeline import run_surgery

    out = tmp_path_factory.mktemp("model") / "model.native.onnx"
    run_surgery(HF_FIXTURES / "hf-l2-h64-a2" / "model.onnx", out, "native")
    return out


def write(model: Path, output: Path, *extra) -> int:
    return main(["triton-repo", "--model", str(model), "--vocab", str(VOCAB), "--output", str(output), *extra])


def instances(repo: Path) -> int:
    return read_config(repo / MODEL_NAME / "config.pbtxt").instance_group[0].count


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_replaces_a_bertrt_repository(model, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert write(model, repo, "--instances", "1") == 0
    assert write(model, repo, "--instances", "2") == 2  # without --force: refused, untouched
    assert "--force" in capsys.readouterr().err and instances(repo) == 1
    assert write(model, repo, "--instances", "2", "--force") == 0
    assert instances(repo) == 2 and repository.is_bertrt_repository(repo)
    assert write(model, repo, "--bls", "--force") == 0  # a local repository replaced by a BLS one
    assert repository.serving_mode(repo) is repository.ServingMode.BLS and (repo / "bertrt_qa_tensor").is_dir()
    assert_no_temporaries(tmp_path, {"repo"})


@pytest.mark.parametrize("case", ["other directory", "extra file", "file", "holds the model"])
def test_force_refuses_what_is_not_ours(model, tmp_path, capsys, case):
    target = tmp_path / "target"
    source = model
    if case == "other directory":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif case == "file":
        target.write_text("mine")
    else:
        assert write(model, target) == 0
        if case == "extra file":
            (target / "notes.txt").write_text("mine")
        else:  # the model to serve lives in the repository --force would remove
            source = target / MODEL_NAME / "1" / model.name
    capsys.readouterr()
    before = snapshot(tmp_path) if target.is_dir() else target.read_bytes()
    assert write(source, target, "--force") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("not a repository from `bertrt triton-repo`" in err or "inside the repository"
                                     in err), err
    assert (snapshot(tmp_path) if target.is_dir() else target.read_bytes()) == before


def test_interrupted_force_leaves_the_old_repository(model, tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    assert write(model, repo) == 0
    before = snapshot(repo)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(repository, "_write_config", interrupted)
    assert write(model, repo, "--instances", "3", "--force") == 130
    assert snapshot(repo) == before
    assert_no_temporaries(tmp_path, {"repo"})


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, text in ((a, "new"), (b, "old")):
        folder.mkdir()
        (folder / "f").write_text(text)
    repository._exchange(a, b)
    assert (b / "f").read_text() == "new" and (a / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
