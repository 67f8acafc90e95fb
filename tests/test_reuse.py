"""A trained run reused in three lines: load_run rebuilds it from its checkpoint alone, evaluate
reproduces its summary exactly, predict adapts to episodes of any number of ways and shots, and
python -m bench.evaluate scores it on the meta-test split."""
import json
import os
import shutil

import pytest
import torch
import yaml

import tasks
import train
from bench.evaluate import main as evaluate_main
from harness import checkpoint, rundir
from harness.reuse import load_run
from harness.settings import UsageError
from metagreedy.data import synthetic_alphabet
from metagreedy.models import linear_init

RUN = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "3", "--meta-batch", "2",
       "--inner-steps", "2", "--outer-steps", "4", "--eval-every", "2", "--eval-tasks", "3", "--final-eval-tasks",
       "6", "--dtype", "float64", "--no-progress", "--wandb", "disabled"]


@pytest.fixture(scope="module")
def alphabets():
    return synthetic_alphabet(40), synthetic_alphabet(24, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, alphabets):
    """A finished 3-way Omniglot run on a small synthetic alphabet (the loader is swapped for it in
    training and in reuse alike), trained once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        patch.setattr(tasks.load("omniglot"), "load_alphabets", lambda name, root: alphabets)
        path = str(tmp_path_factory.mktemp("reuse") / "run")
        assert train.main(RUN + ["--run-dir", path]) == 0
        with open(os.path.join(path, "summary.json")) as fh:
            yield path, json.load(fh)


def test_evaluate_reproduces_the_summary_exactly(trained):
    path, summary = trained
    run = load_run(path)
    assert run.config.ways == 3 and run.step == 4 and run.summary == summary
    assert sorted(run.hparams) == ["warp2.0.weight", "warp4.0.weight", "warp6.0.weight"]
    test = run.evaluate(split="test")
    assert (test.accuracy, test.ci95, test.tasks) == (summary["meta_test_acc"], summary["meta_test_ci95"], 6)
    val = run.evaluate(split="validation", tasks=6)
    assert (val.accuracy, val.ci95) == (summary["meta_val_acc"], summary["meta_val_ci95"])


def edited_copy(path, copy, settings=(), facts=()):
    """A copy of a run with some settings and facts changed, in the checkpoint and config.yaml alike."""
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns(".lock"))
    payload = torch.load(os.path.join(copy, checkpoint.LATEST), weights_only=True)
    with open(os.path.join(copy, "config.yaml")) as fh:
        stored = yaml.safe_load(fh)
    for values, stored_facts in ((payload["config"], payload["facts"]), (stored, stored["facts"])):
        values.update(settings)
        stored_facts.update(facts)
    torch.save(payload, os.path.join(copy, checkpoint.LATEST))
    rundir.write_yaml(os.path.join(copy, "config.yaml"), stored)
    return copy


def test_predict_needs_no_dataset_and_a_data_error_says_how_to_point_at_the_data(trained, alphabets, tmp_path,
                                                                               monkeypatch, capsys):
    """A run trained on the real Omniglot, reused where there is none: predict works on the user's
    images; a split (evaluate) needs the data, and the error says how to give it."""
    from metagreedy.data import DataError, FewShotTasks
    omniglot = tasks.load("omniglot")

    def offline(root, timeout=20.0):
        raise DataError(f"Omniglot is not under '{root}' and could not be downloaded (OSError)")

    def no_reading(*args):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(omniglot, "download", offline)
    monkeypatch.setattr(omniglot, "load_alphabets", no_reading)
    path, _ = trained
    copy = edited_copy(path, str(tmp_path / "real"), settings={"dataset": "auto", "data_root": str(tmp_path / "no")},
                       facts={"dataset": "omniglot"})
    run = load_run(copy)
    episode = FewShotTasks(alphabets[1], ways=3, shots=1, queries=3, seed=5)[0]
    labels = run.predict(episode.support_x, episode.support_y, episode.query_x)
    assert labels.shape == (9,)
    with pytest.raises(DataError, match=r"Omniglot is not under .*; point at it with load_run\(\.\.\., data_root=DIR\) "
                                        r"or python -m bench.evaluate \.\.\. --data-root DIR"):
        run.evaluate(tasks=1)
    capsys.readouterr()
    assert evaluate_main([copy, "--tasks", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data-root DIR" in err[0]


def test_predict_refuses_images_that_are_not_finite_or_out_of_range(trained):
    run = load_run(trained[0])
    ep = run.task.test_tasks[0]
    nan = ep.query_x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="query_x holds values that are not finite"):
        run.predict(ep.support_x, ep.support_y, nan)
    with pytest.raises(ValueError, match=r"support_x must be in \[0, 1\].*got values in \[0, 255\]; divide 0-255"):
        run.predict(ep.support_x * 255, ep.support_y, ep.query_x)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        run.predict(ep.support_x - 0.5, ep.support_y, ep.query_x)


def test_loading_an_unfinished_run_says_where_it_stopped(trained, tmp_path, capsys):
    path, _ = trained
    copy = str(tmp_path / "part")
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns(".lock"))
    os.remove(os.path.join(copy, "summary.json"))
    capsys.readouterr()
    load_run(copy)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is unfinished: it stopped at outer step 4 of 4 (no summary.json)" in err[0]
    load_run(path)
    assert capsys.readouterr().err == ""  # a finished run: nothing to say


def test_hyperparameters_of_the_wrong_shape_are_refused_as_by_resume(trained, tmp_path):
    path, _ = trained
    copy = str(tmp_path / "bad")
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns(".lock"))
    payload = torch.load(os.path.join(copy, checkpoint.LATEST), weights_only=True)
    name = sorted(payload["hparams"])[0]
    payload["hparams"][name] = payload["hparams"][name][:1]  # would broadcast into the model
    torch.save(payload, os.path.join(copy, checkpoint.LATEST))
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit its task: warp2.0.weight has shape"):
        load_run(copy)
    payload = torch.load(os.path.join(path, checkpoint.LATEST), weights_only=True)
    payload["task_state"]["w0"]["head.weight"] = payload["task_state"]["w0"]["head.weight"][:, :1]
    torch.save(payload, os.path.join(copy, checkpoint.LATEST))
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit its task: w0.head.weight has shape"):
        load_run(copy)
    with pytest.raises(UsageError, match="data_root must be a folder's path"):
        load_run(path, data_root=5)


def trained_on_a_gpu(path, copy):
    """A copy of a run as a GPU would have written it: --device cuda, the CUDA graph, a CUDA device
    in its facts, in the checkpoint and config.yaml alike (tensors are stored on the CPU either way:
    checkpoint.save moves them there, and checkpoint.load maps any device's tensors to the CPU)."""
    return edited_copy(path, copy, settings={"loop": "graph", "device": "cuda"},
                       facts={"device_name": "cuda (NVIDIA H200)", "loop": "graph"})


def test_a_run_trained_with_the_cuda_graph_is_scored_on_a_cpu(trained, tmp_path):
    path, summary = trained
    copy = trained_on_a_gpu(path, str(tmp_path / "graph-run"))
    test = load_run(copy, device="cpu").evaluate(split="test")
    assert (test.accuracy, test.ci95) == (summary["meta_test_acc"], summary["meta_test_ci95"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for a machine without a GPU")
def test_a_gpu_trained_run_runs_on_the_cpu_where_there_is_no_gpu_and_says_so(trained, tmp_path, capsys):
    path, summary = trained
    copy = trained_on_a_gpu(path, str(tmp_path / "gpu-run"))
    run = load_run(copy)  # its own setting is --device cuda
    assert run.task.device.type == "cpu"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on cuda (NVIDIA H200)" in err[0] and "runs on the CPU" in err[0]
    assert evaluate_main([copy, "--tasks", "6"]) == 0
    captured = capsys.readouterr()
    assert f"{100 * summary['meta_test_acc']:.2f} ± {100 * summary['meta_test_ci95']:.2f}%" in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="no CUDA GPU"):  # asked for by name: refused
        load_run(copy, device="cuda")


def test_nothing_is_redrawn_the_initialisation_comes_from_the_checkpoint(trained):
    path, _ = trained
    stored = checkpoint.load(path)["task_state"]["w0"]
    torch.manual_seed(12345)  # whatever the global generator holds
    run = load_run(path)
    for name, value in stored.items():
        assert torch.equal(run.task.w0[name].cpu(), value), name
    for name, value in checkpoint.load(path)["hparams"].items():
        assert torch.equal(run.hparams[name], value)


def test_predict_adapts_as_training_did_and_takes_any_ways_and_shots(trained, alphabets):
    path, _ = trained
    run = load_run(path)
    episode = run.task.test_tasks[0]
    labels = run.predict(episode.support_x, episode.support_y, episode.query_x)
    accuracy = (labels == episode.query_y).double().mean().item()
    assert accuracy == run.task.accuracy(run.task.test_tasks, 1)[0]
    from metagreedy.data import FewShotTasks
    seven = FewShotTasks(alphabets[1], ways=7, shots=2, queries=3, seed=5)[0]  # 7-way 2-shot on a 3-way run
    first = run.predict(seven.support_x, seven.support_y, seven.query_x)
    assert first.shape == (21,) and first.min() >= 0 and first.max() <= 6
    assert torch.equal(first, run.predict(seven.support_x, seven.support_y, seven.query_x))
    # the documented head rule for another number of ways: nn.Linear's initialisation keyed by (seed, ways)
    weight, bias = linear_init(288, 7, run.config.seed)
    assert torch.equal(run.task.start_weights(7)["head.weight"], weight.double())
    assert torch.equal(run.task.start_weights(3)["head.weight"], run.task.w0["head.weight"])
    with pytest.raises(ValueError, match="labels 0..ways-1"):
        run.predict(seven.support_x, seven.support_y + 1, seven.query_x)


def test_inductive_queries_do_not_depend_on_each_other(trained):
    path, _ = trained
    run = load_run(path)
    ep = run.task.test_tasks[1]
    together = run.predict(ep.support_x, ep.support_y, ep.query_x, query_mode="inductive")
    alone = torch.cat([run.predict(ep.support_x, ep.support_y, ep.query_x[i:i + 1], query_mode="inductive")
                       for i in range(len(ep.query_x))])
    assert torch.equal(together, alone)
    scores = {mode: run.evaluate(tasks=2, query_mode=mode) for mode in ("transductive", "inductive")}
    assert all(0 <= s.accuracy <= 1 for s in scores.values())


def test_the_command_line_scores_the_meta_test_split(trained, capsys):
    path, summary = trained
    assert evaluate_main([path, "--tasks", "6"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (f"meta-test accuracy, 3-way 1-shot, 3 queries per class, 6 tasks, transductive: "
                    f"{100 * summary['meta_test_acc']:.2f} ± {100 * summary['meta_test_ci95']:.2f}%")
    assert evaluate_main([path, "--ways", "5", "--shots", "2", "--tasks", "2", "--query-mode", "both"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "5-way 2-shot" in lines[0] and lines[1].endswith("%") and "inductive" in lines[1]


def test_bad_input_to_predict_and_evaluate_says_what_is_expected(trained):
    path, _ = trained
    run = load_run(path)
    ep = run.task.test_tasks[0]
    for xs, ys, message in [(ep.support_x[:, 0], ep.support_y, r"support_x must be a float tensor \[N, 1, 28, 28\]"),
                            ((ep.support_x * 255).to(torch.uint8), ep.support_y, "support_x must be a float tensor"),
                            (ep.support_x, ep.support_y.double(), "support_y must hold one integer label")]:
        with pytest.raises(ValueError, match=message):
            run.predict(xs, ys, ep.query_x)
    for tasks_ in (0, -1, 2.5):
        with pytest.raises(ValueError, match="tasks must be a positive integer"):
            run.evaluate(tasks=tasks_)


@pytest.mark.parametrize("args,message", [(["--ways", "0"], "--ways must be at least 1"),
                                          (["--ways", "30"], "30-way tasks need 30 classes"),
                                          (["--tasks", "x"], "argument --tasks: invalid int value"),
                                          (["--split", "train"], "argument --split: invalid choice")])
def test_bad_requests_are_one_line(trained, capsys, args, message):
    path, _ = trained
    assert evaluate_main([path, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_run_of_another_task_says_what_it_cannot_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path = str(tmp_path / "toy")
    assert train.main(["--task", "toy", "--outer-steps", "2", "--no-progress", "--run-dir", path]) == 0
    run = load_run(path)
    assert run.config.task == "toy" and torch.equal(run.hparams["alpha"], checkpoint.load(path)["hparams"]["alpha"])
    with pytest.raises(TypeError, match="needs a few-shot run; this one is a toy run"):
        run.evaluate()
    assert evaluate_main([path]) == 2 and "few-shot" in capsys.readouterr().err


def test_the_registry_passed_to_load_run_is_the_one_it_reads_the_settings_with(trained, tmp_path, monkeypatch):
    """``experiments=`` is any registry of the kind of the checkout's ``tasks``: the checkpoint's
    settings are read against it, for this call only. One that lists only the toy task rebuilds a
    toy run, and refuses an Omniglot run as of a task it does not know; a wrong object is refused
    with a message that names the argument."""
    from harness import config
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path, summary = trained
    run = load_run(path, experiments=tasks)
    assert run.summary == summary and run.evaluate(tasks=2).tasks == 2
    toy_path = str(tmp_path / "toy")
    assert train.main(["--task", "toy", "--outer-steps", "2", "--no-progress", "--run-dir", toy_path]) == 0
    only_toy = _Experiments(toy=tasks.load("toy"))
    run = load_run(toy_path, experiments=only_toy)
    assert run.config.task == "toy" and config.table() is config.table(tasks)  # for the call only
    with pytest.raises(checkpoint.CheckpointError, match=r"names an unknown task or method \('omniglot'"):
        load_run(path, experiments=only_toy)
    for wrong in (tasks.load("toy"), 42, _Experiments()):
        with pytest.raises(TypeError, match="load_run: experiments must be a registry of tasks"):
            load_run(toy_path, experiments=wrong)


class _Experiments:
    """A registry of experiments made up for a test: ``NAMES`` and ``load(name)``."""

    def __init__(self, **modules):
        self.NAMES, self.modules = tuple(modules), modules

    def load(self, name):
        return self.modules[name]


@pytest.fixture(scope="module")
def trained_levels(tmp_path_factory, alphabets):
    """A run with the settings of the paper's open questions: a fresh start per task, summed losses,
    inductive evaluation, meta-validation held out by alphabet."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        patch.setattr(tasks.load("omniglot"), "load_alphabets", lambda name, root: alphabets)
        path = str(tmp_path_factory.mktemp("reuse") / "levels")
        assert train.main(RUN + ["--run-dir", path, "--init", "fresh", "--loss-reduction", "sum", "--eval-queries",
                                 "inductive", "--val-split", "alphabets"]) == 0
        with open(os.path.join(path, "summary.json")) as fh:
            yield path, json.load(fh)


def test_a_run_with_the_level_settings_is_reproduced_by_evaluate_and_the_command_line(trained_levels, capsys):
    """Reuse adapts each task from its own fresh start, with the summed loss, and scores the queries
    one by one, as the run did: its summary exactly, by default."""
    path, summary = trained_levels
    run = load_run(path)
    test = run.evaluate(split="test")
    assert (test.accuracy, test.ci95) == (summary["meta_test_acc"], summary["meta_test_ci95"])
    val = run.evaluate(split="validation")
    assert (val.accuracy, val.ci95) == (summary["meta_val_acc"], summary["meta_val_ci95"])
    assert run.evaluate(split="test", query_mode="transductive") != test  # the mode is the run's, not the default
    capsys.readouterr()
    assert evaluate_main([path]) == 0
    assert capsys.readouterr().out.strip().endswith(
        f"6 tasks, inductive: {100 * summary['meta_test_acc']:.2f} ± {100 * summary['meta_test_ci95']:.2f}%")


def test_predict_of_a_fresh_start_run_starts_an_episode_of_yours_from_the_seed_and_ways(trained_levels, alphabets):
    path, _ = trained_levels
    run = load_run(path)
    from metagreedy.data import FewShotTasks
    episode = FewShotTasks(alphabets[1], ways=3, shots=1, queries=3, seed=5)[0]
    labels = run.predict(episode.support_x, episode.support_y, episode.query_x)
    assert torch.equal(labels, load_run(path).predict(episode.support_x, episode.support_y,
                                                                 episode.query_x))
    want = run.task.predict(episode.support_x.double(), episode.support_y, episode.query_x.double(), "inductive")
    assert torch.equal(labels, want.cpu())
    start = run.task.start_weights(3)
    assert all(torch.equal(start[n], run.task.fresh_start(3)[n]) for n in start)
    assert not torch.equal(start["task1.0.weight"], run.task.start_weights(3, "test", 0)["task1.0.weight"])
