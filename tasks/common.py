"""Small pieces every task uses."""
from __future__ import annotations

import torch.nn.functional as F

import metagreedy as mg
from harness.settings import DATA_ROOT, Setting, at_least  # noqa: F401  (DATA_ROOT: the harness's, for the tasks)
from metagreedy.rng import keyed_generator  # noqa: F401  (re-exported for the tasks)

# Settings several tasks share, declared once here and listed in each one's SETTINGS (with the
# harness's DATA_ROOT, where the data is).
EVAL_EVERY = Setting("eval_every", 100, "outer steps between evaluations (and at the last step)",
                     check=at_least(1), metavar="N")
STEP_VAL_BATCH = Setting("step_val_batch", 0, "greedy eq6: validation examples behind grad L_val(w_t) at the steps "
                         "t < T, a fresh mini-batch at each step (0 = all; Omniglot: a multiple of --ways)",
                         check=at_least(0), methods=("greedy",), metavar="N",
                         requires=(lambda cfg: cfg.variant == "eq6", "--method greedy --variant eq6"))
LOSS_REDUCTION = Setting("loss_reduction", "mean", "how train_loss and val_loss reduce the examples' losses: mean, "
                         "or sum as the paper writes them (hyper-cleaning, section 5.3). A sum over n examples is n "
                         "times their mean, so it multiplies the effective inner step --inner-lr by the n training "
                         "examples (Omniglot: the support set's ways x shots; hyper-cleaning: --n-train); it scales "
                         "the hypergradient by the validation examples, which Adam's outer step does not see. A "
                         "validation mini-batch then stands for its whole set's sum (its mean times the set's size)",
                         choices=("mean", "sum"))


def cross_entropy(out, y, reduction: str, total: int | None = None):
    """The cross-entropy of ``out`` against ``y`` reduced as ``--loss-reduction`` says: the mean over
    the examples, or their sum; the sum of a mini-batch drawn from a set of ``total`` examples is
    its mean times ``total``, the whole set's sum it estimates."""
    if reduction == "mean":
        return F.cross_entropy(out, y)
    if total is None or total == len(y):
        return F.cross_entropy(out, y, reduction="sum")
    return F.cross_entropy(out, y) * total


def dataset(default: str, choices: tuple) -> Setting:
    """A task's ``--dataset``, with its choices."""
    return Setting("dataset", default, "the data: synthetic = generated (for tests and offline trials); omniglot's "
                   "auto = the real data if found or downloadable, else synthetic", choices=choices, metavar="NAME",
                   pinned=True)


class TaskBase:
    """The parts of the task protocol (``tasks.Task``) that most tasks leave as they are."""

    progress: tuple[str, ...] = ()

    def info(self) -> dict:
        return {}

    def notice(self):
        return None

    def commit(self) -> None:
        pass

    def evaluate(self, step: int) -> dict:
        return {}

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def inner_arguments(cfg, **given) -> dict:
    """The inner loop of ``mg.hypergradient`` and ``mg.inner_loop`` from the settings: T steps
    (--inner-steps) of --inner-optimizer at --inner-lr with --momentum; ``given`` replaces any of them
    (a learned ``lr``, an optimizer object)."""
    return {"steps": cfg.inner_steps, "lr": cfg.inner_lr, "momentum": cfg.momentum, "optimizer": cfg.inner_optimizer,
            **given}


def method_arguments(cfg, method: str, step_val_loss=None) -> dict:
    """``method`` and its options for ``mg.hypergradient``: the settings' (gamma, variant, terms,
    neumann_lr, k) when it is the configured method (a task's other methods, e.g. evaluation
    baselines, run with their defaults), and the task's ``step_val_loss`` when --step-val-batch is
    set. What an option's value means (IFT's ``neumann_lr`` 0 included) is the estimator's to say."""
    if method != cfg.method:
        return {"method": method}
    options = {name: getattr(cfg, name) for name in mg.method_options(method) if name != "step_val_loss"}
    if cfg.get("step_val_batch"):
        options["step_val_loss"] = step_val_loss
    return {"method": method, **options}


def element_bytes(cfg) -> int:
    """The bytes of a number of the run's --dtype."""
    return 8 if cfg.dtype == "float64" else 4


def graph(cfg, per_step: float) -> dict:
    """The memory of the inner steps a hypergradient keeps the graph of at once, for
    ``fits_in_memory``: every one of the --inner-steps T for --method full, --k for truncated, one
    for the others (greedy, T1-T2, FO and IFT keep none of the trajectory); ``per_step``: a lower
    bound of the bytes of one step's graph."""
    if cfg.method == "full":
        return {f"--method full through --inner-steps {cfg.inner_steps} (the graph of every inner step)":
                cfg.inner_steps * per_step}
    if cfg.method == "truncated":
        return {f"--method truncated through --k {cfg.k} inner steps (their graph)": cfg.k * per_step}
    return {"one inner step's graph": per_step}
