"""Few-shot Omniglot with warp-layer hyperparameters (the method paper's table 3).

Per task: ``T`` steps of momentum SGD on the support set adapt layers 1, 3, 5 and the head; the
validation loss is the query loss; the hyperparameters are the warp layers 2, 4, 6 (and, with
``--init learned``, the initialisation of the adapted layers). The hypergradient of a meta-batch is
the mean over its tasks. The inner loop runs through ``higher`` (``--higher``, default) or
``torch.func.functional_call``; both give the same numbers (tests/test_modules.py). ``--batched``
runs all tasks of a meta-batch as one vmapped computation instead of a Python loop over tasks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import vmap

import metagreedy as mg
from metagreedy import nn as mgnn
from metagreedy.config import UsageError
from metagreedy.data import DataError
from metagreedy.data.fewshot import get_tasksets
from metagreedy.data.omniglot import available, download
from metagreedy.higher_loop import higher_forward, higher_sgd
from metagreedy.models import WarpConvNet
from metagreedy.stats import mean_ci95

from .common import options_for

DEFAULTS = dict(
    inner_steps=5,
    inner_lr=0.1,
    momentum=0.9,
    outer_steps=2000,
    outer_lr=1e-3,
    outer_optimizer="adam",
    meta_batch=16,  # tasks per outer step: a common Omniglot choice, and what the throughput target uses
    terms=2,  # IFT(2), the paper's baseline
    dataset="auto",
    eval_every=100,
    eval_tasks=100,
    final_eval_tasks=600,
    checkpoint_every=100,
)


def choose_dataset(cfg) -> str:
    """``omniglot`` or ``synthetic`` for ``--dataset auto|omniglot|synthetic``."""
    if cfg.dataset not in ("auto", "omniglot", "synthetic"):
        raise UsageError(f"unknown --dataset '{cfg.dataset}' for omniglot; choose auto, omniglot or synthetic")
    if cfg.dataset == "synthetic" or available(cfg.data_root):
        return "synthetic" if cfg.dataset == "synthetic" else "omniglot"
    try:
        download(cfg.data_root)
        return "omniglot"
    except DataError:
        if cfg.dataset == "omniglot":
            raise
        return "synthetic"


class Task:
    def __init__(self, cfg, device, dtype, tasksets=None):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        if tasksets is None:
            self.dataset = choose_dataset(cfg)
            try:
                tasksets = get_tasksets(self.dataset, cfg.ways, cfg.shots, cfg.queries, root=cfg.data_root,
                                        seed=cfg.seed, val_fraction=cfg.val_fraction, rotations=cfg.rotations)
            except ValueError as e:  # too many ways, too many shots + queries
                raise UsageError(str(e)) from None
        else:
            self.dataset = "custom"
        self.train_tasks, self.val_tasks, self.test_tasks = tasksets
        torch.manual_seed(cfg.seed)  # the fixed random initialisation: one per seed
        # NHWC convolutions: the per-task loop is about 1.3x faster on CPU (docs/PERFORMANCE.md); same numbers
        self.format = torch.channels_last if cfg.memory_format == "channels_last" or (
            cfg.memory_format == "auto" and device.type == "cpu" and not cfg.batched) else torch.contiguous_format
        self.model = WarpConvNet(cfg.ways).to(device=device, dtype=dtype, memory_format=self.format)
        self.w0, warp = mgnn.split(self.model, WarpConvNet.WARP)
        self.hparams = dict(warp)
        if cfg.init == "learned":  # w = init + delta, delta_0 = 0: same dynamics, init is a hyperparameter
            self.hparams.update({f"init.{n}": w.clone().requires_grad_() for n, w in self.w0.items()})
        # the batched path runs the network under vmap, which needs torch.func's functional_call
        self.forward = higher_forward(self.model) if cfg.higher and not cfg.batched else mgnn.module_forward(self.model)
        self.optimizer = higher_sgd(cfg.inner_lr, cfg.momentum) if cfg.higher and cfg.inner_optimizer == "sgd" \
            else cfg.inner_optimizer
        n_queries = cfg.ways * cfg.queries
        if cfg.step_val_batch and (cfg.step_val_batch % cfg.ways or cfg.step_val_batch > n_queries):
            raise UsageError(f"--step-val-batch must be a multiple of --ways = {cfg.ways} and at most the "
                             f"{n_queries} queries of a task, got {cfg.step_val_batch}")

    def info(self) -> dict:
        return {"dataset": self.dataset, "adapted": list(self.w0), "hyper": list(self.hparams)}

    # ---- one task ----
    def _forward(self, w, alpha, x):
        if self.cfg.init == "learned":
            w = {n: alpha[f"init.{n}"] + d for n, d in w.items()}
            alpha = {n: a for n, a in alpha.items() if not n.startswith("init.")}
        return self.forward(w, alpha, x)

    def _start(self):
        if self.cfg.init == "learned":
            return {n: torch.zeros_like(w) for n, w in self.w0.items()}
        return self.w0

    def _episode(self, task):
        return [t.to(self.device, self.dtype, memory_format=self.format) if t.is_floating_point() else t.to(self.device)
                for t in task]

    def step_queries(self, yq, t):
        """Indices into ``yq`` (one task's query labels, or a meta-batch's, tasks on the first axis)
        of the queries behind grad L_val(w_t) at step t < T with ``--step-val-batch``: the same
        number of every class, a window that moves on each step and wraps around, so that the steps
        together use the query set evenly."""
        k = self.cfg.step_val_batch // self.cfg.ways
        by_class = torch.argsort(yq, dim=-1, stable=True).unflatten(-1, (self.cfg.ways, -1))  # [..., ways, queries]
        j = ((t - 1) * k + torch.arange(k, device=yq.device)) % by_class.shape[-1]
        return by_class[..., j].flatten(-2)

    def adapt_and_estimate(self, task, method=None):
        xs, ys, xq, yq = self._episode(task)
        train_loss, val_loss = mgnn.losses(self._forward, F.cross_entropy, (xs, ys), (xq, yq))

        def step_val_loss(w, a, t):
            idx = self.step_queries(yq, t)
            return F.cross_entropy(self._forward(w, a, xq[idx]), yq[idx])

        method = method or self.cfg.method
        options = options_for(self.cfg, method, step_val_loss)
        res = mg.hypergradient(train_loss, val_loss, self._start(), self.hparams, steps=self.cfg.inner_steps,
                               lr=self.cfg.inner_lr, momentum=self.cfg.momentum, method=method,
                               optimizer=self.optimizer, **options)
        with torch.no_grad():
            acc = (self._forward(res.params, self.hparams, xq).argmax(1) == yq).double().mean().item()
        return res, acc

    # ---- the protocol train.py drives ----
    def batched_estimate(self, episodes, method=None):
        """The meta-batch's inner loops as one computation: the tasks' adapted weights stacked on a
        leading axis, the network run with ``torch.func.vmap``. Tasks are independent, so the
        stacked problem's hypergradient (train loss summed over tasks, validation loss averaged)
        is the mean of the per-task hypergradients for every method (tests/test_omniglot.py)."""
        xs, ys, xq, yq = (torch.stack(t) for t in zip(*[self._episode(e) for e in episodes]))
        n_tasks, n_support = ys.shape
        stacked = lambda w, a, x: vmap(lambda wb, xb: self._forward(wb, a, xb))(w, x)  # noqa: E731

        def train_loss(w, a):
            return F.cross_entropy(stacked(w, a, xs).flatten(0, 1), ys.flatten(), reduction="sum") / n_support

        def val_loss(w, a):
            return F.cross_entropy(stacked(w, a, xq).flatten(0, 1), yq.flatten())

        def step_val_loss(w, a, t):
            rows, idx = torch.arange(n_tasks, device=yq.device)[:, None], self.step_queries(yq, t)
            return F.cross_entropy(stacked(w, a, xq[rows, idx]).flatten(0, 1), yq[rows, idx].flatten())

        method = method or self.cfg.method
        options = options_for(self.cfg, method, step_val_loss)
        start = {n: w.expand(n_tasks, *w.shape).clone() for n, w in self._start().items()}
        res = mg.hypergradient(train_loss, val_loss, start, self.hparams, steps=self.cfg.inner_steps,
                               lr=self.cfg.inner_lr, momentum=self.cfg.momentum, method=method,
                               optimizer=self.cfg.inner_optimizer, **options)
        with torch.no_grad():
            acc = (stacked(res.params, self.hparams, xq).argmax(-1) == yq).double().mean(1)
        return res, acc, n_tasks

    def hypergradient(self, step, members):
        if self.cfg.batched and members:
            episodes = [self.train_tasks[step * self.cfg.meta_batch + j] for j in members]
            res, acc, n = self.batched_estimate(episodes)
            return ({k: g * n for k, g in res.grad.items()},
                    {"val_loss": res.val_loss, "train_loss": res.train_loss / n,
                     "train_query_acc": acc.mean().item(), "vjps": res.vjps}, n)
        grads = {n: torch.zeros_like(a) for n, a in self.hparams.items()}
        val_losses, train_losses, accs, vjps = [], [], [], 0
        for j in members:
            res, acc = self.adapt_and_estimate(self.train_tasks[step * self.cfg.meta_batch + j])
            for n in grads:
                grads[n] += res.grad[n]
            val_losses.append(res.val_loss)
            train_losses.append(res.train_loss)
            accs.append(acc)
            vjps = res.vjps
        n = max(len(members), 1)
        metrics = {"val_loss": sum(val_losses) / n, "train_loss": sum(train_losses) / n,
                   "train_query_acc": sum(accs) / n, "vjps": vjps}
        return grads, metrics, len(members)

    def accuracy(self, tasks, count: int) -> list[float]:
        """Query accuracy after adaptation (no hypergradient) on tasks 0..count-1 of a split."""
        out = []
        for i in range(count):
            xs, ys, xq, yq = self._episode(tasks[i])
            train_loss = lambda w, a: F.cross_entropy(self._forward(w, a, xs), ys)  # noqa: E731
            w_T = mg.inner_loop(train_loss, self._start(), self.hparams, steps=self.cfg.inner_steps,
                                lr=self.cfg.inner_lr, momentum=self.cfg.momentum, optimizer=self.optimizer)
            with torch.no_grad():
                out.append((self._forward(w_T, self.hparams, xq).argmax(1) == yq).double().mean().item())
        return out

    def evaluate(self, step):
        mean, ci = mean_ci95(self.accuracy(self.val_tasks, self.cfg.eval_tasks))
        return {"meta_val_acc": mean, "meta_val_ci95": ci}

    def final(self):
        n = self.cfg.final_eval_tasks
        val, val_ci = mean_ci95(self.accuracy(self.val_tasks, n))
        test, test_ci = mean_ci95(self.accuracy(self.test_tasks, n))
        return {"meta_val_acc": val, "meta_val_ci95": val_ci, "meta_test_acc": test, "meta_test_ci95": test_ci,
                "eval_tasks": n}


