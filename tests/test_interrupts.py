"""SIGTERM ends a stage like Ctrl-C: one line, exit 143, no temporary beside the output or in the temporary
directory. Real `bertrt` processes on the embedded model, each stopped at the moment its temporaries exist
(`bertrt build` is in tests/test_build_publish.py)."""

from __future__ import annotations

import signal

from interrupt_helpers import assert_no_temporaries, start_cli, stop_when

from bertrt.interrupts import Interrupted, exit_code, interrupted_message, private_tempdir


def test_surgery_sigterm_while_saving(embedded_onnx, tmp_path):
    """SIGTERM while the fused model (90 MB) is being written beside the output: exit 143, one line, no temporary
    left (before, SIGTERM killed the process mid-save and left the `.model.native.onnx.*.tmp` file)."""
    out = tmp_path / "out"
    out.mkdir()
    output = out / "model.native.onnx"
    proc = start_cli(["surgery", "--input", embedded_onnx, "--output", output, "--target", "native"],
                     env={"TMPDIR": str(tmp_path)})
    rc, err = stop_when(proc, lambda: any(p.name.endswith(".tmp") and p.stat().st_size > 0
                                          for p in list(out.iterdir())), signal.SIGTERM)
    assert rc == 143, err
    assert err.strip() == "bertrt surgery: interrupted (SIGTERM)"
    assert_no_temporaries(out, set())
    assert_no_temporaries(tmp_path, {"out"})


def test_int8_quantize_sigterm_during_onnxruntime_calibration(embedded_onnx, tmp_path):
    """SIGTERM while onnxruntime's quantizer calibrates (its `ort.quant.*` directory exists, a few seconds into a
    ~45 s quantize): exit 143, one line, nothing left in the temporary directory (TMPDIR points at a test folder
    to observe it; before, `bertrt-quant.*` and `ort.quant.*`, 40-90 MB each, stayed there) nor beside the
    output."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    proc = start_cli(["quantize", "--input", embedded_onnx, "--output", out / "model.int8.onnx", "--precision",
                      "int8", "--calib-num", "32"], env={"TMPDIR": str(tmp)})
    rc, err = stop_when(proc, lambda: any(tmp.rglob("ort.quant.*")), signal.SIGTERM, delay=1.0)
    assert rc == 143, err
    # (onnxruntime's quantizer logs its own "please consider pre-processing" warning before; bertrt's is one line)
    assert err.strip().splitlines()[-1] == "bertrt quantize: interrupted (SIGTERM)" and "Traceback" not in err
    assert_no_temporaries(tmp, set())
    assert_no_temporaries(out, set())


def test_exit_codes_and_messages():
    assert exit_code(KeyboardInterrupt()) == 130 and interrupted_message(KeyboardInterrupt()) == "interrupted"
    assert exit_code(Interrupted(signal.SIGTERM)) == 143
    assert interrupted_message(Interrupted(signal.SIGTERM)) == "interrupted (SIGTERM)"


def test_private_tempdir_is_removed_with_what_a_library_put_there():
    import tempfile

    before = tempfile.gettempdir()
    try:
        with private_tempdir("bertrt-test.") as path:
            assert tempfile.gettempdir() == str(path)
            inner = tempfile.mkdtemp(prefix="ort.quant.")  # as onnxruntime's quantizer does
            (path / "x").write_bytes(b"x" * 100)
            raise Interrupted(signal.SIGTERM)
    except Interrupted:
        pass
    assert not path.exists() and inner.startswith(str(path)) and tempfile.gettempdir() == before


def test_pool_workers_end_quietly_on_terminate():
    """A process pool's forked workers get the default SIGTERM back: the pool ends busy workers with SIGTERM (on
    Ctrl-C or an error mid-run), which must not raise bertrt's interrupt inside each of them (a traceback each)."""
    import subprocess
    import sys

    code = ("import time\nfrom bertrt.interrupts import stop_signals_raise\nfrom bertrt.forking import fork_pool\n"
            "with stop_signals_raise():\n    with fork_pool(2) as pool:\n        pool.map_async(time.sleep, [5, 5])\n"
            "        time.sleep(0.5)\n    time.sleep(0.5)\nprint('done')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "done" and "Traceback" not in run.stderr, run.stderr


def test_deferred_signal_is_raised_when_the_block_ends():
    """Inside `deferred` a signal only sets the flag (a library's callback cannot swallow it); it is raised when the
    block ends, replacing the error the cancelled library raised."""
    import os

    from bertrt.interrupts import deferred, stop_signals_raise

    with stop_signals_raise():
        try:
            with deferred() as stop:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # Python runs signal handlers between bytecodes: give it many
                    pass
                assert stop.requested
                raise RuntimeError("Invalid Engine")  # what Polygraphy raises for a cancelled build
        except Interrupted as exc:
            assert exc.signum == signal.SIGTERM
        else:
            raise AssertionError("no interrupt raised")


def test_an_ignored_signal_stays_ignored():
    from bertrt.interrupts import held, stop_signals_raise

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals_raise(), held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
