"""Experiment settings: every default in one place with its reason, a YAML file on top, flags last.

Precedence: the defaults below < the task's own defaults (``tasks.<task>.DEFAULTS``) < ``--config
FILE`` < command-line flags. Unknown keys and values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, fields
from typing import Any, Optional


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


@dataclass
class Config:
    # what to run
    task: str = "omniglot"  # the main job; also "toy" and "hyper_cleaning"
    method: str = "greedy"  # a key of metagreedy.METHODS
    gamma: float = 0.9  # greedy's decay; the paper's main setting
    variant: str = "eq6"  # greedy: "eq6" (equation 6 literally) or "final"
    terms: int = 2  # IFT: Neumann terms K
    k: int = 1  # truncated: steps back-propagated through
    step_val_batch: int = 0  # greedy eq6: validation examples behind grad L_val(w_t) at steps t < T; 0 = all
    # inner problem: w_t = Phi(w_{t-1}, alpha)
    inner_steps: int = 5  # T
    inner_lr: float = 0.1
    momentum: float = 0.9
    inner_optimizer: str = "sgd"  # "sgd" (momentum SGD, the paper's) or "adam"
    # outer problem
    outer_steps: int = 2000
    outer_lr: float = 1e-3
    outer_optimizer: str = "adam"
    meta_batch: int = 16  # tasks per outer step (few-shot); averaged hypergradient
    # data
    data_root: str = "./data"
    dataset: str = "auto"
    seed: int = 0
    # few-shot
    ways: int = 5
    shots: int = 1
    queries: int = 15  # query examples per class: the usual Omniglot protocol
    init: str = "fixed"  # "fixed": one random init reset for every task; "learned": meta-learned too
    rotations: bool = False  # rotations by 90/180/270 degrees as new classes
    val_fraction: float = 0.2  # background classes held out for meta-validation (the paper's 20%)
    eval_every: int = 100  # outer steps between meta-validation passes
    eval_tasks: int = 100  # tasks per periodic meta-validation pass
    final_eval_tasks: int = 600  # tasks for the final meta-validation and meta-test accuracy
    higher: bool = True  # run the inner loop through higher's functional model and SGD
    batched: bool = False  # all tasks of a meta-batch in one vmapped computation (for GPUs; on 2 CPU cores the loop is faster)
    memory_format: str = "auto"  # few-shot per-task path: channels_last | contiguous; auto = channels_last on CPU (measured faster)
    # hyper-cleaning
    noise: float = 0.3
    protocol: str = "paper"  # "paper": validate and test on the test split; "heldout": validate on train
    n_train: int = 1000
    n_val: int = 10000
    val_batch: int = 0  # validation mini-batch for the hypergradient; 0 = the whole validation set
    hpo: bool = True  # --no-hpo: alpha stays 0 (the "w/o HPO" row), same training
    oracle: bool = False  # train on the clean examples only (the oracle row)
    # infrastructure
    run_dir: str = ""  # default: runs/<task>-<method>-<seed>-<time>
    resume: str = ""  # a run directory to continue
    checkpoint_every: int = 100
    wandb: str = "auto"  # auto (online if logged in, else offline) | online | offline | disabled
    wandb_project: str = "metagreedy"
    wandb_group: str = ""  # default: task/method/ways
    device: str = "auto"  # auto | cpu | cuda
    max_bad_steps: int = 5  # consecutive non-finite hypergradients before the run stops
    progress: bool = True
    dtype: str = "float32"


FIELDS = {f.name: f for f in fields(Config)}


def _type_of(name: str):
    return type(getattr(Config(), name))


def _coerce(name: str, value: Any) -> Any:
    """Check a value from a config file against the field's type (ints are accepted for floats)."""
    want = _type_of(name)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool):
        raise UsageError(f"config key '{name}' must be true or false, got {value!r}")
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UsageError(f"config key '{name}' must be {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def load_file(path: str) -> dict:
    try:
        import yaml
    except ImportError as e:  # pragma: no cover
        raise UsageError("reading --config needs PyYAML: pip install pyyaml") from e
    if not os.path.isfile(path):
        raise UsageError(f"config file '{path}' does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file '{path}' must hold a mapping of key: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"config file '{path}': unknown key '{key}'")
        out[name] = _coerce(name, value)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(message)


def _integer(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} must be an integer, got {text!r}") from None
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = _Parser(description="metagreedy: meta-training and hyperparameter optimization with greedy hypergradients",
                allow_abbrev=False)
    p.add_argument("--config", help="a YAML file of settings (flags override it)")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kind = _type_of(f.name)
        if kind is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif kind is int:
            p.add_argument(flag, dest=f.name, type=_integer(f.name), default=None)
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=None)
    return p


def resolve(argv: Optional[list] = None, task_defaults=None) -> Config:
    """Config from defaults, the task's defaults, ``--config`` and flags (in that order)."""
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except argparse.ArgumentTypeError as e:  # pragma: no cover - argparse reports through error()
        raise UsageError(str(e)) from None
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    from_file = load_file(args.config) if args.config else {}
    task = flags.get("task", from_file.get("task", Config.task))
    merged = {}
    if task_defaults is not None:
        merged.update(task_defaults(task))
    merged.update(from_file)
    merged.update(flags)
    return Config(**merged)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def validate(cfg: Config) -> None:
    """Checks that hold for every task; each task checks its own data-dependent limits."""
    from .estimators import METHODS

    def need(ok, message):
        if not ok:
            raise UsageError(message)

    need(cfg.method in METHODS, f"unknown --method '{cfg.method}'; choose from {', '.join(sorted(METHODS))}")
    need(0.0 <= cfg.gamma <= 1.0, f"--gamma must be in [0, 1], got {cfg.gamma}")
    need(cfg.variant in ("eq6", "final"), f"--variant must be eq6 or final, got '{cfg.variant}'")
    need(cfg.outer_steps >= 0, f"--outer-steps must be >= 0, got {cfg.outer_steps}")
    for name in ("inner_steps", "meta_batch", "ways", "shots", "queries", "eval_every",
                 "eval_tasks", "final_eval_tasks", "checkpoint_every", "n_train", "max_bad_steps"):
        value = getattr(cfg, name)
        need(value >= 1, f"--{name.replace('_', '-')} must be at least 1, got {value}")
    need(cfg.terms >= 0, f"--terms must be >= 0, got {cfg.terms}")
    need(cfg.method != "truncated" or 1 <= cfg.k <= cfg.inner_steps,
         f"--k must be in [1, inner steps = {cfg.inner_steps}], got {cfg.k}")
    need(cfg.step_val_batch >= 0, f"--step-val-batch must be >= 0 (0 = all), got {cfg.step_val_batch}")
    need(not cfg.step_val_batch or (cfg.method == "greedy" and cfg.variant == "eq6"),
         "--step-val-batch applies to --method greedy --variant eq6 only")
    need(cfg.val_batch >= 0, f"--val-batch must be >= 0 (0 = whole validation set), got {cfg.val_batch}")
    need(cfg.inner_lr > 0 and cfg.outer_lr > 0, "--inner-lr and --outer-lr must be positive")
    need(0.0 <= cfg.momentum < 1.0, f"--momentum must be in [0, 1), got {cfg.momentum}")
    need(cfg.inner_optimizer in ("sgd", "adam"), f"--inner-optimizer must be sgd or adam, got '{cfg.inner_optimizer}'")
    need(cfg.outer_optimizer in ("sgd", "adam"), f"--outer-optimizer must be sgd or adam, got '{cfg.outer_optimizer}'")
    need(cfg.memory_format in ("auto", "channels_last", "contiguous"),
         f"--memory-format must be auto, channels_last or contiguous, got '{cfg.memory_format}'")
    need(cfg.init in ("fixed", "learned"), f"--init must be fixed or learned, got '{cfg.init}'")
    need(cfg.wandb in ("auto", "online", "offline", "disabled"),
         f"--wandb must be auto, online, offline or disabled, got '{cfg.wandb}'")
    need(cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got '{cfg.device}'")
    need(cfg.dtype in ("float32", "float64"), f"--dtype must be float32 or float64, got '{cfg.dtype}'")
    need(0.0 < cfg.val_fraction < 1.0, f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")
    need(0.0 <= cfg.noise <= 1.0, f"--noise must be in [0, 1], got {cfg.noise}")
    need(cfg.protocol in ("paper", "heldout"), f"--protocol must be paper or heldout, got '{cfg.protocol}'")
