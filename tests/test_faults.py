"""Fault injection: hooks handed to the training loop; METAGREEDY_FAULT is read once, when a run starts."""
import os

import pytest

import train
from harness import checkpoint, faults
from harness.config import UsageError

TOY = ["--task", "toy", "--outer-steps", "6", "--checkpoint-every", "2", "--no-progress", "--wandb", "disabled"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METAGREEDY_FAULT", raising=False)


def test_the_hooks_handed_in_are_the_ones_the_loop_calls(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--max-bad-steps", "2"], hooks=faults.Faults("nan+@4")) == 1
    assert "the last good checkpoint (outer step 4)" in capsys.readouterr().err
    assert checkpoint.load(path)["step"] == 4


def test_the_variable_is_read_once_when_the_run_starts(tmp_path, monkeypatch):
    class Reading(faults.Hooks):
        def step_start(self, step):
            monkeypatch.setenv("METAGREEDY_FAULT", "kill@5")  # too late: the run has its hooks
    assert train.main(TOY + ["--run-dir", str(tmp_path / "run")], hooks=Reading()) == 0
    assert checkpoint.load(str(tmp_path / "run"))["step"] == 6


def test_a_spec_is_checked_when_it_is_read():
    assert faults.from_environment({}) is faults.NONE
    assert faults.Faults("nan@1,sigterm:evaluate@2").hit("nan", 1)
    with pytest.raises(UsageError, match="METAGREEDY_FAULT: 'explode@3' is not KIND@STEP"):
        faults.from_environment({"METAGREEDY_FAULT": "explode@3"})
    assert not os.environ.get("METAGREEDY_FAULT")
