"""Data hyper-cleaning on MNIST / Fashion-MNIST (the method paper's section 5.3, table 2).

alpha_i is a per-example weight logit: train_loss = sum_i sigmoid(alpha_i) CE_i over the 1000 noisy
examples, taken as a mean (the sum scaled by 1/n, so the inner learning rate does not depend on n;
``--loss-reduction sum`` takes the sum, as the paper writes it); val_loss = plain CE on clean
validation data, reduced alike. ``--noise-model`` says what a corrupted label becomes (another
class, or any class as the paper says). Where each outer step's T steps of full-batch momentum
SGD start is ``--inner-start`` (the paper does not say):

- ``continue`` (the default): the 3-layer, 8-channel conv net trains online, from where the previous
  outer step ended (w_0 of step k is w_T of step k-1; the momentum buffer restarts at zero), so 200
  outer steps train it for 2000 inner steps.
- ``fresh``: every outer step starts from the same initialisation w_0, as Franceschi et al. 2017's
  hyper-cleaning; the model evaluated is w_T, T steps from w_0 with the current alpha.
``--val-batch B`` draws a fresh validation mini-batch of B per outer step for the hypergradient;
every evaluation uses the whole split. ``--step-val-batch B`` (greedy) draws a fresh B of those for
grad L_val(w_t) at each inner step t < T; the last step and the direct term use them all.
``--no-hpo`` is the "w/o HPO" row (alpha = 0 throughout, the same training); ``--oracle`` weighs
clean examples 1 and corrupted ones 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import metagreedy as mg
from metagreedy import nn as mgnn
from harness.settings import Setting as S, UsageError, at_least, fits_in_memory, in_range
from metagreedy.data.cleaning import NOISE_MODELS, SPLIT_SIZES, make_cleaning_data
from metagreedy.models import CleaningConvNet

from .common import (DATA_ROOT, EVAL_EVERY, LOSS_REDUCTION, STEP_VAL_BATCH, TaskBase, cross_entropy, dataset,
                     element_bytes, graph, inner_arguments, keyed_generator, method_arguments)

DESCRIPTION = "data hyper-cleaning on MNIST / Fashion-MNIST (table 2): per-example weights sigmoid(alpha_i)."
DEFAULTS = dict(
    inner_steps=10,
    outer_steps=200,
    outer_lr=0.1,
    terms=5,  # IFT(5), the paper's baseline
    eval_every=20,
    checkpoint_every=50,
)
SETTINGS = [
    dataset("mnist", ("mnist", "fashion_mnist")),
    DATA_ROOT,
    EVAL_EVERY,
    STEP_VAL_BATCH,
    LOSS_REDUCTION,
    S("noise", 0.3, "probability that a training label is corrupted (replaced as --noise-model says)",
      check=in_range(0.0, 1.0)),
    S("noise_model", "other", "what a corrupted label becomes: other = a class drawn from the 9 others, so it is "
      "always wrong (realised noise --noise); any = a class drawn from all 10, the true one included, as the paper "
      "says 'a random class' (realised noise 0.9 x --noise); either way only wrong labels count as corrupted (for "
      "--oracle and the detection metrics)", choices=NOISE_MODELS),
    S("protocol", "paper", "paper: validate and test on the test split, as the paper; heldout: validate on "
      "--n-val clean training examples, test on the untouched test split", choices=("paper", "heldout")),
    S("n_train", 1000, "noisy training examples, one weight alpha_i each", check=at_least(1), metavar="N"),
    S("n_val", 10000, "clean validation examples of --protocol heldout", check=at_least(1), metavar="N"),
    S("val_batch", 0, "validation mini-batch per hypergradient, fresh each outer step (0 = the whole set)",
      check=at_least(0), metavar="N"),
    S("inner_start", "continue", "where each outer step's T inner steps start: continue = from the previous outer "
      "step's w_T (one online trajectory of outer-steps x T steps; the momentum restarts), fresh = from the same "
      "initialisation w_0 every outer step (Franceschi et al. 2017); the paper states neither",
      choices=("continue", "fresh")),
    S("hpo", True, "tune the example weights; --no-hpo keeps alpha = 0 (the 'w/o HPO' row, same training)"),
    S("oracle", False, "train on the clean examples only (the oracle row)"),
]


def check(cfg) -> None:
    """What can be refused before the data is read (the split sizes are fixed for both datasets)."""
    n_split = SPLIT_SIZES["train"]
    if cfg.protocol == "heldout" and cfg.n_train + cfg.n_val > n_split:
        raise UsageError(f"--n-train + --n-val = {cfg.n_train + cfg.n_val} is more than the {n_split} examples of "
                         f"the {cfg.dataset} training split (--protocol heldout takes both from it)")
    if cfg.n_train > n_split:
        raise UsageError(f"--n-train {cfg.n_train} is more than the {n_split} examples of the {cfg.dataset} "
                         "training split")
    n_val = SPLIT_SIZES["test"] if cfg.protocol == "paper" else cfg.n_val
    n_val = min(cfg.val_batch or n_val, n_val)
    if cfg.get("step_val_batch", 0) > n_val:
        raise UsageError(f"--step-val-batch must be at most the {n_val} validation examples of a "
                         f"hypergradient, got {cfg.step_val_batch}")
    fits_in_memory(memory(cfg))


def memory(cfg) -> dict:
    """A lower bound of the bytes of the graph of the inner steps a hypergradient keeps: each holds
    the activations of the --n-train examples (the convolutions' outputs, 8 x (14^2 + 7^2 + 4^2)
    values each) and the network's 2,538 weights twice; the data's sizes are fixed."""
    return graph(cfg, (cfg.n_train * 8 * (14 * 14 + 7 * 7 + 4 * 4) + 2 * 2538) * element_bytes(cfg))


def variant(cfg) -> str:
    """The run's choices where they are not the defaults, for its name."""
    changed = ["fresh" if cfg.inner_start == "fresh" else "",
               f"noise-{cfg.noise_model}" if cfg.noise_model != "other" else "",
               f"loss-{cfg.loss_reduction}" if cfg.loss_reduction != "mean" else ""]
    return "".join(f"-{c}" for c in changed if c)


def run_name(cfg) -> str:
    return f"hyper_cleaning-{cfg.dataset}-{cfg.noise}{variant(cfg)}-{cfg.method}-seed{cfg.seed}"


def run_group(cfg) -> str:
    return f"hyper_cleaning/{cfg.dataset}-{cfg.noise}{variant(cfg)}/{cfg.method}"


# Settings added after runs were stored without them, at the value that says how those runs behaved.
ADDED_LATER = {"inner_start": "continue", "loss_reduction": "mean", "noise_model": "other"}


def upgrade(stored: dict) -> dict:
    """A stored run's settings with those added since (tasks/__init__.py), at their earlier behaviour:
    runs stored before --inner-start continued online, took mean losses and the 'other' noise model."""
    return {**ADDED_LATER, **stored}


class Task(TaskBase):
    progress = ("val_acc",)

    def __init__(self, cfg, device, dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        data = make_cleaning_data(cfg.dataset, cfg.data_root, noise=cfg.noise, seed=cfg.seed, n_train=cfg.n_train,
                                  protocol=cfg.protocol, n_val=cfg.n_val, noise_model=cfg.noise_model)
        self.data = data._replace(**{k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                                     for k, v in data._asdict().items()})
        torch.manual_seed(cfg.seed)
        self.model = CleaningConvNet().to(device, dtype)
        self.w = {n: p.detach().clone() for n, p in self.model.named_parameters()}  # w_0 of the next outer step
        self._next_w = self.w
        self.fresh = cfg.inner_start == "fresh"  # then self.w stays the initialisation
        self.hparams = {"alpha": torch.zeros(cfg.n_train, device=device, dtype=dtype, requires_grad=True)}

    def state(self) -> dict:
        return {"w": {k: v.detach().cpu() for k, v in self.w.items()}}

    def load_state(self, state: dict) -> None:
        self.w = self._next_w = {k: v.to(self.device, self.dtype) for k, v in state["w"].items()}

    def info(self) -> dict:
        return {"dataset": self.cfg.dataset, "realised_noise": self.data.corrupted.double().mean().item()}

    def _weights(self, alpha):
        if self.cfg.oracle:
            return (~self.data.corrupted).to(self.dtype)
        return torch.sigmoid(alpha["alpha"])

    def train_loss(self, w, alpha):
        out = mgnn.call(self.model, w, {}, self.data.x_train)
        weighted = self._weights(alpha) * F.cross_entropy(out, self.data.y_train, reduction="none")
        return weighted.sum() if self.cfg.loss_reduction == "sum" else weighted.mean()

    def _val_loss(self, x, y):
        """The validation loss on ``(x, y)``; with a sum, a mini-batch stands for the whole set's."""
        total = len(self.data.y_val)
        return lambda w, alpha: cross_entropy(mgnn.call(self.model, w, {}, x), y, self.cfg.loss_reduction, total)

    def _estimate(self, step, method):
        x, y = self.data.x_val, self.data.y_val
        if self.cfg.val_batch:
            idx = torch.randperm(len(y), generator=keyed_generator(self.cfg.seed, step, 0xBA7C))[: self.cfg.val_batch]
            x, y = x[idx.to(x.device)], y[idx.to(y.device)]

        def step_val_loss(w, alpha, t):  # a fresh validation mini-batch at each step t < T
            gen = keyed_generator(self.cfg.seed, step, t, 0x57E9)
            idx = torch.randperm(len(y), generator=gen)[: self.cfg.step_val_batch].to(y.device)
            return self._val_loss(x[idx], y[idx])(w, alpha)

        return mg.hypergradient(self.train_loss, self._val_loss(x, y), self.w, self.hparams,
                                **inner_arguments(self.cfg), **method_arguments(self.cfg, method, step_val_loss))

    def hypergradient(self, step, members):
        hpo = self.cfg.hpo and not self.cfg.oracle
        res = self._estimate(step, self.cfg.method if hpo else "fo")
        self._next_w = res.params
        grad = res.grad if hpo else {"alpha": torch.zeros_like(self.hparams["alpha"])}
        return grad, {"val_loss": res.val_loss, "train_loss": res.train_loss, "vjps": res.vjps if hpo else 0}, 1

    def commit(self) -> None:
        if not self.fresh:
            self.w = self._next_w  # training goes on from w_T

    def trained(self) -> dict:
        """The network evaluated: w_T of the last outer step (with --inner-start fresh, T steps from
        w_0 with the current alpha; recomputed, so evaluation depends on the checkpoint alone)."""
        if not self.fresh:
            return self.w
        return mg.inner_loop(self.train_loss, self.w, self.hparams, **inner_arguments(self.cfg))

    def _accuracy(self, w, x, y, batch=5000):
        with torch.no_grad():
            correct = sum((mgnn.call(self.model, w, {}, x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                          for i in range(0, len(y), batch))
        return correct / len(y)

    def detection(self) -> dict:
        """How well sigmoid(alpha) < 0.5 finds the corrupted examples."""
        flagged = torch.sigmoid(self.hparams["alpha"].detach()) < 0.5
        truth = self.data.corrupted
        tp = (flagged & truth).sum().item()
        precision = tp / max(flagged.sum().item(), 1)
        recall = tp / max(truth.sum().item(), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(flagged.sum().item())}

    def evaluate(self, step):
        d, w = self.data, self.trained()
        return {"val_acc": self._accuracy(w, d.x_val, d.y_val), "test_acc": self._accuracy(w, d.x_test, d.y_test),
                **{f"detect_{k}": v for k, v in self.detection().items()}}

    def final(self):
        metrics = self.evaluate(self.cfg.outer_steps)
        weights = torch.sigmoid(self.hparams["alpha"].detach())
        return {**metrics, "weight_clean_mean": weights[~self.data.corrupted].mean().item(),
                "weight_corrupted_mean": weights[self.data.corrupted].mean().item(),
                "hpo": self.cfg.hpo and not self.cfg.oracle, "oracle": self.cfg.oracle, "protocol": self.cfg.protocol,
                "noise": self.cfg.noise, "val_batch": self.cfg.val_batch, "inner_start": self.cfg.inner_start}
