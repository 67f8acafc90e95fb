"""Every file of the project is read through one checked reader and written through one atomic writer:
a run's files carry its identity, resume refuses another run's checkpoint and metrics that do not
cover the checkpoint, a damaged file is named and refused (never taken as absent), and no file is
written through a link."""
import json
import os
import re
import shutil
import subprocess

import pytest
import torch
import yaml

import train
from harness import checkpoint, files, rundir
from test_runs import snapshot  # every file of a run directory but its lock, as bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ["--task", "toy", "--outer-steps", "6", "--checkpoint-every", "2", "--no-progress", "--wandb", "disabled"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("METAGREEDY_FAULT", raising=False)


def stopped_run(path, steps=4, extra=()):
    """A toy run stopped after ``steps`` of its 6 outer steps (as --outer-steps then raised)."""
    assert train.main(TOY[:2] + ["--outer-steps", str(steps)] + TOY[4:] + list(extra) + ["--run-dir", path]) == 0
    return path


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- a run's files belong together ------------------------------------------------------------------------

def test_a_run_id_is_written_into_every_file_of_the_run(tmp_path):
    path = stopped_run(str(tmp_path / "run"))
    run_id = checkpoint.load(path)["run_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    with open(os.path.join(path, "config.yaml")) as fh:
        assert yaml.safe_load(fh)["run_id"] == run_id
    assert files.read_summary(path)["run_id"] == run_id
    assert {row["run_id"] for row in files.metrics_rows(path)} == {run_id}
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 0  # a resumed run keeps its identity
    assert checkpoint.load(path)["run_id"] == run_id and files.read_summary(path)["run_id"] == run_id
    assert {row["run_id"] for row in files.metrics_rows(path)} == {run_id}
    assert len(files.metrics_rows(path)) == 6


@pytest.mark.parametrize("other", [[], ["--task", "toy", "--seed", "1"], "omniglot"])
def test_resuming_with_another_runs_checkpoint_exits_2_and_changes_no_file(tmp_path, capsys, other, monkeypatch):
    """Of a run with the same settings (only its identity differs), of another seed, of another task."""
    path = stopped_run(str(tmp_path / "run"))
    foreign = str(tmp_path / "foreign")
    if other == "omniglot":
        import tasks
        from metagreedy.data import synthetic_alphabet
        monkeypatch.setattr(tasks.load("omniglot"), "load_alphabets",
                            lambda name, root: (synthetic_alphabet(20), synthetic_alphabet(12, seed=1)))
        assert train.main(["--dataset", "synthetic", "--ways", "2", "--queries", "2", "--meta-batch", "1",
                           "--inner-steps", "1", "--outer-steps", "2", "--eval-tasks", "1", "--final-eval-tasks", "1",
                           "--no-progress", "--wandb", "disabled", "--run-dir", foreign]) == 0
    else:
        stopped_run(foreign, steps=2, extra=other[2:])
    shutil.copy(os.path.join(foreign, checkpoint.LATEST), os.path.join(path, checkpoint.LATEST))
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert "another run" in one_error(capsys)
    assert snapshot(path) == before


def test_a_metrics_file_shorter_than_the_checkpoint_is_refused_and_kept(tmp_path, capsys):
    path = stopped_run(str(tmp_path / "run"))
    metrics = os.path.join(path, "metrics.jsonl")
    with open(metrics) as fh:
        lines = fh.readlines()
    with open(metrics, "w") as fh:
        fh.writelines(lines[:2])  # the checkpoint covers 4 steps
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert "rows of 2 outer steps, but the checkpoint covers 4" in one_error(capsys)
    assert snapshot(path) == before
    os.remove(metrics)  # absent too: the checkpoint covers rows that are not there
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert "rows of 0 outer steps" in one_error(capsys)


def test_rows_of_another_run_are_not_mixed_in(tmp_path, capsys):
    path, other = stopped_run(str(tmp_path / "run")), stopped_run(str(tmp_path / "other"))
    with open(os.path.join(other, "metrics.jsonl")) as fh:
        theirs = fh.readlines()
    with open(os.path.join(path, "metrics.jsonl")) as fh:
        ours = fh.readlines()
    with open(os.path.join(path, "metrics.jsonl"), "w") as fh:
        fh.writelines(ours[:2] + theirs[2:])
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert "line 3, is a row of another run" in one_error(capsys)
    assert snapshot(path) == before


# ---- damaged files are named and refused -----------------------------------------------------------------

DAMAGE = {
    "summary.json": [b"[1, 2]", b'{"status": "finished", "steps_done": "many"}', b"\xff\xfe{}", b'{"status": "done"}',
                     b'{"status": "finished", "val_acc": "high"}', b'{"status": "finished"'],
    "config.yaml": [b"task: toy\ntask: toy\n", b"- 1\n", b"seed: [1]\n", b"\xff\n", b"a: &a [*a]\n"],
    "metrics.jsonl": [b'{"step": 0}\n[]\n{"step": 2}\n', b'{"step": 0, "loss": "low"}\n{"step": 1}\n',
                      b'{"step": 1}\n{"step": 0}\n'],
}


@pytest.mark.parametrize("name,content", [(n, c) for n, cs in DAMAGE.items() for c in cs])
def test_a_damaged_file_is_named_and_refused_on_resume(tmp_path, capsys, name, content):
    path = stopped_run(str(tmp_path / "run"))
    with open(os.path.join(path, name), "wb") as fh:
        fh.write(content)
    before = snapshot(path)
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert name in one_error(capsys)
    assert snapshot(path) == before


@pytest.mark.parametrize("make", ["link", "fifo", "directory", "huge"])
def test_a_file_that_is_not_a_plain_file_is_damaged_not_absent(tmp_path, make):
    target, path = tmp_path / "elsewhere.json", str(tmp_path / "summary.json")
    target.write_text('{"status": "finished"}')
    if make == "link":
        os.symlink(target, path)
    elif make == "fifo":
        os.mkfifo(path)  # reading it would hang
    elif make == "directory":
        os.mkdir(path)
    else:
        with open(path, "w") as fh:
            fh.write(" " * (files.MAX_JSON_BYTES + 1))
    with pytest.raises(files.FileDamaged, match="summary.json"):
        files.read_summary(str(tmp_path))
    assert files.read_summary(str(tmp_path / "absent")) is None


def python_files(root):
    """The repository's Python files (a clone or an unpacked archive alike), without the virtual
    environment, the data and the runs."""
    out = []
    for base, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "runs", "data", "__pycache__")]
        out += [os.path.relpath(os.path.join(base, n), root) for n in names if n.endswith(".py")]
    return out


def test_no_torch_load_in_the_repository_reads_without_weights_only():
    listed = python_files(ROOT)
    unsafe = []
    for name in listed:
        with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
            text = fh.read()
        for call in re.finditer(r"torch\.load\(", text):
            args = text[call.end(): text.find("\n\n", call.end())]
            depth, end = 1, 0
            for end, ch in enumerate(args):
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth == 0:
                    break
            if "weights_only=True" not in args[:end]:
                unsafe.append(f"{name}: {text[call.start(): call.end() + end + 1]}")
    assert listed and not unsafe


# ---- one writer ------------------------------------------------------------------------------------------

def test_the_writer_refuses_a_link_and_leaves_its_target(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.symlink(target, tmp_path / "out.json")
    with pytest.raises(rundir.WriteError, match="symbolic link"):
        rundir.write_json(str(tmp_path / "out.json"), {"a": 1})
    assert target.read_text() == "keep me" and os.path.islink(tmp_path / "out.json")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "linked")
    assert rundir.link_in(str(tmp_path), str(tmp_path / "linked" / "a" / "b")) == str(tmp_path / "linked")
    assert rundir.link_in(str(tmp_path), str(tmp_path / "real" / "a")) == ""


@pytest.mark.parametrize("value", ["nan@x", "explode@3", "kill", "kill@-1", "\udcff@1", "nan@\u00b2"])
def test_a_garbled_fault_variable_is_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("METAGREEDY_FAULT", value)
    assert train.main(TOY + ["--run-dir", str(tmp_path / "run")]) == 2
    assert "METAGREEDY_FAULT" in one_error(capsys)
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name,value", [("WORLD_SIZE", "two"), ("RANK", "-1"), ("WORLD_SIZE", "9" * 40)])
def test_a_garbled_torchrun_variable_is_one_line(tmp_path, capsys, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert train.main(TOY + ["--run-dir", str(tmp_path / "run")]) == 2
    assert name in one_error(capsys)
    assert not os.path.exists(tmp_path / "run")


def test_a_garbled_wandb_address_falls_back_to_offline(monkeypatch):
    from harness import runlog
    monkeypatch.setenv("WANDB_BASE_URL", "http://host:port")
    assert runlog._server_unreachable(timeout=0.1) == "WANDB_BASE_URL is not a URL"


def test_yaml_with_a_duplicate_key_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: toy\nouter_steps: 3\nouter_steps: 4\n")
    assert train.main(["--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    assert "duplicate key 'outer_steps' (line 3)" in one_error(capsys)


def test_summary_values_are_checked(tmp_path):
    good = {"status": "finished", "steps_done": 2, "outer_steps": 2, "task": "toy", "method": "greedy",
            "dataset": None, "protocol": "paper", "val_loss": "nan", "alpha": [1.0, 2.0], "hpo": True}
    assert files.summary_problem(good) == ""
    for bad in ({**good, "steps_done": 3}, {**good, "val_loss": "low"}, {**good, "alpha": [{"x": 1}]},
                {**good, "run_id": "../x"}):
        assert files.summary_problem(bad), bad
    (tmp_path / "summary.json").write_text(json.dumps({**good, "val_loss": "low"}))
    with pytest.raises(files.FileDamaged, match="val_loss = 'low', not a number"):
        files.read_summary(str(tmp_path))


@pytest.mark.parametrize("key,value", [("val_acc", True), ("val_acc", -5), ("meta_val_acc", 1e308),
                                       ("meta_test_acc", "nan"), ("test_acc", float("nan")), ("detect_f1", 1.5),
                                       ("val_acc", None), ("val_acc", [0.5]), ("wall_time", [1.0]),
                                       ("wall_time", None), ("val_loss", True)])
def test_summaries_and_rows_are_checked_alike(tmp_path, key, value):
    """One check for a metric, in a summary as in a metrics row: a bool is not a number, an accuracy
    is a finite real number in [0, 1]. What fails is damaged (refused, shown as damaged), never read."""
    summary = {"status": "finished", "steps_done": 2, "outer_steps": 2, key: value}
    assert files.summary_problem(summary).startswith(f"holds {key} = ")
    row = {"step": 0, key: value}
    assert files.row_problem(row, None).startswith(f"holds {key} = ") or key == "wall_time"
    for good in (0.0, 1, 0.75):
        assert files.summary_problem({**summary, key: good}) == files.row_problem({**row, key: good}, None) == ""
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(files.FileDamaged, match=f"holds {key} = "):
        files.read_summary(str(tmp_path))


class Payload:
    """Unpickling it runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_nothing_in_the_campaign(tmp_path):
    """The campaign reads cell checkpoints as train.py does: a crafted one runs no code, and the
    cell is shown damaged, not run over."""
    marker = tmp_path / "ran"
    out = tmp_path / "results"
    cell = out / "smoke" / "3way" / "greedy-0.9" / "seed0"
    cell.mkdir(parents=True)
    with open(os.path.join(ROOT, "configs", "campaign", "smoke.yaml")) as fh:
        (out / "smoke" / "plan.yaml").write_text(fh.read())
    torch.save({"format": checkpoint.FORMAT, "hparams": {"alpha": Payload(str(marker))}}, cell / checkpoint.LATEST)
    proc = subprocess.run([os.sys.executable, "-m", "bench.campaign", "status", "--out", str(out)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120)
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr
    line = next(text for text in proc.stdout.splitlines() if "smoke/3way/greedy-0.9/seed0" in text)
    assert "damaged" in line


def test_a_checkpoint_that_is_a_link_is_refused(tmp_path, capsys):
    path, other = stopped_run(str(tmp_path / "run")), stopped_run(str(tmp_path / "other"))
    os.replace(os.path.join(path, checkpoint.LATEST), tmp_path / "moved.pt")
    os.symlink(tmp_path / "moved.pt", os.path.join(path, checkpoint.LATEST))
    capsys.readouterr()
    assert train.main(["--resume", path, "--outer-steps", "6"]) == 2
    assert "symbolic link" in one_error(capsys)
    assert other
