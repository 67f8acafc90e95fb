"""Experiment definitions. Each task module has ``DEFAULTS`` (its settings over the global defaults)
and a ``Task`` class with the protocol ``train.py`` drives:

- ``hparams``: dict name -> tensor, the alpha the outer optimizer updates;
- ``hypergradient(step, members)`` -> ``(grads, metrics, count)``: the summed hypergradient over the
  meta-batch positions ``members`` at outer step ``step`` (single-problem tasks ignore ``members``);
- ``evaluate(step)`` -> metrics, and ``final()`` -> summary metrics;
- ``info()`` -> facts for the resolved config (the dataset actually used, ...).
Every random choice is a function of ``(seed, step, index)``, so a resumed run repeats exactly.
"""
import importlib

TASKS = ("omniglot", "hyper_cleaning", "toy")


def load(name: str):
    if name not in TASKS:
        from metagreedy.config import UsageError
        raise UsageError(f"unknown --task '{name}'; choose from {', '.join(TASKS)}")
    return importlib.import_module(f"tasks.{name}")


def defaults(name: str) -> dict:
    return dict(load(name).DEFAULTS)
