"""How `bertrt build` publishes: the engine, its sidecar and the caches as ONE set, never after an interrupt.

Real TensorRT-RTX builds on the CPU (as tests/test_build.py). The interrupt is simulated at each step of the
publish (a KeyboardInterrupt raised while the set is written, a real SIGINT while it is renamed into place), and
sent for real to a `bertrt build` process while TensorRT builds (tests/test_interrupts.py has the other stages).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import HF_FIXTURES
from interrupt_helpers import assert_no_temporaries, start_cli, stop_at_line

from bertrt.artifacts import sha256_file, sidecar_path

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")

from bertrt.build import engine_build  # noqa: E402
from bertrt.build.engine_build import BuildRequest, build  # noqa: E402
from bertrt.engine_sidecar import EngineRecord  # noqa: E402
from bertrt.profiles import parse_profile  # noqa: E402

RTX = "tensorrt-rtx"
OLD, NEW = parse_profile("batch=1:4:4,seq=128"), parse_profile("batch=1:2:2,seq=64")


@pytest.fixture(scope="module")
def small_native(tmp_path_factory) -> Path:
    """A small `native` model (2 layers, hidden 64): builds in a few seconds."""
    from bertrt.surgery.pipeline import run_surgery

    out = tmp_path_factory.mktemp("small") / "model.native.onnx"
    run_surgery(HF_FIXTURES / "hf-l2-h64-a2" / "model.onnx", out, "native")
    return out


@pytest.fixture
def old_pair(small_native, tmp_path):
    """A folder with the model and an engine + sidecar from an earlier build: (model, engine, their bytes)."""
    model = tmp_path / "model.native.onnx"
    shutil.copy(small_native, model)
    engine = tmp_path / "model.engine"
    build(BuildRequest(model, engine, [OLD], RTX), log=lambda _: None)
    return model, engine, (engine.read_bytes(), sidecar_path(engine).read_bytes())


def assert_matching_pair(engine: Path) -> EngineRecord:
    record = EngineRecord.read(engine)
    assert record.engine_sha256 == sha256_file(engine), "the engine does not match its sidecar"
    return record


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("step", ["engine sidecar", "engine bytes"])
def test_interrupt_while_publishing_leaves_the_old_pair(old_pair, monkeypatch, step):
    """Ctrl-C while the new set is being written (after the engine is written, while its sidecar is made): the old
    engine and its sidecar stay, matching each other, and no temporary is left. (Before, the engine was renamed into
    place first and its sidecar written after: a new engine beside the old sidecar.)"""
    model, engine, before = old_pair
    if step == "engine sidecar":
        monkeypatch.setattr("bertrt.engine_sidecar.tool_versions", _interrupt)  # (inside the sidecar's making)
    else:
        monkeypatch.setattr(engine_build, "sha256_file", lambda path: _interrupt() if path != model else
                            sha256_file(path))
    with pytest.raises(KeyboardInterrupt):
        build(BuildRequest(model, engine, [NEW], RTX), log=lambda _: None)
    assert (engine.read_bytes(), sidecar_path(engine).read_bytes()) == before
    assert assert_matching_pair(engine).profiles == (OLD,)
    assert_no_temporaries(engine.parent, {model.name, engine.name, f"{engine.name}.json"})


def test_signal_during_the_renames_completes_the_set(old_pair, monkeypatch):
    """A real SIGINT arriving between the renames is held until the whole set is in place: the new engine and the
    new sidecar, matching, then the interrupt."""
    model, engine, before = old_pair
    real_replace = os.replace
    calls = []

    def replace_then_signal(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        real_replace(src, dst)

    monkeypatch.setattr("bertrt.artifacts.os.replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        build(BuildRequest(model, engine, [NEW], RTX), log=lambda _: None)
    assert len(calls) == 2
    assert engine.read_bytes() != before[0] and assert_matching_pair(engine).profiles == (NEW,)
    assert_no_temporaries(engine.parent, {model.name, engine.name, f"{engine.name}.json"})


def test_build_does_not_change_its_request(small_native, tmp_path):
    """`build` fills in defaults on a copy: the caller's request is frozen and unchanged."""
    request = BuildRequest(small_native, tmp_path / "m.engine", [OLD], RTX)
    copy = dataclasses.replace(request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.calib_cache = tmp_path / "c.cache"  # type: ignore[misc]
    build(request, log=lambda _: None)
    assert request == copy and request.calib_cache is None


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_the_tensorrt_build_aborts_it(embedded_native, tmp_path, signum, code):
    """A real Ctrl-C (or SIGTERM) to `bertrt build` while TensorRT builds the embedded model (~7 s on the CPU):
    the build is cancelled (TensorRT's IProgressMonitor) or its result dropped, nothing is published, no temporary
    is left, one line, exit 130 (143). (Before, TensorRT's log callback swallowed the KeyboardInterrupt —
    "Exception caught in log()" — and the build published and exited 0.)"""
    engine = tmp_path / "out" / "model.engine"
    proc = start_cli(["build", "--model", embedded_native, "--output", engine, "--runtime", RTX,
                      "--profile", "batch=1:8:8,seq=384"])
    rc, err = stop_at_line(proc, "building the engine", signum, delay=0.5)
    assert rc == code, err
    assert err.strip() == "bertrt build: " + ("interrupted" if signum == signal.SIGINT else "interrupted (SIGTERM)")
    assert not engine.exists() and not sidecar_path(engine).exists()
    assert_no_temporaries(tmp_path, {"out"})
    assert_no_temporaries(engine.parent, set())


def test_cache_and_timing_cache_join_the_set(tmp_path):
    """A TensorRT 10 INT8 build's calibration cache + its sidecar and the timing cache are temporaries of the same
    set as the engine (TensorRT 10 is not installed here: the set itself is tested): an existing cache is copied in
    for TensorRT to reuse; an interrupt publishes none of the five; success publishes all five."""
    engine, cache, timing = tmp_path / "m.engine", tmp_path / "m.0123456789abcdef.calib.cache", tmp_path / "t.cache"
    cache.write_bytes(b"old cache")
    with pytest.raises(KeyboardInterrupt):
        with engine_build._outputs(engine, cache, timing) as tmp:
            assert set(tmp) == {"engine", "sidecar", "cache", "cache_sidecar", "timing"}
            assert tmp["cache"].read_bytes() == b"old cache" and tmp["cache"].parent == tmp_path
            for path in tmp.values():
                path.write_bytes(b"new")
            raise KeyboardInterrupt
    assert_no_temporaries(tmp_path, {cache.name})
    assert cache.read_bytes() == b"old cache"
    with engine_build._outputs(engine, cache, timing) as tmp:
        for path in tmp.values():
            path.write_bytes(b"new")
    assert_no_temporaries(tmp_path, {engine.name, f"{engine.name}.json", cache.name, f"{cache.name}.json",
                                     timing.name})
    assert cache.read_bytes() == b"new"


def test_timing_cache_buffer_goes_through_polygraphy(tmp_path, monkeypatch):
    """The timing cache is handed to Polygraphy in memory: its file helpers read and write the buffer as they do
    in CreateConfig / EngineBytesFromNetwork, and no `.lock` file appears anywhere (TensorRT 10, which takes a
    timing cache, is not installed here: Polygraphy's own calls on the buffer are tested)."""
    from polygraphy import util

    from bertrt.build.builder_config import TimingCacheBuffer

    monkeypatch.chdir(tmp_path)
    loaded = TimingCacheBuffer(b"previous cache")
    with util.LockFile(loaded):  # CreateConfig's load
        assert util.load_file(loaded, description="tactic timing cache") == b"previous cache"
    saved_path = tmp_path / ".t.cache.1234.tmp"  # what engine_build hands EngineBytesFromNetwork: its temporary
    with open(saved_path, "wb+") as saved, util.LockFile(saved):  # EngineBytesFromNetwork's save
        try:
            util.load_file(saved)  # (it first reads the previous cache there: empty)
        except Exception:
            pass
        util.save_file(memoryview(b"updated cache"), saved, description="tactic timing cache")
    assert saved_path.read_bytes() == b"updated cache" and [p.name for p in tmp_path.iterdir()] == [saved_path.name]
