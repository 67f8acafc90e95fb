"""Where the harness finds the experiments; it knows none of them by name.

The registry is a module (or any object) whose ``load(name)`` gives a task's module, as the
checkout's ``tasks`` package does. train.py hands its own in with :func:`use`; without one,
:func:`experiments` imports the package named ``EXPERIMENTS`` from the working directory (a checkout),
so ``metagreedy.load_run`` and ``python -m metagreedy.evaluate`` work from there as they are.
"""
from __future__ import annotations

import importlib

from .errors import UsageError

EXPERIMENTS = "tasks"  # the experiments' package at the root of a checkout; not part of the distribution
_handed_in = None


def use(tasks) -> None:
    """Make ``tasks`` (``load(name)`` -> a task's module) the registry :func:`experiments` gives."""
    global _handed_in
    _handed_in = tasks


def experiments():
    """The registry handed in with :func:`use`, else the package ``EXPERIMENTS``."""
    if _handed_in is not None:
        return _handed_in
    try:
        return importlib.import_module(EXPERIMENTS)
    except ModuleNotFoundError as e:
        if e.name != EXPERIMENTS:
            raise
        raise UsageError(f"no experiments to rebuild the run with: the '{EXPERIMENTS}' package of a metagreedy "
                         "checkout is not importable here (run from the checkout, or pass tasks=...)") from None
