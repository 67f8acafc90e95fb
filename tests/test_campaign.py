"""The campaign (harness.campaign, run as python -m bench.campaign): plans, runs that stop within their budget and add up, status and report."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from bench import campaign
from harness import campaign as harness_campaign
from harness.campaign import plan as campaign_plan, runner
from harness.settings import UsageError
from test_runs import imported, signalled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLANS = os.path.join(ROOT, "configs", "campaign")
PY = sys.executable


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("METAGREEDY_FAULT", raising=False)


def write_plan(path, text):
    path.write_text(text)
    return str(path)


def rows(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read(path):
    with open(path) as fh:
        return json.load(fh)


def run_campaign(*args):
    return campaign.main(["run", *map(str, args)])


def status_text(out, capsys):
    capsys.readouterr()
    assert campaign.main(["status", "--out", str(out)]) == 0
    return capsys.readouterr().out


# ---- plans ------------------------------------------------------------------------------------------

def test_table3_plan_order_and_paths():
    plan = campaign_plan.load_plan(os.path.join(PLANS, "table3.yaml"))
    assert len(plan.cells) == 5 * 8 + 3 * 7 * 5 and len({c.path for c in plan.cells}) == len(plan.cells)
    five = ["fo", "t1-t2", "ift2", "greedy-0.9", "greedy-0.99", "greedy-0.999", "full"]
    # seed-major: every method on seed 0 before any on seed 1
    assert [c.path for c in plan.cells[:8]] == [f"table3/5way/{m}/seed0" for m in five] + ["table3/5way/fo/seed1"]
    assert [c.path for c in plan.cells[35:41]] == [f"table3/5way/greedy-final-0.9/seed{s}" for s in range(5)] + \
        ["table3/2way/fo/seed0"]
    assert plan.cells[47].path == "table3/3way/fo/seed0" and plan.cells[54].path == "table3/10way/fo/seed0"
    assert plan.cells[2].args == ("--config", "configs/omniglot_5way.yaml", "--dataset", "omniglot", "--meta-batch",
                                  "16", "--seed", "0", "--method", "ift", "--terms", "2")
    assert plan.gammas == ["greedy 0.9", "greedy 0.99", "greedy 0.999"]
    cfg = campaign_plan.resolved(plan.cells[-1].args)
    assert (cfg.task, cfg.ways, cfg.outer_steps, cfg.meta_batch, cfg.seed) == ("omniglot", 10, 2000, 16, 4)


def test_table2_plan_covers_the_protocol():
    plan = campaign_plan.load_plan(os.path.join(PLANS, "table2.yaml"))
    assert len(plan.cells) == 2 * 2 * 2 * 8 * 5
    assert plan.cells[0].path == "table2/paper/mnist-0.3/wo-hpo/seed0"
    assert plan.cells[-1].path == "table2/heldout/fashion_mnist-0.5/oracle/seed4"
    configs = [campaign_plan.resolved(c.args) for c in plan.cells]
    assert {(c.dataset, c.noise, c.protocol) for c in configs} == {
        (d, n, p) for d in ("mnist", "fashion_mnist") for n in (0.3, 0.5) for p in ("paper", "heldout")}
    assert all(c.val_batch == 0 and c.task == "hyper_cleaning" and c.outer_steps == 200 for c in configs)
    assert sum(c.oracle for c in configs) == sum(not c.hpo for c in configs) == 40


def test_a_cells_path_depends_on_the_cell_only(tmp_path):
    """Reordering groups, adding seeds or methods leaves every other cell's directory where it was."""
    methods = "methods: {FO: --method fo, greedy 0.9: --method greedy --gamma 0.9}\n"
    one = write_plan(tmp_path / "p.yaml", "name: p\ntrain: --task toy --inner-steps {T}\npath: T{T}\n" + methods
                     + "groups:\n  - {settings: {T: [5, 10]}, methods: [FO], seeds: [0]}\n")
    a = {c.path: c for c in campaign_plan.load_plan(one).cells}
    two = write_plan(tmp_path / "q.yaml", "name: p\ntrain: --task toy --inner-steps {T}\npath: T{T}\n" + methods
                     + "groups:\n  - {settings: {T: 10}, methods: [greedy 0.9, FO], seeds: [1, 0]}\n"
                     + "  - {settings: {T: 5}, methods: [FO], seeds: [0]}\n")
    b = {c.path: c for c in campaign_plan.load_plan(two).cells}
    assert set(a) == {"p/T5/fo/seed0", "p/T10/fo/seed0"} and set(a) < set(b)
    assert all(a[p].args == b[p].args for p in a)


@pytest.mark.parametrize("groups,message", [
    ("  - {methods: [SGD], seeds: [0]}\n", "unknown method 'SGD'"),
    ("  - {methods: [FO], seeds: [0]}\n  - {methods: [FO], seeds: [0]}\n", "share the directory p/default/fo/seed0"),
    ("  - {settings: {T: 5}, methods: [FO], seeds: [0], path: 'x{U}'}\n", "{U} is not a setting"),
    ("  - {settings: {T: 5}, methods: [FO], seeds: [0], path: '../x{T}'}\n", "must stay inside the plan's"),
    ("  - 1\n  - 2\n", "is malformed"),
    ("  - {methods: [FO], seeds: [x]}\n", "is malformed"),
    ("  - {settings: 5, methods: [FO], seeds: [0]}\n", "is malformed"),
    ("  - {methods: [FO], seeds: [0], path: x}\n  - {methods: [FO], seeds: [0], path: x/fo/seed0}\n",
     "the cell directory p/x/fo/seed0/fo/seed0 lies inside another cell's"),
    ("  - {methods: [FO], seeds: [0], path: 'plan.yaml'}\n", "would be the plan's copy, plan.yaml"),
])
def test_bad_plans_are_one_line(tmp_path, capsys, groups, message):
    plan = write_plan(tmp_path / "p.yaml", "name: p\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups:\n" + groups)
    assert run_campaign("--plan", plan, "--budget-s", 10, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("label,name", [("..", ".."), (".", "."), ("()", ""), ("x" * 300, "x" * 60)])
def test_a_method_label_cannot_lead_out_of_its_settings_directory(tmp_path, capsys, label, name):
    """A label is checked once it is a directory name: '..' would put the cells of two settings in
    one directory (p/T5/../seed0 = p/seed0 = p/T10/../seed0), and one run would be reported twice."""
    plan = write_plan(tmp_path / "p.yaml", "name: p\ntrain: --task toy --inner-steps {T}\npath: T{T}\n"
                      f"methods: {{'{label}': --method fo}}\n"
                      f"groups: [{{settings: {{T: [5, 10]}}, methods: ['{label}'], seeds: [0]}}]\n")
    assert run_campaign("--plan", plan, "--budget-s", 10, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"becomes the directory name {name!r}" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("head,args,message", [
    ("name: ../../escape\n", ["--budget-s", "10"], "must be a plain directory name"),
    ("name: p\n", ["--budget-s", "nan"], "--budget-s must be a finite positive number"),
])
def test_a_plan_cannot_write_outside_its_results_and_budgets_are_numbers(tmp_path, capsys, head, args, message):
    plan = write_plan(tmp_path / "p.yaml", head + "train: --task toy\nmethods: {FO: --method fo}\n"
                      "groups: [{methods: [FO], seeds: [0]}]\n")
    assert run_campaign("--plan", plan, *args, "--out", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def test_a_bad_flag_in_a_plan_is_found_before_anything_runs(tmp_path, capsys):
    plan = write_plan(tmp_path / "p.yaml", "train: --task toy --gamma 3\nmethods: {g: --method greedy}\n"
                                           "groups: [{methods: [g], seeds: [0]}]\n")
    assert run_campaign("--plan", plan, "--budget-s", 10, "--out", tmp_path / "out") == 2
    assert "--gamma must be in [0.0, 1.0]" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_thinned_curve_keeps_evaluations_and_the_last_row():
    lines = [json.dumps({"step": s, "loss": 1.0, **({"val_acc": 0.5} if s % 20 == 19 else {})}) for s in range(200)]
    kept = [json.loads(line)["step"] for line in runner.thin(lines, 200)]
    assert kept == sorted(set(range(0, 200, 8)) | set(range(19, 200, 20)) | {199})


# ---- run, status, report: the smoke plan end to end -------------------------------------------------------

def test_smoke_plan_runs_in_pieces_and_reports(tmp_path, capsys):
    out, doc = tmp_path / "results", tmp_path / "tmp.md"
    plan = os.path.join(PLANS, "smoke.yaml")
    cells = campaign_plan.load_plan(plan).cells
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "bench.campaign", "run", "--plan", plan, "--budget-s", "30", "--parallel", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 30 + 3, proc.stdout  # the budget includes stopping the cells
    assert run_campaign("--plan", plan, "--budget-s", 600, "--parallel", 2, "--out", out) == 0
    text = status_text(out, capsys)
    for cell in cells:
        assert f"{cell.path} " in text and text.split(cell.path)[1].split()[0] == "done", text
    assert f"{len(cells)} done, 0 diverged, 0 failed, 0 in progress, 0 not started" in text
    assert f"{out}: " in text and " MB in " in text

    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 0
    page = doc.read_text()
    for section in ("campaign_table3", "campaign_table2"):
        assert f"<!-- {section} -->" in page and f"<!-- /{section} -->" in page
    assert "| greedy 0.9 | " in page and "(1 seed)" in page and "seeds 1/1]" in page
    # the paper's numbers are on Omniglot, not beside the smoke plan's synthetic alphabet
    assert "ran on the built-in synthetic alphabet, so the paper's numbers are not shown" in page
    assert "*paper:" not in page.split("campaign_table3")[1]
    assert "No plan with cells of this experiment" in page.split("campaign_table2")[1]
    assert (tmp_path / "campaign_smoke.png").exists()

    # results stay small: a finished cell keeps its summary, config, curve and record; the rest is kept aside
    for cell in cells:
        d = out / cell.path
        assert sorted(os.listdir(d)) == ["cell.json", "config.yaml", "curve.jsonl", "summary.json"]
        assert sum(os.path.getsize(d / f) for f in os.listdir(d)) < 20_000
        kept = tmp_path / "runs" / "campaign" / cell.path
        assert {"metrics.jsonl", "checkpoint.pt", "train.log"} <= set(os.listdir(kept))
        assert len(rows(kept / "metrics.jsonl")) == read(d / "summary.json")["steps_done"]


# ---- an interrupted cell resumes exactly ----------------------------------------------------------------------

LONG = """name: long
train: --task toy --inner-steps 10 --outer-steps 600 --checkpoint-every 200
path: toy
min_start_s: 1
methods: {greedy 0.5: --method greedy --gamma 0.5}
groups: [{methods: [greedy 0.5], seeds: [0]}]
"""
TIMING = {"step_time", "wall_time", "total_time", "run_id"}  # and the identity: each run has its own


def test_a_cell_stopped_by_the_budget_resumes_bit_identical(tmp_path, monkeypatch):
    plan = write_plan(tmp_path / "long.yaml", LONG)
    out = tmp_path / "results"
    (cell,) = campaign_plan.load_plan(plan).cells
    cell_dir, kept = out / cell.path, tmp_path / "runs" / "campaign" / cell.path
    threads = str(len(os.sched_getaffinity(0)))  # what the campaign gives its one process
    reference = str(tmp_path / "reference")
    straight = subprocess.Popen([PY, os.path.join(ROOT, "train.py"), *cell.args, "--run-dir", reference,
                                 "--no-progress", "--wandb", "disabled"], cwd=ROOT, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": threads})

    # The interruption must not hang on timing luck: the campaign's clock jumps past the end of the
    # budget as soon as the cell has logged 30 of its 600 outer steps, so the stop signal reaches it
    # one poll later (0.2 s, some 50 toy steps), long before the ~2 s its remaining steps take. The
    # grace period after the signal runs on the real clock.
    metrics = cell_dir / "metrics.jsonl"
    monkeypatch.setattr(runner, "clock", lambda: time.monotonic() + (
        1e6 if metrics.exists() and metrics.read_text().count("\n") >= 30 else 0))
    assert run_campaign("--plan", plan, "--budget-s", 300, "--out", out) == 0
    record = read(cell_dir / "cell.json")
    assert record["attempts"][-1]["rc"] == 130 and record["outcome"] == "interrupted"
    step = torch.load(cell_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 30 <= step < 600 and read(cell_dir / "summary.json")["status"] == "interrupted"

    monkeypatch.setattr(runner, "clock", time.monotonic)
    assert run_campaign("--plan", plan, "--budget-s", 300, "--out", out) == 0
    assert straight.wait(timeout=300) == 0
    record = read(cell_dir / "cell.json")
    assert [(a["outcome"], a["from_step"]) for a in record["attempts"]] == [("interrupted", 0), ("finished", step)]
    assert not (cell_dir / "checkpoint.pt").exists()
    a = torch.load(os.path.join(reference, "checkpoint.pt"), weights_only=True)["hparams"]
    b = torch.load(kept / "checkpoint.pt", weights_only=True)["hparams"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda row: {k: v for k, v in row.items() if k not in TIMING}  # noqa: E731
    assert [strip(r) for r in rows(kept / "metrics.jsonl")] == [strip(r) for r in rows(os.path.join(reference,
                                                                                                   "metrics.jsonl"))]
    assert strip(read(cell_dir / "summary.json")) == strip(read(os.path.join(reference, "summary.json")))


# ---- how a cell's end is read: diverged, bad input, in use -------------------------------------------------

FAKE_TRAIN = '''import json, os, sys
args = sys.argv[1:]
run_dir = args[args.index("--run-dir") + 1] if "--run-dir" in args else args[args.index("--resume") + 1]
kind = args[args.index("--fake") + 1] if "--fake" in args else ""
if kind == "locked":
    print(f"error: run directory {run_dir} is in use by process 4242", file=sys.stderr)
    sys.exit(2)
if kind == "bad":
    print("error: MNIST under ./nowhere is truncated or corrupt", file=sys.stderr)
    sys.exit(2)
if kind == "deaf":  # ignores the stop signal
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "started"), "w").close()
    while True:
        time.sleep(0.1)
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "metrics.jsonl"), "w") as fh:
    fh.writelines(json.dumps({"step": s, "val_loss": 1.0}) + "\\n" for s in range(3))
with open(os.path.join(run_dir, "summary.json"), "w") as fh:
    json.dump({"status": "diverged", "steps_done": 3, "wall_time": 1.0}, fh)
sys.exit(1)
'''


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setattr(runner, "TRAIN", str(fake))
    monkeypatch.setattr(runner, "resolved", lambda args, root=None: None)  # the fake flags are not train.py's


def test_diverged_is_a_result_bad_input_fails_once_and_a_locked_cell_is_skipped(tmp_path, fake_train, capsys):
    plan = write_plan(tmp_path / "p.yaml", "name: p\nmin_start_s: 0\ntrain: --task toy\n"
                      "methods: {diverges: --fake diverges, bad: --fake bad, locked: --fake locked}\n"
                      "groups: [{methods: [diverges, bad, locked], seeds: [0]}]\n")
    out = tmp_path / "results"
    # what an attempt stopped before its first checkpoint left: moved aside before a fresh start
    (out / "p/default/diverges/seed0/wandb").mkdir(parents=True)
    (out / "p/default/diverges/seed0/wandb/debug.log").write_text("seed: 0\n")
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 1  # a cell failed
    printed = capsys.readouterr().out
    assert "skipped p/default/locked/seed0: error: run directory" in printed
    assert "diverged: p/default/diverges/seed0" in printed and "failed: p/default/bad/seed0" in printed
    assert sorted(os.listdir(out / "p/default/diverges/seed0")) == ["cell.json", "curve.jsonl", "summary.json"]
    assert read(out / "p/default/bad/seed0/cell.json")["tail"][-1].endswith("truncated or corrupt")
    assert not (out / "p/default/locked/seed0/cell.json").exists()
    assert (tmp_path / "runs/campaign/p/default/diverges/seed0/aborted-0/wandb/debug.log").read_text() == "seed: 0\n"

    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 0  # the failed cell waits
    printed = capsys.readouterr().out
    assert "started p/default/bad" not in printed and "started p/default/locked" in printed
    text = status_text(out, capsys)
    assert "diverged at step 3" in text and "| error: MNIST under ./nowhere is truncated or corrupt" in text
    assert "1 done" not in text and "1 diverged, 1 failed, 0 in progress, 1 not started" in text


def test_a_cell_deaf_to_the_stop_signal_is_killed_after_the_grace_period(tmp_path, fake_train, monkeypatch, capsys):
    plan = write_plan(tmp_path / "p.yaml", "name: p\nmin_start_s: 0\ntrain: --task toy\n"
                      "methods: {deaf: --fake deaf}\ngroups: [{methods: [deaf], seeds: [0]}]\n")
    out = tmp_path / "results"
    started = out / "p/default/deaf/seed0/started"
    monkeypatch.setattr(runner, "clock", lambda: time.monotonic() + (1e6 if started.exists() else 0))
    t0 = time.monotonic()
    assert run_campaign("--plan", plan, "--budget-s", 60, "--grace-s", 1, "--out", out) == 0
    assert time.monotonic() - t0 < 30
    assert "SIGKILL p/default/deaf/seed0" in capsys.readouterr().out
    attempt = read(out / "p/default/deaf/seed0/cell.json")["attempts"][-1]
    assert (attempt["rc"], attempt["outcome"]) == (-9, "stopped")


def test_no_cell_starts_without_the_budget_to_make_progress(tmp_path, fake_train, capsys):
    plan = write_plan(tmp_path / "p.yaml", "name: p\nmin_start_s: 100\ntrain: --task toy\n"
                      "methods: {diverges: --fake diverges}\ngroups: [{methods: [diverges], seeds: [0]}]\n")
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", tmp_path / "results") == 0
    assert "nothing ran; 1 left to start" in capsys.readouterr().out
    assert not (tmp_path / "results/p/default").exists()


# ---- the report's numbers, from hand-made cells ------------------------------------------------------------

REPORTED = """name: hand
methods: {FO: --method fo, greedy 0.9: --method greedy --gamma 0.9, greedy 0.99: --method greedy --gamma 0.99,
          greedy 0.999: --method greedy --gamma 0.999}
gammas: [greedy 0.9, greedy 0.99, greedy 0.999]
groups:
  - {train: "--task omniglot --ways {ways}", path: "{ways}way", settings: {ways: 5},
     methods: [FO, greedy 0.9, greedy 0.99, greedy 0.999], seeds: [0, 1, 2]}
  - {train: "--task hyper_cleaning --protocol {protocol}", path: "{protocol}", settings: {protocol: [paper, heldout]},
     methods: [greedy 0.9, greedy 0.99], seeds: [0, 1]}
"""


def test_report_chooses_gamma_on_validation_with_t_intervals(tmp_path):
    out = tmp_path / "results"
    (out / "hand").mkdir(parents=True)
    (out / "hand" / "plan.yaml").write_text(REPORTED)  # as a run leaves it

    def cell(path, **summary):
        (out / path).mkdir(parents=True)
        (out / path / "summary.json").write_text(json.dumps({"status": "finished", **summary}))

    for seed, v in enumerate([0.80, 0.82, 0.84]):
        cell(f"hand/5way/greedy-0.9/seed{seed}", meta_val_acc=v, meta_test_acc=v - 0.1)
    for seed, v in enumerate([0.85, 0.87]):
        cell(f"hand/5way/greedy-0.99/seed{seed}", meta_val_acc=v, meta_test_acc=0.5)
    cell("hand/5way/greedy-0.999/seed0", meta_val_acc=0.83, meta_test_acc=0.9)
    (out / "hand/5way/greedy-0.99/seed2").mkdir()
    from harness import checkpoint, config
    settings = config.resolve(["--task", "omniglot", "--method", "greedy", "--gamma", "0.99"])
    torch.save({"format": checkpoint.FORMAT, "step": 700, "task": "omniglot",
                "config": settings.to_dict(), "hparams": {}, "outer_opt": {}, "rng": {},
                "bad_steps": 0, "elapsed": 1.0, "segments": [], "task_state": {}},
               out / "hand/5way/greedy-0.99/seed2/checkpoint.pt")
    # held-out protocol: gamma 0.99 has the higher validation accuracy and the lower test accuracy
    for seed in (0, 1):
        cell(f"hand/heldout/greedy-0.9/seed{seed}", val_acc=0.70, test_acc=0.80 + seed / 100, detect_f1=0.5)
        cell(f"hand/heldout/greedy-0.99/seed{seed}", val_acc=0.75, test_acc=0.60, detect_f1=0.5)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\n<!-- toy -->\nuntouched\n<!-- /toy -->\n")
    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 0
    page = doc.read_text()
    assert "<!-- toy -->\nuntouched\n<!-- /toy -->" in page
    # 3 seeds: t(2) = 4.303, sd 0.02 -> 4.303 * 2 / sqrt(3) = 4.97 points; 2 seeds: t(1) = 12.706, sd 0.01414
    assert "| greedy 0.9 | 82.00 ± 4.97 (3) |" in page and "| greedy 0.999 | 83.00 (1 seed) |" in page
    assert "| greedy 0.99 | 86.00 ± 12.71 (2); seed 2: step 700/2000 |" in page
    assert "| FO | not run |" in page
    chosen = "| **greedy, gamma chosen on meta-validation** | "
    assert chosen + "86.00 ± 12.71 (2); seed 2: step 700/2000 [0.99; seeds 3/2/1] |" in page  # meta-validation
    assert chosen + "50.00 ± 0.00 (2); seed 2: step 700/2000 [0.99; seeds 3/2/1] |" in page  # its meta-test
    heldout = page.split("#### Protocol `heldout`")[1]
    assert "| **greedy, gamma chosen on validation** | 60.00 ± 0.00 (2) [0.99; seeds 2/2] |" in heldout
    assert "| greedy 0.9 | 80.50 ± 6.35 (2) |" in heldout and "*paper:" not in heldout
    assert "| *paper: Ours (gamma=0.9)* | 93.5 ± 0.34 | 86.83 ± 0.78 | 80.46 ± 1.08 | 66.92 ± 2.04 |" in page
    # meta-test minus meta-validation per finished cell: -10 x3 (0.9), -35 and -37 (0.99), +7 (0.999)
    assert ("Meta-test minus meta-validation, per finished cell (each run's final evaluations, points): 5-way "
            "-37.00 to +7.00 (6 cells). The meta-test accuracy is the lower in 5 of 6 cells.") in page


def test_ours_against_the_paper_uses_finished_seeds_only():
    from bench.tables import difference_table, ranking_table
    paper = {"FO": ["70.00 ± 1"], "T1-T2": ["75.00 ± 1"], "IFT(2)": ["72.50 ± 1"], "greedy 0.9": ["80.00 ± 2"]}
    values = {"FO": [[0.85, 0.87]], "T1-T2": [[]], "IFT(2)": [[0.30]], "greedy 0.9": [[0.90]], "Full": [[0.99]]}
    diff = difference_table(["5-way"], values, paper)
    assert "| FO | +16.00 (2 seeds) |" in diff and "| T1-T2 | not run |" in diff and "| IFT(2) | -42.50 (1 seed) |" in diff
    assert "Full" not in diff  # not a method of the paper
    ranking = ranking_table(["5-way"], values, paper)
    # T1-T2 has no finished seed: left out of both orders, which then compare the same three methods
    assert "| ours | greedy 0.9 > FO > IFT(2) |" in ranking and "| the paper | greedy 0.9 > IFT(2) > FO |" in ranking
    assert "| same order | no |" in ranking
    assert "| ours | not run |" in ranking_table(["10-way"], {k: [[]] for k in values}, paper)


def finished_cell(out, path, summary, config=None, curve=None):
    """A finished cell as the campaign leaves it: summary.json, and config.yaml and curve.jsonl when given."""
    import yaml
    d = out / path
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": "finished", **summary}))
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if curve is not None:
        (d / "curve.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    return d


def stored_config(*flags):
    """The config.yaml train.py writes for these flags."""
    from harness import config
    import tasks  # noqa: F401  (the experiments declare their settings)
    return config.resolve(list(flags)).to_dict()


def section(page, name):
    return page.split(f"<!-- {name} -->")[1].split(f"<!-- /{name} -->")[0]


def report_page(out, tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n")
    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 0
    return doc.read_text()


SECOND = """name: second
methods: {FO: --method fo}
groups: [{train: "--task omniglot --ways {ways}", path: "{ways}way", settings: {ways: 5}, methods: [FO], seeds: [0]}]
"""
IDLE = """name: idle
methods: {FO: --method fo, T1-T2: --method t1t2}
groups: [{train: "--task omniglot --ways {ways}", path: "{ways}way", settings: {ways: 5}, methods: [FO, T1-T2],
          seeds: [0]}]
"""


def test_the_papers_rows_appear_once_per_table_and_a_plan_without_a_finished_cell_is_one_line(tmp_path):
    out = tmp_path / "results"
    for name, text in (("hand", REPORTED), ("second", SECOND), ("idle", IDLE)):
        (out / name).mkdir(parents=True)
        (out / name / "plan.yaml").write_text(text)
    finished_cell(out, "hand/5way/fo/seed0", {"meta_val_acc": 0.8, "meta_test_acc": 0.7})
    finished_cell(out, "hand/paper/greedy-0.9/seed0", {"val_acc": 0.8, "test_acc": 0.8, "detect_f1": 0.5})
    finished_cell(out, "second/5way/fo/seed0", {"meta_val_acc": 0.75, "meta_test_acc": 0.7})
    from harness import checkpoint, config
    settings = config.resolve(["--task", "omniglot", "--method", "t1t2"])
    (out / "idle/5way/t1-t2/seed0").mkdir(parents=True)
    torch.save({"format": checkpoint.FORMAT, "step": 250, "task": "omniglot", "config": settings.to_dict(),
                "hparams": {}, "outer_opt": {}, "rng": {}, "bad_steps": 0, "elapsed": 1.0, "segments": [],
                "task_state": {}}, out / "idle/5way/t1-t2/seed0/checkpoint.pt")
    (out / "idle/5way/t1-t2/seed0/metrics.jsonl").write_text(
        '{"step": 199, "meta_val_acc": 0.625}\n{"step": 249, "val_loss": 1.0}\n')
    page = report_page(out, tmp_path)
    table3, table2 = section(page, "campaign_table3"), section(page, "campaign_table2")
    assert "### Plan `hand`" in table3 and "### Plan `second`" in table3  # two plans with tables ...
    for text, rows in ((table3, ["FO", "T1-T2", "IFT(2)", "Ours (gamma=0.9)"]),
                       (table2, ["w/o HPO", "T1-T2", "IFT(5)", "Ours (gamma=0.9)"])):
        for row in rows:  # ... and the paper's rows once in each experiment's section
            assert text.count(f"| *paper: {row}* |") == 1, row
    assert table3.index("*paper: FO*") < table3.index("### Plan `hand`")
    # the plan without a finished cell: one line, no heading, no table; its running cell's step and last evaluation
    idle = [line for line in table3.splitlines() if "`idle`" in line]
    assert len(idle) == 1 and "### Plan `idle`" not in table3
    assert idle[0].startswith("**Plan `idle`**: no finished cell yet, 0 of 2; ")
    assert "5-way T1-T2 seed 0 at step 250/2000 (last periodic evaluation 62.5% at step 199)" in idle[0]
    # a part without a finished cell: one line too
    assert "#### Protocol `heldout`: no finished cell yet, 0 of 4.\n" in table2
    assert "#### Protocol `paper`\n" in table2


BEST = """name: table2
methods: {w/o HPO: --no-hpo, greedy 0.9: --method greedy --gamma 0.9}
groups: [{train: "--task hyper_cleaning --protocol {protocol}", path: "{protocol}", settings: {protocol: [paper, heldout]},
          methods: [w/o HPO, greedy 0.9], seeds: [0, 1]}]
"""


def test_best_against_last_is_read_from_the_curves(tmp_path):
    out = tmp_path / "results"
    (out / "table2").mkdir(parents=True)
    (out / "table2" / "plan.yaml").write_text(BEST)

    def curve(val, test=None):
        return [{"step": 20 * i + 19, "val_acc": v, "test_acc": v if test is None else test[i]} for i, v in enumerate(val)]

    # w/o HPO, the paper's protocol: above the paper's 70.46% at steps 19-59, then memorising
    for seed, vals in ((0, [0.78, 0.81, 0.72, 0.60, 0.55]), (1, [0.75, 0.79, 0.70, 0.58, 0.53])):
        finished_cell(out, f"table2/paper/wo-hpo/seed{seed}", {"val_acc": vals[-1], "test_acc": vals[-1]},
                      curve=curve(vals))
    for seed in (0, 1):  # greedy ends at its best: its best is its last, at the last step
        vals = [0.70, 0.80, 0.84, 0.85, 0.86]
        finished_cell(out, f"table2/paper/greedy-0.9/seed{seed}", {"val_acc": 0.86}, curve=curve(vals))
    # held out: the best on validation (step 39) is reported on test, where it is not the best
    finished_cell(out, "table2/heldout/greedy-0.9/seed0", {"val_acc": 0.80, "test_acc": 0.74},
                  curve=curve([0.70, 0.90, 0.80], test=[0.60, 0.70, 0.74]))
    page = section(report_page(out, tmp_path), "campaign_table2")
    paper_part = page.split("#### Protocol `paper`")[1].split("#### Protocol `heldout`")[0]
    # last: 55, 53 -> 54.00 ± 12.71 (t(1) = 12.706, sd 1.414); best: 81, 79 at step 39 each; best - last 26
    assert "| mnist 0.3 | w/o HPO | 0, 1 | 54.00 ± 12.71 (2) | 80.00 ± 12.71 (2) | 39, 39 | +26.00 |" in paper_part
    assert "| mnist 0.3 | greedy 0.9 | 0, 1 | 86.00 ± 0.00 (2) | 86.00 ± 0.00 (2) | 99, 99 | +0.00 |" in paper_part
    assert "picked on the same evaluation that reports it, so it is optimistic" in paper_part
    assert ("w/o HPO at mnist 0.3 (the paper's 70.46%): seed 0 at or above it at the evaluations of outer steps "
            "19-59, below at every one from step 79 on, ending at 55.00% (step 99); seed 1 at or above it at the "
            "evaluations of outer steps 19-39, below at every one from step 59 on, ending at 53.00% (step 99).") \
        in paper_part
    assert "greedy 0.9 at mnist 0.3 (the paper's" not in paper_part  # its last is above the paper's
    heldout = page.split("#### Protocol `heldout`")[1]
    assert "| mnist 0.3 | greedy 0.9 | 0 | 74.00 (1 seed) | 70.00 (1 seed) | 39 | -4.00 |" in heldout
    assert "picked on `val_acc` and reported on `test_acc`" in heldout


BASE = """name: table3_mb1
methods: {FO: --method fo}
groups: [{train: "--task omniglot --ways {ways} --meta-batch 1", path: "{ways}way", settings: {ways: 5}, methods: [FO],
          seeds: [0, 1]}]
"""
CAUSES = """name: level_causes
methods: {"FO, init fresh": --method fo --init fresh, "FO, loss sum": --method fo --loss-reduction sum,
          "FO, val alphabets": --method fo --val-split alphabets}
groups: [{train: "--task omniglot --ways {ways} --meta-batch 1", path: "{ways}way", settings: {ways: 5},
          methods: ["FO, init fresh", "FO, loss sum", "FO, val alphabets"], seeds: [0, 1, 2]}]
"""


def test_the_level_causes_are_not_measured_yet_without_cells(tmp_path):
    text = section(report_page(tmp_path / "results", tmp_path), "level_causes")
    causes = [line for line in text.splitlines() if line.startswith("| (")]
    assert len(causes) == 8  # a, b twice, c, d, e twice, f: one line per cause and experiment
    assert all("| not measured yet |" in line for line in causes)
    assert "Each measured row's cells" not in text  # no command list before a cell has run
    assert "| (f) the noise model | hyper-cleaning MNIST 0.3 | other -> any | not measured yet |" in text


def test_each_level_cause_is_set_against_the_primary_cell_of_its_seed_and_method(tmp_path):
    out = tmp_path / "results"
    for name, text in (("table3_mb1", BASE), ("level_causes", CAUSES)):
        (out / name).mkdir(parents=True)
        (out / name / "plan.yaml").write_text(text)
    for seed, acc in ((0, 0.85), (1, 0.87)):
        cfg = stored_config("--task", "omniglot", "--ways", "5", "--meta-batch", "1", "--seed", str(seed),
                            "--method", "fo")
        finished_cell(out, f"table3_mb1/5way/fo/seed{seed}", {"meta_val_acc": acc}, cfg,
                      [{"step": 99, "meta_val_acc": acc + 0.02}, {"step": 199, "meta_val_acc": acc - 0.01}])
        # a fresh start per task: read from config.yaml, which names the setting
        finished_cell(out, f"level_causes/5way/fo-init-fresh/seed{seed}", {"meta_val_acc": acc - 0.15 + seed / 50},
                      {**cfg, "init": "fresh", "run_dir": "elsewhere"})
    # summed losses: config.yaml without the key (a train.py that does not write it): read from the flags
    unnamed = {k: v for k, v in cfg.items() if k != "loss_reduction"}
    finished_cell(out, "level_causes/5way/fo-loss-sum/seed0", {"meta_val_acc": 0.80}, {**unnamed, "seed": 0})
    # a diverged cell is a result too: it ends without an accuracy
    finished_cell(out, "level_causes/5way/fo-loss-sum/seed1", {"status": "diverged", "steps_done": 3}, unnamed)
    # a seed whose baseline cell has not run: it joins its method's row, for the other reading alone
    finished_cell(out, "level_causes/5way/fo-loss-sum/seed2", {"meta_val_acc": 0.50}, {**unnamed, "seed": 2})
    # another setting moved as well: no primary cell to set it against
    finished_cell(out, "level_causes/5way/fo-val-alphabets/seed0", {"meta_val_acc": 0.70},
                  {**cfg, "seed": 0, "val_split": "alphabets", "inner_lr": 0.05})
    (out / "level_causes/5way/fo-val-alphabets/seed1").mkdir(parents=True)  # started, not finished
    text = section(report_page(out, tmp_path), "level_causes")
    # seeds 0 and 1: 0.85 -> 0.70 and 0.87 -> 0.74: change -15, -13 -> -14.00 ± 12.71 (t(1) = 12.706, sd 1.414)
    assert ("| (a) start of the adapted layers | Omniglot 5-way | init: fixed -> fresh | FO | 0, 1 | 86.00 | 72.00 | "
            "-14.00 ± 12.71 | 69.71 ± 0.5 |") in text
    assert ("| (b) summed or mean losses | Omniglot 5-way | loss_reduction: mean -> sum | FO | 0, 1, 2 (ours: 0, 1) | "
            "86.00 | 65.00; seed 1 diverged at outer step 3 | -5.00 | 69.71 ± 0.5 |") in text
    assert "| (b) summed or mean losses | hyper-cleaning MNIST 0.3 | mean -> sum | not measured yet |" in text
    assert ("| (d) the meta-validation split | Omniglot 5-way | val_split: classes -> alphabets | FO, val alphabets "
            "(no baseline cell with its settings) | 0 (ours: none) | – | 70.00 | no baseline | – |") in text
    assert "| (c) batch statistics at evaluation | Omniglot 5-way | transductive -> inductive | not measured yet |" \
        in text
    # (e) from the primary cells' curves: last 84, 86; best 87, 89 (the first evaluation)
    assert ("| (e) which evaluation is reported | Omniglot 5-way | last -> best periodic evaluation | FO | 0, 1 | "
            "85.00 | 88.00 | +3.00 ± 0.00 | 69.71 ± 0.5 |") in text
    assert ("- Omniglot 5-way, FO (the paper: 69.71 ± 0.5): ours as reported 86.00 (2 seeds, +16.29 points); closest "
            "to the paper's: init fresh, 72.00 (2 seeds, +2.29 points).") in text
    # each measured row names the command its cells ran, the seed left as SEED
    assert ("- (a) Omniglot 5-way, FO (SEED = 0, 1): `python train.py --task omniglot --ways 5 --meta-batch 1 "
            "--seed SEED --method fo --init fresh`") in text
    assert "- (b) Omniglot 5-way, FO (SEED = 0, 1, 2): `python train.py " in text
    assert text.index("- (a) Omniglot") < text.index("- (b) Omniglot") < text.index("Closest to the paper's")


# ---- the campaign's files: checked when read, written atomically, never through a link ---------------------

FAST = ("name: p\nmin_start_s: 0\ntrain: --task toy\nmethods: {diverges: --fake diverges}\n"
        "groups: [{methods: [diverges], seeds: [0, 1]}]\n")


def test_a_second_run_on_the_same_results_is_refused_at_once(tmp_path, fake_train, capsys):
    from harness import rundir
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    fd = rundir.take_lock(str(out), "results")  # a campaign running on it
    try:
        assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another process" in err[0] and f"(pid {os.getpid()})" in err[0]
        assert not (out / "p").exists()
    finally:
        os.close(fd)
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 0  # released: it runs


def test_a_fifo_at_a_cells_lock_is_damaged_and_never_waited_on(tmp_path):
    """Opening a FIFO waits for a writer for ever (and SIGTERM would not end the wait): the runner
    opens every lock without blocking, and a lock that is not a regular file is a damaged cell."""
    plan, out = write_plan(tmp_path / "p.yaml", FAST.replace("--fake diverges", "--method fo")), tmp_path / "out"
    cell = out / "p/default/diverges/seed0"
    cell.mkdir(parents=True)
    os.mkfifo(cell / ".lock")
    proc = subprocess.run([PY, "-m", "bench.campaign", "run", "--plan", plan, "--budget-s", "60", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "damaged: p/default/diverges/seed0: lock" in proc.stdout and "is not a regular file" in proc.stdout
    assert "finished: p/default/diverges/seed1" in proc.stdout and os.listdir(cell) == [".lock"]
    with pytest.raises(UsageError, match="is not a regular file"):
        runner.held(str(cell))


@pytest.mark.parametrize("kind", ["fifo", "full"])
def test_the_results_lock_is_one_line_naming_it(tmp_path, fake_train, capsys, monkeypatch, kind):
    """The campaign's own lock: a FIFO there (exit 2), or a full disk when it is written (exit 1), is
    one line that names the file; nothing is written, and a results directory it made is removed."""
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    if kind == "fifo":
        out.mkdir()
        os.mkfifo(out / ".lock")
    else:
        def full(*args):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "pwrite", full)
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == (2 if kind == "fifo" else 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out}/.lock'" in err[0], err
    assert ("is not a regular file" if kind == "fifo" else "No space left on device") in err[0]
    assert os.listdir(out) == [".lock"] if kind == "fifo" else not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_window_exits_130(tmp_path, fake_train, capsys, monkeypatch, sig):
    """Ctrl-C (or SIGTERM) during run stops the cells as the budget would, then says so in one line
    and exits 130, so that a wrapper tells an interrupted window from a finished one."""
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    launch = runner.launch

    def launch_then_stop(*args):
        started = launch(*args)
        os.kill(os.getpid(), sig)  # the runner's own handler takes it
        return started
    monkeypatch.setattr(runner, "launch", launch_then_stop)
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 130
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"interrupted ({sig.name}): the running cells were stopped"), err
    assert "started p/default/diverges/seed0" in captured.out and "started p/default/diverges/seed1" not in captured.out
    assert read(out / "p/default/diverges/seed0/cell.json")["attempts"]


@pytest.mark.parametrize("module,sig", [("torch", signal.SIGINT), ("tasks", signal.SIGTERM),
                                        ("harness.campaign.runner", signal.SIGINT)])
def test_a_stop_while_the_campaign_starts_is_one_line_and_130(tmp_path, module, sig):
    status, err = signalled(["-X", "importtime", "-m", "bench.campaign", "status", "--out", str(tmp_path / "out")],
                            imported(module), sig)
    assert status == 130 and err == ["interrupted while starting; nothing was written"], err
    assert not (tmp_path / "out").exists()


def test_a_stale_lock_of_a_process_that_is_gone_or_unrelated_blocks_nothing(tmp_path, fake_train, capsys):
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    for d in (out, out / "p/default/diverges/seed0"):
        d.mkdir(parents=True, exist_ok=True)
        (d / ".lock").write_text("1")  # pid 1 is alive, and holds no lock
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "skipped" not in printed and "diverged: p/default/diverges/seed0" in printed


@pytest.mark.parametrize("damage", ["summary", "metric", "cell", "curve", "link", "summary-link", "other-run"])
def test_a_damaged_finished_cell_is_marked_and_never_run_again(tmp_path, fake_train, capsys, damage):
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 0
    cell, other = out / "p/default/diverges/seed0", out / "p/default/diverges/seed1"
    if damage == "summary":
        (cell / "summary.json").write_text('{"status": "diverged", "steps_done": 3')  # torn
    elif damage == "metric":
        (cell / "summary.json").write_text('{"status": "diverged", "steps_done": 3, "wall_time": "fast"}')
    elif damage == "cell":
        (cell / "cell.json").write_text("[]")
    elif damage == "curve":
        (cell / "curve.jsonl").write_text('{"step": 0}\n{"step": ')
    elif damage == "link":  # seed0 takes seed1's result under its own name
        shutil.rmtree(cell)
        os.symlink(other, cell)
    elif damage == "summary-link":
        os.remove(cell / "summary.json")
        os.symlink(other / "summary.json", cell / "summary.json")
    else:
        (cell / "summary.json").write_text('{"status": "diverged", "steps_done": 3, "run_id": "abc"}')
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    text = status_text(out, capsys)
    line = text.split("p/default/diverges/seed0")[1].splitlines()
    assert line[0].split()[0] == "damaged" and line[1].startswith("      | ") and "0 not started" in text, text
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 2
    printed = capsys.readouterr().out
    assert "damaged: p/default/diverges/seed0" in printed and "started" not in printed
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_the_campaign_never_writes_through_a_link_planted_in_results(tmp_path, fake_train, capsys):
    plan, out = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (out / "p").mkdir(parents=True)
    os.symlink(precious, out / "p" / "plan.yaml")
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 1  # a fault: the file cannot be written
    assert "symbolic link" in capsys.readouterr().err and precious.read_text() == "keep me"
    os.remove(out / "p" / "plan.yaml")
    os.symlink(tmp_path, out / "p" / "default")  # the cells' parent is a link
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 2
    assert "is a symbolic link" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == sorted(["fake_train.py", "p.yaml", "precious.txt", "results"])


@pytest.mark.parametrize("text,message", [
    ("name: p\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups: [{methods: [FO], seeds: [0]}]\nseed: [1]\n",
     "unknown key 'seed'"),
    ("name: p\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups: [{methods: [FO], seds: [0]}]\n",
     "unknown key 'seds'"),
    ("name: p\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups: [{methods: [F0], seeds: [0]}]\n",
     "unknown method 'F0'"),
    ("name: p\ntrain: --task toy\nmethods: {FO: --method fo}\nmethods: {FO: --method fo}\ngroups: []\n",
     "duplicate key 'methods'"),
    ("name: p\ntrain: --task toy --seed {s}\nmethods: {FO: --method fo}\n"
     "groups: [{methods: [FO], seeds: [0], settings: {s: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}, "
     "min_start_s: 1}]\n" + "".join(f"  # {i}\n" for i in range(3)), None),
    ("name: p\nmin_start_s: .nan\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups: [{methods: [FO], seeds: [0]}]\n",
     "min_start_s must be a finite non-negative number"),
    ("name: p\ntrain: --task toy\nmethods: {FO: --method fo}\ngroups: [{methods: [FO], seeds: [true]}]\n",
     "a seed that is not an integer"),
])
def test_plans_are_checked_before_anything_runs(tmp_path, capsys, text, message):
    if message is None:  # a huge grid: refused at once, not expanded
        grid = "{" + ", ".join(f"k{i}: [{', '.join(map(str, range(100)))}]" for i in range(4)) + "}"
        text = text.replace("settings: {s: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}", f"settings: {grid}")
        message = "more than 10,000 cells"
    plan = write_plan(tmp_path / "p.yaml", text)
    t0 = time.monotonic()
    assert run_campaign("--plan", plan, "--budget-s", 10, "--out", tmp_path / "out") == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_plan_that_is_not_utf8_is_one_line(tmp_path, capsys):
    plan = tmp_path / "p.yaml"
    plan.write_bytes(b"name: p\ntrain: --task toy \xff\n")
    assert run_campaign("--plan", plan, "--budget-s", 10, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not UTF-8 text" in err[0]


@pytest.mark.parametrize("flag,value", [("--budget-s", "inf"), ("--budget-s", "-5"), ("--budget-s", "0"),
                                        ("--grace-s", "nan"), ("--grace-s", "-1"), ("--min-start-s", "inf"),
                                        ("--parallel", "0")])
def test_budgets_and_grace_must_be_finite_and_positive(tmp_path, capsys, flag, value):
    plan = write_plan(tmp_path / "p.yaml", FAST)
    args = {"--budget-s": "10", flag: value}
    assert campaign.main(["run", "--plan", plan, "--out", str(tmp_path / "out"),
                          *[x for kv in args.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_the_report_without_matplotlib_writes_its_tables_and_says_so_once(tmp_path, capsys, monkeypatch):
    import builtins
    from bench import common
    out = tmp_path / "results"
    (out / "hand").mkdir(parents=True)
    (out / "hand" / "plan.yaml").write_text(REPORTED)
    for seed in (0, 1):
        (out / f"hand/paper/greedy-0.9/seed{seed}").mkdir(parents=True)
        (out / f"hand/paper/greedy-0.9/seed{seed}/summary.json").write_text('{"status": "finished", "val_acc": 0.9}')
    (out / "hand/paper/greedy-0.99/seed1").mkdir(parents=True)
    (out / "hand/paper/greedy-0.99/seed1/summary.json").write_text('{"status": "finished", "val_acc": "0.9"}')
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(common, "_said", [])
    doc = tmp_path / "page.md"
    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 0
    page = doc.read_text()
    assert "| greedy 0.9 | 90.00 ± 0.00 (2) |" in page and "| greedy 0.99 | seed 1: damaged |" in page
    assert not list(tmp_path.glob("*.png"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib is not installed" in err[0] and "pictures are left out" in err[0]


def test_a_summary_out_of_range_is_shown_damaged_never_as_a_number(tmp_path, capsys):
    """true, -5, 1e308, "nan", null or a list where an accuracy belongs: status and the report show
    the seed as damaged (not 100.00%, -500.00%, inf, a chosen gamma or a crash)."""
    out = tmp_path / "results"
    (out / "hand").mkdir(parents=True)
    (out / "hand" / "plan.yaml").write_text(REPORTED)
    cells = [f"hand/{part}/{method}/seed{seed}" for part, method in
             (("paper", "greedy-0.9"), ("paper", "greedy-0.99"), ("heldout", "greedy-0.9")) for seed in (0, 1)]
    for cell, value in zip(cells, ["true", "-5", "1e308", '"nan"', "null", "[0.9]"]):
        (out / cell).mkdir(parents=True)
        (out / cell / "summary.json").write_text('{"status": "finished", "val_acc": %s, "test_acc": 0.5}' % value)
    text = status_text(out, capsys)
    assert text.count(" damaged ") == 6 and text.count("not a fraction in [0, 1]") == 6, text
    doc = tmp_path / "page.md"
    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 0
    page = doc.read_text()
    cleaning = page.split("## Campaign: data hyper-cleaning")[1]  # no seed finished: the plan is one line
    for cell in ("paper mnist 0.3 greedy 0.9 seed 0", "paper mnist 0.3 greedy 0.9 seed 1",
                 "paper mnist 0.3 greedy 0.99 seed 0", "paper mnist 0.3 greedy 0.99 seed 1",
                 "heldout mnist 0.3 greedy 0.9 seed 0", "heldout mnist 0.3 greedy 0.9 seed 1"):
        assert f"{cell}: damaged" in cleaning, cell
    assert "gamma chosen on validation" not in cleaning
    assert not any(number in cleaning for number in ("100.00", "-500.00", "inf", "nan", "90.00"))


def test_ctrl_c_during_the_report_is_one_line_and_leaves_the_page_whole(tmp_path, capsys, monkeypatch):
    doc = tmp_path / "page.md"
    doc.write_text("# Results\n")
    from bench import campaign_report

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(campaign_report, "experiment_text", interrupted)
    out = tmp_path / "results"
    (out / "hand").mkdir(parents=True)
    (out / "hand" / "plan.yaml").write_text(REPORTED)
    assert campaign.main(["report", "--out", str(out), "--doc", str(doc)]) == 130
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and doc.read_text() == "# Results\n"


def test_a_link_planted_in_the_keep_directory_is_refused_and_the_other_cells_run(tmp_path, fake_train, capsys):
    plan, out, keep = write_plan(tmp_path / "p.yaml", FAST), tmp_path / "results", tmp_path / "runs" / "campaign"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (keep / "p/default/diverges").mkdir(parents=True)
    os.symlink(elsewhere, keep / "p/default/diverges/seed0")
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 2
    printed = capsys.readouterr().out
    assert "skipped p/default/diverges/seed0: " in printed and "is a symbolic link" in printed
    assert "diverged: p/default/diverges/seed1" in printed and os.listdir(elsewhere) == []
    # planted after the cell ran, before its files are moved aside: the cell is left as it is
    os.remove(keep / "p/default/diverges/seed0")
    summary = {"status": "finished", "steps_done": 3, "outer_steps": 3}
    (out / "p/default/diverges/seed0").mkdir(parents=True)
    (out / "p/default/diverges/seed0/summary.json").write_text(json.dumps(summary))
    (out / "p/default/diverges/seed0/train.log").write_text("log")
    os.symlink(elsewhere, keep / "p/default/diverges/seed0")
    runner.tidy(campaign_plan.load_plan(plan).cells[0], harness_campaign.parser().parse_args(
        ["run", "--plan", plan, "--budget-s", "1", "--out", str(out), "--keep", str(keep)]))
    assert "is a symbolic link; refusing to move files into it" in capsys.readouterr().out
    assert os.listdir(elsewhere) == [] and (out / "p/default/diverges/seed0/train.log").exists()


def test_a_full_disk_under_results_is_one_line_and_stops_the_campaign(tmp_path, fake_train, capsys, monkeypatch):
    from harness.rundir import WriteError
    plan, out = write_plan(tmp_path / "p.yaml", FAST.replace("seeds: [0, 1]", "seeds: [0, 1, 2]")), tmp_path / "out"

    def full(path, data):
        raise WriteError(f"could not write {path}: No space left on device")

    monkeypatch.setattr(runner, "write_json", full)
    assert run_campaign("--plan", plan, "--budget-s", 60, "--out", out) == 1
    printed = capsys.readouterr().out
    assert "No space left on device; its run's own files are intact" in printed
    assert "started p/default/diverges/seed2" not in printed  # nothing new starts after the fault


# ---- the plans as W&B sweeps: the grid is declared once -----------------------------------------------

def expand_sweep(text):
    """The command lines a W&B grid sweep runs: the product of its parameters, each as ``--name=value``
    in place of ``${args}`` (as the agent formats them)."""
    import itertools
    import yaml
    sweep = yaml.safe_load(text)
    assert sweep["method"] == "grid"
    params = sweep["parameters"]
    grids = [params[n]["values"] if "values" in params[n] else [params[n]["value"]] for n in params]
    lines = []
    for combo in itertools.product(*grids):
        args = [f"--{n}={v}" for n, v in zip(params, combo)]
        lines.append([x for token in sweep["command"] for x in (args if token == "${args}" else [token])])
    return lines


@pytest.mark.parametrize("name", sorted(os.path.splitext(f)[0] for f in os.listdir(PLANS) if f.endswith(".yaml")))
def test_a_plans_sweep_runs_each_of_its_cells_once(name, capsys):
    path = os.path.join(PLANS, f"{name}.yaml")
    assert campaign.main(["sweep", "--plan", path]) == 0
    lines = expand_sweep(capsys.readouterr().out)
    cells = campaign_plan.load_plan(path).cells
    assert len(lines) == len(cells)
    seen = set()
    for line in lines:
        assert line[:6] == ["${env}", "${interpreter}", "-m", "bench.campaign", "cell", "--plan"]
        args = harness_campaign.parser().parse_known_args(line[4:])[0]
        args.root = ROOT
        argv = harness_campaign.sweep.cell_argv(args, [])
        assert argv[1] == os.path.join(ROOT, "train.py") and tuple(argv[2:]) == cells[args.cell].args
        seen.add(args.cell)
    assert seen == set(range(len(cells)))


@pytest.mark.parametrize("name,task,want", [
    ("table3", "omniglot", {(w, m, s) for w in (2, 3, 5, 10) for m in ("fo", "t1t2", "ift", "full", "greedy 0.9",
                                                                        "greedy 0.99", "greedy 0.999")
                            for s in range(5)}),
    ("table2", "hyper_cleaning", {(d, n, p, m, s) for d in ("mnist", "fashion_mnist") for n in (0.3, 0.5)
                                  for p in ("paper", "heldout") for m in ("w/o HPO", "oracle", "t1t2", "ift", "full",
                                                                          "greedy 0.9", "greedy 0.99", "greedy 0.999")
                                  for s in range(5)}),
])
def test_the_plans_cover_the_papers_grid(name, task, want):
    got = []
    for cell in campaign_plan.load_plan(os.path.join(PLANS, f"{name}.yaml")).cells:
        cfg = campaign_plan.resolved(cell.args)
        if cfg.task != task or cfg.get("variant", "eq6") != "eq6":
            continue
        row = f"greedy {cfg.gamma}" if cfg.method == "greedy" else cfg.method
        if task == "omniglot":
            got.append((cfg.ways, row, cfg.seed))
        else:
            row = "oracle" if cfg.oracle else "w/o HPO" if not cfg.hpo else row
            got.append((cfg.dataset, cfg.noise, cfg.protocol, row, cfg.seed))
    assert len(got) == len(set(got)) and set(got) == want


def test_the_level_causes_plan_moves_one_setting_per_cell_cheapest_first():
    """Each cell of level_causes is its baseline (table3_mb1's 5-way FO / greedy 0.9, table2's MNIST
    0.3 w/o HPO / greedy 0.9) with exactly one setting moved; hyper-cleaning first; seeds beyond 0 only
    after the seed-0 cells."""
    from harness import config
    plan = campaign_plan.load_plan(os.path.join(PLANS, "level_causes.yaml"))
    moved = {"init": "fresh", "loss_reduction": "sum", "eval_queries": "inductive", "val_split": "alphabets",
             "noise_model": "any"}
    baselines = {}
    for name in ("table3_mb1", "table2"):
        for cell in campaign_plan.load_plan(os.path.join(PLANS, f"{name}.yaml")).cells:
            cfg = campaign_plan.resolved(cell.args).to_dict()
            baselines[tuple(sorted((k, v) for k, v in cfg.items() if k != "seed"))] = cell.method
    seen = []
    for cell in plan.cells:
        cfg = campaign_plan.resolved(cell.args).to_dict()
        changed = [k for k, v in moved.items() if cfg.get(k) == v]
        assert len(changed) == 1, cell.path
        base = {**cfg, changed[0]: config.table().by_name[changed[0]].default}
        baseline = baselines.get(tuple(sorted((k, v) for k, v in base.items() if k != "seed")))
        assert baseline in ("FO", "greedy 0.9", "w/o HPO"), cell.path
        assert cell.method.startswith(baseline + ", ")
        seen.append((cfg["task"], changed[0], baseline, cell.seed))
    assert len(seen) == len(set(seen)) >= 12
    assert [t for t, *_ in seen[:12]] == ["hyper_cleaning"] * 4 + ["omniglot"] * 8
    assert [s for *_, s in seen[:12]] == [0] * 12 and {s for *_, s in seen[12:]} <= {1, 2}
    assert {(c, b) for t, c, b, s in seen if t == "omniglot"} == {(c, b) for c in ("init", "loss_reduction",
                                                                                    "eval_queries", "val_split")
                                                                  for b in ("FO", "greedy 0.9")}
    assert {(c, b) for t, c, b, s in seen if t == "hyper_cleaning"} == {(c, b) for c in ("loss_reduction",
                                                                                          "noise_model")
                                                                        for b in ("w/o HPO", "greedy 0.9")}


def test_a_sweep_file_is_written_once_and_never_over_another(tmp_path, capsys):
    plan, to = os.path.join(PLANS, "smoke.yaml"), tmp_path / "sweep.yaml"
    assert campaign.main(["sweep", "--plan", plan, "--to", str(to)]) == 0
    assert len(expand_sweep(to.read_text())) == len(campaign_plan.load_plan(plan).cells)
    to.write_text("mine")
    assert campaign.main(["sweep", "--plan", plan, "--to", str(to)]) == 2
    assert to.read_text() == "mine" and "exists" in capsys.readouterr().err


def test_the_agent_runs_a_cell_as_train_py_would(tmp_path):
    """``cell`` becomes train.py on the cell's flags, with the flags after it (the agent's run)."""
    plan = os.path.join(PLANS, "smoke.yaml")
    cell = campaign_plan.load_plan(plan).cells[-1]
    run_dir = tmp_path / "run"
    proc = subprocess.run([PY, "-m", "bench.campaign", "cell", "--plan", plan, "--cell=3", "--run-dir", str(run_dir),
                           "--wandb", "disabled", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import yaml
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    want = campaign_plan.resolved(cell.args).to_dict()
    assert {k: stored[k] for k in ("task", "method", "inner_steps", "outer_steps")} == \
        {k: want[k] for k in ("task", "method", "inner_steps", "outer_steps")}
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    bad = subprocess.run([PY, "-m", "bench.campaign", "cell", "--plan", plan, "--cell=4"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--cell" in bad.stderr


def test_each_cell_takes_the_threads_it_is_given_or_the_campaigns_omp_num_threads():
    """A campaign started with OMP_NUM_THREADS=1 (the README's advice on a busy CPU) runs its cells
    with one thread, not with the cores divided by --parallel; --threads wins over both."""
    from harness.campaign.runner import cell_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cell_threads(0, 1, {"OMP_NUM_THREADS": "1"}) == 1
    assert cell_threads(3, 1, {"OMP_NUM_THREADS": "1"}) == 3
    assert cell_threads(0, 1, {}) == cores and cell_threads(0, 2 * cores, {}) == 1
    assert cell_threads(0, 1, {"OMP_NUM_THREADS": "zero"}) == cores


def test_status_since_totals_the_wall_time_of_recent_attempts_per_device(tmp_path, capsys):
    out = tmp_path / "results"
    (out / "p").mkdir(parents=True)
    (out / "p/plan.yaml").write_text("name: p\ntrain: --task toy\nmethods: {a: --method fo, b: --method greedy}\n"
                                     "groups: [{methods: [a, b], seeds: [0]}]\n")
    attempts = {"a": [("2026-11-30T10:00:00Z", "cuda", 7200.0), ("2026-12-03T09:00:00Z", "cpu", 1800.0)],
                "b": [("2026-12-03T08:59:59Z", "cpu", 360.0), ("2026-12-03T10:00:00Z", "cuda", 900.0),
                      ("not a time", "cpu", 5000.0)]}
    for method, tries in attempts.items():
        d = finished_cell(out, f"p/default/{method}/seed0", {"meta_val_acc": 0.5})
        (d / "cell.json").write_text(json.dumps({"attempts": [
            {"device": dev, "started": t, "seconds": s, "rc": 0, "outcome": "finished"} for t, dev, s in tries],
            "outcome": "finished", "tail": []}))
    capsys.readouterr()
    assert campaign.main(["status", "--out", str(out), "--since", "2026-12-03T09:00"]) == 0
    text = capsys.readouterr().out
    assert "wall time of the attempts started since 2026-12-03T09:00:00+00:00: 0.50 h on cpu, 0.25 h on cuda" in text
    assert "4.24 h wall" in text  # the plan's total still counts every attempt, readable or not
    assert campaign.main(["status", "--out", str(out), "--since", "2026-12-04"]) == 0
    assert "started since 2026-12-04T00:00:00+00:00: none" in capsys.readouterr().out
    assert campaign.main(["status", "--out", str(out), "--since", "yesterday"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--since 'yesterday': not an ISO date" in err[0]
