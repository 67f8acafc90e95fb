"""A run's files are the researcher's data: a run directory belongs to one run, resume is consistent
or refused, a stop signal at any moment ends in an exact checkpoint, checkpoints cannot run code,
and a full disk loses nothing. Runs are in-process (train.main) unless a test needs a process."""
import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

import tasks
import train
from harness import checkpoint, rundir
from metagreedy.data import synthetic_alphabet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY = ["--task", "toy", "--outer-steps", "30", "--checkpoint-every", "7", "--no-progress", "--wandb", "disabled"]
FEWSHOT = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "2", "--meta-batch", "2",
           "--inner-steps", "2", "--outer-steps", "6", "--eval-every", "2", "--eval-tasks", "3", "--final-eval-tasks",
           "4", "--checkpoint-every", "4", "--dtype", "float64", "--no-progress", "--wandb", "disabled"]
TIMING = {"step_time", "wall_time", "total_time", "run_id"}  # and the identity: each run has its own


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("METAGREEDY_FAULT", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def small_alphabets():
    return synthetic_alphabet(40), synthetic_alphabet(20, seed=1)


@pytest.fixture
def small_omniglot(monkeypatch, small_alphabets):
    """Omniglot runs on a 60-class synthetic alphabet: seconds, not the full alphabet's minute."""
    monkeypatch.setattr(tasks.load("omniglot"), "load_alphabets", lambda name, root: small_alphabets)


def snapshot(run_dir):
    out = {}
    for name in sorted(os.listdir(run_dir)):
        if name != rundir.LOCK:
            with open(os.path.join(run_dir, name), "rb") as fh:
                out[name] = fh.read()
    return out


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in fh]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as fh:
        return {k: v for k, v in json.load(fh).items() if k not in TIMING}


def assert_same_run(a, b):
    """Bit-identical: alpha, the outer optimizer's state, every logged value but timings, the summary."""
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert ca["step"] == cb["step"]
    for name in ca["hparams"]:
        assert torch.equal(ca["hparams"][name], cb["hparams"][name]), name
    for ka, kb in zip(ca["outer_opt"]["state"].values(), cb["outer_opt"]["state"].values()):
        for key in ka:
            assert torch.equal(torch.as_tensor(ka[key]), torch.as_tensor(kb[key])), key
    assert rows(a) == rows(b)
    assert summary(a) == summary(b)


def no_temporary_files(run_dir):
    return not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs to compare with, one per argument list."""
    done = {}

    def get(args, setup=None):
        key = tuple(args)
        if key not in done:
            path = str(tmp_path_factory.mktemp("reference") / "run")
            assert train.main(args + ["--run-dir", path]) == 0
            done[key] = path
        return done[key]
    return get


# ---- a run directory belongs to one run -----------------------------------------------------------------

def test_a_new_run_refuses_a_directory_that_holds_a_run(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path]) == 0
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(TOY + ["--run-dir", path, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run: continue it with --resume" in err[0]
    assert snapshot(path) == before


def test_a_second_live_process_is_refused_and_the_lock_dies_with_its_owner(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "10"]) == 0
    before = snapshot(path)
    owner = rundir.RunDir(path, new=False)  # another live process holding the run
    capsys.readouterr()
    try:
        assert train.main(["--resume", path, "--outer-steps", "20"]) == 2
        assert f"is in use by another process (pid {os.getpid()})" in capsys.readouterr().err
        assert snapshot(path) == before
        fresh = str(tmp_path / "fresh")
        starting = rundir.RunDir(fresh, new=True)  # a run starting there, nothing written yet
        assert train.main(TOY + ["--run-dir", fresh]) == 2
        assert "in use by another process" in capsys.readouterr().err
        starting.close()
    finally:
        owner.close()
    assert train.main(["--resume", path, "--outer-steps", "20"]) == 0


def test_a_run_directory_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert train.main(TOY + ["--run-dir", str(tmp_path / "f")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    assert train.main(TOY + ["--run-dir", str(tmp_path / "ro" / "run")]) == 2
    assert "cannot use run directory" in capsys.readouterr().err


def test_default_run_directories_never_collide(tmp_path):
    base = str(tmp_path / "runs" / "toy-greedy-seed0")
    first, second = rundir.RunDir.fresh(base), rundir.RunDir.fresh(base)  # the same second, one process each
    assert second.path != first.path and second.path.startswith(first.path)
    first.close()
    second.close()


def test_a_link_planted_in_a_run_directory_is_never_written_through(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    path = tmp_path / "run"
    path.mkdir()
    (path / "checkpoint.pt.tmp").symlink_to(victim)
    (path / "config.yaml.tmp").symlink_to(victim)
    assert train.main(TOY + ["--run-dir", str(path), "--outer-steps", "3"]) == 0
    assert victim.read_text() == "mine"
    for name in (rundir.LOCK, "metrics.jsonl"):
        fresh = tmp_path / f"run-{name}"
        fresh.mkdir()
        (fresh / name).symlink_to(victim)
        capsys.readouterr()
        assert train.main(TOY + ["--run-dir", str(fresh), "--outer-steps", "3"]) in (1, 2)
        assert victim.read_text() == "mine"


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_a_lock_that_is_not_a_regular_file_is_one_line_and_changes_nothing(tmp_path, capsys, kind):
    """A FIFO at .lock would block an open for ever, and truncating one fails: every lock is opened
    without blocking and refused unless it is a regular file, naming it."""
    import socket
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "5"]) == 0
    lock = os.path.join(path, rundir.LOCK)
    os.remove(lock)
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "directory":
        os.mkdir(lock)
    else:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(lock)
    before = {name: data for name, data in snapshot(path).items()} if kind != "directory" else None
    fresh = str(tmp_path / "fresh")
    os.mkdir(fresh)
    os.mkfifo(os.path.join(fresh, rundir.LOCK))
    for argv in (["--resume", path, "--outer-steps", "8"], TOY + ["--run-dir", fresh]):
        capsys.readouterr()
        assert train.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "/.lock' is not a regular file" in err[0], err
    assert kind == "directory" or snapshot(path) == before
    assert checkpoint.load(path)["step"] == 5 and os.listdir(fresh) == [rundir.LOCK]


@pytest.mark.parametrize("call", ["pwrite", "ftruncate"])
@pytest.mark.parametrize("where", ["run-dir", "default", "resume"])
def test_a_full_disk_when_the_lock_is_taken_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, call,
                                                                            where):
    """The lock is the first file of a run: a full disk there is one line naming it (exit 1), and a new
    run leaves no directory behind (nor the parents it made); a resumed run's files are untouched."""
    path = str(tmp_path / "runs" / "new" / "run")
    if where == "resume":
        assert train.main(TOY + ["--run-dir", path, "--outer-steps", "5"]) == 0
        before = snapshot(path)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, call, full)
    argv = {"run-dir": TOY + ["--run-dir", path], "default": TOY, "resume": ["--resume", path, "--outer-steps", "8"]}
    capsys.readouterr()
    assert train.main(argv[where]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not write its lock" in err[0] and "/.lock'" in err[0], err
    assert "No space left on device" in err[0]
    monkeypatch.undo()
    if where == "resume":
        assert snapshot(path) == before
    else:
        assert os.listdir(tmp_path) == []


# ---- resume is consistent or refused ---------------------------------------------------------------------

def test_resume_refuses_settings_that_would_change_the_run_and_lists_them(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "12"]) == 0
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--gamma", "0.5", "--inner-lr", "0.2", "--method", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--gamma 0.5 (the run has 0.9)" in err and "--inner-lr 0.2 (the run has 0.1)" in err
    assert "--method 'full' (the run has 'greedy')" in err and "Only --outer-steps" in err
    assert train.main(["--resume", path, "--noise", "0.5"]) == 2
    assert "not a setting of this toy / greedy run" in capsys.readouterr().err
    assert train.main(["--resume", path, "--outer-steps", "10"]) == 2
    assert "below the 12 outer steps this run has done" in capsys.readouterr().err
    assert train.main(["--resume", path, "--run-dir", str(tmp_path / "elsewhere")]) == 2
    assert snapshot(path) == before


def test_resume_takes_what_cannot_change_the_results(tmp_path, reference):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "12"]) == 0
    assert train.main(["--resume", path, "--outer-steps", "30", "--device", "cpu", "--wandb", "disabled",
                       "--progress=false", "--checkpoint-every", "5", "--gamma", "0.9"]) == 0
    ref = reference(TOY)
    # a finished 12-step run extended to 30: the same alpha as 30 steps at once (its rows differ only
    # in the evaluation logged at the end of the first 12)
    assert torch.equal(checkpoint.load(path)["hparams"]["alpha"], checkpoint.load(ref)["hparams"]["alpha"])
    assert summary(path)["steps_done"] == 30


def test_a_damaged_or_foreign_checkpoint_is_refused(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "4"]) == 0
    payload = checkpoint.load(path)
    config = payload["config"]
    for change, message in [
            ({"task": "omniglot"}, "its task and its config disagree"),
            ({"format": 1}, "written by another version"), ({"hparams": None}, "'hparams' is missing"),
            ({"config": {k: v for k, v in config.items() if k != "gamma"}}, "lacks (['gamma'])"),
            ({"config": {**config, "gamma": 7.0}}, "holds a setting no run can have"),
            ({"config": {**config, "method": "magic"}}, "unknown task or method"),
            ({"rng": {"torch": torch.zeros(3)}}, "is damaged (TypeError"),
            ({"outer_opt": {"state": {}, "param_groups": []}}, "is damaged (ValueError"),
            ({"pending_row": [1]}, "a pending row or facts that are not mappings")]:
        torch.save({**payload, **change}, os.path.join(path, "checkpoint.pt"))
        before = snapshot(path)
        capsys.readouterr()
        assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert snapshot(path) == before
    torch.save({"layer.weight": torch.zeros(2)}, os.path.join(path, "checkpoint.pt"))  # not one of ours at all
    assert train.main(["--resume", path]) == 2
    assert "is not a metagreedy checkpoint" in capsys.readouterr().err


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    path = tmp_path / "run"
    path.mkdir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"step": 1, "config": Payload()}, str(path / "checkpoint.pt"))
    assert train.main(["--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load it (loading it could run code)" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_damaged_row_before_the_checkpoint_is_refused_and_nothing_is_dropped(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "20"]) == 0
    metrics = os.path.join(path, "metrics.jsonl")
    with open(metrics) as fh:
        lines = fh.readlines()
    lines.insert(6, "garbage\n")
    with open(metrics, "w") as fh:
        fh.writelines(lines)
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "25"]) == 2
    assert "line 7 is damaged (not JSON)" in capsys.readouterr().err
    assert snapshot(path) == before


def test_resuming_a_finished_run_leaves_it_as_it_is(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "5"]) == 0
    before = snapshot(path)
    assert train.main(["--resume", path]) == 0
    assert "has finished its 5 outer steps; nothing to do" in capsys.readouterr().err
    assert snapshot(path) == before


def test_a_resumed_run_keeps_the_dataset_it_used(tmp_path, monkeypatch, small_omniglot, capsys):
    """auto chose the synthetic alphabet; data that appears later does not switch the run to it."""
    path = str(tmp_path / "run")
    args = [a for a in FEWSHOT if a not in ("--dataset", "synthetic")] + ["--data-root", str(tmp_path / "none")]
    monkeypatch.setattr(tasks.load("omniglot"), "available", lambda root: False)
    monkeypatch.setattr(tasks.load("omniglot"), "download", lambda root: (_ for _ in ()).throw(
        __import__("metagreedy.data", fromlist=["DataError"]).DataError("offline")))
    assert train.main(args + ["--run-dir", path, "--outer-steps", "2"]) == 0
    monkeypatch.setattr(tasks.load("omniglot"), "available", lambda root: True)  # Omniglot appears
    assert train.main(["--resume", path, "--outer-steps", "3"]) == 0
    state = checkpoint.load(path)
    assert state["config"]["dataset"] == "synthetic" and state["facts"]["dataset"] == "synthetic"
    assert summary(path)["dataset"] == "synthetic"


def test_metrics_are_repaired_to_what_the_checkpoint_covers(tmp_path, monkeypatch, reference):
    path = str(tmp_path / "run")
    monkeypatch.setenv("METAGREEDY_FAULT", "sigterm:hypergradient@20")
    assert train.main(TOY + ["--run-dir", path]) == 130
    monkeypatch.delenv("METAGREEDY_FAULT")
    with open(os.path.join(path, "metrics.jsonl"), "a") as fh:  # rows past the checkpoint, then a torn line
        fh.write(json.dumps({"step": 20, "val_loss": 1.0}) + "\n" + '{"step": 21, "val_lo')
    assert train.main(["--resume", path]) == 0
    assert_same_run(path, reference(TOY))


# ---- a stop signal at any moment -----------------------------------------------------------------------------

@pytest.mark.parametrize("fault,stopped_at", [
    ("sigterm:hypergradient@0", 0),  # before the first outer step completes
    ("sigterm:hypergradient@12", 12),  # the step in progress is thrown away
    ("sigint:checkpoint@14", 14),  # the periodic checkpoint completes first
    ("sigterm:hypergradient@12,sigint:checkpoint@12", 12),  # a second signal while the first is handled
    ("interrupt@5", 5),  # Ctrl-C
])
def test_toy_stopped_at_any_moment_resumes_bit_identical(tmp_path, monkeypatch, reference, fault, stopped_at):
    path = str(tmp_path / "run")
    monkeypatch.setenv("METAGREEDY_FAULT", fault)
    assert train.main(TOY + ["--run-dir", path]) == 130
    assert checkpoint.load(path)["step"] == stopped_at and summary(path)["status"] == "interrupted"
    assert len(rows(path)) == stopped_at and no_temporary_files(path)
    monkeypatch.delenv("METAGREEDY_FAULT")
    assert train.main(["--resume", path]) == 0
    assert_same_run(path, reference(TOY))


@pytest.mark.parametrize("fault,stopped_at,pending", [
    pytest.param("sigterm:hypergradient@3", 3, False, marks=pytest.mark.slow),  # the toy covers this moment
    ("sigterm:evaluate@3", 4, True),  # the outer step is done, its evaluation not: finished on resume
    pytest.param("sigint:evaluate@5", 6, True, marks=pytest.mark.slow),  # the last step's evaluation
    ("sigterm:final@6", 6, False),  # the final evaluation
    ("sigterm:evaluate@3,sigint:checkpoint@4", 4, True),  # a second signal while the first is handled
])
def test_omniglot_stopped_at_any_moment_resumes_bit_identical(tmp_path, monkeypatch, small_omniglot, reference,
                                                              fault, stopped_at, pending):
    ref = reference(FEWSHOT)
    path = str(tmp_path / "run")
    monkeypatch.setenv("METAGREEDY_FAULT", fault)
    assert train.main(FEWSHOT + ["--run-dir", path]) == 130
    state = checkpoint.load(path)
    assert state["step"] == stopped_at and (state["pending_row"] is not None) == pending
    assert summary(path)["status"] == "interrupted" and "meta_test_acc" not in summary(path)
    assert no_temporary_files(path)
    monkeypatch.delenv("METAGREEDY_FAULT")
    assert train.main(["--resume", path]) == 0
    assert_same_run(path, ref)
    assert summary(path)["status"] == "finished" and "meta_test_acc" in summary(path)


def signalled(argv, ready, sig, repeat=False):
    """A process of the checkout (``argv`` after the interpreter), sent ``sig`` as soon as a line of
    its stderr satisfies ``ready`` (with ``repeat``, again every few milliseconds until it ends):
    ``(exit status, its other stderr lines)``. ``-X importtime`` lines (an import finished) are
    the moments of start-up a test can wait for; they are left out of the lines returned."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, "WANDB_MODE": "disabled"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if ready(line):
            break
    proc.send_signal(sig)
    while repeat:
        try:
            proc.wait(timeout=0.005)
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    lines += proc.stderr.readlines()
    proc.stderr.close()
    return proc.wait(), [line.rstrip("\n") for line in lines if not line.startswith("import time:")]


def imported(name):
    """``ready`` for :func:`signalled`: the import of module ``name`` has just finished."""
    return lambda line: line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == name


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_that_keep_coming_end_the_run_with_130_and_whole_files(tmp_path, sig):
    """A second (third, ...) signal, even while the interpreter shuts down after the run wrote its
    checkpoint and summary, changes neither the files nor the exit status; the run resumes."""
    path = str(tmp_path / "run")
    status, err = signalled(["train.py", *TOY, "--outer-steps", "100000", "--run-dir", path],
                            lambda line: line.startswith("facts:"), sig, repeat=True)
    assert status == 130 and not any("Traceback" in line for line in err), err
    assert summary(path)["status"] == "interrupted" and checkpoint.load(path)["step"] == len(rows(path))
    assert no_temporary_files(path)
    assert train.main(["--resume", path, "--outer-steps", str(checkpoint.load(path)["step"] + 3)]) == 0


@pytest.mark.parametrize("module", ["torch", "harness.config"])
def test_a_stop_during_the_imports_at_start_is_one_line_and_130(tmp_path, module):
    path = str(tmp_path / "run")
    status, err = signalled(["-X", "importtime", "train.py", *TOY, "--run-dir", path], imported(module),
                            signal.SIGINT)
    assert status == 130 and err == ["interrupted before the first outer step; nothing was written"], err
    assert not os.path.exists(path)


# ---- faults: a full disk, a diverging run -------------------------------------------------------------------

def fail_writes_of(monkeypatch, name):
    """ENOSPC when the temporary file of ``name`` is flushed to disk (all writes go through one)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1] == name + ".tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("name", ["config.yaml", "summary.json", "checkpoint.pt"])
def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys, reference, name):
    path = str(tmp_path / "run")
    fail_writes_of(monkeypatch, name)
    assert train.main(TOY + ["--run-dir", path]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not write") and "No space left on device" in err[-1]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    if name == "checkpoint.pt":  # the first checkpoint comes first: nothing of the run was written,
        assert not os.path.exists(path)  # and no half-made directory (its lock alone) is left
        assert train.main(TOY + ["--run-dir", path]) == 0
    else:  # the checkpoint of step 0 (config.yaml) or 30 (summary.json) is there
        assert no_temporary_files(path)
        assert train.main(["--resume", path]) == 0
    assert_same_run(path, reference(TOY))


def test_a_full_disk_while_logging_metrics_loses_nothing(tmp_path, monkeypatch, capsys, reference):
    from harness import runlog
    real_log = runlog.RunLog.log

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    def log(self, metrics, step):
        if step == 10:
            self._metrics.close()
            self._metrics = Full()
        return real_log(self, metrics, step)

    monkeypatch.setattr(runlog.RunLog, "log", log)
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path]) == 1
    assert "could not write" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert checkpoint.load(path)["step"] == 7
    assert train.main(["--resume", path]) == 0
    assert_same_run(path, reference(TOY))


def test_a_run_diverging_in_its_final_evaluation_is_one_line(tmp_path, capsys):
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--outer-steps", "2", "--inner-lr", "1e23"]) == 1
    err = capsys.readouterr().err
    assert "the final evaluation failed: train_loss is" in err and "Traceback" not in err
    assert summary(path)["status"] == "diverged" and checkpoint.load(path)["step"] == 2


def test_a_diverged_run_names_a_checkpoint_that_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAGREEDY_FAULT", "nan+@0")
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--max-bad-steps", "2"]) == 1
    assert "the last good checkpoint (outer step 0)" in capsys.readouterr().err
    assert checkpoint.load(path)["step"] == 0


# ---- bad input is refused before anything is built ------------------------------------------------------

@pytest.mark.parametrize("args,message", [(["--ways", "5000"], "5000-way tasks need 5000 classes"),
                                          (["--step-val-batch", "7"], "multiple of --ways = 5"),
                                          (["--shots", "10", "--queries", "11"], "more than the 20 drawings")])
def test_omniglot_settings_are_checked_before_any_data_is_built(monkeypatch, capsys, args, message):
    def never(*a, **k):
        raise AssertionError("data was built before the settings were checked")
    monkeypatch.setattr(tasks.load("omniglot"), "load_alphabets", never)
    assert train.main(["--dataset", "synthetic", "--wandb", "disabled", *args]) == 2
    assert message in capsys.readouterr().err


LONG = ["--task", "long_horizon", "--dataset", "synthetic"]


@pytest.mark.parametrize("args,named", [
    (LONG + ["--inner-steps", "1000000000"], "--inner-steps 1000000000 x --batch-size 64"),
    (LONG + ["--hidden", "1000000000"], "--hidden 1000000000 (the MLP's weights)"),
    (LONG + ["--n-train", "1000000000"], "--n-train 1000000000 + --n-val 1000 (the data)"),
    (LONG + ["--method", "full", "--inner-steps", "1000000", "--batch-size", "1"],
     "--method full through --inner-steps 1000000"),
    (["--task", "hyper_cleaning", "--method", "truncated", "--inner-steps", "100000", "--k", "100000"],
     "--method truncated through --k 100000 inner steps"),
    (["--dataset", "synthetic", "--loop", "batched", "--meta-batch", "100000"], "--meta-batch 100000 with --loop"),
    (["--task", "toy", "--method", "full", "--inner-steps", "1000000000"], "--method full through --inner-steps"),
])
def test_sizes_the_machine_cannot_hold_are_refused_before_anything_is_built(tmp_path, monkeypatch, capsys, args,
                                                                           named):
    """Every setting that sizes a tensor is weighed against the machine's memory (here 16 GB) before
    the data, the model or a file is made: one line that names it, exit 2."""
    from harness import settings
    monkeypatch.setattr(settings, "machine_memory", lambda: 16 * 10**9)
    for module in ("long_horizon", "hyper_cleaning", "omniglot", "toy"):
        monkeypatch.setattr(tasks.load(module), "Task", lambda *a, **k: pytest.fail("the task was built"))
    path = str(tmp_path / "run")
    assert train.main(args + ["--run-dir", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "more than the 16.0 GB this machine has" in err[0], err
    assert not os.path.exists(path)


@pytest.mark.parametrize("task", tasks.NAMES)
def test_the_memory_estimates_refuse_no_run_of_the_paper(task):
    """The estimates are lower bounds: every task's default run takes less than 1 GB by them, and
    --method full through a thousand inner steps less than 16 GB."""
    from harness import config, settings
    for extra, limit in (([], 10**9), (["--method", "full", "--inner-steps", "1000"], 16 * 10**9)):
        cfg = config.resolve(["--task", task, *extra])
        assert 0 < sum(tasks.load(task).memory(cfg).values()) < limit
        settings.fits_in_memory(tasks.load(task).memory(cfg), memory=limit)
    with pytest.raises(settings.UsageError, match="the run at least 2 bytes: more than the 1 bytes"):
        settings.fits_in_memory({"a": 1, "b": 1}, memory=1)


def test_wandb_online_without_a_server_falls_back_to_offline_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("WANDB_MODE")
    path = str(tmp_path / "run")
    assert train.main(TOY + ["--run-dir", path, "--wandb", "online", "--outer-steps", "3"]) == 0
    assert "W&B server unreachable" in capsys.readouterr().err
    assert any(d.startswith("offline-run-") for d in os.listdir(os.path.join(path, "wandb")))


def test_an_error_about_a_huge_path_is_still_one_bounded_line(tmp_path, monkeypatch, capsys):
    from metagreedy.data import omniglot
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # never the network, whatever the machine
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setattr(tasks.load("omniglot"), "download", lambda root: omniglot.load_omniglot(root))  # its DataError
    root = str(tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200))
    assert train.main(["--dataset", "omniglot", "--data-root", root, "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1100 and "Omniglot is not under" in err



def test_a_checkpoint_stored_before_a_setting_existed_resumes_with_its_earlier_behaviour(tmp_path):
    """A run stored without a setting added since (tf32) reads as that setting's earlier behaviour
    and resumes to the same end as a run never interrupted."""
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert train.main(TOY + ["--run-dir", whole, "--outer-steps", "14"]) == 0
    assert train.main(TOY + ["--run-dir", part, "--outer-steps", "7"]) == 0
    payload = torch.load(os.path.join(part, checkpoint.LATEST), weights_only=True)
    del payload["config"]["tf32"]
    torch.save(payload, os.path.join(part, checkpoint.LATEST))
    with open(os.path.join(part, "config.yaml")) as fh:
        stored = yaml.safe_load(fh)
    del stored["tf32"]  # config.yaml of such a run lacks it too
    rundir.write_yaml(os.path.join(part, "config.yaml"), stored)
    assert checkpoint.load(part)["config"]["tf32"] is None
    assert train.main(["--resume", part, "--outer-steps", "14"]) == 0
    assert torch.equal(checkpoint.load(part)["hparams"]["alpha"], checkpoint.load(whole)["hparams"]["alpha"])


LEVELS = ["--init", "fresh", "--loss-reduction", "sum", "--eval-queries", "inductive", "--val-split", "alphabets"]


def test_omniglot_with_the_level_settings_stopped_during_an_evaluation_resumes_bit_identical(
        tmp_path, monkeypatch, small_omniglot, reference):
    """A fresh start per task (keyed by the task), summed losses, inductive evaluation and an alphabet
    split are functions of the settings alone: a resumed run repeats them exactly."""
    ref = reference(FEWSHOT + LEVELS)
    path = str(tmp_path / "run")
    monkeypatch.setenv("METAGREEDY_FAULT", "sigterm:evaluate@3")
    assert train.main(FEWSHOT + LEVELS + ["--run-dir", path]) == 130
    monkeypatch.delenv("METAGREEDY_FAULT")
    assert train.main(["--resume", path]) == 0
    assert_same_run(path, ref)
    assert rows(ref) != rows(reference(FEWSHOT))  # the settings took effect


def test_an_omniglot_checkpoint_stored_before_the_level_settings_resumes_as_it_ran(tmp_path, small_omniglot,
                                                                                 reference):
    """A run stored without --loss-reduction, --eval-queries and --val-split (checkpoint and config.yaml)
    reads as their earlier behaviour and resumes to the end of a run never interrupted."""
    whole = reference(FEWSHOT)
    part = str(tmp_path / "part")
    assert train.main(FEWSHOT + ["--run-dir", part, "--outer-steps", "4"]) == 0
    payload = torch.load(os.path.join(part, checkpoint.LATEST), weights_only=True)
    with open(os.path.join(part, "config.yaml")) as fh:
        stored = yaml.safe_load(fh)
    for values in (payload["config"], stored):
        for name in ("loss_reduction", "eval_queries", "val_split"):
            del values[name]
    torch.save(payload, os.path.join(part, checkpoint.LATEST))
    rundir.write_yaml(os.path.join(part, "config.yaml"), stored)
    assert checkpoint.load(part)["config"]["val_split"] == "classes"
    assert train.main(["--resume", part, "--outer-steps", "6"]) == 0
    for name, value in checkpoint.load(whole)["hparams"].items():
        assert torch.equal(checkpoint.load(part)["hparams"][name], value), name
    assert summary(part) == summary(whole)
