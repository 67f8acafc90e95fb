"""Where the harness finds the experiments; it knows none of them by name.

The registry is a module (or any object) whose ``load(name)`` gives a task's module, as the
checkout's ``tasks`` package does. train.py hands its own in with :func:`use`; without one,
:func:`experiments` imports the package named ``EXPERIMENTS`` from the working directory (a checkout),
so ``metagreedy.load_run`` and ``python -m metagreedy.evaluate`` work from there as they are.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys

from .errors import UsageError

EXPERIMENTS = "tasks"  # the experiments' package at the root of a checkout; not part of the distribution
_handed_in = None


def use(tasks) -> None:
    """Make ``tasks`` (``load(name)`` -> a task's module) the registry :func:`experiments` gives."""
    global _handed_in
    _handed_in = tasks


@contextlib.contextmanager
def using(tasks):
    """Within the block, ``tasks`` (when not None) is the registry :func:`experiments` gives, as if
    handed in; the one before is back after it. Yields the registry in force."""
    global _handed_in
    previous = _handed_in
    _handed_in = previous if tasks is None else tasks
    try:
        yield experiments()
    finally:
        _handed_in = previous


def experiments():
    """The registry handed in with :func:`use`, else the package ``EXPERIMENTS``: importable as it is
    (a script or ``python -m`` from the checkout), else the one in the working directory."""
    if _handed_in is not None:
        return _handed_in
    try:
        return importlib.import_module(EXPERIMENTS)
    except ModuleNotFoundError as e:
        if e.name != EXPERIMENTS:
            raise
    found = _from_working_directory()
    if found is None:
        raise UsageError(f"no experiments to rebuild the run with: no '{EXPERIMENTS}' package is importable here "
                         f"or in the working directory {os.getcwd()!r} (work from a metagreedy checkout, or pass "
                         "tasks=...)")
    return found


def _from_working_directory():
    """The package ``EXPERIMENTS`` of the working directory, imported under its own name (so its
    modules import each other as in the checkout), or None; ``sys.path`` is left as it is."""
    init = os.path.join(os.getcwd(), EXPERIMENTS, "__init__.py")
    if not os.path.isfile(init):
        return None
    spec = importlib.util.spec_from_file_location(EXPERIMENTS, init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[EXPERIMENTS] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[EXPERIMENTS]
        raise
    return module
