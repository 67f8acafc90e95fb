"""--loop graph: the batched meta-batch captured in a CUDA graph gives the batched path's numbers.

The comparisons run in float64 (where a graph and the eager path can only differ by round-off) and
need a CUDA GPU; without one they are skipped, and what a CPU can check (the refusal, the deferred
loss check) runs."""
import json
import math

import pytest
import torch

import tasks
import train
from harness import config
from metagreedy import estimators
from harness.config import UsageError
from metagreedy.cuda_graph import Replay
from metagreedy.data import get_tasksets
from metagreedy.optim import OPTIMIZERS

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OPTIONS = {"greedy": ["--gamma", "0.9"], "t1t2": [], "full": [], "fo": [], "ift": ["--terms", "2"],
           "truncated": ["--k", "2"]}
VARIANTS = {"": [], "learned init": ["--init", "learned"], "step val batch": ["--step-val-batch", "3"],
            "fresh init": ["--init", "fresh"], "summed losses": ["--loss-reduction", "sum"]}


def make_task(tasksets, loop, method, device, meta_batch=4, extra=()):
    cfg = config.resolve(["--task", "omniglot", "--ways", "3", "--shots", "1", "--queries", "2", "--inner-steps", "3",
                          "--meta-batch", str(meta_batch), "--loop", loop, "--method", method, *OPTIONS[method],
                          *extra])
    return tasks.load("omniglot").Task(cfg, device, torch.float64, tasksets=tasksets)


@pytest.fixture(scope="module")
def small_tasksets():
    return get_tasksets("synthetic", 3, 1, 2, synthetic_classes=(20, 10))


def test_graph_loop_is_refused_without_a_gpu(small_tasksets):
    with pytest.raises(UsageError, match="CUDA"):
        make_task(small_tasksets, "graph", "greedy", torch.device("cpu"))


def test_deferred_checks_keep_the_losses_as_tensors_and_finite_checks_them_after():
    w, alpha = torch.ones(2), torch.zeros(2, requires_grad=True)
    problem = estimators.Bilevel(lambda w, a: (w[0] * (w[0] - a[0])).sum(), lambda w, a: w[0].sum() * math.nan,
                                 OPTIMIZERS["sgd"](0.1, 0.0), 2)
    with estimators.deferred_finite_checks():
        est = estimators.greedy(problem, (w,), (alpha,))
    assert isinstance(est.val_loss, torch.Tensor) and torch.isnan(est.val_loss)
    with pytest.raises(estimators.NonFiniteLoss, match="val_loss is nan"):
        estimators.finite("val_loss", est.val_loss)
    with pytest.raises(estimators.NonFiniteLoss):  # outside the context: checked as before
        estimators.greedy(problem, (w,), (alpha,))


def test_auto_is_the_graph_on_a_gpu_and_the_higher_loop_on_a_cpu():
    cfg = config.resolve(["--task", "omniglot"])
    omniglot = tasks.load("omniglot")
    assert omniglot.choose_loop(cfg, torch.device("cuda")) == "graph"
    assert omniglot.choose_loop(cfg, torch.device("cpu")) == "higher"
    assert omniglot.choose_loop(cfg.replace(loop="batched"), torch.device("cuda")) == "batched"


def test_replay_refuses_cpu_inputs():
    with pytest.raises(ValueError, match="CUDA"):
        Replay(lambda x: x * 2)(torch.ones(3))


@pytest.mark.parametrize("variant", ["", "fresh init"])
def test_the_graph_path_hands_the_captured_function_every_input_it_reads(small_tasksets, variant):
    """What a CPU can check of --loop graph: the replayed function gets the episodes and, with
    --init fresh, the tasks' starts as its inputs (a graph replays only what it is handed), so an
    eager stand-in for the replay gives the batched path's hypergradients."""
    eager = make_task(small_tasksets, "batched", "greedy", torch.device("cpu"), extra=VARIANTS[variant])
    graph = make_task(small_tasksets, "batched", "greedy", torch.device("cpu"), extra=VARIANTS[variant])
    handed = []
    graph.replay = lambda *inputs: handed.append(len(inputs)) or graph.batched_estimate_on(*inputs)
    got, want = graph.hypergradient(2, list(range(4)))[0], eager.hypergradient(2, list(range(4)))[0]
    assert handed == [4 + (5 if variant else 0)]  # the episodes' four tensors, then the five adapted layers'
    for name in want:
        assert torch.equal(got[name], want[name])


@cuda
@pytest.mark.parametrize("method,variant", [(m, "") for m in sorted(OPTIONS)] +
                         [("greedy", "learned init"), ("full", "learned init"), ("greedy", "step val batch"),
                          ("greedy", "fresh init"), ("full", "fresh init"), ("greedy", "summed losses")])
def test_graph_replays_equal_the_batched_path_in_float64(small_tasksets, method, variant):
    """The first call captures, the next ones copy new episodes in and replay; every one equals the
    eager batched hypergradient, also after the hyperparameters have changed in place."""
    device = torch.device("cuda")
    graph, eager = (make_task(small_tasksets, loop, method, device, extra=VARIANTS[variant])
                    for loop in ("graph", "batched"))
    for step in range(3):
        got, got_metrics, _ = graph.hypergradient(step, list(range(4)))
        want, want_metrics, _ = eager.hypergradient(step, list(range(4)))
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)
        for key in ("val_loss", "train_loss", "train_query_acc"):
            assert got_metrics[key] == pytest.approx(want_metrics[key], rel=1e-10)
        with torch.no_grad():
            for task in (graph, eager):
                for a in task.hparams.values():
                    a.mul_(1.01)


@cuda
def test_a_graph_run_equals_a_batched_run_in_float64(tmp_path):
    """train.py end to end, five outer steps with Adam on the hyperparameters and an evaluation."""
    rows = {}
    for loop in ("graph", "batched"):
        run_dir = tmp_path / loop
        assert train.main(["--ways", "3", "--shots", "1", "--queries", "2", "--dataset", "synthetic", "--meta-batch", "4",
                           "--outer-steps", "5", "--eval-every", "5", "--eval-tasks", "4", "--final-eval-tasks", "4",
                           "--dtype", "float64", "--device", "cuda", "--loop", loop, "--wandb", "disabled",
                           "--no-progress", "--run-dir", str(run_dir)]) == 0
        rows[loop] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows["graph"]) == len(rows["batched"]) >= 5
    for a, b in zip(rows["graph"], rows["batched"]):
        for key, value in b.items():
            if isinstance(value, float) and key not in ("step_time", "seconds", "elapsed"):
                assert a[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
