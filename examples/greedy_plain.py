"""Greedy in a plain PyTorch loop: momentum SGD written by hand over ``torch.func.functional_call``
adapts layers 1/3/5 and the head of Omniglot's warp network; greedy meta-trains the warp layers 2/4/6.

    python examples/greedy_plain.py --data-root ./data   # Omniglot, or the synthetic alphabet
    python examples/greedy_plain.py --check              # against mg.hypergradient, float64
"""
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call

import common
import metagreedy as mg
from metagreedy import nn as mgnn
from metagreedy.models import WarpConvNet


def hypergradient(model, w0, warp, episode, args, scale=1.0):
    """One task: T inner steps on the support set, greedy's hypergradient added to the warp layers' .grad."""
    xs, ys, xq, yq = episode

    def loss(w, x, y):
        return F.cross_entropy(functional_call(model, {**w, **warp}, (x,)), y)

    hg = mg.stream(warp, lambda w: loss(w, xq, yq), gamma=args.gamma)  # greedy
    w, buf = hg.start(w0), {n: torch.zeros_like(p) for n, p in w0.items()}  # greedy: w_0 as leaves
    for _ in range(args.inner_steps):
        g = torch.autograd.grad(loss(w, xs, ys), list(w.values()), create_graph=True)
        buf = {n: 0.9 * buf[n] + gn for n, gn in zip(w, g)}
        w = {n: w[n] - args.inner_lr * buf[n] for n in w}
        w, buf = hg.step(w, buf)  # greedy: w_t and the momentum held constant in the next step
    hg.backward(scale)  # greedy
    return hg


def check(args) -> int:
    """The loop above against mg.hypergradient(method="greedy"), float64."""
    torch.manual_seed(0)
    model = WarpConvNet(3, channels=4).double()
    w0, alpha = mgnn.split(model, WarpConvNet.WARP)
    xs, ys, xq, yq = episode = common.tiny_episode(3)
    got = hypergradient(model, w0, alpha, episode, args).grad()
    train_loss, val_loss = mgnn.losses(mgnn.module_forward(model), F.cross_entropy, (xs, ys), (xq, yq))
    want = mg.hypergradient(train_loss, val_loss, w0, alpha, steps=args.inner_steps, lr=args.inner_lr, momentum=0.9,
                            method="greedy", gamma=args.gamma)
    return common.report_check(got, want.grad)


def main(argv=None) -> int:
    args = common.parser(__doc__).parse_args(argv)
    if args.check:
        return check(args)
    torch.manual_seed(args.seed)
    train, _, _ = common.tasksets(args)
    model = WarpConvNet(args.ways)
    w0, _ = mgnn.split(model, WarpConvNet.WARP)  # the adapted layers' fixed start, detached
    warp = {n: p for n, p in model.named_parameters() if n.startswith(WarpConvNet.WARP)}
    outer = torch.optim.Adam(warp.values(), lr=1e-3)
    for step in range(args.outer_steps):
        outer.zero_grad()
        episodes = [train[step * args.meta_batch + j] for j in range(args.meta_batch)]
        common.log(step, [hypergradient(model, w0, warp, e, args, 1 / args.meta_batch).val_loss for e in episodes])
        outer.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
