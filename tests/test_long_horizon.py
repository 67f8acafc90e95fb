"""The long-horizon task on synthetic digits (no dataset needed): its hypergradient is the derivative
of its validation loss, its mini-batches are indexed by the step, and train.py runs it end to end."""
import json
import os

import pytest
import torch

import tasks
import train
from harness import config
from harness.config import UsageError
from metagreedy.data.digits import make_splits, synthetic_digits

TINY = ["--task", "long_horizon", "--dataset", "synthetic", "--n-train", "60", "--n-val", "20", "--hidden", "6",
        "--batch-size", "5", "--inner-steps", "4", "--no-progress", "--wandb", "disabled"]


def make_task(*args):
    cfg = config.resolve([*TINY, "--dtype", "float64", *args])
    tasks.load("long_horizon").check(cfg)
    return tasks.load("long_horizon").Task(cfg, torch.device("cpu"), torch.float64)


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as fh:
        return json.load(fh)


def test_synthetic_digits_are_deterministic_and_shaped_like_mnist():
    x, y = synthetic_digits(30, seed=1)
    assert x.shape == (30, 784) and y.shape == (30,) and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(synthetic_digits(30, seed=1)[0], x, rtol=0, atol=0)
    assert not torch.equal(synthetic_digits(30, seed=1, salt=1)[0], x)
    splits = make_splits("synthetic", "unused", seed=0, n_train=40, n_val=10, n_test=5)
    assert [len(t) for t in splits] == [40, 40, 10, 10, 5, 5]


@pytest.mark.parametrize("method", ["full", "greedy"])
def test_hypergradient_is_the_derivative_of_the_validation_loss(method):
    """Full's hypergradient (per-layer log learning rates and log weight decay, a batch per step)
    equals central finite differences of val_loss(w_T(alpha)); greedy with gamma 1 at T=1 as well."""
    task = make_task("--method", method, *(["--inner-steps", "1", "--gamma", "1.0"] if method == "greedy" else []))
    grads, metrics, count = task.hypergradient(0, [0])
    batches = task.batches(0, 0xBA7C)

    def val_at(alpha):
        import metagreedy as mg
        from tasks.common import inner_arguments
        w = mg.inner_loop(task.train_loss(batches), task.w0, alpha, **inner_arguments(task.cfg, lr=task.lr))
        return task.val_loss(w, alpha).item()

    for name, value in task.hparams.items():
        for i in range(value.numel()):
            bumped = []
            for sign in (1, -1):
                alpha = {k: v.detach().clone() for k, v in task.hparams.items()}
                alpha[name].view(-1)[i] += sign * 1e-6
                bumped.append(val_at(alpha))
            fd = (bumped[0] - bumped[1]) / 2e-6
            assert grads[name].reshape(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), (name, i)
    assert count == 1 and metrics["vjps"] == task.cfg.inner_steps


def test_each_step_has_its_own_batch_drawn_once_per_hypergradient():
    task = make_task()
    a, b = task.batches(3, 0xBA7C), task.batches(3, 0xBA7C)
    assert a.shape == (4, 5) and torch.equal(a, b)  # drawn again: the same batches (a replay sees them)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a, task.batches(4, 0xBA7C))
    loss = task.train_loss(a)
    w, alpha = task.w0, task.hparams
    assert loss(w, alpha, 1).item() != loss(w, alpha, 2).item()
    with pytest.raises(IndexError):
        loss(w, alpha, 5)


def test_bad_settings_are_refused():
    with pytest.raises(UsageError, match="batch-size"):
        make_task("--batch-size", "100")
    with pytest.raises(UsageError, match="n-train"):
        tasks.load("long_horizon").check(config.resolve(["--task", "long_horizon", "--n-train", "59500"]))


def test_runs_end_to_end_through_train_py(tmp_path):
    """Tuned (greedy) and the fixed starting values (--outer-steps 0): both finish with accuracies and
    the learning rates; tuning moved them, the fixed run kept --inner-lr."""
    tuned, fixed = str(tmp_path / "tuned"), str(tmp_path / "fixed")
    assert train.main(TINY + ["--outer-steps", "3", "--eval-every", "2", "--run-dir", tuned]) == 0
    assert train.main(TINY + ["--outer-steps", "0", "--inner-lr", "0.2", "--run-dir", fixed]) == 0
    s, f = summary(tuned), summary(fixed)
    assert s["status"] == f["status"] == "finished" and s["steps_done"] == 3 and s["vjps_per_step"] == 4
    for key in ("val_acc", "test_acc", "lr_fc1", "lr_fc2", "lr_fc3", "weight_decay"):
        assert key in s and key in f
    assert s["lr_fc1"] != pytest.approx(0.05) and f["lr_fc1"] == f["lr_fc3"] == pytest.approx(0.2)
    with open(os.path.join(tuned, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["step"] for r in rows] == [0, 1, 2] and "val_acc" in rows[1] and "val_acc" in rows[2]
