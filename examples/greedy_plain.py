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


def main(argv=None) -> int:
    args = common.parser(__doc__).parse_args(argv)
    if args.check:  # the loop above against mg.hypergradient(method="greedy")
        model, episode = common.tiny_problem()
        w0, alpha = mgnn.split(model, WarpConvNet.WARP)
        got = hypergradient(model, w0, alpha, episode, args).grad()
        return common.report_check(got, common.reference(model, episode, args, momentum=0.9))
    model = WarpConvNet(args.ways)
    w0, _ = mgnn.split(model, WarpConvNet.WARP)  # the adapted layers' fixed start, detached
    warp = {n: p for n, p in model.named_parameters() if n.startswith(WarpConvNet.WARP)}
    common.meta_train(args, warp.values(), lambda episode, scale: hypergradient(model, w0, warp, episode, args, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
