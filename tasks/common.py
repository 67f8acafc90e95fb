"""Small pieces every task uses."""
from __future__ import annotations

import math

import metagreedy as mg
from metagreedy.rng import keyed_generator  # noqa: F401  (re-exported for the tasks)


def method_options(cfg) -> dict:
    """The options of ``cfg.method`` taken from the config (gamma, variant, terms, k)."""
    return {name: getattr(cfg, name) for name in mg.method_options(cfg.method) if name != "neumann_lr"}


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% confidence interval of the mean."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)
