"""The command's global behaviour: --version, `python -m bertrt`, --config/--debug/-v before or after the
subcommand, third-party logs quiet unless -v, the default config found in the package from any directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bertrt
from bertrt import cli
from bertrt.errors import BertrtError
from bertrt.pipeline_config import load_config
from bertrt.resources import default_config, embedded_vocab, squad_dev


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"bertrt {bertrt.__version__}\n"


def test_python_m_bertrt(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bertrt", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == f"bertrt {bertrt.__version__}"


@pytest.mark.parametrize("argv", [["--debug", "data", "nope"], ["data", "nope", "--debug"]])
def test_debug_before_or_after_the_subcommand(argv):
    with pytest.raises(BertrtError, match="unknown data file"):
        cli.main(argv)


@pytest.mark.parametrize("before", [True, False])
def test_config_before_or_after_the_subcommand(before, tmp_path, capsys):
    flag = ["--config", str(tmp_path / "missing.yaml")]
    assert cli.main([*flag, "data"] if before else ["data", *flag]) == 2
    err = capsys.readouterr().err
    assert err == f"bertrt data: error: {tmp_path / 'missing.yaml'}: config file not found\n"


def test_error_hint_names_a_flag_that_works(monkeypatch, capsys):
    """The internal-error line says "rerun with --debug"; --debug after the subcommand then shows the traceback."""
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(cli, "fetch", boom)
    assert cli.main(["data", "dev-v2.0"]) == 1
    assert "(rerun with --debug for the traceback)" in capsys.readouterr().err
    with pytest.raises(RuntimeError):
        cli.main(["data", "dev-v2.0", "--debug"])


@pytest.mark.parametrize(("flags", "quiet"), [([], True), (["-v"], False), (["--verbose"], False)])
def test_third_party_logs_quiet_unless_verbose(monkeypatch, flags, quiet):
    calls = []
    monkeypatch.setattr(cli.ort, "set_default_logger_severity", calls.append)
    import logging

    monkeypatch.setattr(logging.getLogger(), "filters", [])
    assert cli.main(["data", *flags]) == 0
    assert calls == ([3] if quiet else [])
    # onnxruntime.quantization's warnings on the root logger are dropped unless -v; errors always pass.
    warning = logging.LogRecord("root", logging.WARNING, "/x/onnxruntime/quantization/quant_utils.py", 1,
                                "Please consider pre-processing before quantization", None, None)
    error = logging.LogRecord("root", logging.ERROR, "/x/onnxruntime/q.py", 1, "bad", None, None)
    assert bool(logging.getLogger().filter(warning)) is not quiet and logging.getLogger().filter(error)


def test_default_config_from_any_directory(tmp_path, monkeypatch):
    """The default config is the package's (not the working directory's), and its relative paths are taken from
    the config file: the embedded vocab and the shipped SQuAD dev, wherever the command runs."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.path == default_config() and cfg.path.is_file()
    assert Path(cfg.get("model", "vocab")).resolve() == embedded_vocab().resolve()
    assert Path(cfg.get("data", "dev")).resolve() == squad_dev().resolve()
    assert default_config().name in cli.build_parser().format_help()  # --help names the file that is used


def test_config_paths_are_relative_to_the_config(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("model:\n  vocab: ../v/vocab.txt\ndata:\n  dev: /abs/dev.json\n")
    monkeypatch.chdir("/")
    cfg = load_config(tmp_path / "conf" / "c.yaml")
    assert Path(cfg.get("model", "vocab")).absolute() == tmp_path / "v" / "vocab.txt"
    assert cfg.get("data", "dev") == "/abs/dev.json"


def test_perf_random_bert_vocab_is_the_packaged_one(monkeypatch, tmp_path):
    """`perf --provider cuda --random-bert` from any directory: its tokenizer's vocab is the package's file (it was a
    path into site-packages that did not exist); the GPU sweep itself is stubbed (no GPU here)."""
    got = {}
    monkeypatch.setattr(cli.api, "perf_gpu", lambda *args, **kwargs: got.update(kwargs) or [])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["perf", "--provider", "cuda", "--random-bert", "base", "--no-progress",
                     "--output", str(tmp_path / "perf.json")]) == 0
    assert Path(got["vocab"]).resolve() == embedded_vocab().resolve() and embedded_vocab().is_file()
