"""Reuse a trained run: its settings, its hyperparameters and its task, rebuilt from the checkpoint.

    run = metagreedy.load_run("runs/omniglot-5way1shot-greedy-seed0-...")
    labels = run.predict(support_x, support_y, query_x)            # any number of ways and shots
    accuracy, ci95, n = run.evaluate(split="test", tasks=600)    # = summary.json's meta_test_acc

    python -m metagreedy.evaluate RUN_DIR --ways 20 --shots 1   # meta-test accuracy, 20-way 1-shot

The checkpoint holds everything the task needs (alpha, the fixed initialisation of the adapted
layers, the settings); nothing is re-drawn from a random seed. Evaluating at the run's own settings
on the device it trained on reproduces its summary exactly.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple, Optional

import torch

from ..data import DataError
from . import checkpoint, config, files, registry
from .config import Config, UsageError, path_text

WHERE_DATA = "point at it with load_run(..., data_root=DIR) or python -m metagreedy.evaluate ... --data-root DIR"


def say(message: str) -> None:
    """A note about the run being reused: one line on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class Score(NamedTuple):
    accuracy: float  # mean query accuracy over the tasks
    ci95: float  # half-width of its 95% confidence interval (Student's t)
    tasks: int


class Run:
    """A trained run: ``config`` (its settings), ``facts``, ``hparams`` (alpha, by name), ``task``
    (the experiment, rebuilt), ``step`` (outer steps done) and ``summary`` (summary.json, if any)."""

    def __init__(self, path: str, config: Config, facts: dict, task, step: int, summary: Optional[dict]):
        self.path, self.config, self.facts, self.task, self.step, self.summary = path, config, facts, task, step, summary

    @property
    def hparams(self) -> dict:
        return {name: value.detach() for name, value in self.task.hparams.items()}

    def _few_shot(self, what: str):
        if not hasattr(self.task, "predict"):
            raise TypeError(f"run.{what} needs a few-shot run; this one is a {self.config.task} run")

    def predict(self, support_x, support_y, query_x, query_mode: Optional[str] = None) -> torch.Tensor:
        """Labels (0..ways-1) for ``query_x`` after adapting to the support set as training adapted
        (T inner steps from the run's initialisation, warp layers fixed). Images are float tensors
        [N, 1, 28, 28] in [0, 1], ink = 1, as the task samplers and
        ``metagreedy.data.omniglot.preprocess`` give them; any number of ways and shots (for
        another number of ways than the run's, see ``Task.start_weights`` for the head).
        ``query_mode="inductive"`` classifies each query without the other queries' batch-norm
        statistics, ``"transductive"`` the queries together; None: as the run evaluated them."""
        self._few_shot("predict")
        size = self.facts.get("image_size", 28)
        for name, x in (("support_x", support_x), ("query_x", query_x)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or \
                    tuple(x.shape[1:]) != (1, size, size) or len(x) == 0:
                raise ValueError(f"{name} must be a float tensor [N, 1, {size}, {size}] in [0, 1] (see "
                                 f"metagreedy.data.omniglot.preprocess), got {_described(x)}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} holds values that are not finite (NaN or infinite)")
            low, high = float(x.min()), float(x.max())
            if low < 0 or high > 1:
                raise ValueError(f"{name} must be in [0, 1] (ink = 1, as metagreedy.data.omniglot.preprocess gives "
                                 f"it), got values in [{low:.4g}, {high:.4g}]" + ("; divide 0-255 images by 255"
                                                                               if high > 1.5 else ""))
        support_y = torch.as_tensor(support_y)
        if support_y.dim() != 1 or support_y.is_floating_point() or len(support_y) != len(support_x):
            raise ValueError(f"support_y must hold one integer label per support image, got {_described(support_y)}")
        return self.task.predict(support_x.detach(), support_y, query_x.detach(), query_mode).cpu()

    def evaluate(self, split: str = "test", tasks: Optional[int] = None, ways: Optional[int] = None,
                 shots: Optional[int] = None, queries: Optional[int] = None,
                 query_mode: Optional[str] = None) -> Score:
        """Mean query accuracy and its 95% CI over the first ``tasks`` tasks (default: the run's
        --final-eval-tasks) of the ``validation`` or ``test`` split, at the run's ways / shots /
        queries or others; ``query_mode`` as :meth:`predict`'s (None: as the run evaluated)."""
        self._few_shot("evaluate")
        n = self.config.final_eval_tasks if tasks is None else tasks
        for name, value in (("tasks", n), ("ways", ways), ("shots", shots), ("queries", queries)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        try:
            mean, ci = self.task.score(split, n, ways, shots, queries, query_mode)
        except DataError as e:  # the data is read only now (predict needs none)
            raise DataError(f"{config.one_line(e)}; {WHERE_DATA}") from None
        return Score(mean, ci, n)


def _described(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def load_run(path: str, device: Optional[str] = None, data_root: Optional[str] = None, tasks=None) -> Run:
    """The run in ``path`` rebuilt from its checkpoint (read without unpickling code). ``device``:
    cpu, cuda or None (the run's own setting; a run trained on a GPU runs on the CPU where there is
    none, and says so); ``data_root``: where this machine has the data, if not where the run read it.
    The data is read only when a split is asked for (``evaluate``): ``predict`` needs none. ``tasks``:
    the registry of experiments (``load(name)`` gives a task's module); by default the one
    :mod:`metagreedy.harness.registry` finds. The checkpoint's settings are read against it."""
    with registry.using(tasks) as experiments:
        return _load(path, device, data_root, experiments)


def _load(path: str, device: Optional[str], data_root: Optional[str], tasks) -> Run:
    payload = checkpoint.load(path)
    checkpoint.check_belongs(path, payload)  # its config.yaml and summary.json are this run's
    summary = files.read_summary(path)
    settings = config.pin(payload["config"], payload.get("facts", {}))  # the data the run used, not the data found
    if data_root is not None and not isinstance(data_root, (str, os.PathLike)):
        raise UsageError(f"data_root must be a folder's path, got {config.brief(data_root)}")
    if data_root is not None and "data_root" in settings:
        data_root = os.fspath(data_root)
        settings["data_root"] = data_root
    cfg = Config(settings)
    dev = _device(path, device, cfg, payload.get("facts", {}))
    if cfg.get("loop") == "graph" and dev.type != "cuda":  # a GPU-trained run scored elsewhere: adaptation and
        cfg = cfg.replace(loop="batched")                  # prediction do not use the graph; same numbers
    config.apply_numerics(cfg)
    torch.manual_seed(cfg.seed)
    task_class = tasks.load(cfg.task).Task
    try:
        task = task_class(cfg, dev, getattr(torch, cfg.dtype), **({"lazy": True} if getattr(
            task_class, "lazy_data", False) else {}))
    except DataError as e:
        raise DataError(f"{config.one_line(e)}; {WHERE_DATA}") from None
    checkpoint.restore_task(task, payload, f"checkpoint in {path_text(path)}")
    done = summary is not None and summary.get("status") == "finished"
    if not done:
        say(f"{path_text(path)} is unfinished: it stopped at outer step {payload['step']} of {cfg.outer_steps}"
            + (f" ({summary['status']})" if summary else " (no summary.json)"))
    return Run(path, cfg, payload.get("facts", {}), task, payload["step"], summary)


def _device(path: str, device: Optional[str], cfg: Config, facts: dict) -> torch.device:
    """The device to rebuild a run on: the one asked for, else the run's, else the CPU when the run
    trained on a GPU and this machine has none (said in one line)."""
    if device not in (None, "auto", "cpu", "cuda"):
        raise UsageError(f"device must be auto, cpu or cuda, got {config.brief(device)}")
    gpu = torch.cuda.is_available()
    if device == "cuda" and not gpu:
        raise UsageError("device cuda: no CUDA GPU is available here; use device='cpu' (--device cpu)")
    want = device or cfg.device
    trained_on = str(facts.get("device_name") or cfg.device)
    if device is None and not gpu and (want == "cuda" or trained_on.startswith("cuda")):
        say(f"{path_text(path)} was trained on {trained_on}; this machine has no CUDA GPU, so it runs on the CPU "
            "(the last digits of its numbers may differ)")
        return torch.device("cpu")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and gpu) else "cpu")


def main(argv=None) -> int:
    p = _Parser(prog="python -m metagreedy.evaluate",
                                description="Score a trained few-shot run on new episodes of its meta-validation or "
                                            "meta-test split, at its own or another number of ways and shots.")
    p.add_argument("run_dir", help="a run directory (with checkpoint.pt)")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--ways", type=int, help="classes per task (default: the run's)")
    p.add_argument("--shots", type=int, help="support examples per class (default: the run's)")
    p.add_argument("--queries", type=int, help="query examples per class (default: the run's)")
    p.add_argument("--tasks", type=int, help="tasks to average over (default: the run's --final-eval-tasks)")
    p.add_argument("--query-mode", choices=("transductive", "inductive", "both"),
                   help="transductive: the queries of a task are one batch (as in training); inductive: each query "
                        "is classified with the support images only, without the other queries' batch-norm "
                        "statistics (default: as the run evaluated, its --eval-queries)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the run's setting")
    p.add_argument("--data-root", help="where the data is on this machine (default: the run's)")
    try:
        args = p.parse_args(argv)
        for name in ("ways", "shots", "queries", "tasks"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
        run = load_run(args.run_dir, args.device, args.data_root)
        run._few_shot("evaluate")
        cfg = run.config
        ways, shots, queries = args.ways or cfg.ways, args.shots or cfg.shots, args.queries or cfg.queries
        own = cfg.get("eval_queries", "transductive")
        modes = ("transductive", "inductive") if args.query_mode == "both" else (args.query_mode or own,)
        for mode in modes:
            score = run.evaluate(args.split, args.tasks, ways, shots, queries, mode)
            print(f"meta-{args.split} accuracy, {ways}-way {shots}-shot, {queries} queries per class, {score.tasks} "
                  f"tasks, {mode}: {100 * score.accuracy:.2f} ± {100 * score.ci95:.2f}%")
    except (UsageError, DataError, checkpoint.CheckpointError, TypeError, ValueError) as e:
        print(f"error: {config.one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(message)


if __name__ == "__main__":
    sys.exit(main())
