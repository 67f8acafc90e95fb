"""Greedy in a higher loop: meta-train the warp layers 2/4/6 of Omniglot's network.

Each task is a ``higher.innerloop_ctx`` loop of momentum SGD on the support set, as a MAML-style
researcher writes it; three lines attach greedy (equation 6) to it, and the outer Adam steps the
warp layers on the hypergradient written into their ``.grad``.

    python examples/greedy_higher.py --data-root ./data      # Omniglot, or the synthetic alphabet
    python examples/greedy_higher.py --check                 # against mg.hypergradient, float64
"""
import sys

import higher
import torch
import torch.nn.functional as F

import common
import metagreedy as mg
from metagreedy import nn as mgnn
from metagreedy.integrations.higher import attach
from metagreedy.models import WarpConvNet


def hypergradient(model, warp, episode, args, scale=1.0):
    """One task: T inner steps on the support set, greedy's hypergradient added to the warp layers' .grad."""
    xs, ys, xq, yq = episode
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n not in warp], lr=args.inner_lr,
                                momentum=0.9)
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        hg = attach(fmodel, diffopt, warp, lambda: F.cross_entropy(fmodel(xq), yq), gamma=args.gamma)  # greedy
        for _ in range(args.inner_steps):
            diffopt.step(F.cross_entropy(fmodel(xs), ys))
            hg.step()  # greedy
        hg.backward(scale)  # greedy
    return hg


def check(args) -> int:
    """The loop above against mg.hypergradient(method="greedy") through torch.func, float64."""
    torch.manual_seed(0)
    model = WarpConvNet(3, channels=4).double()
    w0, alpha = mgnn.split(model, WarpConvNet.WARP)
    warp = {n: p for n, p in model.named_parameters() if n in alpha}
    xs, ys, xq, yq = episode = common.tiny_episode(3)
    got = hypergradient(model, warp, episode, args).grad()
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
    warp = {n: p for n, p in model.named_parameters() if n.startswith(WarpConvNet.WARP)}
    outer = torch.optim.Adam(warp.values(), lr=1e-3)
    for step in range(args.outer_steps):
        outer.zero_grad()
        episodes = [train[step * args.meta_batch + j] for j in range(args.meta_batch)]
        common.log(step, [hypergradient(model, warp, e, args, 1 / args.meta_batch).val_loss for e in episodes])
        outer.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
