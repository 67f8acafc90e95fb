"""Small pieces every task uses."""
from __future__ import annotations

import metagreedy as mg
from metagreedy.rng import keyed_generator  # noqa: F401  (re-exported for the tasks)


def method_options(cfg) -> dict:
    """The options of ``cfg.method`` taken from the config (gamma, variant, terms, k); a task adds
    ``step_val_loss`` itself (it knows its validation data)."""
    return {name: getattr(cfg, name) for name in mg.method_options(cfg.method)
            if name not in ("neumann_lr", "step_val_loss")}
