"""Artifacts are published whole: an artifact and its sidecars together (never a mix of two runs), with the umask's
mode, and nothing half-written or temporary left by a failure."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading

import onnx
import pytest

from bertrt.artifacts import atomic_outputs, check_outputs, sha256_file, sidecar_path
from bertrt.errors import BertrtError
from bertrt.qa_contract import stage_of


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_umask_mode(tmp_path, umask_022):
    with atomic_outputs(tmp_path / "a.onnx", tmp_path / "a.onnx.json") as (a, b):
        a.write_bytes(b"model")
        b.write_text("{}")
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o644"}
    os.umask(0o027)
    with atomic_outputs(tmp_path / "b.json") as (b,):
        b.write_text("{}")
    assert oct((tmp_path / "b.json").stat().st_mode & 0o777) == "0o640"


def test_failure_keeps_the_previous_set_and_leaves_no_temporary(tmp_path):
    model, side = tmp_path / "m.onnx", tmp_path / "m.onnx.json"
    model.write_bytes(b"old model")
    side.write_text("old sidecar")
    with pytest.raises(RuntimeError), atomic_outputs(model, side) as (tmp_model, tmp_side):
        tmp_model.write_bytes(b"new model")
        tmp_side.write_text("half")
        raise RuntimeError("the stage failed after writing its temporaries")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]
    assert model.read_bytes() == b"old model" and side.read_text() == "old sidecar"


def test_a_set_is_published_under_the_directory_lock(tmp_path):
    """While another publisher holds the directory, nothing of this set appears; then all of it does."""
    targets = [tmp_path / "m.onnx", tmp_path / "m.onnx.json", tmp_path / "m.onnx.fusion.json"]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    written = threading.Event()

    def publish():
        with atomic_outputs(*targets) as temporaries:
            for tmp in temporaries:
                tmp.write_text(tmp.name)
            written.set()

    thread = threading.Thread(target=publish)
    thread.start()
    assert written.wait(10)
    thread.join(0.5)
    assert thread.is_alive() and not any(t.exists() for t in targets)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    thread.join(10)
    assert all(t.exists() for t in targets)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_check_outputs_resolves_links_and_dotdot(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("{}")
    (tmp_path / "link.json").symlink_to(data)
    os.link(data, tmp_path / "hard.json")
    (tmp_path / "sub").mkdir()
    for output in ("link.json", "hard.json", "sub/../data.json"):
        with pytest.raises(BertrtError, match="would overwrite the input"):
            check_outputs([tmp_path / output], [data])
    with pytest.raises(BertrtError, match="output is a directory"):
        check_outputs([tmp_path / "sub"], [data])
    with pytest.raises(BertrtError, match="written twice"):
        check_outputs([tmp_path / "x.json", tmp_path / "sub" / ".." / "x.json"], [data])
    check_outputs([tmp_path / "new" / "deeper" / "x.json", None], [data, None])  # fine: created when published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "hard.json", "link.json", "sub"]


def _surgery(source, output, target):
    return subprocess.Popen([sys.executable, "-m", "bertrt.cli", "surgery", "--input", str(source), "--output",
                             str(output), "--target", target], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def test_concurrent_surgery_runs_to_one_output_never_mix(random_export, tmp_path):
    """`surgery --target ort` and `--target native` at once to one --output: whichever wins, the model, its sidecar
    and its fusion report come from the same run."""
    from bertrt.surgery.pipeline import fusion_report_path

    source, _ = random_export((2, 64, 2, "erf"))
    output = tmp_path / "fused.onnx"
    for _ in range(2):
        runs = [_surgery(source, output, target) for target in ("ort", "native")]
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
        sidecar = json.loads(sidecar_path(output).read_text())
        report = json.loads(fusion_report_path(output).read_text())
        assert sidecar["sha256"] == sha256_file(output)
        target = sidecar["parameters"]["target"]
        assert report["target"] == target and stage_of(onnx.load(str(output))) == f"surgery:{target}"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.onnx", "fused.onnx.fusion.json",
                                                              "fused.onnx.json"]
