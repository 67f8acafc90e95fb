"""Long inner loops on mini-batches: per-layer learning rates and weight decay of a small MLP on
MNIST / Fashion-MNIST, tuned through T in {10, 100, 1000} steps of momentum SGD.

alpha = {log_lr: one log learning rate per layer, log_wd: a log weight decay}. Each outer step
trains the MLP (784-H-H-10, ReLU) from the same initialisation w_0 for T steps of momentum SGD,
step t on its own mini-batch (``train_loss(w, alpha, t)``, batches drawn once per hypergradient from
a key of (seed, outer step)), with the loss CE + exp(log_wd)/2 ||weights||^2 and layer l's step
exp(log_lr[l]). The outer loss is the cross-entropy of w_T on --n-val held-out training examples.
Evaluation trains T steps with the current alpha on batches of a fixed key and reports the
validation and test accuracy. ``--outer-steps 0`` evaluates the starting values (--inner-lr for
every layer, --weight-decay) without tuning them: the fixed hand-picked schedule.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import metagreedy as mg
from harness.settings import POSITIVE, Setting as S, UsageError, at_least, fits_in_memory
from metagreedy.data.cleaning import SPLIT_SIZES
from metagreedy.data.digits import CLASSES, PIXELS, make_splits
from metagreedy.models import linear_init

from .common import (DATA_ROOT, EVAL_EVERY, TaskBase, dataset, element_bytes, graph, inner_arguments, keyed_generator,
                     method_arguments)

DESCRIPTION = ("long inner loops on mini-batches: per-layer learning rates and weight decay of an MLP on MNIST / "
               "Fashion-MNIST, T up to 1000.")
DEFAULTS = dict(
    inner_steps=100,
    inner_lr=0.05,
    outer_steps=20,
    outer_lr=0.1,
    eval_every=10,
)
SETTINGS = [
    dataset("mnist", ("mnist", "fashion_mnist", "synthetic")),
    DATA_ROOT,
    EVAL_EVERY,
    S("n_train", 10000, "the training pool the mini-batches are drawn from", check=at_least(1), metavar="N"),
    S("n_val", 1000, "clean validation examples held out of the training split (the outer loss)", check=at_least(1),
      metavar="N"),
    S("batch_size", 64, "inner mini-batch: step t trains on the t-th batch drawn for the hypergradient",
      check=at_least(1), metavar="B"),
    S("hidden", 64, "width of the MLP's two hidden layers (784-H-H-10)", check=at_least(1), metavar="H"),
    S("weight_decay", 1e-4, "weight decay at the start (a hyperparameter, tuned in log scale; the learning rates "
      "start at --inner-lr)", check=POSITIVE),
]
LAYERS = ("fc1", "fc2", "fc3")
BATCH_KEY, EVAL_KEY = 0xBA7C, 0xE7A1


def check(cfg) -> None:
    if cfg.batch_size > cfg.n_train:
        raise UsageError(f"--batch-size {cfg.batch_size} is more than the --n-train {cfg.n_train} examples")
    if cfg.dataset != "synthetic" and cfg.n_train + cfg.n_val > SPLIT_SIZES["train"]:
        raise UsageError(f"--n-train + --n-val = {cfg.n_train + cfg.n_val} is more than the {SPLIT_SIZES['train']} "
                         f"examples of the {cfg.dataset} training split")
    fits_in_memory(memory(cfg))


def memory(cfg) -> dict:
    """Lower bounds of the bytes of the run's tensors, by the settings that size them: the data (made
    in float32), the index table of the mini-batches (int64), the MLP's weights (w_0, w_t and the
    momentum) and the graph of the inner steps a hypergradient keeps (each: w_t, the momentum and
    the mini-batch's activations)."""
    H, B, e = cfg.hidden, cfg.batch_size, element_bytes(cfg)
    weights = PIXELS * H + H + H * H + H + H * CLASSES + CLASSES
    n_test = 2000 if cfg.dataset == "synthetic" else SPLIT_SIZES["test"]
    return {f"--n-train {cfg.n_train} + --n-val {cfg.n_val} (the data)":
                (cfg.n_train + cfg.n_val + n_test) * PIXELS * 4,
            f"--inner-steps {cfg.inner_steps} x --batch-size {B} (the index table of the mini-batches)":
                cfg.inner_steps * B * 8,
            f"--hidden {H} (the MLP's weights)": 3 * weights * e,
            **graph(cfg, (2 * weights + B * (2 * H + CLASSES)) * e)}


def run_name(cfg) -> str:
    return f"long_horizon-{cfg.dataset}-T{cfg.inner_steps}-{cfg.method}-seed{cfg.seed}"


def run_group(cfg) -> str:
    return f"long_horizon/{cfg.dataset}-T{cfg.inner_steps}/{cfg.method}"


def init_mlp(hidden: int, seed: int, device, dtype) -> dict:
    """w_0: the MLP's weights and biases by name, nn.Linear's initialisation from keyed generators."""
    sizes = [PIXELS, hidden, hidden, CLASSES]
    w = {}
    for name, n_in, n_out in zip(LAYERS, sizes, sizes[1:]):
        weight, bias = linear_init(n_in, n_out, seed)
        w[f"{name}.weight"], w[f"{name}.bias"] = weight.to(device, dtype), bias.to(device, dtype)
    return w


def forward(w: dict, x):
    for i, name in enumerate(LAYERS):
        x = F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])
        x = torch.relu(x) if i < len(LAYERS) - 1 else x
    return x


def layer_lrs(hparams: dict):
    """The inner ``lr``: layer l's tensors step by exp(log_lr[l]) (alpha's leaves in hparams' order)."""
    position = list(hparams).index("log_lr")
    return lambda alpha: tuple(alpha[position][i].exp() for i in range(len(LAYERS)) for _ in ("weight", "bias"))


class Task(TaskBase):
    progress = ("val_acc",)

    def __init__(self, cfg, device, dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        data = make_splits(cfg.dataset, cfg.data_root, seed=cfg.seed, n_train=cfg.n_train, n_val=cfg.n_val)
        self.data = data._replace(**{k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                                     for k, v in data._asdict().items()})
        self.w0 = init_mlp(cfg.hidden, cfg.seed, device, dtype)
        self.hparams = {
            "log_lr": torch.full((len(LAYERS),), math.log(cfg.inner_lr), device=device, dtype=dtype, requires_grad=True),
            "log_wd": torch.tensor(math.log(cfg.weight_decay), device=device, dtype=dtype, requires_grad=True)}
        self.lr = layer_lrs(self.hparams)

    def info(self) -> dict:
        return {"dataset": self.cfg.dataset, "n_params": sum(p.numel() for p in self.w0.values())}

    def train_loss(self, batches):
        """``train_loss(w, alpha, t)`` on the t-th row of ``batches`` ([T, B] indices, drawn once)."""
        x, y = self.data.x_train, self.data.y_train

        def loss(w, alpha, t):
            idx = batches[t - 1]
            decay = sum((w[f"{name}.weight"] ** 2).sum() for name in LAYERS)
            return F.cross_entropy(forward(w, x[idx]), y[idx]) + 0.5 * alpha["log_wd"].exp() * decay
        return loss

    def val_loss(self, w, alpha):
        return F.cross_entropy(forward(w, self.data.x_val), self.data.y_val)

    def batches(self, *key):
        gen = keyed_generator(self.cfg.seed, *key)
        return torch.randint(self.cfg.n_train, (self.cfg.inner_steps, self.cfg.batch_size), generator=gen).to(self.device)

    def hypergradient(self, step, members):
        res = mg.hypergradient(self.train_loss(self.batches(step, BATCH_KEY)), self.val_loss, self.w0, self.hparams,
                               **inner_arguments(self.cfg, lr=self.lr), **method_arguments(self.cfg, self.cfg.method))
        return res.grad, {"val_loss": res.val_loss, "train_loss": res.train_loss, "vjps": res.vjps,
                          **self.hyperparameters()}, 1

    def hyperparameters(self) -> dict:
        lrs = self.hparams["log_lr"].detach().exp().tolist()
        return {**{f"lr_{name}": lr for name, lr in zip(LAYERS, lrs)},
                "weight_decay": self.hparams["log_wd"].detach().exp().item()}

    def trained(self) -> dict:
        """w_T with the current alpha, on the evaluation batches."""
        return mg.inner_loop(self.train_loss(self.batches(EVAL_KEY)), self.w0, self.hparams,
                             **inner_arguments(self.cfg, lr=self.lr))

    def evaluate(self, step):
        w = self.trained()
        d = self.data
        with torch.no_grad():
            val_out = forward(w, d.x_val)
            return {"val_acc": accuracy(val_out, d.y_val), "test_acc": accuracy(forward(w, d.x_test), d.y_test),
                    "eval_val_loss": F.cross_entropy(val_out, d.y_val).item()}

    def final(self):
        return {**self.evaluate(self.cfg.outer_steps), **self.hyperparameters(), "inner_steps": self.cfg.inner_steps,
                "n_params": sum(p.numel() for p in self.w0.values())}


def accuracy(out, y) -> float:
    return (out.argmax(1) == y).double().mean().item()
