"""What the examples share: their command line, Omniglot's task samplers (the built-in synthetic
alphabet when Omniglot is absent) and the ``--check`` line. Not part of metagreedy."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import metagreedy as mg
from metagreedy import nn as mgnn
from metagreedy.data import get_tasksets
from metagreedy.data.omniglot import available
from metagreedy.models import WarpConvNet

TOLERANCE = 1e-8  # --check passes when the streamed and closed-loop hypergradients agree to this


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("--data-root", default="./data", help="Omniglot in torchvision's layout (omniglot-py/)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=10, help="query examples per class: the validation set")
    p.add_argument("--inner-steps", type=int, default=5, help="T")
    p.add_argument("--inner-lr", type=float, default=0.1)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--outer-steps", type=int, default=100)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="compare with mg.hypergradient on a tiny float64 problem")
    return p


def tasksets(args):
    """``(train, validation, test)`` Omniglot task sets, or the synthetic alphabet's when Omniglot is
    not under ``--data-root``."""
    name = "omniglot" if available(args.data_root) else "synthetic"
    if name == "synthetic":
        print(f"Omniglot is not under {args.data_root}: running on the built-in synthetic alphabet")
    return get_tasksets(name, args.ways, args.shots, args.queries, root=args.data_root, seed=args.seed)


def tiny_problem(ways: int = 3):
    """The ``--check`` problem: a narrow warp network and one episode of a small synthetic task set,
    float64."""
    torch.manual_seed(0)
    xs, ys, xq, yq = get_tasksets("synthetic", ways, 1, 2, synthetic_classes=(20, 10))[0][0]
    return WarpConvNet(ways, channels=4).double(), (xs.double(), ys, xq.double(), yq)


def reference(model, episode, args, momentum: float) -> dict:
    """greedy's hypergradient of the warp layers by ``mg.hypergradient``, through torch.func: what the
    example's loop must give."""
    xs, ys, xq, yq = episode
    w0, alpha = mgnn.split(model, WarpConvNet.WARP)
    train_loss, val_loss = mgnn.losses(mgnn.module_forward(model), F.cross_entropy, (xs, ys), (xq, yq))
    return mg.hypergradient(train_loss, val_loss, w0, alpha, steps=args.inner_steps, lr=args.inner_lr,
                            momentum=momentum, method="greedy", gamma=args.gamma).grad


def meta_train(args, hparams, one_task) -> None:
    """The outer loop: Adam on ``hparams`` (the warp layers), each step on the mean of a meta-batch's
    hypergradients, which ``one_task(episode, scale)`` adds to their ``.grad`` (returning its stream)."""
    torch.manual_seed(args.seed)
    train, _, _ = tasksets(args)
    outer = torch.optim.Adam(hparams, lr=1e-3)
    for step in range(args.outer_steps):
        outer.zero_grad()
        episodes = [train[step * args.meta_batch + j] for j in range(args.meta_batch)]
        log(step, [one_task(e, 1 / args.meta_batch).val_loss for e in episodes])
        outer.step()


def report_check(got: dict, want: dict) -> int:
    """Print ``max |diff| = X`` (the last line) and return the exit status: 0 when X <= TOLERANCE."""
    diff = max((got[n] - want[n]).abs().max().item() for n in want)
    size = max(g.abs().max().item() for g in want.values())
    print(f"hypergradient: largest entry {size:.3e}, over {sum(g.numel() for g in want.values())} hyperparameters")
    print(f"max |diff| = {diff:.3e}")
    return 0 if diff <= TOLERANCE and size > 0 and got.keys() == want.keys() else 1


def log(step: int, val_losses: list[float], every: int = 10) -> None:
    if step % every == 0:
        print(f"outer step {step}: val_loss {sum(val_losses) / len(val_losses):.4f} (the meta-batch's query loss)")


__all__ = ["parser", "tasksets", "tiny_problem", "reference", "meta_train", "report_check", "log"]
