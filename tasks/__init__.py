"""Experiment definitions, and the protocol ``train.py`` drives (it knows nothing else of a task).

A task module (``tasks/<name>.py``) defines:

- ``DESCRIPTION``: one line for ``train.py --help``.
- ``SETTINGS``: the settings of this task alone (a ``harness.settings.Setting`` each; those several
  tasks share are declared once in ``tasks/common.py``, where the data is in ``harness.settings``).
  The settings of every task are ``harness.config.COMMON``.
- ``DEFAULTS``: the settings declared elsewhere (``COMMON``, ``tasks/common.py``) whose default
  differs for this task, and only those.
- ``check(cfg)``: the checks of its settings that need no data (raise ``UsageError``); run before
  anything is built or written, so bad input is refused at once. Among them, what the machine can
  hold: ``memory(cfg)`` gives lower bounds of the bytes of the run's tensors, keyed by the settings
  that size them, and ``harness.settings.fits_in_memory`` refuses a run they do not fit in.
- ``run_name(cfg)`` and ``run_group(cfg)``: the default run directory name and the W&B group.
- ``Task(cfg, device, dtype)``: builds the data, the model and the hyperparameters, following
  :class:`Task` below.
- ``upgrade(stored)`` (optional): a stored run's settings (a dict, read from a checkpoint or
  ``config.yaml``) with this task's settings added since it was written, at the values that say
  how it behaved, each one the setting accepts. The harness upgrades the settings of every task
  itself; it names no setting of a task.

A task whose trained runs can be reused on new data (``run.predict`` and ``run.evaluate`` of
``harness.reuse``) also gives its ``Task`` ``predict(...)``, which checks its input, and
``score(split, tasks=None, **sizes) -> (mean, ci95, tasks)``; reuse builds the ``Task`` with
``lazy=True`` when it has ``lazy_data = True``.

This package is the registry of tasks the harness imports: ``NAMES`` and ``load(name)``.
``harness.reuse.load_run(..., experiments=R)`` takes any other registry of that kind.

Every random choice is a function of ``(seed, step, index)``, so a resumed run repeats exactly.
"""
from __future__ import annotations

import importlib
from typing import Optional, Protocol

from torch import Tensor

from harness.settings import UsageError

NAMES = ("omniglot", "hyper_cleaning", "toy", "long_horizon")  # tasks/<name>.py each


class Task(Protocol):
    hparams: dict[str, Tensor]  # alpha: what the outer optimizer updates, by name
    progress: tuple[str, ...]  # metric keys the progress bar shows besides the loss

    def info(self) -> dict:
        """Facts about the run for its config record: the dataset actually used, image size, ..."""

    def notice(self) -> Optional[str]:
        """A line said at the start and at the end of the run (e.g. synthetic data), or None."""

    def hypergradient(self, step: int, members: list[int]) -> tuple[dict, dict, int]:
        """``(grads, metrics, count)`` at outer step ``step``: the hypergradients summed over the
        meta-batch positions ``members`` (a single-problem task ignores them), metrics of the step
        (``val_loss``, ``train_loss``, ``vjps``, ...) and how many problems were summed. It must not
        change the task: a stop signal may throw the result away. May raise
        ``metagreedy.NonFiniteLoss`` (the step is then skipped)."""

    def commit(self) -> None:
        """The outer step of the last hypergradient was taken (or skipped): keep what the task
        carries from one outer step to the next (hyper-cleaning's w_T, the next step's w_0)."""

    def evaluate(self, step: int) -> dict:
        """Periodic evaluation metrics (meta-validation accuracy, ...); deterministic."""

    def final(self) -> dict:
        """The summary metrics at the end of the run; deterministic."""

    def state(self) -> dict:
        """What a checkpoint must hold besides alpha to continue or reuse the run: tensors,
        numbers, strings, lists and dicts only."""

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""


def load(name: str):
    """The module of the task ``name``, imported on first use (a run needs its own task's alone).
    The one import by a name known only at run time that tests/test_layers.py allows: it stays
    within this package."""
    if name not in NAMES:
        raise UsageError(f"unknown --task '{name}'; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"tasks.{name}")
