"""train.py end to end: logs, checkpoints, exact resume, bad input, faults, two processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

import train
from harness import checkpoint
from paths import REAL_DATA as SHARED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY = ["--task", "toy", "--outer-steps", "12", "--checkpoint-every", "4", "--no-progress"]
FEWSHOT = ["--task", "omniglot", "--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "2",
           "--meta-batch", "2", "--outer-steps", "4", "--eval-every", "2", "--eval-tasks", "3",
           "--final-eval-tasks", "4", "--checkpoint-every", "2", "--no-progress", "--inner-steps", "2"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("METAGREEDY_FAULT", raising=False)
    monkeypatch.chdir(tmp_path)


def rows(run_dir):
    """The logged rows, without the run's identity (each run has its own)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [{k: v for k, v in json.loads(line).items() if k != "run_id"} for line in fh]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as fh:
        return json.load(fh)


def final_hparams(run_dir):
    return checkpoint.load(run_dir)["hparams"]


def cli(args, env=None, check=None):
    """train.py in a fresh process (for signals and exit codes)."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          env=full_env, timeout=600)
    if check is not None:
        assert proc.returncode == check, proc.stderr[-3000:]
    return proc


# ---- what a run leaves behind ------------------------------------------------------------------------

def test_toy_run_leaves_logs_config_checkpoint_and_wandb_offline(tmp_path):
    run_dir = str(tmp_path / "toy")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "offline"]) == 0
    r = rows(run_dir)
    assert [row["step"] for row in r] == list(range(12))
    for key in ("val_loss", "cosine", "hypergrad_norm", "step_time", "vjps"):
        assert key in r[0]
    s = summary(run_dir)
    assert s["status"] == "finished" and s["dataset"] == "toy" and s["vjps_per_step"] == 10
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    ckpt = checkpoint.load(run_dir)
    assert ckpt["step"] == 12 and ckpt["config"]["task"] == "toy" and "packages" in ckpt["facts"]
    assert "noise" not in ckpt["config"] and "ways" not in ckpt["config"]  # only the toy's settings
    offline = [d for d in os.listdir(os.path.join(run_dir, "wandb")) if d.startswith("offline-run-")]
    assert len(offline) == 1
    files = os.listdir(os.path.join(run_dir, "wandb", offline[0]))
    assert any(f.endswith(".wandb") for f in files)
    with open(os.path.join(run_dir, "wandb", offline[0], [f for f in files if f.endswith(".wandb")][0]), "rb") as fh:
        blob = fh.read()
    assert b"hypergrad_norm" in blob and b"cosine" in blob


def test_wandb_disabled_leaves_no_wandb_files(tmp_path):
    run_dir = str(tmp_path / "toy")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "disabled"]) == 0
    assert not os.path.exists(os.path.join(run_dir, "wandb"))
    assert os.path.exists(os.path.join(run_dir, "metrics.jsonl"))


def test_fewshot_run_writes_the_summary(tmp_path):
    run_dir = str(tmp_path / "fs")
    assert train.main(FEWSHOT + ["--run-dir", run_dir, "--wandb", "offline"]) == 0
    assert any(d.startswith("offline-run-") for d in os.listdir(os.path.join(run_dir, "wandb")))
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and os.path.exists(os.path.join(run_dir, "config.yaml"))
    s = summary(run_dir)
    for key in ("meta_val_acc", "meta_val_ci95", "meta_test_acc", "meta_test_ci95", "wall_time", "vjps_per_step"):
        assert key in s
    assert s["dataset"] == "synthetic"
    assert any("meta_val_acc" in row for row in rows(run_dir))


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "MNIST", "raw")),
                    reason="real MNIST not found (METAGREEDY_TEST_DATA or ./data)")
def test_hyper_cleaning_run_writes_the_summary(tmp_path):
    run_dir = str(tmp_path / "hc")
    args = ["--task", "hyper_cleaning", "--data-root", SHARED, "--outer-steps", "2", "--inner-steps", "2",
            "--n-train", "100", "--val-batch", "200", "--eval-every", "2", "--no-progress", "--run-dir", run_dir,
            "--wandb", "offline"]
    assert train.main(args) == 0
    assert any(d.startswith("offline-run-") for d in os.listdir(os.path.join(run_dir, "wandb")))
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and os.path.exists(os.path.join(run_dir, "config.yaml"))
    s = summary(run_dir)
    for key in ("test_acc", "val_acc", "detect_f1", "wall_time", "vjps_per_step"):
        assert key in s


def test_config_file_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: toy\ngamma: 0.5\nouter_steps: 3\n")
    run_dir = str(tmp_path / "r")
    assert train.main(["--config", str(cfg), "--outer-steps", "2", "--run-dir", run_dir, "--wandb", "disabled",
                       "--no-progress"]) == 0
    import yaml
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        resolved = yaml.safe_load(fh)
    assert resolved["gamma"] == 0.5 and resolved["outer_steps"] == 2 and resolved["inner_steps"] == 10


# ---- exact resume after SIGKILL ---------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [pytest.param("kill@7", marks=pytest.mark.slow), "kill_in_checkpoint@8"])
def test_killed_run_resumes_exactly(tmp_path, fault):
    base = TOY + ["--method", "greedy", "--gamma", "0.5", "--wandb", "disabled"]
    straight = str(tmp_path / "straight")
    cli(base + ["--run-dir", straight], check=0)
    killed = str(tmp_path / "killed")
    proc = cli(base + ["--run-dir", killed], env={"METAGREEDY_FAULT": fault})
    assert proc.returncode == -9
    assert checkpoint.load(killed)["step"] == 4
    cli(["--resume", killed, "--no-progress"], check=0)
    a, b = final_hparams(straight), final_hparams(killed)
    assert torch.equal(a["alpha"], b["alpha"])
    assert [r for r in rows(straight)] == [dict(r, step_time=x["step_time"]) for r, x in zip(rows(killed), rows(straight))]
    sa, sb = summary(straight), summary(killed)
    assert sa["val_loss"] == sb["val_loss"] and sa["alpha"] == sb["alpha"]


@pytest.mark.slow  # tests/test_runs.py stops Omniglot runs at every moment in-process, in seconds
def test_fewshot_resume_is_exact(tmp_path):
    base = FEWSHOT + ["--wandb", "disabled", "--dtype", "float64"]
    straight, killed = str(tmp_path / "s"), str(tmp_path / "k")
    cli(base + ["--run-dir", straight], check=0)
    assert cli(base + ["--run-dir", killed], env={"METAGREEDY_FAULT": "kill@3"}).returncode == -9
    cli(["--resume", killed], check=0)
    for name, value in final_hparams(straight).items():
        assert torch.equal(value, final_hparams(killed)[name])
    assert summary(straight)["meta_test_acc"] == summary(killed)["meta_test_acc"]


# ---- bad input: exit 2, one line, no traceback, nothing written --------------------------------------------

BAD = [
    (["--ways", "0"], "--ways must be at least 1"),
    (["--shots", "-1"], "--shots must be at least 1"),
    (["--queries", "abc"], "--queries must be an integer"),
    (["--method", "magic"], "unknown --method 'magic'"),
    (["--task", "chess"], "unknown --task 'chess'"),
    (["--dataset", "cifar"], "unknown --dataset 'cifar'"),
    (["--task", "hyper_cleaning", "--dataset", "cifar"], "unknown --dataset 'cifar'"),
    (["--gamma", "1.5"], "--gamma must be in [0.0, 1.0]"),
    (["--inner-steps", "0"], "--inner-steps must be at least 1"),
    (["--config", "nope.yaml"], "does not exist"),
    (["--dataset", "synthetic", "--ways", "5000"], "5000-way tasks need 5000 classes"),
    (["--dataset", "synthetic", "--shots", "10", "--queries", "11"], "more than the 20 drawings"),
    (["--resume", "empty"], "no checkpoint"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--method", "full", "--step-val-batch", "5"], "--step-val-batch applies to --method greedy, not full"),
    (["--variant", "final", "--step-val-batch", "5"], "applies to --method greedy --variant eq6 only"),
    (["--dataset", "synthetic", "--step-val-batch", "7"], "multiple of --ways = 5"),
    (["--dataset", "synthetic", "--step-val-batch", "55"], "at most the 50 queries"),
    (["--task", "toy", "--step-val-batch", "4"], "applies to --task omniglot and hyper_cleaning, not toy"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--task", "hyper_cleaning", "--n-train", "60001"], "more than the 60000 examples"),
    (["--task", "hyper_cleaning", "--protocol", "heldout", "--n-val", "0"], "--n-val must be at least 1"),
    (["--task", "hyper_cleaning", "--protocol", "heldout", "--n-val", "59001"], "--n-train + --n-val = 60001"),
    (["--seed", "1e23"], "--seed must be an integer"),
    (["--seed", str(10**23)], "--seed must be an integer in [0, 2^63)"),
    (["--inner-lr", "inf"], "--inner-lr must be a positive finite number"),
    (["--outer-lr", "inf"], "--outer-lr must be a positive finite number"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    run_dir = str(tmp_path / "run")
    assert train.main(args + ["--run-dir", run_dir, "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not os.path.exists(run_dir)


@pytest.mark.parametrize("content,message", [("task: [toy\n", "not valid YAML"), ("gama: 0.9\n", "unknown setting 'gama'"),
                                             ("gamma: high\n", "'gamma' must be float"),
                                             ("ways: 2.5\n", "'ways' must be int")])
def test_bad_config_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert train.main(["--config", str(path), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_omniglot_required_but_absent_offline(tmp_path):
    proc = cli(["--dataset", "omniglot", "--data-root", str(tmp_path / "none"), "--wandb", "disabled"],
               env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Omniglot is not under" in proc.stderr and "download=True" in proc.stderr


def test_resume_of_another_task_is_refused(tmp_path, capsys):
    run_dir = str(tmp_path / "toy")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "disabled"]) == 0
    capsys.readouterr()
    assert train.main(["--resume", run_dir, "--task", "omniglot"]) == 2
    assert "--task 'omniglot' (the run has 'toy')" in capsys.readouterr().err


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert train.main(["--resume", str(tmp_path / "r")]) == 2
    assert "cannot be read" in capsys.readouterr().err


# ---- faults -----------------------------------------------------------------------------------------------

def test_nan_hypergradient_is_skipped_and_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGREEDY_FAULT", "nan@3")
    run_dir = str(tmp_path / "r")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "disabled"]) == 0
    r = rows(run_dir)
    assert r[3]["skipped"] == 1 and sum(row["skipped"] for row in r) == 1
    assert r[3]["alpha_0"] == r[4]["alpha_0"]  # no outer step was taken at step 3
    assert summary(run_dir)["status"] == "finished"


def test_repeated_nans_stop_the_run_with_the_good_checkpoint_intact(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAGREEDY_FAULT", "nan+@6")
    run_dir = str(tmp_path / "r")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "disabled", "--max-bad-steps", "3"]) == 1
    assert "3 non-finite hypergradients in a row" in capsys.readouterr().err
    ckpt = checkpoint.load(run_dir)
    # steps 6 and 7 were skipped, so the checkpoint at 8 still holds the finite alpha of step 5
    assert ckpt["step"] == 8 and torch.isfinite(ckpt["hparams"]["alpha"]).all()
    assert summary(run_dir)["status"] == "diverged"


@pytest.mark.slow  # tests/test_runs.py sends SIGINT at each moment of an in-process run
def test_ctrl_c_writes_checkpoint_and_summary(tmp_path):
    run_dir = str(tmp_path / "r")
    proc = cli(TOY + ["--run-dir", run_dir, "--wandb", "disabled"], env={"METAGREEDY_FAULT": "interrupt@5"})
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert summary(run_dir)["status"] == "interrupted"
    assert checkpoint.load(run_dir)["step"] == 5
    cli(["--resume", run_dir], check=0)
    assert summary(run_dir)["status"] == "finished"


def test_wandb_failure_never_stops_training(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise ConnectionError("W&B unreachable")

    run_dir = str(tmp_path / "r")
    monkeypatch.setattr(wandb, "init", broken)
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "online"]) == 0
    assert "W&B failed (ConnectionError" in capsys.readouterr().err
    assert len(rows(run_dir)) == 12


def test_wandb_failing_mid_run(tmp_path, monkeypatch, capsys):
    from harness import runlog
    real_log = runlog.RunLog.log

    def flaky(self, metrics, step):
        if self.wandb is not None and step == 5:
            self.wandb.log = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("server gone"))
        return real_log(self, metrics, step)

    monkeypatch.setattr(runlog.RunLog, "log", flaky)
    run_dir = str(tmp_path / "r")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "offline"]) == 0
    assert capsys.readouterr().err.count("W&B failed") == 1
    assert len(rows(run_dir)) == 12


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from harness.rundir import WriteError
    run_dir = str(tmp_path / "r")
    assert train.main(TOY + ["--run-dir", run_dir, "--wandb", "disabled"]) == 0
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="No space left on device.*previous checkpoint is untouched"):
        checkpoint.save(run_dir, 2, {"step": 2})
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.pt.tmp"))


# ---- two processes ----------------------------------------------------------------------------------------

def test_two_processes_equal_one(tmp_path):
    base = FEWSHOT + ["--meta-batch", "4", "--outer-steps", "2", "--wandb", "disabled", "--dtype", "float64",
                      "--final-eval-tasks", "2"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    # torchrun gives each process one thread; so does the reference run, so that both use the same kernels
    cli(base + ["--run-dir", one], env={"OMP_NUM_THREADS": "1"}, check=0)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, "train.py"), *base, "--run-dir", two], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, value in final_hparams(one).items():
        torch.testing.assert_close(final_hparams(two)[name], value, rtol=1e-12, atol=1e-14)
    assert summary(two)["status"] == "finished"
    for a, b in zip(rows(one), rows(two)):  # rank 0 logs the whole meta-batch's means, not its own share
        for key in ("val_loss", "train_loss", "train_query_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), key


def test_auto_without_data_or_network_runs_synthetic_and_says_so(tmp_path):
    run_dir = str(tmp_path / "auto")
    args = [a for a in FEWSHOT if a not in ("--dataset", "synthetic")]
    proc = cli(args + ["--data-root", str(tmp_path / "empty"), "--run-dir", run_dir, "--wandb", "disabled"],
               env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}, check=0)
    warnings = [line for line in proc.stderr.splitlines() if "synthetic alphabet" in line]
    assert len(warnings) == 2, proc.stderr[-2000:]  # at the start and at the end
    assert summary(run_dir)["dataset"] == "synthetic"
    import yaml
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        stored = yaml.safe_load(fh)
    assert stored["facts"]["dataset"] == "synthetic" and stored["dataset"] == "auto" and stored["queries"] == 2


@pytest.mark.parametrize("task", ["hyper_cleaning", "omniglot"])
def test_corrupt_data_root_is_one_clear_line(tmp_path, capsys, task):
    root = tmp_path / "data"
    if task == "hyper_cleaning":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
        args = ["--task", "hyper_cleaning", "--dataset", "mnist"]
    else:
        for part in ("background", "evaluation"):
            char = root / "omniglot-py" / f"images_{part}" / "Alpha" / "character01"
            char.mkdir(parents=True)
            for d in range(20):
                (char / f"0001_{d + 1:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        args = ["--dataset", "omniglot"]
    run_dir = str(tmp_path / "run")
    assert train.main(args + ["--data-root", str(root), "--run-dir", run_dir, "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt" in err[0], err
    assert not os.path.exists(run_dir)
