"""The shipped calibration subset is reproducible by the documented command (README: `python -m
bertrt.calibration.make_calib_subset`), byte for byte."""

from __future__ import annotations

from conftest import TRAIN

import pytest

from bertrt.artifacts import sha256_file
from bertrt.calibration.calib_data import DEFAULT_CALIB_JSON
from bertrt.calibration.make_calib_subset import main


def test_documented_command_reproduces_the_shipped_file(tmp_path, capsys):
    if not TRAIN.is_file():
        pytest.skip(f"the SQuAD train set {TRAIN} is absent: the shipped subset cannot be regenerated")
    output = tmp_path / "squad-train-calib.json.gz"
    assert main(["--train", str(TRAIN), "--output", str(output)]) == 0  # the defaults, as documented
    assert '"questions": 600' in capsys.readouterr().out
    assert sha256_file(output) == sha256_file(DEFAULT_CALIB_JSON)
