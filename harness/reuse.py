"""Reuse a trained run: its settings, its hyperparameters and its task, rebuilt from the checkpoint.

    from harness.reuse import load_run
    run = load_run("runs/omniglot-5way1shot-greedy-seed0-...")
    labels = run.predict(support_x, support_y, query_x)            # any number of ways and shots
    accuracy, ci95, n = run.evaluate(split="test", tasks=600)    # = summary.json's meta_test_acc

    python -m bench.evaluate RUN_DIR --ways 20 --shots 1   # meta-test accuracy, 20-way 1-shot

The checkpoint holds everything the task needs (alpha, the task's own state, the settings); nothing
is re-drawn from a random seed. Evaluating at the run's own settings on the device it trained on
reproduces its summary exactly. What a run can do beyond that is its task's (``predict`` and
``score``, tasks/__init__.py): this module names no task and no setting of one.
"""
from __future__ import annotations

import os
import sys
from typing import NamedTuple, Optional

import torch

from metagreedy.data import DataError

from . import checkpoint, config, files
from .config import Config
from .settings import DATA_ROOT, UsageError, brief, one_line, path_text

WHERE_DATA = "point at it with load_run(..., data_root=DIR) or python -m bench.evaluate ... --data-root DIR"


def say(message: str) -> None:
    """A note about the run being reused: one line on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class Score(NamedTuple):
    accuracy: float  # mean query accuracy over the tasks
    ci95: float  # half-width of its 95% confidence interval (Student's t)
    tasks: int


class Run:
    """A trained run: ``config`` (its settings), ``facts``, ``hparams`` (alpha, by name), ``task``
    (the experiment, rebuilt), ``step`` (outer steps done) and ``summary`` (summary.json, if any);
    ``predict`` and ``evaluate`` where its task offers them (a few-shot run's)."""

    def __init__(self, path: str, config: Config, facts: dict, task, step: int, summary: Optional[dict]):
        self.path, self.config, self.facts, self.task, self.step, self.summary = path, config, facts, task, step, summary

    @property
    def hparams(self) -> dict:
        return {name: value.detach() for name, value in self.task.hparams.items()}

    def _offered(self, name: str, what: str):
        """The task's method ``name``, behind ``run.<what>``; a TypeError when its task has none."""
        method = getattr(self.task, name, None)
        if method is None:
            raise TypeError(f"run.{what} needs a few-shot run; this one is a {self.config.task} run")
        return method

    def predict(self, *inputs, **options) -> torch.Tensor:
        """The task's predictions for new data after adapting as training adapted, its ``predict``,
        which checks what it is given (a few-shot run's: ``predict(support_x, support_y, query_x,
        query_mode=None)``, the labels of ``query_x``; None: the queries scored as the run evaluated
        them, tasks/__init__.py)."""
        return self._offered("predict", "predict")(*inputs, **options)

    def evaluate(self, split: str = "test", tasks: Optional[int] = None, **options) -> Score:
        """Mean accuracy and its 95% CI over the first ``tasks`` new problems of the ``validation`` or
        ``test`` split (default: as many as the run's final evaluation), from the task's ``score``;
        ``options`` go to it (a few-shot run's: the sizes of the episodes, by default the run's, and
        ``query_mode``)."""
        score = self._offered("score", "evaluate")
        try:
            return Score(*score(split, tasks, **options))
        except DataError as e:  # the data is read only now (predict needs none)
            raise DataError(f"{one_line(e)}; {WHERE_DATA}") from None


def load_run(path: str, device: Optional[str] = None, data_root: Optional[str] = None, experiments=None) -> Run:
    """The run in ``path`` rebuilt from its checkpoint (read without unpickling code). ``device``:
    cpu, cuda or None (the run's own setting; a run trained on a GPU runs on the CPU where there is
    none, and says so); ``data_root``: where this machine has the data, if not where the run read it.
    The data is read only when a split is asked for (``evaluate``): ``predict`` needs none.
    ``experiments``: the registry of tasks the run is rebuilt with, of the kind of the checkout's
    ``tasks`` (``NAMES`` and ``load(name)`` -> a task's module; the default); the checkpoint's
    settings are read against it, for this call only."""
    problem = "" if experiments is None else config.registry_problem(experiments)
    if problem:
        raise TypeError(f"load_run: experiments must be a registry of tasks like the checkout's tasks package; "
                        f"{problem}")
    if data_root is not None and not isinstance(data_root, (str, os.PathLike)):
        raise UsageError(f"data_root must be a folder's path, got {brief(data_root)}")
    with config.using(experiments) as registry:
        return _load(path, device, data_root, registry)


def _load(path: str, device: Optional[str], data_root: Optional[str], experiments) -> Run:
    payload = checkpoint.load(path)
    checkpoint.check_belongs(path, payload)  # its config.yaml and summary.json are this run's
    summary = files.read_summary(path)
    settings = config.pin(payload["config"], payload.get("facts", {}))  # the data the run used, not the data found
    if data_root is not None and DATA_ROOT.name in settings:
        settings[DATA_ROOT.name] = os.fspath(data_root)
    cfg = Config(settings)
    dev = _device(path, device, cfg, payload.get("facts", {}))
    config.apply_numerics(cfg)
    torch.manual_seed(cfg.seed)
    task_class = experiments.load(cfg.task).Task
    try:
        task = task_class(cfg, dev, getattr(torch, cfg.dtype), **({"lazy": True} if getattr(
            task_class, "lazy_data", False) else {}))
    except DataError as e:
        raise DataError(f"{one_line(e)}; {WHERE_DATA}") from None
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
        raise UsageError(f"device must be auto, cpu or cuda, got {brief(device)}")
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
